// Host API of RWKV-7's generalized delta rule on a CUDA device (core/params/rwkv7.hpp; kernels in
// cuda/kernels/rwkv7.cuh, launches in cuda/kernels/launch/rwkv7.cuh; docs/rwkv7.md "On CUDA").
#pragma once

#include "ssm/core/params/rwkv7.hpp"

namespace ssm::cuda {

/// The forward on the current device, one thread per value column through the sequence: q, k, v, log_w, a, b, out
/// f32, f16 or bf16; the states f32 (initial_state and final_state may be one buffer); p.cu_seqlens in host memory (as
/// ssm::rwkv7 passes it). Allocates its workspace stream-ordered on `stream` (the sequence table and 4 dk dv bytes per
/// sequence and head) and frees it there; does not synchronize. ssm::Error for other dtypes, shapes past the kernels'
/// limits and CUDA failures.
void rwkv7_forward(const Rwkv7Params& p, void* stream = nullptr);

/// The backward on the current device: the dtypes of rwkv7_forward; g's buffers contiguous (Rwkv7GradParams),
/// grad_out required when there are steps, p.out not read. A forward pass keeps the state every p.chunk_size steps,
/// then each interval is recomputed and run in reverse. Its workspace, stream-ordered, holds per sequence and head 4 dk
/// dv (p.chunk_size + 3) bytes, per interval and head 4 dk dv, and with dv > 128 per step and head 20 dk ⌈dv / 128⌉
/// (the column blocks' partial sums). Does not synchronize. ssm::Error as the forward.
void rwkv7_backward(const Rwkv7Params& p, const Rwkv7GradParams& g, void* stream = nullptr);

}  // namespace ssm::cuda
