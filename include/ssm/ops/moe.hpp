// The sparse mixture-of-experts op (docs/moe.md; the formulas in core/params/moe.hpp): a router picks the top k of E
// SwiGLU experts per token by softmax probability, and the token's output is their weighted sum, with the weights
// renormalized over the chosen experts (Mixtral) or not (Jamba). Forms: the tokens grouped by expert, two GEMMs per
// expert (cpu/moe.hpp), and the token loop in double (reference/moe.hpp); forward and backward (moe_backward: x, the
// router and every expert). The router logits can be returned for the load-balancing loss (moe_load_balancing_loss,
// with its gradient, which moe_backward takes back). CUDA tensors run the forward on the backend's kernels (routing,
// a counting sort by expert, the gathered expert GEMMs: cuda/kernels/moe.cuh); the backward and the loss are CPU only.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ssm/core/backend.hpp"
#include "ssm/core/check.hpp"
#include "ssm/core/params/moe.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/moe.hpp"
#include "ssm/reference/moe.hpp"

namespace ssm {

/// x and out in f32 or f64 with unit stride along d_model; the weights contiguous, in x's dtype or (for f32 x) f16 or
/// bf16.
struct MoeInputs {
  TensorView x{};          // (t, H): one token per row
  TensorView router{};     // (E, H)
  TensorView w_gate_up{};  // (E, 2 I, H): gate rows [0, I), up rows [I, 2 I)
  TensorView w_down{};     // (E, H, I)
};

/// automatic = grouped; grouped = the tokens grouped by expert, GEMMs per expert (on the CPU, or the CUDA kernels for
/// CUDA tensors); reference = the loops in double (CPU tensors only).
enum class MoePath { automatic, reference, grouped };

struct MoeOptions {
  index_t top_k = 2;            // k: experts per token, 1 ≤ k ≤ E
  bool normalize_topk = false;  // divide the k weights by their sum (Mixtral: true; Jamba: false)
  MoeActivation act = MoeActivation::silu;
  MoePath path = MoePath::automatic;
  int threads = 0;  // CPU threads (0: by the amount of work); not used on CUDA
};

namespace detail {

inline MoeParams check_moe(const Checker& c, const MoeInputs& in, const TensorView& out,
                           const std::optional<TensorView>& router_logits, const MoeOptions& opt,
                           const char* out_name = "out") {
  c.defined("x", in.x).defined("router", in.router).defined("w_gate_up", in.w_gate_up).defined("w_down", in.w_down);
  c.defined(out_name, out);
  c.same_device({{"x", in.x}, {"router", in.router}, {"w_gate_up", in.w_gate_up}, {"w_down", in.w_down}, {out_name, out},
                 {"router_logits", router_logits.value_or(in.x)}});
  c.rank("x", in.x, 2).dtype_in("x", in.x, {DType::f32, DType::f64}).unit_stride("x", in.x, 1);
  c.rank("router", in.router, 2).rank("w_gate_up", in.w_gate_up, 3).rank("w_down", in.w_down, 3);
  MoeParams p;
  p.tokens = in.x.size(0), p.d_model = in.x.size(1), p.experts = in.router.size(0);
  p.d_ff = in.w_gate_up.size(1) / 2;
  p.dtype = in.x.dtype(), p.weight_dtype = in.router.dtype();
  const index_t H = p.d_model, E = p.experts, I = p.d_ff;
  c.require(E >= 1, "router", "needs at least one expert (row), got shape ", in.router.shape().str());
  c.require(I >= 1 && in.w_gate_up.size(1) % 2 == 0, "w_gate_up", "needs 2 d_ff rows per expert (d_ff >= 1), got shape ",
            in.w_gate_up.shape().str());
  if (p.dtype == DType::f32) c.dtype_in("router", in.router, {DType::f32, DType::f16, DType::bf16});
  else c.dtype("router", in.router, DType::f64);
  c.shape("router", in.router, {E, H}).contiguous("router", in.router);
  c.same_dtype("w_gate_up", in.w_gate_up, "router", in.router).shape("w_gate_up", in.w_gate_up, {E, 2 * I, H});
  c.contiguous("w_gate_up", in.w_gate_up);
  c.same_dtype("w_down", in.w_down, "router", in.router).shape("w_down", in.w_down, {E, H, I}).contiguous("w_down", in.w_down);
  c.same_dtype(out_name, out, "x", in.x).shape(out_name, out, {p.tokens, H}).unit_stride(out_name, out, 1);
  c.require(opt.top_k >= 1 && opt.top_k <= E, "top_k", "must be in [1, ", E, "] (the number of experts), got ",
            opt.top_k);
  c.require(opt.threads >= 0, "threads", "must be >= 0 (0: automatic), got ", opt.threads);
  p.top_k = opt.top_k, p.normalize_topk = opt.normalize_topk, p.act = opt.act;
  p.x = in.x.data(), p.x_row_stride = in.x.stride(0);
  p.router = in.router.data(), p.w_gate_up = in.w_gate_up.data(), p.w_down = in.w_down.data();
  p.out = out.data(), p.out_row_stride = out.stride(0);
  if (router_logits) {
    const TensorView& r = *router_logits;
    c.defined("router_logits", r).same_dtype("router_logits", r, "x", in.x).shape("router_logits", r, {p.tokens, E});
    c.contiguous("router_logits", r);
    p.router_logits = r.data();
  }
  return p;
}

}  // namespace detail

/// The mixture of experts into out (t, H) (x's dtype), and the raw router logits into router_logits (t, E) when given.
/// Returns the path that ran: "cpu-grouped", "reference" or "cuda".
inline std::string moe_into(const MoeInputs& in, const TensorView& out,
                            const std::optional<TensorView>& router_logits = std::nullopt, const MoeOptions& opt = {}) {
  const Checker c("moe");
  const MoeParams p = detail::check_moe(c, in, out, router_logits, opt);
  const Device device = dispatch_device(c, {{"x", in.x}, {"out", out}});
  if (device.is_cuda()) {
    c.require(opt.path != MoePath::reference, "path", "the reference (loops in double) runs on CPU tensors only");
    if (p.tokens > 0) backend_entry(c.op(), device, &DeviceBackend::moe_forward)(p, nullptr);
    return "cuda";
  }
  if (opt.path == MoePath::reference) {
    reference::moe_forward(p);
    return "reference";
  }
  cpu::moe_forward(p, opt.threads);
  return "cpu-grouped";
}

struct MoeOutputs {
  Tensor out;            // (t, H), x's dtype
  Tensor router_logits;  // (t, E), x's dtype
  std::string path;
};

/// The allocating form: the output and the router logits.
inline MoeOutputs moe(const MoeInputs& in, const MoeOptions& opt = {}) {
  Checker("moe").defined("x", in.x).rank("x", in.x, 2).defined("router", in.router).rank("router", in.router, 2);
  MoeOutputs r;
  r.out = Tensor::empty(in.x.shape(), in.x.dtype(), in.x.device());
  r.router_logits = Tensor::empty({in.x.size(0), in.router.size(0)}, in.x.dtype(), in.x.device());
  r.path = moe_into(in, r.out, r.router_logits.view(), opt);
  return r;
}

struct MoeGrads {
  Tensor grad_x, grad_router, grad_w_gate_up, grad_w_down;  // the inputs' shapes and x's dtype, contiguous
  std::string path;                                         // "cpu-grouped" or "reference"
};

/// Gradients of moe for grad_out (t, H) (x's dtype, unit stride along H) and, optionally, a gradient of the router
/// logits (t, E) (x's dtype, contiguous: the load-balancing loss's, scaled by its coefficient). The routing choice is
/// piecewise constant: gradients flow through the chosen experts' weights and outputs. The weights must be in x's
/// dtype (f32 or f64). MoePath::reference runs the token loop in double; every other path the grouped GEMMs.
inline MoeGrads moe_backward(const MoeInputs& in, const TensorView& grad_out,
                             const std::optional<TensorView>& grad_router_logits = std::nullopt,
                             const MoeOptions& opt = {}) {
  Checker c("moe_backward");
  const MoeParams p = detail::check_moe(c, in, grad_out, std::nullopt, opt, "grad_out");
  c.require(in.x.device().is_cpu(), "x", "the backward has no CUDA path yet (x is on ", in.x.device().str(),
            "): run it on CPU tensors");
  c.require(p.weight_dtype == p.dtype, "router", "the backward needs the weights in x's dtype ", name(p.dtype), ", got ",
            name(p.weight_dtype));
  MoeGradParams g;
  g.grad_out = grad_out.data(), g.grad_out_row_stride = grad_out.stride(0);
  if (grad_router_logits) {
    const TensorView& t = *grad_router_logits;
    c.defined("grad_router_logits", t).device("grad_router_logits", t, Device::cpu());
    c.same_dtype("grad_router_logits", t, "x", in.x).shape("grad_router_logits", t, {p.tokens, p.experts});
    c.contiguous("grad_router_logits", t);
    g.grad_router_logits = t.data();
  }
  MoeGrads r;
  r.grad_x = Tensor::empty(in.x.shape(), p.dtype);
  r.grad_router = Tensor::empty(in.router.shape(), p.dtype);
  r.grad_w_gate_up = Tensor::empty(in.w_gate_up.shape(), p.dtype);
  r.grad_w_down = Tensor::empty(in.w_down.shape(), p.dtype);
  g.grad_x = r.grad_x.data(), g.grad_router = r.grad_router.data();
  g.grad_w_gate_up = r.grad_w_gate_up.data(), g.grad_w_down = r.grad_w_down.data();
  if (opt.path == MoePath::reference) {
    reference::moe_backward(p, g);
    r.path = "reference";
  } else {
    cpu::moe_backward(p, g, opt.threads);
    r.path = "cpu-grouped";
  }
  return r;
}

struct MoeAuxLoss {
  double loss = 0;  // E Σ_{j, e} f[j, e] P[e]: top_k when the routing is perfectly balanced
  Tensor grad;      // d loss / d router_logits (n, E) f64, when asked for
};

/// The load-balancing auxiliary loss of Switch Transformer / Mixtral / Jamba (transformers' load_balancing_loss_func)
/// over the router logits of every MoE layer, pooled: router_logits is a list of (t, E) tensors (f32 or f64, CPU, one
/// per MoE layer, the same t and E), mask (t) optional per-token weights (transformers' attention_mask, flattened
/// (b, l) → t: 1 for real tokens, 0 for padding). The loss is E Σ_j Σ_e f[j, e] P[e] with f[j, e] the fraction of tokens
/// whose j-th choice is expert e and P[e] their mean router probability; its gradient with respect to every logit (the
/// fractions f held constant: they are piecewise constant) is returned as one (layers · t, E) f64 tensor when
/// with_grad. A loss of 0 is returned for an empty list (transformers returns 0 too).
inline MoeAuxLoss moe_load_balancing_loss(const std::vector<TensorView>& router_logits, index_t top_k,
                                          const std::optional<TensorView>& mask = std::nullopt, bool with_grad = false) {
  Checker c("moe_load_balancing_loss");
  MoeAuxLoss r;
  if (router_logits.empty()) return r;
  const TensorView& l0 = router_logits[0];
  c.defined("router_logits", l0).rank("router_logits", l0, 2);
  const index_t t = l0.size(0), E = l0.size(1);
  c.require(E >= 1, "router_logits", "needs at least one expert, got shape ", l0.shape().str());
  c.require(top_k >= 1 && top_k <= E, "top_k", "must be in [1, ", E, "] (the number of experts), got ", top_k);
  std::vector<double> logits, m;
  for (std::size_t i = 0; i < router_logits.size(); ++i) {
    const TensorView& l = router_logits[i];
    const std::string nm = "router_logits[" + std::to_string(i) + "]";
    c.defined(nm.c_str(), l).device(nm.c_str(), l, Device::cpu()).dtype_in(nm.c_str(), l, {DType::f32, DType::f64});
    c.shape(nm.c_str(), l, {t, E}).contiguous(nm.c_str(), l);
    for (index_t j = 0; j < t * E; ++j) {
      const double v = reference::load_real(l.data(), l.dtype(), j);
      c.require(std::isfinite(v), nm.c_str(), "every logit must be finite, got ", v, " at ", j);
      logits.push_back(v);
    }
  }
  if (mask) {
    c.defined("mask", *mask).device("mask", *mask, Device::cpu()).shape("mask", *mask, {t}).contiguous("mask", *mask);
    c.dtype_in("mask", *mask, {DType::f32, DType::f64, DType::i32, DType::i64, DType::u8});
    for (std::size_t i = 0; i < router_logits.size(); ++i)
      for (index_t j = 0; j < t; ++j) {
        double v = 0;
        switch (mask->dtype()) {
          case DType::i32: v = static_cast<const std::int32_t*>(mask->data())[j]; break;
          case DType::i64: v = static_cast<double>(static_cast<const std::int64_t*>(mask->data())[j]); break;
          case DType::u8: v = static_cast<const std::uint8_t*>(mask->data())[j]; break;
          default: v = reference::load_real(mask->data(), mask->dtype(), j);
        }
        c.require(std::isfinite(v) && v >= 0, "mask", "every weight must be finite and >= 0, got ", v, " at ", j);
        m.push_back(v);
      }
  }
  const index_t n = static_cast<index_t>(router_logits.size()) * t;
  if (with_grad) r.grad = Tensor::empty({n, E}, DType::f64);
  r.loss = reference::moe_load_balancing_loss(logits.data(), mask ? m.data() : nullptr, n, E, top_k,
                                              with_grad ? r.grad.data_as<double>() : nullptr);
  return r;
}

}  // namespace ssm
