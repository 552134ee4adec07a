// The kernels of the linear op on the device (y = x Wᵀ + bias). Weights in x's dtype: the product is a GEMM of the
// executor (cuBLAS on a GPU, a host loop under the emulation), then linear_bias_kernel broadcasts the bias over the
// rows of y (or sets y = bias, zero without one, when the product is empty: in = 0). f16 / bf16 weights with f32 x:
// linear_w16_kernel, one warp per output feature, each weight converted to f32 as it is read (exactly, as the CPU
// path does), the products accumulated in f32 (a GEMV per row: what decoding needs; no tiling for many rows).
#pragma once

#include "common.cuh"
#include "ssm/core/params/dense.hpp"

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

inline constexpr int kLinearW16Threads = 128;
/// Output features per block of linear_w16_kernel (one per warp).
inline constexpr int kLinearW16Features = kLinearW16Threads / 32;

/// y[row, j] = Σ_k x[row, k] · f32(W[j, k]) + bias[j]: x, y, bias f32, W (out, in) contiguous of type W16. Grid
/// (feature blocks of kLinearW16Features, rows), block kLinearW16Threads; the lanes of a warp stride over in and
/// meet by shuffles.
template <class W16>
__global__ void __launch_bounds__(kLinearW16Threads) linear_w16_kernel(LinearParams p) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const index_t row = blockIdx.y;
  const index_t j = static_cast<index_t>(blockIdx.x) * kLinearW16Features + static_cast<int>(threadIdx.x) / 32;
  const bool active = j < p.out;  // the others still take part in the shuffles
  float acc = 0.0f;
  if (active) {
    const float* x = static_cast<const float*>(p.x) + row * p.x_row_stride;  // (in)
    const W16* w = static_cast<const W16*>(p.weight) + j * p.in;            // (in)
    for (index_t k = lane; k < p.in; k += 32) acc += x[k] * load_float(w + k);
  }
  SSM_UNROLL
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (!active || lane != 0) return;
  if (p.bias != nullptr) acc += static_cast<const float*>(p.bias)[j];
  static_cast<float*>(p.y)[row * p.y_row_stride + j] = acc;
}

}  // namespace ssm::kernels
