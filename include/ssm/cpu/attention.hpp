// CPU kernels of causal scaled-dot-product attention (docs/math.md §7), forward and backward, in two algorithms:
//   materialized: the whole (b, h, l_q, l_k) score tensor exists at once (O(l²) memory, the textbook form);
//   tiled: blocks of queries × keys with an online softmax (FlashAttention, Dao et al. 2022, Alg. 1; the
//          backward recomputes the probabilities from the saved log-sum-exp, FlashAttention-2 Alg. 2), O(l)
//          memory besides the inputs and outputs.
// Block products use Eigen GEMM on strided maps; the work is spread over the CPU pool's threads by (b, h) and query
// block (forward) or by (b, kv head) (backward, so the kv gradients of a head group have a single writer).
#pragma once

// GCC 12 reports false "may be used uninitialized" warnings inside Eigen 3.4's AVX-512 packet code
// (avx512fintrin.h unpack intrinsics) once it is inlined into these kernels; silenced for this header only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <limits>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "ssm/core/eigen.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/threads.hpp"

namespace ssm::cpu {

/// Sizes and tensors of one attention call, after validation. Layout (unit stride along p):
/// q, out, grad_out, grad_q: (b, l_q, h, p); k, v, grad_k, grad_v: (b, l_k, h_kv, p); lse: (b, h, l_q).
/// Causal: query i is at position l_k − l_q + i and sees keys 0 .. l_k − l_q + i.
template <class T>
struct AttentionArgs {
  index_t b = 0, l_q = 0, l_k = 0, h = 0, h_kv = 0, p = 0;
  T scale = 1;
  bool causal = true;
  int n_threads = 1;
  index_t block_q = 64, block_k = 64;
  View<const T, 4> q, k, v;  // (b, l_q, h, p), (b, l_k, h_kv, p) ×2
  View<T, 4> out;            // (b, l_q, h, p)
  View<T, 3> lse;            // (b, h, l_q)
  // backward only
  View<const T, 4> out_in, grad_out;  // (b, l_q, h, p) ×2
  View<const T, 3> lse_in;            // (b, h, l_q)
  View<T, 4> grad_q;                  // (b, l_q, h, p)
  View<T, 4> grad_k, grad_v;          // (b, l_k, h_kv, p)

  index_t offset() const { return causal ? l_k - l_q : 0; }
  /// One past the last key query i sees.
  index_t key_end(index_t i) const { return causal ? std::min(l_k, l_k - l_q + i + 1) : l_k; }
};

namespace detail {

/// Runs fn(task) for task in [0, n_tasks) on up to n_threads threads (ssm::cpu::parallel_for).
template <class Fn>
void attention_parallel_for(index_t n_tasks, int n_threads, Fn&& fn) {
  ::ssm::cpu::parallel_for(n_tasks, n_threads, std::forward<Fn>(fn));
}

template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstRows = Eigen::Map<const RowMat<T>, 0, Eigen::OuterStride<>>;  // rows of a (l, heads, p) slice
template <class T>
using Rows = Eigen::Map<RowMat<T>, 0, Eigen::OuterStride<>>;

/// Rows [i0, i0 + r) of head `head` of batch bi of a (b, l, heads, p) view, as an (r, p) matrix.
template <class T>
ConstRows<T> rows_of(const View<const T, 4>& x, index_t bi, index_t i0, index_t head, index_t r) {
  return ConstRows<T>(x.ptr(bi, i0, head), r, x.shape[3], Eigen::OuterStride<>(x.strides[1]));
}
template <class T>
Rows<T> rows_of(const View<T, 4>& x, index_t bi, index_t i0, index_t head, index_t r) {
  return Rows<T>(x.ptr(bi, i0, head), r, x.shape[3], Eigen::OuterStride<>(x.strides[1]));
}

/// Sets the scores of keys a query may not see (j > l_k − l_q + i) to −inf in an (r, c) block whose
/// top-left entry is query i0, key j0.
template <class T, class Block>
void mask_causal(const AttentionArgs<T>& a, Block&& S, index_t i0, index_t j0) {
  if (!a.causal) return;
  for (index_t r = 0; r < S.rows(); ++r) {
    const index_t first_hidden = a.key_end(i0 + r) - j0;  // local column of the first hidden key
    for (index_t c = std::max<index_t>(first_hidden, 0); c < S.cols(); ++c)
      S(r, c) = -std::numeric_limits<T>::infinity();
  }
}

}  // namespace detail

/// Tiled forward: per (b, h, query block) an online softmax over key blocks (FlashAttention Alg. 1).
/// Writes out and lse. Working memory per thread: block_q × (block_k + p).
template <class T>
void attention_forward_tiled(const AttentionArgs<T>& a) {
  using namespace detail;
  const index_t n_qblocks = (a.l_q + a.block_q - 1) / a.block_q;
  const index_t group = a.h / a.h_kv;
  // Later query blocks see more keys: hand them out first so the threads finish together.
  attention_parallel_for(a.b * a.h * n_qblocks, a.n_threads, [&](index_t task) {
    const index_t qb = n_qblocks - 1 - task % n_qblocks;
    const index_t hi = (task / n_qblocks) % a.h;
    const index_t bi = task / (n_qblocks * a.h);
    const index_t hk = hi / group;
    const index_t i0 = qb * a.block_q;
    const index_t r = std::min(a.block_q, a.l_q - i0);
    const index_t k_end = a.key_end(i0 + r - 1);
    const auto Q = rows_of(a.q, bi, i0, hi, r);  // (r, p)
    RowMat<T> S(r, a.block_k);                    // (r, block_k) scores, then probabilities
    RowMat<T> acc = RowMat<T>::Zero(r, a.p);      // (r, p) unnormalized output
    std::vector<T> m(static_cast<std::size_t>(r), -std::numeric_limits<T>::infinity());  // (r) running max
    std::vector<T> sum(static_cast<std::size_t>(r), T(0));                               // (r) running Σ exp
    for (index_t j0 = 0; j0 < k_end; j0 += a.block_k) {
      const index_t c = std::min(a.block_k, k_end - j0);
      auto Sb = S.leftCols(c);
      Sb.noalias() = Q * rows_of(a.k, bi, j0, hk, c).transpose();
      Sb *= a.scale;
      if (a.causal && j0 + c > a.key_end(i0)) mask_causal(a, Sb, i0, j0);
      for (index_t row = 0; row < r; ++row) {
        const auto ur = static_cast<std::size_t>(row);
        // Every row sees key 0, so after the first block m is finite and exp(−inf − m) = 0.
        const T m_new = std::max(m[ur], Sb.row(row).maxCoeff());
        const T correction = std::exp(m[ur] - m_new);
        Sb.row(row) = (Sb.row(row).array() - m_new).exp().matrix();
        sum[ur] = sum[ur] * correction + Sb.row(row).sum();
        acc.row(row) *= correction;
        m[ur] = m_new;
      }
      acc.noalias() += Sb * rows_of(a.v, bi, j0, hk, c);
    }
    auto O = rows_of(a.out, bi, i0, hi, r);  // (r, p)
    for (index_t row = 0; row < r; ++row) {
      const auto ur = static_cast<std::size_t>(row);
      O.row(row) = acc.row(row) / sum[ur];
      a.lse(bi, hi, i0 + row) = m[ur] + std::log(sum[ur]);
    }
  });
}

/// Materialized forward: per (b, h) the full (l_q, l_k) score matrix S = scale q kᵀ (masked), its row
/// softmax P in place, then out = P v. `scores` is the (b, h, l_q, l_k) workspace, all of it live at once.
template <class T>
void attention_forward_materialized(const AttentionArgs<T>& a, T* scores) {
  using namespace detail;
  const index_t group = a.h / a.h_kv;
  attention_parallel_for(a.b * a.h, a.n_threads, [&](index_t task) {
    const index_t hi = task % a.h, bi = task / a.h, hk = hi / group;
    Eigen::Map<RowMat<T>> P(scores + task * a.l_q * a.l_k, a.l_q, a.l_k);  // (l_q, l_k)
    P.noalias() = rows_of(a.q, bi, 0, hi, a.l_q) * rows_of(a.k, bi, 0, hk, a.l_k).transpose();
    P *= a.scale;
    mask_causal(a, P, 0, 0);
    for (index_t i = 0; i < a.l_q; ++i) {
      const T m = P.row(i).maxCoeff();
      P.row(i) = (P.row(i).array() - m).exp().matrix();
      const T s = P.row(i).sum();
      P.row(i) /= s;
      a.lse(bi, hi, i) = m + std::log(s);
    }
    rows_of(a.out, bi, 0, hi, a.l_q).noalias() = P * rows_of(a.v, bi, 0, hk, a.l_k);
  });
}

namespace detail {
/// rowsum(grad_out ⊙ out) for rows [0, l_q) of head hi: the Σ_j P_ij dP_ij term of the softmax backward.
template <class T>
std::vector<T> softmax_backward_rowsum(const AttentionArgs<T>& a, index_t bi, index_t hi) {
  std::vector<T> delta(static_cast<std::size_t>(a.l_q));  // (l_q)
  const auto dO = rows_of(a.grad_out, bi, 0, hi, a.l_q);
  const auto O = rows_of(a.out_in, bi, 0, hi, a.l_q);
  for (index_t i = 0; i < a.l_q; ++i) delta[static_cast<std::size_t>(i)] = dO.row(i).dot(O.row(i));
  return delta;
}

/// The probabilities of an (r, c) block, P = exp(S − lse_i) with hidden keys set to 0, from its scores.
template <class T, class Block>
void probabilities_from_lse(const AttentionArgs<T>& a, Block&& S, index_t bi, index_t hi, index_t i0, index_t j0) {
  mask_causal(a, S, i0, j0);
  for (index_t row = 0; row < S.rows(); ++row)
    S.row(row) = (S.row(row).array() - a.lse_in(bi, hi, i0 + row)).exp().matrix();
}
}  // namespace detail

/// Tiled backward (FlashAttention-2 Alg. 2): per (b, kv head), for each head of its group, key blocks
/// outer and query blocks inner; P is recomputed block by block from the saved lse, so memory stays O(l).
template <class T>
void attention_backward_tiled(const AttentionArgs<T>& a) {
  using namespace detail;
  const index_t group = a.h / a.h_kv;
  attention_parallel_for(a.b * a.h_kv, a.n_threads, [&](index_t task) {
    const index_t hk = task % a.h_kv, bi = task / a.h_kv;
    rows_of(a.grad_k, bi, 0, hk, a.l_k).setZero();
    rows_of(a.grad_v, bi, 0, hk, a.l_k).setZero();
    RowMat<T> P(a.block_q, a.block_k), dP(a.block_q, a.block_k);  // (block_q, block_k)
    for (index_t hi = hk * group; hi < (hk + 1) * group; ++hi) {
      const std::vector<T> delta = softmax_backward_rowsum(a, bi, hi);  // (l_q)
      rows_of(a.grad_q, bi, 0, hi, a.l_q).setZero();
      for (index_t j0 = 0; j0 < a.l_k; j0 += a.block_k) {
        const index_t c = std::min(a.block_k, a.l_k - j0);
        const auto K = rows_of(a.k, bi, j0, hk, c);  // (c, p)
        const auto V = rows_of(a.v, bi, j0, hk, c);  // (c, p)
        auto grad_K = rows_of(a.grad_k, bi, j0, hk, c);
        auto grad_V = rows_of(a.grad_v, bi, j0, hk, c);
        // The first query that sees key j0 is i = j0 − (l_k − l_q); earlier query blocks are skipped.
        const index_t i_first = a.causal ? std::max<index_t>(0, j0 - a.offset()) : 0;
        for (index_t i0 = i_first / a.block_q * a.block_q; i0 < a.l_q; i0 += a.block_q) {
          const index_t r = std::min(a.block_q, a.l_q - i0);
          const auto Q = rows_of(a.q, bi, i0, hi, r);          // (r, p)
          const auto dO = rows_of(a.grad_out, bi, i0, hi, r);  // (r, p)
          auto Pb = P.topLeftCorner(r, c);
          auto dPb = dP.topLeftCorner(r, c);
          Pb.noalias() = Q * K.transpose();
          Pb *= a.scale;
          probabilities_from_lse(a, Pb, bi, hi, i0, j0);
          grad_V.noalias() += Pb.transpose() * dO;
          dPb.noalias() = dO * V.transpose();
          for (index_t row = 0; row < r; ++row)  // grad_S = P ⊙ (dP − delta), into dP
            dPb.row(row) = Pb.row(row).cwiseProduct(
                (dPb.row(row).array() - delta[static_cast<std::size_t>(i0 + row)]).matrix());
          dPb *= a.scale;
          rows_of(a.grad_q, bi, i0, hi, r).noalias() += dPb * K;
          grad_K.noalias() += dPb.transpose() * Q;
        }
      }
    }
  });
}

/// Materialized backward: per (b, kv head) and head of its group, the full (l_q, l_k) P (from the saved
/// lse) and grad_S matrices, then four GEMMs. Working memory per thread: 2 l_q l_k.
template <class T>
void attention_backward_materialized(const AttentionArgs<T>& a) {
  using namespace detail;
  const index_t group = a.h / a.h_kv;
  attention_parallel_for(a.b * a.h_kv, a.n_threads, [&](index_t task) {
    const index_t hk = task % a.h_kv, bi = task / a.h_kv;
    const auto K = rows_of(a.k, bi, 0, hk, a.l_k);  // (l_k, p)
    const auto V = rows_of(a.v, bi, 0, hk, a.l_k);  // (l_k, p)
    auto grad_K = rows_of(a.grad_k, bi, 0, hk, a.l_k);
    auto grad_V = rows_of(a.grad_v, bi, 0, hk, a.l_k);
    grad_K.setZero();
    grad_V.setZero();
    RowMat<T> P(a.l_q, a.l_k), grad_S(a.l_q, a.l_k);  // (l_q, l_k) ×2
    for (index_t hi = hk * group; hi < (hk + 1) * group; ++hi) {
      const std::vector<T> delta = softmax_backward_rowsum(a, bi, hi);  // (l_q)
      const auto Q = rows_of(a.q, bi, 0, hi, a.l_q);                   // (l_q, p)
      const auto dO = rows_of(a.grad_out, bi, 0, hi, a.l_q);           // (l_q, p)
      P.noalias() = Q * K.transpose();
      P *= a.scale;
      probabilities_from_lse(a, P, bi, hi, 0, 0);
      grad_V.noalias() += P.transpose() * dO;
      grad_S.noalias() = dO * V.transpose();
      for (index_t i = 0; i < a.l_q; ++i)
        grad_S.row(i) =
            P.row(i).cwiseProduct((grad_S.row(i).array() - delta[static_cast<std::size_t>(i)]).matrix());
      grad_S *= a.scale;
      rows_of(a.grad_q, bi, 0, hi, a.l_q).noalias() = grad_S * K;
      grad_K.noalias() += grad_S.transpose() * Q;
    }
  });
}

}  // namespace ssm::cpu

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

/// The four entry points for one compute type T, compiled once where SSM_EXTERN_INSTANCES is set
/// (core/instances.hpp, src/instances/).
#define SSM_CPU_ATTENTION_INSTANCES(PREFIX, T)                                                      \
  PREFIX void ssm::cpu::attention_forward_tiled<T>(const ::ssm::cpu::AttentionArgs<T>&);            \
  PREFIX void ssm::cpu::attention_forward_materialized<T>(const ::ssm::cpu::AttentionArgs<T>&, T*); \
  PREFIX void ssm::cpu::attention_backward_tiled<T>(const ::ssm::cpu::AttentionArgs<T>&);           \
  PREFIX void ssm::cpu::attention_backward_materialized<T>(const ::ssm::cpu::AttentionArgs<T>&);
#if SSM_EXTERN_INSTANCES
SSM_FOR_EACH_COMPUTE(SSM_CPU_ATTENTION_INSTANCES, extern template)
#endif
