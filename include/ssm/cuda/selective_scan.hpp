// Host API of the fused CUDA selective scan (target ssm::cuda; Gu & Dao 2023, "Mamba", §3.3): launches the
// kernel of cuda/kernels/selective_scan_fwd.cuh on a validated ScanParams whose pointers are device memory.
// ssm::selective_scan calls it for CUDA tensors; it can also be called directly with a ScanParams.
#pragma once

#include <cstdint>
#include <string>

#include "ssm/core/dtype.hpp"
#include "ssm/core/params/selective_scan.hpp"
#include "ssm/core/params/selective_scan_device.hpp"

namespace ssm::cuda {

/// Tokens per chunk (threads × items per thread) the forward kernel uses when the longest sequence is
/// `max_seqlen`: 128, 1024 or 2048.
std::int64_t selective_scan_chunk_len(std::int64_t max_seqlen);
/// Chunks per sequence of `max_seqlen` tokens (at least 1): the third extent of chunk_states.
std::int64_t selective_scan_chunk_count(std::int64_t max_seqlen);
/// Both as the ChunkStates (data null) a forward over sequences of at most `max_seqlen` tokens saves into.
ChunkStates selective_scan_chunk_states(std::int64_t max_seqlen);

/// Fused selective-scan forward on the current CUDA device: out (b, d, l) in the input dtype and, when
/// p.last_state is set, the last state (b or n_seqs, d, n) f32. `input_dtype` is the dtype of u, delta, z and
/// variable B / C: f32, f16 or bf16; weights (A (d, n), fixed B / C (d, n), D (d), delta_bias (d)) and states are
/// f32. Real A only, n <= 256. Returns the path name, "cuda-fused". Throws ssm::Error for what the kernel does
/// not support (f64, complex A, n > 256, more than 65535 sequences) and when the CUDA runtime fails (no GPU).
std::string selective_scan_forward(const ScanParams& p, DType input_dtype, const ScanForwardOptions& options = {});

/// Fused selective-scan backward on the current CUDA device (docs/math.md §5.3): recomputes each chunk's states from
/// the chunk-end states the forward saved (ScanForwardOptions::chunk_states, same p), scans the gradient in
/// reverse and fills `g` (see ScanDeviceGradParams). Same dtypes and limits as the forward; with cu_seqlens, one
/// block per channel and packed sequence, g.max_seqlen the forward's ScanForwardOptions::max_seqlen.
void selective_scan_backward(const ScanParams& p, DType input_dtype, const ScanDeviceGradParams& g, void* stream = nullptr);

}  // namespace ssm::cuda
