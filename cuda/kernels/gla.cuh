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
#pragma once

#include <cstdint>

#include "chunk_columns.cuh"
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
  float* H = nullptr;                         // (rows, h, dv1, dk) the running states
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

/// Grid (n_chunks, h), block kGlaThreads.
template <class In>
__global__ void __launch_bounds__(kGlaThreads)
    gla_chunk_kernel(LinearAttentionParams p, GlaWorkspace w, GlaIo io, const float* log_gamma) {
  const std::int64_t c = blockIdx.x, head = blockIdx.y, h = p.nheads, dk = p.dk, Q = w.q, l = p.seqlen;
  const std::int64_t bi = w.chunks[c * kSsdChunkFields], t0 = w.chunks[c * kSsdChunkFields + 1];
  const std::int64_t len = w.chunks[c * kSsdChunkFields + 2], gi = head / (h / p.ngroups), base = c * h + head;
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
    const std::int64_t bi = w.chunks[c * kSsdChunkFields], t0 = w.chunks[c * kSsdChunkFields + 1];
    const std::int64_t len = w.chunks[c * kSsdChunkFields + 2], base = c * h + head;
    const float *A = w.A + base * Q * Q, *Qe = w.Qe + base * Q * dk, *Ke = w.Ke + base * Q * dk;
    const float* dec = w.dec + base * dk;
    const float* x = io.x + ((bi * l + t0) * h + head) * dv1 + j;  // step t at x[t h dv1]
    float* y = io.y + ((bi * l + t0) * h + head) * dv1 + j;
    const std::int64_t step = h * dv1;
    chunk_column(len, dk, Q, Qe, A, Ke, dec, 1, x, step, H, 1, [&](std::int64_t t, float v) { y[t * step] = v; });
  }
  if (io.HT)
    for (std::int64_t i = 0; i < dk; ++i) io.HT[state + i] = H[i];
}

}  // namespace ssm::kernels
