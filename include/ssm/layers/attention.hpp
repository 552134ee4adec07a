// Multi-head (grouped-query) causal self-attention layer: q/k/v/o projections (the ssm::linear op), optional rotary
// position embedding (RoFormer, Su et al. 2021, rotate-half form), the attention op of ops/attention.hpp,
// and KV-cache decoding. Glossary: W_q (h·p, d_model), W_k, W_v (h_kv·p, d_model), W_o (d_model, h·p);
// no biases. Forward only (no backward through the projections).
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

#include "ssm/core/eigen.hpp"
#include "ssm/core/check.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/ops/attention.hpp"
#include "ssm/ops/linear.hpp"

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
/// So the score of a query at position m and a key at n depends on m − n only.
template <class T>
void apply_rotary(const TensorView& x, index_t position_offset, double base) {
  Checker c("apply_rotary");
  c.rank("x", x, 4).contiguous("x", x).require(x.size(3) % 2 == 0, "x", "rotary needs an even head dimension, got ",
                                               x.size(3));
  c.positive("base", base);
  auto v = x.as<T, 4>("x");
  const index_t half = x.size(3) / 2;
  for (index_t bi = 0; bi < x.size(0); ++bi)
    for (index_t t = 0; t < x.size(1); ++t) {
      const double pos = static_cast<double>(position_offset + t);
      for (index_t e = 0; e < half; ++e) {
        const double theta = pos * std::pow(base, -2.0 * static_cast<double>(e) / static_cast<double>(x.size(3)));
        const T cs = static_cast<T>(std::cos(theta)), sn = static_cast<T>(std::sin(theta));
        for (index_t hi = 0; hi < x.size(2); ++hi) {
          T& x1 = v(bi, t, hi, e);
          T& x2 = v(bi, t, hi, e + half);
          const T a = x1, b = x2;
          x1 = a * cs - b * sn;
          x2 = b * cs + a * sn;
        }
      }
    }
}

/// Causal multi-head / grouped-query self-attention layer on x (b, l, d_model) → (b, l, d_model).
template <class T = float>
class MultiHeadAttention {
 public:
  using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using State = KVCache;  ///< what step() carries between tokens

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
    c.require(!cfg_.rotary || cfg_.head_dim % 2 == 0, "head_dim", "rotary embedding needs an even head_dim, got ",
              cfg_.head_dim);
    c.positive("rotary_base", cfg_.rotary_base);
    cfg_.attention.causal = true;
    const index_t hp = cfg_.n_heads * cfg_.head_dim, kvp = cfg_.n_kv_heads * cfg_.head_dim;
    std::mt19937_64 gen(seed);
    W_q = init(hp, cfg_.d_model, gen);
    W_k = init(kvp, cfg_.d_model, gen);
    W_v = init(kvp, cfg_.d_model, gen);
    W_o = init(cfg_.d_model, hp, gen);
  }

  const MultiHeadAttentionConfig& config() const { return cfg_; }
  index_t d_model() const { return cfg_.d_model; }

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

  Matrix W_q, W_k, W_v, W_o;  // (h·p, d_model), (h_kv·p, d_model) ×2, (d_model, h·p)

 private:
  struct Projections {
    Tensor q, k, v;  // (b, t, h, p), (b, t, h_kv, p) ×2
  };

  static Matrix init(index_t rows, index_t cols, std::mt19937_64& gen) {
    std::uniform_real_distribution<double> dist(-1.0, 1.0);
    const double bound = 1.0 / std::sqrt(static_cast<double>(cols));  // uniform ±fan_in^(−1/2)
    Matrix W(rows, cols);
    for (index_t i = 0; i < W.size(); ++i) W.data()[i] = static_cast<T>(bound * dist(gen));
    return W;
  }

  /// Y (rows, W.rows()) = X (rows, W.cols()) Wᵀ by the ssm::linear op, the output features split over the
  /// attention's threads (splitting columns also helps one-token decoding).
  void project_rows(const TensorView& X, const Matrix& W, const TensorView& Y) const {
    LinearOptions opt;
    opt.num_threads = ::ssm::detail::attention_threads(cfg_.attention.n_threads);
    linear_into({X, TensorView::of(W.data(), {W.rows(), W.cols()}), std::nullopt}, Y, opt);
  }
  void check_input(const char* op, const TensorView& x) const {
    Checker c(op);
    c.defined("x", x).require(x.device().is_cpu(), "x", "is on ", x.device().str(),
                              ": the attention layer runs on the CPU only (its weights are host matrices; the "
                              "ssm::attention_forward op runs on CUDA); move it with .to(Device::cpu())");
    c.dtype("x", x, dtype_of<T>()).shape("x", x, {kAny, kAny, cfg_.d_model}).contiguous("x", x);
  }

  Projections project(const TensorView& x, index_t position_offset) const {
    const index_t b = x.size(0), t = x.size(1), p = cfg_.head_dim;
    const TensorView X = x.reshape({b * t, cfg_.d_model});  // (b·t, d_model)
    Projections pr{Tensor::empty({b, t, cfg_.n_heads, p}, dtype_of<T>()),
                   Tensor::empty({b, t, cfg_.n_kv_heads, p}, dtype_of<T>()),
                   Tensor::empty({b, t, cfg_.n_kv_heads, p}, dtype_of<T>())};
    project_rows(X, W_q, pr.q.view().reshape({b * t, W_q.rows()}));
    project_rows(X, W_k, pr.k.view().reshape({b * t, W_k.rows()}));
    project_rows(X, W_v, pr.v.view().reshape({b * t, W_v.rows()}));
    if (cfg_.rotary) {
      apply_rotary<T>(pr.q, position_offset, cfg_.rotary_base);
      apply_rotary<T>(pr.k, position_offset, cfg_.rotary_base);
    }
    return pr;
  }

  Tensor output(const Tensor& o, index_t b, index_t t) const {
    Tensor y = Tensor::empty({b, t, cfg_.d_model}, dtype_of<T>());  // (b, t, d_model)
    project_rows(o.view().reshape({b * t, W_o.cols()}), W_o, y.view().reshape({b * t, cfg_.d_model}));
    return y;
  }

  MultiHeadAttentionConfig cfg_;
};

}  // namespace ssm::layers

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
