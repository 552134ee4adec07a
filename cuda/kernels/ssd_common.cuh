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

/// Chunk c's row of a chunk table, decoded.
struct ChunkRow {
  std::int64_t row, t0, len;  // the batch row, the first step along l, the length
};
__device__ __forceinline__ ChunkRow chunk_row(const std::int64_t* chunks, std::int64_t c) {
  const std::int64_t* r = chunks + c * kSsdChunkFields;
  return ChunkRow{r[0], r[1], r[2]};
}

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

/// The backward's own buffers (kernels/launch/ssd.cuh: plan_ssd with a backward lays them out after the forward's).
/// dstates (n_chunks, h, p, n): E_c, the state gradient chunk c's own outputs give, then (after the reverse state
/// passing) ḡS_c, the gradient of the state chunk c leaves. dcs (n_chunks, h, q): ḡcs, the gradient of the cumulative
/// sums; dDelta (n_chunks, h, q): ḡΔ from x's products (the gate adds A ρ); both zeroed, then summed into by atomics
/// (the blocks of a chunk's p tiles, n tiles and step tiles share them). dG (n_chunks, h, q, q): per head the
/// gradient of C Bᵀ, ḡM ⊙ L (row t, column s <= t; every (t, s) of a lower tile written, 0 above the diagonal).
/// y (b, l, h, p) f32, contiguous, only with z: the forward's output before the gate, y = Y + D x (for ḡz).
struct SsdGradWorkspace {
  float* dstates = nullptr;
  float* dcs = nullptr;
  float* dDelta = nullptr;
  float* dG = nullptr;
  float* y = nullptr;
};

/// The incoming gradient of y at step t (absolute along l) of batch row `row`, channel pp of `head`:
/// ḡy = ḡout silu(z) (ḡout without z). grad_out is contiguous (b, l, h, p).
template <class In>
__device__ __forceinline__ float ssd_grad_y(const SsdParams& p, const SsdGradParams& g, index_t row, index_t t,
                                            index_t head, index_t pp) {
  float gy = load_float(static_cast<const In*>(g.grad_out) + ((row * p.seqlen + t) * p.nheads + head) * p.headdim + pp);
  if (p.z)
    gy *= scalar::silu(load_float(static_cast<const In*>(p.z) + row * p.z_batch_stride + t * p.z_seq_stride +
                                  head * p.z_head_stride + pp));
  return gy;
}

/// Sums v over the 16 lanes that share a row of a tile (tx = lane % 16 within half a warp): a xor butterfly.
__device__ __forceinline__ float ssd_row_sum16(float v) {
  SSM_UNROLL
  for (int off = 8; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

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
