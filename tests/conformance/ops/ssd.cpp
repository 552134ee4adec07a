// Conformance registration of the SSD op (ops/ssd.hpp; Mamba-2): the chunked CPU path (several chunk sizes, 1 and 2
// threads), the CPU token loop (cpu_sequential: SsdPath::recurrent) and the op's reference path against the token
// loop in double of include/ssm/reference/ssd.hpp; the backward (ssm::ssd_backward) on the chunked path against
// reference::ssd_backward, with an incoming gradient of out and of the final state. The CUDA kernels (cuda_emulated:
// cuda/kernels/ssd_*.cuh under the host emulation) run the forward cases of f32, f16 and bf16 inputs and the backward
// cases of f32 and bf16 (see ssd_unsupported); on a GPU (cuda) the backward runs f16 too.
#include <random>
#include <string>
#include <vector>

#include "../registry.hpp"
#include "../ssd_problem.hpp"
#include "ssm/ops/ssd.hpp"
#include "ssm/reference/ssd.hpp"

namespace conformance {
namespace {

using ssd_problem::SsdCase;
using SsdConformance = ChunkedCase<SsdCase>;  // the chunked path's threads: 1 or 2 (the backend's own count is 3)

const SsdConformance& of(const Case& c) { return chunked_case<SsdCase>(c); }

std::vector<Case> ssd_cases() {
  std::vector<SsdConformance> list;
  SsdCase s;
  s.b = 1, s.l = 1, s.h = 1, s.p = 1, s.n = 1;  // l = 1, every size 1
  add_chunks(list, s, {1, 64});
  s = {};
  s.b = 2, s.l = 45, s.h = 5, s.p = 3, s.n = 6;  // l not a multiple of the chunk, no optional input
  add_chunks(list, s, {16, 64});
  s.has_D = s.has_z = s.has_bias = s.softplus = s.has_init = true, s.seed = 2;  // every optional input, l < chunk
  add_chunks(list, s, {7, 256});
  s = {};
  s.b = 1, s.l = 100, s.h = 6, s.p = 4, s.g = 3, s.n = 5, s.has_D = s.D_per_channel = s.limit = true, s.softplus = true;
  s.pad = 3, s.seed = 3;  // groups, D (h, p), a dt limit, strided rows of x, dt, B, C and out
  add_chunks(list, s, {32, 33});
  s = {};
  s.l = 70, s.h = 7, s.p = 2, s.n = 3, s.has_init = true, s.has_z = true, s.cu = {0, 5, 6, 70}, s.seed = 4;  // packed
  add_chunks(list, s, {4, 64});

  return chunked_cases(list, [](const SsdConformance& k) {
    const ssd_problem::SsdData d = ssd_problem::make_data(k.shape);
    const SsdCase& cs = k.shape;
    const DType dt = cs.dtype;
    const bool p = cs.pad > 0;
    Case c;
    c.name = cs.describe();
    const ssm::SsdInputs in = d.inputs();
    add_input(c, "x", p, d.x, d.x_pad, in.x);
    add_input(c, "dt", p, d.dt, d.dt_pad, in.dt);
    add_input(c, "A", false, d.A, {}, in.A);
    add_input(c, "B", p, d.B, d.B_pad, in.B);
    add_input(c, "C", p, d.C, d.C_pad, in.C);
    if (in.D) add_input(c, "D", false, d.D, {}, *in.D);
    if (in.z) add_input(c, "z", p, d.z, d.z_pad, *in.z);
    if (in.dt_bias) add_input(c, "dt_bias", false, d.dt_bias, {}, *in.dt_bias);
    if (in.initial_state) add_input(c, "initial_state", false, d.initial_state, {}, *in.initial_state);
    if (in.cu_seqlens) add_input(c, "cu_seqlens", false, d.cu_seqlens, {}, *in.cu_seqlens);
    std::mt19937_64 rng(cs.seed + 500);
    const Tensor grad_out = ssd_problem::uniform(rng, {cs.b, cs.l, cs.h, cs.p}, dt, -1, 1);  // (b, l, h, p)
    const Tensor grad_final =
        ssd_problem::uniform(rng, {cs.rows(), cs.h, cs.p, cs.n}, ssm::compute_dtype(dt), -1, 1);  // (rows, h, p, n)
    c.inputs.push_back(dense_arg("grad_out", grad_out));
    c.inputs.push_back(dense_arg("grad_final_state", grad_final));
    add_input_grads(c, {"x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_state"});
    OutSpec out{"out", {cs.b, cs.l, cs.h, cs.p}, dt};  // (b, l, h, p)
    if (p) out.strides = {cs.l * cs.h * (cs.p + 2), cs.h * (cs.p + 2), cs.p + 2, 1};
    c.outputs = {out, {"final_state", {cs.rows(), cs.h, cs.p, cs.n}, ssm::compute_dtype(dt)}};  // (rows, h, p, n)
    return c;
  });
}

ssm::SsdInputs ssd_inputs(const Case& c, const Views& in) {
  auto get = [&](const char* n) -> std::optional<TensorView> {
    const int i = c.input(n);
    return i >= 0 ? std::optional<TensorView>(in[static_cast<std::size_t>(i)]) : std::nullopt;
  };
  const ssd_problem::SsdCase& s = of(c).shape;
  ssm::SsdInputs r;
  r.x = *get("x"), r.dt = *get("dt"), r.A = *get("A"), r.B = *get("B"), r.C = *get("C");
  r.D = get("D"), r.z = get("z"), r.dt_bias = get("dt_bias"), r.initial_state = get("initial_state");
  r.cu_seqlens = get("cu_seqlens");
  r.dt_softplus = s.softplus;
  if (s.limit) r.dt_limit = ssd_problem::kDtLimit;
  return r;
}

void ssd_forward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  ssm::SsdOptions opt;
  opt.chunk_size = of(c).chunk;
  opt.path = recurrence_path<ssm::SsdPath>(cfg);
  opt.threads = recurrence_threads(of(c).threads, cfg);
  const std::string path = ssm::ssd_into(ssd_inputs(c, in), out.views[0], out.views[1], opt);
  EXPECT_EQ(path, recurrence_path_name(cfg));
}

/// The token loop in double, into the contiguous reference outputs (an argument block filled by the op's checks).
void ssd_forward_reference(const Case& c, const Views& in, const Views& out) {
  ssm::Checker chk("ssd");
  std::vector<std::int64_t> cu;
  ssm::Device device;
  ssm::SsdOptions opt;
  opt.chunk_size = of(c).chunk;
  ssm::reference::ssd_forward(ssm::detail::check_ssd(chk, ssd_inputs(c, in), out[0], out[1], opt, cu, device));
}

/// The backward through the op: its allocating form, the gradients adopted (compared, not guarded). On the CPU's
/// chunked path and on CUDA, each shape's first chunk size (add_chunks gives it threads = 1) reads what a forward kept
/// (SsdSaved), as training does, and its second recomputes it: both backwards on every backend and shape (and equal to
/// each other: tests/ssd, CudaOpsEmu.SsdBackwardFromWhatTheForwardKept).
void ssd_backward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  ssm::SsdOptions opt;
  opt.chunk_size = of(c).chunk;
  opt.path = cfg.path == "reference" ? ssm::SsdPath::reference : ssm::SsdPath::chunked;
  opt.threads = recurrence_threads(of(c).threads, cfg);
  const ssm::SsdInputs inputs = ssd_inputs(c, in);
  ssm::SsdOutputs kept;
  if (opt.path == ssm::SsdPath::chunked && of(c).threads == 1) {  // (on CUDA the path is ignored: the kernels run)
    ssm::SsdOptions fwd = opt;
    fwd.save_for_backward = true;
    kept = ssm::ssd(inputs, fwd);
  }
  ssm::SsdGrads r = ssm::ssd_backward(inputs, named(c, in, "grad_out"), named(c, in, "grad_final_state"), opt,
                                      kept.saved.chunk_states.defined() ? &kept.saved : nullptr);
  EXPECT_EQ(r.path, cfg.device.is_cuda() ? "cuda" : cfg.path == "reference" ? "reference" : "cpu-chunked");
  for (std::size_t i = 0; i < c.grads.size(); ++i) {
    const std::string& n = c.grads[i].name;
    Tensor* t = n == "grad_x" ? &r.grad_x : n == "grad_dt" ? &r.grad_dt : n == "grad_A" ? &r.grad_A
              : n == "grad_B" ? &r.grad_B : n == "grad_C" ? &r.grad_C : n == "grad_D" ? &r.grad_D
              : n == "grad_z" ? &r.grad_z : n == "grad_dt_bias" ? &r.grad_dt_bias : &r.grad_initial_state;
    out.adopt(i, *t);
  }
}

/// reference::ssd_backward through the op's SsdPath::reference (which runs nothing else), copied into the harness's
/// outputs.
void ssd_backward_reference(const Case& c, const Views& in, const Views& out) {
  backward_on_reference_path(ssd_backward, c, in, out);
}

std::string ssd_unsupported(const Case& c, const RunConfig& cfg, Pass pass) {
  if (std::string why = chunked_cuda_unsupported(of(c), cfg); !why.empty()) return why;
  // The backward kernels are templates over the input type, and f16 and bf16 inputs take the same instantiation path
  // (load, widen to f32, compute, narrow on store). Under the host emulation, which runs every thread of every block
  // one at a time, the f16 backward doubled the longest test under ASan (ssd cuda_emulated: 861 s), so the emulation
  // runs bf16 and a GPU runs both.
  if (cfg.emulated && pass == Pass::backward && of(c).shape.dtype == DType::f16)
    return "f16 backward under the emulation (bf16 runs the same kernels; a GPU runs f16 too)";
  if (pass == Pass::backward && cfg.path == "reference") return "the backward on SsdPath::reference is the oracle itself";
  if (pass == Pass::backward && cfg.path == "sequential") return "the token loop (SsdPath::recurrent) has no backward";
  return {};
}

const Register reg{Op{"ssd", {"reference", "sequential", "chunked"}, true, ssd_cases, ssd_unsupported, ssd_forward, ssd_backward,
                      ssd_forward_reference, ssd_backward_reference, chunked_recurrence_tolerance}};

}  // namespace
}  // namespace conformance
