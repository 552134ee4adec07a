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

/// The inner gradient of one training token, G = ∇_z ½‖LN(z) − r‖² (d), with what its backward needs: with
/// e = LN(z) − r and g = γ ⊙ e, G = (g − mean(g) − ẑ mean(g ⊙ ẑ)) / σ.
struct InnerGradient {
  std::vector<double> u, e, g, G;  // ẑ, e, g, G
  double inv_sigma = 0;

  void compute(const std::vector<double>& z, const std::vector<double>& r, const std::vector<double>& gamma,
               const std::vector<double>& beta, double eps) {
    std::vector<double> y;
    inv_sigma = layer_norm_row(z, gamma, beta, eps, u, y);
    const std::size_t n = z.size();
    e.resize(n), g.resize(n), G.resize(n);
    double mg = 0, mgu = 0;
    for (std::size_t i = 0; i < n; ++i) e[i] = y[i] - r[i], g[i] = gamma[i] * e[i], mg += g[i], mgu += g[i] * u[i];
    mg /= static_cast<double>(n), mgu /= static_cast<double>(n);
    for (std::size_t i = 0; i < n; ++i) G[i] = (g[i] - mg - u[i] * mgu) * inv_sigma;
  }

  /// For Ḡ: z̄ and r̄ (written) and γ̄, β̄ (added). G is linear in g, ∂G/∂g = (I − 11ᵀ/d − ẑẑᵀ/d) / σ, so
  /// ḡ = (Ḡ − mean(Ḡ) − ẑ mean(Ḡ ⊙ ẑ)) / σ; ẑ appears in G directly (ẑ̄ = −(mean(g ⊙ ẑ) Ḡ + g mean(Ḡ ⊙ ẑ)) / σ) and
  /// through g = γ ⊙ (γ ⊙ ẑ + β − r); σ directly (σ̄ = −Ḡ · G / σ, ∂σ/∂z = ẑ / d); then the layer norm's backward.
  void backward(const std::vector<double>& gamma, const std::vector<double>& Gbar, std::vector<double>& zbar,
                std::vector<double>& rbar, std::vector<double>& gamma_bar, std::vector<double>& beta_bar) const {
    const std::size_t n = u.size();
    const double dn = static_cast<double>(n);
    double mGb = 0, mGbu = 0, mgu = 0, GbG = 0;
    for (std::size_t i = 0; i < n; ++i) mGb += Gbar[i], mGbu += Gbar[i] * u[i], mgu += g[i] * u[i], GbG += Gbar[i] * G[i];
    mGb /= dn, mGbu /= dn, mgu /= dn;
    const double sigma_bar = -GbG * inv_sigma;
    std::vector<double> ubar(n);
    rbar.resize(n), zbar.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      const double gb = (Gbar[i] - mGb - u[i] * mGbu) * inv_sigma;
      ubar[i] = -(mgu * Gbar[i] + g[i] * mGbu) * inv_sigma + gb * gamma[i] * gamma[i];
      gamma_bar[i] += gb * (e[i] + gamma[i] * u[i]);
      beta_bar[i] += gb * gamma[i];
      rbar[i] = -gb * gamma[i];
    }
    double mub = 0, mubu = 0;
    for (std::size_t i = 0; i < n; ++i) mub += ubar[i], mubu += ubar[i] * u[i];
    mub /= dn, mubu /= dn;
    for (std::size_t i = 0; i < n; ++i) zbar[i] = (ubar[i] - mub - u[i] * mubu) * inv_sigma + sigma_bar * u[i] / dn;
  }
};

inline void inner_gradient(const std::vector<double>& z, const std::vector<double>& r, const std::vector<double>& gamma,
                           const std::vector<double>& beta, double eps, std::vector<double>& G) {
  InnerGradient x;
  x.compute(z, r, gamma, beta, eps);
  G = x.G;
}

/// The backward of y = γ ⊙ ẑ + β (the layer norm of a row with normalized values u and 1 / σ) for ȳ: z̄ written,
/// γ̄ and β̄ added.
inline void layer_norm_row_backward(const std::vector<double>& u, double inv_sigma, const std::vector<double>& gamma,
                                    const std::vector<double>& ybar, std::vector<double>& zbar,
                                    std::vector<double>& gamma_bar, std::vector<double>& beta_bar) {
  const std::size_t n = u.size();
  double mt = 0, mtu = 0;
  for (std::size_t i = 0; i < n; ++i) mt += gamma[i] * ybar[i], mtu += gamma[i] * ybar[i] * u[i];
  mt /= static_cast<double>(n), mtu /= static_cast<double>(n);
  zbar.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    zbar[i] = (gamma[i] * ybar[i] - mt - u[i] * mtu) * inv_sigma;
    gamma_bar[i] += ybar[i] * u[i], beta_bar[i] += ybar[i];
  }
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

/// The backward of ttt_linear_forward in double (core/params/ttt_linear.hpp has the outline). Per sequence and head: a
/// forward pass records every mini-batch's starting Ŵ′ and A; then the mini-batches in reverse, each recomputed token
/// by token, with Ŵ̄ and Ā (the gradients of the state a mini-batch leaves) carried from the next one.
inline void ttt_linear_backward(const TttLinearParams& p, const TttLinearGradParams& gr) {
  using namespace ttt_detail;
  const DType it = p.input_dtype, pt = p.param_dtype;
  const std::int64_t l = p.seqlen, h = p.nheads, d = p.d, m = p.mini_batch, size = p.state_size();
  const std::size_t ud = static_cast<std::size_t>(d), us = static_cast<std::size_t>(size);
  std::vector<double> tau, tau_bar(static_cast<std::size_t>(m), 0.0);
  std::vector<double> gamma_bar(static_cast<std::size_t>(h * d), 0.0), beta_bar(gamma_bar.size(), 0.0);
  load(p.position_weights, pt, 0, m, tau, 1.0);
  auto row = [&](const TokenRows<const void*>& src, std::int64_t bi, std::int64_t t, std::int64_t hh,
                 std::vector<double>& dst) { load(src.data, it, src.at(bi, t, hh), d, dst, 0); };
  auto store_token = [&](void* dst, std::int64_t bi, std::int64_t t, std::int64_t hh, const std::vector<double>& g) {
    if (dst)
      for (std::int64_t j = 0; j < d; ++j) store_real(dst, it, ((bi * l + t) * h + hh) * d + j, g[static_cast<std::size_t>(j)]);
  };
  struct Token {
    std::vector<double> q, k, v, r, A;  // A: A_t, the pending sum after this token's term
    double eta = 0;
    InnerGradient inner;
  };
  struct Batch {
    std::int64_t t0, n, i0;
    std::vector<double> W, A;  // the starting Ŵ′ and pending sum
  };
  std::vector<double> z;
  for (std::int64_t s = 0; s < p.rows(); ++s) {
    const std::int64_t bi = p.seq_row(s), t_end = p.seq_end(s);
    for (std::int64_t hh = 0; hh < h; ++hh) {
      const std::int64_t so = (s * h + hh) * size;
      std::vector<double> gamma, beta, W, A, gb(ud, 0.0), bb(ud, 0.0);  // gb, bb: this head's γ̄, β̄
      load(p.ln_weight, pt, hh * d, d, gamma, 1.0), load(p.ln_bias, pt, hh * d, d, beta, 0.0);
      load(p.initial_state, pt, so, size, W, 0.0), load(p.initial_pending, pt, so, size, A, 0.0);
      auto recompute = [&](const Batch& b, std::vector<Token>& xs) {
        xs.resize(static_cast<std::size_t>(b.n));
        std::vector<double> acc = b.A;
        for (std::int64_t r = 0; r < b.n; ++r) {
          Token& x = xs[static_cast<std::size_t>(r)];
          const std::int64_t t = b.t0 + r;
          row(p.q, bi, t, hh, x.q), row(p.k, bi, t, hh, x.k), row(p.v, bi, t, hh, x.v);
          x.eta = load_real(p.eta.data, it, p.eta.at(bi, t, hh));
          x.r.resize(ud);
          for (std::size_t j = 0; j < ud; ++j) x.r[j] = x.v[j] - x.k[j];
          apply(b.W, x.k, z);
          x.inner.compute(z, x.r, gamma, beta, p.ln_eps);
          for (std::int64_t a = 0; a <= d; ++a) {
            const double ka = a < d ? x.k[static_cast<std::size_t>(a)] : 1.0;
            for (std::int64_t j = 0; j < d; ++j)
              acc[static_cast<std::size_t>(a * d + j)] += x.eta * ka * x.inner.G[static_cast<std::size_t>(j)];
          }
          x.A = acc;
        }
      };
      std::vector<Batch> batches;
      std::vector<Token> xs;
      for (std::int64_t t0 = p.seq_begin(s), i0 = p.start; t0 < t_end; i0 = 0) {
        Batch b{t0, std::min(m - i0, t_end - t0), i0, W, A};
        recompute(b, xs);
        if (i0 + b.n == m) {
          for (std::size_t e = 0; e < us; ++e) W[e] -= tau[static_cast<std::size_t>(m - 1)] * xs.back().A[e];
          A.assign(us, 0.0);
        } else {
          A = xs.back().A;
        }
        t0 += b.n;
        batches.push_back(std::move(b));
      }
      std::vector<double> Wbar, Abar;  // the gradients of the state the current mini-batch leaves
      load(gr.grad_final_state, pt, so, size, Wbar, 0.0), load(gr.grad_final_pending, pt, so, size, Abar, 0.0);
      std::vector<double> go(ud), Zqbar, qbar(ud), kbar(ud), Ebar(ud), Gbar(ud), zbar, rbar, uq, yq, Wt(us), qA(ud);
      for (auto b = batches.rbegin(); b != batches.rend(); ++b) {
        recompute(*b, xs);
        std::vector<double> C(us);  // the gradient of the pending sum, carried back through the mini-batch
        if (b->i0 + b->n == m) {    // it ended: Ŵ′_next = Ŵ′ − τ_{m−1} A_end (and the next A is a constant zero)
          const double tl = tau[static_cast<std::size_t>(m - 1)];
          double dot = 0;
          for (std::size_t e = 0; e < us; ++e) C[e] = -tl * Wbar[e], dot += xs.back().A[e] * Wbar[e];
          tau_bar[static_cast<std::size_t>(m - 1)] -= dot;
        } else {
          C = Abar;
        }
        // Wbar becomes Ŵ̄ of the mini-batch's start: the state passes through, plus the outputs' and gradients' terms
        for (std::int64_t r = b->n - 1; r >= 0; --r) {
          const Token& x = xs[static_cast<std::size_t>(r)];
          const std::int64_t t = b->t0 + r, i = b->i0 + r;
          const double ti = tau[static_cast<std::size_t>(i)];
          // the output: Ẑq = q̂ᵀ (Ŵ′ − τ_i A_t), o = q + LN(Ẑq)
          for (std::size_t e = 0; e < us; ++e) Wt[e] = b->W[e] - ti * x.A[e];
          apply(Wt, x.q, z);
          const double inv_sigma = layer_norm_row(z, gamma, beta, p.ln_eps, uq, yq);
          for (std::int64_t j = 0; j < d; ++j)
            go[static_cast<std::size_t>(j)] = load_real(gr.grad_out, it, ((bi * l + t) * h + hh) * d + j);
          layer_norm_row_backward(uq, inv_sigma, gamma, go, Zqbar, gb, bb);
          apply(x.A, x.q, qA);  // q̂ᵀ A_t (A's bias row included)
          double dtau = 0;
          for (std::int64_t a = 0; a <= d; ++a) {
            const double qa = a < d ? x.q[static_cast<std::size_t>(a)] : 1.0;
            double acc = 0;
            for (std::int64_t j = 0; j < d; ++j) {
              const std::size_t e = static_cast<std::size_t>(a * d + j), jj = static_cast<std::size_t>(j);
              acc += Zqbar[jj] * Wt[e];
              Wbar[e] += qa * Zqbar[jj];        // Ŵ̄′ += q̂ Ẑ̄ᵀ
              C[e] -= ti * qa * Zqbar[jj];      // Ā_t += −τ_i q̂ Ẑ̄ᵀ
            }
            if (a < d) qbar[static_cast<std::size_t>(a)] = go[static_cast<std::size_t>(a)] + acc;
          }
          for (std::size_t j = 0; j < ud; ++j) dtau -= Zqbar[j] * qA[j];
          tau_bar[static_cast<std::size_t>(i)] += dtau;
          // the training term: A_t = A_{t−1} + η k̂ Gᵀ with C = Ā_t
          std::fill(kbar.begin(), kbar.end(), 0.0);
          std::fill(Ebar.begin(), Ebar.end(), 0.0);
          for (std::int64_t a = 0; a <= d; ++a) {
            const double ka = a < d ? x.k[static_cast<std::size_t>(a)] : 1.0;
            const double Ea_dot = [&] {
              double acc = 0;
              for (std::int64_t j = 0; j < d; ++j)
                acc += C[static_cast<std::size_t>(a * d + j)] * x.eta * x.inner.G[static_cast<std::size_t>(j)];
              return acc;
            }();
            if (a < d) kbar[static_cast<std::size_t>(a)] += Ea_dot;  // k̂̄ += C E
            for (std::int64_t j = 0; j < d; ++j) Ebar[static_cast<std::size_t>(j)] += C[static_cast<std::size_t>(a * d + j)] * ka;
          }
          double eta_bar = 0;
          for (std::size_t j = 0; j < ud; ++j) eta_bar += x.inner.G[j] * Ebar[j], Gbar[j] = x.eta * Ebar[j];
          x.inner.backward(gamma, Gbar, zbar, rbar, gb, bb);
          // Z = k̂ᵀ Ŵ′: k̂̄ += Ŵ′ Z̄, Ŵ̄′ += k̂ Z̄ᵀ; r = v − k
          for (std::int64_t a = 0; a <= d; ++a) {
            const double ka = a < d ? x.k[static_cast<std::size_t>(a)] : 1.0;
            double acc = 0;
            for (std::int64_t j = 0; j < d; ++j) {
              const std::size_t e = static_cast<std::size_t>(a * d + j);
              acc += b->W[e] * zbar[static_cast<std::size_t>(j)];
              Wbar[e] += ka * zbar[static_cast<std::size_t>(j)];
            }
            if (a < d) kbar[static_cast<std::size_t>(a)] += acc - rbar[static_cast<std::size_t>(a)];
          }
          store_token(gr.grad_q, bi, t, hh, qbar), store_token(gr.grad_k, bi, t, hh, kbar);
          store_token(gr.grad_v, bi, t, hh, rbar);  // v̄ = r̄
          if (gr.grad_eta) store_real(gr.grad_eta, it, (bi * l + t) * h + hh, eta_bar);
        }
        Abar = C;  // the gradient of the pending sum the mini-batch started with
      }
      for (std::int64_t e = 0; e < size; ++e) {
        if (gr.grad_initial_state) store_real(gr.grad_initial_state, pt, so + e, Wbar[static_cast<std::size_t>(e)]);
        if (gr.grad_initial_pending) store_real(gr.grad_initial_pending, pt, so + e, Abar[static_cast<std::size_t>(e)]);
      }
      for (std::size_t j = 0; j < ud; ++j)
        gamma_bar[static_cast<std::size_t>(hh) * ud + j] += gb[j], beta_bar[static_cast<std::size_t>(hh) * ud + j] += bb[j];
    }
  }
  for (std::int64_t e = 0; e < h * d; ++e) {
    if (gr.grad_ln_weight) store_real(gr.grad_ln_weight, pt, e, gamma_bar[static_cast<std::size_t>(e)]);
    if (gr.grad_ln_bias) store_real(gr.grad_ln_bias, pt, e, beta_bar[static_cast<std::size_t>(e)]);
  }
  if (gr.grad_position_weights)
    for (std::int64_t i = 0; i < m; ++i) store_real(gr.grad_position_weights, pt, i, tau_bar[static_cast<std::size_t>(i)]);
}

}  // namespace ssm::reference
