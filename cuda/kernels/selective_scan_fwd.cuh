// Fused selective-scan forward kernel (Gu & Dao 2023, "Mamba", §3.3 and Alg. 2; docs/math.md §5.1–5.2), SRAM-resident:
// one block per (channel, sequence); the sequence in chunks of kNThreads × kNItems tokens; per state index the
// recurrence h_t = exp(Delta_t A) h_{t-1} + Delta_t B_t u_t is a block scan of affine maps (a, b) with a
// stateful prefix callback carrying the running state across chunks; u, delta, B, C, z are read once, out is
// written once, softplus + delta bias + D + SiLU(z) are fused. f32 / f16 / bf16 inputs, f32 weights and state.
// u, delta, z, B, C and out are read / written with their strides along l (ScanParams::*_l_stride): 1 for
// channel-major operands, the row width for channel-last views of the Mamba block's time-major activations.
#pragma once

#include "common.cuh"
#include "ssm/core/params/selective_scan.hpp"

namespace ssm::kernels {

/// The affine step h -> a h + b of one token (the scan element; ssm/core/scalar.hpp).
using ScanPair = scalar::AffineStep<float>;

/// Composition, `first` then `second` (scalar::combine), as the functor the block scan takes.
struct ScanCombine {
  __device__ __forceinline__ ScanPair operator()(const ScanPair& first, const ScanPair& second) const {
    return scalar::combine(first, second);
  }
};

/// Stateful block-prefix callback: `running` is the composed step of everything before this chunk (its b is
/// the state entering the chunk). Called by the first warp with the chunk's aggregate; lane 0's result counts.
struct ScanPrefix {
  ScanPair running;
  __device__ __forceinline__ ScanPair operator()(const ScanPair& block_aggregate) {
    const ScanPair prefix = running;
    running = ScanCombine{}(running, block_aggregate);
    return prefix;
  }
};

/// Largest state size n (the running state per state index lives in shared memory).
inline constexpr int kScanMaxDstate = 256;

/// Threads and items per thread of one configuration; a chunk is kThreads * kItems tokens.
template <int kThreads_, int kItems_>
struct ScanFwdConfig {
  static constexpr int kThreads = kThreads_;
  static constexpr int kItems = kItems_;
  static constexpr int kChunk = kThreads * kItems;
};

/// Picks the configuration for the longest sequence of a launch (mamba's table, condensed): short sequences
/// get small blocks so that padding does not dominate, long ones 2048-token chunks. 8 items per thread
/// rather than mamba's 16: with 16 items ptxas (CUDA 13.0) spilled (64 x 16 on sm_80, 128 x 16 f16/bf16 on
/// sm_90); with 8 the kernel stays near 100 registers.
template <class F>
void dispatch_fwd_config(index_t max_len, F&& f) {
  if (max_len <= 128) f(ScanFwdConfig<32, 4>{});
  else if (max_len <= 1024) f(ScanFwdConfig<128, 8>{});
  else f(ScanFwdConfig<256, 8>{});
}

inline index_t fwd_chunk_len(index_t max_len) {
  index_t c = 0;
  dispatch_fwd_config(max_len, [&](auto cfg) { c = decltype(cfg)::kChunk; });
  return c;
}

/// Sequences of a launch: the batch, or the packed sequences of cu_seqlens.
inline index_t fwd_num_sequences(const ScanParams& p) { return p.cu_seqlens ? p.n_seqs : p.batch; }

/// Forward kernel. Grid (d, sequences), block kThreads. `chunk_states`: f32 (sequences, d, n_chunks, n) in
/// ChunkStates' layout with chunk_len = kChunk (the launcher checks it), or data null: the state h at the end of
/// every chunk (the only states kept for the backward pass).
/// Register target: 128 per thread. Without a minimum block count ptxas (CUDA 13.0) picked 64 registers for
/// 128 threads on sm_90 and spilled; asking for 65536 / (threads * 128) resident blocks sets the cap at 128.
template <int kThreads>
inline constexpr int kScanFwdMinBlocks = 65536 / (kThreads * 128) > 0 ? 65536 / (kThreads * 128) : 1;

template <class In, int kThreads, int kItems>
__global__ void __launch_bounds__(kThreads, kScanFwdMinBlocks<kThreads>)
    selective_scan_fwd_kernel(ScanParams p, ChunkStates chunk_states) {
  constexpr int kChunk = kThreads * kItems;
  using BlockScanT = BlockScan<ScanPair, kThreads>;
  using ScanStorage = typename BlockScanT::TempStorage;
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps, at most 1024 threads");
  static_assert(sizeof(ScanStorage) + kScanMaxDstate * sizeof(float) <= 8 * 1024,
                "selective_scan_fwd_kernel: static shared memory over its 8 KiB budget");
  SSM_SHARED(ScanStorage, scan_storage, 1);
  SSM_SHARED(float, running_h, kScanMaxDstate);  // (n) state entering the current chunk; thread 0 only

  const int tid = static_cast<int>(threadIdx.x);
  const index_t channel = blockIdx.x;
  const index_t seq = blockIdx.y;
  index_t batch = seq, start = 0, len = p.seqlen;
  if (p.cu_seqlens) {
    batch = 0;
    start = p.cu_seqlens[seq];
    len = p.cu_seqlens[seq + 1] - start;
  }
  const index_t group = channel / (p.dim / p.n_groups);

  // (l) rows with their strides along l: 1 channel-major, the row width for channel-last views of time-major data
  const index_t u_ls = p.u_l_stride, delta_ls = p.delta_l_stride, z_ls = p.z_l_stride, out_ls = p.out_l_stride;
  const In* u = static_cast<const In*>(p.u) + batch * p.u_batch_stride + channel * p.u_d_stride + start * u_ls;
  const In* delta = static_cast<const In*>(p.delta) + batch * p.delta_batch_stride + channel * p.delta_d_stride +
                    start * delta_ls;
  const In* z = p.z ? static_cast<const In*>(p.z) + batch * p.z_batch_stride + channel * p.z_d_stride + start * z_ls
                    : nullptr;
  In* out = static_cast<In*>(p.out) + batch * p.out_batch_stride + channel * p.out_d_stride + start * out_ls;
  const float* A = static_cast<const float*>(p.A) + channel * p.A_d_stride;  // (n)
  // Variable B/C: (n, l) slices of this sequence and group, input dtype. Fixed: (n) rows of channel, f32.
  const In* B_var = p.variable_B ? static_cast<const In*>(p.B) + batch * p.B_batch_stride +
                                       group * p.B_group_stride + start * p.B_l_stride
                                 : nullptr;
  const float* B_fix = p.variable_B ? nullptr : static_cast<const float*>(p.B) + channel * p.B_group_stride;
  const In* C_var = p.variable_C ? static_cast<const In*>(p.C) + batch * p.C_batch_stride +
                                       group * p.C_group_stride + start * p.C_l_stride
                                 : nullptr;
  const float* C_fix = p.variable_C ? nullptr : static_cast<const float*>(p.C) + channel * p.C_group_stride;
  const float D = p.D ? static_cast<const float*>(p.D)[channel] : 0.0f;
  const float delta_bias = p.delta_bias ? static_cast<const float*>(p.delta_bias)[channel] : 0.0f;
  const float* h0 = p.initial_state ? static_cast<const float*>(p.initial_state) + seq * p.init_batch_stride +
                                          channel * p.init_d_stride
                                    : nullptr;  // (n)
  float* h_last = p.last_state ? static_cast<float*>(p.last_state) + seq * p.last_batch_stride +
                                     channel * p.last_d_stride
                               : nullptr;  // (n)
  float* saved = chunk_states.data ? static_cast<float*>(chunk_states.data) +
                                         chunk_states.offset(seq, channel, 0, p.dim, p.dstate)
                                   : nullptr;  // (chunks, n)

  const index_t n_chunks = (len + kChunk - 1) / kChunk;
  if (n_chunks == 0) {  // empty sequence: the last state is the initial one (uniform exit, no barrier skipped)
    if (h_last)
      for (index_t s = tid; s < p.dstate; s += kThreads) h_last[s] = h0 ? h0[s * p.init_n_stride] : 0.0f;
    return;
  }

  // Positions within a sequence fit in 32 bits (the launcher checks l < 2^31): 32-bit index arithmetic keeps
  // the register count down.
  const int len32 = static_cast<int>(len);
  const int n_chunks32 = static_cast<int>(n_chunks);
  for (int chunk = 0; chunk < n_chunks32; ++chunk) {
    const int base = chunk * kChunk + tid * kItems;  // this thread's first token
    const int n_valid = len32 - base;                // items i < n_valid are tokens, the rest padding
    float delta_v[kItems], delta_u[kItems], y[kItems];
    SSM_UNROLL
    for (int i = 0; i < kItems; ++i) {
      const bool valid = i < n_valid;
      const float u_i = valid ? load_float(u + (base + i) * u_ls) : 0.0f;
      float d_i = valid ? load_float(delta + (base + i) * delta_ls) + delta_bias : 0.0f;
      if (p.delta_softplus) d_i = scalar::softplus(d_i);
      delta_v[i] = d_i;
      delta_u[i] = d_i * u_i;
      y[i] = D * u_i;
    }
    for (int s = 0; s < static_cast<int>(p.dstate); ++s) {
      const float A_s = A[s * p.A_n_stride];
      const float B_s = B_fix ? B_fix[s * p.B_n_stride] : 0.0f;
      const float C_s = C_fix ? C_fix[s * p.C_n_stride] : 0.0f;
      const In* B_row = B_var ? B_var + s * p.B_n_stride + base * p.B_l_stride : nullptr;  // this thread's tokens
      ScanPair steps[kItems];
      SSM_UNROLL
      for (int i = 0; i < kItems; ++i) {
        if (i < n_valid) {
          const float B_i = B_row ? load_float(B_row + i * p.B_l_stride) : B_s;
          steps[i] = ScanPair{expf(delta_v[i] * A_s), delta_u[i] * B_i};
        } else {
          steps[i] = ScanPair{1.0f, 0.0f};  // padding: the identity keeps the chunk's final state right
        }
      }
      ScanPrefix prefix{ScanPair{1.0f, 0.0f}};
      if (tid == 0) prefix.running.b = chunk == 0 ? (h0 ? h0[s * p.init_n_stride] : 0.0f) : running_h[s];
      BlockScanT(scan_storage[0]).InclusiveScan(steps, steps, ScanCombine{}, prefix);
      const In* C_row = C_var ? C_var + s * p.C_n_stride + base * p.C_l_stride : nullptr;  // this thread's tokens
      SSM_UNROLL
      for (int i = 0; i < kItems; ++i) {
        const float C_i = C_row ? (i < n_valid ? load_float(C_row + i * p.C_l_stride) : 0.0f) : C_s;
        y[i] += steps[i].b * C_i;  // steps[i].b is h at this token, state index s
      }
      if (tid == 0) {
        const float h_end = prefix.running.b;
        running_h[s] = h_end;
        if (saved) saved[static_cast<index_t>(chunk) * p.dstate + s] = h_end;
        if (h_last && chunk == n_chunks32 - 1) h_last[s] = h_end;
      }
      __syncthreads();  // the next state index reuses scan_storage
    }
    SSM_UNROLL
    for (int i = 0; i < kItems; ++i) {
      if (i < n_valid) {
        float o = y[i];
        if (z) {
          const float z_i = load_float(z + (base + i) * z_ls);
          o *= scalar::silu(z_i);  // SiLU gate
        }
        store_float(out + (base + i) * out_ls, o);
      }
    }
  }
}

}  // namespace ssm::kernels
