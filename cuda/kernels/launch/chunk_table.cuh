// Host code the sequence ops' launch headers share (kernels/launch/ssd.cuh, linear_attention.cuh, delta_rule.cuh,
// rwkv7.cuh, ttt_linear.cuh): the checks every plan makes (dtypes, packed sequences), and the chunk table of the
// chunked ones, every sequence (a batch row, or a packed sequence of cu_seqlens) cut into chunks from its own start.
// No kernels: a launch header that needs these but not the SSD kernels includes this, so that no non-template kernel
// is defined in two of ssm::cuda's translation units.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "../ssd_common.cuh"
#include "ssm/core/error.hpp"

namespace ssm::kernels {

inline std::size_t ssd_align(std::size_t bytes) {
  return (bytes + 255) / 256 * 256;
}

/// Lays out a workspace after its header (`bytes` at the start: the header's, aligned): take<T>(n) reserves n elements
/// of T at the next 256-byte boundary and returns their byte offset from the workspace's base.
struct WorkspaceLayout {
  std::size_t bytes = 0;

  template <class T = float>
  std::size_t take(std::int64_t n) {
    const std::size_t offset = bytes;
    bytes += ssd_align(static_cast<std::size_t>(n) * sizeof(T));
    return offset;
  }
};

/// The T pointer `offset` bytes into the workspace at `base`; null for offset 0 (a buffer the plan did not take: the
/// header is at 0).
template <class T = float>
T* workspace_at(void* base, std::size_t offset) {
  return offset ? reinterpret_cast<T*>(static_cast<char*>(base) + offset) : nullptr;
}

/// The sequence ops' dtypes on CUDA, for an argument block with input_dtype and param_dtype: inputs f32, f16 or bf16
/// (computed in f32), the states and parameters f32.
template <class Params>
void check_compute_dtypes(const Params& p, const char* op) {
  SSM_CHECK(p.input_dtype == DType::f32 || p.input_dtype == DType::f16 || p.input_dtype == DType::bf16, op,
            ": input dtype must be f32, f16 or bf16 on CUDA (f32 compute), got ", name(p.input_dtype));
  SSM_CHECK(p.param_dtype == DType::f32, op, ": the param dtype must be f32 on CUDA, got ", name(p.param_dtype));
}

/// The host's packed sequences, when p has them, cover the steps [0, l) in order (cu_seqlens[0] = 0, nondecreasing,
/// cu_seqlens[n_seqs] = l): the ops check this, and a direct caller of ssm::cuda gets an ssm::Error instead of the
/// steps outside every sequence left unwritten.
template <class Params>
void check_packed_sequences(const Params& p, const char* op) {
  if (!p.cu_seqlens) return;
  SSM_CHECK(p.n_seqs >= 0 && p.cu_seqlens[0] == 0 && p.cu_seqlens[p.n_seqs] == p.seqlen, op,
            ": cu_seqlens must start at 0 and end at l = ", p.seqlen);
  for (std::int64_t s = 0; s < p.n_seqs; ++s)
    SSM_CHECK(p.cu_seqlens[s] <= p.cu_seqlens[s + 1], op, ": cu_seqlens must not decrease, got ", p.cu_seqlens[s],
              " then ", p.cu_seqlens[s + 1]);
}

/// Appends the chunk table of any argument block with rows(), seq_row, seq_begin and seq_end (SsdParams,
/// DeltaRuleParams) to `table`: one row (batch row, t0, len, sequence) per chunk of at most chunk_size steps from each
/// sequence's start, then first_chunk (rows + 1). Returns the number of chunks and the longest chunk's length.
template <class Params>
std::pair<std::int64_t, std::int64_t> append_chunk_table(const Params& p, std::int64_t chunk_size,
                                                         std::vector<std::int64_t>& table) {
  std::vector<std::int64_t> first{0};
  std::int64_t q = 0;
  const std::size_t start = table.size();
  for (std::int64_t s = 0; s < p.rows(); ++s) {
    for (std::int64_t t0 = p.seq_begin(s); t0 < p.seq_end(s); t0 += chunk_size) {
      const std::int64_t len = std::min(chunk_size, p.seq_end(s) - t0);
      table.insert(table.end(), {p.seq_row(s), t0, len, s});
      q = std::max(q, len);
    }
    first.push_back(static_cast<std::int64_t>(table.size() - start) / kSsdChunkFields);
  }
  table.insert(table.end(), first.begin(), first.end());
  return {first.back(), q};
}

}  // namespace ssm::kernels
