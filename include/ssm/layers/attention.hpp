// Multi-head (grouped-query) causal self-attention layer: q/k/v/o projections (the ssm::linear op), optional rotary
// position embedding (RoFormer, Su et al. 2021, rotate-half form: the ssm::rotary op), the attention op of
// ops/attention.hpp, KV-cache decoding, and the backward to the input and every projection. On the CPU, or on a CUDA
// device after to() (forward and step; the same ops dispatch there). Glossary:
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
#include <memory>
#include <random>
#include <type_traits>
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

/// The attention sublayer over views, written once for MultiHeadAttention and the hybrid models' attention blocks
/// (layers/hybrid_block.hpp): q, k, v = x W_qᵀ, x W_kᵀ, x W_vᵀ by the linear op, rotate-half RoPE on q and k at
/// positions from an offset, the attention op (causal), y = o W_oᵀ. Every tensor it makes is on x's device, so the
/// same code runs wherever the weights and x are.
namespace attention_sublayer {

/// The projections as the linear op reads them (any weight dtype it takes: f32, f64, or f16 / bf16 with f32 x).
struct Weights {
  TensorView W_q, W_k, W_v, W_o;  // (h·p, d_model), (h_kv·p, d_model) ×2, (d_model, h·p)
};

struct Heads {
  index_t h, h_kv, p;  // query heads, key-value heads, head size
  bool rotary = false;
  double rotary_base = 10000.0;
};

struct Qkv {
  Tensor q, k, v;  // (b, t, h, p), (b, t, h_kv, p) ×2
};

/// RoPE's options for positions from `offset` (rotate-half pairs), or their inverse rotation (the backward).
inline RotaryOptions rotation(const Heads& s, index_t offset, bool inverse = false) {
  RotaryOptions ro;
  ro.base = s.rotary_base, ro.position_offset = offset, ro.interleaved = false, ro.inverse = inverse;
  return ro;
}

/// q, k, v of x (b, t, d_model) contiguous, rotated for positions from position_offset when s.rotary. `threads`: the
/// linear op's CPU threads (0: automatic).
inline Qkv project_qkv(const TensorView& x, const Weights& W, const Heads& s, index_t position_offset, int threads) {
  const index_t b = x.size(0), t = x.size(1), rows = b * t;
  const TensorView X = x.reshape({rows, x.size(2)});  // (b·t, d_model)
  const DType dt = x.dtype();
  const Device dev = x.device();
  Qkv r{Tensor::empty({b, t, s.h, s.p}, dt, dev), Tensor::empty({b, t, s.h_kv, s.p}, dt, dev),
        Tensor::empty({b, t, s.h_kv, s.p}, dt, dev)};
  project(W.W_q, X, std::nullopt, r.q.view().reshape({rows, s.h * s.p}), threads);
  project(W.W_k, X, std::nullopt, r.k.view().reshape({rows, s.h_kv * s.p}), threads);
  project(W.W_v, X, std::nullopt, r.v.view().reshape({rows, s.h_kv * s.p}), threads);
  if (s.rotary) {
    const RotaryOptions ro = rotation(s, position_offset);
    rotary_into(r.q, r.q, ro), rotary_into(r.k, r.k, ro);
  }
  return r;
}

/// y (b, t, d_model) = the sublayer of x (b, t, d_model), both contiguous on one device. Without a cache the t tokens
/// are a whole sequence; with one they follow its tokens (positions continue after them) and their keys and values
/// are appended to it. opt.causal is forced on.
inline void forward_into(const TensorView& x, const TensorView& y, const Weights& W, const Heads& s, KVCache* cache,
                         AttentionOptions opt, int threads) {
  opt.causal = true;
  const index_t b = x.size(0), t = x.size(1);
  const Qkv qkv = project_qkv(x, W, s, cache != nullptr ? cache->length() : 0, threads);
  Tensor o = Tensor::empty(qkv.q.shape(), x.dtype(), x.device());  // (b, t, h, p)
  if (cache != nullptr) {
    cache->append(qkv.k, qkv.v);
    attention_decode(qkv.q, *cache, o, opt);
  } else {
    Tensor lse = Tensor::empty({b, s.h, t}, x.dtype(), x.device());  // (b, h, t)
    attention_forward(qkv.q, qkv.k, qkv.v, o, lse, opt);
  }
  project(W.W_o, o.view().reshape({b * t, s.h * s.p}), std::nullopt, y.reshape({b * t, y.size(2)}), threads);
}

}  // namespace attention_sublayer

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
  /// Mutable projections (an optimizer's updates); their sizes are checked again at every call. A layer moved to()
  /// a device keeps its own copy there: changes here reach it through another to().
  Params& params() { return p_; }

  /// The device the layer computes on: where its projections are (to()); the CPU unless moved.
  Device device() const { return dev_ ? dev_->device : Device::cpu(); }

  /// This layer with its projections copied to `device` (the same layer for the CPU): forward and step then take x
  /// and KV caches there and call the same ops (linear, rotary, attention) on them; backward stays on the CPU. On
  /// CUDA the attention kernels take f32 (T = float), the tiled algorithm and head_dim up to 128: checked here.
  /// Copies of the moved layer share the device copy.
  MultiHeadAttention to(Device device) const {
    MultiHeadAttention m = *this;
    m.dev_.reset();
    if (device.is_cpu()) return m;
    Checker c("MultiHeadAttention::to");
    if (device.is_cuda()) {
      c.require(std::is_same_v<T, float>, "T", "attention on CUDA computes in f32: move a MultiHeadAttention<float>",
                ", not one in ", name(dtype_of<T>()));
      c.require(cfg_.attention.algorithm == AttentionAlgorithm::tiled, "attention.algorithm",
                "the materialized algorithm has no CUDA kernel: use AttentionAlgorithm::tiled (the default)");
      c.require(cfg_.head_dim <= kAttentionMaxHeadDim, "head_dim", "the CUDA attention kernels take head dimensions "
                "up to ", kAttentionMaxHeadDim, ", got ", cfg_.head_dim);
    }
    check_params("MultiHeadAttention::to");
    auto d = std::make_shared<DeviceParams>();
    d->device = device;
    const attention_sublayer::Weights W = host_weights();
    d->W_q = upload(W.W_q, device), d->W_k = upload(W.W_k, device);
    d->W_v = upload(W.W_v, device), d->W_o = upload(W.W_o, device);
    m.dev_ = std::move(d);
    return m;
  }

  /// A fresh decoding state (an empty KV cache on the layer's device) for batch b, room for `capacity` tokens.
  State init_state(index_t b, index_t capacity = 0) const {
    return KVCache(b, cfg_.n_kv_heads, cfg_.head_dim, dtype_of<T>(), capacity, device());
  }

  /// Full-sequence forward: x (b, l, d_model) → (b, l, d_model).
  Tensor forward(const TensorView& x) const {
    check_input("MultiHeadAttention::forward", x);
    Tensor y = Tensor::empty(x.shape(), dtype_of<T>(), device());  // (b, l, d_model)
    attention_sublayer::forward_into(x, y, weights(), heads(), nullptr, cfg_.attention, threads());
    return y;
  }

  /// Decoding: the next t tokens x (b, t, d_model) given the cache of the earlier ones (appended to).
  Tensor step(const TensorView& x, State& cache) const {
    check_input("MultiHeadAttention::step", x);
    Checker("MultiHeadAttention::step")
        .require(cache.device() == device() && cache.dtype() == dtype_of<T>() && cache.batch() == x.size(0) &&
                     cache.kv_heads() == cfg_.n_kv_heads && cache.head_dim() == cfg_.head_dim,
                 "cache", "expected a ", name(dtype_of<T>()), " KV cache on ", device().str(), " for b = ", x.size(0),
                 ", ", cfg_.n_kv_heads, " kv heads of ", cfg_.head_dim, " (init_state()), got ",
                 name(cache.dtype()), " on ", cache.device().str(), " for b = ", cache.batch(), ", ",
                 cache.kv_heads(), " of ", cache.head_dim());
    Tensor y = Tensor::empty(x.shape(), dtype_of<T>(), device());  // (b, t, d_model)
    attention_sublayer::forward_into(x, y, weights(), heads(), &cache, cfg_.attention, threads());
    return y;
  }

  /// ∂L/∂x and ∂L/∂ each projection for grad_out = ∂L/∂y (b, l, d_model), y = forward(x) (recomputed):
  ///   ∂L/∂o = ∂L/∂y W_o,  (∂L/∂q̃, ∂L/∂k̃, ∂L/∂v) = ssm::attention_backward,  ∂L/∂q = R⁻¹ ∂L/∂q̃ (RoPE's inverse
  ///   rotation, likewise k),  ∂L/∂x = ∂L/∂q W_q + ∂L/∂k W_k + ∂L/∂v W_v,  ∂L/∂W_• = (∂L/∂•)ᵀ (its input).
  Grads backward(const TensorView& x, const TensorView& grad_out) const {
    const Checker c("MultiHeadAttention::backward");
    c.require(!dev_, "this", "the backward runs on the CPU; this layer is on ", device().str(),
              " (take its gradients on the layer before to(), with x on the CPU)");
    check_input("MultiHeadAttention::backward", x);
    head_mixer::check_grad_out<T>(c, grad_out, x);
    const index_t b = x.size(0), l = x.size(1), d = cfg_.d_model, rows = b * l;
    const index_t hp = cfg_.n_heads * cfg_.head_dim, kvp = cfg_.n_kv_heads * cfg_.head_dim;
    const attention_sublayer::Qkv pr = attention_sublayer::project_qkv(x, weights(), heads(), 0, threads());
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
      const RotaryOptions ro = attention_sublayer::rotation(heads(), 0, /*inverse=*/true);
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
  /// params()' projections as CPU views of their shapes.
  attention_sublayer::Weights host_weights() const {
    const index_t hp = cfg_.n_heads * cfg_.head_dim, kvp = cfg_.n_kv_heads * cfg_.head_dim, d = cfg_.d_model;
    return {TensorView::of(p_.W_q.data(), {hp, d}), TensorView::of(p_.W_k.data(), {kvp, d}),
            TensorView::of(p_.W_v.data(), {kvp, d}), TensorView::of(p_.W_o.data(), {d, hp})};
  }
  /// The projections the ops read: the device copy after to(), else params() (sizes checked by check_input).
  attention_sublayer::Weights weights() const {
    if (dev_) return {dev_->W_q, dev_->W_k, dev_->W_v, dev_->W_o};
    return host_weights();
  }
  attention_sublayer::Heads heads() const {
    return {cfg_.n_heads, cfg_.n_kv_heads, cfg_.head_dim, cfg_.rotary, cfg_.rotary_base};
  }
  /// The linear op's CPU threads: the attention's (on the CPU the output features split over them; splitting
  /// columns also helps one-token decoding).
  int threads() const { return ::ssm::detail::attention_threads(cfg_.attention.n_threads); }

  void check_params(const char* op) const {
    const index_t hp = cfg_.n_heads * cfg_.head_dim, kvp = cfg_.n_kv_heads * cfg_.head_dim, d = cfg_.d_model;
    check_parameter_size(op, "q_proj.weight", p_.W_q, {hp, d});
    check_parameter_size(op, "k_proj.weight", p_.W_k, {kvp, d});
    check_parameter_size(op, "v_proj.weight", p_.W_v, {kvp, d});
    check_parameter_size(op, "o_proj.weight", p_.W_o, {d, hp});
  }

  void check_input(const char* op, const TensorView& x) const {
    Checker c(op);
    c.defined("x", x).require(x.device() == device(), "x", "is on ", x.device().str(), " but the layer is on ",
                              device().str(), ": move x there (Tensor::to) or the layer to x's device (to())");
    c.dtype("x", x, dtype_of<T>()).shape("x", x, {kAny, kAny, cfg_.d_model}).contiguous("x", x);
    if (!dev_) check_params(op);
  }

  // The projections on a device other than the CPU (to()).
  struct DeviceParams {
    Device device;
    Tensor W_q, W_k, W_v, W_o;  // (h·p, d_model), (h_kv·p, d_model) ×2, (d_model, h·p)
  };

  MultiHeadAttentionConfig cfg_;
  Params p_;
  std::shared_ptr<const DeviceParams> dev_;  // the projections on device() when not the CPU (to())
};

}  // namespace ssm::layers

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
