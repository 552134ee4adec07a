// Reference sparse mixture of experts (docs/moe.md; the formulas in core/params/moe.hpp): token by token, the router
// product, the routing (moe_route) and the k chosen experts' SwiGLU in double, every product a plain loop. And the
// load-balancing auxiliary loss of Switch / Mixtral / Jamba with its gradient with respect to the router logits. The
// oracle the CPU dispatch is tested against.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "ssm/core/params/moe.hpp"
#include "ssm/reference/elements.hpp"

namespace ssm::reference {

inline void moe_forward(const MoeParams& p) {
  const std::int64_t H = p.d_model, I = p.d_ff, E = p.experts, k = p.top_k;
  std::vector<double> x(static_cast<std::size_t>(H)), logits(static_cast<std::size_t>(E)), w(static_cast<std::size_t>(k));
  std::vector<double> a(static_cast<std::size_t>(I)), y(static_cast<std::size_t>(H));
  std::vector<std::int64_t> chosen(static_cast<std::size_t>(k));
  auto weight = [&](const void* W, std::int64_t i) { return load_real(W, p.weight_dtype, i); };
  for (std::int64_t t = 0; t < p.tokens; ++t) {
    for (std::int64_t h = 0; h < H; ++h) x[h] = load_real(p.x, p.dtype, t * p.x_row_stride + h);
    for (std::int64_t e = 0; e < E; ++e) {
      double s = 0;
      for (std::int64_t h = 0; h < H; ++h) s += weight(p.router, e * H + h) * x[h];
      logits[e] = s;
      if (p.router_logits) store_real(p.router_logits, p.dtype, t * E + e, s);
    }
    moe_route(logits.data(), E, k, p.normalize_topk, chosen.data(), w.data());
    std::fill(y.begin(), y.end(), 0.0);
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int64_t e = chosen[j];
      const std::int64_t gu = e * 2 * I * H, dn = e * H * I;
      for (std::int64_t i = 0; i < I; ++i) {
        double g = 0, u = 0;
        for (std::int64_t h = 0; h < H; ++h) {
          g += weight(p.w_gate_up, gu + i * H + h) * x[h];
          u += weight(p.w_gate_up, gu + (I + i) * H + h) * x[h];
        }
        a[i] = moe_activate(p.act, g) * u;
      }
      for (std::int64_t h = 0; h < H; ++h) {
        double s = 0;
        for (std::int64_t i = 0; i < I; ++i) s += weight(p.w_down, dn + h * I + i) * a[i];
        y[h] += w[j] * s;
      }
    }
    for (std::int64_t h = 0; h < H; ++h) store_real(p.out, p.dtype, t * p.out_row_stride + h, y[h]);
  }
}

/// The backward in double (MoeGradParams' formulas); every output written (zeros where nothing flows).
inline void moe_backward(const MoeParams& p, const MoeGradParams& g) {
  const std::int64_t H = p.d_model, I = p.d_ff, E = p.experts, k = p.top_k;
  const auto sz = [](std::int64_t n) { return static_cast<std::size_t>(n); };
  std::vector<double> gx(sz(p.tokens * H), 0.0), gr(sz(E * H), 0.0), ggu(sz(E * 2 * I * H), 0.0), gdn(sz(E * H * I), 0.0);
  std::vector<double> x(sz(H)), gy(sz(H)), logits(sz(E)), probs(sz(E)), w(sz(k)), gw(sz(k)), G(sz(2 * I)), a(sz(I));
  std::vector<double> ga(sz(I)), gG(sz(2 * I)), gp(sz(E)), gl(sz(E));
  std::vector<std::int64_t> chosen(sz(k));
  auto weight = [&](const void* W, std::int64_t i) { return load_real(W, p.weight_dtype, i); };
  for (std::int64_t t = 0; t < p.tokens; ++t) {
    for (std::int64_t h = 0; h < H; ++h) {
      x[h] = load_real(p.x, p.dtype, t * p.x_row_stride + h);
      gy[h] = load_real(g.grad_out, p.dtype, t * g.grad_out_row_stride + h);
    }
    for (std::int64_t e = 0; e < E; ++e) {
      double s = 0;
      for (std::int64_t h = 0; h < H; ++h) s += weight(p.router, e * H + h) * x[h];
      logits[e] = s;
    }
    moe_route(logits.data(), E, k, p.normalize_topk, chosen.data(), w.data(), probs.data());
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int64_t e = chosen[j], gu0 = e * 2 * I * H, dn0 = e * H * I;
      for (std::int64_t i = 0; i < 2 * I; ++i) {
        double s = 0;
        for (std::int64_t h = 0; h < H; ++h) s += weight(p.w_gate_up, gu0 + i * H + h) * x[h];
        G[i] = s;
      }
      for (std::int64_t i = 0; i < I; ++i) a[i] = moe_activate(p.act, G[i]) * G[I + i];
      double dot = 0;
      std::fill(ga.begin(), ga.end(), 0.0);
      for (std::int64_t h = 0; h < H; ++h) {
        double o = 0;
        for (std::int64_t i = 0; i < I; ++i) {
          o += weight(p.w_down, dn0 + h * I + i) * a[i];
          gdn[sz(dn0 + h * I + i)] += w[j] * gy[h] * a[i];
          ga[i] += w[j] * weight(p.w_down, dn0 + h * I + i) * gy[h];
        }
        dot += gy[h] * o;
      }
      gw[j] = dot;
      for (std::int64_t i = 0; i < I; ++i) {
        gG[i] = ga[i] * G[I + i] * moe_activate_grad(p.act, G[i]);
        gG[I + i] = ga[i] * moe_activate(p.act, G[i]);
      }
      for (std::int64_t i = 0; i < 2 * I; ++i)
        for (std::int64_t h = 0; h < H; ++h) {
          ggu[sz(gu0 + i * H + h)] += gG[i] * x[h];
          gx[sz(t * H + h)] += weight(p.w_gate_up, gu0 + i * H + h) * gG[i];
        }
    }
    // through the weights to the probabilities, the softmax, the router
    std::fill(gp.begin(), gp.end(), 0.0);
    double wgw = 0, S = 0;
    for (std::int64_t j = 0; j < k; ++j) wgw += w[j] * gw[j], S += probs[chosen[j]];
    for (std::int64_t j = 0; j < k; ++j) gp[chosen[j]] = p.normalize_topk ? (gw[j] - wgw) / S : gw[j];
    double pgp = 0;
    for (std::int64_t e = 0; e < E; ++e) pgp += probs[e] * gp[e];
    for (std::int64_t e = 0; e < E; ++e) {
      gl[e] = probs[e] * (gp[e] - pgp);
      if (g.grad_router_logits) gl[e] += load_real(g.grad_router_logits, p.dtype, t * E + e);
      for (std::int64_t h = 0; h < H; ++h) {
        gr[sz(e * H + h)] += gl[e] * x[h];
        gx[sz(t * H + h)] += weight(p.router, e * H + h) * gl[e];
      }
    }
  }
  auto put = [&](void* dst, const std::vector<double>& v) {
    if (dst)
      for (std::size_t i = 0; i < v.size(); ++i) store_real(dst, p.dtype, static_cast<std::int64_t>(i), v[i]);
  };
  put(g.grad_x, gx), put(g.grad_router, gr), put(g.grad_w_gate_up, ggu), put(g.grad_w_down, gdn);
}

/// The load-balancing loss (Fedus et al. 2021, eq. 4; transformers' load_balancing_loss_func) over n rows of router
/// logits (n, E) pooled from every MoE layer, each row with weight mask[r] (null: 1):
///   p_r = softmax(logits_r), f[j, e] = Σ_r m_r [e is r's j-th choice] / Σ m, P[e] = Σ_r m_r p_r[e] / Σ m,
///   aux = E Σ_{j, e} f[j, e] P[e]
/// (k under perfectly uniform routing). f is piecewise constant, so d aux / d logits_r[i] = E (m_r / Σ m) p_r[i]
/// (F[i] − Σ_e F[e] p_r[e]) with F[e] = Σ_j f[j, e]; written into grad (n, E) when not null. Returns aux (0 when
/// Σ m = 0).
inline double moe_load_balancing_loss(const double* logits, const double* mask, std::int64_t n, std::int64_t E,
                                      std::int64_t k, double* grad) {
  std::vector<double> p(static_cast<std::size_t>(n * E)), F(static_cast<std::size_t>(E), 0.0),
      P(static_cast<std::size_t>(E), 0.0), w(static_cast<std::size_t>(k));
  std::vector<std::int64_t> chosen(static_cast<std::size_t>(k));
  double msum = 0;
  for (std::int64_t r = 0; r < n; ++r) {
    const double m = mask ? mask[r] : 1.0;
    msum += m;
    moe_route(logits + r * E, E, k, false, chosen.data(), w.data(), p.data() + r * E);
    for (std::int64_t j = 0; j < k; ++j) F[chosen[j]] += m;
    for (std::int64_t e = 0; e < E; ++e) P[e] += m * p[r * E + e];
  }
  if (grad)
    for (std::int64_t i = 0; i < n * E; ++i) grad[i] = 0;
  if (msum == 0) return 0;
  double aux = 0;
  for (std::int64_t e = 0; e < E; ++e) F[e] /= msum, P[e] /= msum, aux += F[e] * P[e];
  if (grad)
    for (std::int64_t r = 0; r < n; ++r) {
      const double m = mask ? mask[r] : 1.0;
      double fp = 0;
      for (std::int64_t e = 0; e < E; ++e) fp += F[e] * p[r * E + e];
      for (std::int64_t i = 0; i < E; ++i) grad[r * E + i] = double(E) * m / msum * p[r * E + i] * (F[i] - fp);
    }
  return double(E) * aux;
}

}  // namespace ssm::reference
