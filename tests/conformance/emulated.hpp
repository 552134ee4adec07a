// The registry's "cuda_emulated" backend: the ops' CUDA kernel sources (cuda/kernels/) run on host tensors under
// the host emulation (cuda/emu/), launched the way the ssm::cuda launchers launch them (cuda/src/), with the ops' own
// argument blocks (ssm::scan_params, the conv1d and attention params of ops/). Every thread order the emulation
// picks is random (seeded); the emulation's race, bounds and divergence findings are an ssm::Error.
//
// Only emulated.cpp includes the kernel sources: they define the kernels as host functions, which must not meet the
// nvcc-compiled kernels of ssm::cuda in one program. When the run-time backend table offers an emulated CUDA device,
// these functions give way to the ops themselves on that device.
#pragma once

#include <optional>
#include <string>

#include "ssm/core.hpp"
#include "ssm/ops/attention.hpp"
#include "ssm/ops/causal_conv1d.hpp"
#include "ssm/ops/selective_scan.hpp"

namespace conformance::emulated {

/// ssm::selective_scan_into on host tensors through selective_scan_fwd_kernel (f32 / f16 / bf16 inputs, real A).
std::string selective_scan_into(const ssm::SelectiveScanInputs& in, const ssm::TensorView& out,
                                std::optional<ssm::TensorView> last_state);

/// The scan's gradients through selective_scan_bwd_kernel (after the forward kernel saves its chunk states), as
/// ssm::selective_scan_backward does on CUDA: every gradient contiguous, the accumulated ones zeroed by the caller;
/// absent optional inputs have undefined views.
struct ScanGradViews {
  ssm::TensorView grad_u, grad_delta, grad_A, grad_B, grad_C, grad_D, grad_z, grad_delta_bias, grad_initial_state;
};
void selective_scan_backward(const ssm::SelectiveScanInputs& in, const ssm::TensorView& grad_out,
                             std::optional<ssm::TensorView> grad_last_state, const ScanGradViews& grads);

/// ssm::causal_conv1d_into through causal_conv1d_fwd_kernel (x f32 / f16 / bf16, w in 2..4).
void causal_conv1d_into(const ssm::CausalConv1dInputs& in, const ssm::TensorView& out,
                        const ssm::TensorView& final_state);

/// ssm::causal_conv1d_backward through causal_conv1d_bwd_kernel: grad_x (b, d, l) written; grad_weight (d, w),
/// grad_bias (d) accumulated (zero them); grad_initial_state (b, d, w - 1) written; the last two may be undefined.
void causal_conv1d_backward(const ssm::CausalConv1dInputs& in, const ssm::TensorView& grad_out,
                            std::optional<ssm::TensorView> grad_final_state, const ssm::TensorView& grad_x,
                            const ssm::TensorView& grad_weight, const ssm::TensorView& grad_bias,
                            const ssm::TensorView& grad_initial_state);

/// ssm::attention_forward / attention_backward through the launch sequences of cuda/kernels/attention.cuh (f32).
void attention_forward(const ssm::TensorView& q, const ssm::TensorView& k, const ssm::TensorView& v,
                       const ssm::TensorView& out, const ssm::TensorView& lse, const ssm::AttentionOptions& opt);
void attention_backward(const ssm::TensorView& q, const ssm::TensorView& k, const ssm::TensorView& v,
                        const ssm::TensorView& out, const ssm::TensorView& lse, const ssm::TensorView& grad_out,
                        const ssm::TensorView& grad_q, const ssm::TensorView& grad_k, const ssm::TensorView& grad_v,
                        const ssm::AttentionOptions& opt);

}  // namespace conformance::emulated
