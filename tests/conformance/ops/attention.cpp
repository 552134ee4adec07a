// Conformance registration of attention (ops/attention.hpp): the materialized and tiled CPU algorithms and the CUDA
// kernels against the double reference of include/ssm/reference/attention.hpp.
#include <string>
#include <vector>

#include "../registry.hpp"
#include "ssm/ops/attention.hpp"
#include "ssm/reference/attention.hpp"

namespace conformance {
namespace {

struct AttnShape {
  index_t b, l_q, l_k, h, h_kv, p;
  bool causal;
  index_t pad;  // > 0: q, k, v, out and the gradients with rows pad elements apart beyond p
};

const AttnShape& shape_of(const Case& c) { return *std::any_cast<AttnShape>(&c.params); }

std::vector<Case> attention_cases() {
  const AttnShape shapes[] = {
      {1, 1, 1, 1, 1, 1, true, 0},        // every size 1
      {2, 37, 37, 4, 2, 20, true, 3},     // grouped-query, ragged blocks, strided everything
      {1, 20, 45, 3, 3, 5, true, 0},      // queries at the end of a longer context
      {2, 17, 33, 2, 2, 33, false, 0},    // no mask, l_q != l_k
      {1, 2, 130, 2, 1, 16, true, 0},     // a few queries over a long context (the split-key kernel)
      {1, 70, 70, 2, 1, 64, true, 0},     // multi-query, several tiles
  };
  std::vector<Case> cases;
  std::mt19937_64 rng(5);
  for (const AttnShape& s : shapes) {
    for (DType dt : {DType::f64, DType::f32}) {
      Case c;
      c.name = "b=" + std::to_string(s.b) + " l_q=" + std::to_string(s.l_q) + " l_k=" + std::to_string(s.l_k) +
               " h=" + std::to_string(s.h) + " h_kv=" + std::to_string(s.h_kv) + " p=" + std::to_string(s.p) +
               (s.causal ? " causal" : " full") + (s.pad ? " strided" : "") + " " + std::string(ssm::name(dt));
      // logits of a few units: the softmax is neither flat nor one-hot
      const double amp = 2.0 * std::sqrt(std::sqrt(static_cast<double>(s.p)) / 4.0) + 0.5;
      const auto arg = [&](const char* name, const Dims& shape, double a) {
        const Tensor t = uniform(rng, shape, dt, -a, a);
        return s.pad ? strided_arg(name, t, s.pad) : dense_arg(name, t);
      };
      c.inputs = {arg("q", {s.b, s.l_q, s.h, s.p}, amp), arg("k", {s.b, s.l_k, s.h_kv, s.p}, amp),
                  arg("v", {s.b, s.l_k, s.h_kv, s.p}, 1.0), arg("grad_out", {s.b, s.l_q, s.h, s.p}, 1.0)};
      const auto spec = [&](const char* name, const Dims& shape) {
        OutSpec o{name, shape, dt};
        if (s.pad) o.strides = {shape[1] * shape[2] * (s.p + s.pad + 1), shape[2] * (s.p + s.pad + 1), s.p + s.pad + 1, 1};
        return o;
      };
      c.outputs = {spec("out", {s.b, s.l_q, s.h, s.p}), {"lse", {s.b, s.h, s.l_q}, dt}};
      c.grads = {spec("grad_q", {s.b, s.l_q, s.h, s.p}), spec("grad_k", {s.b, s.l_k, s.h_kv, s.p}),
                 spec("grad_v", {s.b, s.l_k, s.h_kv, s.p})};
      c.params = s;
      cases.push_back(std::move(c));
    }
  }
  return cases;
}

ssm::AttentionOptions options(const Case& c, const RunConfig& cfg) {
  ssm::AttentionOptions o;
  o.causal = shape_of(c).causal;
  o.algorithm = cfg.path == "materialized" ? ssm::AttentionAlgorithm::materialized : ssm::AttentionAlgorithm::tiled;
  o.n_threads = cfg.threads;
  if (cfg.block > 0) o.block_q = o.block_k = cfg.block;
  return o;
}

void attn_forward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  ssm::attention_forward(in[0], in[1], in[2], out.views[0], out.views[1], options(c, cfg));
}

/// The backend's forward (into its own buffers), then its backward into the guarded gradients.
void attn_backward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  const ssm::AttentionOptions o = options(c, cfg);
  const AttnShape& s = shape_of(c);
  const DType dt = in[0].dtype();
  const Tensor fwd_out = Tensor::empty({s.b, s.l_q, s.h, s.p}, dt, cfg.device), lse = Tensor::empty({s.b, s.h, s.l_q}, dt, cfg.device);
  ssm::attention_forward(in[0], in[1], in[2], fwd_out, lse, o);
  ssm::attention_backward(in[0], in[1], in[2], fwd_out, lse, in[3], out.views[0], out.views[1], out.views[2], o);
}

ssm::reference::AttentionDims dims_of(const Case& c) {
  const AttnShape& s = shape_of(c);
  return {s.b, s.l_q, s.l_k, s.h, s.h_kv, s.p, 0.0, s.causal};
}

void attn_forward_reference(const Case& c, const Views& in, const Views& out) {
  std::vector<double> o, lse;
  ssm::reference::attention_forward(dims_of(c), to_doubles(in[0]), to_doubles(in[1]), to_doubles(in[2]), o, lse);
  from_doubles(out[0], o);
  from_doubles(out[1], lse);
}

void attn_backward_reference(const Case& c, const Views& in, const Views& out) {
  std::vector<double> gq, gk, gv;
  ssm::reference::attention_backward(dims_of(c), to_doubles(in[0]), to_doubles(in[1]), to_doubles(in[2]),
                                     to_doubles(in[3]), gq, gk, gv);
  from_doubles(out[0], gq);
  from_doubles(out[1], gk);
  from_doubles(out[2], gv);
}

std::string attn_unsupported(const Case& c, const RunConfig& cfg, Pass) {
  if ((cfg.emulated || cfg.device.is_cuda()) && c.inputs[0].view.dtype() != DType::f32)
    return "the CUDA kernels take f32";
  return {};
}

/// f64: the same sums in another order (forward 1e-12, backward 1e-10). f32: exp and sums over up to l_k keys in f32
/// against double, 1e-5 of the largest output and 1e-4 of the largest gradient (the CUDA kernels' bounds).
double attn_tolerance(DType dt, Pass pass) {
  if (dt == DType::f64) return pass == Pass::forward ? 1e-12 : 1e-10;
  return pass == Pass::forward ? 1e-5 : 1e-4;
}

const Register reg{Op{"attention", {"materialized", "tiled"}, true, attention_cases, attn_unsupported, attn_forward,
                      attn_backward, attn_forward_reference, attn_backward_reference, attn_tolerance}};

}  // namespace
}  // namespace conformance
