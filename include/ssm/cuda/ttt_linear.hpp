// Host API of TTT-Linear's forward on a CUDA device (core/params/ttt_linear.hpp; the kernel in
// cuda/kernels/ttt_linear.cuh, its launch in cuda/kernels/launch/ttt_linear.cuh; docs/ttt_linear.md "On CUDA").
#pragma once

#include "ssm/core/params/ttt_linear.hpp"

namespace ssm::cuda {

/// The forward on the current device, the token loop with one block per (sequence, head): q, k, v, eta, out f32, f16
/// or bf16; ln_weight, ln_bias, position_weights and the states f32 (initial and final state, initial and final pending
/// sum, may be the same buffers); p.cu_seqlens in host memory (as ssm::ttt_linear passes it). Allocates its workspace
/// stream-ordered on `stream` (the sequence table, and per sequence and head 4 (2 (d + 1) d + 3 d) bytes) and frees it
/// there; does not synchronize. ssm::Error for other dtypes, shapes past the kernel's limits and CUDA failures.
void ttt_linear_forward(const TttLinearParams& p, void* stream = nullptr);

}  // namespace ssm::cuda
