// The launch logic of the linear op on the device (y = x Wᵀ + bias), written once over an executor. Weights in x's
// dtype (f32, f64): the executor's GEMM, then the bias kernel; f16 / bf16 weights with f32 x: linear_w16_kernel. The
// executor has, besides `exec.launch(kernel, grid, block, args...)`, a row-major GEMM for T = float and double:
//   exec.gemm(trans_A, trans_B, M, N, K, A, lda, stride_A, B, ldb, stride_B, C, ldc, stride_C, batch):
//     C[p] (M, N) = op(A[p]) (M, K) · op(B[p]) (K, N), op(A)(i, k) = trans_A ? A[k lda + i] : A[i lda + k], likewise
//     B; C[p](i, j) at C + p stride_C + i ldc + j; beta 0.
// ssm::cuda runs it with cuBLAS on a stream (cuda/src/linear.cu), the host emulation with emu::HostExecutor's host
// GEMM (cuda/emu/backend_entries.hpp).
#pragma once

#include <algorithm>
#include <cstdint>

#include "../linear.cuh"
#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/params/dense.hpp"

namespace ssm::kernels {

template <class Exec>
void linear_launches(Exec& exec, const LinearParams& p, const char* op) {
  SSM_CHECK(p.dtype == DType::f32 || p.dtype == DType::f64, op, ": x must be f32 or f64 on CUDA, got ", name(p.dtype));
  const bool w16 = p.dtype == DType::f32 && (p.weight_dtype == DType::f16 || p.weight_dtype == DType::bf16);
  SSM_CHECK(p.weight_dtype == p.dtype || w16, op, ": ", name(p.weight_dtype), " weights with ", name(p.dtype),
            " x: the weights must be in x's dtype, or f16 / bf16 for f32 x");
  constexpr std::int64_t kIntMax = 0x7fffffff;  // cuBLAS takes int sizes and leading dimensions
  SSM_CHECK(p.rows >= 0 && p.rows <= kIntMax && p.in >= 0 && p.in <= kIntMax && p.out >= 0 && p.out <= kIntMax, op,
            ": rows, in and out must be in [0, 2^31), got rows = ", p.rows, ", in = ", p.in, ", out = ", p.out);
  if (p.rows == 0 || p.out == 0) return;
  if (w16) {
    SSM_CHECK(p.rows <= 65535, op, ": f16 / bf16 weights take at most 65535 rows on CUDA (a grid dimension), got ",
              p.rows);
    SSM_CHECK(p.y_row_stride >= p.out || p.rows == 1, op,
              ": y's row stride must be >= out on CUDA (rows may not overlap), got ", p.y_row_stride, " for out = ",
              p.out);
    SSM_CHECK(p.y && (p.in == 0 || (p.x && p.weight)), op, ": x, weight and y must be set");
    const LaunchDims grid{static_cast<unsigned>((p.out + kLinearW16Features - 1) / kLinearW16Features),
                          static_cast<unsigned>(p.rows)};
    const LaunchDims block{static_cast<unsigned>(kLinearW16Threads)};
    if (p.weight_dtype == DType::f16) exec.launch(linear_w16_kernel<::ssm::half>, grid, block, p);
    else exec.launch(linear_w16_kernel<::ssm::bfloat16>, grid, block, p);
    return;
  }
  // One row: its row stride is never used, any value will do for the GEMM's leading dimension.
  const std::int64_t ldx = p.rows == 1 ? std::max<std::int64_t>(p.in, 1) : p.x_row_stride;
  const std::int64_t ldy = p.rows == 1 ? p.out : p.y_row_stride;
  SSM_CHECK(ldx >= p.in && ldx <= kIntMax, op, ": x's row stride must be in [in, 2^31) on CUDA (rows may not overlap), got ",
            p.x_row_stride, " for in = ", p.in);
  SSM_CHECK(ldy >= p.out && ldy <= kIntMax, op,
            ": y's row stride must be in [out, 2^31) on CUDA (rows may not overlap), got ", p.y_row_stride,
            " for out = ", p.out);
  SSM_CHECK(p.y && (p.in == 0 || (p.x && p.weight)), op, ": x, weight and y must be set");
  auto run = [&](auto zero) {
    using T = decltype(zero);
    T* y = static_cast<T*>(p.y);
    const T* bias = static_cast<const T*>(p.bias);
    if (p.in > 0)  // y (rows, out) = x (rows, in) · Wᵀ, W (out, in) row-major
      exec.gemm(false, true, p.rows, p.out, p.in, static_cast<const T*>(p.x), ldx, std::int64_t{0},
                static_cast<const T*>(p.weight), p.in, std::int64_t{0}, y, ldy, std::int64_t{0}, std::int64_t{1});
    if (p.in > 0 && bias == nullptr) return;
    const std::int64_t blocks = std::min<std::int64_t>(4096, (p.rows * p.out + kLinearBiasThreads - 1) / kLinearBiasThreads);
    exec.launch(linear_bias_kernel<T>, LaunchDims{static_cast<unsigned>(blocks)},
                LaunchDims{static_cast<unsigned>(kLinearBiasThreads)}, y, ldy, bias, p.rows, p.out, p.in == 0);
  };
  if (p.dtype == DType::f32) run(0.0f);
  else run(0.0);
}

}  // namespace ssm::kernels
