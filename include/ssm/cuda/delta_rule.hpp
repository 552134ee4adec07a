// Host API of the delta rule (DeltaNet, Gated DeltaNet) on a CUDA device (core/params/delta_rule.hpp;
// kernels in cuda/kernels/delta_rule.cuh, launches in cuda/kernels/launch/delta_rule.cuh; docs/delta_rule.md "On
// CUDA").
#pragma once

#include "ssm/core/params/delta_rule.hpp"

namespace ssm::cuda {

/// The chunked forward on the current device: q, k, v, beta, g, out f32, f16 or bf16; the states f32; p.cu_seqlens in
/// host memory (as ssm::delta_rule passes it). Allocates its workspace stream-ordered on `stream` (per chunk and head
/// about 4 q (3 dk + dv + 2 q + 5) bytes, per sequence and head 4 dv (dk + q)) and frees it there; does not
/// synchronize. ssm::Error for other dtypes, shapes past the kernels' limits and CUDA failures.
void delta_rule_forward(const DeltaRuleParams& p, void* stream = nullptr);

/// The chunked backward on the current device (kernels/delta_rule_bwd.cuh): the dtypes of delta_rule_forward; g's
/// buffers contiguous (DeltaRuleGradParams), grad_out required when there are steps, p.out not read. Runs the forward's
/// kernels again keeping each chunk's entering state, then the reverse walk and the chunks' gradients; its workspace,
/// stream-ordered, adds to the forward's per chunk and head about 4 (2 dk dv + 2 q dv + q (dv + dk) + q²) bytes (with g
/// 4 q² + 16 q more), per sequence and head 4 dk dv, and per step and head 8 dk. Does not synchronize. ssm::Error as
/// the forward.
void delta_rule_backward(const DeltaRuleParams& p, const DeltaRuleGradParams& g, void* stream = nullptr);

}  // namespace ssm::cuda
