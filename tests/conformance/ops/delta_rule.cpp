// Conformance registration of the delta rule, DeltaNet and Gated DeltaNet (ops/delta_rule.hpp): the chunked CPU path
// with the WY / UT transform (several chunk sizes, 1 and 2 threads), the CPU token loop (cpu_sequential:
// DeltaRulePath::recurrent) and the op's reference path against the token loop in double of
// include/ssm/reference/delta_rule.hpp; the backwards (the chunked WY / UT backward on the chunked backend, the token
// loop over checkpointed states on cpu_sequential) against the reference backward, with incoming gradients of out and
// the final state. The CUDA kernels (cuda_emulated: cuda/kernels/delta_rule.cuh and delta_rule_bwd.cuh under the
// host emulation) run every case forward and backward in f32 and bf16 (see dr_unsupported).
#include <random>
#include <string>
#include <vector>

#include "../delta_rule_problem.hpp"
#include "../registry.hpp"
#include "ssm/ops/delta_rule.hpp"
#include "ssm/reference/delta_rule.hpp"

namespace conformance {
namespace {

using delta_rule_problem::DrCase;
using DrConformance = ChunkedCase<DrCase>;

const DrConformance& of(const Case& c) { return chunked_case<DrCase>(c); }

std::vector<Case> dr_cases() {
  std::vector<DrConformance> list;
  DrCase s;
  s.b = 1, s.l = 1, s.h = 1, s.dk = 1, s.dv = 1;  // every size 1
  add_chunks(list, s, {1, 64});
  s = {};
  s.b = 2, s.l = 45, s.h = 3, s.dk = 5, s.dv = 4, s.seed = 2;  // DeltaNet, l not a multiple of the chunk
  add_chunks(list, s, {16, 64});
  s.gated = true, s.has_init = true, s.seed = 3;  // Gated DeltaNet, l < chunk
  add_chunks(list, s, {7, 256});
  s = {};
  s.l = 50, s.h = 4, s.g = 2, s.dk = 6, s.dv = 3, s.gated = true, s.scale = 0.5, s.l2_normalize = false;
  s.has_init = true, s.pad = 3, s.seed = 4;  // groups, strided rows of q, k, v, β, g and out
  add_chunks(list, s, {8, 33});
  s = {};
  s.l = 40, s.h = 3, s.dk = 3, s.dv = 2, s.gated = true, s.has_init = true, s.cu = {0, 5, 6, 40};
  s.seed = 5;  // packed
  add_chunks(list, s, {4, 64});

  return chunked_cases(list, [](const DrConformance& k) {
    const delta_rule_problem::DrData d = delta_rule_problem::make_data(k.shape);
    const DrCase& cs = k.shape;
    const DType dt = cs.dtype, pt = ssm::compute_dtype(dt);
    const bool p = cs.pad > 0;
    Case c;
    c.name = cs.describe();
    const ssm::DeltaRuleInputs in = d.inputs();
    add_input(c, "q", p, d.q, d.q_pad, in.q);
    add_input(c, "k", p, d.k, d.k_pad, in.k);
    add_input(c, "v", p, d.v, d.v_pad, in.v);
    add_input(c, "beta", p, d.beta, d.beta_pad, in.beta);
    if (in.g) add_input(c, "g", p, d.g, d.g_pad, *in.g);
    if (in.initial_state) add_input(c, "initial_state", false, d.initial_state, {}, *in.initial_state);
    if (in.cu_seqlens) add_input(c, "cu_seqlens", false, d.cu_seqlens, {}, *in.cu_seqlens);
    std::mt19937_64 rng(cs.seed + 500);
    c.inputs.push_back(dense_arg("grad_out", delta_rule_problem::uniform(rng, {cs.b, cs.l, cs.h, cs.dv}, dt, -1, 1)));
    c.inputs.push_back(dense_arg("grad_final_state",
                                 delta_rule_problem::uniform(rng, {cs.rows(), cs.h, cs.dk, cs.dv}, pt, -1, 1)));
    add_input_grads(c, {"q", "k", "v", "beta", "g", "initial_state"});
    OutSpec out{"out", {cs.b, cs.l, cs.h, cs.dv}, dt};  // (b, l, h, dv)
    if (p) out.strides = {cs.l * cs.h * (cs.dv + 2), cs.h * (cs.dv + 2), cs.dv + 2, 1};
    c.outputs = {out, {"final_state", {cs.rows(), cs.h, cs.dk, cs.dv}, pt}};  // (rows, h, dk, dv)
    return c;
  });
}

ssm::DeltaRuleInputs dr_inputs(const Case& c, const Views& in) {
  ssm::DeltaRuleInputs r;
  r.q = named(c, in, "q"), r.k = named(c, in, "k"), r.v = named(c, in, "v"), r.beta = named(c, in, "beta");
  r.g = optional_view(named(c, in, "g"));
  r.initial_state = optional_view(named(c, in, "initial_state"));
  r.cu_seqlens = optional_view(named(c, in, "cu_seqlens"));
  return r;
}

ssm::DeltaRuleOptions dr_options(const Case& c, const RunConfig& cfg) {
  const DrCase& s = of(c).shape;
  ssm::DeltaRuleOptions o;
  o.l2_normalize = s.l2_normalize, o.scale = s.scale, o.chunk_size = of(c).chunk;
  o.path = recurrence_path<ssm::DeltaRulePath>(cfg);
  o.threads = recurrence_threads(of(c).threads, cfg);
  return o;
}

void dr_forward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  const std::string path = ssm::delta_rule_into(dr_inputs(c, in), out.views[0], out.views[1], dr_options(c, cfg));
  EXPECT_EQ(path, recurrence_path_name(cfg));
}

/// The token loop in double, into the contiguous reference outputs (an argument block filled by the op's checks).
void dr_forward_reference(const Case& c, const Views& in, const Views& out) {
  ssm::Checker chk("delta_rule");
  std::vector<std::int64_t> cu;
  RunConfig ref;
  ref.path = "reference";
  ssm::reference::delta_rule_forward(
      ssm::detail::check_delta_rule(chk, dr_inputs(c, in), out[0], out[1], dr_options(c, ref), cu));
}

void dr_backward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  ssm::DeltaRuleGrads r = ssm::delta_rule_backward(dr_inputs(c, in), named(c, in, "grad_out"),
                                                   optional_view(named(c, in, "grad_final_state")), dr_options(c, cfg));
  EXPECT_EQ(r.path, recurrence_path_name(cfg));
  for (std::size_t i = 0; i < c.grads.size(); ++i) {
    const std::string& n = c.grads[i].name;
    out.adopt(i, n == "grad_q" ? r.grad_q : n == "grad_k" ? r.grad_k : n == "grad_v" ? r.grad_v
                 : n == "grad_beta" ? r.grad_beta : n == "grad_g" ? r.grad_g : r.grad_initial_state);
  }
}

void dr_backward_reference(const Case& c, const Views& in, const Views& out) {
  backward_on_reference_path(dr_backward, c, in, out);
}

std::string dr_unsupported(const Case& c, const RunConfig& cfg, Pass pass) {
  if (std::string why = chunked_cuda_unsupported(of(c), cfg); !why.empty()) return why;
  // f16 and bf16 take the same kernels (load, widen to f32, compute, narrow on store): the emulation runs bf16.
  if (cfg.emulated && of(c).shape.dtype == DType::f16) return "f16 under the emulation (bf16 runs the same kernels)";
  if (pass == Pass::backward && cfg.path == "reference") return "the reference backward is the oracle itself";
  return {};
}

const Register reg{Op{"delta_rule",
                      {"reference", "sequential", "chunked"},
                      true,
                      dr_cases,
                      dr_unsupported,
                      dr_forward,
                      dr_backward,
                      dr_forward_reference,
                      dr_backward_reference,
                      chunked_recurrence_tolerance}};

}  // namespace
}  // namespace conformance
