// Chunked SSD stage 0, the gate's cumulative sums (docs/ssd.md "CUDA"): per (chunk, head) the step sizes
// Δ_t = step_size(dt_t + dt_bias) (softplus, then the dt limit: core/scalar.hpp, the one definition) and
// cs_t = Σ_{k<=t} Δ_k A inside the chunk, in double. One warp per (chunk, head): 32 steps at a time, a shuffle scan
// of the 32, the running sum carried from lane 31.
#pragma once

#include "ssd_common.cuh"

namespace ssm::kernels {

/// Grid (n_chunks, h), block 32. Writes Delta and cs of the chunk's len steps (the rest of the q row is not read).
__global__ void __launch_bounds__(32) ssd_chunk_cumsum_kernel(SsdParams p, SsdWorkspace ws) {
  const int lane = static_cast<int>(threadIdx.x);
  const index_t c = blockIdx.x, head = blockIdx.y;
  const auto [row, t0, len] = chunk_row(ws.chunks, c);
  const float A = static_cast<const float*>(p.A)[head];
  const float bias = p.dt_bias ? static_cast<const float*>(p.dt_bias)[head] : 0.0f;
  const float* dt = static_cast<const float*>(p.dt) + row * p.dt_batch_stride + head * p.dt_head_stride;
  double* cs = ws.cs + (c * p.nheads + head) * ws.q;
  float* Delta = ws.Delta + (c * p.nheads + head) * ws.q;
  double carry = 0.0;
  for (index_t base = 0; base < len; base += 32) {
    const index_t t = base + lane;
    float d = 0.0f;
    if (t < len) d = scalar::step_size(dt[(t0 + t) * p.dt_seq_stride] + bias, p.dt_softplus, p.has_dt_limit,
                                       p.dt_min, p.dt_max);
    double s = static_cast<double>(d) * static_cast<double>(A);
    SSM_UNROLL
    for (int off = 1; off < 32; off <<= 1) {
      const double v = __shfl_up_sync(0xffffffffu, s, static_cast<unsigned>(off));
      if (lane >= off) s += v;
    }
    s += carry;
    if (t < len) {
      Delta[t] = d;
      cs[t] = s;
    }
    carry = __shfl_sync(0xffffffffu, s, 31);
  }
}

}  // namespace ssm::kernels
