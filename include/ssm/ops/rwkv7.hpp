// The RWKV-7 op: the generalized delta rule of RWKV-7 "Goose" (Peng et al. 2025), a diagonal decay plus a rank-1
// update of a state S (dk, dv) per head (docs/rwkv7.md; the formulas in core/params/rwkv7.hpp):
//   S_t = (diag(w_t) + b_t a_tᵀ) S_{t−1} + k_t v_tᵀ,   w_t = exp(log_w_t),   o_t = S_tᵀ (scale q_t),
// with initial and final states and packed sequences (cu_seqlens). RWKV-7 passes q = r, a = −κ̂, b = κ̂ ⊙ a_icl.
// Forms: the chunked form and the token loop in the compute type (cpu/rwkv7.hpp), the token loop in double
// (reference/rwkv7.hpp), and the one-token step for decoding (rwkv7_step). Forward and backward (rwkv7_backward: q, k,
// v, log_w, a, b and the initial state; the chunked backward, or the token loop over checkpointed states). CUDA tensors
// run the backend's rwkv7_forward / _backward entries (ssm::cuda: one thread per value column through the sequence,
// the backward over states checkpointed every chunk_size steps; f32 / f16 / bf16 inputs; opt.path is ignored there),
// and so does the decode step.
#pragma once

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "ssm/core/backend.hpp"
#include "ssm/core/check.hpp"
#include "ssm/core/params/rwkv7.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/rwkv7.hpp"
#include "ssm/ops/one_step.hpp"
#include "ssm/ops/value_checks.hpp"
#include "ssm/reference/rwkv7.hpp"

namespace ssm {

/// Input dtype: q, k, v, log_w, a, b, out in f32 | f64 | f16 | bf16 (16-bit computed in f32); the state in the param
/// dtype (f64 for f64 inputs, else f32), contiguous. The last dimension of every per-token tensor has unit stride.
struct Rwkv7Inputs {
  TensorView q{};                              // (b, l, h, dk): r, the receptance
  TensorView k{};                              // (b, l, h, dk)
  TensorView v{};                              // (b, l, h, dv)
  TensorView log_w{};                          // (b, l, h, dk), each finite and <= 0: the decay w = exp(log_w)
  TensorView a{};                              // (b, l, h, dk), finite: the rank-1 update reads aᵀ S
  TensorView b{};                              // (b, l, h, dk), finite: ... and writes it along b
  std::optional<TensorView> initial_state{};   // (b, h, dk, dv); with cu_seqlens (n_seqs, h, dk, dv)
  std::optional<TensorView> cu_seqlens{};      // (n_seqs + 1) i32 | i64 on the CPU; then b == 1
};

/// automatic = chunked; chunked = the chunk algebra of cpu/rwkv7.hpp, forward and backward; recurrent = the token loop
/// in the compute type (the backward over states checkpointed every chunk_size steps); reference = the token loop in
/// double.
enum class Rwkv7Path { automatic, reference, chunked, recurrent };

struct Rwkv7Options {
  double scale = 1.0;        // finite: o_t = S_tᵀ (scale q_t); RWKV-7 uses 1
  index_t chunk_size = 32;   // > 0: the chunked forms' chunk; the token-loop backwards' (and CUDA's) checkpoints
  Rwkv7Path path = Rwkv7Path::automatic;
  int threads = 0;                  // CPU threads (0: by the amount of work)
  bool return_final_state = false;  // the allocating form: also the final state
};

struct Rwkv7Outputs {
  Tensor out;          // v's shape and dtype
  Tensor final_state;  // (rows, h, dk, dv) param dtype, when asked for
  std::string path;    // "cpu-chunked", "cpu-recurrent", "reference" or "cuda"
};

struct Rwkv7Grads {
  Tensor grad_q, grad_k, grad_v, grad_log_w, grad_a, grad_b, grad_initial_state;  // contiguous; empty when absent
  std::string path;  // "cpu-chunked", "cpu-recurrent", "reference" or "cuda"
};

namespace detail {

/// Checks everything (log_w's, a's and b's values too) and fills the argument block; `cu` receives cu_seqlens as i64.
inline Rwkv7Params check_rwkv7(const Checker& c, const Rwkv7Inputs& in, const TensorView& out,
                               const std::optional<TensorView>& final_state, const Rwkv7Options& opt,
                               std::vector<std::int64_t>& cu, const char* out_name = "out") {
  const NamedView keyed[] = {{"q", in.q}, {"k", in.k}, {"log_w", in.log_w}, {"a", in.a}, {"b", in.b}};
  for (const auto& [nm, t] : keyed) c.defined(nm, t);
  c.defined("v", in.v).defined(out_name, out);
  c.require(opt.chunk_size > 0, "chunk_size", "must be > 0, got ", opt.chunk_size);
  c.finite("scale", opt.scale);
  const Device device = dispatch_device(c, {{"q", in.q},
                                            {"k", in.k},
                                            {"v", in.v},
                                            {"log_w", in.log_w},
                                            {"a", in.a},
                                            {"b", in.b},
                                            {out_name, out},
                                            {"initial_state", in.initial_state.value_or(in.q)},
                                            {"final_state", final_state.value_or(in.q)}});
  c.rank("v", in.v, 4).floating("v", in.v).unit_stride("v", in.v, 3);
  check_cuda_sequence_shapes(c, device, in.q, in.v);
  Rwkv7Params p;
  p.batch = in.v.size(0), p.seqlen = in.v.size(1), p.nheads = in.v.size(2), p.dv = in.v.size(3);
  p.input_dtype = in.v.dtype(), p.param_dtype = compute_dtype(in.v.dtype());
  p.scale = opt.scale;
  p.chunk_size = std::min<index_t>(opt.chunk_size, std::max<index_t>(p.seqlen, 1));
  const index_t b = p.batch, l = p.seqlen, h = p.nheads, dv = p.dv;
  c.rank("q", in.q, 4);
  p.dk = in.q.size(3);
  const index_t dk = p.dk;
  auto rows_of = [](const TensorView& t) {
    return TokenRows<const void*>{t.data(), t.stride(0), t.stride(1), t.stride(2)};
  };
  for (const auto& [nm, t] : keyed) c.same_dtype(nm, t, "v", in.v).shape(nm, t, {b, l, h, dk}).unit_stride(nm, t, 3);
  // log_w finite and <= 0, a and b finite, element by element on the host (a CUDA tensor's copy)
  Tensor storage;
  check_values(
      c, "log_w", host_mirror(in.log_w, storage), [](double x) { return std::isfinite(x) && x <= 0; },
      "every log decay must be finite and <= 0 (w = exp(log_w) <= 1)");
  for (const auto& [nm, t] : {NamedView{"a", in.a}, NamedView{"b", in.b}})
    check_values(
        c, nm, host_mirror(t, storage), [](double x) { return std::isfinite(x); }, "every value must be finite");
  p.q = rows_of(in.q), p.k = rows_of(in.k), p.v = rows_of(in.v), p.log_w = rows_of(in.log_w);
  p.a = rows_of(in.a), p.b = rows_of(in.b);
  index_t rows = b;
  if (in.cu_seqlens) {
    cu = c.cu_seqlens("cu_seqlens", *in.cu_seqlens, b, l);
    p.cu_seqlens = cu.data(), p.n_seqs = static_cast<index_t>(cu.size()) - 1;
    rows = p.n_seqs;
  }
  check_cuda_sequence_count(c, device, rows, in.cu_seqlens.has_value());
  const char* pname = p.param_dtype == DType::f64 ? "f64 (v is f64)" : "f32 (the param dtype for f32 / f16 / bf16 v)";
  auto state = [&](const char* nm, const TensorView& t) {
    c.defined(nm, t);
    c.require(t.dtype() == p.param_dtype, nm, "expected dtype ", pname, ", got ", name(t.dtype()));
    c.shape(nm, t, {rows, h, dk, dv}).contiguous(nm, t);
  };
  if (in.initial_state) state("initial_state", *in.initial_state), p.initial_state = in.initial_state->data();
  if (final_state) state("final_state", *final_state), p.final_state = final_state->data();
  c.same_dtype(out_name, out, "v", in.v).shape(out_name, out, {b, l, h, dv}).unit_stride(out_name, out, 3);
  p.out = {out.data(), out.stride(0), out.stride(1), out.stride(2)};
  return p;
}

}  // namespace detail

/// The forward into `out` (v's shape and dtype) and, when given, the final state (rows, h, dk, dv). Returns the path
/// that ran.
inline std::string rwkv7_into(const Rwkv7Inputs& in, const TensorView& out,
                              const std::optional<TensorView>& final_state = std::nullopt, const Rwkv7Options& opt = {}) {
  Checker c("rwkv7");
  std::vector<std::int64_t> cu;
  const Rwkv7Params p = detail::check_rwkv7(c, in, out, final_state, opt, cu);
  if (in.q.device().is_cuda()) {
    backend_entry(c.op(), in.q.device(), &DeviceBackend::rwkv7_forward)(p, nullptr);
    return "cuda";
  }
  switch (opt.path) {
    case Rwkv7Path::reference: reference::rwkv7_forward(p); return "reference";
    case Rwkv7Path::recurrent: cpu::rwkv7_forward_recurrent(p, opt.threads); return "cpu-recurrent";
    default: cpu::rwkv7_forward_chunked(p, opt.threads); return "cpu-chunked";
  }
}

/// The allocating form: out, and the final state when opt.return_final_state.
inline Rwkv7Outputs rwkv7(const Rwkv7Inputs& in, const Rwkv7Options& opt = {}) {
  Rwkv7Outputs r;
  r.out = Tensor::empty(in.v.shape(), in.v.dtype(), in.v.device());
  std::optional<TensorView> fs;
  if (opt.return_final_state && in.v.rank() == 4 && in.q.rank() == 4) {
    const index_t rows = in.cu_seqlens ? std::max<index_t>(in.cu_seqlens->numel() - 1, 0) : in.v.size(0);
    r.final_state = Tensor::empty({rows, in.v.size(2), in.q.size(3), in.v.size(3)}, compute_dtype(in.v.dtype()),
                                  in.v.device());
    fs = r.final_state.view();
  }
  r.path = rwkv7_into(in, r.out, fs, opt);
  return r;
}

/// Gradients for grad_out (v's shape and dtype, contiguous) and the optional gradient of the final state (param
/// dtype, contiguous; zero when absent). Rwkv7Path::reference runs the token loop in double; automatic and chunked the
/// chunked backward ("cpu-chunked", cpu/rwkv7.hpp); recurrent the token loop in the compute type over states
/// recomputed from checkpoints every opt.chunk_size steps ("cpu-recurrent").
/// CUDA tensors: the backend's backward, the same checkpointed loop one thread per value column (opt.path ignored).
inline Rwkv7Grads rwkv7_backward(const Rwkv7Inputs& in, const TensorView& grad_out,
                                 const std::optional<TensorView>& grad_final_state = std::nullopt,
                                 const Rwkv7Options& opt = {}) {
  Checker c("rwkv7_backward");
  std::vector<std::int64_t> cu;
  Rwkv7Params p = detail::check_rwkv7(c, in, grad_out, std::nullopt, opt, cu, "grad_out");
  p.out = {};  // read, never written
  c.contiguous("grad_out", grad_out);
  Rwkv7GradParams gp;
  gp.grad_out = grad_out.data();
  if (grad_final_state) {
    const TensorView& t = *grad_final_state;
    c.defined("grad_final_state", t).dtype("grad_final_state", t, p.param_dtype).contiguous("grad_final_state", t);
    c.shape("grad_final_state", t, {p.rows(), p.nheads, p.dk, p.dv}).device("grad_final_state", t, in.q.device());
    gp.grad_final_state = t.data();
  }
  Rwkv7Grads r;
  const auto like = [&](const TensorView& t) { return Tensor::empty(t.shape(), t.dtype(), t.device()); };
  r.grad_q = like(in.q), r.grad_k = like(in.k), r.grad_v = like(in.v), r.grad_log_w = like(in.log_w);
  r.grad_a = like(in.a), r.grad_b = like(in.b);
  gp.grad_q = r.grad_q.data(), gp.grad_k = r.grad_k.data(), gp.grad_v = r.grad_v.data();
  gp.grad_log_w = r.grad_log_w.data(), gp.grad_a = r.grad_a.data(), gp.grad_b = r.grad_b.data();
  if (in.initial_state) gp.grad_initial_state = (r.grad_initial_state = like(*in.initial_state)).data();
  if (in.q.device().is_cuda()) {
    backend_entry(c.op(), in.q.device(), &DeviceBackend::rwkv7_backward)(p, gp, nullptr);
    r.path = "cuda";
  } else if (opt.path == Rwkv7Path::reference) {
    reference::rwkv7_backward(p, gp);
    r.path = "reference";
  } else if (opt.path == Rwkv7Path::recurrent) {
    cpu::rwkv7_backward_recurrent(p, gp, opt.threads);
    r.path = "cpu-recurrent";
  } else {
    cpu::rwkv7_backward_chunked(p, gp, opt.threads);
    r.path = "cpu-chunked";
  }
  return r;
}

/// One decoding step: q, k, log_w, a, b (b, h, dk), v (b, h, dv); the state (b, h, dk, dv) is read and updated in
/// place (param dtype, contiguous); out (b, h, dv) receives o. The same recurrence as the forward's token loop
/// (opt.path and opt.chunk_size do not apply): on CUDA the forward kernel on one step (each column is read before it is
/// written).
inline void rwkv7_step(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& log_w,
                       const TensorView& a, const TensorView& b, const TensorView& state, const TensorView& out,
                       const Rwkv7Options& opt = {}) {
  Checker c("rwkv7_step");
  for (const auto& [nm, t] : {NamedView{"q", q}, NamedView{"k", k}, NamedView{"v", v}, NamedView{"log_w", log_w},
                              NamedView{"a", a}, NamedView{"b", b}, NamedView{"out", out}})
    c.rank(nm, t, 3);
  c.rank("state", state, 4).shape("state", state, {q.size(0), v.size(1), q.size(2), v.size(2)});
  using detail::as_one_step;
  Rwkv7Inputs in;
  in.q = as_one_step(q), in.k = as_one_step(k), in.v = as_one_step(v), in.log_w = as_one_step(log_w);
  in.a = as_one_step(a), in.b = as_one_step(b), in.initial_state = state;
  Rwkv7Options o = opt;
  o.chunk_size = 1;
  std::vector<std::int64_t> cu;
  const Rwkv7Params p = detail::check_rwkv7(c, in, as_one_step(out), state, o, cu);
  if (q.device().is_cuda())
    backend_entry(c.op(), q.device(), &DeviceBackend::rwkv7_forward)(p, nullptr);
  else
    cpu::rwkv7_forward_recurrent(p, opt.threads);
}

}  // namespace ssm
