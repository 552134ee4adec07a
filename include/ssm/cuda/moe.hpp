// Host API of the mixture of experts' forward on a CUDA device (core/params/moe.hpp; kernels in cuda/kernels/moe.cuh,
// launches in cuda/kernels/launch/moe.cuh; docs/moe.md "CUDA").
#pragma once

#include "ssm/core/params/moe.hpp"

namespace ssm::cuda {

/// The mixture of experts on the current device: x, out and router_logits f32 with f32, f16 or bf16 weights, or all
/// f64. The router GEMM, the top-k routing, a counting sort of the (token, choice) pairs by expert, the gate/up GEMM
/// over each expert's gathered token rows with the activation as its epilogue, the down GEMM scaled by the routing
/// weight and scattered to the pair's row, and the sum over each token's choices. Allocates its workspace (about
/// 256 MiB at most: long inputs run in slices of tokens sized to that budget, one token a slice at least)
/// stream-ordered on `stream` and frees it there; does not synchronize.
/// ssm::Error for other dtypes, shapes past the kernels' limits and CUDA failures.
void moe_forward(const MoeParams& p, void* stream = nullptr);

}  // namespace ssm::cuda
