// Conformance registration of TTT-Linear (ops/ttt_linear.hpp): the dual form (cpu_chunked, mini-batch sizes that do
// and do not divide l, 1 and 2 threads), the CPU token loop (cpu_sequential) and the op's reference path against the
// primal form in double of include/ssm/reference/ttt_linear.hpp, with every output guarded: out, the final state and
// the pending sum; the backward (the dual form's, on cpu_chunked and cpu_sequential) against the primal form's backward
// in double, with incoming gradients of out, the final state and the pending sum. On CUDA (cuda_emulated:
// cuda/kernels/ttt_linear.cuh and ttt_linear_bwd.cuh under the host emulation, the token loop and the primal form's
// backward) every case runs, forward and backward, in f32 and bf16.
#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "../registry.hpp"
#include "../ttt_linear_problem.hpp"
#include "ssm/ops/ttt_linear.hpp"
#include "ssm/reference/ttt_linear.hpp"

namespace conformance {
namespace {

using ttt_linear_problem::TttCase;
using TttConformance = ChunkedCase<TttCase>;  // chunk: the mini-batch size

const TttConformance& of(const Case& c) { return chunked_case<TttCase>(c); }

/// The case's shape with its mini-batch size m = the chunk, and its start moved inside that mini-batch.
TttCase resolved(const TttConformance& k) {
  TttCase s = k.shape;
  s.m = k.chunk, s.start = std::min(s.start, s.m - 1);
  return s;
}

std::vector<Case> ttt_cases() {
  std::vector<TttConformance> list;
  TttCase s;
  s.b = 1, s.l = 1, s.h = 1, s.dk = 1;  // every size 1
  add_chunks(list, s, {1, 16});
  s = {};
  s.b = 2, s.l = 45, s.h = 3, s.dk = 5, s.seed = 2;  // l not a multiple of the mini-batch
  add_chunks(list, s, {4, 16});
  s.has_init = true, s.has_tau = true, s.seed = 3;  // the paper's position weights
  add_chunks(list, s, {7, 64});
  s.has_pending = true, s.start = 2, s.seed = 4;  // entering at position 2 of a mini-batch with a pending sum
  add_chunks(list, s, {3, 16});
  s = {};
  s.l = 50, s.h = 4, s.dk = 6, s.has_init = true, s.pad = 3, s.seed = 5;  // strided q, k, v, eta and out
  add_chunks(list, s, {8, 33});
  s = {};
  // packed. d >= 4 here and above: the layer norm of a row of 2 or 3 values is ill-conditioned (its spread can be far
  // below its size), so one f32 rounding of k̂ᵀŴ or q̂ᵀŴ_t may move the output by more than 1e-5 (docs/ttt_linear.md)
  s.l = 40, s.h = 3, s.dk = 4, s.has_init = true, s.cu = {0, 5, 6, 40}, s.seed = 6;
  add_chunks(list, s, {4, 64});

  return chunked_cases(list, [](const TttConformance& k) {
    const ttt_linear_problem::TttData d = ttt_linear_problem::make_data(resolved(k));
    const TttCase& cs = d.cs;
    const DType dt = cs.dtype, pt = ssm::compute_dtype(dt);
    const bool p = cs.pad > 0;
    Case c;
    c.name = cs.describe();
    const ssm::TttLinearInputs in = d.inputs();
    add_input(c, "q", p, d.q, d.q_pad, in.q);
    add_input(c, "k", p, d.k, d.k_pad, in.k);
    add_input(c, "v", p, d.v, d.v_pad, in.v);
    add_input(c, "eta", p, d.eta, d.eta_pad, in.eta);
    c.inputs.push_back(dense_arg("ln_weight", d.ln_weight));
    c.inputs.push_back(dense_arg("ln_bias", d.ln_bias));
    if (in.position_weights) c.inputs.push_back(dense_arg("position_weights", d.tau));
    if (in.initial_state) c.inputs.push_back(dense_arg("initial_state", d.initial_state));
    if (in.initial_pending) c.inputs.push_back(dense_arg("initial_pending", d.initial_pending));
    if (in.cu_seqlens) add_input(c, "cu_seqlens", false, d.cu_seqlens, {}, *in.cu_seqlens);
    std::mt19937_64 rng(cs.seed + 900);
    const ssm::Dims state{cs.rows(), cs.h, cs.dk + 1, cs.dk};  // (rows, h, d + 1, d)
    c.inputs.push_back(dense_arg("grad_out", ttt_linear_problem::uniform(rng, {cs.b, cs.l, cs.h, cs.dk}, dt, -1, 1)));
    c.inputs.push_back(dense_arg("grad_final_state", ttt_linear_problem::uniform(rng, state, pt, -1, 1)));
    c.inputs.push_back(dense_arg("grad_final_pending", ttt_linear_problem::uniform(rng, state, pt, -1, 1)));
    add_input_grads(c, {"q", "k", "v", "eta", "ln_weight", "ln_bias", "position_weights", "initial_state",
                        "initial_pending"});
    OutSpec out{"out", {cs.b, cs.l, cs.h, cs.dk}, dt};  // (b, l, h, d)
    if (p) out.strides = {cs.l * cs.h * (cs.dk + 2), cs.h * (cs.dk + 2), cs.dk + 2, 1};
    c.outputs = {out, {"final_state", state, pt}, {"final_pending", state, pt}};
    return c;
  });
}

ssm::TttLinearInputs ttt_inputs(const Case& c, const Views& in) {
  ssm::TttLinearInputs r;
  r.q = named(c, in, "q"), r.k = named(c, in, "k"), r.v = named(c, in, "v"), r.eta = named(c, in, "eta");
  r.ln_weight = named(c, in, "ln_weight"), r.ln_bias = named(c, in, "ln_bias");
  r.position_weights = optional_view(named(c, in, "position_weights"));
  r.initial_state = optional_view(named(c, in, "initial_state"));
  r.initial_pending = optional_view(named(c, in, "initial_pending"));
  r.cu_seqlens = optional_view(named(c, in, "cu_seqlens"));
  return r;
}

ssm::TttLinearOptions ttt_options(const Case& c, const RunConfig& cfg) {
  ssm::TttLinearOptions o;
  const TttCase s = resolved(of(c));
  o.mini_batch_size = s.m, o.start = s.start;
  o.path = cfg.path == "reference"    ? ssm::TttLinearPath::reference
           : cfg.path == "sequential" ? ssm::TttLinearPath::recurrent
                                      : ssm::TttLinearPath::dual;
  o.threads = recurrence_threads(of(c).threads, cfg);
  return o;
}

void ttt_forward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  const std::string path =
      ssm::ttt_linear_into(ttt_inputs(c, in), out.views[0], out.views[1], out.views[2], ttt_options(c, cfg));
  EXPECT_EQ(path, cfg.device.is_cuda()       ? "cuda"
                  : cfg.path == "reference"  ? "reference"
                  : cfg.path == "sequential" ? "cpu-recurrent"
                                             : "cpu-dual");
}

/// The primal form in double, into the contiguous reference outputs (an argument block filled by the op's checks).
void ttt_forward_reference(const Case& c, const Views& in, const Views& out) {
  ssm::Checker chk("ttt_linear");
  std::vector<std::int64_t> cu;
  RunConfig ref;
  ref.path = "reference";
  ssm::reference::ttt_linear_forward(
      ssm::detail::check_ttt_linear(chk, ttt_inputs(c, in), out[0], out[1], out[2], ttt_options(c, ref), cu));
}

void ttt_backward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  ssm::TttLinearGrads r = ssm::ttt_linear_backward(
      ttt_inputs(c, in), named(c, in, "grad_out"), optional_view(named(c, in, "grad_final_state")),
      optional_view(named(c, in, "grad_final_pending")), ttt_options(c, cfg));
  EXPECT_EQ(r.path, cfg.device.is_cuda() ? "cuda" : cfg.path == "reference" ? "reference" : "cpu-dual");
  for (std::size_t i = 0; i < c.grads.size(); ++i) {
    const std::string& n = c.grads[i].name;
    out.adopt(i, n == "grad_q" ? r.grad_q : n == "grad_k" ? r.grad_k : n == "grad_v" ? r.grad_v
                 : n == "grad_eta" ? r.grad_eta : n == "grad_ln_weight" ? r.grad_ln_weight
                 : n == "grad_ln_bias" ? r.grad_ln_bias : n == "grad_position_weights" ? r.grad_position_weights
                 : n == "grad_initial_state" ? r.grad_initial_state : r.grad_initial_pending);
  }
}

void ttt_backward_reference(const Case& c, const Views& in, const Views& out) {
  backward_on_reference_path(ttt_backward, c, in, out);
}

std::string ttt_unsupported(const Case& c, const RunConfig& cfg, Pass pass) {
  if (std::string why = chunked_cuda_unsupported(of(c), cfg); !why.empty()) return why;
  // f16 and bf16 take the same kernel (load, widen to f32, compute, narrow on store): the emulation runs bf16.
  if (cfg.emulated && of(c).shape.dtype == DType::f16) return "f16 under the emulation (bf16 runs the same kernel)";
  if (pass == Pass::backward && cfg.path == "reference") return "the reference backward is the oracle itself";
  return {};
}

/// The forward: chunked_recurrence_tolerance. The backward reassociates the inner gradients' and the outputs' sums over
/// a mini-batch and passes them back through every earlier mini-batch's layer norms: f64 1e-10, f32 1e-4, and for
/// 16-bit gradients one rounding of their type beyond that.
double ttt_tolerance(DType dt, Pass pass) { return chunked_recurrence_tolerance(dt, pass); }

const Register reg{Op{"ttt_linear",
                      {"reference", "sequential", "chunked"},
                      true,
                      ttt_cases,
                      ttt_unsupported,
                      ttt_forward,
                      ttt_backward,
                      ttt_forward_reference,
                      ttt_backward_reference,
                      ttt_tolerance}};

}  // namespace
}  // namespace conformance
