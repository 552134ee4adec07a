// The TTT-Linear op (Sun et al. 2024, "Learning to (Learn at Test Time)"): a hidden state that is a linear model
// Ŵ = [W; bᵀ] (d + 1, d) per head, trained while the sequence is read by mini-batch gradient descent on the inner loss
// ½‖LN(k̂ᵀŴ) − (v − k)‖², and applied to the test view: o_t = q_t + LN(q̂_tᵀ Ŵ_t) (docs/ttt_linear.md; the formulas in
// core/params/ttt_linear.hpp). Forms: the dual form (mini-batch matrix products, cpu/ttt_linear.hpp), the token loop in
// the compute type (cpu/ttt_linear.hpp), the primal form in double (reference/ttt_linear.hpp) and the one-token step
// for decoding (ttt_linear_step). Initial and final states — the weights Ŵ′ at the start of the unfinished mini-batch
// and the gradient sum A pending in it — and packed sequences (cu_seqlens). Forward and backward (ttt_linear_backward:
// q, k, v, eta, the layer norm's weights, the position weights, the initial state and pending sum). CUDA tensors run
// the backend's ttt_linear_forward entry (ssm::cuda: the token loop, one block per sequence and head; f32 / f16 / bf16
// inputs; opt.path is ignored there), and so does the decode step; the backward its ttt_linear_backward entry (the
// primal form's backward in f32, one block per sequence and head).
#pragma once

#include <cmath>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "ssm/core/backend.hpp"
#include "ssm/core/check.hpp"
#include "ssm/core/params/ttt_linear.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/ttt_linear.hpp"
#include "ssm/cpu/ttt_linear_backward.hpp"
#include "ssm/ops/one_step.hpp"
#include "ssm/ops/value_checks.hpp"
#include "ssm/reference/ttt_linear.hpp"

namespace ssm {

/// Input dtype: q, k, v, eta, out in f32 | f64 | f16 | bf16 (16-bit computed in f32). Param dtype (f64 for f64 inputs,
/// else f32), contiguous: the layer norm's weights, the position weights and the states. The last dimension of q, k,
/// v has unit stride.
struct TttLinearInputs {
  TensorView q{};                                // (b, l, h, d): the test view
  TensorView k{};                                // (b, l, h, d): the training view
  TensorView v{};                                // (b, l, h, d): the label view
  TensorView eta{};                              // (b, l, h), each finite and >= 0: the learning rate η_t
  TensorView ln_weight{};                        // γ (h, d), finite
  TensorView ln_bias{};                          // β (h, d), finite
  std::optional<TensorView> position_weights{};  // τ (m), each finite and >= 0; absent: every τ_i = 1
  std::optional<TensorView> initial_state{};     // Ŵ′ (b, h, d + 1, d); with cu_seqlens (n_seqs, h, d + 1, d)
  std::optional<TensorView> initial_pending{};   // A, the same shape; absent: zero
  std::optional<TensorView> cu_seqlens{};        // (n_seqs + 1) i32 | i64 on the CPU; then b == 1
};

/// automatic = dual; dual = the mini-batch matrix products; recurrent = the token loop in the compute type; reference =
/// the primal form in double. The backward: reference = the primal form's in double, every other path the dual form's.
enum class TttLinearPath { automatic, reference, dual, recurrent };

struct TttLinearOptions {
  index_t mini_batch_size = 16;  // m > 0 (the paper's TTT-Linear uses 16)
  index_t start = 0;             // [0, m): the mini-batch position of every sequence's first token (0: a fresh start)
  double ln_eps = 1e-6;          // the inner layer norm's ε, finite and > 0
  TttLinearPath path = TttLinearPath::automatic;
  int threads = 0;                  // CPU threads (0: by the amount of work)
  bool return_final_state = false;  // the allocating form: also the final state and pending sum
};

struct TttLinearGrads {
  Tensor grad_q, grad_k, grad_v, grad_eta;      // like q, k, v (b, l, h, d) and eta (b, l, h): contiguous
  Tensor grad_ln_weight, grad_ln_bias;          // (h, d) param dtype
  Tensor grad_position_weights;                 // (m) param dtype; empty without position weights
  Tensor grad_initial_state, grad_initial_pending;  // (rows, h, d + 1, d); empty when that input is absent
  std::string path;                                 // "cpu-dual", "reference" or "cuda"
};

struct TttLinearOutputs {
  Tensor out;            // v's shape and dtype
  Tensor final_state;    // Ŵ′ (rows, h, d + 1, d) param dtype, when asked for
  Tensor final_pending;  // A, the same shape, when asked for
  std::string path;      // "cpu-dual", "cpu-recurrent", "reference" or "cuda"
};

namespace detail {

/// t (n_0, …) of rank r < 4 as the rank-4 view (n_0, …, 1, …, 1) the value checks walk (their last dimension of size 1,
/// so t's own strides may be anything).
inline TensorView as_rank4(const TensorView& t) {
  std::vector<index_t> shape, strides;
  for (int i = 0; i < t.rank(); ++i) shape.push_back(t.size(i)), strides.push_back(t.stride(i));
  while (shape.size() < 4) shape.push_back(1), strides.push_back(1);
  return TensorView(const_cast<void*>(t.data()), t.dtype(), t.device(), Dims(shape), Dims(strides));
}

/// Checks everything (eta's, γ's, β's and τ's values too) and fills the argument block; `cu` receives cu_seqlens as
/// i64.
inline TttLinearParams check_ttt_linear(const Checker& c, const TttLinearInputs& in, const TensorView& out,
                                        const std::optional<TensorView>& final_state,
                                        const std::optional<TensorView>& final_pending, const TttLinearOptions& opt,
                                        std::vector<std::int64_t>& cu, const char* out_name = "out") {
  c.defined("q", in.q).defined("k", in.k).defined("v", in.v).defined("eta", in.eta).defined(out_name, out);
  c.defined("ln_weight", in.ln_weight).defined("ln_bias", in.ln_bias);
  c.require(opt.mini_batch_size > 0, "mini_batch_size", "must be > 0, got ", opt.mini_batch_size);
  c.require(opt.start >= 0 && opt.start < opt.mini_batch_size, "start", "must be in [0, mini_batch_size = ",
            opt.mini_batch_size, "), got ", opt.start);
  c.positive("ln_eps", opt.ln_eps);
  const TensorView none = in.q;
  const Device device = dispatch_device(c, {{"q", in.q},
                                            {"k", in.k},
                                            {"v", in.v},
                                            {"eta", in.eta},
                                            {"ln_weight", in.ln_weight},
                                            {"ln_bias", in.ln_bias},
                                            {out_name, out},
                                            {"position_weights", in.position_weights.value_or(none)},
                                            {"initial_state", in.initial_state.value_or(none)},
                                            {"initial_pending", in.initial_pending.value_or(none)},
                                            {"final_state", final_state.value_or(none)},
                                            {"final_pending", final_pending.value_or(none)}});
  c.rank("v", in.v, 4).floating("v", in.v).unit_stride("v", in.v, 3);
  check_cuda_sequence_shapes(c, device, in.q, in.v);
  Tensor storage;  // the value checks read a host copy of a CUDA tensor
  TttLinearParams p;
  p.batch = in.v.size(0), p.seqlen = in.v.size(1), p.nheads = in.v.size(2), p.d = in.v.size(3);
  p.input_dtype = in.v.dtype(), p.param_dtype = compute_dtype(in.v.dtype());
  p.mini_batch = opt.mini_batch_size, p.start = opt.start, p.ln_eps = opt.ln_eps;
  const index_t b = p.batch, l = p.seqlen, h = p.nheads, d = p.d;
  for (const auto& [nm, t] : {NamedView{"q", in.q}, NamedView{"k", in.k}})
    c.same_dtype(nm, t, "v", in.v).shape(nm, t, {b, l, h, d}).unit_stride(nm, t, 3);
  c.same_dtype("eta", in.eta, "v", in.v).shape("eta", in.eta, {b, l, h});
  check_values(
      c, "eta", as_rank4(host_mirror(in.eta, storage)), [](double x) { return std::isfinite(x) && x >= 0; },
      "every learning rate must be finite and >= 0");
  auto rows_of = [](const TensorView& t) {
    return TokenRows<const void*>{t.data(), t.stride(0), t.stride(1), t.stride(2)};
  };
  p.q = rows_of(in.q), p.k = rows_of(in.k), p.v = rows_of(in.v);
  p.eta = {in.eta.data(), in.eta.stride(0), in.eta.stride(1), in.eta.stride(2)};
  const char* pname = p.param_dtype == DType::f64 ? "f64 (v is f64)" : "f32 (the param dtype for f32 / f16 / bf16 v)";
  auto param = [&](const char* nm, const TensorView& t, std::initializer_list<index_t> shape) {
    c.defined(nm, t);
    c.require(t.dtype() == p.param_dtype, nm, "expected dtype ", pname, ", got ", name(t.dtype()));
    c.shape(nm, t, shape).contiguous(nm, t);
  };
  param("ln_weight", in.ln_weight, {h, d}), param("ln_bias", in.ln_bias, {h, d});
  for (const auto& [nm, t] : {NamedView{"ln_weight", in.ln_weight}, NamedView{"ln_bias", in.ln_bias}})
    check_values(
        c, nm, as_rank4(host_mirror(t, storage)), [](double x) { return std::isfinite(x); },
        "every value must be finite");
  p.ln_weight = in.ln_weight.data(), p.ln_bias = in.ln_bias.data();
  if (in.position_weights) {
    param("position_weights", *in.position_weights, {p.mini_batch});
    check_values(
        c, "position_weights", as_rank4(host_mirror(*in.position_weights, storage)),
        [](double x) { return std::isfinite(x) && x >= 0; }, "every position weight must be finite and >= 0");
    p.position_weights = in.position_weights->data();
  }
  index_t rows = b;
  if (in.cu_seqlens) {
    cu = c.cu_seqlens("cu_seqlens", *in.cu_seqlens, b, l);
    p.cu_seqlens = cu.data(), p.n_seqs = static_cast<index_t>(cu.size()) - 1;
    rows = p.n_seqs;
  }
  check_cuda_sequence_count(c, device, rows, in.cu_seqlens.has_value());
  auto state = [&](const char* nm, const std::optional<TensorView>& t) -> void* {
    if (!t) return nullptr;
    param(nm, *t, {rows, h, d + 1, d});
    return t->data();
  };
  p.initial_state = state("initial_state", in.initial_state), p.initial_pending = state("initial_pending", in.initial_pending);
  p.final_state = state("final_state", final_state), p.final_pending = state("final_pending", final_pending);
  c.same_dtype(out_name, out, "v", in.v).shape(out_name, out, {b, l, h, d}).unit_stride(out_name, out, 3);
  p.out = {out.data(), out.stride(0), out.stride(1), out.stride(2)};
  return p;
}

}  // namespace detail

/// The forward into `out` (v's shape and dtype) and, when given, the final state Ŵ′ and pending sum A (rows, h, d + 1,
/// d). Starting from a sequence's final state and pending sum with opt.start = its length mod m continues it exactly.
/// Returns the path that ran.
inline std::string ttt_linear_into(const TttLinearInputs& in, const TensorView& out,
                                   const std::optional<TensorView>& final_state = std::nullopt,
                                   const std::optional<TensorView>& final_pending = std::nullopt,
                                   const TttLinearOptions& opt = {}) {
  Checker c("ttt_linear");
  std::vector<std::int64_t> cu;
  const TttLinearParams p = detail::check_ttt_linear(c, in, out, final_state, final_pending, opt, cu);
  if (in.q.device().is_cuda()) {
    backend_entry(c.op(), in.q.device(), &DeviceBackend::ttt_linear_forward)(p, nullptr);
    return "cuda";
  }
  switch (opt.path) {
    case TttLinearPath::reference: reference::ttt_linear_forward(p); return "reference";
    case TttLinearPath::recurrent: cpu::ttt_linear_forward_recurrent(p, opt.threads); return "cpu-recurrent";
    default: cpu::ttt_linear_forward_dual(p, opt.threads); return "cpu-dual";
  }
}

/// The allocating form: out, and the final state and pending sum when opt.return_final_state.
inline TttLinearOutputs ttt_linear(const TttLinearInputs& in, const TttLinearOptions& opt = {}) {
  TttLinearOutputs r;
  r.out = Tensor::empty(in.v.shape(), in.v.dtype(), in.v.device());
  std::optional<TensorView> fs, fp;
  if (opt.return_final_state && in.v.rank() == 4) {
    const index_t rows = in.cu_seqlens ? std::max<index_t>(in.cu_seqlens->numel() - 1, 0) : in.v.size(0);
    const index_t d = in.v.size(3);
    const Dims shape{rows, in.v.size(2), d + 1, d};
    r.final_state = Tensor::empty(shape, compute_dtype(in.v.dtype()), in.v.device());
    r.final_pending = Tensor::empty(shape, compute_dtype(in.v.dtype()), in.v.device());
    fs = r.final_state.view(), fp = r.final_pending.view();
  }
  r.path = ttt_linear_into(in, r.out, fs, fp, opt);
  return r;
}

/// Gradients for grad_out (v's shape and dtype, contiguous) and the optional gradients of the final state and pending
/// sum (param dtype, contiguous; zero when absent): of q, k, v, eta, ln_weight, ln_bias, the position weights and the
/// initial state and pending sum (the last three when given). TttLinearPath::reference runs the primal form's backward
/// in double; every other path the dual form's backward, one mini-batch at a time ("cpu-dual"). CUDA tensors: the
/// backend's backward, the primal form's in f32 ("cuda"; opt.path ignored).
inline TttLinearGrads ttt_linear_backward(const TttLinearInputs& in, const TensorView& grad_out,
                                          const std::optional<TensorView>& grad_final_state = std::nullopt,
                                          const std::optional<TensorView>& grad_final_pending = std::nullopt,
                                          const TttLinearOptions& opt = {}) {
  Checker c("ttt_linear_backward");
  std::vector<std::int64_t> cu;
  c.defined("grad_out", grad_out);
  TttLinearParams p = detail::check_ttt_linear(c, in, grad_out, std::nullopt, std::nullopt, opt, cu, "grad_out");
  p.out = {};  // read, never written
  c.contiguous("grad_out", grad_out);
  TttLinearGradParams gp;
  gp.grad_out = grad_out.data();
  const Dims state_shape{p.rows(), p.nheads, p.d + 1, p.d};
  for (const auto& [nm, t, dst] : {std::tuple{"grad_final_state", &grad_final_state, &gp.grad_final_state},
                                   std::tuple{"grad_final_pending", &grad_final_pending, &gp.grad_final_pending}})
    if (*t) {
      const TensorView& g = **t;
      c.defined(nm, g).dtype(nm, g, p.param_dtype).contiguous(nm, g).device(nm, g, in.q.device());
      c.require(g.shape() == state_shape, nm, "expected shape ", state_shape.str(), ", got ", g.shape().str());
      *dst = g.data();
    }
  TttLinearGrads r;
  const auto like = [&](const TensorView& t) { return Tensor::empty(t.shape(), t.dtype(), t.device()); };
  r.grad_q = like(in.q), r.grad_k = like(in.k), r.grad_v = like(in.v), r.grad_eta = like(in.eta);
  r.grad_ln_weight = like(in.ln_weight), r.grad_ln_bias = like(in.ln_bias);
  gp.grad_q = r.grad_q.data(), gp.grad_k = r.grad_k.data(), gp.grad_v = r.grad_v.data(), gp.grad_eta = r.grad_eta.data();
  gp.grad_ln_weight = r.grad_ln_weight.data(), gp.grad_ln_bias = r.grad_ln_bias.data();
  if (in.position_weights) gp.grad_position_weights = (r.grad_position_weights = like(*in.position_weights)).data();
  if (in.initial_state) gp.grad_initial_state = (r.grad_initial_state = like(*in.initial_state)).data();
  if (in.initial_pending) gp.grad_initial_pending = (r.grad_initial_pending = like(*in.initial_pending)).data();
  if (in.q.device().is_cuda()) {
    backend_entry(c.op(), in.q.device(), &DeviceBackend::ttt_linear_backward)(p, gp, nullptr);
    r.path = "cuda";
  } else if (opt.path == TttLinearPath::reference) {
    reference::ttt_linear_backward(p, gp);
    r.path = "reference";
  } else {
    cpu::ttt_linear_backward_dual(p, gp, opt.threads);
    r.path = "cpu-dual";
  }
  return r;
}

/// One decoding step of the token at `position` in its sequence (>= 0; its mini-batch position is position mod m): q,
/// k, v (b, h, d) and eta (b, h) in `in` (with ln_weight, ln_bias and the optional position weights; in.initial_state,
/// in.initial_pending and in.cu_seqlens must be absent); `state` Ŵ′ and `pending` A (b, h, d + 1, d) are read and
/// updated in place (param dtype, contiguous); out (b, h, d) receives o. The forward's token loop on one token
/// (opt.path and opt.start do not apply).
inline void ttt_linear_step(const TttLinearInputs& in, const TensorView& state, const TensorView& pending,
                            index_t position, const TensorView& out, const TttLinearOptions& opt = {}) {
  Checker c("ttt_linear_step");
  for (const auto& [nm, t] : {NamedView{"q", in.q}, NamedView{"k", in.k}, NamedView{"v", in.v}, NamedView{"out", out}})
    c.rank(nm, t, 3);
  c.rank("eta", in.eta, 2).rank("state", state, 4).rank("pending", pending, 4);
  c.require(!in.initial_state && !in.initial_pending && !in.cu_seqlens, "in",
            "the step reads its state from `state` and `pending`: initial_state, initial_pending and cu_seqlens must be "
            "absent");
  c.require(position >= 0, "position", "must be >= 0, got ", position);
  c.require(opt.mini_batch_size > 0, "mini_batch_size", "must be > 0, got ", opt.mini_batch_size);
  using detail::as_one_step;
  TttLinearInputs one = in;
  one.q = as_one_step(in.q), one.k = as_one_step(in.k), one.v = as_one_step(in.v), one.eta = as_one_step(in.eta);
  one.initial_state = state, one.initial_pending = pending;
  TttLinearOptions o = opt;
  o.start = position % opt.mini_batch_size;
  std::vector<std::int64_t> cu;
  const TttLinearParams p = detail::check_ttt_linear(c, one, as_one_step(out), state, pending, o, cu);
  if (in.q.device().is_cuda())  // each column is read before it is written
    backend_entry(c.op(), in.q.device(), &DeviceBackend::ttt_linear_forward)(p, nullptr);
  else
    cpu::ttt_linear_forward_recurrent(p, opt.threads);
}

}  // namespace ssm
