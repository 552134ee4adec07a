// Host API of the CUDA causal depthwise conv1d of the Mamba block (Gu & Dao 2023, §3.4; docs/math.md §6.1):
// out_t = act(bias + sum_k weight[k] x_{t-(w-1)+k}) with x_{<0} from the initial state (or zeros), act = SiLU
// or identity; and the one-token update for generation. Kernels in cuda/kernels/causal_conv1d.cuh.
#pragma once

#include <cstdint>

#include "ssm/core/dtype.hpp"

namespace ssm::cuda {

/// Arguments of the sequence (parallel) form. Pointers are device memory.
struct CausalConv1dParams {
  std::int64_t batch = 0, dim = 0, seqlen = 0;  // b, d, l
  std::int64_t width = 4;                       // w, 2..4
  const void* x = nullptr;                      // (b, d, l) input dtype, unit stride along l
  std::int64_t x_batch_stride = 0, x_d_stride = 0;
  const float* weight = nullptr;                // (d, w) unit stride along w
  std::int64_t weight_d_stride = 0;
  const float* bias = nullptr;                  // (d) or null
  bool silu = true;
  const float* initial_state = nullptr;         // (b, d, w - 1) contiguous, the inputs before t = 0; or null
  float* final_state = nullptr;                 // (b, d, w - 1) contiguous, the last w - 1 inputs; or null
  void* out = nullptr;                          // (b, d, l) input dtype, unit stride along l
  std::int64_t out_batch_stride = 0, out_d_stride = 0;
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

/// Causal conv1d over whole sequences on the current device. x dtype f32, f16 or bf16; weights and states f32.
/// Throws ssm::Error for unsupported arguments (width outside 2..4, dtype) and CUDA failures (no GPU).
void causal_conv1d_forward(const CausalConv1dParams& p, DType input_dtype, void* stream = nullptr);
/// Backward of causal_conv1d_forward with the same p (x, weight, bias, silu, initial_state; out and final_state are
/// not read): recomputes the pre-activation per tile, then grad_x, grad_weight, grad_bias, grad_initial_state.
void causal_conv1d_backward(const CausalConv1dParams& p, const CausalConv1dGradParams& g, DType input_dtype,
                            void* stream = nullptr);
/// One token: shifts conv_state left, appends x, writes out. Same dtypes as the forward.
void causal_conv1d_update(const CausalConv1dUpdateParams& p, DType input_dtype, void* stream = nullptr);

}  // namespace ssm::cuda
