// The one-token selective state update (mamba_ssm's selective_state_update, the decode step of the selective scan;
// docs/math.md §5.1 at l = 1; formulas in core/params/selective_state_update.hpp): per batch row, head i and
// channel c, Δ = softplus(dt + dt_bias) (clamped with a dt limit),   h[c, k] = exp(Δ A[c, k]) h[c, k] + Δ B[k] u[c],
//   y = Σ_k C[k] h[c, k] + D[c] u[c],   out[c] = y silu(z[c]), with B, C of head i's group; per_head (Mamba-2): dt,
//   dt_bias, A, D one per head.
// kStateUpdateLanes neighbouring threads share a channel and take every kStateUpdateLanes-th state k, so that a
// warp reads and writes whole consecutive rows of h (coalesced); their partial sums of y meet by warp shuffles.
// T is f32 or f64 and every step computes in T (as the CPU path).
#pragma once

#include "common.cuh"
#include "ssm/core/params/selective_state_update.hpp"

namespace ssm::kernels {

inline constexpr int kStateUpdateThreads = 128;
/// Threads per channel (a power of two dividing the warp).
inline constexpr int kStateUpdateLanes = 8;
/// Channels per block.
inline constexpr int kStateUpdateChannels = kStateUpdateThreads / kStateUpdateLanes;

/// Grid (channel blocks of kStateUpdateChannels, h, b), block kStateUpdateThreads. h is updated in place: each
/// element is read, then written, by one thread.
template <class T>
__global__ void __launch_bounds__(kStateUpdateThreads) selective_state_update_kernel(SelectiveStateUpdateParams p) {
  static_assert(32 % kStateUpdateLanes == 0 && kStateUpdateThreads % 32 == 0, "lanes of one channel in one warp");
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid % kStateUpdateLanes;
  const index_t i = blockIdx.y, bi = blockIdx.z;
  const index_t c = static_cast<index_t>(blockIdx.x) * kStateUpdateChannels + tid / kStateUpdateLanes;
  const bool active = c < p.dim;  // the others still take part in the shuffles
  const index_t pc = p.param_index(i, c);
  T u = T(0), y = T(0);
  if (active) {
    const index_t n = p.dstate, gi = i / (p.nheads / p.ngroups);
    u = static_cast<const T*>(p.x)[bi * p.x_batch_stride + i * p.x_head_stride + c];
    T Delta = static_cast<const T*>(p.dt)[p.dt_index(bi, i, c)];
    if (p.dt_bias != nullptr) Delta += static_cast<const T*>(p.dt_bias)[pc];
    Delta = p.delta<T>(Delta);
    T* h = static_cast<T*>(p.state) + ((bi * p.nheads + i) * p.dim + c) * n;             // (n)
    const T* A = static_cast<const T*>(p.A) + (p.per_head ? i : pc * n);                 // (n), or (1) per head
    const index_t A_step = p.per_head ? 0 : 1;
    const T* B = static_cast<const T*>(p.B) + bi * p.B_batch_stride + gi * p.B_group_stride;  // (n)
    const T* C = static_cast<const T*>(p.C) + bi * p.C_batch_stride + gi * p.C_group_stride;  // (n)
    // Not unrolled: copies of the inlined exp (f64: with its slow path) would spill (measured: 12 bytes in f64).
#if defined(__CUDACC__)
#pragma unroll 1
#endif
    for (index_t k = lane; k < n; k += kStateUpdateLanes) {
      const T hk = scalar::exp(Delta * A[k * A_step]) * h[k] + Delta * B[k] * u;
      h[k] = hk;
      y += C[k] * hk;
    }
  }
  SSM_UNROLL
  for (int off = 1; off < kStateUpdateLanes; off <<= 1) y += __shfl_xor_sync(0xffffffffu, y, off, kStateUpdateLanes);
  if (!active || lane != 0) return;
  if (p.D != nullptr) y += static_cast<const T*>(p.D)[pc] * u;
  if (p.z != nullptr) y *= scalar::silu(static_cast<const T*>(p.z)[bi * p.z_batch_stride + i * p.z_head_stride + c]);
  static_cast<T*>(p.out)[bi * p.out_batch_stride + i * p.out_head_stride + c] = y;
}

}  // namespace ssm::kernels
