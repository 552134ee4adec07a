// Chunked SSD backward, the state gradient each chunk's own outputs give (docs/ssd.md "CUDA backward"): per
// (chunk, head), from y_t's inter-chunk term exp(cs_t) C_t H_inᵀ,
//   E_c (p, n) = Σ_t exp(cs_t) ḡy_t C_tᵀ,      ḡy = ḡout silu(z),
// a (p × len) by (len × n) product shaped like the forward's chunk state (ssd_chunk_state.cuh): a block computes one
// kSsdTile × kSsdTile tile of E, the steps staged through shared memory kSsdTile at a time (ḡy weighted by
// exp(cs_t) <= 1 as it is loaded, and C), each thread accumulating 2 × 2 outputs.
#pragma once

#include "ssd_common.cuh"

namespace ssm::kernels {

/// Grid (n_chunks, h, p tiles × n tiles), block kSsdThreads. Writes gw.dstates. In: C, z and grad_out's dtype.
template <class In>
__global__ void __launch_bounds__(kSsdThreads, kSsdMinBlocks)
    ssd_chunk_state_grad_kernel(SsdParams p, SsdGradParams g, SsdWorkspace ws, SsdGradWorkspace gw) {
  SSM_SHARED(float, gyw, kSsdTile * kSsdPitch);  // (step, p) weighted ḡy
  SSM_SHARED(float, Cs, kSsdTile * kSsdPitch);   // (step, n)
  const int tid = static_cast<int>(threadIdx.x), ty = tid / kSsdHalf, tx = tid % kSsdHalf;
  const index_t c = blockIdx.x, head = blockIdx.y;
  const index_t P = p.headdim, N = p.dstate, n_tiles = (N + kSsdTile - 1) / kSsdTile;
  const index_t p0 = (blockIdx.z / n_tiles) * kSsdTile, n0 = (blockIdx.z % n_tiles) * kSsdTile;
  const auto [row, t0, len] = chunk_row(ws.chunks, c);
  const index_t group = head / (p.nheads / p.ngroups);
  const double* cs = ws.cs + (c * p.nheads + head) * ws.q;
  const In* C = static_cast<const In*>(p.C) + row * p.C_batch_stride + t0 * p.C_seq_stride + group * p.C_group_stride;

  float acc[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
  for (index_t s0 = 0; s0 < len; s0 += kSsdTile) {
    for (int e = tid; e < kSsdTile * kSsdTile; e += kSsdThreads) {
      const int ss = e / kSsdTile, cc = e % kSsdTile;
      const index_t t = s0 + ss;
      float gv = 0.0f, cv = 0.0f;
      if (t < len && p0 + cc < P)
        gv = ssd_grad_y<In>(p, g, row, t0 + t, head, p0 + cc) * scalar::exp(static_cast<float>(cs[t]));
      if (t < len && n0 + cc < N) cv = load_float(C + t * p.C_seq_stride + n0 + cc);
      gyw[ss * kSsdPitch + cc] = gv;
      Cs[ss * kSsdPitch + cc] = cv;
    }
    __syncthreads();
    for (int k = 0; k < kSsdTile; ++k) {
      SSM_UNROLL
      for (int a = 0; a < 2; ++a) {
        const float ga = gyw[k * kSsdPitch + ty + a * kSsdHalf];
        SSM_UNROLL
        for (int b = 0; b < 2; ++b) acc[a][b] += ga * Cs[k * kSsdPitch + tx + b * kSsdHalf];
      }
    }
    __syncthreads();  // the next steps overwrite gyw and Cs
  }
  float* E = gw.dstates + (c * p.nheads + head) * P * N;  // (p, n)
  SSM_UNROLL
  for (int a = 0; a < 2; ++a)
    SSM_UNROLL
    for (int b = 0; b < 2; ++b) {
      const index_t pp = p0 + ty + a * kSsdHalf, nn = n0 + tx + b * kSsdHalf;
      if (pp < P && nn < N) E[pp * N + nn] = acc[a][b];
    }
}

}  // namespace ssm::kernels
