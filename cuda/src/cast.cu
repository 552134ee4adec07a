// ssm::cuda::cast_from_f32: the kernel of cuda/kernels/cast.cuh for the target dtype.
#include <cuda_runtime.h>

#include "../kernels/cast.cuh"
#include "cuda_check.cuh"
#include "ssm/cuda/cast.hpp"
#include "ssm/cuda/runtime.hpp"

namespace ssm::cuda {

void cast_from_f32(const float* src, void* dst, DType dst_dtype, std::int64_t n, int device, void* stream) {
  constexpr const char* op = "ssm::cuda::cast_from_f32";
  SSM_CHECK(dst_dtype == DType::f32 || dst_dtype == DType::f16 || dst_dtype == DType::bf16, op,
            ": the target dtype must be f32, f16 or bf16, got ", name(dst_dtype));
  SSM_CHECK(n >= 0, op, ": n must be >= 0, got ", n);
  if (n == 0) return;
  SSM_CHECK(src && dst, op, ": src and dst must be set");
  ensure_device(device);
  detail::check_cuda(cudaSetDevice(device), "cudaSetDevice");
  const auto s = static_cast<cudaStream_t>(stream);
  const unsigned blocks = kernels::cast_blocks(n);
  if (dst_dtype == DType::f32) {
    detail::check_cuda(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(n) * 4, cudaMemcpyDeviceToDevice, s),
                       "cudaMemcpyAsync");
    return;
  }
  if (dst_dtype == DType::f16)
    kernels::cast_from_f32_kernel<::ssm::half><<<blocks, kernels::kCastThreads, 0, s>>>(src, static_cast<::ssm::half*>(dst), n);
  else
    kernels::cast_from_f32_kernel<::ssm::bfloat16><<<blocks, kernels::kCastThreads, 0, s>>>(src, static_cast<::ssm::bfloat16*>(dst), n);
  detail::check_cuda(cudaGetLastError(), "cast_from_f32_kernel launch");
}

}  // namespace ssm::cuda
