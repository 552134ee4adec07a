// Host API: f32 device buffers converted to f16 / bf16 on the device (cuda/kernels/cast.cuh).
#pragma once

#include <cstdint>

#include "ssm/core/dtype.hpp"

namespace ssm::cuda {

/// dst[i] = src[i] rounded to `dst_dtype` (f16 or bf16; f32 copies) for i < n, on the current device's stream 0.
/// src and dst are device memory of device `device`; they may not overlap. ssm::Error for other dtypes and CUDA
/// failures.
void cast_from_f32(const float* src, void* dst, DType dst_dtype, std::int64_t n, int device = 0, void* stream = nullptr);

}  // namespace ssm::cuda
