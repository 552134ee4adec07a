// Element-wise conversion of f32 device buffers to an input dtype (f16 / bf16, round to nearest even): what the
// backward op needs for gradients it accumulates in f32 (variable grad_B / grad_C of f16 / bf16 inputs). A
// grid-stride loop, one element per thread per step.
#pragma once

#include "common.cuh"

namespace ssm::kernels {

inline constexpr int kCastThreads = 256;

template <class Out>
__global__ void __launch_bounds__(kCastThreads) cast_from_f32_kernel(const float* src, Out* dst, std::int64_t n) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kCastThreads;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kCastThreads + threadIdx.x; i < n; i += stride)
    store_float(dst + i, src[i]);
}

/// Blocks for n elements: one element per thread, at most 4096 blocks (the loop strides over the rest).
inline unsigned cast_blocks(std::int64_t n) {
  const std::int64_t blocks = (n + kCastThreads - 1) / kCastThreads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 4096 ? 4096 : blocks));
}

}  // namespace ssm::kernels
