// Fused selective-scan backward kernel (Gu & Dao 2023, "Mamba", §3.3; docs/math.md §5.3): one block per
// (channel, sequence: a batch row or a packed sequence); chunks in reverse order; per chunk and state index the
// forward scan is recomputed from the chunk-start state the forward kernel saved, and the gradient
// g_t = C_t dy_t + a_{t+1} g_{t+1} is a block scan over the reversed chunk (through shared memory) with a prefix
// callback carrying g across chunks.
// Weight gradients are block-reduced then added atomically (batches and channels of a group share them).
#pragma once

#include "selective_scan_fwd.cuh"
#include "ssm/cuda/selective_scan.hpp"

namespace ssm::kernels {

using ::ssm::ScanDeviceGradParams;

/// The backward block shape for a forward configuration: the same chunk, 4 items per thread (the backward
/// keeps about twice the per-token state of the forward in registers).
template <class FwdCfg>
using ScanBwdConfig = ScanFwdConfig<FwdCfg::kChunk / 4 >= 32 ? FwdCfg::kChunk / 4 : FwdCfg::kThreads,
                                    FwdCfg::kChunk / 4 >= 32 ? 4 : FwdCfg::kItems>;

/// Sum over the block of three values per thread; the totals are valid in thread 0. Two barriers.
template <int kThreads, class Red>
__device__ __forceinline__ void block_sum3(Red& red, int tid, float& x, float& y, float& z) {
  red[tid] = x;
  red[kThreads + tid] = y;
  red[2 * kThreads + tid] = z;
  __syncthreads();
  if (tid == 0) {
    float sx = 0.0f, sy = 0.0f, sz = 0.0f;
    for (int j = 0; j < kThreads; ++j) {
      sx += red[j];
      sy += red[kThreads + j];
      sz += red[2 * kThreads + j];
    }
    x = sx;
    y = sy;
    z = sz;
  }
  __syncthreads();  // red is reused by the next call
}

template <int kThreads>
inline constexpr int kScanBwdMinBlocks = kScanFwdMinBlocks<kThreads>;

/// Backward kernel. Grid (d, sequences), block kThreads; kThreads * kItems must equal the forward's chunk length.
/// Sequences are the batch rows, or the packed sequences of cu_seqlens (device memory; b == 1): each block runs one
/// sequence's steps [start, start + len) of its row, as the forward kernel does, so nothing crosses a boundary.
template <class In, int kThreads, int kItems>
__global__ void __launch_bounds__(kThreads, kScanBwdMinBlocks<kThreads>)
    selective_scan_bwd_kernel(ScanParams p, ScanDeviceGradParams gp) {
  constexpr int kChunk = kThreads * kItems;
  using BlockScanT = BlockScan<ScanPair, kThreads>;
  using ScanStorage = typename BlockScanT::TempStorage;
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps, at most 1024 threads");
  static_assert(sizeof(ScanStorage) + (2 * kChunk + 4 * kThreads + 2 * kScanMaxDstate) * sizeof(float) <= 40 * 1024,
                "selective_scan_bwd_kernel: static shared memory over its 40 KiB budget");
  SSM_SHARED(ScanStorage, scan_storage, 1);
  SSM_SHARED(float, exchange_a, kChunk);        // (chunk) a_t of every token, for the reversed scan
  SSM_SHARED(float, exchange_c, kChunk);        // (chunk) C_t dy_t, then g_t
  SSM_SHARED(float, red, 3 * kThreads);         // block reductions
  SSM_SHARED(float, h_last, kThreads);          // (threads) h at each thread's last token: the next one's h_{t-1}
  SSM_SHARED(float, carry_g, kScanMaxDstate);   // (n) a g of the first token of the chunk after; thread 0 only
  SSM_SHARED(float, grad_A_acc, kScanMaxDstate);  // (n) this block's grad_A; thread 0 only

  const int tid = static_cast<int>(threadIdx.x);
  const index_t channel = blockIdx.x;
  const index_t seq = blockIdx.y;
  index_t batch = seq, start = 0, len = p.seqlen;  // this sequence: batch row, first step, steps
  if (p.cu_seqlens) {
    batch = 0;
    start = p.cu_seqlens[seq];
    len = p.cu_seqlens[seq + 1] - start;
  }
  const index_t l = p.seqlen;  // the row length of the contiguous (b, d, l) and (b, g, n, l) buffers
  const index_t group = channel / (p.dim / p.n_groups);
  const index_t row = batch * p.dim + channel;      // (b, d) row of the contiguous gradient buffers
  const index_t state_row = seq * p.dim + channel;  // (sequences, d) row of the states and their gradients

  // Operands have unit stride along l (the launcher checks it); every pointer starts at the sequence's first step.
  const In* u = static_cast<const In*>(p.u) + batch * p.u_batch_stride + channel * p.u_d_stride + start;  // (len)
  const In* delta =
      static_cast<const In*>(p.delta) + batch * p.delta_batch_stride + channel * p.delta_d_stride + start;
  const In* z =
      p.z ? static_cast<const In*>(p.z) + batch * p.z_batch_stride + channel * p.z_d_stride + start : nullptr;
  const In* grad_out = static_cast<const In*>(gp.grad_out) + row * l + start;  // (len)
  In* grad_u = static_cast<In*>(gp.grad_u) + row * l + start;                  // (len)
  In* grad_delta = static_cast<In*>(gp.grad_delta) + row * l + start;          // (len)
  In* grad_z = z ? static_cast<In*>(gp.grad_z) + row * l + start : nullptr;    // (len)
  const float* A = static_cast<const float*>(p.A) + channel * p.A_d_stride;  // (n)
  const In* B_var = p.variable_B
                        ? static_cast<const In*>(p.B) + batch * p.B_batch_stride + group * p.B_group_stride + start
                        : nullptr;  // (n, len) with row stride B_n_stride
  const float* B_fix = p.variable_B ? nullptr : static_cast<const float*>(p.B) + channel * p.B_group_stride;
  const In* C_var = p.variable_C
                        ? static_cast<const In*>(p.C) + batch * p.C_batch_stride + group * p.C_group_stride + start
                        : nullptr;  // (n, len) with row stride C_n_stride
  const float* C_fix = p.variable_C ? nullptr : static_cast<const float*>(p.C) + channel * p.C_group_stride;
  // Contiguous f32 gradients of B and C: variable (b, g, n, l) from the sequence's first step (row stride l),
  // fixed (d, n).
  float* grad_B_var = p.variable_B ? gp.grad_B + (batch * p.n_groups + group) * p.dstate * l + start : nullptr;
  float* grad_B_fix = p.variable_B ? nullptr : gp.grad_B + channel * p.dstate;
  float* grad_C_var = p.variable_C ? gp.grad_C + (batch * p.n_groups + group) * p.dstate * l + start : nullptr;
  float* grad_C_fix = p.variable_C ? nullptr : gp.grad_C + channel * p.dstate;
  const float D = p.D ? static_cast<const float*>(p.D)[channel] : 0.0f;
  const float delta_bias = p.delta_bias ? static_cast<const float*>(p.delta_bias)[channel] : 0.0f;
  const float* h0 = p.initial_state ? static_cast<const float*>(p.initial_state) + seq * p.init_batch_stride +
                                          channel * p.init_d_stride
                                    : nullptr;  // (n)
  const float* saved = static_cast<const float*>(gp.chunk_states.data) +
                       gp.chunk_states.offset(seq, channel, 0, p.dim, p.dstate);  // (chunks, n)
  const float* grad_last = gp.grad_last_state ? gp.grad_last_state + state_row * p.dstate : nullptr;  // (n)

  const int len32 = static_cast<int>(len);
  const int n_chunks = (len32 + kChunk - 1) / kChunk;
  for (int s = tid; s < static_cast<int>(p.dstate); s += kThreads) {
    carry_g[s] = grad_last ? grad_last[s] : 0.0f;
    grad_A_acc[s] = 0.0f;
  }
  __syncthreads();
  float grad_D_part = 0.0f, grad_bias_part = 0.0f;
  for (int chunk = n_chunks - 1; chunk >= 0; --chunk) {
    const int base = chunk * kChunk + tid * kItems;
    const int n_valid = len32 - base;
    const int chunk_valid = len32 - chunk * kChunk;  // tokens of this chunk (may exceed kChunk: not the last)
    float u_v[kItems], Delta[kItems], dy[kItems], y[kItems], grad_Delta[kItems], grad_u_v[kItems];
    SSM_UNROLL
    for (int i = 0; i < kItems; ++i) {
      const bool valid = i < n_valid;
      u_v[i] = valid ? load_float(u + base + i) : 0.0f;
      float d_i = valid ? load_float(delta + base + i) + delta_bias : 0.0f;
      if (p.delta_softplus) d_i = scalar::softplus(d_i);
      Delta[i] = d_i;
      float g_out = valid ? load_float(grad_out + base + i) : 0.0f;
      if (z && valid) {
        const float z_i = load_float(z + base + i);
        g_out *= scalar::silu(z_i);  // dy = dout * silu(z)
      }
      dy[i] = g_out;
      y[i] = D * u_v[i];
      grad_Delta[i] = 0.0f;
      grad_u_v[i] = D * dy[i];
    }
    for (int s = 0; s < static_cast<int>(p.dstate); ++s) {
      const float A_s = A[s * p.A_n_stride];
      const float B_s = B_fix ? B_fix[s * p.B_n_stride] : 0.0f;
      const float C_s = C_fix ? C_fix[s * p.C_n_stride] : 0.0f;
      float a[kItems], b[kItems], B_v[kItems], C_v[kItems];
      ScanPair steps[kItems];
      SSM_UNROLL
      for (int i = 0; i < kItems; ++i) {
        const bool valid = i < n_valid;
        B_v[i] = B_var ? (valid ? load_float(B_var + s * p.B_n_stride + base + i) : 0.0f) : B_s;
        C_v[i] = C_var ? (valid ? load_float(C_var + s * p.C_n_stride + base + i) : 0.0f) : C_s;
        a[i] = valid ? expf(Delta[i] * A_s) : 1.0f;
        b[i] = valid ? Delta[i] * u_v[i] * B_v[i] : 0.0f;
        steps[i] = ScanPair{a[i], b[i]};
      }
      // Forward recompute of h over the chunk, from the saved chunk-start state.
      ScanPrefix fwd_prefix{ScanPair{1.0f, 0.0f}};
      if (tid == 0) fwd_prefix.running.b = chunk == 0 ? (h0 ? h0[s * p.init_n_stride] : 0.0f)
                                                      : saved[static_cast<index_t>(chunk - 1) * p.dstate + s];
      const float h_start = fwd_prefix.running.b;  // the state before the chunk (thread 0's h_{t-1} of its first token)
      BlockScanT(scan_storage[0]).InclusiveScan(steps, steps, ScanCombine{}, fwd_prefix);
      // steps[i].b = h_t. Hand a_t and C_t dy_t to the reversed arrangement.
      SSM_UNROLL
      for (int i = 0; i < kItems; ++i) {
        exchange_a[tid * kItems + i] = a[i];
        exchange_c[tid * kItems + i] = C_v[i] * dy[i];
      }
      h_last[tid] = steps[kItems - 1].b;
      __syncthreads();
      const float h_before = tid == 0 ? h_start : static_cast<float>(h_last[tid - 1]);  // h_{t-1} of item 0
      // Reversed chunk: thread tid holds reversed positions r = tid * kItems + i, token position q = kChunk-1-r.
      // g_q = a_{q+1} g_{q+1} + C_q dy_q; the chunk's last token takes a g from the carry (prefix callback).
      ScanPair rsteps[kItems];
      SSM_UNROLL
      for (int i = 0; i < kItems; ++i) {
        const int q = kChunk - 1 - (tid * kItems + i);
        if (q < chunk_valid) {
          const float a_next = q + 1 < chunk_valid && q + 1 < kChunk ? static_cast<float>(exchange_a[q + 1]) : 1.0f;
          rsteps[i] = ScanPair{a_next, exchange_c[q]};
        } else {
          rsteps[i] = ScanPair{1.0f, 0.0f};
        }
      }
      ScanPrefix rev_prefix{ScanPair{1.0f, 0.0f}};
      if (tid == 0) rev_prefix.running.b = carry_g[s];
      BlockScanT(scan_storage[0]).InclusiveScan(rsteps, rsteps, ScanCombine{}, rev_prefix);
      SSM_UNROLL
      for (int i = 0; i < kItems; ++i) {
        const int q = kChunk - 1 - (tid * kItems + i);
        exchange_c[q] = rsteps[i].b;  // g_q (every thread read its exchange_c entries before the scan's barriers)
      }
      __syncthreads();
      float grad_A_part = 0.0f, grad_B_part = 0.0f, grad_C_part = 0.0f;
      SSM_UNROLL
      for (int i = 0; i < kItems; ++i) {
        if (i < n_valid) {
          const float g = exchange_c[tid * kItems + i];
          const float h = steps[i].b;
          // a_t h_{t-1} from h_{t-1} itself: h_t - Delta_t u_t B_t cancels where a_t << 1 (large Delta)
          const float a_h_prev = a[i] * (i == 0 ? h_before : steps[i - 1].b);
          y[i] += C_v[i] * h;
          grad_u_v[i] += g * Delta[i] * B_v[i];
          grad_Delta[i] += g * (A_s * a_h_prev + B_v[i] * u_v[i]);
          grad_A_part += g * Delta[i] * a_h_prev;
          const float grad_B_t = g * Delta[i] * u_v[i];
          const float grad_C_t = dy[i] * h;
          if (grad_B_var) exchange_a[tid * kItems + i] = grad_B_t;  // free since the reversed scan; added below
          else grad_B_part += grad_B_t;
          if (!grad_C_var) grad_C_part += grad_C_t;
        }
      }
      if (tid == 0) carry_g[s] = a[0] * exchange_c[0];  // a g of this chunk's first token, for the chunk before
      if (grad_B_var || grad_C_var) {
        // Variable grad_B / grad_C: staged in the blocked arrangement, added from the striped one, so the atomics
        // of a warp hit 32 consecutive floats (one 128-byte segment) instead of 32 addresses kItems apart.
        __syncthreads();  // every g of exchange_c read (the loop, carry_g) and every grad_B staged
        if (grad_C_var) {
          SSM_UNROLL
          for (int i = 0; i < kItems; ++i)
            if (i < n_valid) exchange_c[tid * kItems + i] = dy[i] * steps[i].b;  // grad_C_t = dy_t h_t
        }
        __syncthreads();
        const index_t chunk_start = static_cast<index_t>(chunk) * kChunk;
        SSM_UNROLL
        for (int j = 0; j < kItems; ++j) {
          const int pos = j * kThreads + tid;
          if (pos < chunk_valid) {
            if (grad_B_var) atomicAdd(grad_B_var + s * l + chunk_start + pos, static_cast<float>(exchange_a[pos]));
            if (grad_C_var) atomicAdd(grad_C_var + s * l + chunk_start + pos, static_cast<float>(exchange_c[pos]));
          }
        }
        // The next state writes exchange_a / exchange_c only after block_sum3's and the forward scan's barriers.
      }
      block_sum3<kThreads>(red, tid, grad_A_part, grad_B_part, grad_C_part);
      if (tid == 0) {
        grad_A_acc[s] = grad_A_acc[s] + grad_A_part;
        if (grad_B_fix) atomicAdd(grad_B_fix + s, grad_B_part);
        if (grad_C_fix) atomicAdd(grad_C_fix + s, grad_C_part);
      }
    }
    SSM_UNROLL
    for (int i = 0; i < kItems; ++i) {
      if (i < n_valid) {
        float grad_raw = grad_Delta[i];
        if (p.delta_softplus) {
          const float x = load_float(delta + base + i) + delta_bias;
          grad_raw *= scalar::softplus_grad(x);
        }
        grad_bias_part += grad_raw;
        grad_D_part += dy[i] * u_v[i];
        store_float(grad_u + base + i, grad_u_v[i]);
        store_float(grad_delta + base + i, grad_raw);
        if (z) {
          const float z_i = load_float(z + base + i);
          const float g_out = load_float(grad_out + base + i);
          store_float(grad_z + base + i, g_out * y[i] * scalar::silu_grad(z_i));
        }
      }
    }
  }
  float unused = 0.0f;
  block_sum3<kThreads>(red, tid, grad_D_part, grad_bias_part, unused);
  if (tid == 0) {
    if (gp.grad_D) atomicAdd(gp.grad_D + channel, grad_D_part);
    if (gp.grad_delta_bias) atomicAdd(gp.grad_delta_bias + channel, grad_bias_part);
    for (int s = 0; s < static_cast<int>(p.dstate); ++s) {
      atomicAdd(gp.grad_A + channel * p.dstate + s, static_cast<float>(grad_A_acc[s]));
      if (gp.grad_initial_state) gp.grad_initial_state[state_row * p.dstate + s] = carry_g[s];
    }
  }
}

}  // namespace ssm::kernels
