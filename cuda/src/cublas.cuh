// Internal to ssm::cuda: cuBLAS for the launch templates' row-major GEMM (kernels/launch/linear.cuh, the device
// Mamba LM): status checks, a handle per host thread and device, and the row-major product written as cuBLAS's
// column-major one.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "ssm/core/error.hpp"

namespace ssm::cuda::detail {

inline void check_cublas(cublasStatus_t status, const char* what) {
  SSM_CHECK(status == CUBLAS_STATUS_SUCCESS, "cuBLAS error in ", what, ": ", cublasGetStatusString(status),
            " (code ", static_cast<int>(status), ")");
}

/// This host thread's handle for the current device, created on first use with plain f32 products (no TF32:
/// results are compared with the CPU's) and kept for the life of the process (cuda/src/cublas.cu).
cublasHandle_t cublas_handle();

/// Row-major C[p] (M, N) = op(A[p]) (M, K) · op(B[p]) (K, N), p < batch, beta 0 (the executor contract of
/// kernels/launch/linear.cuh), in f32 or f64. Row-major C = op(A) op(B) is column-major Cᵀ = op(B)ᵀ op(A)ᵀ: the
/// operands swap, the flags stay.
template <class T>
inline void gemm_row_major(cublasHandle_t handle, bool trans_A, bool trans_B, std::int64_t M, std::int64_t N,
                           std::int64_t K, const T* A, std::int64_t lda, std::int64_t stride_A, const T* B,
                           std::int64_t ldb, std::int64_t stride_B, T* C, std::int64_t ldc, std::int64_t stride_C,
                           std::int64_t batch) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "gemm_row_major: f32 or f64");
  const T one = 1, zero = 0;
  const auto run = [&](auto gemm_strided_batched, const char* what) {
    check_cublas(gemm_strided_batched(handle, trans_B ? CUBLAS_OP_T : CUBLAS_OP_N, trans_A ? CUBLAS_OP_T : CUBLAS_OP_N,
                                      static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &one, B,
                                      static_cast<int>(ldb), stride_B, A, static_cast<int>(lda), stride_A, &zero, C,
                                      static_cast<int>(ldc), stride_C, static_cast<int>(batch)),
                 what);
  };
  if constexpr (std::is_same_v<T, float>) run(cublasSgemmStridedBatched, "cublasSgemmStridedBatched");
  else run(cublasDgemmStridedBatched, "cublasDgemmStridedBatched");
}

}  // namespace ssm::cuda::detail
