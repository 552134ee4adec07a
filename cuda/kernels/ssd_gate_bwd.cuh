// Chunked SSD backward, the gate's gradients (docs/ssd.md "CUDA backward"; the CPU's gate.hpp SsdGate::backward):
// per (chunk, head), from ḡcs (gw.dcs, every stage's part summed) and ḡΔ (gw.dDelta, x's part), with log a_t = Δ_t A
// and cs_t = Σ_{k<=t} log a_k,
//   ρ_t = Σ_{k>=t} ḡcs_k (ḡlog a_t),   ḡdt_t = (ḡΔ_t + A ρ_t) Δ'(dt_t + dt_bias),   ḡA += Σ_t Δ_t ρ_t,   ḡdt_bias += Σ_t ḡdt_t,
// Δ' = scalar::step_size_grad (the softplus' derivative, zero where the dt limit clamps). One warp per (chunk, head):
// 32 steps at a time from the chunk's end, a reverse shuffle scan in double, the carry from lane 0; ḡA and ḡdt_bias
// are a warp's shuffle sum and one atomicAdd (every chunk shares them). Also the zero fill of the summed buffers.
#pragma once

#include "ssd_common.cuh"

namespace ssm::kernels {

/// Grid (n_chunks, h), block 32. Writes g.grad_dt (contiguous (b, l, h)); adds to g.grad_A and g.grad_dt_bias.
__global__ void __launch_bounds__(32) ssd_gate_bwd_kernel(SsdParams p, SsdGradParams g, SsdWorkspace ws,
                                                          SsdGradWorkspace gw) {
  const int lane = static_cast<int>(threadIdx.x);
  const index_t c = blockIdx.x, head = blockIdx.y;
  const auto [row, t0, len] = chunk_row(ws.chunks, c);
  const float A = static_cast<const float*>(p.A)[head];
  const float bias = p.dt_bias ? static_cast<const float*>(p.dt_bias)[head] : 0.0f;
  const float* dt = static_cast<const float*>(p.dt) + row * p.dt_batch_stride + head * p.dt_head_stride;
  const float* dcs = gw.dcs + (c * p.nheads + head) * ws.q;
  const float* dDelta = gw.dDelta + (c * p.nheads + head) * ws.q;
  const float* Delta = ws.Delta + (c * p.nheads + head) * ws.q;
  double carry = 0.0, gA = 0.0, gbias = 0.0;
  for (index_t end = len; end > 0; end -= 32) {
    const index_t t = end - 32 + lane;  // < 0: before the chunk
    double s = t >= 0 ? static_cast<double>(dcs[t]) : 0.0;
    SSM_UNROLL
    for (int off = 1; off < 32; off <<= 1) {
      const double v = __shfl_down_sync(0xffffffffu, s, static_cast<unsigned>(off));
      if (lane + off < 32) s += v;
    }
    s += carry;  // ρ_t
    if (t >= 0) {
      const float raw = dt[(t0 + t) * p.dt_seq_stride] + bias;
      const double gdt = (static_cast<double>(dDelta[t]) + static_cast<double>(A) * s) *
                         static_cast<double>(scalar::step_size_grad(raw, p.dt_softplus, p.has_dt_limit, p.dt_min, p.dt_max));
      gA += static_cast<double>(Delta[t]) * s;
      gbias += gdt;
      if (g.grad_dt) static_cast<float*>(g.grad_dt)[(row * p.seqlen + t0 + t) * p.nheads + head] = static_cast<float>(gdt);
    }
    carry = __shfl_sync(0xffffffffu, s, 0);
  }
  SSM_UNROLL
  for (int off = 16; off > 0; off >>= 1) {
    gA += __shfl_xor_sync(0xffffffffu, gA, off);
    gbias += __shfl_xor_sync(0xffffffffu, gbias, off);
  }
  if (lane == 0) {
    if (g.grad_A) atomicAdd(static_cast<float*>(g.grad_A) + head, static_cast<float>(gA));
    if (p.dt_bias && g.grad_dt_bias) atomicAdd(static_cast<float*>(g.grad_dt_bias) + head, static_cast<float>(gbias));
  }
}

/// Grid (ceil(count / kSsdPassThreads)), block kSsdPassThreads: data[0, count) = 0 (the buffers the backward sums
/// into with atomics; a kernel rather than a memset so both executors run the same launch sequence).
__global__ void __launch_bounds__(kSsdPassThreads) ssd_zero_kernel(float* data, index_t count) {
  const index_t i = static_cast<index_t>(blockIdx.x) * kSsdPassThreads + threadIdx.x;
  if (i < count) data[i] = 0.0f;
}

}  // namespace ssm::kernels
