// TTT-Linear's backward on CUDA (docs/ttt_linear.md "On CUDA"): the primal form's backward of
// reference/ttt_linear.hpp in f32, one block per (sequence, head) as the forward (kernels/ttt_linear.cuh), whose
// per-column helpers it shares.
//
// 1. The forward's training half runs through the sequence and keeps Ŵ′ at the start of every mini-batch (the
//    pending sum at a mini-batch's start is zero, but the first one's: the initial pending sum).
// 2. The mini-batches in reverse, each recomputed from its Ŵ′, with Ŵ̄ and C (the gradients of the state it leaves)
//    carried back from the next one:
//    - token by token forward: the inner gradient (ẑ_t, G_t, 1/σ_t and mean(g ⊙ ẑ)_t kept), A_t = A_{t−1} + η k̂ Gᵀ,
//      ž = q̂ᵀ (Ŵ′ − τ_i A_t) and the output layer norm's backward Ẑ̄ = LN'(ḡo) (kept). Ẑ̄ needs nothing carried
//      back, so ḡq = ḡo + (Ŵ′ − τ_i A_t) Ẑ̄ and τ̄_i −= Ẑ̄ · q̂ᵀ A_t are taken here, with A_t at hand;
//    - at a mini-batch's end Ŵ′_next = Ŵ′ − τ_{m−1} A_end: C = −τ_{m−1} Ŵ̄ and τ̄_{m−1} −= ⟨A_end, Ŵ̄⟩;
//    - token by token in reverse: Ŵ̄ += q̂ Ẑ̄ᵀ, C −= τ_i q̂ Ẑ̄ᵀ; Ē = Cᵀ k̂, η̄ = G · Ē, Ḡ = η Ē; the inner gradient's
//      backward (reference ttt_detail::InnerGradient::backward) gives z̄ and r̄ = ḡv; ḡk = C (η G) + Ŵ′ z̄ − r̄ and
//      Ŵ̄ += k̂ z̄ᵀ. C passes through a training term unchanged (A_t = A_{t−1} + …).
// Products over a column (x̂ᵀ M) are a thread's own; products over a row (M y, for ḡq and ḡk) are read across the
// block's columns after a barrier, thread a taking rows a, a + 64, …. The gradients of γ, β and τ are partial sums per
// (sequence, head), added in a fixed order by ttt_param_grad_sum_kernel (deterministic).
#pragma once

#include <cstdint>

#include "ttt_linear.cuh"

namespace ssm::kernels {

inline constexpr int kTttSumThreads = 256;  // ttt_param_grad_sum_kernel

/// The backward's workspace (kernels/launch/ttt_linear.cuh lays it out); per sequence s and head: st = s h + head.
struct TttGradWorkspace {
  const std::int64_t* seqs = nullptr;  // (rows, 4) the sequence table
  std::int64_t rows = 0;
  std::int64_t span = 1;       // the tokens kept of a mini-batch: m, at most the longest sequence
  float* ck = nullptr;         // (mini-batches, h, d + 1, d) Ŵ′ at the start of every mini-batch of every sequence
  float* W = nullptr;          // (rows, h, d + 1, d) Ŵ′ (step 1)
  float* A = nullptr;          // (rows, h, d + 1, d) the pending sum
  float* Wb = nullptr;         // (rows, h, d + 1, d) Ŵ̄
  float* C = nullptr;          // (rows, h, d + 1, d) the pending sum's gradient
  float* zh = nullptr;         // (rows, h, span, d) the current mini-batch's ẑ per token
  float* G = nullptr;          // (rows, h, span, d) its inner gradients
  float* Zq = nullptr;         // (rows, h, span, d) its outputs' Ẑ̄
  float* stats = nullptr;      // (rows, h, span, 2) its 1/σ and mean(g ⊙ ẑ) per token
  float* z = nullptr;          // (rows, h, d) scratch: z, then ž and the normalized ž
  float* g = nullptr;          // (rows, h, d) scratch: g, then q̂ᵀ A_t
  float* zb = nullptr;         // (rows, h, d) scratch: Ḡ, ẑ̄, z̄
  float* rb = nullptr;         // (rows, h, d) scratch: r̄
  float* gamma_bar = nullptr;  // (rows, h, d) partial sums
  float* beta_bar = nullptr;   // (rows, h, d)
  float* tau_bar = nullptr;    // (rows, h, m), with position weights
};

/// Mini-batch b of a sequence: its steps [begin, end) and the mini-batch position of its first step.
struct TttBatch {
  std::int64_t begin, end, i0;
  __device__ __forceinline__ bool ended(std::int64_t m) const { return i0 + end - begin == m; }
};

/// Row a of M y for M (d + 1, d) row-major and y (d): Σ_j M_aj y_j.
__device__ __forceinline__ float ttt_row(const float* M, const float* y, std::int64_t d, std::int64_t a) {
  float acc = 0.0f;
  for (std::int64_t j = 0; j < d; ++j) acc += M[a * d + j] * y[j];
  return acc;
}

/// Grid (h, rows), block kTttThreads: the gradients of one sequence and head (g's outputs contiguous, as
/// ops/ttt_linear.hpp allocates them); γ̄, β̄ and τ̄ as partial sums in the workspace.
template <class In>
__global__ void __launch_bounds__(kTttThreads, 1)
    ttt_backward_kernel(TttLinearParams p, TttLinearGradParams gr, TttGradWorkspace w) {
  SSM_SHARED(float, red, 2 * kTttThreads);
  const std::int64_t head = blockIdx.x, s = blockIdx.y, h = p.nheads, d = p.d, m = p.mini_batch, l = p.seqlen;
  const std::int64_t st = s * h + head, size = (d + 1) * d, tid = threadIdx.x;
  const std::int64_t bi = w.seqs[s * kTttSeqFields], t0 = w.seqs[s * kTttSeqFields + 1];
  const std::int64_t t1 = w.seqs[s * kTttSeqFields + 2], first = w.seqs[s * kTttSeqFields + 3];
  const float* gamma = static_cast<const float*>(p.ln_weight) + head * d;
  const float* beta = static_cast<const float*>(p.ln_bias) + head * d;
  const float* tau = static_cast<const float*>(p.position_weights);
  float *W = w.W + st * size, *A = w.A + st * size, *Wb = w.Wb + st * size, *C = w.C + st * size;
  float *zh = w.zh + st * w.span * d, *G = w.G + st * w.span * d, *Zq = w.Zq + st * w.span * d;
  float* stats = w.stats + st * w.span * 2;
  float *z = w.z + st * d, *g = w.g + st * d, *zb = w.zb + st * d, *rb = w.rb + st * d;
  float *gb = w.gamma_bar + st * d, *bb = w.beta_bar + st * d, *tb = tau ? w.tau_bar + st * m : nullptr;
  const float eps = static_cast<float>(p.ln_eps), inv_d = 1.0f / static_cast<float>(d);
  const auto state_in = [&](const void* src, std::int64_t e) {
    return src ? static_cast<const float*>(src)[st * size + e] : 0.0f;
  };
  const auto row_of = [&](const TokenRows<const void*>& r, std::int64_t t) {
    return static_cast<const In*>(r.data) + r.at(bi, t, head);
  };
  const auto grad_at = [&](void* dst, std::int64_t t) { return static_cast<In*>(dst) + ((bi * l + t) * h + head) * d; };
  const std::int64_t batches = t1 > t0 ? (p.start + t1 - t0 + m - 1) / m : 0;
  const auto batch = [&](std::int64_t b) {  // the first one starts at position p.start, the others at 0
    const std::int64_t i0 = b == 0 ? p.start : 0, begin = b == 0 ? t0 : t0 + b * m - p.start;
    return TttBatch{begin, begin + (m - i0) < t1 ? begin + (m - i0) : t1, i0};
  };
  for (std::int64_t j = tid; j < d; j += kTttThreads) {
    for (std::int64_t a = 0; a <= d; ++a) {
      const std::int64_t e = a * d + j;
      W[e] = state_in(p.initial_state, e), A[e] = state_in(p.initial_pending, e);
      Wb[e] = state_in(gr.grad_final_state, e), C[e] = state_in(gr.grad_final_pending, e);
    }
    gb[j] = 0.0f, bb[j] = 0.0f;
  }
  for (std::int64_t i = tid; tb && i < m; i += kTttThreads) tb[i] = 0.0f;  // written by thread 0 only from here

  // 1. the training half of the forward, keeping each mini-batch's Ŵ′
  for (std::int64_t b = 0; b < batches; ++b) {
    const TttBatch bt = batch(b);
    float* Wc = w.ck + ((first + b) * h + head) * size;
    for (std::int64_t j = tid; j < d; j += kTttThreads)
      for (std::int64_t a = 0; a <= d; ++a) Wc[a * d + j] = W[a * d + j];
    for (std::int64_t t = bt.begin; t < bt.end; ++t) {
      const In *k = row_of(p.k, t), *v = row_of(p.v, t);
      const float eta = ttt_at<In>(p.eta, bi, t, head, 0);
      const TttInner inner = ttt_inner(red, W, k, v, gamma, beta, d, eps, z, zh, g);
      for (std::int64_t j = tid; j < d; j += kTttThreads) ttt_add_column(A, k, d, j, eta * inner.G(g[j], zh[j]));
    }
    if (bt.ended(m)) {  // the mini-batch ended: Ŵ′ ← Ŵ′ − τ_{m−1} A, A ← 0
      const float tl = tau ? tau[m - 1] : 1.0f;
      for (std::int64_t j = tid; j < d; j += kTttThreads)
        for (std::int64_t a = 0; a <= d; ++a) W[a * d + j] -= tl * A[a * d + j], A[a * d + j] = 0.0f;
    }
  }

  // 2. the mini-batches in reverse
  for (std::int64_t b = batches - 1; b >= 0; --b) {
    const TttBatch bt = batch(b);
    const std::int64_t tb0 = bt.begin, i0 = bt.i0, n = bt.end - bt.begin;
    const float* Wc = w.ck + ((first + b) * h + head) * size;  // this mini-batch's Ŵ′
    for (std::int64_t j = tid; j < d; j += kTttThreads)
      for (std::int64_t a = 0; a <= d; ++a) A[a * d + j] = b == 0 ? state_in(p.initial_pending, a * d + j) : 0.0f;
    // forward through the mini-batch: the inner gradients, A_t, and the outputs' side of the backward
    for (std::int64_t r = 0; r < n; ++r) {
      const std::int64_t t = tb0 + r, i = i0 + r;
      const In *q = row_of(p.q, t), *k = row_of(p.k, t), *v = row_of(p.v, t);
      const In* go = static_cast<const In*>(gr.grad_out) + ((bi * l + t) * h + head) * d;
      const float eta = ttt_at<In>(p.eta, bi, t, head, 0), ti = tau ? tau[i] : 1.0f;
      float *zh_r = zh + r * d, *G_r = G + r * d, *Zq_r = Zq + r * d;
      const TttInner inner = ttt_inner(red, Wc, k, v, gamma, beta, d, eps, z, zh_r, g);
      if (tid == 0) stats[2 * r] = inner.inv_sigma, stats[2 * r + 1] = inner.mgz;
      for (std::int64_t j = tid; j < d; j += kTttThreads) {
        G_r[j] = inner.G(g[j], zh_r[j]);
        ttt_add_column(A, k, d, j, eta * G_r[j]);
        g[j] = ttt_column(A, q, d, j);  // q̂ᵀ A_t
        z[j] = ttt_column(Wc, q, d, j) - ti * g[j];
      }
      float mean, inv_sigma;
      ttt_moments(red, z, d, eps, mean, inv_sigma);
      float mt = 0.0f, mtu = 0.0f;  // the layer norm's backward: Ẑ̄ = (γ ⊙ ḡo − mean(γ ⊙ ḡo) − û mean(γ ⊙ ḡo ⊙ û)) / σ
      for (std::int64_t j = tid; j < d; j += kTttThreads) {
        const float u = (z[j] - mean) * inv_sigma, gy = load_float(go + j);
        z[j] = u;
        gb[j] += gy * u, bb[j] += gy;
        mt += gamma[j] * gy, mtu += gamma[j] * gy * u;
      }
      ttt_block_sum2(red, mt, mtu);
      float dtau = 0.0f, unused = 0.0f;
      for (std::int64_t j = tid; j < d; j += kTttThreads) {
        Zq_r[j] = (gamma[j] * load_float(go + j) - mt * inv_d - z[j] * mtu * inv_d) * inv_sigma;
        dtau += Zq_r[j] * g[j];
      }
      ttt_block_sum2(red, dtau, unused);  // (its barriers publish Ẑ̄ to the rows below)
      if (tid == 0 && tb) tb[i] -= dtau;
      if (gr.grad_q)  // ḡq = ḡo + (Ŵ′ − τ_i A_t) Ẑ̄
        for (std::int64_t a = tid; a < d; a += kTttThreads)
          store_float(grad_at(gr.grad_q, t) + a,
                      load_float(go + a) + ttt_row(Wc, Zq_r, d, a) - ti * ttt_row(A, Zq_r, d, a));
      __syncthreads();  // the next token rewrites A's columns
    }
    if (bt.ended(m)) {  // it ended: Ŵ′_next = Ŵ′ − τ_{m−1} A_end, and the next pending sum is zero
      const float tl = tau ? tau[m - 1] : 1.0f;
      float dot = 0.0f, unused = 0.0f;
      for (std::int64_t j = tid; j < d; j += kTttThreads)
        for (std::int64_t a = 0; a <= d; ++a) dot += A[a * d + j] * Wb[a * d + j], C[a * d + j] = -tl * Wb[a * d + j];
      ttt_block_sum2(red, dot, unused);
      if (tid == 0 && tb) tb[m - 1] -= dot;
    }
    // the mini-batch in reverse: Ŵ̄ becomes the gradient of its Ŵ′, C of its starting pending sum
    for (std::int64_t r = n - 1; r >= 0; --r) {
      const std::int64_t t = tb0 + r, i = i0 + r;
      const In *q = row_of(p.q, t), *k = row_of(p.k, t), *v = row_of(p.v, t);
      const float eta = ttt_at<In>(p.eta, bi, t, head, 0), ti = tau ? tau[i] : 1.0f;
      const float *zh_r = zh + r * d, *G_r = G + r * d, *Zq_r = Zq + r * d;
      const float inv_sigma = stats[2 * r], mgz = stats[2 * r + 1];
      float eta_bar = 0.0f, GbG = 0.0f, mGb = 0.0f, mGbu = 0.0f;
      for (std::int64_t j = tid; j < d; j += kTttThreads) {
        ttt_add_column(Wb, q, d, j, Zq_r[j]);
        ttt_add_column(C, q, d, j, -ti * Zq_r[j]);
        const float Eb = ttt_column(C, k, d, j), Gb = eta * Eb;  // Ē = Cᵀ k̂, Ḡ = η Ē
        zb[j] = Gb;
        eta_bar += G_r[j] * Eb, GbG += G_r[j] * Gb, mGb += Gb, mGbu += Gb * zh_r[j];
      }
      ttt_block_sum2(red, eta_bar, GbG);
      ttt_block_sum2(red, mGb, mGbu);
      mGb *= inv_d, mGbu *= inv_d;
      if (tid == 0 && gr.grad_eta) store_float(static_cast<In*>(gr.grad_eta) + (bi * l + t) * h + head, eta_bar);
      float mub = 0.0f, mubu = 0.0f;
      for (std::int64_t j = tid; j < d; j += kTttThreads) {  // the inner gradient's backward
        const float u = zh_r[j], e = gamma[j] * u + beta[j] - (load_float(v + j) - load_float(k + j));
        const float gbar = (zb[j] - mGb - u * mGbu) * inv_sigma;
        const float ub = -(mgz * zb[j] + gamma[j] * e * mGbu) * inv_sigma + gbar * gamma[j] * gamma[j];
        gb[j] += gbar * (e + gamma[j] * u), bb[j] += gbar * gamma[j];
        rb[j] = -gbar * gamma[j];
        if (gr.grad_v) store_float(grad_at(gr.grad_v, t) + j, rb[j]);
        zb[j] = ub;
        mub += ub, mubu += ub * u;
      }
      ttt_block_sum2(red, mub, mubu);
      const float sigma_bar = -GbG * inv_sigma;
      for (std::int64_t j = tid; j < d; j += kTttThreads)
        zb[j] = (zb[j] - mub * inv_d - zh_r[j] * mubu * inv_d) * inv_sigma + sigma_bar * zh_r[j] * inv_d;
      __syncthreads();  // z̄ and r̄ to the rows
      if (gr.grad_k)    // ḡk = C (η G) + Ŵ′ z̄ − r̄
        for (std::int64_t a = tid; a < d; a += kTttThreads)
          store_float(grad_at(gr.grad_k, t) + a, eta * ttt_row(C, G_r, d, a) + ttt_row(Wc, zb, d, a) - rb[a]);
      for (std::int64_t j = tid; j < d; j += kTttThreads) ttt_add_column(Wb, k, d, j, zb[j]);
      __syncthreads();  // the next token rewrites C's columns, z̄ and r̄
    }
  }
  for (std::int64_t j = tid; j < d; j += kTttThreads)
    for (std::int64_t a = 0; a <= d; ++a) {
      if (gr.grad_initial_state) static_cast<float*>(gr.grad_initial_state)[st * size + a * d + j] = Wb[a * d + j];
      if (gr.grad_initial_pending) static_cast<float*>(gr.grad_initial_pending)[st * size + a * d + j] = C[a * d + j];
    }
}

/// The gradients of γ, β (h, d) and τ (m): the partial sums of every sequence and head added in order. One thread per
/// output element; with no sequences, zeros.
__global__ void __launch_bounds__(kTttSumThreads)
    ttt_param_grad_sum_kernel(TttLinearParams p, TttLinearGradParams gr, TttGradWorkspace w) {
  const std::int64_t h = p.nheads, hd = p.nheads * p.d, m = p.mini_batch;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < 2 * hd + m;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    float acc = 0.0f;
    if (e < 2 * hd) {
      const float* src = e < hd ? w.gamma_bar : w.beta_bar;
      for (std::int64_t s = 0; s < w.rows; ++s) acc += src[s * hd + e % hd];
      void* dst = e < hd ? gr.grad_ln_weight : gr.grad_ln_bias;
      if (dst) static_cast<float*>(dst)[e % hd] = acc;
    } else {
      if (!gr.grad_position_weights) continue;
      for (std::int64_t st = 0; st < w.rows * h; ++st) acc += w.tau_bar[st * m + (e - 2 * hd)];
      static_cast<float*>(gr.grad_position_weights)[e - 2 * hd] = acc;
    }
  }
}

}  // namespace ssm::kernels
