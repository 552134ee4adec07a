// The argument blocks of the causal depthwise conv1d (Gu & Dao 2023, §3.4; docs/math.md §6.1), read by the
// CUDA launchers and kernels (cuda/kernels/causal_conv1d.cuh): plain pointers, sizes and element strides,
// trivially copyable so a kernel takes them by value. Pointers are memory of the device that runs the op.
#pragma once

#include <cstdint>

namespace ssm {

/// Arguments of the sequence (parallel) form. Pointers are device memory. Element (bi, c, t) of x is at
/// x + bi x_batch_stride + c x_d_stride + t x_l_stride, and likewise for out.
struct CausalConv1dParams {
  std::int64_t batch = 0, dim = 0, seqlen = 0;  // b, d, l
  std::int64_t width = 4;                       // w, 2..4
  /// false: channel-major, x and out with unit stride along l, the states (b, d, w - 1); true: channel-last
  /// (time-major (b, l, d) memory, as the Mamba block's activations), x and out with unit stride along d, the states
  /// (b, w - 1, d) contiguous.
  bool channel_last = false;
  const void* x = nullptr;                      // (b, d, l) input dtype
  std::int64_t x_batch_stride = 0, x_d_stride = 0, x_l_stride = 1;
  const float* weight = nullptr;                // (d, w) unit stride along w
  std::int64_t weight_d_stride = 0;
  const float* bias = nullptr;                  // (d) or null
  bool silu = true;
  const float* initial_state = nullptr;         // (b, d, w - 1) contiguous, the inputs before t = 0; or null
  float* final_state = nullptr;                 // (b, d, w - 1) contiguous, the last w - 1 inputs; or null
  void* out = nullptr;                          // (b, d, l) input dtype
  std::int64_t out_batch_stride = 0, out_d_stride = 0, out_l_stride = 1;
};

/// Arguments of the one-token update (generation).
struct CausalConv1dUpdateParams {
  std::int64_t batch = 0, dim = 0;
  std::int64_t width = 4;
  const void* x = nullptr;         // (b, d) input dtype, contiguous
  float* conv_state = nullptr;     // (b, d, w) contiguous: the last w inputs, oldest first; shifted in place
  const float* weight = nullptr;   // (d, w) unit stride along w
  std::int64_t weight_d_stride = 0;
  const float* bias = nullptr;     // (d) or null
  bool silu = true;
  void* out = nullptr;             // (b, d) input dtype, contiguous
};

/// Gradient buffers of the backward of the sequence form (device memory). grad_weight and grad_bias are
/// accumulated with atomics (the caller zeroes them); grad_x and grad_initial_state are written.
struct CausalConv1dGradParams {
  const void* grad_out = nullptr;                 // (b, d, l) input dtype, unit stride along l
  std::int64_t grad_out_batch_stride = 0, grad_out_d_stride = 0;
  const float* grad_final_state = nullptr;        // (b, d, w - 1) contiguous, or null (zero)
  void* grad_x = nullptr;                         // (b, d, l) input dtype, unit stride along l
  std::int64_t grad_x_batch_stride = 0, grad_x_d_stride = 0;
  float* grad_weight = nullptr;                   // (d, w) contiguous, accumulated
  float* grad_bias = nullptr;                     // (d) accumulated, or null
  float* grad_initial_state = nullptr;            // (b, d, w - 1) contiguous, written, or null
};

}  // namespace ssm
