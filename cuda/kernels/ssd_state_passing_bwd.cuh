// Chunked SSD backward, the reverse state passing (docs/ssd.md "CUDA backward"): per sequence and head, with
// H_in(c + 1) = a_c H_in(c) + S_c (a_c = exp(cs_last(c)), ssd_state_passing.cuh) and E_c from
// ssd_chunk_state_grad_kernel, from ḡH = ḡ(final state) (zero without one), for the chunks in reverse:
//   ḡS_c = ḡH,   ḡcs_last(c) += a_c ⟨ḡH, H_in(c)⟩,   ḡH = a_c ḡH + E_c;
// what is left in ḡH is the initial state's gradient. One thread per state element, as the forward; the inner
// product over the (p, n) elements of a (chunk, head) is a warp shuffle sum, then one over the block's warps in
// shared memory, then one atomicAdd per block (the blocks of a head's p n elements share it).
#pragma once

#include "ssd_common.cuh"

namespace ssm::kernels {

/// Grid (ceil(p n / kSsdPassThreads), h, rows), block kSsdPassThreads. Reads ws.states (the entering states) and
/// gw.dstates (E_c), which it replaces by ḡS_c; adds to gw.dcs; writes g.grad_initial_state when set.
__global__ void __launch_bounds__(kSsdPassThreads)
    ssd_state_passing_bwd_kernel(SsdParams p, SsdGradParams g, SsdWorkspace ws, SsdGradWorkspace gw) {
  constexpr int kWarps = kSsdPassThreads / 32;
  SSM_SHARED(float, red, 2 * kWarps);  // the warps' sums, two buffers by the chunk's parity
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  const index_t PN = p.headdim * p.dstate;
  const index_t e = static_cast<index_t>(blockIdx.x) * kSsdPassThreads + tid;
  const bool active = e < PN;  // every thread takes part in the reductions
  const index_t head = blockIdx.y, s = blockIdx.z, h = p.nheads;
  float dH = active && g.grad_final_state ? static_cast<const float*>(g.grad_final_state)[(s * h + head) * PN + e] : 0.0f;
  const index_t first = ws.first_chunk[s];
  for (index_t c = ws.first_chunk[s + 1] - 1; c >= first; --c) {
    const index_t len = chunk_row(ws.chunks, c).len;
    const float a = scalar::exp(static_cast<float>(ws.cs[(c * h + head) * ws.q + len - 1]));
    float ga = 0.0f;
    if (active) {
      float* dS = gw.dstates + (c * h + head) * PN + e;
      const float E = *dS;
      *dS = dH;
      ga = dH * ws.states[(c * h + head) * PN + e];
      dH = a * dH + E;
    }
    SSM_UNROLL
    for (int off = 16; off > 0; off >>= 1) ga += __shfl_xor_sync(0xffffffffu, ga, off);
    const int buf = static_cast<int>(c % 2) * kWarps;
    if (lane == 0) red[buf + warp] = ga;
    __syncthreads();  // the parity buffers: a warp writes this one again two chunks on, after the next barrier
    if (tid == 0) {
      float sum = 0.0f;
      for (int w = 0; w < kWarps; ++w) sum += red[buf + w];
      atomicAdd(gw.dcs + (c * h + head) * ws.q + len - 1, sum * a);
    }
  }
  if (active && g.grad_initial_state) static_cast<float*>(g.grad_initial_state)[(s * h + head) * PN + e] = dH;
}

}  // namespace ssm::kernels
