// The delta rule's (DeltaNet, Gated DeltaNet) chunked backward on CUDA (docs/delta_rule.md "On CUDA"): the CPU path's
// chunked backward (cpu/delta_rule.hpp, whose header has the formulas) after the forward's two kernels
// (kernels/delta_rule.cuh) have run again keeping each chunk's entering state S_in and U. In the op's orientation
// S (dk, dv), with Γ_ts = exp(cs_t − cs_s), γ, ρ, M = Q̂ K̂ᵀ ⊙ Γ (s <= t), A, R = [Ũ | W] of the forward:
//
// 1. dr_state_grad_kernel walks each sequence's chunks in reverse with one thread per value column j, as the forward
//    walks them: the delta rule's value columns never mix, in the backward either. With D the gradient of the state a
//    chunk leaves (kept per chunk):
//      ḡU = Mᵀ ḡY + diag(ρ) K̂ D,      D ← γ_last D + Q̂ᵀ diag(γ) ḡY − Wᵀ ḡU.
// 2. dr_chunk_grad_kernel, every chunk of every head at once: with ḡR = [ḡU | −ḡU S_inᵀ] (U = Ũ − W S_in), the
//    transposed solve ḡB = (I + A)⁻ᵀ ḡR, the gradient of the right-hand sides B = [diag(β) V | diag(β γ) K̂], by
//    backward substitution (one column per thread); with ḡB = [ḡB_V | ḡB_W],
//      ḡM = lower(ḡY Uᵀ) ⊙ Γ,   ḡ(K̂K̂ᵀ) = diag(β) (ḡA ⊙ Γ) with ḡA = −strictly-lower(ḡB Rᵀ),
//      ḡQ̂ = diag(γ) ḡY S_inᵀ + ḡM K̂,
//      ḡK̂ = diag(ρ) U Dᵀ + ḡMᵀ Q̂ + diag(β γ) ḡB_W + (ḡ(K̂K̂ᵀ) + ḡ(K̂K̂ᵀ)ᵀ) K̂,
//      ḡv_t = β_t ḡB_V,t,   ḡβ_t = ḡB_V,t · v_t + γ_t ḡB_W,t · k̂_t + Σ_{s<t} ḡA_ts Γ_ts (K̂K̂ᵀ)_ts,
//    and with a gate the log decays' gradient, in double: each chunk's cs collects the terms of Γ, γ, ρ and γ_last, and
//    ḡg_t = Σ_{u>=t} ḡcs_u over the chunk (cs starts again at every chunk; the state carries the rest through γ_last).
// 3. dr_group_grad_kernel sums a group's heads, applies the scale and the L2 normalization's backward (from the raw
//    rows) and stores ḡq, ḡk.
// Every exponent is <= 0. The buffers are the workspace's (kernels/launch/delta_rule.cuh), f32 (ḡcs double).
#pragma once

#include <cstdint>

#include "delta_rule.cuh"

namespace ssm::kernels {

/// The incoming gradients and the outputs (DeltaRuleGradParams' pointers: In, and the states f32).
struct DrGradIo {
  const void* grad_out = nullptr;           // (b, l, h, dv) In, contiguous
  const float* grad_final_state = nullptr;  // (rows, h, dk, dv) or null (zero)
  float* grad_initial_state = nullptr;      // (rows, h, dk, dv) or null
  void *grad_q = nullptr, *grad_k = nullptr, *grad_v = nullptr, *grad_beta = nullptr, *grad_g = nullptr;  // or null
};

/// Grid (ceil(dv / kDrColumns), h, rows), block kDrColumns: thread j carries column j of one sequence's D, from the
/// final state's gradient back to the initial one's, leaving each chunk's D and ḡU.
template <class In>
__global__ void __launch_bounds__(kDrColumns)
    dr_state_grad_kernel(DeltaRuleParams p, DrWorkspace w, DrGradWorkspace gw, DrGradIo io) {
  const std::int64_t j = static_cast<std::int64_t>(blockIdx.x) * kDrColumns + threadIdx.x;
  const std::int64_t head = blockIdx.y, s = blockIdx.z, h = p.nheads, dk = p.dk, dv = p.dv, Q = w.q, l = p.seqlen;
  if (j >= dv) return;
  const std::int64_t width = dv + dk, state = (s * h + head) * dk * dv;
  float* D = gw.G + state + j;  // column j: D[i dv]
  for (std::int64_t i = 0; i < dk; ++i)
    D[i * dv] = io.grad_final_state ? io.grad_final_state[state + i * dv + j] : 0.0f;
  for (std::int64_t c = w.first_chunk[s + 1] - 1; c >= w.first_chunk[s]; --c) {
    const auto [bi, t0, len] = chunk_row(w.chunks, c);
    const std::int64_t base = c * h + head;
    const float *Qn = w.Qn + base * Q * dk, *Kn = w.Kn + base * Q * dk, *R = w.R + base * Q * width;  // γ Q̂, ρ K̂
    const float* M = w.M + base * Q * Q;
    float* dU = gw.dU + base * Q * dv + j;                                                     // dU[t dv]
    const In* gy = static_cast<const In*>(io.grad_out) + ((bi * l + t0) * h + head) * dv + j;  // gy[t h dv]
    const std::int64_t gs = h * dv;
    for (std::int64_t i = 0; i < dk; ++i) gw.dS[base * dk * dv + i * dv + j] = D[i * dv];
    for (std::int64_t t = 0; t < len; ++t) {  // ḡU_t = Σ_{u>=t} M_ut ḡy_u + ρ_t k̂_t · D
      float acc = 0.0f;
      for (std::int64_t u = t; u < len; ++u) acc += M[u * Q + t] * load_float(gy + u * gs);
      for (std::int64_t i = 0; i < dk; ++i) acc += Kn[t * dk + i] * D[i * dv];
      dU[t * dv] = acc;
    }
    const float gamma_last = w.gam[base * Q + len - 1];
    for (std::int64_t i = 0; i < dk; ++i) {  // D ← γ_last D + Σ_t (γ_t q̂_ti ḡy_t − W_ti ḡU_t)
      float acc = gamma_last * D[i * dv];
      for (std::int64_t t = 0; t < len; ++t)
        acc += Qn[t * dk + i] * load_float(gy + t * gs) - R[t * width + dv + i] * dU[t * dv];
      D[i * dv] = acc;
    }
  }
  if (io.grad_initial_state)
    for (std::int64_t i = 0; i < dk; ++i) io.grad_initial_state[state + i * dv + j] = D[i * dv];
}

/// Grid (n_chunks, h), block kDrThreads, after dr_state_grad_kernel: one chunk and head's ḡB, ḡQ̂ and ḡK̂ (per head,
/// into gw.gq, gw.gk), ḡv, ḡβ and ḡg. Overwrites the chunk's Q̂, K̂ (with their plain values), M (with ḡM) and A (with
/// ḡ(K̂K̂ᵀ)).
template <class In>
__global__ void __launch_bounds__(kDrThreads)
    dr_chunk_grad_kernel(DeltaRuleParams p, DrWorkspace w, DrGradWorkspace gw, DrGradIo io) {
  const std::int64_t c = blockIdx.x, head = blockIdx.y, h = p.nheads, dk = p.dk, dv = p.dv, Q = w.q, l = p.seqlen;
  const auto [bi, t0, len] = chunk_row(w.chunks, c);
  const std::int64_t gi = head / (h / p.ngroups), base = c * h + head;
  const std::int64_t width = dv + dk, row0 = bi * l + t0, last = len - 1;
  const double* cs = w.cs + base * Q;
  const float *gam = w.gam + base * Q, *rho = w.rho + base * Q, *beta = w.beta + base * Q;
  float *Qn = w.Qn + base * Q * dk, *Kn = w.Kn + base * Q * dk, *A = w.A + base * Q * Q, *M = w.M + base * Q * Q;
  const float *R = w.R + base * Q * width, *Sin = gw.Sin + base * dk * dv, *D = gw.dS + base * dk * dv;
  const float *U = gw.Uc + base * Q * dv, *dU = gw.dU + base * Q * dv;
  float *dR = gw.dR + base * Q * width, *E = gw.E ? gw.E + base * Q * Q : nullptr, *E2 = gw.E2 + base * Q * Q;
  const In* gy = static_cast<const In*>(io.grad_out) + (row0 * h + head) * dv;  // step t at gy[t h dv]
  const std::int64_t gs = h * dv;
  // 1. the plain Q̂, K̂ again; the right-hand sides [ḡU | −ḡU S_inᵀ]
  for (std::int64_t t = threadIdx.x; t < len; t += kDrThreads) {
    dr_load_normalized<In>(p, static_cast<const In*>(p.q) + p.q_at(bi, t0 + t, gi), static_cast<float>(p.scale),
                           Qn + t * dk);
    dr_load_normalized<In>(p, static_cast<const In*>(p.k) + p.k_at(bi, t0 + t, gi), 1.0f, Kn + t * dk);
  }
  for (std::int64_t e = threadIdx.x; e < len * width; e += kDrThreads) {
    const std::int64_t t = e / width, j = e % width;
    float acc = 0.0f;
    if (j < dv)
      acc = dU[t * dv + j];
    else
      for (std::int64_t m = 0; m < dv; ++m) acc -= dU[t * dv + m] * Sin[(j - dv) * dv + m];
    dR[e] = acc;
  }
  __syncthreads();
  // 2. (I + A)ᵀ ḡB = ḡR by backward substitution, each column on its own thread, in place
  for (std::int64_t j = threadIdx.x; j < width; j += kDrThreads)
    for (std::int64_t t = len - 2; t >= 0; --t) {
      float acc = dR[t * width + j];
      for (std::int64_t u = t + 1; u < len; ++u) acc -= A[u * Q + t] * dR[u * width + j];
      dR[t * width + j] = acc;
    }
  __syncthreads();  // every read of A is done
  // 3. the pair terms: ḡM ⊙ Γ into M, ḡ(K̂K̂ᵀ) into A, β's and the log decays' into E2 and E
  for (std::int64_t e = threadIdx.x; e < len * len; e += kDrThreads) {
    const std::int64_t t = e / len, s = e % len;
    float dqk = 0.0f, dkk = 0.0f, e1 = 0.0f, e2 = 0.0f;
    if (s <= t) {
      const float decay = static_cast<float>(scalar::exp(cs[t] - cs[s]));  // Γ_ts <= 1
      float dyu = 0.0f, qk = 0.0f, kk = 0.0f;
      for (std::int64_t j = 0; j < dv; ++j) dyu += load_float(gy + t * gs + j) * U[s * dv + j];
      for (std::int64_t i = 0; i < dk; ++i) {
        qk += Qn[t * dk + i] * Kn[s * dk + i];
        kk += Kn[t * dk + i] * Kn[s * dk + i];
      }
      dqk = dyu * decay;
      e1 = dqk * qk;
      if (s < t) {
        float da = 0.0f;
        for (std::int64_t j = 0; j < width; ++j) da -= dR[t * width + j] * R[s * width + j];
        e2 = da * decay * kk;
        dkk = beta[t] * da * decay;
      }
    }
    M[t * Q + s] = dqk;
    A[t * Q + s] = dkk;
    E2[t * Q + s] = e2;
    if (E) E[t * Q + s] = e1 + beta[t] * e2;
  }
  __syncthreads();
  // 4. ḡQ̂ and ḡK̂ per (step, key channel)
  for (std::int64_t e = threadIdx.x; e < len * dk; e += kDrThreads) {
    const std::int64_t t = e / dk, i = e % dk;
    float from_state = 0.0f, from_next = 0.0f;
    for (std::int64_t j = 0; j < dv; ++j) {
      from_state += load_float(gy + t * gs + j) * Sin[i * dv + j];
      from_next += U[t * dv + j] * D[i * dv + j];
    }
    float dq = gam[t] * from_state, dkv = rho[t] * from_next + beta[t] * gam[t] * dR[t * width + dv + i];
    for (std::int64_t s = 0; s <= t; ++s) dq += M[t * Q + s] * Kn[s * dk + i];
    for (std::int64_t u = t; u < len; ++u) dkv += M[u * Q + t] * Qn[u * dk + i];
    for (std::int64_t s = 0; s < t; ++s) dkv += A[t * Q + s] * Kn[s * dk + i];
    for (std::int64_t u = t + 1; u < len; ++u) dkv += A[u * Q + t] * Kn[u * dk + i];
    gw.gq[((row0 + t) * h + head) * dk + i] = dq;
    gw.gk[((row0 + t) * h + head) * dk + i] = dkv;
  }
  // ḡv
  if (io.grad_v)
    for (std::int64_t e = threadIdx.x; e < len * dv; e += kDrThreads) {
      const std::int64_t t = e / dv, j = e % dv;
      store_float(static_cast<In*>(io.grad_v) + ((row0 + t) * h + head) * dv + j, beta[t] * dR[t * width + j]);
    }
  // ḡβ, and the log decays' terms of one step each
  double* dcs = gw.dcs ? gw.dcs + base * 2 * Q : nullptr;
  for (std::int64_t t = threadIdx.x; t < len; t += kDrThreads) {
    float db2k = 0.0f, gb = 0.0f;
    for (std::int64_t i = 0; i < dk; ++i) db2k += dR[t * width + dv + i] * Kn[t * dk + i];
    for (std::int64_t j = 0; j < dv; ++j)
      gb += dR[t * width + j] * load_float(static_cast<const In*>(p.v) + p.v_at(bi, t0 + t, head) + j);
    gb += gam[t] * db2k;
    for (std::int64_t s = 0; s < t; ++s) gb += E2[t * Q + s];
    if (io.grad_beta) store_float(static_cast<In*>(io.grad_beta) + (row0 + t) * h + head, gb);
    if (dcs) {
      double kdu = 0.0, qsy = 0.0;  // ρ_t (K̂ D)_t · U_t and γ_t ḡy_t · (Q̂ S_in)_t
      for (std::int64_t j = 0; j < dv; ++j) {
        float kd = 0.0f, qs = 0.0f;
        for (std::int64_t i = 0; i < dk; ++i) {
          kd += Kn[t * dk + i] * D[i * dv + j];
          qs += Qn[t * dk + i] * Sin[i * dv + j];
        }
        kdu += static_cast<double>(kd) * static_cast<double>(U[t * dv + j]);
        qsy += static_cast<double>(qs) * static_cast<double>(load_float(gy + t * gs + j));
      }
      kdu *= static_cast<double>(rho[t]);
      double acc = -kdu + static_cast<double>(gam[t]) * qsy +
                   static_cast<double>(beta[t]) * static_cast<double>(db2k) * static_cast<double>(gam[t]);
      for (std::int64_t u = 0; u <= t; ++u) acc += static_cast<double>(E[t * Q + u]);   // Γ_tu's cs_t
      for (std::int64_t u = t; u < len; ++u) acc -= static_cast<double>(E[u * Q + t]);  // Γ_ut's cs_t
      dcs[t] = acc;
      dcs[Q + t] = kdu;
    }
  }
  __syncthreads();
  // 5. with a gate, one thread: cs_last's terms (ρ's, and γ_last ⟨D, S_in⟩), then ḡg_t = Σ_{u>=t} ḡcs_u
  if (dcs && threadIdx.x == 0) {
    double extra = 0.0, sd = 0.0;
    for (std::int64_t t = 0; t < len; ++t) extra += dcs[Q + t];
    for (std::int64_t e = 0; e < dk * dv; ++e) sd += static_cast<double>(D[e]) * static_cast<double>(Sin[e]);
    dcs[last] += extra + sd * static_cast<double>(gam[last]);
    double acc = 0.0;
    for (std::int64_t t = last; t >= 0; --t) {
      acc += dcs[t];
      if (io.grad_g) store_float(static_cast<In*>(io.grad_g) + (row0 + t) * h + head, static_cast<float>(acc));
    }
  }
}

/// ḡq, ḡk (b, l, g, dk) In, contiguous: a group's heads summed, then ḡq times the scale, then each through the L2
/// normalization's backward from its raw row (when p.l2_normalize; in double, as l2_normalize_grad). One (step, group)
/// per thread.
template <class In>
__global__ void __launch_bounds__(kDrThreads) dr_group_grad_kernel(DeltaRuleParams p, DrGradWorkspace gw, DrGradIo io) {
  const std::int64_t h = p.nheads, dk = p.dk, gr = p.ngroups, hpg = h / gr, l = p.seqlen;
  const std::int64_t n = p.batch * l * gr;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * kDrThreads + threadIdx.x; e < n;
       e += static_cast<std::int64_t>(gridDim.x) * kDrThreads) {
    const std::int64_t gi = e % gr, row = e / gr, bi = row / l, t = row % l;
    for (int which = 0; which < 2; ++which) {
      void* out = which == 0 ? io.grad_q : io.grad_k;
      if (!out) continue;
      const float* g = which == 0 ? gw.gq : gw.gk;
      const In* x =
          static_cast<const In*>(which == 0 ? p.q : p.k) + (which == 0 ? p.q_at(bi, t, gi) : p.k_at(bi, t, gi));
      const double mult = which == 0 ? p.scale : 1.0;
      const auto summed = [&](std::int64_t i) {
        float acc = 0.0f;
        for (std::int64_t hh = gi * hpg; hh < (gi + 1) * hpg; ++hh) acc += g[(row * h + hh) * dk + i];
        return static_cast<double>(acc) * mult;
      };
      double r = 0.0, inv = 1.0;
      if (p.l2_normalize) {
        double n2 = 0.0, d = 0.0;
        for (std::int64_t i = 0; i < dk; ++i) {
          const double xi = static_cast<double>(load_float(x + i));
          n2 += xi * xi, d += xi * summed(i);
        }
        r = d / (n2 + p.norm_eps), inv = 1.0 / scalar::sqrt(n2 + p.norm_eps);
      }
      for (std::int64_t i = 0; i < dk; ++i) {
        const double gx = p.l2_normalize ? inv * (summed(i) - static_cast<double>(load_float(x + i)) * r) : summed(i);
        store_float(static_cast<In*>(out) + e * dk + i, static_cast<float>(gx));
      }
    }
  }
}

}  // namespace ssm::kernels
