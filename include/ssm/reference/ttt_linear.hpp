// Reference TTT-Linear (docs/ttt_linear.md; the formulas in core/params/ttt_linear.hpp): the primal form in double.
// Token by token it takes the inner loss's gradient at the mini-batch's starting weights Ŵ′, adds it to the pending sum
// A, builds the token's own weights Ŵ_t = Ŵ′ − τ_i A as a matrix and applies the inner model to the test view:
//   G_t = ∇_Z ½‖LN(Z) − (v_t − k_t)‖² at Z = k̂_tᵀ Ŵ′,   A += η_t k̂_t G_tᵀ,   Ŵ_t = Ŵ′ − τ_i A,
//   o_t = q_t + LN(q̂_tᵀ Ŵ_t),   and at the mini-batch's last position Ŵ′ ← Ŵ_t, A ← 0.
// The oracle the dual form and the CPU token loop are tested against.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "ssm/core/params/ttt_linear.hpp"
#include "ssm/reference/elements.hpp"
#include "ssm/reference/layer_norm.hpp"

namespace ssm::reference {

namespace ttt_detail {

/// G = ∇_z ½‖LN(z) − r‖² (d): with g = γ ⊙ (LN(z) − r), G = (g − mean(g) − ẑ mean(g ⊙ ẑ)) / σ.
inline void inner_gradient(const std::vector<double>& z, const std::vector<double>& r, const std::vector<double>& gamma,
                           const std::vector<double>& beta, double eps, std::vector<double>& G) {
  std::vector<double> zhat, y;
  const double inv_sigma = layer_norm_row(z, gamma, beta, eps, zhat, y);
  const std::size_t n = z.size();
  std::vector<double> g(n);
  double mg = 0, mgz = 0;
  for (std::size_t i = 0; i < n; ++i) g[i] = gamma[i] * (y[i] - r[i]), mg += g[i], mgz += g[i] * zhat[i];
  mg /= static_cast<double>(n), mgz /= static_cast<double>(n);
  G.resize(n);
  for (std::size_t i = 0; i < n; ++i) G[i] = (g[i] - mg - zhat[i] * mgz) * inv_sigma;
}

/// zᵀ = x̂ᵀ Ŵ for x (d) and Ŵ (d + 1, d) row-major: x̂ = [x; 1].
inline void apply(const std::vector<double>& W, const std::vector<double>& x, std::vector<double>& z) {
  const std::size_t d = x.size();
  z.assign(d, 0.0);
  for (std::size_t j = 0; j < d; ++j) {
    double acc = W[d * d + j];
    for (std::size_t i = 0; i < d; ++i) acc += x[i] * W[i * d + j];
    z[j] = acc;
  }
}

inline void load(const void* src, DType dt, std::int64_t off, std::int64_t n, std::vector<double>& dst, double none) {
  dst.resize(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) dst[static_cast<std::size_t>(i)] = src ? load_real(src, dt, off + i) : none;
}

}  // namespace ttt_detail

inline void ttt_linear_forward(const TttLinearParams& p) {
  using namespace ttt_detail;
  const DType it = p.input_dtype, pt = p.param_dtype;
  const std::int64_t h = p.nheads, d = p.d, m = p.mini_batch, size = p.state_size();
  std::vector<double> tau;
  load(p.position_weights, pt, 0, m, tau, 1.0);
  std::vector<double> W0, A, Wt(static_cast<std::size_t>(size)), gamma, beta, q, k, v, r, z, G, zhat, y;
  for (std::int64_t s = 0; s < p.rows(); ++s) {
    const std::int64_t bi = p.seq_row(s);
    for (std::int64_t hh = 0; hh < h; ++hh) {
      const std::int64_t so = (s * h + hh) * size;
      load(p.initial_state, pt, so, size, W0, 0.0);
      load(p.initial_pending, pt, so, size, A, 0.0);
      load(p.ln_weight, pt, hh * d, d, gamma, 1.0);
      load(p.ln_bias, pt, hh * d, d, beta, 0.0);
      for (std::int64_t t = p.seq_begin(s); t < p.seq_end(s); ++t) {
        const std::int64_t i = (p.start + t - p.seq_begin(s)) % m;  // the position in the mini-batch
        load(p.q.data, it, p.q.at(bi, t, hh), d, q, 0), load(p.k.data, it, p.k.at(bi, t, hh), d, k, 0);
        load(p.v.data, it, p.v.at(bi, t, hh), d, v, 0);
        const double eta = load_real(p.eta.data, it, p.eta.at(bi, t, hh));
        r.resize(static_cast<std::size_t>(d));
        for (std::size_t j = 0; j < r.size(); ++j) r[j] = v[j] - k[j];  // the label, v − k
        apply(W0, k, z);
        inner_gradient(z, r, gamma, beta, p.ln_eps, G);
        for (std::int64_t a = 0; a <= d; ++a) {  // A += η k̂ Gᵀ
          const double ka = a < d ? k[static_cast<std::size_t>(a)] : 1.0;
          for (std::int64_t j = 0; j < d; ++j) A[static_cast<std::size_t>(a * d + j)] += eta * ka * G[static_cast<std::size_t>(j)];
        }
        const double ti = tau[static_cast<std::size_t>(i)];
        for (std::int64_t e = 0; e < size; ++e)  // the primal form: this token's weights, built
          Wt[static_cast<std::size_t>(e)] = W0[static_cast<std::size_t>(e)] - ti * A[static_cast<std::size_t>(e)];
        apply(Wt, q, z);
        layer_norm_row(z, gamma, beta, p.ln_eps, zhat, y);
        for (std::int64_t j = 0; j < d; ++j)
          store_real(p.out.data, it, p.out.at(bi, t, hh) + j, q[static_cast<std::size_t>(j)] + y[static_cast<std::size_t>(j)]);
        if (i == m - 1) W0 = Wt, A.assign(A.size(), 0.0);
      }
      for (std::int64_t e = 0; e < size; ++e) {
        if (p.final_state) store_real(p.final_state, pt, so + e, W0[static_cast<std::size_t>(e)]);
        if (p.final_pending) store_real(p.final_pending, pt, so + e, A[static_cast<std::size_t>(e)]);
      }
    }
  }
}

}  // namespace ssm::reference
