// Multi-head (grouped-query) causal self-attention layer: q/k/v/o projections (the ssm::linear op), optional rotary
// position embedding (RoFormer, Su et al. 2021, rotate-half form: the ssm::rotary op), the attention op of
// ops/attention.hpp, KV-cache decoding, and the backward to the input and every projection. Glossary:
// W_q (h·p, d_model), W_k, W_v (h_kv·p, d_model), W_o (d_model, h·p); no biases.
#pragma once

// GCC 12 false "may be used uninitialized" warnings in Eigen 3.4's AVX-512 packet code: see cpu/attention.hpp.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/layers/basic.hpp"
#include "ssm/layers/head_mixer.hpp"
#include "ssm/ops/attention.hpp"
#include "ssm/ops/linear.hpp"
#include "ssm/ops/rotary.hpp"

namespace ssm::layers {

struct MultiHeadAttentionConfig {
  index_t d_model = 768;
  index_t n_heads = 12;    ///< h
  index_t n_kv_heads = 0;  ///< h_kv; 0 means n_heads (multi-head); must divide n_heads
  index_t head_dim = 0;    ///< p; 0 means d_model / n_heads
  bool rotary = false;     ///< rotary position embedding on q and k
  double rotary_base = 10000.0;
  AttentionOptions attention{};  ///< algorithm, threads, blocks (causal is forced on)
};

/// Rotary position embedding in place on x (b, t, heads, p) (contiguous, p even): for position
/// pos = offset + t and e < p/2, with θ_e = base^(−2e/p), the pair (x_e, x_{e+p/2}) is rotated by pos·θ_e.
/// So the score of a query at position m and a key at n depends on m − n only. The ssm::rotary op, rotate-half form:
/// its checks apply (base finite and > 1; an error names the op "rotary").
template <class T>
void apply_rotary(const TensorView& x, index_t position_offset, double base) {
  Checker("apply_rotary").rank("x", x, 4).dtype("x", x, dtype_of<T>()).contiguous("x", x);
  RotaryOptions ro;
  ro.base = base, ro.position_offset = position_offset, ro.interleaved = false;
  rotary_into(x, x, ro);
}

/// The projections of MultiHeadAttention, row-major: what its backward returns gradients of, in the same layout.
template <class T>
struct MultiHeadAttentionParams {
  std::vector<T> W_q;  // (h·p, d_model)
  std::vector<T> W_k;  // (h_kv·p, d_model)
  std::vector<T> W_v;  // (h_kv·p, d_model)
  std::vector<T> W_o;  // (d_model, h·p)

  /// f(name, vector) for each projection, named as transformers' attention modules ("q_proj.weight", …).
  template <class F>
  void for_each(F&& f) {
    f("q_proj.weight", W_q), f("k_proj.weight", W_k), f("v_proj.weight", W_v), f("o_proj.weight", W_o);
  }
};

/// Causal multi-head / grouped-query self-attention layer on x (b, l, d_model) → (b, l, d_model).
template <class T = float>
class MultiHeadAttention {
 public:
  using State = KVCache;  ///< what step() carries between tokens
  using Params = MultiHeadAttentionParams<T>;
  using Grads = head_mixer::MixerGrads<T, Params>;

  /// The layer with uniform ±fan_in^(−1/2) projections drawn from seed (W_q, W_k, W_v, W_o in turn, row by row).
  explicit MultiHeadAttention(MultiHeadAttentionConfig cfg, std::uint64_t seed = 0) : cfg_(cfg) {
    Checker c("MultiHeadAttention");
    c.require(cfg_.d_model >= 1, "d_model", "must be >= 1, got ", cfg_.d_model);
    c.require(cfg_.n_heads >= 1, "n_heads", "must be >= 1, got ", cfg_.n_heads);
    if (cfg_.n_kv_heads == 0) cfg_.n_kv_heads = cfg_.n_heads;
    c.require(cfg_.n_kv_heads >= 1 && cfg_.n_heads % cfg_.n_kv_heads == 0, "n_kv_heads", "must divide n_heads (",
              cfg_.n_heads, "), got ", cfg_.n_kv_heads);
    if (cfg_.head_dim == 0) {
      c.require(cfg_.d_model % cfg_.n_heads == 0, "head_dim", "is 0 (d_model / n_heads) but n_heads (",
                cfg_.n_heads, ") does not divide d_model (", cfg_.d_model, ")");
      cfg_.head_dim = cfg_.d_model / cfg_.n_heads;
    }
    c.require(cfg_.head_dim >= 1, "head_dim", "must be >= 1, got ", cfg_.head_dim);
    c.require(!cfg_.rotary || cfg_.head_dim % 2 == 0, "head_dim", "rotary embedding needs an even head_dim, got ",
              cfg_.head_dim);
    c.require(!cfg_.rotary || (std::isfinite(cfg_.rotary_base) && cfg_.rotary_base > 1), "rotary_base",
              "must be finite and > 1, got ", cfg_.rotary_base);
    cfg_.attention.causal = true;
    const index_t hp = cfg_.n_heads * cfg_.head_dim, kvp = cfg_.n_kv_heads * cfg_.head_dim, d = cfg_.d_model;
    std::mt19937_64 gen(seed);
    auto init = [&](index_t rows, index_t cols) {
      std::uniform_real_distribution<double> dist(-1.0, 1.0);
      const double bound = 1.0 / std::sqrt(static_cast<double>(cols));
      std::vector<T> W(static_cast<std::size_t>(rows * cols));
      for (T& w : W) w = static_cast<T>(bound * dist(gen));
      return W;
    };
    p_.W_q = init(hp, d), p_.W_k = init(kvp, d), p_.W_v = init(kvp, d), p_.W_o = init(d, hp);
  }

  const MultiHeadAttentionConfig& config() const { return cfg_; }
  index_t d_model() const { return cfg_.d_model; }
  const Params& params() const { return p_; }
  /// Mutable projections (an optimizer's updates); their sizes are checked again at every call.
  Params& params() { return p_; }

  /// A fresh decoding state (an empty KV cache) for batch b, room for `capacity` tokens.
  State init_state(index_t b, index_t capacity = 0) const {
    return KVCache(b, cfg_.n_kv_heads, cfg_.head_dim, dtype_of<T>(), capacity);
  }

  /// Full-sequence forward: x (b, l, d_model) → (b, l, d_model).
  Tensor forward(const TensorView& x) const {
    check_input("MultiHeadAttention::forward", x);
    Projections pr = project(x, 0);
    Tensor o = Tensor::empty(pr.q.shape(), dtype_of<T>());                                // (b, l, h, p)
    Tensor lse = Tensor::empty({x.size(0), cfg_.n_heads, x.size(1)}, dtype_of<T>());    // (b, h, l)
    attention_forward(pr.q, pr.k, pr.v, o, lse, cfg_.attention);
    return output(o, x.size(0), x.size(1));
  }

  /// Decoding: the next t tokens x (b, t, d_model) given the cache of the earlier ones (appended to).
  Tensor step(const TensorView& x, State& cache) const {
    check_input("MultiHeadAttention::step", x);
    Projections pr = project(x, cache.length());
    cache.append(pr.k, pr.v);
    Tensor o = Tensor::empty(pr.q.shape(), dtype_of<T>());  // (b, t, h, p)
    attention_decode(pr.q, cache, o, cfg_.attention);
    return output(o, x.size(0), x.size(1));
  }

  /// ∂L/∂x and ∂L/∂ each projection for grad_out = ∂L/∂y (b, l, d_model), y = forward(x) (recomputed):
  ///   ∂L/∂o = ∂L/∂y W_o,  (∂L/∂q̃, ∂L/∂k̃, ∂L/∂v) = ssm::attention_backward,  ∂L/∂q = R⁻¹ ∂L/∂q̃ (RoPE's inverse
  ///   rotation, likewise k),  ∂L/∂x = ∂L/∂q W_q + ∂L/∂k W_k + ∂L/∂v W_v,  ∂L/∂W_• = (∂L/∂•)ᵀ (its input).
  Grads backward(const TensorView& x, const TensorView& grad_out) const {
    check_input("MultiHeadAttention::backward", x);
    const Checker c("MultiHeadAttention::backward");
    head_mixer::check_grad_out<T>(c, grad_out, x);
    const index_t b = x.size(0), l = x.size(1), d = cfg_.d_model, rows = b * l;
    const index_t hp = cfg_.n_heads * cfg_.head_dim, kvp = cfg_.n_kv_heads * cfg_.head_dim;
    const Projections pr = project(x, 0);
    Tensor o = Tensor::empty(pr.q.shape(), dtype_of<T>());                  // (b, l, h, p)
    Tensor lse = Tensor::empty({b, cfg_.n_heads, l}, dtype_of<T>());        // (b, h, l)
    attention_forward(pr.q, pr.k, pr.v, o, lse, cfg_.attention);
    Grads g;
    g.params = head_mixer::zeros_like(p_);
    Tensor grad_o = Tensor::empty(pr.q.shape(), dtype_of<T>());  // (b, l, h, p)
    linear_backward(o.data_as<const T>(), p_.W_o.data(), grad_out.data_as<const T>(), grad_o.data_as<T>(),
                    g.params.W_o.data(), static_cast<T*>(nullptr), rows, hp, d);
    Tensor grad_q = Tensor::empty(pr.q.shape(), dtype_of<T>());  // (b, l, h, p)
    Tensor grad_k = Tensor::empty(pr.k.shape(), dtype_of<T>());  // (b, l, h_kv, p)
    Tensor grad_v = Tensor::empty(pr.v.shape(), dtype_of<T>());  // (b, l, h_kv, p)
    attention_backward(pr.q, pr.k, pr.v, o, lse, grad_o, grad_q, grad_k, grad_v, cfg_.attention);
    if (cfg_.rotary) {
      const RotaryOptions ro = rotation(0, /*inverse=*/true);
      rotary_into(grad_q, grad_q, ro), rotary_into(grad_k, grad_k, ro);
    }
    g.grad_x.assign(static_cast<std::size_t>(rows * d), T(0));
    std::vector<T> part(g.grad_x.size());  // (rows, d): one projection's share of ∂L/∂x
    const T* X = x.data_as<const T>();
    const struct {
      const Tensor* grad;
      const std::vector<T>* W;
      std::vector<T>* grad_W;
      index_t out;
    } proj[3] = {{&grad_q, &p_.W_q, &g.params.W_q, hp}, {&grad_k, &p_.W_k, &g.params.W_k, kvp},
                 {&grad_v, &p_.W_v, &g.params.W_v, kvp}};
    for (const auto& pj : proj) {
      linear_backward(X, pj.W->data(), pj.grad->template data_as<const T>(), part.data(), pj.grad_W->data(),
                      static_cast<T*>(nullptr), rows, d, pj.out);
      for (std::size_t i = 0; i < part.size(); ++i) g.grad_x[i] += part[i];
    }
    return g;
  }

 private:
  struct Projections {
    Tensor q, k, v;  // (b, t, h, p), (b, t, h_kv, p) ×2
  };

  /// RoPE's options for positions from `offset` (rotate-half pairs), or their inverse rotation.
  RotaryOptions rotation(index_t offset, bool inverse = false) const {
    RotaryOptions ro;
    ro.base = cfg_.rotary_base, ro.position_offset = offset, ro.interleaved = false, ro.inverse = inverse;
    return ro;
  }

  /// Y (rows, out) = X (rows, in) Wᵀ by the ssm::linear op, the output features split over the attention's threads
  /// (splitting columns also helps one-token decoding).
  void project_rows(const TensorView& X, const std::vector<T>& W, index_t out, const TensorView& Y) const {
    layers::project(TensorView::of(W.data(), {out, X.size(1)}), X, std::nullopt, Y,
            ::ssm::detail::attention_threads(cfg_.attention.n_threads));
  }

  void check_input(const char* op, const TensorView& x) const {
    Checker c(op);
    c.defined("x", x).require(x.device().is_cpu(), "x", "is on ", x.device().str(),
                              ": the attention layer runs on the CPU only (its weights are host matrices; the "
                              "ssm::attention_forward op runs on CUDA); move it with .to(Device::cpu())");
    c.dtype("x", x, dtype_of<T>()).shape("x", x, {kAny, kAny, cfg_.d_model}).contiguous("x", x);
    const index_t hp = cfg_.n_heads * cfg_.head_dim, kvp = cfg_.n_kv_heads * cfg_.head_dim, d = cfg_.d_model;
    check_parameter_size(op, "q_proj.weight", p_.W_q, {hp, d});
    check_parameter_size(op, "k_proj.weight", p_.W_k, {kvp, d});
    check_parameter_size(op, "v_proj.weight", p_.W_v, {kvp, d});
    check_parameter_size(op, "o_proj.weight", p_.W_o, {d, hp});
  }

  Projections project(const TensorView& x, index_t position_offset) const {
    const index_t b = x.size(0), t = x.size(1), p = cfg_.head_dim, h = cfg_.n_heads, hkv = cfg_.n_kv_heads;
    const TensorView X = x.reshape({b * t, cfg_.d_model});  // (b·t, d_model)
    Projections pr{Tensor::empty({b, t, h, p}, dtype_of<T>()), Tensor::empty({b, t, hkv, p}, dtype_of<T>()),
                   Tensor::empty({b, t, hkv, p}, dtype_of<T>())};
    project_rows(X, p_.W_q, h * p, pr.q.view().reshape({b * t, h * p}));
    project_rows(X, p_.W_k, hkv * p, pr.k.view().reshape({b * t, hkv * p}));
    project_rows(X, p_.W_v, hkv * p, pr.v.view().reshape({b * t, hkv * p}));
    if (cfg_.rotary) {
      const RotaryOptions ro = rotation(position_offset);
      rotary_into(pr.q, pr.q, ro), rotary_into(pr.k, pr.k, ro);
    }
    return pr;
  }

  Tensor output(const Tensor& o, index_t b, index_t t) const {
    const index_t hp = cfg_.n_heads * cfg_.head_dim;
    Tensor y = Tensor::empty({b, t, cfg_.d_model}, dtype_of<T>());  // (b, t, d_model)
    project_rows(o.view().reshape({b * t, hp}), p_.W_o, cfg_.d_model, y.view().reshape({b * t, cfg_.d_model}));
    return y;
  }

  MultiHeadAttentionConfig cfg_;
  Params p_;
};

}  // namespace ssm::layers

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
