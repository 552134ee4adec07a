// The RWKV-4 op: the WKV recurrence of RWKV-4's time mixing (Peng et al. 2023; docs/rwkv4.md; the formulas in
// core/params/rwkv4.hpp), per channel
//   wkv_t = (Σ_{i<t} e^{(t−1−i) w + k_i} v_i + e^{u + k_t} v_t) / (Σ_{i<t} e^{(t−1−i) w + k_i} + e^{u + k_t}),
// w = −exp(time_decay), u = time_first, computed on the scaled state (num, den, max) so that nothing overflows; with
// initial and final states and packed sequences (cu_seqlens). Forms: the token loop in the compute type, vectorized
// across channels (cpu/rwkv4.hpp), the token loop in double (reference/rwkv4.hpp), and the one-token step for decoding
// (rwkv4_step). Forward and backward (rwkv4_backward: k, v, time_decay, time_first and the initial state). CPU tensors
// only: CUDA tensors are an ssm::Error.
#pragma once

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/params/rwkv4.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/rwkv4.hpp"
#include "ssm/ops/one_step.hpp"
#include "ssm/reference/rwkv4.hpp"

namespace ssm {

/// k, v, out in f32 | f64 | f16 | bf16 (16-bit computed in f32), unit stride along c; time_decay, time_first and the
/// states in the param dtype (f64 for f64 inputs, else f32), contiguous.
struct Rwkv4Inputs {
  TensorView k{};                             // (b, l, c)
  TensorView v{};                             // (b, l, c)
  TensorView time_decay{};                    // (c), finite: the decay per step is e^w, w = −exp(time_decay)
  TensorView time_first{};                    // (c), finite: u, the current token's bonus
  std::optional<TensorView> initial_state{};  // (b, 3, c): num, den, max (finite, den >= 0); with cu_seqlens (n_seqs, 3, c)
  std::optional<TensorView> cu_seqlens{};     // (n_seqs + 1) i32 | i64 on the CPU; then b == 1
};

/// automatic = recurrent; recurrent = the token loop in the compute type; reference = the token loop in double.
enum class Rwkv4Path { automatic, reference, recurrent };

struct Rwkv4Options {
  index_t checkpoint = 64;  // > 0: the backward's interval between saved states
  Rwkv4Path path = Rwkv4Path::automatic;
  int threads = 0;                  // CPU threads (0: by the amount of work)
  bool return_final_state = false;  // the allocating form: also the final state
};

struct Rwkv4Outputs {
  Tensor out;          // k's shape and dtype
  Tensor final_state;  // (rows, 3, c) param dtype, when asked for
  std::string path;    // "cpu-recurrent" or "reference"
};

struct Rwkv4Grads {
  Tensor grad_k, grad_v, grad_time_decay, grad_time_first, grad_initial_state;  // contiguous; empty when absent
  std::string path;                                                          // "cpu-recurrent" or "reference"
};

/// The empty state of `rows` sequences and c channels, (rows, 3, c) in `dtype` (f32 | f64): num = den = 0 and
/// max = −1e38, what a sequence starts from when no initial state is given.
inline Tensor rwkv4_empty_state(index_t rows, index_t c, DType dtype = DType::f32, Device device = Device::cpu()) {
  Checker ch("rwkv4_empty_state");
  ch.require(rows >= 0, "rows", "must be >= 0, got ", rows).require(c >= 0, "c", "must be >= 0, got ", c);
  ch.require(dtype == DType::f32 || dtype == DType::f64, "dtype", "expected f32 or f64, got ", name(dtype));
  ch.require(device.is_cpu(), "device", "rwkv4 has no CUDA path yet (asked for ", device.str(), ")");
  Tensor s = Tensor::zeros({rows, 3, c}, dtype, device);
  for (index_t r = 0; r < rows; ++r)
    for (index_t i = 0; i < c; ++i) {
      if (dtype == DType::f32) s.data_as<float>()[(r * 3 + 2) * c + i] = static_cast<float>(kRwkv4EmptyMax);
      else s.data_as<double>()[(r * 3 + 2) * c + i] = kRwkv4EmptyMax;
    }
  return s;
}

namespace detail {

/// Checks everything (time_decay's, time_first's and the initial state's values too) and fills the argument block;
/// `cu` receives cu_seqlens as i64.
inline Rwkv4Params check_rwkv4(const Checker& c, const Rwkv4Inputs& in, const TensorView& out,
                               const std::optional<TensorView>& final_state, const Rwkv4Options& opt,
                               std::vector<std::int64_t>& cu, const char* out_name = "out") {
  c.defined("k", in.k).defined("v", in.v).defined("time_decay", in.time_decay).defined("time_first", in.time_first);
  c.defined(out_name, out);
  c.require(opt.checkpoint > 0, "checkpoint", "must be > 0, got ", opt.checkpoint);
  c.same_device({{"k", in.k}, {"v", in.v}, {"time_decay", in.time_decay}, {"time_first", in.time_first}, {out_name, out},
                 {"initial_state", in.initial_state.value_or(in.k)}, {"final_state", final_state.value_or(in.k)}});
  c.require(in.k.device().is_cpu(), "k", "RWKV-4 has no CUDA path yet (k is on ", in.k.device().str(), ")");
  c.rank("k", in.k, 3).floating("k", in.k).unit_stride("k", in.k, 2);
  Rwkv4Params p;
  p.batch = in.k.size(0), p.seqlen = in.k.size(1), p.channels = in.k.size(2);
  p.input_dtype = in.k.dtype(), p.param_dtype = compute_dtype(in.k.dtype());
  p.checkpoint = opt.checkpoint;
  const index_t b = p.batch, l = p.seqlen, C = p.channels;
  c.same_dtype("v", in.v, "k", in.k).shape("v", in.v, {b, l, C}).unit_stride("v", in.v, 2);
  c.same_dtype(out_name, out, "k", in.k).shape(out_name, out, {b, l, C}).unit_stride(out_name, out, 2);
  p.k = in.k.data(), p.k_strides[0] = in.k.stride(0), p.k_strides[1] = in.k.stride(1);
  p.v = in.v.data(), p.v_strides[0] = in.v.stride(0), p.v_strides[1] = in.v.stride(1);
  p.out = out.data(), p.out_strides[0] = out.stride(0), p.out_strides[1] = out.stride(1);
  const char* pname = p.param_dtype == DType::f64 ? "f64 (k is f64)" : "f32 (the param dtype for f32 / f16 / bf16 k)";
  auto param = [&](const char* nm, const TensorView& t) {
    c.require(t.dtype() == p.param_dtype, nm, "expected dtype ", pname, ", got ", name(t.dtype()));
  };
  // the values, read on the host: finite per-channel parameters; a finite initial state with den >= 0
  auto value = [&](const TensorView& t, index_t i) {
    return p.param_dtype == DType::f64 ? static_cast<const double*>(t.data())[i]
                                       : static_cast<double>(static_cast<const float*>(t.data())[i]);
  };
  for (const auto& [nm, t] : {NamedView{"time_decay", in.time_decay}, NamedView{"time_first", in.time_first}}) {
    param(nm, t);
    c.shape(nm, t, {C}).contiguous(nm, t);
    for (index_t i = 0; i < C; ++i)
      if (!std::isfinite(value(t, i))) c.require(false, nm, "every value must be finite, got ", value(t, i), " at ", i);
  }
  p.time_decay = in.time_decay.data(), p.time_first = in.time_first.data();
  index_t rows = b;
  if (in.cu_seqlens) {
    cu = c.cu_seqlens("cu_seqlens", *in.cu_seqlens, b, l);
    p.cu_seqlens = cu.data(), p.n_seqs = static_cast<index_t>(cu.size()) - 1;
    rows = p.n_seqs;
  }
  auto state = [&](const char* nm, const TensorView& t) {
    c.defined(nm, t);
    param(nm, t);
    c.shape(nm, t, {rows, 3, C}).contiguous(nm, t);
  };
  if (in.initial_state) {
    const TensorView& t = *in.initial_state;
    state("initial_state", t);
    for (index_t r = 0; r < rows; ++r)
      for (index_t j = 0; j < 3; ++j)
        for (index_t i = 0; i < C; ++i) {
          const double x = value(t, (r * 3 + j) * C + i);
          if (!std::isfinite(x) || (j == 1 && x < 0))
            c.require(false, "initial_state", j == 1 ? "den must be finite and >= 0" : "every value must be finite",
                      " (an empty state: rwkv4_empty_state), got ", x, " at (", r, ", ", j, ", ", i, ")");
        }
    p.initial_state = t.data();
  }
  if (final_state) state("final_state", *final_state), p.final_state = final_state->data();
  return p;
}

}  // namespace detail

/// The forward into `out` (k's shape and dtype) and, when given, the final state (rows, 3, c). Returns the path that
/// ran.
inline std::string rwkv4_into(const Rwkv4Inputs& in, const TensorView& out,
                              const std::optional<TensorView>& final_state = std::nullopt, const Rwkv4Options& opt = {}) {
  Checker c("rwkv4");
  std::vector<std::int64_t> cu;
  const Rwkv4Params p = detail::check_rwkv4(c, in, out, final_state, opt, cu);
  if (opt.path == Rwkv4Path::reference) {
    reference::rwkv4_forward(p);
    return "reference";
  }
  cpu::rwkv4_forward(p, opt.threads);
  return "cpu-recurrent";
}

/// The allocating form: out, and the final state when opt.return_final_state.
inline Rwkv4Outputs rwkv4(const Rwkv4Inputs& in, const Rwkv4Options& opt = {}) {
  Rwkv4Outputs r;
  r.out = Tensor::empty(in.k.shape(), in.k.dtype(), in.k.device());
  std::optional<TensorView> fs;
  if (opt.return_final_state && in.k.rank() == 3) {
    const index_t rows = in.cu_seqlens ? std::max<index_t>(in.cu_seqlens->numel() - 1, 0) : in.k.size(0);
    r.final_state = Tensor::empty({rows, 3, in.k.size(2)}, compute_dtype(in.k.dtype()), in.k.device());
    fs = r.final_state.view();
  }
  r.path = rwkv4_into(in, r.out, fs, opt);
  return r;
}

/// Gradients for grad_out (k's shape and dtype, contiguous) and the optional gradient of the final state (rows, 3, c)
/// (param dtype, contiguous; zero when absent). Rwkv4Path::reference runs the token loop in double; every other path
/// the vectorized loop over states recomputed from checkpoints every opt.checkpoint steps ("cpu-recurrent").
inline Rwkv4Grads rwkv4_backward(const Rwkv4Inputs& in, const TensorView& grad_out,
                                 const std::optional<TensorView>& grad_final_state = std::nullopt,
                                 const Rwkv4Options& opt = {}) {
  Checker c("rwkv4_backward");
  std::vector<std::int64_t> cu;
  Rwkv4Params p = detail::check_rwkv4(c, in, grad_out, std::nullopt, opt, cu, "grad_out");
  p.out = nullptr;  // read, never written
  c.contiguous("grad_out", grad_out);
  Rwkv4GradParams gp;
  gp.grad_out = grad_out.data();
  if (grad_final_state) {
    const TensorView& t = *grad_final_state;
    c.defined("grad_final_state", t).dtype("grad_final_state", t, p.param_dtype).contiguous("grad_final_state", t);
    c.shape("grad_final_state", t, {p.rows(), 3, p.channels}).device("grad_final_state", t, in.k.device());
    gp.grad_final_state = t.data();
  }
  Rwkv4Grads r;
  const auto like = [&](const TensorView& t) { return Tensor::empty(t.shape(), t.dtype(), t.device()); };
  r.grad_k = like(in.k), r.grad_v = like(in.v);
  r.grad_time_decay = like(in.time_decay), r.grad_time_first = like(in.time_first);
  gp.grad_k = r.grad_k.data(), gp.grad_v = r.grad_v.data();
  gp.grad_time_decay = r.grad_time_decay.data(), gp.grad_time_first = r.grad_time_first.data();
  if (in.initial_state) gp.grad_initial_state = (r.grad_initial_state = like(*in.initial_state)).data();
  if (opt.path == Rwkv4Path::reference) {
    reference::rwkv4_backward(p, gp);
    r.path = "reference";
  } else {
    cpu::rwkv4_backward(p, gp, opt.threads);
    r.path = "cpu-recurrent";
  }
  return r;
}

/// One decoding step: k, v (b, c); the state (b, 3, c) is read and updated in place (param dtype, contiguous); out
/// (b, c) receives wkv. The same recurrence as the forward (opt.path and opt.checkpoint do not apply).
inline void rwkv4_step(const TensorView& k, const TensorView& v, const TensorView& time_decay,
                       const TensorView& time_first, const TensorView& state, const TensorView& out,
                       const Rwkv4Options& opt = {}) {
  Checker c("rwkv4_step");
  for (const auto& [nm, t] : {NamedView{"k", k}, NamedView{"v", v}, NamedView{"out", out}}) c.defined(nm, t).rank(nm, t, 2);
  c.defined("state", state).rank("state", state, 3).shape("state", state, {k.size(0), 3, k.size(1)});
  using detail::as_one_step;
  Rwkv4Inputs in;
  in.k = as_one_step(k), in.v = as_one_step(v), in.time_decay = time_decay, in.time_first = time_first;
  in.initial_state = state;
  Rwkv4Options o = opt;
  o.checkpoint = 1;
  std::vector<std::int64_t> cu;
  const Rwkv4Params p = detail::check_rwkv4(c, in, as_one_step(out), state, o, cu);
  cpu::rwkv4_forward(p, opt.threads);
}

}  // namespace ssm
