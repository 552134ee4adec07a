// The launch logic of the f32 -> f16 / bf16 cast, written once over an executor
// (`exec.launch(kernel, LaunchDims grid, LaunchDims block, args...)`). f32 -> f32 is a device-to-device copy,
// which the executor provides (`exec.copy(dst, src, bytes)`). ssm::cuda runs it on a stream (cuda/src/cast.cu),
// the host emulation with emu::HostExecutor (cuda/emu/backend_entries.hpp).
#pragma once

#include <cstddef>
#include <cstdint>

#include "../cast.cuh"
#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"

namespace ssm::kernels {

/// dst[i] = src[i] rounded to dst_dtype, i < n.
template <class Exec>
void cast_from_f32_launches(Exec& exec, const float* src, void* dst, DType dst_dtype, std::int64_t n, const char* op) {
  SSM_CHECK(dst_dtype == DType::f32 || dst_dtype == DType::f16 || dst_dtype == DType::bf16, op,
            ": the target dtype must be f32, f16 or bf16, got ", name(dst_dtype));
  SSM_CHECK(n >= 0, op, ": n must be >= 0, got ", n);
  if (n == 0) return;
  SSM_CHECK(src && dst, op, ": src and dst must be set");
  const LaunchDims grid{cast_blocks(n)}, block{static_cast<unsigned>(kCastThreads)};
  if (dst_dtype == DType::f32)
    exec.copy(dst, src, static_cast<std::size_t>(n) * sizeof(float));
  else if (dst_dtype == DType::f16)
    exec.launch(cast_from_f32_kernel<::ssm::half>, grid, block, src, static_cast<::ssm::half*>(dst), n);
  else
    exec.launch(cast_from_f32_kernel<::ssm::bfloat16>, grid, block, src, static_cast<::ssm::bfloat16*>(dst), n);
}

}  // namespace ssm::kernels
