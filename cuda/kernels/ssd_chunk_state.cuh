// Chunked SSD stage 1, the chunk states (docs/ssd.md "CUDA"): per (chunk, head) the state the chunk would leave from
// a zero start,   S (p, n) = Σ_t exp(cs_last − cs_t) Δ_t x_t B_tᵀ,   a (p × len) by (len × n) product with the
// decay weights folded into x. A block computes one kSsdTile × kSsdTile tile of S; the steps are staged through
// shared memory kSsdTile at a time (x weighted as it is loaded, and B), each thread accumulating 2 × 2 outputs.
#pragma once

#include "ssd_common.cuh"

namespace ssm::kernels {

/// Grid (n_chunks, h, p tiles × n tiles), block kSsdThreads. In: x and B's dtype (f32, f16, bf16), f32 compute.
template <class In>
__global__ void __launch_bounds__(kSsdThreads, kSsdMinBlocks) ssd_chunk_state_kernel(SsdParams p, SsdWorkspace ws) {
  SSM_SHARED(float, xw, kSsdTile * kSsdPitch);  // (step, p) weighted x
  SSM_SHARED(float, Bs, kSsdTile * kSsdPitch);  // (step, n)
  const int tid = static_cast<int>(threadIdx.x), ty = tid / kSsdHalf, tx = tid % kSsdHalf;
  const index_t c = blockIdx.x, head = blockIdx.y;
  const index_t P = p.headdim, N = p.dstate, n_tiles = (N + kSsdTile - 1) / kSsdTile;
  const index_t p0 = (blockIdx.z / n_tiles) * kSsdTile, n0 = (blockIdx.z % n_tiles) * kSsdTile;
  const auto [row, t0, len] = chunk_row(ws.chunks, c);
  const index_t group = head / (p.nheads / p.ngroups);
  const double* cs = ws.cs + (c * p.nheads + head) * ws.q;
  const float* Delta = ws.Delta + (c * p.nheads + head) * ws.q;
  const double cs_last = cs[len - 1];
  const In* x = static_cast<const In*>(p.x) + row * p.x_batch_stride + t0 * p.x_seq_stride + head * p.x_head_stride;
  const In* B = static_cast<const In*>(p.B) + row * p.B_batch_stride + t0 * p.B_seq_stride + group * p.B_group_stride;

  float acc[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
  for (index_t s0 = 0; s0 < len; s0 += kSsdTile) {
    for (int e = tid; e < kSsdTile * kSsdTile; e += kSsdThreads) {
      const int ss = e / kSsdTile, cc = e % kSsdTile;
      const index_t t = s0 + ss;
      float xv = 0.0f, bv = 0.0f;
      if (t < len && p0 + cc < P)
        xv = load_float(x + t * p.x_seq_stride + p0 + cc) * Delta[t] * scalar::exp(static_cast<float>(cs_last - cs[t]));
      if (t < len && n0 + cc < N) bv = load_float(B + t * p.B_seq_stride + n0 + cc);
      xw[ss * kSsdPitch + cc] = xv;
      Bs[ss * kSsdPitch + cc] = bv;
    }
    __syncthreads();
    for (int k = 0; k < kSsdTile; ++k) {
      SSM_UNROLL
      for (int a = 0; a < 2; ++a) {
        const float xa = xw[k * kSsdPitch + ty + a * kSsdHalf];
        SSM_UNROLL
        for (int b = 0; b < 2; ++b) acc[a][b] += xa * Bs[k * kSsdPitch + tx + b * kSsdHalf];
      }
    }
    __syncthreads();  // the next steps overwrite xw and Bs
  }
  float* S = ws.states + (c * p.nheads + head) * P * N;  // (p, n)
  SSM_UNROLL
  for (int a = 0; a < 2; ++a)
    SSM_UNROLL
    for (int b = 0; b < 2; ++b) {
      const index_t pp = p0 + ty + a * kSsdHalf, nn = n0 + tx + b * kSsdHalf;
      if (pp < P && nn < N) S[pp * N + nn] = acc[a][b];
    }
}

}  // namespace ssm::kernels
