// GLA's chunked forward on CUDA (docs/linear_attention.md "On CUDA"): with a log gate the decay is one number per key
// channel and step, which the SSD kernels cannot carry, so two kernels take their place on the same packed inputs
// (kernels/linear_attention.cuh: q̃, k̃, x = [v, 1], the engine's states H (dv1, dk) per head, its output y).
//
// Per chunk and head, with b_ti = Σ_{u<=t} log α_ui = Σ_{u<=t} (log γ + g_ui) per key channel i (double, from the
// chunk's start):
//   A_ts = Σ_i q̃_ti k̃_si exp(b_ti − b_si)   (s <= t)
//   y_t  = Σ_{s<=t} A_ts x_s + H_in (q̃_t ⊙ exp(b_t))
//   H    ← H diag(exp(b_last)) + Σ_t x_t (k̃_t ⊙ exp(b_last − b_t))ᵀ
// Every exponent is <= 0 (differences taken in double, exponentials in f32), so no factor exceeds 1 whatever the gate
// (the CPU path's block splitting exists to use matrix products; here each A_ts takes its dk exponents directly).
// gla_chunk_kernel computes A and the two decayed copies of q̃ and k̃ for every chunk at once; gla_state_kernel walks
// each sequence's chunks in order, one thread per value column j of the state (row j of H): the columns never mix.
//
// The backward (the CPU path's, cpu/linear_attention_gated.hpp) runs both again, keeping the state entering each chunk,
// then walks the chunks in reverse per column for D, the gradient of the state each chunk leaves
// (D ← D diag(exp(b_last)) + Σ_t ḡy_t (q̃_t ⊙ exp(b_t))ᵀ), and per chunk and head forms
//   ḡx_t  = Σ_{s>=t} A_st ḡy_s + D (k̃_t ⊙ exp(b_last − b_t)),     ḡA_ts = ḡy_t · x_s   (s <= t),
//   ḡq̃_t = exp(b_t) ⊙ H_inᵀ ḡy_t + Σ_{s<=t} ḡA_ts k̃_s ⊙ exp(b_t − b_s),
//   ḡk̃_s = exp(b_last − b_s) ⊙ Dᵀ x_s + Σ_{t>=s} ḡA_ts q̃_t ⊙ exp(b_t − b_s),
// per head (a group's heads are summed after), and the gate's gradient as a reverse running sum per channel in double:
//   ḡg_t = Σ_{u>=t} (q̃_u ⊙ ḡq̃_u − k̃_u ⊙ ḡk̃_u) + Σ_j ḡH_T,j ⊙ H_T,j.
#pragma once

#include <cstdint>

#include "chunk_columns.cuh"
#include "linear_attention.cuh"
#include "ssd_common.cuh"
#include "ssm/core/params/linear_attention.hpp"

namespace ssm::kernels {

inline constexpr int kGlaThreads = 128;  // gla_chunk_kernel
inline constexpr int kGlaColumns = 32;   // gla_state_kernel: value columns per block

/// The gated engine's buffers (per chunk c and head: base = c h + head; per sequence s and head: s h + head).
struct GlaWorkspace {
  const std::int64_t* chunks = nullptr;       // (n_chunks, 4): batch row, t0, len, sequence
  const std::int64_t* first_chunk = nullptr;  // (rows + 1)
  std::int64_t q = 0;                         // the longest chunk
  double* b = nullptr;                        // (n_chunks, h, q, dk) the cumulative log decays
  float* A = nullptr;                         // (n_chunks, h, q, q)
  float* Qe = nullptr;                        // (n_chunks, h, q, dk) q̃ ⊙ exp(b)
  float* Ke = nullptr;                        // (n_chunks, h, q, dk) k̃ ⊙ exp(b_last − b)
  float* dec = nullptr;                       // (n_chunks, h, dk) exp(b_last)
  float* H = nullptr;                         // (rows, h, dv1, dk) the running states, then the final ones
  // the backward's
  float* Hin = nullptr;  // (n_chunks, h, dv1, dk) the state entering each chunk; null in the forward
  float* D = nullptr;    // (n_chunks, h, dv1, dk) the gradient of the state each chunk leaves
  float* gq = nullptr;   // (b, l, h, dk) ḡq̃ per head
  float* gk = nullptr;   // (b, l, h, dk) ḡk̃ per head
};

/// The packed inputs and states the gated engine reads and writes (kernels/linear_attention.cuh's LaWorkspace).
struct GlaIo {
  std::int64_t dv1 = 0;
  const float* q = nullptr;   // (b, l, g, dk) q̃
  const float* k = nullptr;   // (b, l, g, dk) k̃
  const float* x = nullptr;   // (b, l, h, dv1)
  float* y = nullptr;         // (b, l, h, dv1)
  const float* H0 = nullptr;  // (rows, h, dv1, dk) or null (zero)
  float* HT = nullptr;        // (rows, h, dv1, dk) or null
};

/// The backward's gradients in the packed layout (kernels/linear_attention.cuh's LaWorkspace).
struct GlaGradIo {
  const float* gy = nullptr;      // (b, l, h, dv1) ḡy
  const float* GF = nullptr;      // (rows, h, dv1, dk) the final states' gradients, or null (zero)
  float* gx = nullptr;            // (b, l, h, dv1)
  float* gq = nullptr;            // (b, l, g, dk) summed over a group's heads
  float* gk = nullptr;            // (b, l, g, dk)
  float* GH0 = nullptr;           // (rows, h, dv1, dk) the initial states' gradients (the running gradient on the way)
  void* grad_log_gate = nullptr;  // (b, l, h, dk) In, contiguous; or null
};

/// Grid (n_chunks, h), block kGlaThreads.
template <class In>
__global__ void __launch_bounds__(kGlaThreads)
    gla_chunk_kernel(LinearAttentionParams p, GlaWorkspace w, GlaIo io, const float* log_gamma) {
  const std::int64_t c = blockIdx.x, head = blockIdx.y, h = p.nheads, dk = p.dk, Q = w.q, l = p.seqlen;
  const auto [bi, t0, len] = chunk_row(w.chunks, c);
  const std::int64_t gi = head / (h / p.ngroups), base = c * h + head;
  double* b = w.b + base * Q * dk;
  float *A = w.A + base * Q * Q, *Qe = w.Qe + base * Q * dk, *Ke = w.Ke + base * Q * dk, *dec = w.dec + base * dk;
  const float* q = io.q + ((bi * l + t0) * p.ngroups + gi) * dk;  // row t at q + t g dk
  const float* k = io.k + ((bi * l + t0) * p.ngroups + gi) * dk;
  const std::int64_t qk_step = p.ngroups * dk;
  const double lg = static_cast<double>(log_gamma[head]);
  // 1. the cumulative log decays, one key channel per thread
  for (std::int64_t i = threadIdx.x; i < dk; i += kGlaThreads) {
    double acc = 0.0;
    for (std::int64_t t = 0; t < len; ++t) {
      acc += lg + static_cast<double>(load_float(static_cast<const In*>(p.log_gate) + bi * p.gate_batch_stride +
                                                 (t0 + t) * p.gate_seq_stride + head * p.gate_head_stride + i));
      b[t * dk + i] = acc;
    }
    dec[i] = scalar::exp(static_cast<float>(acc));
  }
  __syncthreads();
  // 2. the decayed copies and the chunk's scores
  for (std::int64_t e = threadIdx.x; e < len * dk; e += kGlaThreads) {
    const std::int64_t t = e / dk, i = e % dk;
    Qe[e] = q[t * qk_step + i] * scalar::exp(static_cast<float>(b[e]));
    Ke[e] = k[t * qk_step + i] * scalar::exp(static_cast<float>(b[(len - 1) * dk + i] - b[e]));
  }
  for (std::int64_t e = threadIdx.x; e < len * len; e += kGlaThreads) {
    const std::int64_t t = e / len, s = e % len;
    float a = 0.0f;
    if (s <= t)
      for (std::int64_t i = 0; i < dk; ++i)
        a += q[t * qk_step + i] * k[s * qk_step + i] * scalar::exp(static_cast<float>(b[t * dk + i] - b[s * dk + i]));
    A[t * Q + s] = a;
  }
}

/// Grid (ceil(dv1 / kGlaColumns), h, rows), block kGlaColumns: thread j carries row j of one sequence's H.
__global__ void __launch_bounds__(kGlaColumns) gla_state_kernel(LinearAttentionParams p, GlaWorkspace w, GlaIo io) {
  const std::int64_t j = static_cast<std::int64_t>(blockIdx.x) * kGlaColumns + threadIdx.x;
  const std::int64_t head = blockIdx.y, s = blockIdx.z, h = p.nheads, dk = p.dk, dv1 = io.dv1, Q = w.q, l = p.seqlen;
  if (j >= dv1) return;
  const std::int64_t state = ((s * h + head) * dv1 + j) * dk;
  float* H = w.H + state;  // row j of this sequence's H: H[i]
  for (std::int64_t i = 0; i < dk; ++i) H[i] = io.H0 ? io.H0[state + i] : 0.0f;
  for (std::int64_t c = w.first_chunk[s]; c < w.first_chunk[s + 1]; ++c) {
    const auto [bi, t0, len] = chunk_row(w.chunks, c);
    const std::int64_t base = c * h + head;
    const float *A = w.A + base * Q * Q, *Qe = w.Qe + base * Q * dk, *Ke = w.Ke + base * Q * dk;
    const float* dec = w.dec + base * dk;
    const float* x = io.x + ((bi * l + t0) * h + head) * dv1 + j;  // step t at x[t h dv1]
    float* y = io.y ? io.y + ((bi * l + t0) * h + head) * dv1 + j : nullptr;
    const std::int64_t step = h * dv1;
    if (w.Hin)
      for (std::int64_t i = 0; i < dk; ++i) w.Hin[(base * dv1 + j) * dk + i] = H[i];
    chunk_column(len, dk, Q, Qe, A, Ke, dec, 1, x, step, H, 1, [&](std::int64_t t, float v) {
      if (y) y[t * step] = v;
    });
  }
  if (io.HT)
    for (std::int64_t i = 0; i < dk; ++i) io.HT[state + i] = H[i];
}

/// The reverse walk, grid (ceil(dv1 / kGlaColumns), h, rows), block kGlaColumns: thread j carries row j of one
/// sequence's running gradient in GH0, from GF (or zero) back to the initial state's gradient, leaving each chunk's D.
__global__ void __launch_bounds__(kGlaColumns)
    gla_state_grad_kernel(LinearAttentionParams p, GlaWorkspace w, GlaGradIo gio, std::int64_t dv1) {
  const std::int64_t j = static_cast<std::int64_t>(blockIdx.x) * kGlaColumns + threadIdx.x;
  const std::int64_t head = blockIdx.y, s = blockIdx.z, h = p.nheads, dk = p.dk, Q = w.q, l = p.seqlen;
  if (j >= dv1) return;
  const std::int64_t state = ((s * h + head) * dv1 + j) * dk;
  float* G = gio.GH0 + state;  // row j of the running gradient
  for (std::int64_t i = 0; i < dk; ++i) G[i] = gio.GF ? gio.GF[state + i] : 0.0f;
  for (std::int64_t c = w.first_chunk[s + 1] - 1; c >= w.first_chunk[s]; --c) {
    const auto [bi, t0, len] = chunk_row(w.chunks, c);
    const std::int64_t base = c * h + head;
    for (std::int64_t i = 0; i < dk; ++i) w.D[(base * dv1 + j) * dk + i] = G[i];
    const float* gy = gio.gy + ((bi * l + t0) * h + head) * dv1 + j;  // step t at gy[t h dv1]
    column_pass(len, dk, w.Qe + base * Q * dk, w.dec + base * dk, 1, gy, h * dv1, G, 1);
  }
}

/// One chunk and head's ḡx, ḡq̃ and ḡk̃ (the latter per head, into w.gq, w.gk), grid (n_chunks, h), block kGlaThreads,
/// after gla_chunk_kernel and the two walks. Overwrites the chunk's scores A with ḡA.
__global__ void __launch_bounds__(kGlaThreads)
    gla_chunk_grad_kernel(LinearAttentionParams p, GlaWorkspace w, GlaIo io, GlaGradIo gio) {
  const std::int64_t c = blockIdx.x, head = blockIdx.y, h = p.nheads, dk = p.dk, Q = w.q, l = p.seqlen, dv1 = io.dv1;
  const auto [bi, t0, len] = chunk_row(w.chunks, c);
  const std::int64_t gi = head / (h / p.ngroups), base = c * h + head;
  const double* b = w.b + base * Q * dk;
  float* A = w.A + base * Q * Q;
  const float *Ke = w.Ke + base * Q * dk, *Hin = w.Hin + base * dv1 * dk, *D = w.D + base * dv1 * dk;
  const std::int64_t row0 = bi * l + t0, xs = h * dv1, qs = p.ngroups * dk, hs = h * dk;
  const float* x = io.x + (row0 * h + head) * dv1;  // step t, column j at x[t xs + j]
  const float* gy = gio.gy + (row0 * h + head) * dv1;
  const float* q = io.q + (row0 * p.ngroups + gi) * dk;  // step t at q[t qs]
  const float* k = io.k + (row0 * p.ngroups + gi) * dk;
  float* gq = w.gq + (row0 * h + head) * dk;  // step t at gq[t hs]
  float* gk = w.gk + (row0 * h + head) * dk;
  // 1. ḡx_tj = Σ_{s>=t} A_st ḡy_sj + Σ_i Ke_ti D_ji
  for (std::int64_t e = threadIdx.x; e < len * dv1; e += kGlaThreads) {
    const std::int64_t t = e / dv1, j = e % dv1;
    float acc = 0.0f;
    for (std::int64_t s = t; s < len; ++s) acc += A[s * Q + t] * gy[s * xs + j];
    for (std::int64_t i = 0; i < dk; ++i) acc += Ke[t * dk + i] * D[j * dk + i];
    gio.gx[(row0 + t) * xs + head * dv1 + j] = acc;
  }
  __syncthreads();  // every read of A is done
  // 2. ḡA_ts = ḡy_t · x_s for s <= t, in A's place
  for (std::int64_t e = threadIdx.x; e < len * len; e += kGlaThreads) {
    const std::int64_t t = e / len, s = e % len;
    float acc = 0.0f;
    if (s <= t)
      for (std::int64_t j = 0; j < dv1; ++j) acc += gy[t * xs + j] * x[s * xs + j];
    A[t * Q + s] = acc;
  }
  __syncthreads();
  // 3. ḡq̃ and ḡk̃, one (step, channel) per thread; every exponent is of a difference <= 0
  for (std::int64_t e = threadIdx.x; e < len * dk; e += kGlaThreads) {
    const std::int64_t t = e / dk, i = e % dk;
    const double bt = b[t * dk + i], blast = b[(len - 1) * dk + i];
    float from_state = 0.0f, from_next = 0.0f;
    for (std::int64_t j = 0; j < dv1; ++j) {
      from_state += gy[t * xs + j] * Hin[j * dk + i];
      from_next += x[t * xs + j] * D[j * dk + i];
    }
    float dq = scalar::exp(static_cast<float>(bt)) * from_state;
    float dk_ = scalar::exp(static_cast<float>(blast - bt)) * from_next;
    for (std::int64_t s = 0; s <= t; ++s)
      dq += A[t * Q + s] * k[s * qs + i] * scalar::exp(static_cast<float>(bt - b[s * dk + i]));
    for (std::int64_t u = t; u < len; ++u)
      dk_ += A[u * Q + t] * q[u * qs + i] * scalar::exp(static_cast<float>(b[u * dk + i] - bt));
    gq[t * hs + i] = dq;
    gk[t * hs + i] = dk_;
  }
}

/// The gate's gradient, one (sequence, head, key channel) per thread: the final state's term, then the reverse running
/// sum of q̃ ⊙ ḡq̃ − k̃ ⊙ ḡk̃ over the sequence's steps, in double, stored at each step in In.
template <class In>
__global__ void __launch_bounds__(kLaThreads)
    gla_gate_grad_kernel(LinearAttentionParams p, GlaWorkspace w, GlaIo io, GlaGradIo gio) {
  const std::int64_t h = p.nheads, dk = p.dk, dv1 = io.dv1, gr = p.ngroups, l = p.seqlen;
  const std::int64_t rows = p.cu_seqlens ? p.n_seqs : p.batch;  // (cu_seqlens is host memory: the chunk table has it)
  for (std::int64_t e = la_first(); e < rows * h * dk; e += la_stride()) {
    const std::int64_t i = e % dk, st = e / dk, head = st % h, s = st / h, gi = head / (h / gr);
    double acc = 0.0;
    if (gio.GF)
      for (std::int64_t j = 0; j < dv1; ++j)
        acc += static_cast<double>(gio.GF[(st * dv1 + j) * dk + i]) * static_cast<double>(w.H[(st * dv1 + j) * dk + i]);
    for (std::int64_t c = w.first_chunk[s + 1] - 1; c >= w.first_chunk[s]; --c) {
      const ChunkRow ch = chunk_row(w.chunks, c);
      const std::int64_t row0 = ch.row * l + ch.t0;
      for (std::int64_t t = ch.len - 1; t >= 0; --t) {
        const std::int64_t at = ((row0 + t) * h + head) * dk + i, qk = ((row0 + t) * gr + gi) * dk + i;
        acc += static_cast<double>(io.q[qk]) * static_cast<double>(w.gq[at]) -
               static_cast<double>(io.k[qk]) * static_cast<double>(w.gk[at]);
        store_float(static_cast<In*>(gio.grad_log_gate) + at, static_cast<float>(acc));
      }
    }
  }
}

/// gio.gq, gio.gk (b, l, g, dk): the per-head ḡq̃, ḡk̃ summed over each group's heads.
__global__ void __launch_bounds__(kLaThreads)
    gla_group_sum_kernel(LinearAttentionParams p, GlaWorkspace w, GlaGradIo gio) {
  const std::int64_t h = p.nheads, dk = p.dk, gr = p.ngroups, hpg = h / gr;
  for (std::int64_t e = la_first(); e < p.batch * p.seqlen * gr * dk; e += la_stride()) {
    const std::int64_t i = e % dk, gi = (e / dk) % gr, row = e / (dk * gr);
    float sq = 0.0f, sk = 0.0f;
    for (std::int64_t head = gi * hpg; head < (gi + 1) * hpg; ++head) {
      sq += w.gq[(row * h + head) * dk + i];
      sk += w.gk[(row * h + head) * dk + i];
    }
    gio.gq[e] = sq;
    gio.gk[e] = sk;
  }
}

}  // namespace ssm::kernels
