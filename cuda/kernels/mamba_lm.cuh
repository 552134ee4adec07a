// The small kernels of the Mamba language model on the device (Gu & Dao 2023, §3.4, Fig. 3; docs/math.md §6) that
// sit between the GEMMs, the causal conv1d and the selective scan and belong to no op: a broadcast bias add, and
// the conv state a prefill leaves for generation. All f32. (The embedding gather and the fused add + RMSNorm are
// the ops' kernels, embedding.cuh and rms_norm.cuh.)
#pragma once

#include "common.cuh"

namespace ssm::kernels {

/// Threads per block of the elementwise kernels (bias add, conv state).
inline constexpr int kLmElemThreads = 256;

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
