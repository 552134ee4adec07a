// The delta rule (DeltaNet, Gated DeltaNet) on the CPU (docs/delta_rule.md): the chunked form with the WY / UT
// transform on the SSD engine's chunk stages (cpu/ssd/), the token loop in the compute type (the decode step is its
// one-step case), the chunked backward (below), and the backward as a token loop that recomputes the states from
// per-chunk checkpoints.
//
// Chunked. Per sequence and head the state is kept in the engine's orientation H = Sᵀ (dv, dk). In a chunk of len
// steps entering with H, with K̂, Q̂ (len, dk), V (len, dv), β, and the chunk's cumulative log decays cs_t = Σ_{s<=t} g_s
// (all zero for DeltaNet; γ_t = exp(cs_t) <= 1), the overwrite form S_t = α_t S_{t−1} + k̂_t u_tᵀ has
//   u_t = β_t (v_t − γ_t S_inᵀ k̂_t − Σ_{s<t} exp(cs_t − cs_s) (k̂_sᵀ k̂_t) u_s),
// a unit lower-triangular system: (I + A) U = diag(β) V − diag(β γ) K̂ S_in with A = strictly-lower(diag(β) (K̂ K̂ᵀ ⊙ Γ)),
// Γ_ts = exp(cs_t − cs_s) <= 1. Its solution by forward substitution (the UT transform, T = (I + A)⁻¹ applied to
// both right-hand sides at once) gives Ũ = T diag(β) V and W = T diag(β γ) K̂ (the WY form), so U = Ũ − W S_in.
// Then the engine's stages, with C = Q̂, B = K̂, x = U, s = 1, log a = g:
//   outputs   Y = diag(γ) Q̂ S_in + (Q̂ K̂ᵀ ⊙ L) U       (ssd::chunk_output, ssd::chunk_gram, ssd::chunk_local)
//   next state H = γ_last H + Uᵀ diag(γ_last / γ) K̂   (ssd::chunk_state)
// Every exponent is <= 0; cs is kept in double (chunks.hpp). Unlike SSD and linear attention, U depends on the state
// entering the chunk, so the chunks of one sequence run in order (threads split over sequences and heads); every
// product in a chunk is still a matrix product of chunk size.
//
// Chunked backward. The same chunk in the op's orientation S (dk, dv), with Γ_ts = exp(cs_t − cs_s) (s <= t),
// γ_t = Γ's exp(cs_t), ρ_t = exp(cs_last − cs_t), M = Q̂ K̂ᵀ ⊙ Γ (lower, diagonal included), R = [Ũ | W]:
//   Y = diag(γ) Q̂ S_in + M U,   S_out = γ_last S_in + K̂ᵀ diag(ρ) U,   U = Ũ − W S_in,   (I + A) R = [diag(β) V | diag(βγ) K̂].
// Given ḡY and ḡS_out, in reverse: ḡU = Mᵀ ḡY + diag(ρ) K̂ ḡS_out; ḡM = lower(ḡY Uᵀ); ḡQ̂ = diag(γ) ḡY S_inᵀ +
// (ḡM ⊙ Γ) K̂; ḡK̂ = (ḡM ⊙ Γ)ᵀ Q̂ + diag(ρ) U ḡS_outᵀ; ḡS_in = γ_last ḡS_out + Q̂ᵀ diag(γ) ḡY − Wᵀ ḡU; then
// through the solve, ḡB = (I + A)⁻ᵀ [ḡU | −ḡU S_inᵀ] and ḡA = −strictly-lower(ḡB Rᵀ), into V, β, K̂ and Γ; the log
// decays collect ḡcs from Γ, γ, ρ and γ_last and sum them backwards over the chunk (ḡg_t = Σ_{u>=t} ḡcs_u). Each
// chunk's entering state comes from a forward pass in the same orientation that keeps it (l / Q states per head).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/instances.hpp"
#include "ssm/core/params/delta_rule.hpp"
#include "ssm/cpu/convert.hpp"
#include "ssm/cpu/linear_attention.hpp"
#include "ssm/cpu/ssd/chunk_local.hpp"
#include "ssm/cpu/ssd/chunk_output.hpp"
#include "ssm/cpu/ssd/chunk_state.hpp"
#include "ssm/cpu/ssd/chunks.hpp"
#include "ssm/cpu/threads.hpp"

namespace ssm::cpu {

namespace delta_rule {

using ssd::Matrix;
template <class T>
using RowVector = Eigen::Matrix<T, 1, Eigen::Dynamic>;

/// dst (dk) = mult n(src) in the compute type (n: L2 normalization when p.l2_normalize).
template <class In, class T>
void load_normalized(const DeltaRuleParams& p, const In* src, T mult, T* dst) {
  load_row(src, p.dk, dst);
  const T m = (p.l2_normalize ? l2_inverse_norm(dst, p.dk, static_cast<T>(p.norm_eps)) : T(1)) * mult;
  if (m != T(1))
    for (std::int64_t i = 0; i < p.dk; ++i) dst[i] *= m;
}

template <class In, class T>
T load_scalar(const void* base, std::int64_t offset) {
  T x;
  load_row(static_cast<const In*>(base) + offset, 1, &x);
  return x;
}

/// The inputs of one head over steps [t0, t0 + len) of batch row bi: Q̂, K̂ (len, dk), V (len, dv), β (len) and the
/// log decays g (len, in double; zero for DeltaNet).
template <class In, class T>
void load_chunk(const DeltaRuleParams& p, std::int64_t bi, std::int64_t t0, std::int64_t len, std::int64_t gi,
                std::int64_t hh, Matrix<T>& Q, Matrix<T>& K, Matrix<T>& V, std::vector<T>& beta,
                std::vector<double>& g) {
  Q.resize(len, p.dk), K.resize(len, p.dk), V.resize(len, p.dv);
  beta.resize(static_cast<std::size_t>(len)), g.resize(static_cast<std::size_t>(len));
  for (std::int64_t t = 0; t < len; ++t) {
    const std::int64_t tt = t0 + t;
    load_normalized<In, T>(p, static_cast<const In*>(p.q) + p.q_at(bi, tt, gi), static_cast<T>(p.scale), Q.row(t).data());
    load_normalized<In, T>(p, static_cast<const In*>(p.k) + p.k_at(bi, tt, gi), T(1), K.row(t).data());
    load_row(static_cast<const In*>(p.v) + p.v_at(bi, tt, hh), p.dv, V.row(t).data());
    beta[static_cast<std::size_t>(t)] = load_scalar<In, T>(p.beta, p.beta_at(bi, tt, hh));
    g[static_cast<std::size_t>(t)] = p.g ? static_cast<double>(load_scalar<In, T>(p.g, p.g_at(bi, tt, hh))) : 0.0;
  }
}

/// The WY / UT transform of one chunk: R (len, dv + dk) = [Ũ | W] = (I + A)⁻¹ [diag(β) V | diag(β γ) K̂] with
/// A = strictly-lower(diag(β) (K̂ K̂ᵀ ⊙ Γ)), by forward substitution (A: a (len, len) workspace).
template <class T>
void wy_transform(const Matrix<T>& K, const Matrix<T>& V, const std::vector<T>& beta, const double* cs, bool gated,
                  Matrix<T>& A, Matrix<T>& R) {
  const std::int64_t len = K.rows(), dk = K.cols(), dv = V.cols();
  A.noalias() = K * K.transpose();
  for (std::int64_t i = 0; i < len; ++i) {
    const T b = beta[static_cast<std::size_t>(i)];
    T* a = A.row(i).data();
    if (gated)
      for (std::int64_t j = 0; j < i; ++j) a[j] *= b * static_cast<T>(std::exp(cs[i] - cs[j]));  // cs_i <= cs_j: exponent <= 0
    else
      for (std::int64_t j = 0; j < i; ++j) a[j] *= b;
  }
  R.resize(len, dv + dk);
  for (std::int64_t t = 0; t < len; ++t) {
    const T b = beta[static_cast<std::size_t>(t)];
    R.row(t).head(dv) = b * V.row(t);
    R.row(t).tail(dk) = (gated ? b * static_cast<T>(std::exp(cs[t])) : b) * K.row(t);
  }
  A.template triangularView<Eigen::UnitLower>().solveInPlace(R);
}

template <class In>
void forward_chunked(const DeltaRuleParams& p, int threads) {
  using T = compute_t<In>;
  const std::int64_t h = p.nheads, dk = p.dk, dv = p.dv, hpg = h / p.ngroups, Cq = p.chunk_size;
  parallel_for(p.rows() * h, threads, [&](std::int64_t task) {
    const std::int64_t s = task / h, hh = task % h, gi = hh / hpg, bi = p.seq_row(s);
    Matrix<T> H = Matrix<T>::Zero(dv, dk), Q, K, V, A, R, U, G, M, Xd, Xw, Y, Sc(dv, dk);
    if (p.initial_state)
      H = Eigen::Map<const Matrix<T>>(static_cast<const T*>(p.initial_state) + task * dk * dv, dk, dv).transpose();
    std::vector<T> beta, ones(static_cast<std::size_t>(Cq), T(1));
    std::vector<double> cs;
    for (std::int64_t t0 = p.seq_begin(s); t0 < p.seq_end(s); t0 += Cq) {
      const std::int64_t len = std::min(Cq, p.seq_end(s) - t0);
      load_chunk<In, T>(p, bi, t0, len, gi, hh, Q, K, V, beta, cs);
      ssd::segment_sums(cs.data(), len);
      wy_transform(K, V, beta, cs.data(), p.g != nullptr, A, R);
      U = R.leftCols(dv);
      U.noalias() -= R.rightCols(dk) * H.transpose();  // U = Ũ − W S_in
      ssd::chunk_output(cs.data(), Q, Eigen::Map<const Matrix<T>>(H.data(), dv, dk), Y);
      ssd::chunk_gram(Q, K, G);
      ssd::chunk_local(G, cs.data(), ones.data(), U, M, Xd, Y);
      const T decay = ssd::chunk_state(cs.data(), ones.data(), U, K, Xw, Eigen::Map<Matrix<T>>(Sc.data(), dv, dk));
      H *= decay;
      H += Sc;
      for (std::int64_t t = 0; t < len; ++t)
        store_row(Y.row(t).data(), dv, static_cast<In*>(p.out) + p.out_at(bi, t0 + t, hh));
    }
    if (p.final_state)
      Eigen::Map<Matrix<T>>(static_cast<T*>(p.final_state) + task * dk * dv, dk, dv) = H.transpose();
  });
}

/// One token of one head in the compute type: q̂, k̂, v, β, α, and q, k as given (kept for the backward).
template <class T>
struct Token {
  RowVector<T> q, k, v, q_raw, k_raw;
  T beta = 0, alpha = 1;

  template <class In>
  void load(const DeltaRuleParams& p, std::int64_t bi, std::int64_t t, std::int64_t gi, std::int64_t hh) {
    q_raw.resize(p.dk), k_raw.resize(p.dk), v.resize(p.dv);
    load_row(static_cast<const In*>(p.q) + p.q_at(bi, t, gi), p.dk, q_raw.data());
    load_row(static_cast<const In*>(p.k) + p.k_at(bi, t, gi), p.dk, k_raw.data());
    const T eps = static_cast<T>(p.norm_eps);
    q = (p.l2_normalize ? l2_inverse_norm(q_raw.data(), p.dk, eps) : T(1)) * static_cast<T>(p.scale) * q_raw;
    k = (p.l2_normalize ? l2_inverse_norm(k_raw.data(), p.dk, eps) : T(1)) * k_raw;
    load_row(static_cast<const In*>(p.v) + p.v_at(bi, t, hh), p.dv, v.data());
    beta = load_scalar<In, T>(p.beta, p.beta_at(bi, t, hh));
    alpha = p.g ? std::exp(load_scalar<In, T>(p.g, p.g_at(bi, t, hh))) : T(1);
  }
};

/// One step on S (dk, dv): S ← α S, pv = k̂ S, u = β (v − pv), S += k̂ᵀ u.
template <class T>
void update(Matrix<T>& S, const Token<T>& x, RowVector<T>& pv, RowVector<T>& u) {
  if (x.alpha != T(1)) S *= x.alpha;
  pv.noalias() = x.k * S;
  u = x.beta * (x.v - pv);
  S.noalias() += x.k.transpose() * u;
}

/// The token loop in the compute type, threads over (sequence, head). The state is read into a local copy first
/// and written at the end, so initial_state and final_state may be the same buffer (the decode step).
template <class In>
void forward_recurrent(const DeltaRuleParams& p, int threads) {
  using T = compute_t<In>;
  const std::int64_t h = p.nheads, dk = p.dk, dv = p.dv, hpg = h / p.ngroups;
  parallel_for(p.rows() * h, threads, [&](std::int64_t task) {
    const std::int64_t s = task / h, hh = task % h, gi = hh / hpg, bi = p.seq_row(s);
    Matrix<T> S = Matrix<T>::Zero(dk, dv);
    if (p.initial_state) S = Eigen::Map<const Matrix<T>>(static_cast<const T*>(p.initial_state) + task * dk * dv, dk, dv);
    Token<T> x;
    RowVector<T> pv(dv), u(dv), y(dv);
    for (std::int64_t t = p.seq_begin(s); t < p.seq_end(s); ++t) {
      x.template load<In>(p, bi, t, gi, hh);
      update(S, x, pv, u);
      y.noalias() = x.q * S;
      store_row(y.data(), dv, static_cast<In*>(p.out) + p.out_at(bi, t, hh));
    }
    if (p.final_state) std::copy(S.data(), S.data() + dk * dv, static_cast<T*>(p.final_state) + task * dk * dv);
  });
}

/// The q and k gradients of a backward in the compute type, each a group's heads summed: zero at first; add() takes
/// one row's gradients of q̂ (before the scale) and k̂ through the scale and the normalization's backward (raw q, k
/// as given); store() converts them into grad_q, grad_k.
template <class In, class T>
struct GroupGrads {
  std::int64_t n;
  std::unique_ptr<T[]> q, k;

  explicit GroupGrads(const DeltaRuleParams& p)
      : n(p.batch * p.seqlen * p.ngroups * p.dk), q(linear_attention::buffer<T>(n)), k(linear_attention::buffer<T>(n)) {
    std::fill_n(q.get(), n, T(0));
    std::fill_n(k.get(), n, T(0));
  }

  void add(const DeltaRuleParams& p, std::int64_t bi, std::int64_t t, std::int64_t gi, const T* q_raw, const T* k_raw,
           RowVector<T>& gq, RowVector<T>& gk) {
    gq *= static_cast<T>(p.scale);
    if (p.l2_normalize) {
      l2_normalize_grad(q_raw, p.dk, p.norm_eps, gq.data());
      l2_normalize_grad(k_raw, p.dk, p.norm_eps, gk.data());
    }
    const std::int64_t off = ((bi * p.seqlen + t) * p.ngroups + gi) * p.dk;
    Eigen::Map<RowVector<T>>(q.get() + off, p.dk) += gq;
    Eigen::Map<RowVector<T>>(k.get() + off, p.dk) += gk;
  }

  void store(const DeltaRuleGradParams& gr) const {
    if (gr.grad_q) store_row(q.get(), n, static_cast<In*>(gr.grad_q));
    if (gr.grad_k) store_row(k.get(), n, static_cast<In*>(gr.grad_k));
  }
};

/// The backward as a token loop in the compute type (reference/delta_rule.hpp has the formulas), threads over
/// (sequence, group) with the group's heads in turn (they add into the same ḡq, ḡk). Per head: a forward pass keeps
/// the state at the start of every chunk of p.chunk_size steps; then, chunk by chunk from the last, the chunk's
/// states are recomputed from its checkpoint and the reverse steps run over them. Memory per thread: the checkpoints
/// and one chunk's states, (l / Q + Q + 1) dk dv.
template <class In>
void backward_recurrent(const DeltaRuleParams& p, const DeltaRuleGradParams& gr, int threads) {
  using T = compute_t<In>;
  const std::int64_t l = p.seqlen, h = p.nheads, ng = p.ngroups, dk = p.dk, dv = p.dv, hpg = h / ng;
  const std::int64_t Cq = p.chunk_size, size = dk * dv;
  GroupGrads<In, T> grads(p);
  parallel_for(p.rows() * ng, threads, [&](std::int64_t task) {
    const std::int64_t s = task / ng, gi = task % ng, bi = p.seq_row(s), t0 = p.seq_begin(s), t1 = p.seq_end(s);
    const std::int64_t n_ck = (t1 - t0 + Cq - 1) / Cq;
    std::vector<T> ck(static_cast<std::size_t>(n_ck * size)), states(static_cast<std::size_t>((Cq + 1) * size));
    std::vector<Token<T>> xs(static_cast<std::size_t>(Cq));
    Matrix<T> S(dk, dv), dS(dk, dv);
    RowVector<T> pv(dv), u(dv), go(dv), gu(dv), gp(dv), gq(dk), gk(dk), gv(dv);
    for (std::int64_t hh = gi * hpg; hh < (gi + 1) * hpg; ++hh) {
      const std::int64_t so = (s * h + hh) * size;
      if (p.initial_state) S = Eigen::Map<const Matrix<T>>(static_cast<const T*>(p.initial_state) + so, dk, dv);
      else S.setZero();
      Token<T> x;
      for (std::int64_t t = t0; t < t1; ++t) {
        if ((t - t0) % Cq == 0) std::copy(S.data(), S.data() + size, ck.begin() + (t - t0) / Cq * size);
        x.template load<In>(p, bi, t, gi, hh);
        update(S, x, pv, u);
      }
      if (gr.grad_final_state) dS = Eigen::Map<const Matrix<T>>(static_cast<const T*>(gr.grad_final_state) + so, dk, dv);
      else dS.setZero();
      for (std::int64_t c = n_ck - 1; c >= 0; --c) {
        const std::int64_t c0 = t0 + c * Cq, len = std::min(Cq, t1 - c0);
        std::copy(ck.begin() + c * size, ck.begin() + (c + 1) * size, S.data());
        std::copy(S.data(), S.data() + size, states.begin());
        for (std::int64_t r = 0; r < len; ++r) {
          Token<T>& xr = xs[static_cast<std::size_t>(r)];
          xr.template load<In>(p, bi, c0 + r, gi, hh);
          update(S, xr, pv, u);
          std::copy(S.data(), S.data() + size, states.begin() + (r + 1) * size);
        }
        for (std::int64_t r = len - 1; r >= 0; --r) {
          const std::int64_t t = c0 + r, row = (bi * l + t) * h + hh;
          const Token<T>& xr = xs[static_cast<std::size_t>(r)];
          const Eigen::Map<const Matrix<T>> St(states.data() + (r + 1) * size, dk, dv), Sp(states.data() + r * size, dk, dv);
          load_row(static_cast<const In*>(gr.grad_out) + row * dv, dv, go.data());
          gq.noalias() = go * St.transpose();
          dS.noalias() += xr.q.transpose() * go;
          pv.noalias() = xr.alpha * (xr.k * Sp);
          u = xr.beta * (xr.v - pv);
          gu.noalias() = xr.k * dS;
          gk.noalias() = u * dS.transpose();
          gp = -xr.beta * gu;
          dS.noalias() += xr.k.transpose() * gp;  // ḡS'
          gk.noalias() += xr.alpha * (gp * Sp.transpose());
          if (gr.grad_v) {
            gv = xr.beta * gu;
            store_row(gv.data(), dv, static_cast<In*>(gr.grad_v) + row * dv);
          }
          if (gr.grad_beta) {
            const T gb = gu.dot(xr.v - pv);
            store_row(&gb, 1, static_cast<In*>(gr.grad_beta) + row);
          }
          if (gr.grad_g) {
            const T gg = xr.alpha * (dS.cwiseProduct(Sp)).sum();
            store_row(&gg, 1, static_cast<In*>(gr.grad_g) + row);
          }
          if (xr.alpha != T(1)) dS *= xr.alpha;
          grads.add(p, bi, t, gi, xr.q_raw.data(), xr.k_raw.data(), gq, gk);
        }
      }
      if (gr.grad_initial_state) std::copy(dS.data(), dS.data() + size, static_cast<T*>(gr.grad_initial_state) + so);
    }
  });
  grads.store(gr);
}

/// One chunk of one head in the op's orientation (the chunked backward's forward quantities): the inputs, the
/// decays Γ (len, len; lower with the diagonal, zero above), γ, ρ (len), γ_last, K̂ K̂ᵀ and A (load); R of the
/// WY / UT transform (solve); U for the state entering it (advance).
template <class T>
struct ChunkForward {
  Matrix<T> Q, K, V, Gam, KK, A, R, U;
  std::vector<T> beta, gamma, rho;
  std::vector<double> cs;
  T gamma_last = 1;

  template <class In>
  void load(const DeltaRuleParams& p, std::int64_t bi, std::int64_t t0, std::int64_t len, std::int64_t gi,
            std::int64_t hh) {
    load_chunk<In, T>(p, bi, t0, len, gi, hh, Q, K, V, beta, cs);
    ssd::segment_sums(cs.data(), len);
    gamma.resize(static_cast<std::size_t>(len)), rho.resize(static_cast<std::size_t>(len));
    Gam.setZero(len, len);
    const double last = cs[static_cast<std::size_t>(len - 1)];
    for (std::int64_t t = 0; t < len; ++t) {
      const double ct = cs[static_cast<std::size_t>(t)];
      gamma[static_cast<std::size_t>(t)] = static_cast<T>(std::exp(ct));
      rho[static_cast<std::size_t>(t)] = static_cast<T>(std::exp(last - ct));
      for (std::int64_t s = 0; s <= t; ++s) Gam(t, s) = static_cast<T>(std::exp(ct - cs[static_cast<std::size_t>(s)]));
    }
    gamma_last = static_cast<T>(std::exp(last));
    KK.setZero(len, len);  // only the lower triangle is read (A, and the backward's β and Γ terms)
    KK.template triangularView<Eigen::Lower>() = K * K.transpose();
    A = KK.cwiseProduct(Gam);
    for (std::int64_t t = 0; t < len; ++t) A.row(t) *= beta[static_cast<std::size_t>(t)];
  }

  /// R = (I + A)⁻¹ [diag(β) V | diag(βγ) K̂].
  void solve() {
    const std::int64_t len = K.rows(), dk = K.cols(), dv = V.cols();
    R.resize(len, dv + dk);
    for (std::int64_t t = 0; t < len; ++t) {
      const T b = beta[static_cast<std::size_t>(t)];
      R.row(t).head(dv) = b * V.row(t);
      R.row(t).tail(dk) = b * gamma[static_cast<std::size_t>(t)] * K.row(t);
    }
    A.template triangularView<Eigen::UnitLower>().solveInPlace(R);
  }

  /// U = Ũ − W S_in, and S (the entering state on entry) ← γ_last S + K̂ᵀ diag(ρ) U.
  void advance(Matrix<T>& S, Matrix<T>& KR) {
    const std::int64_t dv = V.cols(), dk = K.cols();
    U = R.leftCols(dv);
    U.noalias() -= R.rightCols(dk) * S;
    KR = K;
    for (std::int64_t t = 0; t < K.rows(); ++t) KR.row(t) *= rho[static_cast<std::size_t>(t)];
    S *= gamma_last;
    S.noalias() += KR.transpose() * U;
  }
};

/// The chunked backward (the formulas above), threads over (sequence, group) with the group's heads in turn. Per head
/// a forward pass keeps each chunk's entering state, R and U (l (dv + dk + dv) + (l / Q) dk dv values per thread), so
/// the reverse pass solves only the transposed system.
template <class In>
void backward_chunked(const DeltaRuleParams& p, const DeltaRuleGradParams& gr, int threads) {
  using T = compute_t<In>;
  const std::int64_t l = p.seqlen, h = p.nheads, ng = p.ngroups, dk = p.dk, dv = p.dv, hpg = h / ng;
  const std::int64_t Cq = p.chunk_size, size = dk * dv;
  GroupGrads<In, T> grads(p);
  parallel_for(p.rows() * ng, threads, [&](std::int64_t task) {
    const std::int64_t s = task / ng, gi = task % ng, bi = p.seq_row(s), t0 = p.seq_begin(s), t1 = p.seq_end(s);
    const std::int64_t n_ck = (t1 - t0 + Cq - 1) / Cq;
    // the thread's kept workspaces (cpu/ssd/chunks.hpp; this pass never runs inside an SSD call): allocated per
    // call, their pages were faulted in and zeroed every time, 5% of the backward at l = 4096
    const std::int64_t span = t1 - t0;
    T* ck = ssd::workspace<T>(0, std::max<std::int64_t>(n_ck, 1) * size);
    T* Rs = ssd::workspace<T>(1, std::max<std::int64_t>(span, 1) * (dv + dk));
    T* Us = ssd::workspace<T>(2, std::max<std::int64_t>(span, 1) * dv);
    ChunkForward<T> f;
    const bool gate_grad = p.g != nullptr && gr.grad_g != nullptr;
    Matrix<T> S(dk, dv), dS(dk, dv), dS_in, KR, dY, dU, P, dM, dQK, dQ, dK, dR, QS, QK, E, dKK, dA;
    std::vector<double> dcs;
    RowVector<T> q_raw(dk), k_raw(dk), gq(dk), gk(dk);
    for (std::int64_t hh = gi * hpg; hh < (gi + 1) * hpg; ++hh) {
      const std::int64_t so = (s * h + hh) * size;
      if (p.initial_state) S = Eigen::Map<const Matrix<T>>(static_cast<const T*>(p.initial_state) + so, dk, dv);
      else S.setZero();
      for (std::int64_t c = 0; c < n_ck; ++c) {  // the forward: each chunk's entering state
        const std::int64_t c0 = t0 + c * Cq, len = std::min(Cq, t1 - c0);
        std::copy(S.data(), S.data() + size, ck + c * size);
        f.template load<In>(p, bi, c0, len, gi, hh);
        f.solve();
        f.advance(S, KR);
        const std::int64_t r0 = c * Cq;
        Eigen::Map<Matrix<T>>(Rs + r0 * (dv + dk), len, dv + dk) = f.R;
        Eigen::Map<Matrix<T>>(Us + r0 * dv, len, dv) = f.U;
      }
      if (gr.grad_final_state) dS = Eigen::Map<const Matrix<T>>(static_cast<const T*>(gr.grad_final_state) + so, dk, dv);
      else dS.setZero();
      for (std::int64_t c = n_ck - 1; c >= 0; --c) {
        const std::int64_t c0 = t0 + c * Cq, len = std::min(Cq, t1 - c0);
        S = Eigen::Map<const Matrix<T>>(ck + c * size, dk, dv);  // S_in
        f.template load<In>(p, bi, c0, len, gi, hh);
        const Eigen::Map<const Matrix<T>> R(Rs + c * Cq * (dv + dk), len, dv + dk), U(Us + c * Cq * dv, len, dv);
        dY.resize(len, dv);
        for (std::int64_t t = 0; t < len; ++t)
          load_row(static_cast<const In*>(gr.grad_out) + ((bi * l + c0 + t) * h + hh) * dv, dv, dY.row(t).data());
        dcs.assign(static_cast<std::size_t>(len), 0.0);
        const std::int64_t last = len - 1;
        // S_out = γ_last S_in + K̂ᵀ diag(ρ) U
        P.noalias() = f.K * dS;  // (len, dv)
        if (gate_grad) {
          for (std::int64_t t = 0; t < len; ++t) {
            const T r = f.rho[static_cast<std::size_t>(t)];
            const double w = static_cast<double>(r) * static_cast<double>(P.row(t).dot(U.row(t)));
            dcs[static_cast<std::size_t>(last)] += w, dcs[static_cast<std::size_t>(t)] -= w;  // ρ_t = e^(cs_last − cs_t)
          }
          dcs[static_cast<std::size_t>(last)] +=
              static_cast<double>(dS.cwiseProduct(S).sum()) * static_cast<double>(f.gamma_last);  // γ_last
        }
        dK.noalias() = U * dS.transpose();  // (len, dk), then ρ per row
        for (std::int64_t t = 0; t < len; ++t) {
          dK.row(t) *= f.rho[static_cast<std::size_t>(t)];
          P.row(t) *= f.rho[static_cast<std::size_t>(t)];
        }
        QK.setZero(len, len);  // lower triangles only, here and below: half the products' work
        QK.template triangularView<Eigen::Lower>() = f.Q * f.K.transpose();
        dU.noalias() = f.Gam.cwiseProduct(QK).template triangularView<Eigen::Lower>().transpose() * dY;
        dU += P;
        // Y = diag(γ) Q̂ S_in + M U
        if (gate_grad) {
          QS.noalias() = f.Q * S;  // (len, dv)
          for (std::int64_t t = 0; t < len; ++t)
            dcs[static_cast<std::size_t>(t)] += static_cast<double>(f.gamma[static_cast<std::size_t>(t)]) *
                                                static_cast<double>(dY.row(t).dot(QS.row(t)));  // γ_t
        }
        dM.setZero(len, len);
        dM.template triangularView<Eigen::Lower>() = dY * U.transpose();
        dQK = dM.cwiseProduct(f.Gam);
        dQ.noalias() = dY * S.transpose();
        for (std::int64_t t = 0; t < len; ++t) dQ.row(t) *= f.gamma[static_cast<std::size_t>(t)];
        dQ.noalias() += dQK.template triangularView<Eigen::Lower>() * f.K;
        dK.noalias() += dQK.template triangularView<Eigen::Lower>().transpose() * f.Q;
        if (gate_grad) E = dQK.cwiseProduct(QK);  // ḡΓ ⊙ Γ from M
        // U = Ũ − W S_in
        dS_in.noalias() = f.Q.transpose() * (Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>(f.gamma.data(), len)
                                                 .asDiagonal() * dY);
        dS_in.noalias() -= R.rightCols(dk).transpose() * dU;
        dS_in += f.gamma_last * dS;
        dR.resize(len, dv + dk);
        dR.leftCols(dv) = dU;
        dR.rightCols(dk).noalias() = -dU * S.transpose();
        f.A.template triangularView<Eigen::UnitLower>().transpose().solveInPlace(dR);  // ḡB
        // ḡA = −strictly-lower(ḡB Rᵀ); A_ts = β_t Γ_ts (K̂ K̂ᵀ)_ts
        dA.setZero(len, len);
        dA.template triangularView<Eigen::Lower>() = dR * R.transpose();
        dA.diagonal().setZero();
        dA *= T(-1);
        dKK = dA.cwiseProduct(f.Gam);  // ḡA ⊙ Γ, then × β per row: ḡ(K̂ K̂ᵀ)
        std::vector<T> gbeta(static_cast<std::size_t>(len));
        for (std::int64_t t = 0; t < len; ++t) {
          const T bt = f.beta[static_cast<std::size_t>(t)], gt = f.gamma[static_cast<std::size_t>(t)];
          const T db2k = dR.row(t).tail(dk).dot(f.K.row(t));
          gbeta[static_cast<std::size_t>(t)] = dR.row(t).head(dv).dot(f.V.row(t)) + gt * db2k +
                                               dKK.row(t).dot(f.KK.row(t));
          if (gate_grad) {
            dcs[static_cast<std::size_t>(t)] += static_cast<double>(bt * db2k) * static_cast<double>(gt);  // γ_t in B
            E.row(t) += bt * dA.row(t).cwiseProduct(f.KK.row(t)).cwiseProduct(f.Gam.row(t));  // ḡΓ ⊙ Γ from A
          }
          dKK.row(t) *= bt;
          dK.row(t) += (bt * gt) * dR.row(t).tail(dk);
        }
        dK.noalias() += dKK.template triangularView<Eigen::StrictlyLower>() * f.K;
        dK.noalias() += dKK.template triangularView<Eigen::StrictlyLower>().transpose() * f.K;
        if (gate_grad) {
          for (std::int64_t t = 0; t < len; ++t)  // Γ_ts = e^(cs_t − cs_s)
            for (std::int64_t u = 0; u <= t; ++u) {
              const double w = static_cast<double>(E(t, u));
              dcs[static_cast<std::size_t>(t)] += w, dcs[static_cast<std::size_t>(u)] -= w;
            }
          ssd::segment_sums_backward(dcs.data(), len);
        }
        for (std::int64_t t = 0; t < len; ++t) {
          const std::int64_t tt = c0 + t, row = (bi * l + tt) * h + hh;
          if (gr.grad_v) {
            RowVector<T> gv = f.beta[static_cast<std::size_t>(t)] * dR.row(t).head(dv);
            store_row(gv.data(), dv, static_cast<In*>(gr.grad_v) + row * dv);
          }
          if (gr.grad_beta) store_row(&gbeta[static_cast<std::size_t>(t)], 1, static_cast<In*>(gr.grad_beta) + row);
          if (gate_grad) {
            const T gg = static_cast<T>(dcs[static_cast<std::size_t>(t)]);
            store_row(&gg, 1, static_cast<In*>(gr.grad_g) + row);
          }
          gq = dQ.row(t), gk = dK.row(t);
          if (p.l2_normalize) {
            load_row(static_cast<const In*>(p.q) + p.q_at(bi, tt, gi), dk, q_raw.data());
            load_row(static_cast<const In*>(p.k) + p.k_at(bi, tt, gi), dk, k_raw.data());
          }
          grads.add(p, bi, tt, gi, q_raw.data(), k_raw.data(), gq, gk);
        }
        dS = dS_in;
      }
      if (gr.grad_initial_state) std::copy(dS.data(), dS.data() + size, static_cast<T*>(gr.grad_initial_state) + so);
    }
  });
  grads.store(gr);
}

}  // namespace delta_rule

/// The chunked forward over p (validated by the op, ops/delta_rule.hpp), on `threads` threads (0: by the work).
inline void delta_rule_forward_chunked(const DeltaRuleParams& p, int threads) {
  const int t = cpu_threads(threads, p.batch * p.seqlen * p.nheads * p.dk * p.dv);
  linear_attention::by_dtype(p, "delta_rule", [&](auto tag) { delta_rule::forward_chunked<decltype(tag)>(p, t); });
}

/// The token loop in the compute type (also the decode step: l = 1, the state read and written in place).
inline void delta_rule_forward_recurrent(const DeltaRuleParams& p, int threads) {
  const int t = cpu_threads(threads, p.batch * p.seqlen * p.nheads * p.dk * p.dv);
  linear_attention::by_dtype(p, "delta_rule", [&](auto tag) { delta_rule::forward_recurrent<decltype(tag)>(p, t); });
}

/// The chunked backward over p and g (the WY / UT chunk's gradients, chunk by chunk from the last).
inline void delta_rule_backward_chunked(const DeltaRuleParams& p, const DeltaRuleGradParams& g, int threads) {
  const int t = cpu_threads(threads, p.batch * p.seqlen * p.nheads * p.dk * p.dv);
  linear_attention::by_dtype(p, "delta_rule_backward",
                             [&](auto tag) { delta_rule::backward_chunked<decltype(tag)>(p, g, t); });
}

/// The backward over p and g: the token loop over states recomputed from per-chunk checkpoints.
inline void delta_rule_backward_recurrent(const DeltaRuleParams& p, const DeltaRuleGradParams& g, int threads) {
  const int t = cpu_threads(threads, p.batch * p.seqlen * p.nheads * p.dk * p.dv);
  linear_attention::by_dtype(p, "delta_rule_backward",
                             [&](auto tag) { delta_rule::backward_recurrent<decltype(tag)>(p, g, t); });
}

}  // namespace ssm::cpu

/// The kernels' entry points for one input type In, compiled once where SSM_EXTERN_INSTANCES is set
/// (core/instances.hpp, src/instances/).
#define SSM_CPU_DELTA_RULE_INSTANCES(PREFIX, In)                                                  \
  PREFIX void ssm::cpu::delta_rule::forward_chunked<In>(const ::ssm::DeltaRuleParams&, int);      \
  PREFIX void ssm::cpu::delta_rule::forward_recurrent<In>(const ::ssm::DeltaRuleParams&, int);    \
  PREFIX void ssm::cpu::delta_rule::backward_chunked<In>(const ::ssm::DeltaRuleParams&,           \
                                                         const ::ssm::DeltaRuleGradParams&, int); \
  PREFIX void ssm::cpu::delta_rule::backward_recurrent<In>(const ::ssm::DeltaRuleParams&,         \
                                                           const ::ssm::DeltaRuleGradParams&, int);
#if SSM_EXTERN_INSTANCES
SSM_FOR_EACH_INPUT(SSM_CPU_DELTA_RULE_INSTANCES, extern template)
#endif
