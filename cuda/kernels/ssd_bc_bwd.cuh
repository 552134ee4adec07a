// Chunked SSD backward, the gradients of C and B (docs/ssd.md "CUDA backward"; the CPU's backward.hpp pass 3): per
// (chunk, group), summed over the group's heads (B and C are shared by them),
//   ḡC_t = Σ_heads [ Σ_{s<=t} ḡ(C Bᵀ)_ts B_s  +  exp(cs_t) ḡy_t H_in ],      ḡcs_t += exp(cs_t) ⟨C_t, ḡy_t H_in⟩,
//   ḡB_s = Σ_heads [ Σ_{t>=s} ḡ(C Bᵀ)_ts C_t  +  w_s x_s ḡS ],                 w_s = exp(cs_last − cs_s) Δ_s,
// with ḡ(C Bᵀ) from ssd_chunk_local_bwd.cuh (gw.dG), H_in the state entering the chunk (ws.states) and ḡS the
// gradient of the state it leaves (gw.dstates). A block owns a kSsdTile × kSsdTile tile (steps × n) and loops over
// the group's heads, so every element of ḡB and ḡC is written once, by one block, without atomics. Each product is
// staged through shared memory kSsdTile deep; the inter-chunk ḡcs_t is a shuffle sum over a row's 16 lanes and one
// atomicAdd per row (the n tiles share it).
#pragma once

#include "ssd_common.cuh"

namespace ssm::kernels {

/// Grid (n_chunks, g, step tiles × n tiles), block kSsdThreads; tiles past a chunk's length return at once.
/// Writes g.grad_C, adds to gw.dcs.
template <class In>
__global__ void __launch_bounds__(kSsdThreads, kSsdMinBlocks)
    ssd_grad_C_kernel(SsdParams p, SsdGradParams g, SsdWorkspace ws, SsdGradWorkspace gw) {
  SSM_SHARED(float, As, kSsdTile * kSsdPitch);  // (t, s) of ḡ(C Bᵀ), or (t, p) of ḡy
  SSM_SHARED(float, Ks, kSsdTile * kSsdPitch);  // (s, n) of B, or (p, n) of H_in
  const int tid = static_cast<int>(threadIdx.x), ty = tid / kSsdHalf, tx = tid % kSsdHalf;
  const index_t c = blockIdx.x, group = blockIdx.y;
  const index_t P = p.headdim, N = p.dstate, n_tiles = (N + kSsdTile - 1) / kSsdTile;
  const index_t r0 = (blockIdx.z / n_tiles) * kSsdTile, n0 = (blockIdx.z % n_tiles) * kSsdTile;
  const auto [row, t0, len] = chunk_row(ws.chunks, c);
  if (r0 >= len) return;  // the whole block
  const index_t hpg = p.nheads / p.ngroups;
  const In* B = static_cast<const In*>(p.B) + row * p.B_batch_stride + t0 * p.B_seq_stride + group * p.B_group_stride;
  const In* C = static_cast<const In*>(p.C) + row * p.C_batch_stride + t0 * p.C_seq_stride + group * p.C_group_stride;

  float acc[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
  for (index_t head = group * hpg; head < (group + 1) * hpg; ++head) {
    const float* dG = gw.dG + (c * p.nheads + head) * ws.q * ws.q;
    const float* H = ws.states + (c * p.nheads + head) * P * N;  // (p, n) entering the chunk
    const double* cs = ws.cs + (c * p.nheads + head) * ws.q;
    // Σ_{s<=t} ḡ(C Bᵀ)_ts B_s: the tiles of earlier steps up to the diagonal one.
    for (index_t s0 = 0; s0 <= r0; s0 += kSsdTile) {
      for (int e = tid; e < kSsdTile * kSsdTile; e += kSsdThreads) {
        const int rr = e / kSsdTile, kk = e % kSsdTile;
        const index_t t = r0 + rr, s = s0 + rr;
        As[rr * kSsdPitch + kk] = t < len && s0 + kk < len ? dG[t * ws.q + s0 + kk] : 0.0f;
        Ks[rr * kSsdPitch + kk] = s < len && n0 + kk < N ? load_float(B + s * p.B_seq_stride + n0 + kk) : 0.0f;
      }
      __syncthreads();
      for (int k = 0; k < kSsdTile; ++k) {
        SSM_UNROLL
        for (int a = 0; a < 2; ++a) {
          const float v = As[(ty + a * kSsdHalf) * kSsdPitch + k];
          SSM_UNROLL
          for (int b = 0; b < 2; ++b) acc[a][b] += v * Ks[k * kSsdPitch + tx + b * kSsdHalf];
        }
      }
      __syncthreads();  // the next tile overwrites As and Ks
    }
    // W (t, n) = Σ_p ḡy_t[p] H_in[p, n]; ḡC_t += exp(cs_t) W_t, ḡcs_t += exp(cs_t) ⟨C_t, W_t⟩.
    float w[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
    for (index_t k0 = 0; k0 < P; k0 += kSsdTile) {
      for (int e = tid; e < kSsdTile * kSsdTile; e += kSsdThreads) {
        const int rr = e / kSsdTile, kk = e % kSsdTile;
        const index_t t = r0 + rr;
        As[rr * kSsdPitch + kk] = t < len && k0 + kk < P ? ssd_grad_y<In>(p, g, row, t0 + t, head, k0 + kk) : 0.0f;
        Ks[rr * kSsdPitch + kk] = k0 + rr < P && n0 + kk < N ? H[(k0 + rr) * N + n0 + kk] : 0.0f;
      }
      __syncthreads();
      for (int k = 0; k < kSsdTile; ++k) {
        SSM_UNROLL
        for (int a = 0; a < 2; ++a) {
          const float v = As[(ty + a * kSsdHalf) * kSsdPitch + k];
          SSM_UNROLL
          for (int b = 0; b < 2; ++b) w[a][b] += v * Ks[k * kSsdPitch + tx + b * kSsdHalf];
        }
      }
      __syncthreads();  // the next columns (or head) overwrite As and Ks
    }
    SSM_UNROLL
    for (int a = 0; a < 2; ++a) {
      const index_t t = r0 + ty + a * kSsdHalf;
      const float e_t = t < len ? scalar::exp(static_cast<float>(cs[t < len ? t : 0])) : 0.0f;
      float dot = 0.0f;
      SSM_UNROLL
      for (int b = 0; b < 2; ++b) {
        const index_t nn = n0 + tx + b * kSsdHalf;
        if (t < len && nn < N) dot += load_float(C + t * p.C_seq_stride + nn) * w[a][b];
        acc[a][b] += e_t * w[a][b];
      }
      dot = ssd_row_sum16(dot);
      if (tx == 0 && t < len) atomicAdd(gw.dcs + (c * p.nheads + head) * ws.q + t, e_t * dot);
    }
  }
  SSM_UNROLL
  for (int a = 0; a < 2; ++a)
    SSM_UNROLL
    for (int b = 0; b < 2; ++b) {
      const index_t t = r0 + ty + a * kSsdHalf, nn = n0 + tx + b * kSsdHalf;
      if (t < len && nn < N && g.grad_C)
        store_float(static_cast<In*>(g.grad_C) + ((row * p.seqlen + t0 + t) * p.ngroups + group) * N + nn, acc[a][b]);
    }
}

/// Grid (n_chunks, g, step tiles × n tiles), block kSsdThreads; tiles past a chunk's length return at once.
/// Writes g.grad_B.
template <class In>
__global__ void __launch_bounds__(kSsdThreads, kSsdMinBlocks)
    ssd_grad_B_kernel(SsdParams p, SsdGradParams g, SsdWorkspace ws, SsdGradWorkspace gw) {
  SSM_SHARED(float, As, kSsdTile * kSsdPitch);  // (s, t) of ḡ(C Bᵀ)ᵀ, or (s, p) of w x
  SSM_SHARED(float, Ks, kSsdTile * kSsdPitch);  // (t, n) of C, or (p, n) of ḡS
  const int tid = static_cast<int>(threadIdx.x), ty = tid / kSsdHalf, tx = tid % kSsdHalf;
  const index_t c = blockIdx.x, group = blockIdx.y;
  const index_t P = p.headdim, N = p.dstate, n_tiles = (N + kSsdTile - 1) / kSsdTile;
  const index_t r0 = (blockIdx.z / n_tiles) * kSsdTile, n0 = (blockIdx.z % n_tiles) * kSsdTile;
  const auto [row, t0, len] = chunk_row(ws.chunks, c);
  if (r0 >= len) return;  // the whole block
  const index_t hpg = p.nheads / p.ngroups;
  const In* C = static_cast<const In*>(p.C) + row * p.C_batch_stride + t0 * p.C_seq_stride + group * p.C_group_stride;

  float acc[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
  for (index_t head = group * hpg; head < (group + 1) * hpg; ++head) {
    const float* dG = gw.dG + (c * p.nheads + head) * ws.q * ws.q;
    const float* dS = gw.dstates + (c * p.nheads + head) * P * N;  // (p, n): ḡS of the state the chunk leaves
    const double* cs = ws.cs + (c * p.nheads + head) * ws.q;
    const float* Delta = ws.Delta + (c * p.nheads + head) * ws.q;
    const double cs_last = cs[len - 1];
    const In* x = static_cast<const In*>(p.x) + row * p.x_batch_stride + t0 * p.x_seq_stride + head * p.x_head_stride;
    // Σ_{t>=s} ḡ(C Bᵀ)_ts C_t: the tiles of later steps from the diagonal one.
    for (index_t s0 = r0; s0 < len; s0 += kSsdTile) {
      for (int e = tid; e < kSsdTile * kSsdTile; e += kSsdThreads) {
        const int rr = e / kSsdTile, kk = e % kSsdTile;
        const index_t s = r0 + rr, t = s0 + rr;
        As[rr * kSsdPitch + kk] = s < len && s0 + kk < len ? dG[(s0 + kk) * ws.q + s] : 0.0f;
        Ks[rr * kSsdPitch + kk] = t < len && n0 + kk < N ? load_float(C + t * p.C_seq_stride + n0 + kk) : 0.0f;
      }
      __syncthreads();
      for (int k = 0; k < kSsdTile; ++k) {
        SSM_UNROLL
        for (int a = 0; a < 2; ++a) {
          const float v = As[(ty + a * kSsdHalf) * kSsdPitch + k];
          SSM_UNROLL
          for (int b = 0; b < 2; ++b) acc[a][b] += v * Ks[k * kSsdPitch + tx + b * kSsdHalf];
        }
      }
      __syncthreads();  // the next tile overwrites As and Ks
    }
    // Σ_p w_s x_s[p] ḡS[p, n].
    for (index_t k0 = 0; k0 < P; k0 += kSsdTile) {
      for (int e = tid; e < kSsdTile * kSsdTile; e += kSsdThreads) {
        const int rr = e / kSsdTile, kk = e % kSsdTile;
        const index_t s = r0 + rr;
        As[rr * kSsdPitch + kk] = s < len && k0 + kk < P ? load_float(x + s * p.x_seq_stride + k0 + kk) * Delta[s] *
                                                               scalar::exp(static_cast<float>(cs_last - cs[s]))
                                                         : 0.0f;
        Ks[rr * kSsdPitch + kk] = k0 + rr < P && n0 + kk < N ? dS[(k0 + rr) * N + n0 + kk] : 0.0f;
      }
      __syncthreads();
      for (int k = 0; k < kSsdTile; ++k) {
        SSM_UNROLL
        for (int a = 0; a < 2; ++a) {
          const float v = As[(ty + a * kSsdHalf) * kSsdPitch + k];
          SSM_UNROLL
          for (int b = 0; b < 2; ++b) acc[a][b] += v * Ks[k * kSsdPitch + tx + b * kSsdHalf];
        }
      }
      __syncthreads();  // the next columns (or head) overwrite As and Ks
    }
  }
  SSM_UNROLL
  for (int a = 0; a < 2; ++a)
    SSM_UNROLL
    for (int b = 0; b < 2; ++b) {
      const index_t s = r0 + ty + a * kSsdHalf, nn = n0 + tx + b * kSsdHalf;
      if (s < len && nn < N && g.grad_B)
        store_float(static_cast<In*>(g.grad_B) + ((row * p.seqlen + t0 + s) * p.ngroups + group) * N + nn, acc[a][b]);
    }
}

}  // namespace ssm::kernels
