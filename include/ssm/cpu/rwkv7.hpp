// RWKV-7's generalized delta rule on the CPU (docs/rwkv7.md; the formulas in core/params/rwkv7.hpp): the chunked
// forward and its backward (backward_chunked), the token loop in the compute type (the decode step is its one-step
// case) and a backward as a token loop over states recomputed from per-chunk checkpoints. Threads split over
// (sequence, head).
//
// Token loop. Per step and head two passes over the state (dk, dv): sa = Sᵀ a, then S ← diag(w) S + b saᵀ + k vᵀ
// fused with o = Sᵀ q; the inner loops run along dv (unit stride), where the compiler vectorizes them.
//
// Chunked. In a chunk of len steps entering with S_0, with c_t = Σ_{u<=t} log w_u per key channel (c_{−1} = 0, in
// double) and u_t = S_{t−1}ᵀ a_t (dv), unrolling the recurrence gives
//   S_t = diag(e^{c_t}) S_0 + Σ_{s<=t} diag(e^{c_t − c_s}) (b_s u_sᵀ + k_s v_sᵀ),
// so with the decayed scores (GLA's per-channel chunk scores, cpu/linear_attention_gated.hpp)
//   Mqk_ts = Σ_i q_ti k_si e^{c_ti − c_si},  Mqb the same with b (s <= t);
//   Lak_ts = Σ_i a_ti k_si e^{c_(t−1)i − c_si},  Lab the same with b (s < t),
// the rank-1 reads solve a unit lower-triangular system (the WY / UT step of the delta rule, here with a ≠ b):
//   (I − Lab) U = (A ⊙ e^{c_(t−1)}) S_0 + Lak V,
// and then
//   O = (Q ⊙ e^{c_t}) S_0 + Mqb U + Mqk V,
//   S_len = diag(e^{c_last}) S_0 + (B ⊙ e^{c_last − c_s})ᵀ U + (K ⊙ e^{c_last − c_s})ᵀ V.
// Every exponent formed directly is <= 0; the scores split theirs as GLA's do. U depends on the entering state, so a
// sequence's chunks run in order; every product inside a chunk is a matrix product of chunk size.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "ssm/core/instances.hpp"
#include "ssm/core/params/rwkv7.hpp"
#include "ssm/cpu/convert.hpp"
#include "ssm/cpu/linear_attention.hpp"
#include "ssm/cpu/linear_attention_gated.hpp"
#include "ssm/cpu/ssd/chunks.hpp"
#include "ssm/cpu/threads.hpp"

namespace ssm::cpu {

namespace rwkv7 {

/// One token of one head in the compute type: scale q, k, v, w = exp(log_w), a, b.
template <class T>
struct Token {
  std::vector<T> q, k, v, w, a, b;

  explicit Token(const Rwkv7Params& p)
      : q(static_cast<std::size_t>(p.dk)), k(q.size()), v(static_cast<std::size_t>(p.dv)), w(q.size()), a(q.size()),
        b(q.size()) {}

  template <class In>
  void load(const Rwkv7Params& p, std::int64_t bi, std::int64_t t, std::int64_t hh) {
    auto row = [&](const TokenRows<const void*>& src, std::int64_t n, std::vector<T>& dst) {
      load_row(static_cast<const In*>(src.data) + src.at(bi, t, hh), n, dst.data());
    };
    row(p.q, p.dk, q), row(p.k, p.dk, k), row(p.v, p.dv, v), row(p.log_w, p.dk, w), row(p.a, p.dk, a), row(p.b, p.dk, b);
    const T scale = static_cast<T>(p.scale);
    if (scale != T(1))
      for (T& x : q) x *= scale;
    for (T& x : w) x = std::exp(x);
  }
};

/// sa (dv) = Sᵀ a for S (dk, dv) row-major.
template <class T>
void state_times(const T* S, const T* a, std::int64_t dk, std::int64_t dv, T* sa) {
  std::fill_n(sa, dv, T(0));
  for (std::int64_t i = 0; i < dk; ++i) {
    const T ai = a[i];
    const T* s = S + i * dv;
    for (std::int64_t j = 0; j < dv; ++j) sa[j] += ai * s[j];
  }
}

/// One step: sa = Sᵀ a; S ← diag(w) S + b saᵀ + k vᵀ; and, when y is given, y = Sᵀ q of the new state.
template <class T>
void update(T* S, const Token<T>& x, std::int64_t dk, std::int64_t dv, T* sa, T* y) {
  state_times(S, x.a.data(), dk, dv, sa);
  if (y) std::fill_n(y, dv, T(0));
  const T* v = x.v.data();
  for (std::int64_t i = 0; i < dk; ++i) {
    const T wi = x.w[static_cast<std::size_t>(i)], bi = x.b[static_cast<std::size_t>(i)];
    const T ki = x.k[static_cast<std::size_t>(i)], qi = x.q[static_cast<std::size_t>(i)];
    T* s = S + i * dv;
    for (std::int64_t j = 0; j < dv; ++j) s[j] = wi * s[j] + bi * sa[j] + ki * v[j];
    if (y)
      for (std::int64_t j = 0; j < dv; ++j) y[j] += qi * s[j];
  }
}

/// The token loop in the compute type. The state is read into a local copy first and written at the end, so
/// initial_state and final_state may be the same buffer (the decode step).
template <class In>
void forward_recurrent(const Rwkv7Params& p, int threads) {
  using T = compute_t<In>;
  const std::int64_t h = p.nheads, dk = p.dk, dv = p.dv;
  parallel_for(p.rows() * h, threads, [&](std::int64_t task) {
    const std::int64_t s = task / h, hh = task % h, bi = p.seq_row(s);
    std::vector<T> S(static_cast<std::size_t>(dk * dv), T(0)), sa(static_cast<std::size_t>(dv)), y(sa.size());
    if (p.initial_state) std::copy_n(static_cast<const T*>(p.initial_state) + task * dk * dv, dk * dv, S.data());
    Token<T> x(p);
    for (std::int64_t t = p.seq_begin(s); t < p.seq_end(s); ++t) {
      x.template load<In>(p, bi, t, hh);
      update(S.data(), x, dk, dv, sa.data(), y.data());
      store_row(y.data(), dv, static_cast<In*>(p.out.data) + p.out.at(bi, t, hh));
    }
    if (p.final_state) std::copy(S.begin(), S.end(), static_cast<T*>(p.final_state) + task * dk * dv);
  });
}

/// Row (bi, t, hh) of a contiguous (b, l, h, n) gradient in In from g (n), when dst is not null: both backwards' store.
template <class In, class T>
void store_grad(const Rwkv7Params& p, void* dst, const T* g, std::int64_t n, std::int64_t bi, std::int64_t t,
                std::int64_t hh) {
  if (dst) store_row(g, n, static_cast<In*>(dst) + ((bi * p.seqlen + t) * p.nheads + hh) * n);
}

/// One chunk of one head: its inputs (q scaled), the cumulative log decays and the rank-1 reads' algebra.
template <class T>
struct Chunk {
  using M = ssd::Matrix<T>;
  M Q, K, V, A, B, As;                    // (len, dk) but V (len, dv); As row t = a_(t+1) (the last row zero)
  M Lak, Tri, U;                          // (len, len): Lak and I − Lab (both shifted as in the header); U (len, dv)
  M E, Xe, Lab;                           // workspaces
  linear_attention_gated::Cumulative cc;  // (len + 1, dk): row t + 1 = c_t
  linear_attention_gated::Work<T> w;
  std::vector<T> row;
  std::int64_t len = 0;

  /// Reads steps [t0, t0 + n) of sequence row bi, head hh.
  template <class In>
  void load(const Rwkv7Params& p, std::int64_t bi, std::int64_t hh, std::int64_t t0, std::int64_t n) {
    const std::int64_t dk = p.dk;
    len = n;
    auto rows = [&](const TokenRows<const void*>& src, std::int64_t width, M& dst) {
      dst.resize(len, width);
      for (std::int64_t t = 0; t < len; ++t)
        load_row(static_cast<const In*>(src.data) + src.at(bi, t0 + t, hh), width, dst.row(t).data());
    };
    rows(p.q, dk, Q), rows(p.k, dk, K), rows(p.v, p.dv, V), rows(p.a, dk, A), rows(p.b, dk, B);
    if (p.scale != 1.0) Q *= static_cast<T>(p.scale);
    As = M::Zero(len, dk);
    As.topRows(len - 1) = A.bottomRows(len - 1);
    cc.resize(len + 1, dk);
    cc.row(0).setZero();
    row.resize(static_cast<std::size_t>(dk));
    for (std::int64_t t = 0; t < len; ++t) {
      load_row(static_cast<const In*>(p.log_w.data) + p.log_w.at(bi, t0 + t, hh), dk, row.data());
      for (std::int64_t i = 0; i < dk; ++i)
        cc(t + 1, i) = cc(t, i) + static_cast<double>(row[static_cast<std::size_t>(i)]);
    }
  }

  /// The rank-1 reads U from the entering state S_0 (dk, dv): (I − Lab) U = (A ⊙ e^{c_(t−1)}) S_0 + Lak V.
  void reads(const M& S0) {
    namespace gated = linear_attention_gated;
    Lak.resize(len, len), Lab.resize(len, len);
    gated::scores(As, K, cc, 0, len, Lak, w);  // the shifted rows a_(t'+1) read with c_t': Lak, Lab at (t' + 1, s)
    gated::scores(As, B, cc, 0, len, Lab, w);
    gated::exp_diff(cc, 0, len, 0, 1.0, E);  // e^{c_(t−1)}
    Xe = A.cwiseProduct(E);
    U.noalias() = Xe * S0;
    Tri = M::Identity(len, len);
    if (len > 1) {
      U.bottomRows(len - 1).noalias() +=
          Lak.topLeftCorner(len - 1, len - 1).template triangularView<Eigen::Lower>() * V.topRows(len - 1);
      Tri.bottomLeftCorner(len - 1, len - 1).template triangularView<Eigen::Lower>() =
          -Lab.topLeftCorner(len - 1, len - 1);
    }
    Tri.template triangularView<Eigen::UnitLower>().solveInPlace(U);
  }

  /// S (dk, dv) ← S_len = diag(e^{c_last}) S_0 + (B ⊙ e^{c_last − c_s})ᵀ U + (K ⊙ e^{c_last − c_s})ᵀ V.
  void pass_state(M& S, M& Snew) {
    linear_attention_gated::exp_diff(cc, 1, len, len, -1.0, E);  // e^{c_last − c_s}
    Xe = B.cwiseProduct(E);
    Snew.noalias() = Xe.transpose() * U;
    Xe = K.cwiseProduct(E);
    Snew.noalias() += Xe.transpose() * V;
    for (std::int64_t i = 0; i < S.rows(); ++i) S.row(i) *= static_cast<T>(std::exp(cc(len, i)));
    S += Snew;
  }
};

/// The chunked forward (the formulas at the top of this file).
template <class In>
void forward_chunked(const Rwkv7Params& p, int threads) {
  using T = compute_t<In>;
  using M = ssd::Matrix<T>;
  namespace gated = linear_attention_gated;
  const std::int64_t h = p.nheads, dk = p.dk, dv = p.dv, Cq = p.chunk_size;
  parallel_for(p.rows() * h, threads, [&](std::int64_t task) {
    const std::int64_t s = task / h, hh = task % h, bi = p.seq_row(s);
    M S = M::Zero(dk, dv);  // (dk, dv)
    if (p.initial_state) S = Eigen::Map<const M>(static_cast<const T*>(p.initial_state) + task * dk * dv, dk, dv);
    Chunk<T> c;
    M Mqk, Mqb, O, Snew;  // len × len, len × dv, dk × dv
    for (std::int64_t t0 = p.seq_begin(s); t0 < p.seq_end(s); t0 += Cq) {
      const std::int64_t len = std::min(Cq, p.seq_end(s) - t0);
      c.template load<In>(p, bi, hh, t0, len);
      c.reads(S);
      // O = (Q ⊙ e^{c_t}) S_0 + Mqb U + Mqk V
      Mqk.resize(len, len), Mqb.resize(len, len);
      gated::scores(c.Q, c.K, c.cc, 0, len, Mqk, c.w);
      gated::scores(c.Q, c.B, c.cc, 0, len, Mqb, c.w);
      gated::exp_diff(c.cc, 1, len, 0, 1.0, c.E);  // e^{c_t}
      c.Xe = c.Q.cwiseProduct(c.E);
      O.noalias() = c.Xe * S;
      O.noalias() += Mqb.template triangularView<Eigen::Lower>() * c.U;
      O.noalias() += Mqk.template triangularView<Eigen::Lower>() * c.V;
      for (std::int64_t t = 0; t < len; ++t)
        store_row(O.row(t).data(), dv, static_cast<In*>(p.out.data) + p.out.at(bi, t0 + t, hh));
      c.pass_state(S, Snew);
    }
    if (p.final_state) Eigen::Map<M>(static_cast<T*>(p.final_state) + task * dk * dv, dk, dv) = S;
  });
}

/// The chunked backward: the chunk algebra at the top of this file differentiated with the decays held fixed, and the
/// decays' gradient from the identity below. Per (sequence, head) a forward pass over the chunks keeps each chunk's
/// entering state S_0, its reads U, Lak and I − Lab; then the chunks run from the last, each given the gradients of
/// its outputs Ō (len, dv) and of the state it leaves S̄ (dk, dv):
///   Ū = Mqbᵀ Ō + (B ⊙ e^{c_last − c_s}) S̄,   R̄ = (I − Lab)⁻ᵀ Ū   (R the right side of U's system),
///   S̄_0 = diag(e^{c_last}) S̄ + (Q ⊙ e^{c_t})ᵀ Ō + (A ⊙ e^{c_(t−1)})ᵀ R̄,
///   V̄ = Mqkᵀ Ō + Lakᵀ R̄ + (K ⊙ e^{c_last − c_s}) S̄,
///   Q̄ = (Ō S_0ᵀ) ⊙ e^{c_t},           Ā = (R̄ S_0ᵀ) ⊙ e^{c_(t−1)},
///   K̄ = (V S̄ᵀ) ⊙ e^{c_last − c_s},   B̄ = (U S̄ᵀ) ⊙ e^{c_last − c_s},
/// plus the scores' backward (GLA's) of M̄qk = Ō Vᵀ, M̄qb = Ō Uᵀ, L̄ak = R̄ Vᵀ and L̄ab = R̄ Uᵀ, each on its triangle.
/// The decays: in a chunk S_t = diag(e^{c_t}) Ŝ_t, and the chunk's recurrence in Ŝ meets c only through q_t e^{c_t},
/// k_t e^{−c_t}, b_t e^{−c_t}, a_(t+1) e^{c_t} (t + 1 in the chunk) and the leaving state's e^{c_last}; the entering
/// state does not depend on the chunk's decays. So, over the chunk's steps u <= t,
///   ḡlog_w_u = Σ_{t>=u} (q_t ⊙ ḡq_t − k_t ⊙ ḡk_t − b_t ⊙ ḡb_t + a_(t+1) ⊙ ḡa_(t+1)) + rowsum(S̄ ⊙ S_len),
/// summed in double from the chunk's end: at most Q terms, so the rounding does not grow with the sequence.
/// Memory per (sequence, head) being worked on: (l / Q) dk dv + l (dv + 2 Q) numbers.
template <class In>
void backward_chunked(const Rwkv7Params& p, const Rwkv7GradParams& gr, int threads) {
  using T = compute_t<In>;
  using M = ssd::Matrix<T>;
  namespace gated = linear_attention_gated;
  const std::int64_t l = p.seqlen, h = p.nheads, dk = p.dk, dv = p.dv, Cq = p.chunk_size, size = dk * dv;
  parallel_for(p.rows() * h, threads, [&](std::int64_t task) {
    const std::int64_t s = task / h, hh = task % h, bi = p.seq_row(s), t0 = p.seq_begin(s), t1 = p.seq_end(s);
    const std::int64_t n_ck = (t1 - t0 + Cq - 1) / Cq;
    struct Saved {
      M S0, U, Lak, Tri;
    };
    std::vector<Saved> saved(static_cast<std::size_t>(n_ck));
    Chunk<T> c;
    M S = M::Zero(dk, dv), Snew;
    if (p.initial_state) S = Eigen::Map<const M>(static_cast<const T*>(p.initial_state) + task * size, dk, dv);
    for (std::int64_t ci = 0; ci < n_ck; ++ci) {
      const std::int64_t c0 = t0 + ci * Cq;
      Saved& sv = saved[static_cast<std::size_t>(ci)];
      sv.S0 = S;
      c.template load<In>(p, bi, hh, c0, std::min(Cq, t1 - c0));
      c.reads(S);
      c.pass_state(S, Snew);
      sv.U.swap(c.U), sv.Lak.swap(c.Lak), sv.Tri.swap(c.Tri);
    }
    M dS = M::Zero(dk, dv);  // the gradient of the state the current chunk leaves
    if (gr.grad_final_state) dS = Eigen::Map<const M>(static_cast<const T*>(gr.grad_final_state) + task * size, dk, dv);
    std::vector<double> acc(static_cast<std::size_t>(dk)), pending(acc.size());  // ḡlog_w's sums
    M Mqk, Mqb, dO, dU, dR, dV, dQ, dK, dA, dB, dAs, dM, Et, Ep, El, dS0;
    std::vector<T> grow(static_cast<std::size_t>(dk));
    const T scale = static_cast<T>(p.scale);
    auto store = [&](void* dst, const T* g, std::int64_t n, std::int64_t t) {
      store_grad<In>(p, dst, g, n, bi, t, hh);
    };
    for (std::int64_t ci = n_ck - 1; ci >= 0; --ci) {
      const std::int64_t c0 = t0 + ci * Cq, len = std::min(Cq, t1 - c0);
      const Saved& sv = saved[static_cast<std::size_t>(ci)];
      const M& S_len = ci + 1 < n_ck ? saved[static_cast<std::size_t>(ci + 1)].S0 : S;  // the state it leaves
      for (std::int64_t i = 0; i < dk; ++i) {
        double a = 0;
        for (std::int64_t j = 0; j < dv; ++j) a += double(dS(i, j)) * double(S_len(i, j));
        acc[static_cast<std::size_t>(i)] = a, pending[static_cast<std::size_t>(i)] = 0;
      }
      c.template load<In>(p, bi, hh, c0, len);
      dO.resize(len, dv);
      for (std::int64_t t = 0; t < len; ++t)
        load_row(static_cast<const In*>(gr.grad_out) + ((bi * l + c0 + t) * h + hh) * dv, dv, dO.row(t).data());
      Mqk.resize(len, len), Mqb.resize(len, len);
      gated::scores(c.Q, c.K, c.cc, 0, len, Mqk, c.w);
      gated::scores(c.Q, c.B, c.cc, 0, len, Mqb, c.w);
      gated::exp_diff(c.cc, 1, len, 0, 1.0, Et);     // e^{c_t}
      gated::exp_diff(c.cc, 0, len, 0, 1.0, Ep);     // e^{c_(t−1)}
      gated::exp_diff(c.cc, 1, len, len, -1.0, El);  // e^{c_last − c_s}
      // Ū, then R̄ through the transposed unit triangle
      c.Xe = c.B.cwiseProduct(El);
      dU.noalias() = Mqb.template triangularView<Eigen::Lower>().transpose() * dO;
      dU.noalias() += c.Xe * dS;
      dR = dU;
      sv.Tri.transpose().template triangularView<Eigen::UnitUpper>().solveInPlace(dR);
      // V̄
      c.Xe = c.K.cwiseProduct(El);
      dV.noalias() = Mqk.template triangularView<Eigen::Lower>().transpose() * dO;
      dV.noalias() += c.Xe * dS;
      if (len > 1)
        dV.topRows(len - 1).noalias() +=
            sv.Lak.topLeftCorner(len - 1, len - 1).template triangularView<Eigen::Lower>().transpose() *
            dR.bottomRows(len - 1);
      // what the entering state and the leaving state's gradient give
      dQ.noalias() = dO * sv.S0.transpose();
      dQ.array() *= Et.array();
      dA.noalias() = dR * sv.S0.transpose();
      dA.array() *= Ep.array();
      dK.noalias() = c.V * dS.transpose();
      dK.array() *= El.array();
      dB.noalias() = sv.U * dS.transpose();
      dB.array() *= El.array();
      // the scores' backward
      dM.noalias() = dO * c.V.transpose();
      dM.template triangularView<Eigen::StrictlyUpper>().setZero();
      gated::scores_backward(c.Q, c.K, c.cc, dM, 0, len, dQ, dK, c.w);
      dM.noalias() = dO * sv.U.transpose();
      dM.template triangularView<Eigen::StrictlyUpper>().setZero();
      gated::scores_backward(c.Q, c.B, c.cc, dM, 0, len, dQ, dB, c.w);
      if (len > 1) {  // row t' of L̄ is R̄'s row t' + 1 (the shift); the last row is zero
        dAs = M::Zero(len, dk);
        dM.setZero();
        dM.topRows(len - 1).noalias() = dR.bottomRows(len - 1) * c.V.transpose();
        dM.template triangularView<Eigen::StrictlyUpper>().setZero();
        gated::scores_backward(c.As, c.K, c.cc, dM, 0, len, dAs, dK, c.w);
        dM.topRows(len - 1).noalias() = dR.bottomRows(len - 1) * sv.U.transpose();
        dM.template triangularView<Eigen::StrictlyUpper>().setZero();
        gated::scores_backward(c.As, c.B, c.cc, dM, 0, len, dAs, dB, c.w);
        dA.bottomRows(len - 1) += dAs.topRows(len - 1);
      }
      // S̄_0 = diag(e^{c_last}) S̄ + (Q ⊙ e^{c_t})ᵀ Ō + (A ⊙ e^{c_(t−1)})ᵀ R̄
      c.Xe = c.Q.cwiseProduct(Et);
      dS0.noalias() = c.Xe.transpose() * dO;
      c.Xe = c.A.cwiseProduct(Ep);
      dS0.noalias() += c.Xe.transpose() * dR;
      for (std::int64_t i = 0; i < dk; ++i) dS.row(i) *= static_cast<T>(std::exp(c.cc(len, i)));
      dS += dS0;
      // ḡlog_w from the chunk's end, and the rows out (ḡq for q itself: Q is scale q)
      for (std::int64_t t = len - 1; t >= 0; --t) {
        for (std::int64_t i = 0; i < dk; ++i) {
          const auto ui = static_cast<std::size_t>(i);
          acc[ui] += double(c.Q(t, i)) * double(dQ(t, i)) - double(c.K(t, i)) * double(dK(t, i)) -
                     double(c.B(t, i)) * double(dB(t, i)) + pending[ui];
          pending[ui] = double(c.A(t, i)) * double(dA(t, i));
          grow[ui] = static_cast<T>(acc[ui]);
        }
        store(gr.grad_log_w, grow.data(), dk, c0 + t);
      }
      if (scale != T(1)) dQ *= scale;
      for (std::int64_t t = 0; t < len; ++t) {
        store(gr.grad_q, dQ.row(t).data(), dk, c0 + t), store(gr.grad_k, dK.row(t).data(), dk, c0 + t);
        store(gr.grad_v, dV.row(t).data(), dv, c0 + t), store(gr.grad_a, dA.row(t).data(), dk, c0 + t);
        store(gr.grad_b, dB.row(t).data(), dk, c0 + t);
      }
    }
    if (gr.grad_initial_state) Eigen::Map<M>(static_cast<T*>(gr.grad_initial_state) + task * size, dk, dv) = dS;
  });
}

/// The backward as a token loop in the compute type (core/params/rwkv7.hpp has the formulas). Per (sequence, head):
/// a forward pass keeps the state at the start of every chunk of p.chunk_size steps; then, chunk by chunk from the
/// last, the chunk's states are recomputed from its checkpoint and the reverse steps run over them. Memory per
/// thread: the checkpoints and one chunk's states, (l / Q + Q + 1) dk dv. Each task writes only its own head's
/// gradient rows. A reverse step is a few matrix-vector products over the state (Eigen's, vectorized along dv):
/// [ḡk ḡb] = dS [v sa] and [ḡv ḡsa] = dSᵀ [k b] as products with two columns, the rank-1 updates of dS, and the row
/// sums of dS ⊙ S_{t−1}.
template <class In>
void backward_recurrent(const Rwkv7Params& p, const Rwkv7GradParams& gr, int threads) {
  using T = compute_t<In>;
  using M = ssd::Matrix<T>;
  using Vec = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>>;
  using CVec = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>;
  using CMap = Eigen::Map<const M>;
  const std::int64_t l = p.seqlen, h = p.nheads, dk = p.dk, dv = p.dv, Cq = p.chunk_size, size = dk * dv;
  parallel_for(p.rows() * h, threads, [&](std::int64_t task) {
    const std::int64_t s = task / h, hh = task % h, bi = p.seq_row(s), t0 = p.seq_begin(s), t1 = p.seq_end(s);
    const std::int64_t n_ck = (t1 - t0 + Cq - 1) / Cq;
    std::vector<T> ck(static_cast<std::size_t>(n_ck * size)), states(static_cast<std::size_t>((Cq + 1) * size));
    std::vector<T> S(static_cast<std::size_t>(size), T(0));
    std::vector<T> sa(static_cast<std::size_t>(dv)), go(sa.size()), gv(sa.size());
    std::vector<T> gq(static_cast<std::size_t>(dk)), gk(gq.size()), gw(gq.size()), ga(gq.size()), gb(gq.size());
    M dS = M::Zero(dk, dv);                   // the gradient of S_t
    M vs(dv, 2), kb(dk, 2), gkb(dk, 2), gvs(dv, 2);  // [v sa], [k b], [ḡk ḡb], [ḡv ḡsa]
    std::vector<Token<T>> xs(static_cast<std::size_t>(Cq), Token<T>(p));
    if (p.initial_state) std::copy_n(static_cast<const T*>(p.initial_state) + task * size, size, S.data());
    for (std::int64_t t = t0; t < t1; ++t) {
      if ((t - t0) % Cq == 0) std::copy(S.begin(), S.end(), ck.begin() + (t - t0) / Cq * size);
      xs[0].template load<In>(p, bi, t, hh);
      update(S.data(), xs[0], dk, dv, sa.data(), static_cast<T*>(nullptr));
    }
    if (gr.grad_final_state) std::copy_n(static_cast<const T*>(gr.grad_final_state) + task * size, size, dS.data());
    auto store = [&](void* dst, const std::vector<T>& g, std::int64_t t) {
      store_grad<In>(p, dst, g.data(), static_cast<std::int64_t>(g.size()), bi, t, hh);
    };
    const T scale = static_cast<T>(p.scale);
    for (std::int64_t c = n_ck - 1; c >= 0; --c) {
      const std::int64_t c0 = t0 + c * Cq, len = std::min(Cq, t1 - c0);
      std::copy(ck.begin() + c * size, ck.begin() + (c + 1) * size, states.begin());
      for (std::int64_t r = 0; r < len; ++r) {
        Token<T>& xr = xs[static_cast<std::size_t>(r)];
        xr.template load<In>(p, bi, c0 + r, hh);
        std::copy_n(states.begin() + r * size, size, states.begin() + (r + 1) * size);
        update(states.data() + (r + 1) * size, xr, dk, dv, sa.data(), static_cast<T*>(nullptr));
      }
      for (std::int64_t r = len - 1; r >= 0; --r) {
        const std::int64_t t = c0 + r;
        const Token<T>& x = xs[static_cast<std::size_t>(r)];
        const CMap St(states.data() + (r + 1) * size, dk, dv);
        const CMap Sp(states.data() + r * size, dk, dv);  // S_{t−1}
        load_row(static_cast<const In*>(gr.grad_out) + ((bi * l + t) * h + hh) * dv, dv, go.data());
        const CVec q(x.q.data(), dk), k(x.k.data(), dk), v(x.v.data(), dv), w(x.w.data(), dk), a(x.a.data(), dk);
        const CVec b(x.b.data(), dk), gov(go.data(), dv);
        // sa = S_{t−1}ᵀ a; ḡq = scale S_t ḡo; dS += (scale q) ḡoᵀ (x.q is scale q)
        Vec(sa.data(), dv).noalias() = Sp.transpose() * a;
        Vec(gq.data(), dk).noalias() = scale * (St * gov);
        dS.noalias() += q * gov.transpose();
        // [ḡk ḡb] = dS [v sa]; [ḡv ḡsa] = dSᵀ [k b]; ḡw = w ⊙ rowsum(dS ⊙ S_{t−1}); ḡa = S_{t−1} ḡsa
        vs.col(0) = v, vs.col(1) = Vec(sa.data(), dv);
        kb.col(0) = k, kb.col(1) = b;
        gkb.noalias() = dS * vs;
        gvs.noalias() = dS.transpose() * kb;
        Vec(gw.data(), dk) = w.cwiseProduct((dS.array() * Sp.array()).rowwise().sum().matrix());
        Vec(ga.data(), dk).noalias() = Sp * gvs.col(1);
        // dS ← diag(w) dS + a ḡsaᵀ
        dS = w.asDiagonal() * dS;
        dS.noalias() += a * gvs.col(1).transpose();
        for (std::int64_t i = 0; i < dk; ++i) gk[static_cast<std::size_t>(i)] = gkb(i, 0), gb[static_cast<std::size_t>(i)] = gkb(i, 1);
        for (std::int64_t j = 0; j < dv; ++j) gv[static_cast<std::size_t>(j)] = gvs(j, 0);
        store(gr.grad_q, gq, t), store(gr.grad_k, gk, t), store(gr.grad_v, gv, t);
        store(gr.grad_log_w, gw, t), store(gr.grad_a, ga, t), store(gr.grad_b, gb, t);
      }
    }
    if (gr.grad_initial_state) std::copy_n(dS.data(), size, static_cast<T*>(gr.grad_initial_state) + task * size);
  });
}

}  // namespace rwkv7

/// The chunked forward over p (validated by the op, ops/rwkv7.hpp), on `threads` threads (0: by the work).
inline void rwkv7_forward_chunked(const Rwkv7Params& p, int threads) {
  const int t = cpu_threads(threads, p.batch * p.seqlen * p.nheads * p.dk * p.dv);
  linear_attention::by_dtype(p, "rwkv7", [&](auto tag) { rwkv7::forward_chunked<decltype(tag)>(p, t); });
}

/// The token loop in the compute type over p, on `threads` threads (0: by the work); also the decode step (l = 1, the
/// state read and written in place).
inline void rwkv7_forward_recurrent(const Rwkv7Params& p, int threads) {
  const int t = cpu_threads(threads, p.batch * p.seqlen * p.nheads * p.dk * p.dv);
  linear_attention::by_dtype(p, "rwkv7", [&](auto tag) { rwkv7::forward_recurrent<decltype(tag)>(p, t); });
}

/// The chunked backward over p and g (rwkv7::backward_chunked).
inline void rwkv7_backward_chunked(const Rwkv7Params& p, const Rwkv7GradParams& g, int threads) {
  const int t = cpu_threads(threads, p.batch * p.seqlen * p.nheads * p.dk * p.dv);
  linear_attention::by_dtype(p, "rwkv7_backward", [&](auto tag) { rwkv7::backward_chunked<decltype(tag)>(p, g, t); });
}

/// The backward over p and g: the token loop over states recomputed from per-chunk checkpoints.
inline void rwkv7_backward_recurrent(const Rwkv7Params& p, const Rwkv7GradParams& g, int threads) {
  const int t = cpu_threads(threads, p.batch * p.seqlen * p.nheads * p.dk * p.dv);
  linear_attention::by_dtype(p, "rwkv7_backward", [&](auto tag) { rwkv7::backward_recurrent<decltype(tag)>(p, g, t); });
}

}  // namespace ssm::cpu

/// The kernels' entry points for one input type In, compiled once where SSM_EXTERN_INSTANCES is set
/// (core/instances.hpp, src/instances/).
#define SSM_CPU_RWKV7_INSTANCES(PREFIX, In)                                                                           \
  PREFIX void ssm::cpu::rwkv7::forward_chunked<In>(const ::ssm::Rwkv7Params&, int);                                   \
  PREFIX void ssm::cpu::rwkv7::forward_recurrent<In>(const ::ssm::Rwkv7Params&, int);                                 \
  PREFIX void ssm::cpu::rwkv7::backward_recurrent<In>(const ::ssm::Rwkv7Params&, const ::ssm::Rwkv7GradParams&, int); \
  PREFIX void ssm::cpu::rwkv7::backward_chunked<In>(const ::ssm::Rwkv7Params&, const ::ssm::Rwkv7GradParams&, int);
#if SSM_EXTERN_INSTANCES
SSM_FOR_EACH_INPUT(SSM_CPU_RWKV7_INSTANCES, extern template)
#endif
