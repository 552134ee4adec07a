// RMSNorm with the optional fused residual add (Zhang & Sennrich 2019; mamba_ssm's fused add + norm; docs/math.md
// §6.2), one block per row: r = x + residual (stored back into residual) or r = x, then
// y = r / sqrt(mean(r²) + eps) ⊙ weight (no weight: ⊙ 1). T is f32 or f64 and the row computes in T; the sum of
// squares is reduced by a shared-memory tree. Used by the rms_norm op's CUDA entry and the device Mamba LM.
#pragma once

#include "common.cuh"
#include "ssm/core/params/dense.hpp"

namespace ssm::kernels {

/// Threads per block of rms_norm_kernel (one block per row).
inline constexpr int kRmsNormThreads = 128;

/// Grid (rows), block kThreads. y may be x (each element is read, then written, by one thread); residual is not x.
template <class T, int kThreads>
__global__ void __launch_bounds__(kThreads) rms_norm_kernel(RmsNormParams p) {
  static_assert(kThreads >= 32 && (kThreads & (kThreads - 1)) == 0, "a power-of-two block of whole warps");
  static_assert(kThreads * sizeof(T) <= 1024, "rms_norm_kernel: static shared memory over 1 KiB");
  SSM_SHARED(T, partial, kThreads);  // per-thread sums of squares
  const int tid = static_cast<int>(threadIdx.x);
  const index_t row = blockIdx.x;
  const T* x = static_cast<const T*>(p.x) + row * p.x_row_stride;  // (dim)
  T* res = p.residual != nullptr ? static_cast<T*>(p.residual) + row * p.residual_row_stride : nullptr;  // (dim)
  T ss = T(0);
  for (index_t j = tid; j < p.dim; j += kThreads) {
    T v = x[j];
    if (res != nullptr) {
      v += res[j];
      res[j] = v;
    }
    ss += v * v;
  }
  partial[tid] = ss;
  __syncthreads();
  SSM_UNROLL
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (tid < s) partial[tid] = partial[tid] + partial[tid + s];
    __syncthreads();
  }
  const T inv = T(1) / scalar::sqrt(partial[0] / static_cast<T>(p.dim) + static_cast<T>(p.eps));
  const T* r = res != nullptr ? res : x;  // (dim) the row that was normalized
  const T* weight = static_cast<const T*>(p.weight);  // (dim) or null
  T* y = static_cast<T*>(p.y) + row * p.y_row_stride;  // (dim)
  for (index_t j = tid; j < p.dim; j += kThreads) y[j] = weight != nullptr ? r[j] * inv * weight[j] : r[j] * inv;
}

}  // namespace ssm::kernels
