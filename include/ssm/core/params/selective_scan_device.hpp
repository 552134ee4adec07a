// The options and gradient buffers of the fused device selective scan (the CUDA kernels of ssm::cuda, and the
// same kernels under the host emulation): the forward's stream / saved chunk states, and the backward's
// gradients, next to the ScanParams both take. Pointers are memory of the device that runs the kernels.
#pragma once

#include <cstdint>

#include "ssm/core/params/selective_scan.hpp"

namespace ssm {

struct ScanForwardOptions {
  void* stream = nullptr;         ///< a cudaStream_t; null: the default stream. The call does not synchronize.
  /// The state h at the end of every chunk (the states the backward pass restarts from), or data null: f32 device
  /// memory in ChunkStates' one layout (sequences, d, n_chunks, n). The kernel's chunk is its block's tokens, so
  /// chunk_len must be selective_scan_chunk_len(max_seqlen) and n_chunks selective_scan_chunk_count(max_seqlen):
  /// the launch checks both (an ssm::Error naming chunk_states), so a buffer of another layout is never written.
  ChunkStates chunk_states{};
  /// With cu_seqlens: the longest packed sequence, if known (0: the packed length l, an upper bound). It picks
  /// the block configuration and sizes chunk_states; a value below the longest sequence is undefined behaviour
  /// (cu_seqlens is device memory, which the launch does not read), one above l an ssm::Error.
  std::int64_t max_seqlen = 0;
  /// The CUDA device to run on (cudaSetDevice first); -1: the current device.
  int device = -1;
};

/// Gradient buffers of the backward pass (selective_scan_backward and its kernel), all contiguous device memory.
/// The caller zeroes the accumulated ones (grad_A, grad_B, grad_C, grad_D, grad_delta_bias): they are summed
/// with atomics over batches and the channels of a group. grad_B / grad_C are f32 whatever the input dtype.
struct ScanDeviceGradParams {
  const void* grad_out = nullptr;          ///< (b, d, l) input dtype
  const float* grad_last_state = nullptr;  ///< (b | n_seqs, d, n) or null
  ChunkStates chunk_states{};              ///< (b | n_seqs, d, n_chunks, n) f32 from the forward (ScanForwardOptions), same p
  std::int64_t max_seqlen = 0;             ///< with cu_seqlens: the forward's ScanForwardOptions::max_seqlen (0: l)
  void* grad_u = nullptr;                  ///< (b, d, l) input dtype
  void* grad_delta = nullptr;              ///< (b, d, l) input dtype
  void* grad_z = nullptr;                  ///< (b, d, l) input dtype; needed when z is given
  float* grad_A = nullptr;                 ///< (d, n)
  float* grad_B = nullptr;                 ///< variable: (b, g, n, l); fixed: (d, n)
  float* grad_C = nullptr;                 ///< same forms as grad_B
  float* grad_D = nullptr;                 ///< (d) or null
  float* grad_delta_bias = nullptr;        ///< (d) or null
  float* grad_initial_state = nullptr;     ///< (b | n_seqs, d, n) or null
};

}  // namespace ssm
