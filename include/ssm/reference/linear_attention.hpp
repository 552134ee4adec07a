// Reference linear attention, retention and GLA (docs/linear_attention.md; the formulas in
// core/params/linear_attention.hpp): the token loop in double, one state S (dk, dv) and normalizer z (dk) per
// sequence and head, forward and backward. With cu_seqlens every packed sequence starts from its own initial state.
// The oracle the chunked CPU path and the step are tested against: no chunks, no threads, no GEMM.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "ssm/core/params/linear_attention.hpp"
#include "ssm/reference/elements.hpp"

namespace ssm::reference {

namespace linear_attention_detail {

/// Element offsets of step t of sequence row `bi` for group gi / head hh.
inline std::int64_t q_at(const LinearAttentionParams& p, std::int64_t bi, std::int64_t t, std::int64_t gi) {
  return bi * p.q_batch_stride + t * p.q_seq_stride + gi * p.q_group_stride;
}
inline std::int64_t k_at(const LinearAttentionParams& p, std::int64_t bi, std::int64_t t, std::int64_t gi) {
  return bi * p.k_batch_stride + t * p.k_seq_stride + gi * p.k_group_stride;
}
inline std::int64_t v_at(const LinearAttentionParams& p, std::int64_t bi, std::int64_t t, std::int64_t hh) {
  return bi * p.v_batch_stride + t * p.v_seq_stride + hh * p.v_head_stride;
}

/// α_{t,i} = γ exp(g_{t,i}): the decay of key channel i at step t (γ alone without a log gate).
inline double decay_at(const LinearAttentionParams& p, double gamma, std::int64_t bi, std::int64_t t,
                       std::int64_t hh, std::int64_t i) {
  if (!p.log_gate) return gamma;
  return gamma * std::exp(load_real(p.log_gate, p.input_dtype,
                                    bi * p.gate_batch_stride + t * p.gate_seq_stride + hh * p.gate_head_stride + i));
}

}  // namespace linear_attention_detail

inline void linear_attention_forward(const LinearAttentionParams& p) {
  using namespace linear_attention_detail;
  const DType it = p.input_dtype, pt = p.param_dtype;
  const std::int64_t h = p.nheads, dk = p.dk, dv = p.dv, hpg = p.nheads / p.ngroups;
  std::vector<double> S(static_cast<std::size_t>(dk * dv)), z(static_cast<std::size_t>(dk)),
      qt(static_cast<std::size_t>(dk)), kt(static_cast<std::size_t>(dk));
  for (std::int64_t s = 0; s < p.rows(); ++s) {
    const std::int64_t bi = p.seq_row(s);
    for (std::int64_t hh = 0; hh < h; ++hh) {
      const std::int64_t gi = hh / hpg, so = (s * h + hh) * dk * dv, zo = (s * h + hh) * dk;
      const double gamma = p.log_gamma ? std::exp(p.log_gamma[hh]) : 1.0;
      for (std::int64_t i = 0; i < dk * dv; ++i)
        S[static_cast<std::size_t>(i)] = p.initial_state ? load_real(p.initial_state, pt, so + i) : 0.0;
      for (std::int64_t i = 0; i < dk; ++i)
        z[static_cast<std::size_t>(i)] = p.initial_normalizer ? load_real(p.initial_normalizer, pt, zo + i) : 0.0;
      for (std::int64_t t = p.seq_begin(s); t < p.seq_end(s); ++t) {
        for (std::int64_t i = 0; i < dk; ++i) {
          qt[static_cast<std::size_t>(i)] = p.scale * feature_map(p.feature_map, load_real(p.q, it, q_at(p, bi, t, gi) + i));
          kt[static_cast<std::size_t>(i)] = feature_map(p.feature_map, load_real(p.k, it, k_at(p, bi, t, gi) + i));
        }
        double den = 0;
        for (std::int64_t i = 0; i < dk; ++i) {
          const double a = decay_at(p, gamma, bi, t, hh, i);
          double& zi = z[static_cast<std::size_t>(i)];
          zi = a * zi + kt[static_cast<std::size_t>(i)];
          den += zi * qt[static_cast<std::size_t>(i)];
          for (std::int64_t j = 0; j < dv; ++j) {
            double& sij = S[static_cast<std::size_t>(i * dv + j)];
            sij = a * sij + kt[static_cast<std::size_t>(i)] * load_real(p.v, it, v_at(p, bi, t, hh) + j);
          }
        }
        for (std::int64_t j = 0; j < dv; ++j) {
          double y = 0;
          for (std::int64_t i = 0; i < dk; ++i) y += S[static_cast<std::size_t>(i * dv + j)] * qt[static_cast<std::size_t>(i)];
          if (p.normalize) y /= den + p.eps;
          store_real(p.out, it, bi * p.out_batch_stride + t * p.out_seq_stride + hh * p.out_head_stride + j, y);
        }
      }
      if (p.final_state)
        for (std::int64_t i = 0; i < dk * dv; ++i) store_real(p.final_state, pt, so + i, S[static_cast<std::size_t>(i)]);
      if (p.final_normalizer)
        for (std::int64_t i = 0; i < dk; ++i) store_real(p.final_normalizer, pt, zo + i, z[static_cast<std::size_t>(i)]);
    }
  }
}

/// The backward of linear_attention_forward in double: the forward's S_t and z_t recomputed and kept (l dk (dv + 1)
/// doubles per sequence and head), then one reverse pass. With d_t = z_tᵀ q̃_t + eps and ḡ the incoming gradient:
///   ḡnum = ḡ / d_t,  ḡd = −⟨ḡ, y_t⟩ / d_t (normalized; else ḡnum = ḡ, ḡd = 0);
///   ḡq̃_t = S_t ḡnum + ḡd z_t;   ḡS += q̃_t ḡnumᵀ,  ḡz += ḡd q̃_t;   ḡk̃_t = ḡS v_t + ḡz,  ḡv_t = ḡSᵀ k̃_t;
///   ḡg_{t,i} = α_{t,i} (Σ_j ḡS_ij S_{t−1,ij} + ḡz_i z_{t−1,i});
///   then ḡS, ḡz ← diag(α_t) ḡS, α_t ⊙ ḡz (to step t − 1); ḡq = scale φ'(q) ḡq̃, ḡk = φ'(k) ḡk̃.
inline void linear_attention_backward(const LinearAttentionParams& p, const LinearAttentionGradParams& g) {
  using namespace linear_attention_detail;
  const DType it = p.input_dtype, pt = p.param_dtype;
  const std::int64_t b = p.batch, l = p.seqlen, h = p.nheads, ng = p.ngroups, dk = p.dk, dv = p.dv, hpg = h / ng;
  std::vector<double> gq(static_cast<std::size_t>(b * l * ng * dk)), gk(static_cast<std::size_t>(b * l * ng * dk));
  auto at = [](std::vector<double>& v, std::int64_t i) -> double& { return v[static_cast<std::size_t>(i)]; };
  for (std::int64_t s = 0; s < p.rows(); ++s) {
    const std::int64_t bi = p.seq_row(s), t0 = p.seq_begin(s), t1 = p.seq_end(s), len = t1 - t0;
    for (std::int64_t hh = 0; hh < h; ++hh) {
      const std::int64_t gi = hh / hpg, so = (s * h + hh) * dk * dv, zo = (s * h + hh) * dk;
      const double gamma = p.log_gamma ? std::exp(p.log_gamma[hh]) : 1.0;
      auto qf = [&](std::int64_t t, std::int64_t i) {
        return p.scale * feature_map(p.feature_map, load_real(p.q, it, q_at(p, bi, t, gi) + i));
      };
      auto kf = [&](std::int64_t t, std::int64_t i) {
        return feature_map(p.feature_map, load_real(p.k, it, k_at(p, bi, t, gi) + i));
      };
      auto vv = [&](std::int64_t t, std::int64_t j) { return load_real(p.v, it, v_at(p, bi, t, hh) + j); };
      // forward: S_t, z_t for t in [t0, t1), kept
      std::vector<double> S(static_cast<std::size_t>((len + 1) * dk * dv)), z(static_cast<std::size_t>((len + 1) * dk));
      for (std::int64_t i = 0; i < dk * dv; ++i) at(S, i) = p.initial_state ? load_real(p.initial_state, pt, so + i) : 0.0;
      for (std::int64_t i = 0; i < dk; ++i) at(z, i) = p.initial_normalizer ? load_real(p.initial_normalizer, pt, zo + i) : 0.0;
      for (std::int64_t t = t0; t < t1; ++t) {
        const std::int64_t r = t - t0;
        for (std::int64_t i = 0; i < dk; ++i) {
          const double ki = kf(t, i), a = decay_at(p, gamma, bi, t, hh, i);
          at(z, (r + 1) * dk + i) = a * at(z, r * dk + i) + ki;
          for (std::int64_t j = 0; j < dv; ++j)
            at(S, (r + 1) * dk * dv + i * dv + j) = a * at(S, r * dk * dv + i * dv + j) + ki * vv(t, j);
        }
      }
      // reverse
      std::vector<double> dS(static_cast<std::size_t>(dk * dv)), dz(static_cast<std::size_t>(dk)),
          gnum(static_cast<std::size_t>(dv)), qt(static_cast<std::size_t>(dk));
      for (std::int64_t i = 0; i < dk * dv; ++i)
        at(dS, i) = g.grad_final_state ? load_real(g.grad_final_state, pt, so + i) : 0.0;
      for (std::int64_t i = 0; i < dk; ++i)
        at(dz, i) = g.grad_final_normalizer ? load_real(g.grad_final_normalizer, pt, zo + i) : 0.0;
      for (std::int64_t t = t1 - 1; t >= t0; --t) {
        const std::int64_t r = t - t0;
        const double* St = S.data() + (r + 1) * dk * dv;
        const double* zt = z.data() + (r + 1) * dk;
        double den = 0;
        for (std::int64_t i = 0; i < dk; ++i) at(qt, i) = qf(t, i), den += zt[i] * at(qt, i);
        const double d = den + p.eps;
        double gden = 0;
        for (std::int64_t j = 0; j < dv; ++j) {
          const double go = load_real(g.grad_out, it, ((bi * l + t) * h + hh) * dv + j);
          if (!p.normalize) {
            at(gnum, j) = go;
            continue;
          }
          double num = 0;
          for (std::int64_t i = 0; i < dk; ++i) num += St[i * dv + j] * at(qt, i);
          at(gnum, j) = go / d;
          gden -= go * num / (d * d);
        }
        for (std::int64_t i = 0; i < dk; ++i) {
          double gqi = gden * zt[i];
          for (std::int64_t j = 0; j < dv; ++j) gqi += St[i * dv + j] * at(gnum, j);
          at(gq, ((bi * l + t) * ng + gi) * dk + i) +=
              p.scale * feature_map_grad(p.feature_map, load_real(p.q, it, q_at(p, bi, t, gi) + i)) * gqi;
          at(dz, i) += gden * at(qt, i);
          for (std::int64_t j = 0; j < dv; ++j) at(dS, i * dv + j) += at(qt, i) * at(gnum, j);
        }
        for (std::int64_t i = 0; i < dk; ++i) {
          double gki = at(dz, i);
          for (std::int64_t j = 0; j < dv; ++j) gki += at(dS, i * dv + j) * vv(t, j);
          at(gk, ((bi * l + t) * ng + gi) * dk + i) +=
              feature_map_grad(p.feature_map, load_real(p.k, it, k_at(p, bi, t, gi) + i)) * gki;
        }
        for (std::int64_t j = 0; j < dv; ++j) {
          double gv = 0;
          for (std::int64_t i = 0; i < dk; ++i) gv += at(dS, i * dv + j) * kf(t, i);
          if (g.grad_v) store_real(g.grad_v, it, ((bi * l + t) * h + hh) * dv + j, gv);
        }
        for (std::int64_t i = 0; i < dk; ++i) {
          const double a = decay_at(p, gamma, bi, t, hh, i);
          if (p.log_gate && g.grad_log_gate) {
            const double* Sp = S.data() + r * dk * dv;
            double gg = at(dz, i) * z[static_cast<std::size_t>(r * dk + i)];
            for (std::int64_t j = 0; j < dv; ++j) gg += at(dS, i * dv + j) * Sp[i * dv + j];
            store_real(g.grad_log_gate, it, ((bi * l + t) * h + hh) * dk + i, a * gg);
          }
          for (std::int64_t j = 0; j < dv; ++j) at(dS, i * dv + j) *= a;
          at(dz, i) *= a;
        }
      }
      if (g.grad_initial_state)
        for (std::int64_t i = 0; i < dk * dv; ++i) store_real(g.grad_initial_state, pt, so + i, at(dS, i));
      if (g.grad_initial_normalizer)
        for (std::int64_t i = 0; i < dk; ++i) store_real(g.grad_initial_normalizer, pt, zo + i, at(dz, i));
    }
  }
  auto store_all = [](void* dst, DType t, const std::vector<double>& v) {
    if (dst)
      for (std::size_t i = 0; i < v.size(); ++i) store_real(dst, t, static_cast<std::int64_t>(i), v[i]);
  };
  store_all(g.grad_q, it, gq);
  store_all(g.grad_k, it, gk);
}

}  // namespace ssm::reference
