// Chunked SSD stage 2, state passing (docs/ssd.md "CUDA"): per sequence and head, the chunks in order,
//   H_entering(c) = H,   H = exp(cs_last(c)) H + S(c),
// starting from the initial state (zero without one); the chunk states S are replaced in place by the states
// entering their chunks, and H after the sequence's last chunk is its final state. One thread per state element.
#pragma once

#include "ssd_common.cuh"

namespace ssm::kernels {

/// Grid (ceil(p n / kSsdPassThreads), h, rows), block kSsdPassThreads. Each element of states is read, then written,
/// by its one thread.
__global__ void __launch_bounds__(kSsdPassThreads) ssd_state_passing_kernel(SsdParams p, SsdWorkspace ws) {
  const index_t PN = p.headdim * p.dstate;
  const index_t e = static_cast<index_t>(blockIdx.x) * kSsdPassThreads + threadIdx.x;
  if (e >= PN) return;
  const index_t head = blockIdx.y, s = blockIdx.z, h = p.nheads;
  float H = p.initial_state ? static_cast<const float*>(p.initial_state)[(s * h + head) * PN + e] : 0.0f;
  for (index_t c = ws.first_chunk[s]; c < ws.first_chunk[s + 1]; ++c) {
    float* S = ws.states + (c * h + head) * PN + e;
    const float chunk_state = *S;
    *S = H;
    const index_t len = chunk_row(ws.chunks, c).len;
    H = scalar::exp(static_cast<float>(ws.cs[(c * h + head) * ws.q + len - 1])) * H + chunk_state;
  }
  if (p.final_state) static_cast<float*>(p.final_state)[(s * h + head) * PN + e] = H;
}

}  // namespace ssm::kernels
