// Conformance registration of RWKV-4's WKV recurrence (ops/rwkv4.hpp): the CPU token loop vectorized across channels
// (cpu_sequential: Rwkv4Path::recurrent, several checkpoint intervals) and the op's reference path against the token
// loop in double of include/ssm/reference/rwkv4.hpp; the backward (over checkpointed states) against the reference
// backward, with incoming gradients of out and of the final state. No CUDA kernels.
#include <random>
#include <string>
#include <vector>

#include "../registry.hpp"
#include "../rwkv4_problem.hpp"
#include "ssm/ops/rwkv4.hpp"
#include "ssm/reference/rwkv4.hpp"

namespace conformance {
namespace {

using rwkv4_problem::Rw4Case;
using Rw4Conformance = ChunkedCase<Rw4Case>;  // chunk: the backward's checkpoint interval

const Rw4Conformance& of(const Case& c) { return chunked_case<Rw4Case>(c); }

std::vector<Case> rw4_cases() {
  std::vector<Rw4Conformance> list;
  Rw4Case s;
  s.b = 1, s.l = 1, s.c = 1;  // every size 1
  add_chunks(list, s, {1, 64});
  s = {};
  s.b = 2, s.l = 45, s.c = 70, s.seed = 2;  // c beyond one block of channels and not a multiple of a vector
  add_chunks(list, s, {16, 64});
  s.has_init = true, s.seed = 3;
  add_chunks(list, s, {7, 256});
  s.k_lo = 8, s.k_hi = 24, s.seed = 6;  // e^{k} summed over the sequence beyond 1e10: the running maximum's scale
  add_chunks(list, s, {7, 64});         // (keys past f32's e^88: tests/rwkv4, with their own f32 bound)
  s = {};
  s.l = 50, s.c = 19, s.has_init = true, s.pad = 3, s.seed = 4;  // strided rows of k, v, out
  add_chunks(list, s, {8, 33});
  s = {};
  s.l = 40, s.c = 5, s.has_init = true, s.cu = {0, 5, 6, 40}, s.seed = 5;  // packed
  add_chunks(list, s, {4, 64});

  return chunked_cases(list, [](const Rw4Conformance& k) {
    const rwkv4_problem::Rw4Data d = rwkv4_problem::make_data(k.shape);
    const Rw4Case& cs = d.cs;
    const DType dt = cs.dtype, pt = ssm::compute_dtype(dt);
    const bool p = cs.pad > 0;
    Case c;
    c.name = cs.describe();
    const ssm::Rwkv4Inputs in = d.inputs();
    add_input(c, "k", p, d.k, d.k_pad, in.k);
    add_input(c, "v", p, d.v, d.v_pad, in.v);
    add_input(c, "time_decay", false, d.time_decay, {}, in.time_decay);
    add_input(c, "time_first", false, d.time_first, {}, in.time_first);
    if (in.initial_state) add_input(c, "initial_state", false, d.initial_state, {}, *in.initial_state);
    if (in.cu_seqlens) add_input(c, "cu_seqlens", false, d.cu_seqlens, {}, *in.cu_seqlens);
    std::mt19937_64 rng(cs.seed + 700);
    c.inputs.push_back(dense_arg("grad_out", uniform(rng, {cs.b, cs.l, cs.c}, dt, -1, 1)));
    // the final state's gradient: num and den, and a max gradient beyond what num and den imply
    c.inputs.push_back(dense_arg("grad_final_state", uniform(rng, {cs.rows(), 3, cs.c}, pt, -1, 1)));
    add_input_grads(c, {"k", "v", "time_decay", "time_first", "initial_state"});
    OutSpec out{"out", {cs.b, cs.l, cs.c}, dt};  // (b, l, c)
    if (p) out.strides = {cs.l * (cs.c + 2), cs.c + 2, 1};
    c.outputs = {out, {"final_state", {cs.rows(), 3, cs.c}, pt}};  // (rows, 3, c)
    return c;
  });
}

ssm::Rwkv4Inputs rw4_inputs(const Case& c, const Views& in) {
  ssm::Rwkv4Inputs r;
  r.k = named(c, in, "k"), r.v = named(c, in, "v");
  r.time_decay = named(c, in, "time_decay"), r.time_first = named(c, in, "time_first");
  r.initial_state = optional_view(named(c, in, "initial_state"));
  r.cu_seqlens = optional_view(named(c, in, "cu_seqlens"));
  return r;
}

ssm::Rwkv4Options rw4_options(const Case& c, const RunConfig& cfg) {
  ssm::Rwkv4Options o;
  o.checkpoint = of(c).chunk;
  o.path = cfg.path == "reference" ? ssm::Rwkv4Path::reference : ssm::Rwkv4Path::recurrent;
  o.threads = cfg.path == "reference" ? cfg.threads : of(c).threads;
  return o;
}

void rw4_forward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  const std::string path = ssm::rwkv4_into(rw4_inputs(c, in), out.views[0], out.views[1], rw4_options(c, cfg));
  EXPECT_EQ(path, recurrence_path_name(cfg));
}

/// The token loop in double, into the contiguous reference outputs (an argument block filled by the op's checks).
void rw4_forward_reference(const Case& c, const Views& in, const Views& out) {
  ssm::Checker chk("rwkv4");
  std::vector<std::int64_t> cu;
  RunConfig ref;
  ref.path = "reference";
  ssm::reference::rwkv4_forward(ssm::detail::check_rwkv4(chk, rw4_inputs(c, in), out[0], out[1], rw4_options(c, ref), cu));
}

void rw4_backward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  ssm::Rwkv4Grads r = ssm::rwkv4_backward(rw4_inputs(c, in), named(c, in, "grad_out"),
                                          optional_view(named(c, in, "grad_final_state")), rw4_options(c, cfg));
  EXPECT_EQ(r.path, recurrence_path_name(cfg));
  for (std::size_t i = 0; i < c.grads.size(); ++i) {
    const std::string& n = c.grads[i].name;
    out.adopt(i, n == "grad_k" ? r.grad_k : n == "grad_v" ? r.grad_v : n == "grad_time_decay" ? r.grad_time_decay
                 : n == "grad_time_first" ? r.grad_time_first : r.grad_initial_state);
  }
}

void rw4_backward_reference(const Case& c, const Views& in, const Views& out) {
  backward_on_reference_path(rw4_backward, c, in, out);
}

std::string rw4_unsupported(const Case&, const RunConfig& cfg, Pass pass) {
  if (pass == Pass::backward && cfg.path == "reference") return "the reference backward is the oracle itself";
  return {};
}

/// The token loop in the compute type against the same loop in double: every step's rounding (two exponentials of
/// 2.5e-7 relative error in f32) enters both the output and the carried state, which decays by at least e^{−e^{−3}}
/// per step; the f32 gradients sum over up to l steps and the sequences: the recurrences' usual bounds.
const Register reg{Op{"rwkv4", {"reference", "sequential"}, false, rw4_cases, rw4_unsupported, rw4_forward,
                      rw4_backward, rw4_forward_reference, rw4_backward_reference, chunked_recurrence_tolerance}};

}  // namespace
}  // namespace conformance
