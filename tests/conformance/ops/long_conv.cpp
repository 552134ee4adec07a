// long_conv (ops/long_conv.hpp): y[t, c] = act(Σ_{j<=t} K[c, j] x[t − j, c] + D[c] x[t, c]), the S4 / S4D layers'
// convolutional view. The CPU path (ssm::causal_conv per channel: the direct sum up to kCausalConvDirectMaxLength
// steps, the zero-padded real FFT above) and the CUDA kernel (direct sums tiled 32 channels × 64 steps, 8 per thread)
// against the op's reference (the direct sums in double): f64 and f32, one step, lengths either side of the CPU's
// crossover (128 / 129), a smooth and a prime FFT size (500: 999 → 1000, 1031: 2061 → 2160), filters longer than the
// sequence, with and without the skip term, with and without GELU, with either gate or both (Hyena's order steps),
// strided x, gates and y, several batch rows, more channels and steps than one block holds (ragged in both), no steps.
#include <string>
#include <vector>

#include "../registry.hpp"
#include "ssm/ops/long_conv.hpp"

namespace conformance {
namespace {

struct ConvShape {
  index_t b, l, h, extra;  // extra: taps K holds past l
  bool skip, gelu;
  index_t pad;  // > 0: x, the gates and y with pad elements after every step's h channels
  bool gate_in = false, gate_out = false;
};

const ConvShape& shape_of(const Case& c) { return *std::any_cast<ConvShape>(&c.params); }

std::vector<Case> long_conv_cases() {
  const ConvShape shapes[] = {
      {1, 1, 1, 0, true, false, 0},     // one step: y = (K_0 + D) x_0
      {2, 37, 3, 0, true, true, 2},     // direct on the CPU, GELU, strided
      {1, 128, 2, 0, false, false, 0},  // the last direct length, no skip term
      {2, 129, 2, 5, true, true, 0},    // the first FFT length, a longer filter
      {1, 500, 3, 0, true, false, 1},   // FFT size 999 -> 1000 (smooth), strided
      {1, 1031, 1, 3, false, true, 0},  // FFT size 2061 -> 2160
      {3, 70, 40, 0, true, true, 3},    // 2 × 2 blocks of 32 channels × 64 steps, both ragged; 3 rows; strided
      {1, 0, 2, 0, true, false, 0},     // no steps
      {2, 37, 3, 0, true, false, 2, true, true},     // both gates, strided
      {3, 70, 40, 0, true, true, 0, true, false},    // the input gate, GELU, 2 × 2 blocks
      {1, 129, 2, 0, false, false, 0, false, true},  // the output gate
  };
  std::vector<Case> cases;
  std::mt19937_64 rng(41);
  for (const ConvShape& s : shapes)
    for (DType dt : {DType::f64, DType::f32}) {
      Case c;
      c.name = "b=" + std::to_string(s.b) + " l=" + std::to_string(s.l) + " h=" + std::to_string(s.h) +
               (s.extra ? " L=l+" + std::to_string(s.extra) : "") + (s.skip ? " D" : "") + (s.gelu ? " gelu" : "") +
               (s.gate_in ? " g_in" : "") + (s.gate_out ? " g_out" : "") + (s.pad ? " strided" : "") + " " +
               std::string(ssm::name(dt));
      const Tensor x = uniform(rng, {s.b, s.l, s.h}, dt, -1, 1);  // (b, l, h)
      c.inputs.push_back(s.pad ? strided_arg("x", x, s.pad) : dense_arg("x", x));
      // The taps decay like an S4 kernel's (a filter of i.i.d. taps would make |y| grow like sqrt(l)).
      const index_t L = s.l + s.extra;
      Tensor K = uniform(rng, {s.h, L}, dt, -1, 1);  // (h, L)
      const std::vector<double> taps = to_doubles(K.view());
      for (index_t i = 0; i < K.numel(); ++i)
        set_element(K, i, taps[static_cast<std::size_t>(i)] / (1.0 + 0.05 * static_cast<double>(i % L)));
      c.inputs.push_back(dense_arg("K", K));
      if (s.skip) c.inputs.push_back(dense_arg("D", uniform(rng, {s.h}, dt, -1, 1)));  // (h)
      for (const char* g : {"gate_in", "gate_out"}) {
        if (!(std::string(g) == "gate_in" ? s.gate_in : s.gate_out)) continue;
        const Tensor gt = uniform(rng, {s.b, s.l, s.h}, dt, -2, 2);  // (b, l, h)
        c.inputs.push_back(s.pad ? strided_arg(g, gt, s.pad) : dense_arg(g, gt));
      }
      const index_t row = s.h + s.pad;
      c.outputs.push_back({"y", {s.b, s.l, s.h}, dt, s.pad ? Dims{s.l * row, row, 1} : Dims{}});
      c.params = s;
      cases.push_back(std::move(c));
    }
  return cases;
}

ssm::LongConvInputs inputs(const Case& c, const Views& in) {
  return {named(c, in, "x"), named(c, in, "K"), optional_view(named(c, in, "D")),
          optional_view(named(c, in, "gate_in")), optional_view(named(c, in, "gate_out"))};
}

ssm::LongConvOptions options(const Case& c, ssm::LongConvPath path, int threads) {
  ssm::LongConvOptions o;
  o.activation = shape_of(c).gelu ? ssm::LongConvActivation::gelu : ssm::LongConvActivation::none;
  o.path = path, o.threads = threads;
  return o;
}

void long_conv_forward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  const bool reference = cfg.path == "reference";
  const std::string path = ssm::long_conv_into(
      inputs(c, in), out.views[0],
      options(c, reference ? ssm::LongConvPath::reference : ssm::LongConvPath::automatic, cfg.threads));
  EXPECT_EQ(path, cfg.device.is_cuda() ? "cuda" : (reference ? "reference" : "cpu"));
}

void long_conv_forward_reference(const Case& c, const Views& in, const Views& out) {
  ssm::long_conv_into(inputs(c, in), out[0], options(c, ssm::LongConvPath::reference, 1));
}

std::string long_conv_unsupported(const Case&, const RunConfig&, Pass) { return {}; }

/// Relative to the largest output: the CPU's direct f32 sums add up to 128 products in order, its FFT's error grows
/// like log(n) eps over the signals' norms; the kernel sums in blocks of 64 taps; the skip term and GELU add a rounding
/// each. Measured on these cases: at most 5.9e-7 (CPU) and 3.4e-7 (the kernel, emulated) in f32, 2.0e-15 in f64.
double long_conv_tolerance(DType dt, Pass) { return dt == DType::f64 ? 1e-13 : 2e-6; }

const Register reg{Op{"long_conv", {"reference", "fast"}, true, long_conv_cases, long_conv_unsupported,
                      long_conv_forward, nullptr, long_conv_forward_reference, nullptr, long_conv_tolerance}};

}  // namespace
}  // namespace conformance
