// ssm::cuda::cast_from_f32: the launch of kernels/launch/cast.cuh on a stream of `device`.
#include <cuda_runtime.h>

#include "../kernels/launch/cast.cuh"
#include "stream_executor.cuh"
#include "ssm/cuda/cast.hpp"
#include "ssm/cuda/runtime.hpp"

namespace ssm::cuda {

void cast_from_f32(const float* src, void* dst, DType dst_dtype, std::int64_t n, int device, void* stream) {
  // The device only when the launch header's checks will pass, so that a bad argument reports itself first.
  const bool supported = dst_dtype == DType::f32 || dst_dtype == DType::f16 || dst_dtype == DType::bf16;
  if (supported && n > 0 && src && dst) {
    ensure_device(device);
    detail::check_cuda(cudaSetDevice(device), "cudaSetDevice");
  }
  detail::StreamExecutor exec{static_cast<cudaStream_t>(stream)};
  kernels::cast_from_f32_launches(exec, src, dst, dst_dtype, n, "ssm::cuda::cast_from_f32");
}

}  // namespace ssm::cuda
