// TTT-Linear on the CPU (docs/ttt_linear.md; the formulas in core/params/ttt_linear.hpp): the dual form, one mini-batch
// at a time with matrix products, and the token loop in the compute type (the decode step is its one-step case).
// Threads split over (sequence, head).
//
// Dual form. In a mini-batch of n tokens at positions i_0 .. i_0 + n − 1 entering with the weights Ŵ′ (d + 1, d) and
// the pending sum A_0 (zero unless the call starts inside a mini-batch), with K̂ = [K 1], Q̂ = [Q 1] (n, d + 1):
//   Z = K̂ Ŵ′ (n, d);   G = the rows' inner-loss gradients at Z;   E = diag(η) G;
//   Ẑ = Q̂ Ŵ′ − diag(τ_i) (Q̂ A_0 + tril(Q̂ K̂ᵀ) E);   O = Q + LN(Ẑ);
// row t of Ẑ is q̂_tᵀ Ŵ_t without any Ŵ_t formed: q̂_tᵀ (Ŵ′ − τ_i A_t) with A_t = A_0 + Σ_{s<=t} η_s k̂_s G_sᵀ, and
// q̂_tᵀ k̂_s = (Q̂ K̂ᵀ)_ts. The mini-batch then leaves A = A_0 + K̂ᵀ E, and when it reaches position m − 1 it ends:
// Ŵ′ ← Ŵ′ − τ_{m−1} A, A ← 0. Every product is one of mini-batch size; the mini-batches of a sequence run in order
// (each one's gradients are taken at the weights the one before left).
//
// Token loop. Per token: z = k̂ᵀ Ŵ′, G, A += η k̂ Gᵀ, ẑ = q̂ᵀ Ŵ′ − τ_i q̂ᵀ A (two products with the state rather than
// Ŵ_t formed), o = q + LN(ẑ); the inner loops run along d (unit stride).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "ssm/core/instances.hpp"
#include "ssm/core/params/ttt_linear.hpp"
#include "ssm/cpu/convert.hpp"
#include "ssm/cpu/layer_norm.hpp"
#include "ssm/cpu/linear_attention.hpp"
#include "ssm/cpu/ssd/chunks.hpp"
#include "ssm/cpu/threads.hpp"

namespace ssm::cpu {

namespace ttt_linear {

/// G = ∇_z ½‖LN(z) − (v − k)‖² (d) into G: with e = LN(z) − (v − k) and g = γ ⊙ e, G = (g − mean(g) − ẑ mean(g ⊙ ẑ))
/// / σ. Leaves ẑ in zhat and e in e (what the backward needs) and returns 1 / σ.
template <class T>
T inner_gradient(const T* z, const T* k, const T* v, const T* gamma, const T* beta, std::int64_t d, T eps, T* zhat,
                 T* e, T* G) {
  const T inv_sigma = layer_norm_row(z, gamma, beta, d, eps, zhat, e);
  for (std::int64_t j = 0; j < d; ++j) e[j] -= v[j] - k[j], G[j] = gamma[j] * e[j];  // g, first
  const T mg = reduce::sum(G, d) / static_cast<T>(d), mgz = reduce::dot(G, zhat, d) / static_cast<T>(d);
  for (std::int64_t j = 0; j < d; ++j) G[j] = (G[j] - mg - zhat[j] * mgz) * inv_sigma;
  return inv_sigma;
}

/// z (d) = x̂ᵀ Ŵ − c x̂ᵀ A for Ŵ, A (d + 1, d) row-major, x̂ = [x; 1] (c = 0: A not read).
template <class T>
void apply(const T* W, const T* A, T c, const T* x, std::int64_t d, T* z) {
  std::copy_n(W + d * d, d, z);
  if (c != T(0))
    for (std::int64_t j = 0; j < d; ++j) z[j] -= c * A[d * d + j];
  for (std::int64_t i = 0; i < d; ++i) {
    const T xi = x[i], cxi = c * x[i];
    const T* w = W + i * d;
    for (std::int64_t j = 0; j < d; ++j) z[j] += xi * w[j];
    if (c != T(0)) {
      const T* a = A + i * d;
      for (std::int64_t j = 0; j < d; ++j) z[j] -= cxi * a[j];
    }
  }
}

/// τ (m) in the compute type (every τ_i = 1 without position weights).
template <class T>
std::vector<T> position_weights(const TttLinearParams& p) {
  std::vector<T> tau(static_cast<std::size_t>(p.mini_batch), T(1));
  if (p.position_weights) std::copy_n(static_cast<const T*>(p.position_weights), p.mini_batch, tau.data());
  return tau;
}

/// The entering state of task (sequence, head): Ŵ′ and A (zero when absent), copied so that the final state may be
/// the same buffer as the initial one (the decode step).
template <class T>
void load_state(const TttLinearParams& p, std::int64_t task, T* W, T* A) {
  const std::int64_t size = p.state_size();
  if (p.initial_state) std::copy_n(static_cast<const T*>(p.initial_state) + task * size, size, W);
  else std::fill_n(W, size, T(0));
  if (p.initial_pending) std::copy_n(static_cast<const T*>(p.initial_pending) + task * size, size, A);
  else std::fill_n(A, size, T(0));
}

template <class T>
void store_state(const TttLinearParams& p, std::int64_t task, const T* W, const T* A) {
  const std::int64_t size = p.state_size();
  if (p.final_state) std::copy_n(W, size, static_cast<T*>(p.final_state) + task * size);
  if (p.final_pending) std::copy_n(A, size, static_cast<T*>(p.final_pending) + task * size);
}

/// Rows t0 .. t0 + n − 1 of sequence row bi, head hh, in the compute type: Q̂, K̂ (n, d + 1) with the bias column 1, V
/// (n, d), η (n); the matrices are resized. The dual forward and the backward (cpu/ttt_linear_backward.hpp) read a
/// mini-batch through this.
template <class In, class Mat, class T>
void load_minibatch(const TttLinearParams& p, std::int64_t bi, std::int64_t hh, std::int64_t t0, std::int64_t n, Mat& Qh,
                    Mat& Kh, Mat& V, std::vector<T>& eta) {
  const std::int64_t d = p.d;
  Qh.resize(n, d + 1), Kh.resize(n, d + 1), V.resize(n, d), eta.resize(static_cast<std::size_t>(n));
  for (std::int64_t r = 0; r < n; ++r) {
    const std::int64_t t = t0 + r;
    load_row(static_cast<const In*>(p.q.data) + p.q.at(bi, t, hh), d, &Qh(r, 0));
    load_row(static_cast<const In*>(p.k.data) + p.k.at(bi, t, hh), d, &Kh(r, 0));
    load_row(static_cast<const In*>(p.v.data) + p.v.at(bi, t, hh), d, &V(r, 0));
    load_row(static_cast<const In*>(p.eta.data) + p.eta.at(bi, t, hh), 1, &eta[static_cast<std::size_t>(r)]);
    Qh(r, d) = T(1), Kh(r, d) = T(1);
  }
}

/// The token loop in the compute type (the formulas at the top of this file).
template <class In>
void forward_recurrent(const TttLinearParams& p, int threads) {
  using T = compute_t<In>;
  const std::int64_t h = p.nheads, d = p.d, m = p.mini_batch, size = p.state_size();
  const std::vector<T> tau = position_weights<T>(p);
  const T eps = static_cast<T>(p.ln_eps);
  parallel_for(p.rows() * h, threads, [&](std::int64_t task) {
    const std::int64_t s = task / h, hh = task % h, bi = p.seq_row(s);
    std::vector<T> W(static_cast<std::size_t>(size)), A(W.size()), buf(static_cast<std::size_t>(7 * d));
    T *q = buf.data(), *k = q + d, *v = k + d, *z = v + d, *G = z + d, *zhat = G + d, *y = zhat + d;
    const T* gamma = static_cast<const T*>(p.ln_weight) + hh * d;
    const T* beta = static_cast<const T*>(p.ln_bias) + hh * d;
    load_state(p, task, W.data(), A.data());
    for (std::int64_t t = p.seq_begin(s); t < p.seq_end(s); ++t) {
      const std::int64_t i = (p.start + t - p.seq_begin(s)) % m;
      load_row(static_cast<const In*>(p.q.data) + p.q.at(bi, t, hh), d, q);
      load_row(static_cast<const In*>(p.k.data) + p.k.at(bi, t, hh), d, k);
      load_row(static_cast<const In*>(p.v.data) + p.v.at(bi, t, hh), d, v);
      T eta;
      load_row(static_cast<const In*>(p.eta.data) + p.eta.at(bi, t, hh), 1, &eta);
      apply(W.data(), A.data(), T(0), k, d, z);  // z = k̂ᵀ Ŵ′
      inner_gradient(z, k, v, gamma, beta, d, eps, zhat, y, G);
      for (std::int64_t a = 0; a <= d; ++a) {  // A += η k̂ Gᵀ
        const T c = eta * (a < d ? k[a] : T(1));
        T* row = A.data() + a * d;
        for (std::int64_t j = 0; j < d; ++j) row[j] += c * G[j];
      }
      const T ti = tau[static_cast<std::size_t>(i)];
      apply(W.data(), A.data(), ti, q, d, z);  // ẑ = q̂ᵀ (Ŵ′ − τ_i A)
      layer_norm_row(z, gamma, beta, d, eps, zhat, y);
      for (std::int64_t j = 0; j < d; ++j) y[j] += q[j];
      store_row(y, d, static_cast<In*>(p.out.data) + p.out.at(bi, t, hh));
      if (i == m - 1) {  // the mini-batch ends: Ŵ′ ← Ŵ′ − τ_{m−1} A, A ← 0
        for (std::int64_t e = 0; e < size; ++e) W[static_cast<std::size_t>(e)] -= ti * A[static_cast<std::size_t>(e)];
        std::fill(A.begin(), A.end(), T(0));
      }
    }
    store_state(p, task, W.data(), A.data());
  });
}

/// The dual form (the formulas at the top of this file), one mini-batch after another.
template <class In>
void forward_dual(const TttLinearParams& p, int threads) {
  using T = compute_t<In>;
  using M = ssd::Matrix<T>;
  const std::int64_t h = p.nheads, d = p.d, m = p.mini_batch;
  const std::vector<T> tau = position_weights<T>(p);
  const T eps = static_cast<T>(p.ln_eps);
  parallel_for(p.rows() * h, threads, [&](std::int64_t task) {
    const std::int64_t s = task / h, hh = task % h, bi = p.seq_row(s);
    M W(d + 1, d), A(d + 1, d);  // Ŵ′, the pending sum
    load_state(p, task, W.data(), A.data());
    const T* gamma = static_cast<const T*>(p.ln_weight) + hh * d;
    const T* beta = static_cast<const T*>(p.ln_bias) + hh * d;
    M Qh, Kh, V, Z, G, P, Zq, Y;  // mini-batch rows × (d + 1) | d, or n × n
    std::vector<T> eta, zhat(static_cast<std::size_t>(d)), y(zhat.size());
    bool pending = p.initial_pending != nullptr;  // A nonzero: only the first mini-batch of a call can enter with it
    const std::int64_t end = p.seq_end(s);
    for (std::int64_t t0 = p.seq_begin(s), i0 = p.start; t0 < end; i0 = 0) {
      const std::int64_t n = std::min(m - i0, end - t0);
      load_minibatch<In>(p, bi, hh, t0, n, Qh, Kh, V, eta);
      G.resize(n, d), Y.resize(n, d);
      Z.noalias() = Kh * W;  // (n, d): every gradient at Ŵ′
      for (std::int64_t r = 0; r < n; ++r) {
        inner_gradient(&Z(r, 0), &Kh(r, 0), &V(r, 0), gamma, beta, d, eps, zhat.data(), y.data(), &G(r, 0));
        G.row(r) *= eta[static_cast<std::size_t>(r)];  // E = diag(η) G, in G
      }
      P.noalias() = Qh * Kh.transpose();  // (n, n)
      P.template triangularView<Eigen::StrictlyUpper>().setZero();
      Zq.noalias() = P * G;
      if (pending) Zq.noalias() += Qh * A;
      for (std::int64_t r = 0; r < n; ++r) Zq.row(r) *= -tau[static_cast<std::size_t>(i0 + r)];
      Zq.noalias() += Qh * W;  // Ẑ
      for (std::int64_t r = 0; r < n; ++r) {
        layer_norm_row(&Zq(r, 0), gamma, beta, d, eps, static_cast<T*>(nullptr), &Y(r, 0));
        for (std::int64_t j = 0; j < d; ++j) Y(r, j) += Qh(r, j);
        store_row(&Y(r, 0), d, static_cast<In*>(p.out.data) + p.out.at(bi, t0 + r, hh));
      }
      if (pending) A.noalias() += Kh.transpose() * G;
      else A.noalias() = Kh.transpose() * G;
      pending = true;
      if (i0 + n == m) {  // the mini-batch ends
        W.noalias() -= tau[static_cast<std::size_t>(m - 1)] * A;
        A.setZero();
        pending = false;
      }
      t0 += n;
    }
    store_state(p, task, W.data(), A.data());
  });
}

}  // namespace ttt_linear

/// The dual form over p (validated by the op, ops/ttt_linear.hpp), on `threads` threads (0: by the work).
inline void ttt_linear_forward_dual(const TttLinearParams& p, int threads) {
  const int t = cpu_threads(threads, p.batch * p.seqlen * p.nheads * p.d * p.d);
  linear_attention::by_dtype(p, "ttt_linear", [&](auto tag) { ttt_linear::forward_dual<decltype(tag)>(p, t); });
}

/// The token loop in the compute type over p (also the decode step: l = 1, the states read and written in place).
inline void ttt_linear_forward_recurrent(const TttLinearParams& p, int threads) {
  const int t = cpu_threads(threads, p.batch * p.seqlen * p.nheads * p.d * p.d);
  linear_attention::by_dtype(p, "ttt_linear", [&](auto tag) { ttt_linear::forward_recurrent<decltype(tag)>(p, t); });
}

}  // namespace ssm::cpu

/// The kernels' entry points for one input type In, compiled once where SSM_EXTERN_INSTANCES is set
/// (core/instances.hpp, src/instances/).
#define SSM_CPU_TTT_LINEAR_INSTANCES(PREFIX, In)                                          \
  PREFIX void ssm::cpu::ttt_linear::forward_dual<In>(const ::ssm::TttLinearParams&, int); \
  PREFIX void ssm::cpu::ttt_linear::forward_recurrent<In>(const ::ssm::TttLinearParams&, int);
#if SSM_EXTERN_INSTANCES
SSM_FOR_EACH_INPUT(SSM_CPU_TTT_LINEAR_INSTANCES, extern template)
#endif
