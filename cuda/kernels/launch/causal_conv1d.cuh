// The launch logic of the causal conv1d kernels (sequence form, its backward, the one-token update), written once
// over an executor (`exec.launch(kernel, LaunchDims grid, LaunchDims block, args...)`): the kernels' limits, the
// grid and the per-dtype dispatch. ssm::cuda runs it on a stream (cuda/src/causal_conv1d.cu), the host emulation
// with emu::HostExecutor (cuda/emu/backend_entries.hpp).
#pragma once

#include <algorithm>
#include <cstdint>

#include "../causal_conv1d.cuh"
#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"

namespace ssm::kernels {

/// Threads per block of the update kernel (one thread per channel; grid (channel blocks, b)).
inline constexpr unsigned kConvUpdateThreads = 128;

/// Calls f(In{}) for the input type of `dtype`, an ssm::Error naming `op` unless f32, f16 or bf16.
template <class F>
void visit_conv_input(DType dtype, const char* op, F&& f) {
  SSM_CHECK(dtype == DType::f32 || dtype == DType::f16 || dtype == DType::bf16, op,
            ": input dtype must be f32, f16 or bf16 on CUDA, got ", name(dtype));
  visit_input_dtype(dtype, f);
}

/// The checks the sequence kernels share (width, grid limits), naming `op`.
inline void check_conv_sequence(const CausalConv1dParams& p, const char* op) {
  SSM_CHECK(p.width >= 2 && p.width <= kConvMaxWidth, op, ": width must be in [2, ", kConvMaxWidth, "], got ",
            p.width);
  SSM_CHECK(p.batch >= 0 && p.batch <= 65535 && p.dim >= 0 && p.dim <= 65535, op,
            ": b and d must be in [0, 65535], got b = ", p.batch, ", d = ", p.dim);
  SSM_CHECK(p.seqlen >= 0 && p.seqlen <= 0x7fffffff, op, ": l must be in [0, 2^31), got ", p.seqlen);
}

/// The sequence kernels' grid: (tiles of kThreads x kItems steps along l, at least 1; d; b).
inline LaunchDims conv_sequence_grid(const CausalConv1dParams& p) {
  constexpr std::int64_t tile = ConvFwdConfig::kThreads * ConvFwdConfig::kItems;
  return LaunchDims{static_cast<unsigned>(std::max<std::int64_t>(1, (p.seqlen + tile - 1) / tile)),
                    static_cast<unsigned>(p.dim), static_cast<unsigned>(p.batch)};
}

/// The channel-last kernel's grid: (blocks of kThreads channels; blocks of kSteps steps along l, at least 1; b).
inline LaunchDims conv_channel_last_grid(const CausalConv1dParams& p) {
  using Cfg = ConvChannelLastConfig;
  return LaunchDims{static_cast<unsigned>((p.dim + Cfg::kThreads - 1) / Cfg::kThreads),
                    static_cast<unsigned>(std::max<std::int64_t>(1, (p.seqlen + Cfg::kSteps - 1) / Cfg::kSteps)),
                    static_cast<unsigned>(p.batch)};
}

template <class Exec>
void causal_conv1d_forward_launches(Exec& exec, const CausalConv1dParams& p, DType input_dtype, const char* op) {
  SSM_CHECK(p.width >= 2 && p.width <= kConvMaxWidth, op, ": width must be in [2, ", kConvMaxWidth, "], got ",
            p.width);
  // l = 0: no x / out (an empty tensor has no storage); the final state comes from the initial state.
  SSM_CHECK(p.weight && (p.seqlen == 0 || (p.x && p.out)), op, ": x, weight and out must be set");
  if (p.channel_last) {
    using Cfg = ConvChannelLastConfig;
    SSM_CHECK(p.batch >= 0 && p.batch <= 65535 && p.dim >= 0 && p.dim <= 0x7fffffff, op,
              ": b must be in [0, 65535] and d in [0, 2^31), got b = ", p.batch, ", d = ", p.dim);
    SSM_CHECK(p.seqlen >= 0 && p.seqlen <= std::int64_t{Cfg::kSteps} * 65535, op,
              ": l must be in [0, ", std::int64_t{Cfg::kSteps} * 65535, "] in the channel-last layout, got ", p.seqlen);
    SSM_CHECK(p.seqlen == 0 || (p.x_d_stride == 1 && p.out_d_stride == 1), op,
              ": the channel-last layout takes x and out with unit stride along d");
    visit_conv_input(input_dtype, op, [&](auto in) {
      if (p.batch == 0 || p.dim == 0) return;
      exec.launch(causal_conv1d_fwd_channel_last_kernel<decltype(in), Cfg::kThreads, Cfg::kSteps>,
                  conv_channel_last_grid(p), LaunchDims{static_cast<unsigned>(Cfg::kThreads)}, p);
    });
    return;
  }
  check_conv_sequence(p, op);
  SSM_CHECK(p.seqlen == 0 || (p.x_l_stride == 1 && p.out_l_stride == 1), op,
            ": the channel-major layout takes x and out with unit stride along l");
  visit_conv_input(input_dtype, op, [&](auto in) {
    using Cfg = ConvFwdConfig;
    if (p.batch == 0 || p.dim == 0) return;
    exec.launch(causal_conv1d_fwd_kernel<decltype(in), Cfg::kThreads, Cfg::kItems>, conv_sequence_grid(p),
                LaunchDims{static_cast<unsigned>(Cfg::kThreads)}, p);
  });
}

/// grad_weight / grad_bias are accumulated (the caller zeroes them).
template <class Exec>
void causal_conv1d_backward_launches(Exec& exec, const CausalConv1dParams& p, const CausalConv1dGradParams& g,
                                     DType input_dtype, const char* op) {
  check_conv_sequence(p, op);
  SSM_CHECK(!p.channel_last && (p.seqlen == 0 || p.x_l_stride == 1), op,
            ": the backward takes the channel-major layout (unit stride along l)");
  SSM_CHECK(p.weight && g.grad_weight && (p.seqlen == 0 || (p.x && g.grad_out && g.grad_x)), op,
            ": x, weight, grad_out, grad_x and grad_weight must be set");
  visit_conv_input(input_dtype, op, [&](auto in) {
    using Cfg = ConvFwdConfig;
    if (p.batch == 0 || p.dim == 0) return;
    exec.launch(causal_conv1d_bwd_kernel<decltype(in), Cfg::kThreads, Cfg::kItems>, conv_sequence_grid(p),
                LaunchDims{static_cast<unsigned>(Cfg::kThreads)}, p, g);
  });
}

template <class Exec>
void causal_conv1d_update_launches(Exec& exec, const CausalConv1dUpdateParams& p, DType input_dtype, const char* op) {
  SSM_CHECK(p.width >= 2 && p.width <= kConvMaxWidth, op, ": width must be in [2, ", kConvMaxWidth, "], got ",
            p.width);
  SSM_CHECK(p.batch >= 0 && p.batch <= 65535 && p.dim >= 0 && p.dim <= 0x7fffffff, op,
            ": b must be in [0, 65535] and d in [0, 2^31), got b = ", p.batch, ", d = ", p.dim);
  SSM_CHECK(p.x && p.conv_state && p.weight && p.out, op, ": x, conv_state, weight and out must be set");
  visit_conv_input(input_dtype, op, [&](auto in) {
    if (p.batch == 0 || p.dim == 0) return;
    const auto blocks = static_cast<unsigned>((p.dim + kConvUpdateThreads - 1) / kConvUpdateThreads);
    exec.launch(causal_conv1d_update_kernel<decltype(in)>, LaunchDims{blocks, static_cast<unsigned>(p.batch)},
                LaunchDims{kConvUpdateThreads}, p);
  });
}

}  // namespace ssm::kernels
