// The long convolution (core/params/long_conv.hpp; the S4 / S4D layers' convolutional view, Hyena's order steps):
//   u = g_in ⊙ x,   y[t, c] = g_out[t, c] · act( Σ_{j<=t} K[c, j] u[t − j, c] + D[c] u[t, c] )   (gates optional),
// by the direct sums, O(l²) multiply-adds per channel (the FFT form is the CPU path's; here every filter tap is one
// fused multiply-add per output, accumulated in T).
//
// A block is kLanes channels (the lanes of a warp: x and y are read and written along h, contiguous) by kGroups warps;
// each thread computes kRows consecutive outputs t0 .. t0 + kRows − 1 of its channel, keeping them in registers with a
// window of the inputs they need for the current tap j: win[r] = u[t0 + r − j] (zero before step 0). Per tap: one
// load of K[c, j] (each thread streams its channel's row; the block's warps share those rows), coalesced loads of
// u[t0 − j − 1] (the window's new entry: x and g_in) and kRows multiply-adds. Taps run up to the thread's last output
// step. The sums run in blocks of kLongConvTapBlock taps, each block's partial sum added to the total: the rounding grows like
// (kTapBlock + l / kTapBlock) units of T's last place instead of l (f32, 1031 taps, measured under the emulation:
// 2.8e-7 of max |y|, against 1.1e-6 in one running sum).
#pragma once

#include "common.cuh"
#include "ssm/core/params/long_conv.hpp"

namespace ssm::kernels {

/// The tile: kLongConvLanes channels × kLongConvGroups warps × kLongConvRows steps per thread.
inline constexpr int kLongConvLanes = 32, kLongConvGroups = 8, kLongConvRows = 8;
/// Taps per partial sum (a power of two).
inline constexpr index_t kLongConvTapBlock = 64;

/// Grid (ceil(l / (kGroups · kRows)), ceil(h / kLanes), b), block (kLanes, kGroups).
template <class T, int kLanes, int kGroups, int kRows>
__global__ void __launch_bounds__(kLanes* kGroups) long_conv_kernel(LongConvParams p) {
  const index_t c = static_cast<index_t>(blockIdx.y) * kLanes + static_cast<index_t>(threadIdx.x);
  const index_t t0 = (static_cast<index_t>(blockIdx.x) * kGroups + static_cast<index_t>(threadIdx.y)) * kRows;
  if (c >= p.channels || t0 >= p.seqlen) return;
  const index_t bi = blockIdx.z, l = p.seqlen, xs = p.x_strides[1];
  const T* x = static_cast<const T*>(p.x) + bi * p.x_strides[0] + c;  // x[s, c] = x[s · xs]
  const T* K = static_cast<const T*>(p.K) + c * p.filter_len;          // (L) channel c's taps
  const T* g = p.gate_in ? static_cast<const T*>(p.gate_in) + bi * p.gate_in_strides[0] + c : nullptr;
  const index_t gs = p.gate_in_strides[1];
  auto u = [&](index_t s) { return g ? g[s * gs] * x[s * xs] : x[s * xs]; };  // u[s, c] = g_in ⊙ x
  T total[kRows], acc[kRows], win[kRows];  // the sums of the finished tap blocks, of the current one; the window
  SSM_UNROLL
  for (int r = 0; r < kRows; ++r) {
    total[r] = T(0), acc[r] = T(0);
    win[r] = t0 + r < l ? u(t0 + r) : T(0);  // u[t0 + r − 0]
  }
  const index_t last = (t0 + kRows < l ? t0 + kRows : l) - 1;  // the last output step: taps 0 .. last
  for (index_t j = 0; j <= last; ++j) {
    const T k = K[j];
    SSM_UNROLL
    for (int r = 0; r < kRows; ++r) acc[r] += k * win[r];
    SSM_UNROLL
    for (int r = kRows - 1; r > 0; --r) win[r] = win[r - 1];  // u[t0 + r − (j + 1)]
    win[0] = t0 - j - 1 >= 0 ? u(t0 - j - 1) : T(0);
    if ((j & (kLongConvTapBlock - 1)) == kLongConvTapBlock - 1) {  // a block of taps done (the same j warp-wide)
      SSM_UNROLL
      for (int r = 0; r < kRows; ++r) total[r] += acc[r], acc[r] = T(0);
    }
  }
  const T Dc = p.D ? static_cast<const T*>(p.D)[c] : T(0);
  T* y = static_cast<T*>(p.y) + bi * p.y_strides[0] + c;
  const T* g_out = p.gate_out ? static_cast<const T*>(p.gate_out) + bi * p.gate_out_strides[0] + c : nullptr;
  SSM_UNROLL
  for (int r = 0; r < kRows; ++r) {
    const index_t t = t0 + r;
    if (t >= l) continue;
    const T v = p.activate((total[r] + acc[r]) + Dc * u(t));
    y[t * p.y_strides[1]] = g_out ? g_out[t * p.gate_out_strides[1]] * v : v;
  }
}

}  // namespace ssm::kernels
