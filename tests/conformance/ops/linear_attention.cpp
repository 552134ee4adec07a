// Conformance registration of linear attention, retention and GLA (ops/linear_attention.hpp): the chunked CPU path
// on the SSD engine or, with a log gate, the gated chunk algebra (several chunk sizes, 1 and 2 threads), the CPU token
// loop (cpu_sequential: LinearAttentionPath::recurrent) and the op's reference path against the token loop in double of
// include/ssm/reference/linear_attention.hpp; the backward on the chunked path against the reference backward, with
// incoming gradients of out, the final state and the final normalizer. The CUDA kernels (cuda_emulated:
// cuda/kernels/linear_attention.cuh around the SSD kernels, or with a log gate kernels/gla.cuh, under the host
// emulation) run every case forward and backward in f32 and bf16 (see la_unsupported).
#include <random>
#include <string>
#include <vector>

#include "../linear_attention_problem.hpp"
#include "../registry.hpp"
#include "ssm/ops/linear_attention.hpp"
#include "ssm/reference/linear_attention.hpp"

namespace conformance {
namespace {

using linear_attention_problem::LaCase;

using LaConformance = ChunkedCase<LaCase>;

const LaConformance& of(const Case& c) { return chunked_case<LaCase>(c); }

std::vector<Case> la_cases() {
  std::vector<LaConformance> list;
  LaCase s;
  s.b = 1, s.l = 1, s.h = 1, s.dk = 1, s.dv = 1;  // every size 1
  add_chunks(list, s, {1, 64});
  s = {};
  s.b = 2, s.l = 45, s.h = 3, s.dk = 5, s.dv = 4, s.seed = 2;  // plain, l not a multiple of the chunk
  add_chunks(list, s, {16, 64});
  s.feature_map = ssm::FeatureMap::elu_plus_one, s.normalize = true, s.has_init = true, s.seed = 3;  // l < chunk
  add_chunks(list, s, {7, 256});
  s = {};
  s.l = 50, s.h = 4, s.g = 2, s.dk = 6, s.dv = 3, s.decay = true, s.scale = 0.5, s.has_init = true, s.pad = 3;
  s.seed = 4;  // retention, groups, strided rows of q, k, v and out
  add_chunks(list, s, {8, 33});
  s = {};
  s.l = 40, s.h = 3, s.dk = 3, s.dv = 2, s.normalize = true, s.decay = true, s.has_init = true, s.cu = {0, 5, 6, 40};
  s.seed = 5;  // packed
  add_chunks(list, s, {4, 64});
  s = {};
  s.b = 2, s.l = 75, s.h = 4, s.g = 2, s.dk = 7, s.dv = 5, s.gate = 2, s.has_init = true, s.normalize = true;
  s.feature_map = ssm::FeatureMap::elu_plus_one, s.pad = 1, s.seed = 6;  // GLA: spans that split blocks, strided
  add_chunks(list, s, {16, 64});
  s = {};
  s.l = 33, s.h = 2, s.dk = 3, s.dv = 4, s.gate = 40, s.decay = true, s.cu = {0, 9, 33}, s.seed = 7;  // GLA, packed,
  add_chunks(list, s, {5, 32});                                                                        // direct blocks

  return chunked_cases(list, [](const LaConformance& k) {
    const linear_attention_problem::LaData d = linear_attention_problem::make_data(k.shape);
    const LaCase& cs = k.shape;
    const DType dt = cs.dtype, pt = ssm::compute_dtype(dt);
    const bool p = cs.pad > 0;
    Case c;
    c.name = cs.describe();
    const ssm::LinearAttentionInputs in = d.inputs();
    add_input(c, "q", p, d.q, d.q_pad, in.q);
    add_input(c, "k", p, d.k, d.k_pad, in.k);
    add_input(c, "v", p, d.v, d.v_pad, in.v);
    if (in.log_gate) add_input(c, "log_gate", p, d.log_gate, d.log_gate_pad, *in.log_gate);
    if (in.initial_state) add_input(c, "initial_state", false, d.initial_state, {}, *in.initial_state);
    if (in.initial_normalizer) add_input(c, "initial_normalizer", false, d.initial_normalizer, {}, *in.initial_normalizer);
    if (in.cu_seqlens) add_input(c, "cu_seqlens", false, d.cu_seqlens, {}, *in.cu_seqlens);
    std::mt19937_64 rng(cs.seed + 500);
    c.inputs.push_back(dense_arg("grad_out", linear_attention_problem::uniform(rng, {cs.b, cs.l, cs.h, cs.dv}, dt, -1, 1)));
    c.inputs.push_back(dense_arg("grad_final_state",
                                 linear_attention_problem::uniform(rng, {cs.rows(), cs.h, cs.dk, cs.dv}, pt, -1, 1)));
    if (cs.normalize)
      c.inputs.push_back(
          dense_arg("grad_final_normalizer", linear_attention_problem::uniform(rng, {cs.rows(), cs.h, cs.dk}, pt, -1, 1)));
    add_input_grads(c, {"q", "k", "v", "log_gate", "initial_state", "initial_normalizer"});
    OutSpec out{"out", {cs.b, cs.l, cs.h, cs.dv}, dt};  // (b, l, h, dv)
    if (p) out.strides = {cs.l * cs.h * (cs.dv + 2), cs.h * (cs.dv + 2), cs.dv + 2, 1};
    c.outputs = {out, {"final_state", {cs.rows(), cs.h, cs.dk, cs.dv}, pt}};  // (rows, h, dk, dv)
    if (cs.normalize) c.outputs.push_back({"final_normalizer", {cs.rows(), cs.h, cs.dk}, pt});  // (rows, h, dk)
    return c;
  });
}

ssm::LinearAttentionInputs la_inputs(const Case& c, const Views& in) {
  ssm::LinearAttentionInputs r;
  r.q = named(c, in, "q"), r.k = named(c, in, "k"), r.v = named(c, in, "v");
  r.log_gate = optional_view(named(c, in, "log_gate"));
  r.initial_state = optional_view(named(c, in, "initial_state"));
  r.initial_normalizer = optional_view(named(c, in, "initial_normalizer"));
  r.cu_seqlens = optional_view(named(c, in, "cu_seqlens"));
  return r;
}

ssm::LinearAttentionOptions la_options(const Case& c, const RunConfig& cfg) {
  const LaCase& s = of(c).shape;
  ssm::LinearAttentionOptions o;
  o.feature_map = s.feature_map, o.normalize = s.normalize, o.scale = s.scale, o.gamma = s.gammas();
  o.chunk_size = of(c).chunk;
  o.path = recurrence_path<ssm::LinearAttentionPath>(cfg);
  o.threads = recurrence_threads(of(c).threads, cfg);
  return o;
}

std::optional<TensorView> out_at(const Views& out, std::size_t i) {
  return i < out.size() ? std::optional<TensorView>(out[i]) : std::nullopt;
}

void la_forward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  const std::string path =
      ssm::linear_attention_into(la_inputs(c, in), out.views[0], out.views[1], out_at(out.views, 2), la_options(c, cfg));
  EXPECT_EQ(path, recurrence_path_name(cfg));
}

/// The token loop in double, into the contiguous reference outputs (an argument block filled by the op's checks).
void la_forward_reference(const Case& c, const Views& in, const Views& out) {
  ssm::Checker chk("linear_attention");
  std::vector<std::int64_t> cu;
  std::vector<double> log_gamma;
  RunConfig ref;
  ref.path = "reference";
  ssm::reference::linear_attention_forward(ssm::detail::check_linear_attention(
      chk, la_inputs(c, in), out[0], out[1], out_at(out, 2), la_options(c, ref), cu, log_gamma));
}

void la_backward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  ssm::LinearAttentionGrads r = ssm::linear_attention_backward(
      la_inputs(c, in), named(c, in, "grad_out"), optional_view(named(c, in, "grad_final_state")),
      optional_view(named(c, in, "grad_final_normalizer")), la_options(c, cfg));
  EXPECT_EQ(r.path, cfg.device.is_cuda() ? "cuda" : cfg.path == "reference" ? "reference" : "cpu-chunked");
  for (std::size_t i = 0; i < c.grads.size(); ++i) {
    const std::string& n = c.grads[i].name;
    out.adopt(i, n == "grad_q" ? r.grad_q : n == "grad_k" ? r.grad_k : n == "grad_v" ? r.grad_v
                 : n == "grad_log_gate" ? r.grad_log_gate
                 : n == "grad_initial_state" ? r.grad_initial_state : r.grad_initial_normalizer);
  }
}

void la_backward_reference(const Case& c, const Views& in, const Views& out) {
  backward_on_reference_path(la_backward, c, in, out);
}

std::string la_unsupported(const Case& c, const RunConfig& cfg, Pass pass) {
  const LaCase& s = of(c).shape;
  if (std::string why = chunked_cuda_unsupported(of(c), cfg); !why.empty()) return why;
  // f16 and bf16 take the same kernels (load, widen to f32, compute, narrow on store): the emulation runs bf16, a GPU
  // both (as the SSD op's registration).
  if (cfg.emulated && s.dtype == DType::f16) return "f16 under the emulation (bf16 runs the same kernels)";
  if (pass == Pass::backward && cfg.path == "reference") return "the reference backward is the oracle itself";
  if (pass == Pass::backward && cfg.path == "sequential") return "the token loop (recurrent) has no backward";
  return {};
}

const Register reg{Op{"linear_attention",
                      {"reference", "sequential", "chunked"},
                      true,
                      la_cases,
                      la_unsupported,
                      la_forward,
                      la_backward,
                      la_forward_reference,
                      la_backward_reference,
                      chunked_recurrence_tolerance}};

}  // namespace
}  // namespace conformance
