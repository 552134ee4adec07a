// The element-wise part of the linear op on the device (y = x Wᵀ + bias; the product itself is a GEMM of the
// executor: cuBLAS on a GPU, a host loop under the emulation): the bias broadcast over the rows of y, or y = bias
// (zero without one) when the product is empty (in = 0).
#pragma once

#include "common.cuh"

namespace ssm::kernels {

inline constexpr int kLinearBiasThreads = 256;

/// y[i, j] = (overwrite ? 0 : y[i, j]) + (bias ? bias[j] : 0) for i < rows, j < out; y (rows, out) with row stride
/// y_row_stride, unit stride along out. Grid-stride over rows · out, block kLinearBiasThreads.
template <class T>
__global__ void __launch_bounds__(kLinearBiasThreads)
    linear_bias_kernel(T* y, index_t y_row_stride, const T* bias, index_t rows, index_t out, bool overwrite) {
  const index_t total = rows * out;
  const index_t stride = static_cast<index_t>(gridDim.x) * kLinearBiasThreads;
  for (index_t e = static_cast<index_t>(blockIdx.x) * kLinearBiasThreads + threadIdx.x; e < total; e += stride) {
    const index_t i = e / out, j = e % out;
    T& v = y[i * y_row_stride + j];
    v = (overwrite ? T(0) : v) + (bias != nullptr ? bias[j] : T(0));
  }
}

}  // namespace ssm::kernels
