// A BENCHMARK STAND-IN for the Mamba block (MATH.md §6, Gu & Dao 2023 §3.4) and its selective scan (§5):
// the block's shapes, FLOPs and memory traffic with random weights, written only so the scan-vs-attention
// suite has a linear-time curve before the library's own block (branch `mamba`) and optimized scan (branch
// `scan`) are merged. It is NOT a library op and has no tests; once those branches land, the suite's
// "mamba_block" and "scan" entries call the library instead (see bench/scan_vs_attention.cpp).
// Forward is computed in token chunks carrying the conv and SSM states, so its working memory is O(chunk).
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "ssm/cpu/attention.hpp"  // cpu::detail::attention_parallel_for

namespace bench_standin {

using index_t = std::int64_t;
using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
constexpr index_t kStateSize = 16;  // n (d_state), fixed so the state update is one 16-wide vector op
using StateVec = Eigen::Array<float, kStateSize, 1>;

/// Y (rows, W.rows()) = X Wᵀ, the output columns split over threads (works for one-row decoding too).
inline void parallel_gemm(const float* X, index_t rows, index_t cols, const Matrix& W, float* Y, int threads) {
  const index_t out = W.rows();
  const index_t chunk = std::max<index_t>(32, (out + threads - 1) / threads);
  Eigen::Map<const Matrix> Xm(X, rows, cols);
  ssm::cpu::detail::attention_parallel_for((out + chunk - 1) / chunk, threads, [&](index_t task) {
    const index_t j0 = task * chunk, c = std::min(chunk, out - j0);
    Eigen::Map<Matrix, 0, Eigen::OuterStride<>> Ym(Y + j0, rows, c, Eigen::OuterStride<>(out));
    Ym.noalias() = Xm * W.middleRows(j0, c).transpose();
  });
}

inline float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }
inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

/// The selective scan over channels [c0, c1): h = exp(Δ A) ⊙ h + Δ B_t u_t, y_t = C_t · h + D u_t,
/// u, Delta, y: (l, d) token-major; BC: (l, ld_bc) with B at column b_col, C at b_col + n; h: (d, n).
inline void selective_scan_tokens(index_t l, index_t d, index_t c0, index_t c1, const float* u, const float* Delta,
                                  const float* BC, index_t ld_bc, index_t b_col, const float* A, const float* D,
                                  float* h, float* y) {
  for (index_t t = 0; t < l; ++t) {
    const Eigen::Map<const StateVec> B(BC + t * ld_bc + b_col), C(BC + t * ld_bc + b_col + kStateSize);
    for (index_t c = c0; c < c1; ++c) {
      const float delta = Delta[t * d + c], uc = u[t * d + c];
      Eigen::Map<StateVec> hc(h + c * kStateSize);
      const Eigen::Map<const StateVec> Ac(A + c * kStateSize);
      hc = (delta * Ac).exp() * hc + (delta * uc) * B;
      y[t * d + c] = (hc * C).sum() + D[c] * uc;
    }
  }
}

/// Mamba block shapes: d_model → in_proj (2 d_inner) → causal depthwise conv (d_conv) + SiLU → x_proj
/// (dt_rank + 2n) → dt_proj + softplus → selective scan → gate SiLU(z) → out_proj (d_model).
class MambaBlock {
 public:
  struct State {
    std::vector<float> conv;  // (d_conv − 1, d_inner) last inputs of the conv
    std::vector<float> ssm;   // (d_inner, n)
    std::size_t bytes() const { return (conv.size() + ssm.size()) * sizeof(float); }
  };

  MambaBlock(index_t d_model, index_t expand, int threads, index_t chunk = 2048)
      : d_model_(d_model), d_inner_(expand * d_model), dt_rank_((d_model + 15) / 16), threads_(threads),
        chunk_(chunk) {
    std::mt19937 gen(1);
    auto init = [&](index_t r, index_t c) {
      std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
      Matrix W(r, c);
      const float bound = 1.0f / std::sqrt(static_cast<float>(c));
      for (index_t i = 0; i < W.size(); ++i) W.data()[i] = bound * dist(gen);
      return W;
    };
    W_in = init(2 * d_inner_, d_model_);
    W_x = init(dt_rank_ + 2 * kStateSize, d_inner_);
    W_dt = init(d_inner_, dt_rank_);
    W_out = init(d_model_, d_inner_);
    conv_w = init(d_inner_, kConv);
    conv_b.assign(static_cast<std::size_t>(d_inner_), 0.0f);
    dt_bias.assign(static_cast<std::size_t>(d_inner_), -4.0f);  // softplus(−4) ≈ 0.018, inside [0.001, 0.1]
    A.resize(static_cast<std::size_t>(d_inner_ * kStateSize));
    for (index_t c = 0; c < d_inner_; ++c)
      for (index_t k = 0; k < kStateSize; ++k) A[static_cast<std::size_t>(c * kStateSize + k)] = -float(k + 1);
    D.assign(static_cast<std::size_t>(d_inner_), 1.0f);
  }

  index_t d_inner() const { return d_inner_; }
  State init_state() const {
    return {std::vector<float>(static_cast<std::size_t>((kConv - 1) * d_inner_), 0.0f),
            std::vector<float>(static_cast<std::size_t>(d_inner_ * kStateSize), 0.0f)};
  }
  /// Bytes of the per-chunk activations forward() allocates (the block's working memory).
  std::size_t workspace_bytes(index_t l) const {
    const index_t c = std::min(l, chunk_);
    return static_cast<std::size_t>(c * (2 * d_inner_ + 3 * d_inner_ + dt_rank_ + 2 * kStateSize)) * sizeof(float);
  }

  /// x (l, d_model) → out (l, d_model), one sequence, continuing from state.
  void forward(const float* x, index_t l, float* out, State& s) const {
    const index_t c = std::min(l, chunk_);
    const index_t n_dbc = dt_rank_ + 2 * kStateSize;
    std::vector<float> xz(static_cast<std::size_t>(c * 2 * d_inner_));  // (chunk, 2 d_inner)
    std::vector<float> u(static_cast<std::size_t>(c * d_inner_));       // (chunk, d_inner) conv output
    std::vector<float> dbc(static_cast<std::size_t>(c * n_dbc));        // (chunk, dt_rank + 2n)
    std::vector<float> delta(static_cast<std::size_t>(c * d_inner_));   // (chunk, d_inner)
    std::vector<float> y(static_cast<std::size_t>(c * d_inner_));       // (chunk, d_inner)
    for (index_t t0 = 0; t0 < l; t0 += chunk_) {
      const index_t r = std::min(chunk_, l - t0);
      parallel_gemm(x + t0 * d_model_, r, d_model_, W_in, xz.data(), threads_);
      run_channels([&](index_t c0, index_t c1) { conv_silu(r, c0, c1, xz.data(), u.data(), s.conv.data()); });
      parallel_gemm(u.data(), r, d_inner_, W_x, dbc.data(), threads_);
      Matrix dt_low = Eigen::Map<const Matrix>(dbc.data(), r, n_dbc).leftCols(dt_rank_);  // (r, dt_rank)
      parallel_gemm(dt_low.data(), r, dt_rank_, W_dt, delta.data(), threads_);
      run_channels([&](index_t c0, index_t c1) {
        for (index_t t = 0; t < r; ++t)
          for (index_t ch = c0; ch < c1; ++ch)
            delta[static_cast<std::size_t>(t * d_inner_ + ch)] =
                softplus(delta[static_cast<std::size_t>(t * d_inner_ + ch)] + dt_bias[static_cast<std::size_t>(ch)]);
        selective_scan_tokens(r, d_inner_, c0, c1, u.data(), delta.data(), dbc.data(), n_dbc, dt_rank_, A.data(),
                              D.data(), s.ssm.data(), y.data());
        for (index_t t = 0; t < r; ++t)
          for (index_t ch = c0; ch < c1; ++ch)
            y[static_cast<std::size_t>(t * d_inner_ + ch)] *=
                silu(xz[static_cast<std::size_t>(t * 2 * d_inner_ + d_inner_ + ch)]);
      });
      parallel_gemm(y.data(), r, d_inner_, W_out, out + t0 * d_model_, threads_);
    }
  }

  Matrix W_in, W_x, W_dt, W_out, conv_w;  // (2 d_inner, d_model), (dt_rank + 2n, d_inner), …, (d_inner, d_conv)
  std::vector<float> conv_b, dt_bias, A, D;

 private:
  static constexpr index_t kConv = 4;  // d_conv

  template <class F>
  void run_channels(F&& f) const {
    const index_t per = (d_inner_ + threads_ - 1) / threads_;
    ssm::cpu::detail::attention_parallel_for(threads_, threads_, [&](index_t task) {
      const index_t c0 = task * per, c1 = std::min(d_inner_, c0 + per);
      if (c0 < c1) f(c0, c1);
    });
  }

  /// Causal depthwise conv (kernel kConv, left context from the state) + SiLU on the x half of xz.
  void conv_silu(index_t r, index_t c0, index_t c1, const float* xz, float* u, float* conv_state) const {
    for (index_t ch = c0; ch < c1; ++ch) {
      float hist[kConv - 1];
      for (index_t k = 0; k < kConv - 1; ++k) hist[k] = conv_state[k * d_inner_ + ch];
      for (index_t t = 0; t < r; ++t) {
        const float xt = xz[t * 2 * d_inner_ + ch];
        float acc = conv_b[static_cast<std::size_t>(ch)] + conv_w(ch, kConv - 1) * xt;
        for (index_t k = 0; k < kConv - 1; ++k) acc += conv_w(ch, k) * hist[k];
        for (index_t k = 0; k + 1 < kConv - 1; ++k) hist[k] = hist[k + 1];
        hist[kConv - 2] = xt;
        u[t * d_inner_ + ch] = silu(acc);
      }
      for (index_t k = 0; k < kConv - 1; ++k) conv_state[k * d_inner_ + ch] = hist[k];
    }
  }

  index_t d_model_, d_inner_, dt_rank_;
  int threads_;
  index_t chunk_;
};

}  // namespace bench_standin

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
