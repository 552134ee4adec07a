// hyena (ops/hyena.hpp): Hyena's gated long convolutions of order N. The FFT path (threads over channels) against the
// op's direct convolutions in double, forward and backward: orders 2 to 4, gates and v sliced out of one projection
// (strided rows), filters longer than the sequence, one step and sequences past the FFT's smooth sizes, f32 and f64.
// On CUDA the forward (N − 1 gated launches of the long convolution's kernel; more channels and steps than one of its
// blocks holds); the backward runs on the CPU only.
#include <random>
#include <string>
#include <vector>

#include "../registry.hpp"
#include "ssm/ops/hyena.hpp"

namespace conformance {
namespace {

struct HyenaShape {
  index_t b, l, d, N, L;
};

const HyenaShape& shape_of(const Case& c) { return *std::any_cast<HyenaShape>(&c.params); }

std::vector<Case> hyena_cases() {
  const HyenaShape shapes[] = {
      {1, 1, 1, 2, 1},      // every size 1
      {2, 37, 5, 2, 40},    // order 2 (H = D_q T_h D_k), filters longer than l
      {1, 129, 6, 3, 129},  // order 3, l past 2^7 (an FFT of 3^2 · 29 → the smooth 270)
      {3, 20, 3, 4, 25},    // order 4
      {2, 70, 36, 3, 70},   // order 3 over 2 × 2 blocks of the CUDA kernel (32 channels × 64 steps), both ragged
  };
  std::vector<Case> cases;
  std::mt19937_64 rng(61);
  for (const HyenaShape& s : shapes)
    for (DType dt : {DType::f64, DType::f32}) {
      Case c;
      c.name = "b=" + std::to_string(s.b) + " l=" + std::to_string(s.l) + " d=" + std::to_string(s.d) +
               " N=" + std::to_string(s.N) + " L=" + std::to_string(s.L) + " " + std::string(ssm::name(dt));
      // the projection z (b, l, (N + 1) d): gates x_0 … x_{N−1}, then v, as column blocks
      c.inputs.push_back(dense_arg("z", uniform(rng, {s.b, s.l, (s.N + 1) * s.d}, dt, -1, 1)));
      c.inputs.push_back(dense_arg("h", uniform(rng, {s.N - 1, s.d, s.L}, dt, -0.5, 0.5)));
      c.inputs.push_back(dense_arg("bias", uniform(rng, {s.N - 1, s.d}, dt, -1, 1)));
      c.inputs.push_back(dense_arg("grad_out", uniform(rng, {s.b, s.l, s.d}, dt, -1, 1)));
      c.outputs = {{"out", {s.b, s.l, s.d}, dt}};
      c.grads = {{"grad_v", {s.b, s.l, s.d}, dt}, {"grad_x", {s.N, s.b, s.l, s.d}, dt},
                 {"grad_h", {s.N - 1, s.d, s.L}, dt}, {"grad_bias", {s.N - 1, s.d}, dt}};
      c.params = s;
      cases.push_back(std::move(c));
    }
  return cases;
}

ssm::HyenaInputs hyena_inputs(const Case& c, const Views& in) {
  const HyenaShape& s = shape_of(c);
  const TensorView z = named(c, in, "z");
  ssm::HyenaInputs r;
  for (index_t i = 0; i < s.N; ++i) r.x.push_back(z.narrow(2, i * s.d, s.d));
  r.v = z.narrow(2, s.N * s.d, s.d);
  r.h = named(c, in, "h"), r.bias = named(c, in, "bias");
  return r;
}

ssm::HyenaOptions hyena_options(const RunConfig& cfg) {
  ssm::HyenaOptions o;
  o.path = cfg.path == "reference" ? ssm::HyenaPath::reference : ssm::HyenaPath::fft;
  o.threads = cfg.threads;
  return o;
}

void hyena_forward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  EXPECT_EQ(ssm::hyena_into(hyena_inputs(c, in), out.views[0], hyena_options(cfg)),
            cfg.device.is_cuda() ? "cuda" : "cpu-fft");
}

void hyena_forward_reference(const Case& c, const Views& in, const Views& out) {
  RunConfig ref;
  ref.path = "reference";
  ssm::hyena_into(hyena_inputs(c, in), out[0], hyena_options(ref));
}

void hyena_backward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  const ssm::HyenaGrads r = ssm::hyena_backward(hyena_inputs(c, in), named(c, in, "grad_out"), hyena_options(cfg));
  EXPECT_EQ(r.path, cfg.path == "reference" ? "reference" : "cpu-fft");
  out.adopt(0, r.grad_v), out.adopt(1, r.grad_x), out.adopt(2, r.grad_h), out.adopt(3, r.grad_bias);
}

void hyena_backward_reference(const Case& c, const Views& in, const Views& out) {
  backward_on_reference_path(hyena_backward, c, in, out);
}

std::string hyena_unsupported(const Case&, const RunConfig& cfg, Pass pass) {
  return cfg.device.is_cuda() && pass == Pass::backward ? "the backward runs on the CPU" : "";
}

/// FFT convolutions against direct sums: f32 rounding of transforms of size up to 270 (a few 1e-7 of the largest
/// term), through up to three chained orders and, in the backward, the filter gradients' sums over the batch and l:
/// 5e-5 of the largest output; f64 1e-11.
double hyena_tolerance(DType dt, Pass) { return dt == DType::f64 ? 1e-11 : 5e-5; }

const Register reg{Op{"hyena", {"fast"}, true, hyena_cases, hyena_unsupported, hyena_forward, hyena_backward,
                      hyena_forward_reference, hyena_backward_reference, hyena_tolerance}};

}  // namespace
}  // namespace conformance
