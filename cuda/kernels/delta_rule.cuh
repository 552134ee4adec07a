// The delta rule (DeltaNet, Gated DeltaNet) forward on CUDA (docs/delta_rule.md "On CUDA"): the chunked form of the CPU
// path (cpu/delta_rule.hpp) in two launches.
//
// 1. dr_chunk_kernel, every chunk of every head at once: the normalized rows Q̂ = scale n(q), K̂ = n(k), β, the
//    chunk's cumulative log decays cs_t = Σ_{s<=t} g_s (double), γ_t = exp(cs_t), ρ_t = exp(cs_last − cs_t), the
//    masked products M = (Q̂ K̂ᵀ ⊙ Γ) (s <= t) and A = strictly-lower(diag(β) (K̂ K̂ᵀ ⊙ Γ)), Γ_ts = exp(cs_t − cs_s),
//    and the WY / UT transform R = [Ũ | W] = (I + A)⁻¹ [diag(β) V | diag(β γ) K̂] by forward substitution, one column
//    per thread. None of it depends on the state.
// 2. dr_state_kernel, the chunks of each sequence in order: U = Ũ − W S_in, y = diag(γ) Q̂ S_in + M U, and
//    S ← γ_last S + K̂ᵀ diag(ρ) U. Every value column j of the state S (dk, dv) evolves on its own (the delta rule's
//    overwrite acts on keys), so one thread carries one column through the whole sequence, and a block holds 32 of
//    them: no barrier, no atomics.
// Every exponent is <= 0. All buffers are f32 (cs double) in the workspace laid out by kernels/launch/delta_rule.cuh.
#pragma once

#include <cstdint>

#include "chunk_columns.cuh"
#include "ssd_common.cuh"
#include "ssm/core/params/delta_rule.hpp"

namespace ssm::kernels {

inline constexpr int kDrThreads = 128;  // dr_chunk_kernel
inline constexpr int kDrColumns = 32;   // dr_state_kernel: value columns per block

/// Device pointers of one forward (per chunk c and head: base = c h + head; per sequence s and head: s h + head).
struct DrWorkspace {
  const std::int64_t* chunks = nullptr;       // (n_chunks, 4): batch row, t0, len, sequence
  const std::int64_t* first_chunk = nullptr;  // (rows + 1)
  std::int64_t q = 0;                         // the longest chunk
  double* cs = nullptr;                       // (n_chunks, h, q)
  float* gam = nullptr;                       // (n_chunks, h, q) γ_t
  float* rho = nullptr;                       // (n_chunks, h, q) ρ_t
  float* beta = nullptr;                      // (n_chunks, h, q)
  float* Qn = nullptr;                        // (n_chunks, h, q, dk) Q̂, then diag(γ) Q̂
  float* Kn = nullptr;                        // (n_chunks, h, q, dk) K̂, then diag(ρ) K̂
  float* R = nullptr;                         // (n_chunks, h, q, dv + dk) [Ũ | W]
  float* A = nullptr;                         // (n_chunks, h, q, q)
  float* M = nullptr;                         // (n_chunks, h, q, q)
  float* S = nullptr;                         // (rows, h, dk, dv) the running states
  float* U = nullptr;                         // (rows, h, q, dv) the current chunk's U (the forward's)
};

/// The backward's buffers (kernels/delta_rule_bwd.cuh), of the same layouts; null in the forward.
struct DrGradWorkspace {
  float* Sin = nullptr;   // (n_chunks, h, dk, dv) the state entering each chunk
  float* Uc = nullptr;    // (n_chunks, h, q, dv) each chunk's U, in U's place
  float* dS = nullptr;    // (n_chunks, h, dk, dv) the gradient of the state each chunk leaves
  float* dU = nullptr;    // (n_chunks, h, q, dv)
  float* dR = nullptr;    // (n_chunks, h, q, dv + dk) ḡR = [ḡU | −ḡU S_inᵀ], solved in place for ḡB
  float* E = nullptr;     // (n_chunks, h, q, q) the log decays' pair terms (with g)
  float* E2 = nullptr;    // (n_chunks, h, q, q) ḡA_ts Γ_ts (K̂ K̂ᵀ)_ts, β's pair terms
  double* dcs = nullptr;  // (n_chunks, h, 2 q) the log decays' gradient per step, then ρ's terms (with g)
  float* G = nullptr;     // (rows, h, dk, dv) the running gradient of the state
  float* gq = nullptr;    // (b, l, h, dk) ḡq̂ per head
  float* gk = nullptr;    // (b, l, h, dk) ḡk̂ per head
};

/// dst (dk) = mult n(src) (n: L2 normalization when p.l2_normalize), as the CPU path's load_normalized.
template <class In>
__device__ __forceinline__ void dr_load_normalized(const DeltaRuleParams& p, const In* src, float mult, float* dst) {
  for (std::int64_t i = 0; i < p.dk; ++i) dst[i] = load_float(src + i);
  const float m = (p.l2_normalize ? l2_inverse_norm(dst, p.dk, static_cast<float>(p.norm_eps)) : 1.0f) * mult;
  if (m != 1.0f)
    for (std::int64_t i = 0; i < p.dk; ++i) dst[i] *= m;
}

/// Grid (n_chunks, h), block kDrThreads.
template <class In>
__global__ void __launch_bounds__(kDrThreads) dr_chunk_kernel(DeltaRuleParams p, DrWorkspace w) {
  const std::int64_t c = blockIdx.x, head = blockIdx.y, h = p.nheads, dk = p.dk, dv = p.dv, Q = w.q;
  const auto [bi, t0, len] = chunk_row(w.chunks, c);
  const std::int64_t gi = head / (h / p.ngroups), base = c * h + head;
  const std::int64_t width = dv + dk;
  double* cs = w.cs + base * Q;
  float *gam = w.gam + base * Q, *rho = w.rho + base * Q, *beta = w.beta + base * Q;
  float *Qn = w.Qn + base * Q * dk, *Kn = w.Kn + base * Q * dk, *R = w.R + base * Q * width;
  float *A = w.A + base * Q * Q, *M = w.M + base * Q * Q;
  // 1. the normalized rows and β; thread 0: the cumulative log decays
  for (std::int64_t t = threadIdx.x; t < len; t += kDrThreads) {
    dr_load_normalized<In>(p, static_cast<const In*>(p.q) + p.q_at(bi, t0 + t, gi), static_cast<float>(p.scale),
                           Qn + t * dk);
    dr_load_normalized<In>(p, static_cast<const In*>(p.k) + p.k_at(bi, t0 + t, gi), 1.0f, Kn + t * dk);
    beta[t] = load_float(static_cast<const In*>(p.beta) + p.beta_at(bi, t0 + t, head));
  }
  if (threadIdx.x == 0) {
    double acc = 0.0;
    for (std::int64_t t = 0; t < len; ++t) {
      if (p.g) acc += static_cast<double>(load_float(static_cast<const In*>(p.g) + p.g_at(bi, t0 + t, head)));
      cs[t] = acc;
    }
  }
  __syncthreads();
  // 2. γ, ρ; M and A; the right-hand sides [diag(β) V | diag(β γ) K̂]
  for (std::int64_t t = threadIdx.x; t < len; t += kDrThreads) {
    gam[t] = static_cast<float>(scalar::exp(cs[t]));
    rho[t] = static_cast<float>(scalar::exp(cs[len - 1] - cs[t]));
  }
  for (std::int64_t e = threadIdx.x; e < len * len; e += kDrThreads) {
    const std::int64_t t = e / len, s = e % len;
    float m = 0.0f, a = 0.0f;
    if (s <= t) {
      const float decay = static_cast<float>(scalar::exp(cs[t] - cs[s]));  // <= 1
      float qk = 0.0f, kk = 0.0f;
      for (std::int64_t i = 0; i < dk; ++i) {
        qk += Qn[t * dk + i] * Kn[s * dk + i];
        kk += Kn[t * dk + i] * Kn[s * dk + i];
      }
      m = qk * decay;
      if (s < t) a = kk * (beta[t] * decay);
    }
    M[t * Q + s] = m;
    A[t * Q + s] = a;
  }
  for (std::int64_t e = threadIdx.x; e < len * width; e += kDrThreads) {
    const std::int64_t t = e / width, j = e % width;
    R[e] = j < dv ? beta[t] * load_float(static_cast<const In*>(p.v) + p.v_at(bi, t0 + t, head) + j)
                  : beta[t] * static_cast<float>(scalar::exp(cs[t])) * Kn[t * dk + (j - dv)];
  }
  __syncthreads();
  // 3. (I + A) R = B by forward substitution, each column on its own thread; the decays on Q̂ and K̂ for the walk
  for (std::int64_t e = threadIdx.x; e < len * dk; e += kDrThreads) {
    Qn[e] *= gam[e / dk];
    Kn[e] *= rho[e / dk];
  }
  for (std::int64_t j = threadIdx.x; j < width; j += kDrThreads)
    for (std::int64_t t = 1; t < len; ++t) {
      float acc = R[t * width + j];
      for (std::int64_t s = 0; s < t; ++s) acc -= A[t * Q + s] * R[s * width + j];
      R[t * width + j] = acc;
    }
}

/// Grid (ceil(dv / kDrColumns), h, rows), block kDrColumns: thread j carries value column j of one sequence's state.
/// With the backward's workspace (gw.Sin, gw.Uc) it keeps each chunk's entering state and U.
template <class In>
__global__ void __launch_bounds__(kDrColumns) dr_state_kernel(DeltaRuleParams p, DrWorkspace w, DrGradWorkspace gw) {
  const std::int64_t j = static_cast<std::int64_t>(blockIdx.x) * kDrColumns + threadIdx.x;
  const std::int64_t head = blockIdx.y, s = blockIdx.z, h = p.nheads, dk = p.dk, dv = p.dv, Q = w.q;
  if (j >= dv) return;
  const std::int64_t width = dv + dk, state = (s * h + head) * dk * dv;
  float* S = w.S + state + j;  // column j: S[i dv]
  for (std::int64_t i = 0; i < dk; ++i)
    S[i * dv] = p.initial_state ? static_cast<const float*>(p.initial_state)[state + i * dv + j] : 0.0f;
  for (std::int64_t c = w.first_chunk[s]; c < w.first_chunk[s + 1]; ++c) {
    const auto [bi, t0, len] = chunk_row(w.chunks, c);
    const std::int64_t base = c * h + head;
    const float* gam = w.gam + base * Q;
    const float *Qn = w.Qn + base * Q * dk, *Kn = w.Kn + base * Q * dk, *R = w.R + base * Q * width;
    const float* M = w.M + base * Q * Q;
    // U[t dv]: the backward keeps every chunk's U (and entering state), the forward one per sequence
    float* U = gw.Uc ? gw.Uc + base * Q * dv + j : w.U + (s * h + head) * Q * dv + j;
    if (gw.Sin)
      for (std::int64_t i = 0; i < dk; ++i) gw.Sin[base * dk * dv + i * dv + j] = S[i * dv];
    for (std::int64_t t = 0; t < len; ++t) {  // U = Ũ − W S_in
      float u = R[t * width + j];
      for (std::int64_t i = 0; i < dk; ++i) u -= R[t * width + dv + i] * S[i * dv];
      U[t * dv] = u;
    }
    // y = diag(γ) Q̂ S_in + M U, then S = γ_last S_in + K̂ᵀ diag(ρ) U
    chunk_column(len, dk, Q, Qn, M, Kn, gam + len - 1, 0, U, dv, S, dv, [&](std::int64_t t, float y) {
      if (p.out) store_float(static_cast<In*>(p.out) + p.out_at(bi, t0 + t, head) + j, y);
    });
  }
  if (p.final_state)
    for (std::int64_t i = 0; i < dk; ++i) static_cast<float*>(p.final_state)[state + i * dv + j] = S[i * dv];
}

}  // namespace ssm::kernels
