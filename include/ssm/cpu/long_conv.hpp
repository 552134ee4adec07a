// The CPU path of the long convolution op (ops/long_conv.hpp; the formula in core/params/long_conv.hpp): tasks of up
// to 16 channels of one batch row, each gathering a channel's (gated) sequence, convolving it with the channel's filter
// by ssm::causal_conv (the direct sum up to kCausalConvDirectMaxLength steps, the zero-padded real FFT above; one FFT
// plan per task, reused over its channels), adding the skip term and scattering the activated (gated) outputs.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "ssm/core/params/long_conv.hpp"
#include "ssm/cpu/threads.hpp"
#include "ssm/math/causal_conv.hpp"

namespace ssm::cpu {

/// Channels per task.
inline constexpr std::int64_t kLongConvChannelsPerTask = 16;

/// The CPU long convolution in T with a hook: `carry(bi, c, uc, yc)` sees channel c of batch row bi after the
/// convolution and the skip term, before the activation (uc = g_in ⊙ x, yc: std::vector<T> of l), and may add to yc
/// (the S4 layers add the response of a carried state there). Tasks own disjoint (row, channel) pairs, so a hook that
/// touches only its (bi, c) is thread-safe. `threads`: as for cpu_threads (0: by the amount of work).
template <class T, class Carry>
void long_conv_channels(const LongConvParams& p, int threads, Carry&& carry) {
  const std::int64_t l = p.seqlen, h = p.channels, per = kLongConvChannelsPerTask;
  if (p.batch == 0 || l == 0 || h == 0) return;
  const std::int64_t groups = (h + per - 1) / per;
  const T* x = static_cast<const T*>(p.x);
  const T* K = static_cast<const T*>(p.K);
  const T* D = static_cast<const T*>(p.D);
  const T* g_in = static_cast<const T*>(p.gate_in);
  const T* g_out = static_cast<const T*>(p.gate_out);
  T* y = static_cast<T*>(p.y);
  const int n = cpu_threads(threads, p.batch * h * l * 16);
  parallel_for(p.batch * groups, n, [&](std::int64_t task) {
    const std::int64_t bi = task / groups, c0 = (task % groups) * per;
    std::vector<T> xc(static_cast<std::size_t>(l)), yc(static_cast<std::size_t>(l));  // (l)
    fft::RealFFT<T> plan;
    for (std::int64_t c = c0; c < std::min(h, c0 + per); ++c) {
      for (std::int64_t t = 0; t < l; ++t) xc[t] = x[bi * p.x_strides[0] + t * p.x_strides[1] + c];
      if (g_in)
        for (std::int64_t t = 0; t < l; ++t) xc[t] *= g_in[bi * p.gate_in_strides[0] + t * p.gate_in_strides[1] + c];
      causal_conv(xc.data(), K + c * p.filter_len, yc.data(), static_cast<long>(l), &plan);
      if (D)
        for (std::int64_t t = 0; t < l; ++t) yc[t] += D[c] * xc[t];
      carry(bi, c, xc, yc);
      for (std::int64_t t = 0; t < l; ++t) {
        const T v = p.activate(yc[t]);
        y[bi * p.y_strides[0] + t * p.y_strides[1] + c] =
            g_out ? g_out[bi * p.gate_out_strides[0] + t * p.gate_out_strides[1] + c] * v : v;
      }
    }
  });
}

/// The op's CPU path: f32 or f64.
inline void long_conv_forward(const LongConvParams& p, int threads) {
  auto none = [](std::int64_t, std::int64_t, const auto&, auto&) {};
  if (p.dtype == DType::f64) long_conv_channels<double>(p, threads, none);
  else long_conv_channels<float>(p, threads, none);
}

}  // namespace ssm::cpu
