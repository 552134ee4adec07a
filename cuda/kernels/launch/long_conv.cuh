// The launch logic of the long convolution kernel, written once over an executor (`exec.launch(kernel, LaunchDims
// grid, LaunchDims block, args...)`): its limits, grid and dtype dispatch. ssm::cuda runs it on a stream
// (cuda/src/long_conv.cu), the host emulation with emu::HostExecutor (cuda/emu/backend_entries.hpp).
#pragma once

#include "../long_conv.cuh"
#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"

namespace ssm::kernels {

static_assert(kLongConvDeviceMaxChannels == 65535LL * kLongConvLanes, "the op's channel limit is the grid's");

template <class Exec>
void long_conv_launches(Exec& exec, const LongConvParams& p, const char* op) {
  SSM_CHECK(p.dtype == DType::f32 || p.dtype == DType::f64, op, ": dtype must be f32 or f64 on CUDA, got ",
            name(p.dtype));
  SSM_CHECK(p.batch >= 0 && p.seqlen >= 0 && p.channels >= 0 && p.filter_len >= p.seqlen, op,
            ": sizes must be >= 0 with filter_len >= l, got b = ", p.batch, ", l = ", p.seqlen, ", h = ", p.channels,
            ", L = ", p.filter_len);
  SSM_CHECK(p.activation == LongConvActivation::none || p.activation == LongConvActivation::gelu, op,
            ": unknown activation ", static_cast<int>(p.activation));
  if (p.batch == 0 || p.seqlen == 0 || p.channels == 0) return;
  SSM_CHECK(p.x && p.K && p.y, op, ": x, K and y must be set");
  constexpr std::int64_t steps = kLongConvGroups * kLongConvRows;  // per block
  const std::int64_t time_blocks = (p.seqlen + steps - 1) / steps;
  const std::int64_t channel_blocks = (p.channels + kLongConvLanes - 1) / kLongConvLanes;
  SSM_CHECK(time_blocks <= 0x7fffffff && channel_blocks <= 65535 && p.batch <= 65535, op,
            ": the grid (", time_blocks, ", ", channel_blocks, ", ", p.batch, ") exceeds CUDA's (2^31 − 1, 65535, ",
            "65535): l <= ", 0x7fffffffLL * steps, ", h <= ", 65535LL * kLongConvLanes, ", b <= 65535");
  const LaunchDims grid{static_cast<unsigned>(time_blocks), static_cast<unsigned>(channel_blocks),
                        static_cast<unsigned>(p.batch)};
  const LaunchDims block{static_cast<unsigned>(kLongConvLanes), static_cast<unsigned>(kLongConvGroups)};
  if (p.dtype == DType::f32)
    exec.launch(long_conv_kernel<float, kLongConvLanes, kLongConvGroups, kLongConvRows>, grid, block, p);
  else
    exec.launch(long_conv_kernel<double, kLongConvLanes, kLongConvGroups, kLongConvRows>, grid, block, p);
}

}  // namespace ssm::kernels
