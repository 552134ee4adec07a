// ssm::cuda::linear_forward: kernels/launch/linear.cuh over the stream executor with cuBLAS's GEMM on that stream.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../kernels/launch/linear.cuh"
#include "cublas.cuh"
#include "ssm/cuda/dense.hpp"
#include "stream_executor.cuh"

namespace ssm::cuda {
namespace {

/// The stream executor plus the launch template's row-major GEMM, through this thread's cuBLAS handle.
class GemmExecutor : public detail::StreamExecutor {
 public:
  explicit GemmExecutor(cudaStream_t stream) : StreamExecutor(stream), stream_(stream) {}

  template <class T>
  void gemm(bool trans_A, bool trans_B, std::int64_t M, std::int64_t N, std::int64_t K, const T* A, std::int64_t lda,
            std::int64_t stride_A, const T* B, std::int64_t ldb, std::int64_t stride_B, T* C, std::int64_t ldc,
            std::int64_t stride_C, std::int64_t batch) {
    cublasHandle_t h = detail::cublas_handle();
    detail::check_cublas(cublasSetStream(h, stream_), "cublasSetStream");
    detail::gemm_row_major(h, trans_A, trans_B, M, N, K, A, lda, stride_A, B, ldb, stride_B, C, ldc, stride_C, batch);
  }

 private:
  cudaStream_t stream_;
};

}  // namespace

void linear_forward(const LinearParams& p, void* stream) {
  GemmExecutor exec{static_cast<cudaStream_t>(stream)};
  kernels::linear_launches(exec, p, "ssm::cuda::linear_forward");
}

}  // namespace ssm::cuda
