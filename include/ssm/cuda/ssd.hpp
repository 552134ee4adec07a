// Host API of the chunked SSD forward and backward on a CUDA device (Mamba-2; core/params/ssd.hpp; kernels in
// cuda/kernels/ssd_*.cuh, launches in cuda/kernels/launch/ssd.cuh; docs/ssd.md "CUDA").
#pragma once

#include "ssm/core/params/ssd.hpp"

namespace ssm::cuda {

/// The chunked SSD forward on the current device: x, B, C, z, out f32, f16 or bf16; dt, A, D, dt_bias and the states
/// f32; p.cu_seqlens in host memory (as ssm::ssd passes it). Allocates its workspace (the chunk table, the gate's
/// cumulative sums, the chunk states: about n_chunks h (12 q + 4 p n) bytes) stream-ordered on `stream` and frees
/// it there; does not synchronize. With p.chunk_states (and p.y, with z) it keeps the states entering each chunk and
/// y before the gate there, for the backward (f32; the states then take no workspace). ssm::Error for other dtypes,
/// shapes past the kernels' limits and CUDA failures.
void ssd_forward(const SsdParams& p, void* stream = nullptr);

/// The chunked SSD backward on the current device (docs/ssd.md "CUDA backward"): the dtypes of ssd_forward; g's
/// buffers contiguous (core/params/ssd.hpp: SsdGradParams), grad_out required. Recomputes the forward's stages and
/// allocates its workspace stream-ordered (the forward's, plus about n_chunks h (4 p n + 8 q + 4 q²) bytes and, with
/// z, 4 b l h p bytes for y); does not synchronize. g.saved_states and g.saved_y (what a forward kept) are read
/// instead of recomputed and take no workspace. ssm::Error as ssd_forward.
void ssd_backward(const SsdParams& p, const SsdGradParams& g, void* stream = nullptr);

}  // namespace ssm::cuda
