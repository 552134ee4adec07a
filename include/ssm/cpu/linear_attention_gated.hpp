// The chunked form of gated linear attention, GLA (Yang et al. 2024; docs/linear_attention.md): linear attention
// whose state decays per key channel, S_t = diag(α_t) S_{t−1} + k̃_t v_tᵀ with α_t = γ exp(g_t) (dk). The SSD engine
// carries one scalar decay per head and step; this carries a vector, so it has its own chunk algebra (the same
// stages: chunk-local scores, the state entering a chunk, the state it leaves).
//
// Within a chunk, with b_t = Σ_{u<=t} log α_u (per channel, in double, from the chunk's start), step s reaches step
// t >= s with weight exp(b_t − b_s) per channel, so
//   A_ts = Σ_i q̃_ti k̃_si exp(b_ti − b_si)   (s <= t),          Y = A V + (Q̃ ⊙ exp(b)) Hᵀ,
//   H ← H diag(exp(b_last)) + Vᵀ (K̃ ⊙ exp(b_last − b)),
// H = Sᵀ (dv1, dk) the engine's state layout (cpu/linear_attention.hpp: v with the normalizer's column of ones).
// The scores are a matrix product once exp(b_t − b_s) is split at a reference step r between s and t:
// (q̃_t exp(b_t − b_r)) · (k̃_s exp(b_r − b_s)). With r before the block both factors are finite while the block's
// decay span max_i (b_r − b_last) is small (factor_limit); otherwise the block is halved: each half recursively,
// and the rectangle of later rows × earlier columns with r at the split, where both factors are <= 1. A block of
// direct_block steps or fewer whose span is still too large takes each exponent directly. No positive exponent
// beyond the span limit is ever taken.
//
// Threads run over (sequence, head) in the forward, each walking its chunks in order with its state; over
// (sequence, group) in the backward, whose q̃, k̃ gradients sum over the group's heads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "ssm/core/params/linear_attention.hpp"
#include "ssm/cpu/convert.hpp"
#include "ssm/cpu/ssd/chunks.hpp"
#include "ssm/cpu/threads.hpp"

namespace ssm::cpu::linear_attention_gated {

using ssd::Matrix;
using Cumulative = Eigen::Array<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// The largest decay span (in nats) a block's scores are formed over with one product: the factor exp(b_r − b_s)
/// stays below e^16 ≈ 9e6 in f32 (e^60 in f64), far from overflow, and its rounding is relative.
template <class T>
constexpr double factor_limit = std::is_same_v<T, double> ? 60.0 : 16.0;
/// Blocks of at most this many steps with a larger span take one exponent per (t, s, channel).
constexpr std::int64_t direct_block = 8;

/// bb (len + 1, dk): row 0 zero, row t + 1 = b_t = Σ_{u<=t} (log γ + g_u) over the chunk's steps [t0, t0 + len).
template <class In, class T>
void cumulative_log_decay(const LinearAttentionParams& p, std::int64_t bi, std::int64_t t0, std::int64_t len,
                          std::int64_t head, Cumulative& bb, std::vector<T>& row) {
  const std::int64_t dk = p.dk;
  const double lg = p.log_gamma ? p.log_gamma[head] : 0.0;
  bb.resize(len + 1, dk);
  bb.row(0).setZero();
  row.resize(static_cast<std::size_t>(dk));
  for (std::int64_t t = 0; t < len; ++t) {
    load_row(static_cast<const In*>(p.log_gate) + bi * p.gate_batch_stride + (t0 + t) * p.gate_seq_stride +
                 head * p.gate_head_stride,
             dk, row.data());
    for (std::int64_t i = 0; i < dk; ++i) bb(t + 1, i) = bb(t, i) + (static_cast<double>(row[i]) + lg);
  }
}

/// E (n, dk) = exp(sign (bb row r0 + t − bb row ref)) for t < n, the difference in double, the exponent in T. (The
/// exponent runs on the converted array: on a double-to-float cast expression Eigen took libm's scalar expf, a fifth
/// of the gated forward's time.)
template <class T>
void exp_diff(const Cumulative& bb, std::int64_t r0, std::int64_t n, std::int64_t ref, double sign, Matrix<T>& E) {
  E.resize(n, bb.cols());
  for (std::int64_t t = 0; t < n; ++t) E.row(t).array() = (sign * (bb.row(r0 + t) - bb.row(ref))).template cast<T>();
  E.array() = E.array().exp();
}

/// e (dk) = exp(bb row t − bb row s) in T, the same way.
template <class T>
void exp_pair(const Cumulative& bb, std::int64_t t, std::int64_t s, Eigen::Array<T, 1, Eigen::Dynamic>& e) {
  e = (bb.row(t) - bb.row(s)).template cast<T>();
  e = e.exp();
}

/// The workspaces of the scores and their backward.
template <class T>
struct Work {
  Matrix<T> Eq, Ek, Qw, Kw;
};

/// The factors of the block rows [r0, r0 + nr) × columns [c0, c0 + nc) split at bb row `ref`:
/// Eq = exp(b_t − b_ref), Qw = Q ⊙ Eq over the rows; Ek = exp(b_ref − b_s), Kw = K ⊙ Ek over the columns.
template <class T>
void factors(const Matrix<T>& Q, const Matrix<T>& K, const Cumulative& bb, std::int64_t r0, std::int64_t nr,
             std::int64_t c0, std::int64_t nc, std::int64_t ref, Work<T>& w) {
  exp_diff(bb, r0 + 1, nr, ref, 1.0, w.Eq);
  exp_diff(bb, c0 + 1, nc, ref, -1.0, w.Ek);
  w.Qw = Q.middleRows(r0, nr).cwiseProduct(w.Eq);
  w.Kw = K.middleRows(c0, nc).cwiseProduct(w.Ek);
}

/// A_ts = Σ_i Q_ti K_si exp(b_ti − b_si) for lo <= s <= t < hi (Q, K (len, dk), bb (len + 1, dk), A (len, len)).
/// Entries above the diagonal are left as they fall (finite); readers take the lower triangle.
template <class T>
void scores(const Matrix<T>& Q, const Matrix<T>& K, const Cumulative& bb, std::int64_t lo, std::int64_t hi,
            Matrix<T>& A, Work<T>& w) {
  const std::int64_t n = hi - lo;
  if ((bb.row(lo) - bb.row(hi)).maxCoeff() <= factor_limit<T>) {  // one product, split before the block
    factors(Q, K, bb, lo, n, lo, n, lo, w);
    A.block(lo, lo, n, n).noalias() = w.Qw * w.Kw.transpose();
    return;
  }
  if (n <= direct_block) {
    Eigen::Array<T, 1, Eigen::Dynamic> e;
    for (std::int64_t t = lo; t < hi; ++t)
      for (std::int64_t s = lo; s <= t; ++s) {
        exp_pair(bb, t + 1, s + 1, e);
        A(t, s) = (Q.row(t).array() * K.row(s).array() * e).sum();
      }
    return;
  }
  const std::int64_t m = lo + n / 2;
  scores(Q, K, bb, lo, m, A, w);
  scores(Q, K, bb, m, hi, A, w);
  factors(Q, K, bb, m, hi - m, lo, m - lo, m, w);  // split at step m − 1: both factors <= 1
  A.block(m, lo, hi - m, m - lo).noalias() = w.Qw * w.Kw.transpose();
}

/// The backward of scores: dQ_t += Σ_s dA_ts K_s ⊙ exp(b_t − b_s), dK_s += Σ_t dA_ts Q_t ⊙ exp(b_t − b_s) over
/// lo <= s <= t < hi, with dA zero above the diagonal.
template <class T>
void scores_backward(const Matrix<T>& Q, const Matrix<T>& K, const Cumulative& bb, const Matrix<T>& dA,
                     std::int64_t lo, std::int64_t hi, Matrix<T>& dQ, Matrix<T>& dK, Work<T>& w) {
  const std::int64_t n = hi - lo;
  if ((bb.row(lo) - bb.row(hi)).maxCoeff() <= factor_limit<T>) {
    factors(Q, K, bb, lo, n, lo, n, lo, w);
    const auto D = dA.block(lo, lo, n, n);
    dQ.middleRows(lo, n).array() += (D * w.Kw).array() * w.Eq.array();
    dK.middleRows(lo, n).array() += (D.transpose() * w.Qw).array() * w.Ek.array();
    return;
  }
  if (n <= direct_block) {
    Eigen::Array<T, 1, Eigen::Dynamic> e;
    for (std::int64_t t = lo; t < hi; ++t)
      for (std::int64_t s = lo; s <= t; ++s) {
        exp_pair(bb, t + 1, s + 1, e);
        dQ.row(t).array() += dA(t, s) * K.row(s).array() * e;
        dK.row(s).array() += dA(t, s) * Q.row(t).array() * e;
      }
    return;
  }
  const std::int64_t m = lo + n / 2;
  scores_backward(Q, K, bb, dA, lo, m, dQ, dK, w);
  scores_backward(Q, K, bb, dA, m, hi, dQ, dK, w);
  factors(Q, K, bb, m, hi - m, lo, m - lo, m, w);
  const auto R = dA.block(m, lo, hi - m, m - lo);
  dQ.middleRows(m, hi - m).array() += (R * w.Kw).array() * w.Eq.array();
  dK.middleRows(lo, m - lo).array() += (R.transpose() * w.Qw).array() * w.Ek.array();
}

/// One chunk's rows of a packed (b, l, x, width) buffer for slot `at`: len rows `x · width` apart.
template <class T>
Eigen::Map<const Matrix<T>, 0, Eigen::OuterStride<>> rows(const T* base, std::int64_t first, std::int64_t len,
                                                           std::int64_t slots, std::int64_t at, std::int64_t width) {
  return {base + (first * slots + at) * width, len, width, Eigen::OuterStride<>(slots * width)};
}
template <class T>
Eigen::Map<Matrix<T>, 0, Eigen::OuterStride<>> rows(T* base, std::int64_t first, std::int64_t len, std::int64_t slots,
                                                     std::int64_t at, std::int64_t width) {
  return {base + (first * slots + at) * width, len, width, Eigen::OuterStride<>(slots * width)};
}

/// What one chunk of one head reads: Q̃, K̃ (len, dk), V (len, dv1), the cumulative log decays, exp(b) and
/// exp(b_last − b) (len, dk) and exp(b_last) (dk).
template <class T>
struct ChunkData {
  Matrix<T> Q, K, V, Eb, Elast;
  Cumulative bb;
  Eigen::Array<T, 1, Eigen::Dynamic> a_last;
  std::vector<T> row;
};

template <class In, class T>
void load_chunk(const LinearAttentionParams& p, const T* q, const T* k, const T* v, std::int64_t dv1, std::int64_t bi,
                std::int64_t t0, std::int64_t len, std::int64_t head, ChunkData<T>& c) {
  const std::int64_t first = bi * p.seqlen + t0, gi = head / (p.nheads / p.ngroups);
  c.Q = rows(q, first, len, p.ngroups, gi, p.dk);
  c.K = rows(k, first, len, p.ngroups, gi, p.dk);
  c.V = rows(v, first, len, p.nheads, head, dv1);
  cumulative_log_decay<In, T>(p, bi, t0, len, head, c.bb, c.row);
  exp_diff(c.bb, 1, len, 0, 1.0, c.Eb);       // exp(b_t)
  exp_diff(c.bb, 1, len, len, -1.0, c.Elast);  // exp(b_last − b_t)
  c.a_last = c.bb.row(len).template cast<T>();
  c.a_last = c.a_last.exp();
}

/// H (dv1, dk) ← H diag(exp(b_last)) + Vᵀ (K̃ ⊙ exp(b_last − b)): the state a chunk leaves.
template <class T>
void pass_state(const ChunkData<T>& c, Matrix<T>& Ke, Matrix<T>& H) {
  Ke = c.K.cwiseProduct(c.Elast);
  H.array().rowwise() *= c.a_last;
  H.noalias() += c.V.transpose() * Ke;
}

/// The forward over packed inputs (cpu/linear_attention.hpp's layout, compute type T): q̃, k̃ (b, l, g, dk),
/// v (b, l, h, dv1); H0 (rows, h, dv1, dk) or null; writes Y (b, l, h, dv1) and, when not null, HT (rows, h, dv1, dk).
template <class In, class T>
void forward(const LinearAttentionParams& p, const T* q, const T* k, const T* v, std::int64_t dv1, const T* H0, T* HT,
             T* Y, int threads) {
  const std::int64_t h = p.nheads, dk = p.dk, size = dv1 * dk;
  parallel_for(p.rows() * h, threads, [&](std::int64_t task) {
    const std::int64_t s = task / h, head = task % h, bi = p.seq_row(s);
    Matrix<T> H = Matrix<T>::Zero(dv1, dk);
    if (H0) H = Eigen::Map<const Matrix<T>>(H0 + task * size, dv1, dk);
    ChunkData<T> c;
    Work<T> w;
    Matrix<T> A, Yc, Ke;
    for (std::int64_t t0 = p.seq_begin(s); t0 < p.seq_end(s); t0 += p.chunk_size) {
      const std::int64_t len = std::min(p.chunk_size, p.seq_end(s) - t0);
      load_chunk<In, T>(p, q, k, v, dv1, bi, t0, len, head, c);
      Yc.noalias() = c.Q.cwiseProduct(c.Eb) * H.transpose();  // what the entering state gives
      A.resize(len, len);
      scores(c.Q, c.K, c.bb, 0, len, A, w);
      Yc.noalias() += A.template triangularView<Eigen::Lower>() * c.V;
      rows(Y, bi * p.seqlen + t0, len, h, head, dv1) = Yc;
      pass_state(c, Ke, H);
    }
    if (HT) Eigen::Map<Matrix<T>>(HT + task * size, dv1, dk) = H;
  });
}

/// The backward. GY (b, l, h, dv1) the gradient of Y; GHT (rows, h, dv1, dk) of the final state, or null. Writes
/// GQ, GK (b, l, g, dk) (each a group's heads summed), GV (b, l, h, dv1), GH0 (rows, h, dv1, dk) when not null, and
/// p's gate gradient grad_log_gate (b, l, h, dk, contiguous, input dtype) when not null:
///   ḡg_t = Σ_{u>=t} (q̃_u ⊙ ḡq̃_u − k̃_u ⊙ ḡk̃_u) + Σ_j ḡH_T,j ⊙ H_T,j
/// (b_t enters exp(b_t) of q̃_t's reads and exp(−b_t) of k̃_t's writes, and exp(b_T) of the final state).
template <class In, class T>
void backward(const LinearAttentionParams& p, const T* q, const T* k, const T* v, std::int64_t dv1, const T* H0,
              const T* GY, const T* GHT, T* GQ, T* GK, T* GV, T* GH0, void* grad_log_gate, int threads) {
  const std::int64_t h = p.nheads, ng = p.ngroups, hpg = h / ng, dk = p.dk, l = p.seqlen, size = dv1 * dk;
  parallel_for(p.rows() * ng, threads, [&](std::int64_t task) {
    const std::int64_t s = task / ng, gi = task % ng, bi = p.seq_row(s);
    const std::int64_t begin = p.seq_begin(s), end = p.seq_end(s), C = p.chunk_size;
    const std::int64_t n_chunks = (end - begin + C - 1) / C;
    rows(GQ, bi * l + begin, end - begin, ng, gi, dk).setZero();
    rows(GK, bi * l + begin, end - begin, ng, gi, dk).setZero();
    ChunkData<T> c;
    Work<T> w;
    Matrix<T> A, dA, dQ, dK, dV, dY, Ke, dH_in;
    std::vector<T> entering(static_cast<std::size_t>(std::max<std::int64_t>(n_chunks, 1) * size));
    std::vector<double> acc(static_cast<std::size_t>(dk));
    std::vector<T> grow(static_cast<std::size_t>(dk));
    for (std::int64_t head = gi * hpg; head < (gi + 1) * hpg; ++head) {
      const std::int64_t st = s * h + head;
      // forward again: the state entering each chunk, and the final state
      Matrix<T> H = Matrix<T>::Zero(dv1, dk);
      if (H0) H = Eigen::Map<const Matrix<T>>(H0 + st * size, dv1, dk);
      for (std::int64_t ci = 0; ci < n_chunks; ++ci) {
        const std::int64_t t0 = begin + ci * C, len = std::min(C, end - t0);
        Eigen::Map<Matrix<T>>(entering.data() + ci * size, dv1, dk) = H;
        load_chunk<In, T>(p, q, k, v, dv1, bi, t0, len, head, c);
        pass_state(c, Ke, H);
      }
      Matrix<T> dH = Matrix<T>::Zero(dv1, dk);
      if (GHT) dH = Eigen::Map<const Matrix<T>>(GHT + st * size, dv1, dk);
      for (std::int64_t i = 0; i < dk; ++i) acc[static_cast<std::size_t>(i)] = 0;
      if (GHT)
        for (std::int64_t j = 0; j < dv1; ++j)
          for (std::int64_t i = 0; i < dk; ++i)
            acc[static_cast<std::size_t>(i)] += static_cast<double>(dH(j, i)) * static_cast<double>(H(j, i));
      for (std::int64_t ci = n_chunks - 1; ci >= 0; --ci) {
        const std::int64_t t0 = begin + ci * C, len = std::min(C, end - t0), first = bi * l + t0;
        load_chunk<In, T>(p, q, k, v, dv1, bi, t0, len, head, c);
        const Eigen::Map<const Matrix<T>> Hc(entering.data() + ci * size, dv1, dk);
        dY = rows(GY, first, len, h, head, dv1);
        A.resize(len, len);
        scores(c.Q, c.K, c.bb, 0, len, A, w);
        Ke = c.K.cwiseProduct(c.Elast);
        dV.noalias() = A.template triangularView<Eigen::Lower>().transpose() * dY;
        dV.noalias() += Ke * dH.transpose();
        dA.noalias() = dY * c.V.transpose();
        dA.template triangularView<Eigen::StrictlyUpper>().setZero();
        dQ.noalias() = dY * Hc;
        dQ.array() *= c.Eb.array();
        dK.noalias() = c.V * dH;
        dK.array() *= c.Elast.array();
        scores_backward(c.Q, c.K, c.bb, dA, 0, len, dQ, dK, w);
        dH_in.noalias() = dY.transpose() * c.Q.cwiseProduct(c.Eb);
        dH.array().rowwise() *= c.a_last;
        dH += dH_in;
        if (grad_log_gate) {
          for (std::int64_t t = len - 1; t >= 0; --t) {
            for (std::int64_t i = 0; i < dk; ++i) {
              double& a = acc[static_cast<std::size_t>(i)];
              a += static_cast<double>(c.Q(t, i)) * static_cast<double>(dQ(t, i)) -
                   static_cast<double>(c.K(t, i)) * static_cast<double>(dK(t, i));
              grow[static_cast<std::size_t>(i)] = static_cast<T>(a);
            }
            store_row(grow.data(), dk, static_cast<In*>(grad_log_gate) + ((first + t) * h + head) * dk);
          }
        }
        rows(GV, first, len, h, head, dv1) = dV;
        rows(GQ, first, len, ng, gi, dk) += dQ;
        rows(GK, first, len, ng, gi, dk) += dK;
      }
      if (GH0) Eigen::Map<Matrix<T>>(GH0 + st * size, dv1, dk) = dH;
    }
  });
}

}  // namespace ssm::cpu::linear_attention_gated
