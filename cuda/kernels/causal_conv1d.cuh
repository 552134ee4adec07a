// Causal depthwise conv1d kernels of the Mamba block (Gu & Dao 2023, §3.4; docs/math.md §6.1): the sequence form, one
// block per (tile of kThreads x kItems outputs, channel, batch) with the tile and its w - 1 halo inputs staged
// once in shared memory; the sequence form in the channel-last layout, one thread per channel; and the one-token
// update, one thread per (channel, batch).
#pragma once

#include "common.cuh"
#include "ssm/core/params/causal_conv1d.hpp"

namespace ssm::kernels {

using ::ssm::CausalConv1dParams;
using ::ssm::CausalConv1dGradParams;
using ::ssm::CausalConv1dUpdateParams;

inline constexpr int kConvMaxWidth = 4;

/// Threads and items of the sequence kernel: a tile is 128 x 4 = 512 outputs.
struct ConvFwdConfig {
  static constexpr int kThreads = 128;
  static constexpr int kItems = 4;
};

__device__ __forceinline__ float silu_or_identity(float v, bool silu) { return silu ? scalar::silu(v) : v; }

/// x_tile[j] = x_{tile_start - (w-1) + j} for j < count, the thread block striding over j: before t = 0 from the
/// initial state h0 (or 0), at or after t = len 0. The forward stages the tile with its left halo, the backward
/// also w - 1 steps to the right.
template <int kThreads, class Tile, class In>
__device__ __forceinline__ void stage_conv_inputs(Tile& x_tile, int count, int tile_start, int w, int len, const In* x,
                                                  const float* h0) {
  for (int j = static_cast<int>(threadIdx.x); j < count; j += kThreads) {
    const int t = tile_start - (w - 1) + j;
    float v = 0.0f;
    if (t >= 0 && t < len) v = load_float(x + t);
    else if (t < 0 && h0) v = h0[w - 1 + t];
    x_tile[j] = v;
  }
}

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
  stage_conv_inputs<kThreads>(x_tile, kTile + w - 1, tile_start, w, len, x, h0);
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

/// Threads (channels) and time steps per block of the channel-last kernel.
struct ConvChannelLastConfig {
  static constexpr int kThreads = 128;
  static constexpr int kSteps = 64;
};

/// The sequence form in the channel-last layout (x, out (b, l, d) with unit stride along d; the states (b, w - 1, d)):
/// one thread per channel, a block per (kThreads channels, kSteps time steps, batch). Neighbouring threads read
/// neighbouring channels of one time step (coalesced); each thread slides a window of the last kConvMaxWidth inputs
/// in registers along its kSteps steps, starting from the w - 1 inputs before its first step (the initial state, or
/// 0, before t = 0). No shared memory and no barrier. The block of the last steps writes the final state, reading
/// this thread's own state entries before it overwrites them, so final_state may be initial_state itself when the
/// grid has one block along l (the op runs longer in-place sequences through a separate buffer).
template <class In, int kThreads, int kSteps>
__global__ void __launch_bounds__(kThreads) causal_conv1d_fwd_channel_last_kernel(CausalConv1dParams p) {
  const index_t channel = static_cast<index_t>(blockIdx.x) * kThreads + threadIdx.x;
  const index_t batch = blockIdx.z;
  if (channel >= p.dim) return;  // no barrier in this kernel
  const int w = static_cast<int>(p.width);
  const int len = static_cast<int>(p.seqlen);
  const int t0 = static_cast<int>(blockIdx.y) * kSteps;
  const int t1 = t0 + kSteps < len ? t0 + kSteps : len;
  const In* x = static_cast<const In*>(p.x) + batch * p.x_batch_stride + channel;  // (l), stride x_l_stride
  In* out = static_cast<In*>(p.out) + batch * p.out_batch_stride + channel;       // (l), stride out_l_stride
  const index_t state_offset = batch * (w - 1) * p.dim + channel;                 // (w - 1), stride d
  const float* h0 = p.initial_state ? p.initial_state + state_offset : nullptr;
  const float* weight = p.weight + channel * p.weight_d_stride;  // (w)
  // The weights right-aligned in a window of kConvMaxWidth: win[k] holds the input at t - (kConvMaxWidth - 1) + k
  // for output t, and taps k < kConvMaxWidth - w are zero.
  constexpr int kW = kConvMaxWidth;
  float wk[kW], win[kW];
  SSM_UNROLL
  for (int k = 0; k < kW; ++k) {
    const int tap = k - (kW - w);
    wk[k] = tap >= 0 ? weight[tap] : 0.0f;
  }
  const float bias = p.bias ? p.bias[channel] : 0.0f;
  // The input at time t < len: x, the initial state (or 0) before t = 0, 0 beyond the state's reach.
  auto input = [&](int t) -> float {
    if (t >= 0) return load_float(x + t * p.x_l_stride);
    return h0 && t >= -(w - 1) ? h0[(w - 1 + t) * p.dim] : 0.0f;
  };
  SSM_UNROLL
  for (int k = 0; k < kW - 1; ++k) win[k] = input(t0 - (kW - 1) + k);
  for (int t = t0; t < t1; ++t) {
    win[kW - 1] = load_float(x + t * p.x_l_stride);
    float acc = bias;
    SSM_UNROLL
    for (int k = 0; k < kW; ++k) acc += wk[k] * win[k];
    store_float(out + t * p.out_l_stride, silu_or_identity(acc, p.silu));
    SSM_UNROLL
    for (int k = 0; k < kW - 1; ++k) win[k] = win[k + 1];
  }
  // The final state: the last w - 1 inputs, in increasing j (entry j reads state entry len + j >= j when l < w - 1,
  // so an in-place update reads each entry before it is overwritten).
  if (p.final_state && blockIdx.y == gridDim.y - 1) {
    float* fs = p.final_state + state_offset;
    for (int j = 0; j < w - 1; ++j) fs[j * p.dim] = input(len - (w - 1) + j);
  }
}

/// Backward of the sequence form, one block per (tile, channel, batch) like the forward. Shared memory holds the
/// tile's inputs with w - 1 halo steps on both sides and g = dL/d(pre-activation) for the tile plus w - 1 steps
/// to its right (grad_x_t = sum_k weight_k g_{t+w-1-k}); grad_weight and grad_bias are summed over the tile by a
/// shared-memory tree and added with one atomic per block and tap; the first tile writes grad_initial_state.
template <class In, int kThreads, int kItems>
__global__ void __launch_bounds__(kThreads) causal_conv1d_bwd_kernel(CausalConv1dParams p, CausalConv1dGradParams g) {
  constexpr int kTile = kThreads * kItems;
  constexpr int kSums = kConvMaxWidth + 1;  // grad_weight taps, then grad_bias
  static_assert(((kTile + 2 * (kConvMaxWidth - 1)) + (kTile + kConvMaxWidth - 1) + kThreads * kSums) * sizeof(float) <=
                    8 * 1024,
                "causal_conv1d_bwd_kernel: smem over 8 KiB");
  SSM_SHARED(float, x_tile, kTile + 2 * (kConvMaxWidth - 1));  // inputs tile_start - (w-1) .. tile_end + w - 2
  SSM_SHARED(float, g_tile, kTile + kConvMaxWidth - 1);        // g at tile_start .. tile_end + w - 2
  SSM_SHARED(float, sums, kThreads * kSums);                   // per-thread partial sums, then the tree

  const int tid = static_cast<int>(threadIdx.x);
  const index_t channel = blockIdx.y, batch = blockIdx.z;
  const int w = static_cast<int>(p.width);
  const int len = static_cast<int>(p.seqlen);
  const int tile_start = static_cast<int>(blockIdx.x) * kTile;
  const In* x = static_cast<const In*>(p.x) + batch * p.x_batch_stride + channel * p.x_d_stride;                // (l)
  const In* gout = static_cast<const In*>(g.grad_out) + batch * g.grad_out_batch_stride + channel * g.grad_out_d_stride;
  In* gx = static_cast<In*>(g.grad_x) + batch * g.grad_x_batch_stride + channel * g.grad_x_d_stride;          // (l)
  const float* weight = p.weight + channel * p.weight_d_stride;                                               // (w)
  const index_t state_row = (batch * p.dim + channel) * (w - 1);
  const float* h0 = p.initial_state ? p.initial_state + state_row : nullptr;           // (w-1)
  const float* gfs = g.grad_final_state ? g.grad_final_state + state_row : nullptr;   // (w-1)

  stage_conv_inputs<kThreads>(x_tile, kTile + 2 * (w - 1), tile_start, w, len, x, h0);
  float wk[kConvMaxWidth];
  SSM_UNROLL
  for (int k = 0; k < kConvMaxWidth; ++k) wk[k] = k < w ? weight[k] : 0.0f;
  const float bias = p.bias ? p.bias[channel] : 0.0f;
  __syncthreads();
  for (int j = tid; j < kTile + w - 1; j += kThreads) {
    const int s = tile_start + j;
    float v = 0.0f;
    if (s < len) {
      v = load_float(gout + s);
      if (p.silu) {
        float pre = bias;
        SSM_UNROLL
        for (int k = 0; k < kConvMaxWidth; ++k)
          if (k < w) pre += wk[k] * x_tile[j + k];
        v *= scalar::silu_grad(pre);
      }
    }
    g_tile[j] = v;
  }
  __syncthreads();
  float part[kSums];
  SSM_UNROLL
  for (int m = 0; m < kSums; ++m) part[m] = 0.0f;
  SSM_UNROLL
  for (int i = 0; i < kItems; ++i) {
    const int j = tid * kItems + i;  // time tile_start + j
    const int t = tile_start + j;
    if (t < len) {
      float acc = 0.0f;
      SSM_UNROLL
      for (int k = 0; k < kConvMaxWidth; ++k)
        if (k < w) acc += wk[k] * g_tile[j + (w - 1) - k];
      if (gfs && t >= len - (w - 1)) acc += gfs[t - (len - (w - 1))];  // the final state holds the last w - 1 inputs
      store_float(gx + t, acc);
      const float gj = g_tile[j];
      SSM_UNROLL
      for (int k = 0; k < kConvMaxWidth; ++k)
        if (k < w) part[k] += gj * x_tile[j + k];
      part[kConvMaxWidth] += gj;
    }
  }
  SSM_UNROLL
  for (int m = 0; m < kSums; ++m) sums[tid * kSums + m] = part[m];
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (tid < stride) {
      SSM_UNROLL
      for (int m = 0; m < kSums; ++m) sums[tid * kSums + m] += sums[(tid + stride) * kSums + m];
    }
    __syncthreads();
  }
  if (tid < w) {
    const float v = sums[tid];
    atomicAdd(g.grad_weight + channel * w + tid, v);
  }
  if (tid == w && g.grad_bias) {
    const float v = sums[kConvMaxWidth];
    atomicAdd(g.grad_bias + channel, v);
  }
  // grad of the initial state (inputs at t = j - (w-1) < 0): sum_k weight_k g_{j-k}, plus the final state's
  // gradient when the sequence is shorter than w - 1 (then the final state reaches into the initial state).
  if (g.grad_initial_state && blockIdx.x == 0 && tid < w - 1) {
    const int j = tid;
    float acc = 0.0f;
    for (int k = 0; k <= j && k < w; ++k) acc += wk[k] * g_tile[j - k];
    if (gfs && j >= len) acc += gfs[j - len];
    g.grad_initial_state[state_row + j] = acc;
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
