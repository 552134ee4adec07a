// Causal depthwise conv1d kernels of the Mamba block (Gu & Dao 2023, §3.4; MATH.md §6): the sequence form, one
// block per (tile of kThreads x kItems outputs, channel, batch) with the tile and its w - 1 halo inputs staged
// once in shared memory; and the one-token update, one thread per (channel, batch).
#pragma once

#include "common.cuh"
#include "ssm/cuda/causal_conv1d.hpp"

namespace ssm::kernels {

using ::ssm::cuda::CausalConv1dParams;
using ::ssm::cuda::CausalConv1dUpdateParams;

inline constexpr int kConvMaxWidth = 4;

/// Threads and items of the sequence kernel: a tile is 128 x 4 = 512 outputs.
struct ConvFwdConfig {
  static constexpr int kThreads = 128;
  static constexpr int kItems = 4;
};

__device__ __forceinline__ float silu_or_identity(float v, bool silu) { return silu ? v / (1.0f + expf(-v)) : v; }

template <class In, int kThreads, int kItems>
__global__ void __launch_bounds__(kThreads) causal_conv1d_fwd_kernel(CausalConv1dParams p) {
  constexpr int kTile = kThreads * kItems;
  static_assert((kTile + kConvMaxWidth - 1) * sizeof(float) <= 4 * 1024, "causal_conv1d_fwd_kernel: smem over 4 KiB");
  SSM_SHARED(float, x_tile, kTile + kConvMaxWidth - 1);  // (tile + w - 1) inputs, halo first

  const int tid = static_cast<int>(threadIdx.x);
  const index_t channel = blockIdx.y, batch = blockIdx.z;
  const int w = static_cast<int>(p.width);
  const int len = static_cast<int>(p.seqlen);
  const int tile_start = static_cast<int>(blockIdx.x) * kTile;
  const In* x = static_cast<const In*>(p.x) + batch * p.x_batch_stride + channel * p.x_d_stride;  // (l)
  In* out = static_cast<In*>(p.out) + batch * p.out_batch_stride + channel * p.out_d_stride;     // (l)
  const float* weight = p.weight + channel * p.weight_d_stride;                                  // (w)
  const float* h0 = p.initial_state ? p.initial_state + (batch * p.dim + channel) * (w - 1) : nullptr;  // (w-1)

  // Stage x_{tile_start - (w-1)} .. x_{tile_start + kTile - 1}; before t = 0 from the initial state (or 0).
  for (int j = tid; j < kTile + w - 1; j += kThreads) {
    const int t = tile_start - (w - 1) + j;
    float v = 0.0f;
    if (t >= 0 && t < len) v = load_float(x + t);
    else if (t < 0 && h0) v = h0[w - 1 + t];
    x_tile[j] = v;
  }
  __syncthreads();
  float wk[kConvMaxWidth];
  SSM_UNROLL
  for (int k = 0; k < kConvMaxWidth; ++k) wk[k] = k < w ? weight[k] : 0.0f;
  const float bias = p.bias ? p.bias[channel] : 0.0f;
  SSM_UNROLL
  for (int i = 0; i < kItems; ++i) {
    const int j = tid * kItems + i;  // output tile_start + j reads x_tile[j .. j + w - 1]
    if (tile_start + j < len) {
      float acc = bias;
      SSM_UNROLL
      for (int k = 0; k < kConvMaxWidth; ++k)
        if (k < w) acc += wk[k] * x_tile[j + k];
      store_float(out + tile_start + j, silu_or_identity(acc, p.silu));
    }
  }
  // The final state: the last w - 1 inputs (reaching into the initial state for short sequences).
  if (p.final_state && blockIdx.x == gridDim.x - 1 && tid < w - 1) {  // the last tile (grid: >= 1 tile)
    const int t = len - (w - 1) + tid;
    float v = 0.0f;
    if (t >= 0) v = load_float(x + t);
    else if (h0) v = h0[w - 1 + t];
    p.final_state[(batch * p.dim + channel) * (w - 1) + tid] = v;
  }
}

template <class In>
__global__ void causal_conv1d_update_kernel(CausalConv1dUpdateParams p) {
  const index_t channel = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const index_t batch = blockIdx.y;
  if (channel >= p.dim) return;  // no barrier in this kernel
  const int w = static_cast<int>(p.width);
  const index_t row = batch * p.dim + channel;
  float* state = p.conv_state + row * w;  // (w)
  const float* weight = p.weight + channel * p.weight_d_stride;
  const float x = load_float(static_cast<const In*>(p.x) + row);
  float acc = p.bias ? p.bias[channel] : 0.0f;
  for (int k = 0; k < w; ++k) {
    const float v = k + 1 < w ? state[k + 1] : x;
    state[k] = v;
    acc += weight[k] * v;
  }
  store_float(static_cast<In*>(p.out) + row, silu_or_identity(acc, p.silu));
}

}  // namespace ssm::kernels
