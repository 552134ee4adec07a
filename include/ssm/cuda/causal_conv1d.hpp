// Host API of the CUDA causal depthwise conv1d of the Mamba block (Gu & Dao 2023, §3.4; docs/math.md §6.1):
// out_t = act(bias + sum_k weight[k] x_{t-(w-1)+k}) with x_{<0} from the initial state (or zeros), act = SiLU
// or identity; and the one-token update for generation. Kernels in cuda/kernels/causal_conv1d.cuh.
#pragma once

#include <cstdint>

#include "ssm/core/dtype.hpp"
#include "ssm/core/params/causal_conv1d.hpp"

namespace ssm::cuda {

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
