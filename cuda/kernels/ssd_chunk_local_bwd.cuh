// Chunked SSD backward, the intra-chunk products' gradient (docs/ssd.md "CUDA backward"; the CPU's
// chunk_local_backward.hpp): per (chunk, head), with the decay mask L_ts = exp(cs_t − cs_s) (s <= t) and
// M = (C Bᵀ) ⊙ L, the forward's Y = M (Δ x) gives
//   ḡ(C Bᵀ)_ts = ⟨ḡy_t, x_s⟩ Δ_s L_ts   (this head's part; ssd_bc_bwd.cuh sums the group's heads into ḡC and ḡB),
//   R_ts = ḡ(C Bᵀ)_ts (C_t · B_s):   ḡcs_t += Σ_s R_ts,   ḡcs_s −= Σ_t R_ts    (d L_ts / d cs_t = L_ts = −d L_ts / d cs_s).
// A block owns a kSsdTile × kSsdTile tile (t, s) on or below the diagonal: ⟨ḡy_t, x_s⟩ reduced over p and C_t · B_s
// over n, both staged through shared memory kSsdTile columns at a time. It stores the tile of ḡ(C Bᵀ) (zero above
// the diagonal) in gw.dG; R's row sums are a shuffle sum over a row's 16 lanes, its column sums go through shared
// memory; one atomicAdd per row and per column (the tiles of a chunk share ḡcs).
#pragma once

#include "ssd_common.cuh"

namespace ssm::kernels {

/// Grid (n_chunks, h, step tiles × step tiles), block kSsdThreads; tiles above the diagonal or past a chunk's
/// length return at once. Writes gw.dG's lower tiles, adds to gw.dcs.
template <class In>
__global__ void __launch_bounds__(kSsdThreads, kSsdMinBlocks)
    ssd_chunk_local_bwd_kernel(SsdParams p, SsdGradParams g, SsdWorkspace ws, SsdGradWorkspace gw) {
  SSM_SHARED(float, Ls, kSsdTile * kSsdPitch);  // (t, p) of ḡy, or (t, n) of C
  SSM_SHARED(float, Rs, kSsdTile * kSsdPitch);  // (s, p) of x, or (s, n) of B
  SSM_SHARED(float, red, kSsdHalf * kSsdTile);  // (thread row, s): R's partial column sums
  const int tid = static_cast<int>(threadIdx.x), ty = tid / kSsdHalf, tx = tid % kSsdHalf;
  const index_t c = blockIdx.x, head = blockIdx.y;
  const index_t P = p.headdim, N = p.dstate, q_tiles = (ws.q + kSsdTile - 1) / kSsdTile;
  const index_t r0 = (blockIdx.z / q_tiles) * kSsdTile, s0 = (blockIdx.z % q_tiles) * kSsdTile;
  const auto [row, t0, len] = chunk_row(ws.chunks, c);
  if (r0 >= len || s0 > r0) return;  // the whole block
  const index_t group = head / (p.nheads / p.ngroups);
  const double* cs = ws.cs + (c * p.nheads + head) * ws.q;
  const float* Delta = ws.Delta + (c * p.nheads + head) * ws.q;
  const In* x = static_cast<const In*>(p.x) + row * p.x_batch_stride + t0 * p.x_seq_stride + head * p.x_head_stride;
  const In* B = static_cast<const In*>(p.B) + row * p.B_batch_stride + t0 * p.B_seq_stride + group * p.B_group_stride;
  const In* C = static_cast<const In*>(p.C) + row * p.C_batch_stride + t0 * p.C_seq_stride + group * p.C_group_stride;

  float qa[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};  // (t, s): ⟨ḡy_t, x_s⟩
  for (index_t k0 = 0; k0 < P; k0 += kSsdTile) {
    for (int e = tid; e < kSsdTile * kSsdTile; e += kSsdThreads) {
      const int rr = e / kSsdTile, kk = e % kSsdTile;
      const index_t t = r0 + rr, s = s0 + rr;
      Ls[rr * kSsdPitch + kk] = t < len && k0 + kk < P ? ssd_grad_y<In>(p, g, row, t0 + t, head, k0 + kk) : 0.0f;
      Rs[rr * kSsdPitch + kk] = s < len && k0 + kk < P ? load_float(x + s * p.x_seq_stride + k0 + kk) : 0.0f;
    }
    __syncthreads();
    for (int k = 0; k < kSsdTile; ++k) {
      SSM_UNROLL
      for (int a = 0; a < 2; ++a) {
        const float la = Ls[(ty + a * kSsdHalf) * kSsdPitch + k];
        SSM_UNROLL
        for (int b = 0; b < 2; ++b) qa[a][b] += la * Rs[(tx + b * kSsdHalf) * kSsdPitch + k];
      }
    }
    __syncthreads();  // the next columns overwrite Ls and Rs
  }
  float ga[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};  // (t, s): C_t · B_s
  for (index_t k0 = 0; k0 < N; k0 += kSsdTile) {
    for (int e = tid; e < kSsdTile * kSsdTile; e += kSsdThreads) {
      const int rr = e / kSsdTile, kk = e % kSsdTile;
      const index_t t = r0 + rr, s = s0 + rr;
      Ls[rr * kSsdPitch + kk] = t < len && k0 + kk < N ? load_float(C + t * p.C_seq_stride + k0 + kk) : 0.0f;
      Rs[rr * kSsdPitch + kk] = s < len && k0 + kk < N ? load_float(B + s * p.B_seq_stride + k0 + kk) : 0.0f;
    }
    __syncthreads();
    for (int k = 0; k < kSsdTile; ++k) {
      SSM_UNROLL
      for (int a = 0; a < 2; ++a) {
        const float la = Ls[(ty + a * kSsdHalf) * kSsdPitch + k];
        SSM_UNROLL
        for (int b = 0; b < 2; ++b) ga[a][b] += la * Rs[(tx + b * kSsdHalf) * kSsdPitch + k];
      }
    }
    __syncthreads();  // the next columns overwrite Ls and Rs
  }

  float* dG = gw.dG + (c * p.nheads + head) * ws.q * ws.q;  // (q, q): row t, column s
  float* dcs = gw.dcs + (c * p.nheads + head) * ws.q;
  float colsum[2] = {0.0f, 0.0f};
  SSM_UNROLL
  for (int a = 0; a < 2; ++a) {
    const index_t t = r0 + ty + a * kSsdHalf;
    float rsum = 0.0f;
    SSM_UNROLL
    for (int b = 0; b < 2; ++b) {
      const index_t s = s0 + tx + b * kSsdHalf;
      if (t >= len || s >= len) continue;
      float d = 0.0f;  // s > t: masked, never exponentiated
      if (s <= t) d = qa[a][b] * Delta[s] * scalar::exp(static_cast<float>(cs[t] - cs[s]));
      dG[t * ws.q + s] = d;
      const float r = d * ga[a][b];
      rsum += r;
      colsum[b] += r;
    }
    rsum = ssd_row_sum16(rsum);
    if (tx == 0 && t < len) atomicAdd(dcs + t, rsum);
  }
  SSM_UNROLL
  for (int b = 0; b < 2; ++b) red[ty * kSsdTile + tx + b * kSsdHalf] = colsum[b];
  __syncthreads();
  if (tid < kSsdTile && s0 + tid < len) {
    float v = 0.0f;
    for (int r = 0; r < kSsdHalf; ++r) v += red[r * kSsdTile + tid];
    atomicAdd(dcs + s0 + tid, -v);
  }
}

}  // namespace ssm::kernels
