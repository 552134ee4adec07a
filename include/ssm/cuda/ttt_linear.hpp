// Host API of TTT-Linear on a CUDA device (core/params/ttt_linear.hpp; the kernels in
// cuda/kernels/ttt_linear.cuh and ttt_linear_bwd.cuh, their launches in cuda/kernels/launch/ttt_linear.cuh;
// docs/ttt_linear.md "On CUDA").
#pragma once

#include "ssm/core/params/ttt_linear.hpp"

namespace ssm::cuda {

/// The forward on the current device, the token loop with one block per (sequence, head): q, k, v, eta, out f32, f16
/// or bf16; ln_weight, ln_bias, position_weights and the states f32 (initial and final state, initial and final pending
/// sum, may be the same buffers); p.cu_seqlens in host memory (as ssm::ttt_linear passes it). Allocates its workspace
/// stream-ordered on `stream` (the sequence table, and per sequence and head 4 (2 (d + 1) d + 3 d) bytes) and frees it
/// there; does not synchronize. ssm::Error for other dtypes, shapes past the kernel's limits and CUDA failures.
void ttt_linear_forward(const TttLinearParams& p, void* stream = nullptr);

/// The backward on the current device, the primal form's backward one block per (sequence, head): the dtypes of
/// ttt_linear_forward; g's outputs contiguous (TttLinearGradParams), grad_position_weights only with position weights.
/// Allocates its workspace stream-ordered on `stream` (the sequence table; Ŵ′ at the start of every mini-batch,
/// 4 (d + 1) d bytes per mini-batch and head; per sequence and head 4 (4 (d + 1) d + 3 span d + 2 span + 6 d + m)
/// bytes, m only with position weights, span = min(m, the longest sequence)) and frees it there; does not synchronize. ssm::Error as the forward.
void ttt_linear_backward(const TttLinearParams& p, const TttLinearGradParams& g, void* stream = nullptr);

}  // namespace ssm::cuda
