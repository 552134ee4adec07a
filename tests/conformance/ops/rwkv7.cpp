// Conformance registration of RWKV-7's generalized delta rule (ops/rwkv7.hpp): the chunked CPU forward (several chunk
// sizes, 1 and 2 threads), the CPU token loop (cpu_sequential: Rwkv7Path::recurrent) and the op's reference path
// against the token loop in double of include/ssm/reference/rwkv7.hpp; the backwards (the chunked backward on the
// chunked backend, the token loop over checkpointed states on cpu_sequential) against the reference backward, with
// incoming gradients of out and the final state. The CUDA kernels (cuda_emulated: cuda/kernels/rwkv7.cuh under the host
// emulation, one thread per value column) run every case forward and backward in f32 and bf16 (see rw7_unsupported).
#include <random>
#include <string>
#include <vector>

#include "../registry.hpp"
#include "../rwkv7_problem.hpp"
#include "ssm/ops/rwkv7.hpp"
#include "ssm/reference/rwkv7.hpp"

namespace conformance {
namespace {

using rwkv7_problem::Rw7Case;
using Rw7Conformance = ChunkedCase<Rw7Case>;  // chunk: the chunked forms' chunk, the token-loop backwards' interval

const Rw7Conformance& of(const Case& c) { return chunked_case<Rw7Case>(c); }

std::vector<Case> rw7_cases() {
  std::vector<Rw7Conformance> list;
  Rw7Case s;
  s.b = 1, s.l = 1, s.h = 1, s.dk = 1, s.dv = 1;  // every size 1
  add_chunks(list, s, {1, 64});
  s = {};
  s.b = 2, s.l = 45, s.h = 3, s.dk = 5, s.dv = 4, s.seed = 2;  // l not a multiple of the interval
  add_chunks(list, s, {16, 64});
  s.has_init = true, s.scale = 0.5, s.log_w_min = -4, s.seed = 3;  // a scale, fast decays
  add_chunks(list, s, {7, 256});
  s.log_w_min = -40, s.seed = 6;  // decay spans far beyond what one factor of the chunk scores may carry
  add_chunks(list, s, {7, 256});
  s = {};
  s.l = 50, s.h = 4, s.dk = 6, s.dv = 3, s.has_init = true, s.pad = 3, s.seed = 4;  // strided rows of every input, out
  add_chunks(list, s, {8, 33});
  s = {};
  s.l = 40, s.h = 3, s.dk = 3, s.dv = 2, s.has_init = true, s.cu = {0, 5, 6, 40}, s.seed = 5;  // packed
  add_chunks(list, s, {4, 64});

  return chunked_cases(list, [](const Rw7Conformance& k) {
    const rwkv7_problem::Rw7Data d = rwkv7_problem::make_data(k.shape);
    const Rw7Case& cs = d.cs;
    const DType dt = cs.dtype, pt = ssm::compute_dtype(dt);
    const bool p = cs.pad > 0;
    Case c;
    c.name = cs.describe();
    const ssm::Rwkv7Inputs in = d.inputs();
    add_input(c, "q", p, d.q, d.q_pad, in.q);
    add_input(c, "k", p, d.k, d.k_pad, in.k);
    add_input(c, "v", p, d.v, d.v_pad, in.v);
    add_input(c, "log_w", p, d.log_w, d.log_w_pad, in.log_w);
    add_input(c, "a", p, d.a, d.a_pad, in.a);
    add_input(c, "b", p, d.b, d.b_pad, in.b);
    if (in.initial_state) add_input(c, "initial_state", false, d.initial_state, {}, *in.initial_state);
    if (in.cu_seqlens) add_input(c, "cu_seqlens", false, d.cu_seqlens, {}, *in.cu_seqlens);
    std::mt19937_64 rng(cs.seed + 700);
    c.inputs.push_back(dense_arg("grad_out", rwkv7_problem::uniform(rng, {cs.b, cs.l, cs.h, cs.dv}, dt, -1, 1)));
    c.inputs.push_back(
        dense_arg("grad_final_state", rwkv7_problem::uniform(rng, {cs.rows(), cs.h, cs.dk, cs.dv}, pt, -1, 1)));
    add_input_grads(c, {"q", "k", "v", "log_w", "a", "b", "initial_state"});
    OutSpec out{"out", {cs.b, cs.l, cs.h, cs.dv}, dt};  // (b, l, h, dv)
    if (p) out.strides = {cs.l * cs.h * (cs.dv + 2), cs.h * (cs.dv + 2), cs.dv + 2, 1};
    c.outputs = {out, {"final_state", {cs.rows(), cs.h, cs.dk, cs.dv}, pt}};  // (rows, h, dk, dv)
    return c;
  });
}

ssm::Rwkv7Inputs rw7_inputs(const Case& c, const Views& in) {
  ssm::Rwkv7Inputs r;
  r.q = named(c, in, "q"), r.k = named(c, in, "k"), r.v = named(c, in, "v");
  r.log_w = named(c, in, "log_w"), r.a = named(c, in, "a"), r.b = named(c, in, "b");
  r.initial_state = optional_view(named(c, in, "initial_state"));
  r.cu_seqlens = optional_view(named(c, in, "cu_seqlens"));
  return r;
}

ssm::Rwkv7Options rw7_options(const Case& c, const RunConfig& cfg) {
  ssm::Rwkv7Options o;
  o.scale = of(c).shape.scale, o.chunk_size = of(c).chunk;
  o.path = recurrence_path<ssm::Rwkv7Path>(cfg);
  o.threads = cfg.path == "reference" ? cfg.threads : of(c).threads;
  return o;
}

void rw7_forward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  const std::string path = ssm::rwkv7_into(rw7_inputs(c, in), out.views[0], out.views[1], rw7_options(c, cfg));
  EXPECT_EQ(path, recurrence_path_name(cfg));
}

/// The token loop in double, into the contiguous reference outputs (an argument block filled by the op's checks).
void rw7_forward_reference(const Case& c, const Views& in, const Views& out) {
  ssm::Checker chk("rwkv7");
  std::vector<std::int64_t> cu;
  RunConfig ref;
  ref.path = "reference";
  ssm::reference::rwkv7_forward(ssm::detail::check_rwkv7(chk, rw7_inputs(c, in), out[0], out[1], rw7_options(c, ref), cu));
}

void rw7_backward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  ssm::Rwkv7Grads r = ssm::rwkv7_backward(rw7_inputs(c, in), named(c, in, "grad_out"),
                                          optional_view(named(c, in, "grad_final_state")), rw7_options(c, cfg));
  EXPECT_EQ(r.path, recurrence_path_name(cfg));
  for (std::size_t i = 0; i < c.grads.size(); ++i) {
    const std::string& n = c.grads[i].name;
    out.adopt(i, n == "grad_q" ? r.grad_q : n == "grad_k" ? r.grad_k : n == "grad_v" ? r.grad_v
                 : n == "grad_log_w" ? r.grad_log_w : n == "grad_a" ? r.grad_a : n == "grad_b" ? r.grad_b
                 : r.grad_initial_state);
  }
}

void rw7_backward_reference(const Case& c, const Views& in, const Views& out) {
  backward_on_reference_path(rw7_backward, c, in, out);
}

std::string rw7_unsupported(const Case& c, const RunConfig& cfg, Pass pass) {
  if (std::string why = chunked_cuda_unsupported(of(c), cfg); !why.empty()) return why;
  // f16 and bf16 take the same kernels (load, widen to f32, compute, narrow on store): the emulation runs bf16.
  if (cfg.emulated && of(c).shape.dtype == DType::f16) return "f16 under the emulation (bf16 runs the same kernels)";
  if (cfg.device.is_cuda()) return {};
  if (pass == Pass::backward && cfg.path == "reference") return "the reference backward is the oracle itself";
  return {};
}

const Register reg{Op{"rwkv7",
                      {"reference", "sequential", "chunked"},
                      true,
                      rw7_cases,
                      rw7_unsupported,
                      rw7_forward,
                      rw7_backward,
                      rw7_forward_reference,
                      rw7_backward_reference,
                      chunked_recurrence_tolerance}};

}  // namespace
}  // namespace conformance
