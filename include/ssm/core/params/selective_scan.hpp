// The argument block every selective-scan implementation receives once the op has validated its
// tensors: plain pointers, sizes and element strides, trivially copyable so a CUDA kernel takes it by
// value. The reference, the optimized CPU path and the CUDA kernels all read this one struct.
// Semantics (Gu & Dao 2023, selective_scan_ref; docs/math.md §5.1), channel c uses group c / (d / g):
//   Delta_t = softplus(delta_t + delta_bias)         (softplus only when delta_softplus)
//   h_t     = exp(Delta_t A) * h_{t-1} + Delta_t B_t u_t
//   y_t     = C_t . h_t + D u_t                       (complex A: 2 Re(C_t . h_t) + D u_t)
//   out_t   = y_t * silu(z_t)                         (when z is given)
#pragma once

#include <cstdint>

#include "ssm/core/index.hpp"
#include "ssm/core/macros.hpp"

namespace ssm {

/// Which implementation of the scan to run (SelectiveScanOptions::path) and, once it ran, which one did (the CPU
/// drivers' ScanRun::path). One enum for the op, the CPU code and the tests.
///   automatic:  the CPU code picks sequential or chunked from the shape (never reported as what ran);
///   reference:  the plain loops of ssm/reference/ (the oracle);
///   sequential: threads over (batch row, channel block), each sequence in order (backward: "channel-blocks");
///   chunked:    each sequence split in time over the threads (backward: "time-split").
enum class ScanPath { automatic, reference, sequential, chunked };

/// The states a forward saves for its backward, which restarts its recomputation from them (Gu & Dao 2023, §3.3.2
/// "recomputation"): h at the END of every chunk of chunk_len steps, per sequence and channel, in one layout on the
/// CPU and on CUDA:
///   data: (rows, d, n_chunks, n) contiguous, state dtype; rows = b (with cu_seqlens: the sequences);
///   chunk j of a sequence covers its steps [j chunk_len, min((j + 1) chunk_len, len)).
/// The state before chunk j > 0 is the one saved for chunk j - 1; before chunk 0 it is the initial state. A
/// trivially copyable view: data is not owned. The CPU forward saves chunks of kCpuScanChunkLen steps (its time
/// tile); the CUDA forward chunks of cuda::selective_scan_chunk_len(longest sequence) (its block's tokens).
struct ChunkStates {
  void* data = nullptr;   // (rows, d, n_chunks, n); null: none
  index_t n_chunks = 0;   // chunks per sequence, the third extent: count(the longest sequence, chunk_len)
  index_t chunk_len = 0;  // steps per chunk

  /// Chunks of chunk_len steps covering len steps (at least 1).
  SSM_HOST_DEVICE static constexpr index_t count(index_t len, index_t chunk_len) {
    return len > chunk_len ? (len + chunk_len - 1) / chunk_len : 1;
  }
  /// Offset in elements of the state at the end of chunk j of (row, channel c) in a scan of d channels, state size n.
  SSM_HOST_DEVICE constexpr index_t offset(index_t row, index_t c, index_t j, index_t d, index_t n) const {
    return ((row * d + c) * n_chunks + j) * n;
  }
};

/// Steps per chunk of the states the CPU forward saves (its time tile); the op's save_chunk_states uses it.
inline constexpr index_t kCpuScanChunkLen = 128;

struct ScanParams {
  using index_t = ::ssm::index_t;

  // ---- sizes ----
  index_t batch = 0;     // b: sequences (with cu_seqlens: 1, the sequences are packed along l)
  index_t dim = 0;       // d: channels
  index_t seqlen = 0;    // l: time steps (with cu_seqlens: the packed total)
  index_t dstate = 0;    // n: state size per channel (complex entries when is_complex)
  index_t n_groups = 1;  // g: groups sharing B and C; d % g == 0

  // ---- flags ----
  bool is_complex = false;     // A, B, C, state complex (interleaved re, im pairs of the weight type)
  bool variable_B = true;      // B: (b, g, n, l) when true, (d, n) when false
  bool variable_C = true;      // C likewise
  bool delta_softplus = false;

  // ---- inputs (the input dtype: f32, f64, f16 or bf16) ----
  // The *_l_stride fields step along l (time). They are 1 (channel-major) everywhere except on the way to the CUDA
  // forward kernel and the reference, which read any stride along l: the channel-last views of the Mamba block's
  // time-major activations (l stride = the row width). The CPU kernels and every backward take unit stride along l
  // (the op copies channel-last operands channel-major for them).
  const void* u = nullptr;  // (b, d, l)
  index_t u_batch_stride = 0, u_d_stride = 0, u_l_stride = 1;
  const void* delta = nullptr;  // (b, d, l)
  index_t delta_batch_stride = 0, delta_d_stride = 0, delta_l_stride = 1;
  const void* z = nullptr;  // (b, d, l) or null
  index_t z_batch_stride = 0, z_d_stride = 0, z_l_stride = 1;
  // variable B/C: (b, g, n, l), in the input dtype (complex: the weight's complex type, unit stride along l
  // counted in complex elements); fixed B/C: (d, n) in the weight dtype (complex when is_complex)
  const void* B = nullptr;
  index_t B_batch_stride = 0, B_group_stride = 0, B_n_stride = 0;  // fixed: B_group_stride = d stride
  index_t B_l_stride = 1;                                          // variable only
  const void* C = nullptr;
  index_t C_batch_stride = 0, C_group_stride = 0, C_n_stride = 0;
  index_t C_l_stride = 1;

  // ---- weights (the weight dtype: f32 for f32/f16/bf16 inputs, f64 for f64; complex when is_complex) ----
  const void* A = nullptr;  // (d, n)
  index_t A_d_stride = 0, A_n_stride = 0;
  const void* D = nullptr;           // (d) or null, real weight dtype
  const void* delta_bias = nullptr;  // (d) or null, real weight dtype

  // ---- state (the state dtype = the weight dtype: f32, f64, c64 or c128) ----
  const void* initial_state = nullptr;  // (b, d, n) (with cu_seqlens: (n_seqs, d, n)) or null (zeros)
  index_t init_batch_stride = 0, init_d_stride = 0, init_n_stride = 0;
  void* last_state = nullptr;  // (b, d, n) (with cu_seqlens: (n_seqs, d, n)) or null, contiguous
  index_t last_batch_stride = 0, last_d_stride = 0;

  // ---- packed variable-length batches ----
  const std::int64_t* cu_seqlens = nullptr;  // (n_seqs + 1), 0 = cu[0] < ... <= cu[n_seqs] = l; null if unused
  index_t n_seqs = 0;

  // ---- output (input dtype) ----
  void* out = nullptr;  // (b, d, l)
  index_t out_batch_stride = 0, out_d_stride = 0, out_l_stride = 1;
};

}  // namespace ssm
