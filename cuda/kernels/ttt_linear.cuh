// TTT-Linear's forward on CUDA (docs/ttt_linear.md "On CUDA"): the token loop of the CPU path (cpu/ttt_linear.hpp
// forward_recurrent; the formulas in core/params/ttt_linear.hpp), one block per (sequence, head).
//
// Per token at mini-batch position i, with the weights Ŵ′ and the pending sum A (d + 1, d) of the block's sequence and
// head, x̂ = [x; 1]:
//   z = k̂ᵀ Ŵ′;  ẑ = (z − mean) / σ (mean and variance over d);  e = γ ⊙ ẑ + β − (v − k);  g = γ ⊙ e;
//   G = (g − mean(g) − ẑ mean(g ⊙ ẑ)) / σ;  A += η k̂ Gᵀ;
//   ž = q̂ᵀ Ŵ′ − τ_i q̂ᵀ A;  o = q + LN(ž);   at i = m − 1: Ŵ′ ← Ŵ′ − τ_i A, A ← 0.
// Unlike the delta rule's state, the layer norm mixes the columns j of the state, so the columns of one (sequence,
// head) share a block: thread c carries columns c, c + 64, ... of Ŵ′ and A (their rows i at i d + j, coalesced), and
// each layer norm's sums are block reductions (two per norm, one for the gradient's means). The state's products run on
// CUDA cores: about 4 (d + 1) multiply-adds per column and token (k̂ᵀ Ŵ′, the rank-1 update of A, q̂ᵀ (Ŵ′ − τ_i A)).
#pragma once

#include <cstdint>

#include "common.cuh"
#include "ssm/core/params/ttt_linear.hpp"

namespace ssm::kernels {

inline constexpr int kTttThreads = 64;  // a power of two: the reductions halve it
inline constexpr std::int64_t kTttSeqFields = 4;  // the sequence table: batch row, begin, end, first mini-batch

/// The workspace (kernels/launch/ttt_linear.cuh lays it out).
struct TttWorkspace {
  const std::int64_t* seqs = nullptr;  // (rows, 4) the sequence table
  float* W = nullptr;                  // (rows, h, d + 1, d) Ŵ′
  float* A = nullptr;                  // (rows, h, d + 1, d) the pending sum
  float* z = nullptr;                  // (rows, h, d) z, then ž, per token
  float* g = nullptr;                  // (rows, h, d) g
  float* zh = nullptr;                 // (rows, h, d) the normalized z
};

/// x and y summed over the block (kTttThreads threads), the totals in every thread. red: 2 kTttThreads floats of
/// shared memory, reused by the next call after the last barrier.
template <class Red>
__device__ __forceinline__ void ttt_block_sum2(Red& red, float& x, float& y) {
  const int tid = threadIdx.x;
  red[tid] = x;
  red[kTttThreads + tid] = y;
  __syncthreads();
  for (int s = kTttThreads / 2; s > 0; s >>= 1) {
    if (tid < s) {
      red[tid] += red[tid + s];
      red[kTttThreads + tid] += red[kTttThreads + tid + s];
    }
    __syncthreads();
  }
  x = red[0];
  y = red[kTttThreads];
  __syncthreads();
}

/// The mean and 1 / σ over d of z (this thread's columns of it), as layer_norm_row: two passes.
template <class Red>
__device__ __forceinline__ void ttt_moments(Red& red, const float* z, std::int64_t d, float eps, float& mean,
                                            float& inv_sigma) {
  float s = 0.0f, unused = 0.0f;
  for (std::int64_t j = threadIdx.x; j < d; j += kTttThreads) s += z[j];
  ttt_block_sum2(red, s, unused);
  mean = s / static_cast<float>(d);
  float v = 0.0f;
  unused = 0.0f;
  for (std::int64_t j = threadIdx.x; j < d; j += kTttThreads) v += (z[j] - mean) * (z[j] - mean);
  ttt_block_sum2(red, v, unused);
  inv_sigma = 1.0f / scalar::sqrt(v / static_cast<float>(d) + eps);
}

/// Element j of one step's row of a per-token input (b, l, h, d); eta's rows have one element.
template <class In>
__device__ __forceinline__ float ttt_at(const TokenRows<const void*>& r, std::int64_t bi, std::int64_t t,
                                        std::int64_t head, std::int64_t j) {
  return load_float(static_cast<const In*>(r.data) + r.at(bi, t, head) + j);
}

/// Column j of x̂ᵀ M for x (d) and M (d + 1, d) row-major, x̂ = [x; 1].
template <class X>
__device__ __forceinline__ float ttt_column(const float* M, const X* x, std::int64_t d, std::int64_t j) {
  float acc = M[d * d + j];
  for (std::int64_t a = 0; a < d; ++a) acc += load_float(x + a) * M[a * d + j];
  return acc;
}

/// Column j of M += c x̂ (a rank-1 update's column, its other factor's element folded into c).
template <class X>
__device__ __forceinline__ void ttt_add_column(float* M, const X* x, std::int64_t d, std::int64_t j, float c) {
  for (std::int64_t a = 0; a < d; ++a) M[a * d + j] += c * load_float(x + a);
  M[d * d + j] += c;
}

/// What the inner gradient G_j = (g_j − mean(g) − ẑ_j mean(g ⊙ ẑ)) / σ needs besides g and ẑ.
struct TttInner {
  float inv_sigma, mg, mgz;  // 1 / σ, mean(g), mean(g ⊙ ẑ)
  __device__ __forceinline__ float G(float g, float zhat) const { return (g - mg - zhat * mgz) * inv_sigma; }
};

/// The inner loss's gradient for one training token (k, v) at Ŵ′ = W: z = k̂ᵀ W into z, ẑ = (z − mean) / σ into zh and
/// g = γ ⊙ (γ ⊙ ẑ + β − (v − k)) into g (this thread's columns j); then G_j = result.G(g_j, ẑ_j).
template <class In, class Red>
__device__ __forceinline__ TttInner ttt_inner(Red& red, const float* W, const In* k, const In* v, const float* gamma,
                                              const float* beta, std::int64_t d, float eps, float* z, float* zh,
                                              float* g) {
  for (std::int64_t j = threadIdx.x; j < d; j += kTttThreads) z[j] = ttt_column(W, k, d, j);
  float mean, inv_sigma;
  ttt_moments(red, z, d, eps, mean, inv_sigma);
  float sg = 0.0f, sgz = 0.0f;
  for (std::int64_t j = threadIdx.x; j < d; j += kTttThreads) {
    const float zhat = (z[j] - mean) * inv_sigma;
    const float e = gamma[j] * zhat + beta[j] - (load_float(v + j) - load_float(k + j));
    zh[j] = zhat, g[j] = gamma[j] * e;
    sg += g[j], sgz += g[j] * zhat;
  }
  ttt_block_sum2(red, sg, sgz);
  return TttInner{inv_sigma, sg / static_cast<float>(d), sgz / static_cast<float>(d)};
}

/// Grid (h, rows), block kTttThreads. Each thread reads its columns of the initial state and pending sum before it
/// writes those columns of the final ones, so they may be the same buffers (the decode step).
template <class In>
__global__ void __launch_bounds__(kTttThreads, 1) ttt_forward_kernel(TttLinearParams p, TttWorkspace w) {
  SSM_SHARED(float, red, 2 * kTttThreads);
  const std::int64_t head = blockIdx.x, s = blockIdx.y, h = p.nheads, d = p.d, m = p.mini_batch;
  const std::int64_t st = s * h + head, size = (d + 1) * d, tid = threadIdx.x;
  const std::int64_t bi = w.seqs[s * kTttSeqFields], t0 = w.seqs[s * kTttSeqFields + 1];
  const std::int64_t t1 = w.seqs[s * kTttSeqFields + 2];
  float *W = w.W + st * size, *A = w.A + st * size, *z = w.z + st * d, *g = w.g + st * d, *zh = w.zh + st * d;
  const float* gamma = static_cast<const float*>(p.ln_weight) + head * d;
  const float* beta = static_cast<const float*>(p.ln_bias) + head * d;
  const float* tau = static_cast<const float*>(p.position_weights);
  const float eps = static_cast<float>(p.ln_eps);
  for (std::int64_t j = tid; j < d; j += kTttThreads)
    for (std::int64_t a = 0; a <= d; ++a) {
      W[a * d + j] = p.initial_state ? static_cast<const float*>(p.initial_state)[st * size + a * d + j] : 0.0f;
      A[a * d + j] = p.initial_pending ? static_cast<const float*>(p.initial_pending)[st * size + a * d + j] : 0.0f;
    }
  for (std::int64_t t = t0; t < t1; ++t) {
    const std::int64_t i = (p.start + t - t0) % m;
    const float ti = tau ? tau[i] : 1.0f, eta = ttt_at<In>(p.eta, bi, t, head, 0);
    const In* q = static_cast<const In*>(p.q.data) + p.q.at(bi, t, head);  // this step's rows
    const In* k = static_cast<const In*>(p.k.data) + p.k.at(bi, t, head);
    const In* v = static_cast<const In*>(p.v.data) + p.v.at(bi, t, head);
    const TttInner inner = ttt_inner(red, W, k, v, gamma, beta, d, eps, z, zh, g);
    // A += η k̂ Gᵀ, then ž = q̂ᵀ Ŵ′ − τ_i q̂ᵀ A and o = q + LN(ž)
    for (std::int64_t j = tid; j < d; j += kTttThreads) {
      ttt_add_column(A, k, d, j, eta * inner.G(g[j], zh[j]));
      z[j] = ttt_column(W, q, d, j) - ti * ttt_column(A, q, d, j);
    }
    float mean, inv_sigma;
    ttt_moments(red, z, d, eps, mean, inv_sigma);
    for (std::int64_t j = tid; j < d; j += kTttThreads) {
      const float o = load_float(q + j) + gamma[j] * (z[j] - mean) * inv_sigma + beta[j];
      if (p.out.data) store_float(static_cast<In*>(p.out.data) + p.out.at(bi, t, head) + j, o);
      if (i == m - 1)  // the mini-batch ends: Ŵ′ ← Ŵ′ − τ_i A, A ← 0
        for (std::int64_t a = 0; a <= d; ++a) {
          W[a * d + j] -= ti * A[a * d + j];
          A[a * d + j] = 0.0f;
        }
    }
  }
  for (std::int64_t j = tid; j < d; j += kTttThreads)
    for (std::int64_t a = 0; a <= d; ++a) {
      if (p.final_state) static_cast<float*>(p.final_state)[st * size + a * d + j] = W[a * d + j];
      if (p.final_pending) static_cast<float*>(p.final_pending)[st * size + a * d + j] = A[a * d + j];
    }
}

}  // namespace ssm::kernels
