// The small kernels of the Mamba language model on the device (Gu & Dao 2023, §3.4, Fig. 3; docs/math.md §6) that
// sit between the GEMMs, the causal conv1d and the selective scan: the token-embedding gather, RMSNorm fused
// with the residual add (the reference Mamba's fused add-norm), a broadcast bias add, and the conv state a
// prefill leaves for generation. All f32 (the model computes in f32 and keeps the residual stream in f32).
#pragma once

#include "common.cuh"

namespace ssm::kernels {

/// Threads per block of the row kernels (embedding, add + RMSNorm).
inline constexpr int kLmRowThreads = 128;
/// Threads per block of the elementwise kernels (bias add, conv state).
inline constexpr int kLmElemThreads = 256;

/// out (rows, d_model) = table[ids[row]] row by row. Grid (rows), block kLmRowThreads. The ids were checked
/// against the table's row count on the host.
template <class Id>
__global__ void __launch_bounds__(kLmRowThreads)
    embedding_gather_kernel(const Id* ids, const float* table, float* out, index_t d_model) {
  const index_t row = blockIdx.x;
  const float* src = table + static_cast<index_t>(ids[row]) * d_model;  // (d_model)
  float* dst = out + row * d_model;                                      // (d_model)
  for (index_t j = threadIdx.x; j < d_model; j += kLmRowThreads) dst[j] = src[j];
}

/// The fused residual add and RMSNorm of one token row (docs/math.md §6.2): residual += delta (when delta is not
/// null; written back), then out = residual / sqrt(mean(residual^2) + eps) * weight. Grid (rows), block
/// kThreads; the sum of squares by a shared-memory tree.
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    add_rmsnorm_kernel(float* residual, const float* delta, const float* weight, float* out, index_t d_model,
                       float eps) {
  static_assert(kThreads >= 32 && (kThreads & (kThreads - 1)) == 0, "a power-of-two block of whole warps");
  static_assert(kThreads * sizeof(float) <= 1024, "add_rmsnorm_kernel: static shared memory over 1 KiB");
  SSM_SHARED(float, partial, kThreads);  // per-thread sums of squares
  const int tid = static_cast<int>(threadIdx.x);
  const index_t row = blockIdx.x;
  float* res = residual + row * d_model;  // (d_model)
  float ss = 0.0f;
  for (index_t j = tid; j < d_model; j += kThreads) {
    float v = res[j];
    if (delta) {
      v += delta[row * d_model + j];
      res[j] = v;
    }
    ss += v * v;
  }
  partial[tid] = ss;
  __syncthreads();
  SSM_UNROLL
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (tid < s) partial[tid] = partial[tid] + partial[tid + s];
    __syncthreads();
  }
  const float inv = 1.0f / sqrtf(partial[0] / static_cast<float>(d_model) + eps);
  float* y = out + row * d_model;  // (d_model)
  for (index_t j = tid; j < d_model; j += kThreads) y[j] = res[j] * inv * weight[j];
}

/// x[e] += bias[(e / inner) % features] for e < total: a bias over the feature axis of a (…, features, inner)
/// tensor (inner = l for channel-major activations, 1 for time-major ones). Grid-stride, block kLmElemThreads.
__global__ void __launch_bounds__(kLmElemThreads)
    add_bias_kernel(float* x, const float* bias, index_t total, index_t features, index_t inner) {
  const index_t stride = static_cast<index_t>(gridDim.x) * kLmElemThreads;
  for (index_t e = static_cast<index_t>(blockIdx.x) * kLmElemThreads + threadIdx.x; e < total; e += stride)
    x[e] += bias[(e / inner) % features];
}

/// The conv state after a prefill, in the layout of causal_conv1d_update_kernel: state (b, d, w) = the last w
/// inputs x_{l-w} .. x_{l-1} of each (sequence, channel), oldest first, zeros before t = 0. x (b, d, l) with the
/// given strides, unit stride along l. One thread per (sequence, channel); grid-stride, block kLmElemThreads.
__global__ void __launch_bounds__(kLmElemThreads)
    conv_state_from_sequence_kernel(const float* x, index_t x_batch_stride, index_t x_d_stride, index_t l,
                                    float* state, index_t batch, index_t dim, int w) {
  const index_t stride = static_cast<index_t>(gridDim.x) * kLmElemThreads;
  for (index_t row = static_cast<index_t>(blockIdx.x) * kLmElemThreads + threadIdx.x; row < batch * dim;
       row += stride) {
    const float* xr = x + (row / dim) * x_batch_stride + (row % dim) * x_d_stride;  // (l)
    for (int k = 0; k < w; ++k) {
      const index_t t = l - w + k;
      state[row * w + k] = t >= 0 ? xr[t] : 0.0f;
    }
  }
}

}  // namespace ssm::kernels
