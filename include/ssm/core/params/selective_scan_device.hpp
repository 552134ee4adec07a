// The options and gradient buffers of the fused device selective scan (the CUDA kernels of ssm::cuda, and the
// same kernels under the host emulation): the forward's stream / saved chunk states, and the backward's
// gradients, next to the ScanParams both take. Pointers are memory of the device that runs the kernels.
#pragma once

#include <cstdint>

namespace ssm {

struct ScanForwardOptions {
  void* stream = nullptr;         ///< a cudaStream_t; null: the default stream. The call does not synchronize.
  /// Device memory (sequences, d, selective_scan_chunk_count(max_seqlen), n) f32 receiving the state h at the
  /// end of every chunk (the states the backward pass restarts from), or null.
  float* chunk_states = nullptr;
  /// With cu_seqlens: the longest packed sequence, if known (0: the packed length l, an upper bound). It picks
  /// the block configuration and sizes chunk_states.
  std::int64_t max_seqlen = 0;
  /// The CUDA device to run on (cudaSetDevice first); -1: the current device.
  int device = -1;
};

/// Gradient buffers of the backward pass (selective_scan_backward and its kernel), all contiguous device memory.
/// The caller zeroes the accumulated ones (grad_A, grad_B, grad_C, grad_D, grad_delta_bias): they are summed
/// with atomics over batches and the channels of a group. grad_B / grad_C are f32 whatever the input dtype.
struct ScanDeviceGradParams {
  const void* grad_out = nullptr;          ///< (b, d, l) input dtype
  const float* grad_last_state = nullptr;  ///< (b, d, n) or null
  const float* chunk_states = nullptr;     ///< (b, d, n_chunks_max, n) from the forward (ScanForwardOptions)
  std::int64_t n_chunks_max = 0;           ///< selective_scan_chunk_count(l)
  void* grad_u = nullptr;                  ///< (b, d, l) input dtype
  void* grad_delta = nullptr;              ///< (b, d, l) input dtype
  void* grad_z = nullptr;                  ///< (b, d, l) input dtype; needed when z is given
  float* grad_A = nullptr;                 ///< (d, n)
  float* grad_B = nullptr;                 ///< variable: (b, g, n, l); fixed: (d, n)
  float* grad_C = nullptr;                 ///< same forms as grad_B
  float* grad_D = nullptr;                 ///< (d) or null
  float* grad_delta_bias = nullptr;        ///< (d) or null
  float* grad_initial_state = nullptr;     ///< (b, d, n) or null
};

}  // namespace ssm
