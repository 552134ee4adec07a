// Host API of linear attention and retention on a CUDA device (core/params/linear_attention.hpp; the element-wise
// kernels in cuda/kernels/linear_attention.cuh around the chunked SSD kernels, launches in
// cuda/kernels/launch/linear_attention.cuh; docs/linear_attention.md "On CUDA").
#pragma once

#include "ssm/core/params/linear_attention.hpp"

namespace ssm::cuda {

/// The chunked forward on the current device: q, k, v, out f32, f16 or bf16; the states f32; p.cu_seqlens and
/// p.log_gamma in host memory (as ssm::linear_attention passes them). With a log gate (GLA) the gated kernels of
/// cuda/kernels/gla.cuh run in the SSD kernels' place (their buffers: n_chunks h (q (16 dk + 4 q) + 4 dk) + 4 rows
/// h (dv + 1) dk bytes, in place of the SSD forward's).
/// Allocates its workspace stream-ordered on `stream` (the SSD forward's, plus 4 (2 b l g dk + 2 b l h (dv + 1))
/// bytes and the transposed states) and frees it there; does not synchronize. ssm::Error for other dtypes, shapes past
/// the kernels' limits and CUDA failures.
void linear_attention_forward(const LinearAttentionParams& p, void* stream = nullptr);

/// The chunked backward on the current device: the dtypes of linear_attention_forward; g's buffers contiguous
/// (LinearAttentionGradParams), grad_out required when there are steps. Runs the SSD backward on the packed inputs
/// (with the normalizer, the forward's output first), or with a log gate GLA's own backward kernels (kernels/gla.cuh;
/// the gate's gradient into g.grad_log_gate); does not synchronize. ssm::Error as the forward.
void linear_attention_backward(const LinearAttentionParams& p, const LinearAttentionGradParams& g,
                               void* stream = nullptr);

}  // namespace ssm::cuda
