// What the chunked SSD kernels share (docs/ssd.md "CUDA"; the formulas in core/params/ssd.hpp): the chunk table and
// the workspace between the four launches, and the tile shape of the two GEMM-like kernels.
//
// Every sequence (a batch row, or a packed sequence of cu_seqlens) is cut into chunks of at most Q = chunk_size steps
// from its own start, as the CPU path does (cpu/ssd/chunks.hpp), so a packed sequence never shares a chunk with the
// next. The host builds the chunk table (kernels/launch/ssd.cuh: plan_ssd) and uploads it with the workspace.
//
// Segment sums: cs_t is the chunk's inclusive cumulative sum of Δ_t A, kept in double (as the CPU path: a difference
// of f32 sums would lose 6e-8 |cs| to cancellation). The weight of step j at step t >= j is exp(cs_t − cs_j) <= 1
// for Δ >= 0 and A <= 0; pairs j > t are masked before any exponential is taken.
#pragma once

#include <cstdint>

#include "common.cuh"
#include "ssm/core/params/ssd.hpp"

namespace ssm::kernels {

/// One row of the chunk table: the batch row, the first step along l, the length (1..Q) and the sequence.
inline constexpr int kSsdChunkFields = 4;

/// Device pointers of one forward call. chunks (n_chunks, 4) and first_chunk (rows + 1): sequence s owns chunks
/// [first_chunk[s], first_chunk[s + 1]). cs (n_chunks, h, q) double and Delta (n_chunks, h, q) f32: the cumulative
/// sums and step sizes, q = the longest chunk. states (n_chunks, h, p, n) f32: each chunk's zero-start state after
/// ssd_chunk_state_kernel, the state entering it after ssd_state_passing_kernel.
struct SsdWorkspace {
  const std::int64_t* chunks = nullptr;
  const std::int64_t* first_chunk = nullptr;
  std::int64_t n_chunks = 0, q = 0;
  double* cs = nullptr;
  float* Delta = nullptr;
  float* states = nullptr;
};

/// The tiles of ssd_chunk_state_kernel and ssd_chunk_scan_kernel: kSsdTile × kSsdTile outputs per block, kSsdThreads =
/// (kSsdTile / 2)² threads, each owning the 2 × 2 outputs (r + a kSsdTile / 2, c + b kSsdTile / 2). The reduction
/// dimension is staged through shared memory kSsdTile at a time; rows padded by one float against bank conflicts.
inline constexpr int kSsdTile = 32;
inline constexpr int kSsdHalf = kSsdTile / 2;
inline constexpr int kSsdThreads = kSsdHalf * kSsdHalf;
inline constexpr int kSsdPitch = kSsdTile + 1;
/// The tiled kernels' minimum resident blocks (__launch_bounds__): caps ptxas at 65536 / (256 · 2) = 128 registers.
/// Without it ptxas (CUDA 13, sm_80) chose 64 for ssd_chunk_scan_kernel<f16 / bf16> and spilled 12 bytes.
inline constexpr int kSsdMinBlocks = 65536 / (kSsdThreads * 128);
/// Threads of ssd_state_passing_kernel (one state element each).
inline constexpr int kSsdPassThreads = 256;

}  // namespace ssm::kernels
