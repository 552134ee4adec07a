// Reference delta rule, DeltaNet and Gated DeltaNet (docs/delta_rule.md; the formulas in core/params/delta_rule.hpp):
// the token loop in double, one state S (dk, dv) per sequence and head, forward and backward. With cu_seqlens every
// packed sequence starts from its own initial state. The oracle the chunked CPU path, the CPU token loop and the step
// are tested against: no chunks, no threads, no GEMM. Each step, as written in the papers' "overwrite" form:
//   S' = α_t S_{t−1},   p_t = S'ᵀ k̂_t,   u_t = β_t (v_t − p_t),   S_t = S' + k̂_t u_tᵀ,   o_t = S_tᵀ q̂_t.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "ssm/core/params/delta_rule.hpp"
#include "ssm/reference/elements.hpp"

namespace ssm::reference {

namespace delta_rule_detail {

/// One token's inputs of one head in double: q̂ (scaled), k̂, v, β, α, and q, k as given (for the backward).
struct Token {
  std::vector<double> q, k, v, q_raw, k_raw;  // q̂ = scale n(q), k̂ = n(k), v; q and k as given
  double beta = 0, alpha = 1;

  void load(const DeltaRuleParams& p, std::int64_t bi, std::int64_t t, std::int64_t gi, std::int64_t hh) {
    const DType it = p.input_dtype;
    q.resize(static_cast<std::size_t>(p.dk)), k.resize(static_cast<std::size_t>(p.dk));
    v.resize(static_cast<std::size_t>(p.dv));
    for (std::int64_t i = 0; i < p.dk; ++i) {
      q[static_cast<std::size_t>(i)] = load_real(p.q, it, p.q_at(bi, t, gi) + i);
      k[static_cast<std::size_t>(i)] = load_real(p.k, it, p.k_at(bi, t, gi) + i);
    }
    for (std::int64_t j = 0; j < p.dv; ++j) v[static_cast<std::size_t>(j)] = load_real(p.v, it, p.v_at(bi, t, hh) + j);
    q_raw = q, k_raw = k;
    if (p.l2_normalize) {
      const double q_inv = l2_inverse_norm(q.data(), p.dk, p.norm_eps), k_inv = l2_inverse_norm(k.data(), p.dk, p.norm_eps);
      for (double& x : k) x *= k_inv;
      for (double& x : q) x *= q_inv;
    }
    for (double& x : q) x *= p.scale;
    beta = load_real(p.beta, it, p.beta_at(bi, t, hh));
    alpha = p.g ? std::exp(load_real(p.g, it, p.g_at(bi, t, hh))) : 1.0;
  }
};

}  // namespace delta_rule_detail

/// One step on S (dk, dv): S ← α S, p = Sᵀ k̂, u = β (v − p) (written to u, and p kept in p), S += k̂ uᵀ.
inline void delta_rule_update(std::vector<double>& S, const delta_rule_detail::Token& x, std::int64_t dk,
                              std::int64_t dv, std::vector<double>& pv, std::vector<double>& u) {
  pv.assign(static_cast<std::size_t>(dv), 0.0), u.resize(static_cast<std::size_t>(dv));
  for (double& s : S) s *= x.alpha;
  for (std::int64_t i = 0; i < dk; ++i)
    for (std::int64_t j = 0; j < dv; ++j)
      pv[static_cast<std::size_t>(j)] += S[static_cast<std::size_t>(i * dv + j)] * x.k[static_cast<std::size_t>(i)];
  for (std::int64_t j = 0; j < dv; ++j)
    u[static_cast<std::size_t>(j)] = x.beta * (x.v[static_cast<std::size_t>(j)] - pv[static_cast<std::size_t>(j)]);
  for (std::int64_t i = 0; i < dk; ++i)
    for (std::int64_t j = 0; j < dv; ++j)
      S[static_cast<std::size_t>(i * dv + j)] += x.k[static_cast<std::size_t>(i)] * u[static_cast<std::size_t>(j)];
}

inline void delta_rule_forward(const DeltaRuleParams& p) {
  using delta_rule_detail::Token;
  const DType it = p.input_dtype, pt = p.param_dtype;
  const std::int64_t h = p.nheads, dk = p.dk, dv = p.dv, hpg = p.nheads / p.ngroups;
  std::vector<double> S(static_cast<std::size_t>(dk * dv)), pv, u;
  Token x;
  for (std::int64_t s = 0; s < p.rows(); ++s) {
    const std::int64_t bi = p.seq_row(s);
    for (std::int64_t hh = 0; hh < h; ++hh) {
      const std::int64_t gi = hh / hpg, so = (s * h + hh) * dk * dv;
      for (std::int64_t i = 0; i < dk * dv; ++i)
        S[static_cast<std::size_t>(i)] = p.initial_state ? load_real(p.initial_state, pt, so + i) : 0.0;
      for (std::int64_t t = p.seq_begin(s); t < p.seq_end(s); ++t) {
        x.load(p, bi, t, gi, hh);
        delta_rule_update(S, x, dk, dv, pv, u);
        for (std::int64_t j = 0; j < dv; ++j) {
          double y = 0;
          for (std::int64_t i = 0; i < dk; ++i) y += S[static_cast<std::size_t>(i * dv + j)] * x.q[static_cast<std::size_t>(i)];
          store_real(p.out, it, p.out_at(bi, t, hh) + j, y);
        }
      }
      if (p.final_state)
        for (std::int64_t i = 0; i < dk * dv; ++i) store_real(p.final_state, pt, so + i, S[static_cast<std::size_t>(i)]);
    }
  }
}

/// The backward of delta_rule_forward in double: the states S_t recomputed and kept ((len + 1) dk dv doubles per
/// sequence and head), then one reverse pass. With dS the gradient of S_t (from later steps and grad_final_state)
/// and ḡo the incoming gradient of o_t:
///   ḡq̂ = S_t ḡo,   dS += q̂ ḡoᵀ;
///   ḡu = dSᵀ k̂,   ḡk̂ = dS u;   ḡv = β ḡu,   ḡβ = ⟨ḡu, v − p⟩,   ḡp = −β ḡu;
///   ḡS' = dS + k̂ ḡpᵀ,   ḡk̂ += S' ḡp;   ḡg = α ⟨ḡS', S_{t−1}⟩;   dS ← α ḡS' (the gradient of S_{t−1});
/// then ḡq = scale n'(q) ḡq̂, ḡk = n'(k) ḡk̂ (l2_normalize_grad), summed over a group's heads.
inline void delta_rule_backward(const DeltaRuleParams& p, const DeltaRuleGradParams& gr) {
  using delta_rule_detail::Token;
  const DType it = p.input_dtype, pt = p.param_dtype;
  const std::int64_t b = p.batch, l = p.seqlen, h = p.nheads, ng = p.ngroups, dk = p.dk, dv = p.dv, hpg = h / ng;
  std::vector<double> gq(static_cast<std::size_t>(b * l * ng * dk)), gk(static_cast<std::size_t>(b * l * ng * dk));
  auto at = [](std::vector<double>& v, std::int64_t i) -> double& { return v[static_cast<std::size_t>(i)]; };
  for (std::int64_t s = 0; s < p.rows(); ++s) {
    const std::int64_t bi = p.seq_row(s), t0 = p.seq_begin(s), t1 = p.seq_end(s), len = t1 - t0;
    for (std::int64_t hh = 0; hh < h; ++hh) {
      const std::int64_t gi = hh / hpg, so = (s * h + hh) * dk * dv;
      // forward: S_t for t in [t0, t1), kept
      std::vector<Token> xs(static_cast<std::size_t>(len));
      std::vector<double> S(static_cast<std::size_t>((len + 1) * dk * dv)), cur(static_cast<std::size_t>(dk * dv)), pv,
          u;
      for (std::int64_t i = 0; i < dk * dv; ++i) at(cur, i) = p.initial_state ? load_real(p.initial_state, pt, so + i) : 0.0;
      std::copy(cur.begin(), cur.end(), S.begin());
      for (std::int64_t r = 0; r < len; ++r) {
        Token& x = xs[static_cast<std::size_t>(r)];
        x.load(p, bi, t0 + r, gi, hh);
        delta_rule_update(cur, x, dk, dv, pv, u);
        std::copy(cur.begin(), cur.end(), S.begin() + (r + 1) * dk * dv);
      }
      // reverse
      std::vector<double> dS(static_cast<std::size_t>(dk * dv)), go(static_cast<std::size_t>(dv)),
          gu(static_cast<std::size_t>(dv)), gqh(static_cast<std::size_t>(dk)), gkh(static_cast<std::size_t>(dk));
      for (std::int64_t i = 0; i < dk * dv; ++i)
        at(dS, i) = gr.grad_final_state ? load_real(gr.grad_final_state, pt, so + i) : 0.0;
      for (std::int64_t r = len - 1; r >= 0; --r) {
        const std::int64_t t = t0 + r;
        const Token& x = xs[static_cast<std::size_t>(r)];
        const double* St = S.data() + (r + 1) * dk * dv;
        const double* Sp = S.data() + r * dk * dv;  // S_{t−1}
        for (std::int64_t j = 0; j < dv; ++j) at(go, j) = load_real(gr.grad_out, it, ((bi * l + t) * h + hh) * dv + j);
        for (std::int64_t i = 0; i < dk; ++i) {
          double a = 0;
          for (std::int64_t j = 0; j < dv; ++j) a += St[i * dv + j] * at(go, j);
          at(gqh, i) = a;
          for (std::int64_t j = 0; j < dv; ++j) at(dS, i * dv + j) += x.q[static_cast<std::size_t>(i)] * at(go, j);
        }
        // p = α S_{t−1}ᵀ k̂, u = β (v − p)
        std::vector<double> pp(static_cast<std::size_t>(dv), 0.0), uu(static_cast<std::size_t>(dv));
        for (std::int64_t i = 0; i < dk; ++i)
          for (std::int64_t j = 0; j < dv; ++j) at(pp, j) += x.alpha * Sp[i * dv + j] * x.k[static_cast<std::size_t>(i)];
        for (std::int64_t j = 0; j < dv; ++j) at(uu, j) = x.beta * (x.v[static_cast<std::size_t>(j)] - at(pp, j));
        double gbeta = 0;
        for (std::int64_t j = 0; j < dv; ++j) {
          double a = 0;
          for (std::int64_t i = 0; i < dk; ++i) a += at(dS, i * dv + j) * x.k[static_cast<std::size_t>(i)];
          at(gu, j) = a;
          gbeta += a * (x.v[static_cast<std::size_t>(j)] - at(pp, j));
        }
        for (std::int64_t i = 0; i < dk; ++i) {
          double a = 0;
          for (std::int64_t j = 0; j < dv; ++j) a += at(dS, i * dv + j) * at(uu, j);
          at(gkh, i) = a;
        }
        // ḡp = −β ḡu;  ḡS' = dS + k̂ ḡpᵀ;  ḡk̂ += S' ḡp
        double galpha = 0;
        for (std::int64_t i = 0; i < dk; ++i) {
          double a = 0;
          for (std::int64_t j = 0; j < dv; ++j) {
            const double gp = -x.beta * at(gu, j);
            a += x.alpha * Sp[i * dv + j] * gp;
            double& d = at(dS, i * dv + j);
            d += x.k[static_cast<std::size_t>(i)] * gp;
            galpha += d * Sp[i * dv + j];
            d *= x.alpha;
          }
          at(gkh, i) += a;
        }
        if (gr.grad_v)
          for (std::int64_t j = 0; j < dv; ++j) store_real(gr.grad_v, it, ((bi * l + t) * h + hh) * dv + j, x.beta * at(gu, j));
        if (gr.grad_beta) store_real(gr.grad_beta, it, (bi * l + t) * h + hh, gbeta);
        if (gr.grad_g) store_real(gr.grad_g, it, (bi * l + t) * h + hh, p.g ? x.alpha * galpha : 0.0);
        // through the normalization and the scale
        for (double& a : gqh) a *= p.scale;
        if (p.l2_normalize) {
          l2_normalize_grad(x.q_raw.data(), dk, p.norm_eps, gqh.data());
          l2_normalize_grad(x.k_raw.data(), dk, p.norm_eps, gkh.data());
        }
        for (std::int64_t i = 0; i < dk; ++i) {
          at(gq, ((bi * l + t) * ng + gi) * dk + i) += at(gqh, i);
          at(gk, ((bi * l + t) * ng + gi) * dk + i) += at(gkh, i);
        }
      }
      if (gr.grad_initial_state)
        for (std::int64_t i = 0; i < dk * dv; ++i) store_real(gr.grad_initial_state, pt, so + i, at(dS, i));
    }
  }
  auto store_all = [](void* dst, DType t, const std::vector<double>& v) {
    if (dst)
      for (std::size_t i = 0; i < v.size(); ++i) store_real(dst, t, static_cast<std::int64_t>(i), v[i]);
  };
  store_all(gr.grad_q, it, gq);
  store_all(gr.grad_k, it, gk);
}

}  // namespace ssm::reference
