// The argument block of the long convolution op (ops/long_conv.hpp; docs/math.md §1 and §4.3, the S4 convolutional
// view): per batch row and channel c, a causal convolution with a filter as long as the sequence, the skip term and an
// optional activation, between two optional gates (Hyena's order steps, core/params/hyena.hpp):
//   u[t, c] = g_in[t, c] x[t, c]   (u = x without g_in)
//   y[t, c] = g_out[t, c] · act( Σ_{j=0..t} K[c, j] u[t − j, c] + D[c] u[t, c] ),   act = identity or GELU (erf form).
// Read by the reference, the CPU path and a device backend's entry: plain pointers, sizes and element strides.
#pragma once

#include <cstdint>

#include "ssm/core/dtype.hpp"
#include "ssm/core/macros.hpp"
#include "ssm/core/scalar.hpp"

namespace ssm {

/// The CUDA kernel's grid limits (cuda/kernels/launch/long_conv.cuh): batch rows along grid.z, blocks of 32 channels
/// along grid.y.
inline constexpr std::int64_t kLongConvDeviceMaxBatch = 65535, kLongConvDeviceMaxChannels = 65535LL * 32;

/// The activation applied to each output of the long convolution.
enum class LongConvActivation : std::int32_t { none = 0, gelu = 1 };

struct LongConvParams {
  std::int64_t batch = 0, seqlen = 0, channels = 0;
  std::int64_t filter_len = 0;  // L >= seqlen: the taps K holds per channel (those past seqlen are not read)
  const void* x = nullptr;      // (b, l, h), unit stride along h
  std::int64_t x_strides[2] = {0, 0};
  const void* K = nullptr;  // (h, L) contiguous: channel c's taps K[c, 0..L)
  const void* D = nullptr;  // (h) contiguous; or null (no skip term)
  void* y = nullptr;        // (b, l, h), unit stride along h; does not overlap x, K, D or the gates
  std::int64_t y_strides[2] = {0, 0};
  const void* gate_in = nullptr;  // (b, l, h), unit stride along h: g_in; or null
  std::int64_t gate_in_strides[2] = {0, 0};
  const void* gate_out = nullptr;  // (b, l, h), unit stride along h: g_out; or null
  std::int64_t gate_out_strides[2] = {0, 0};
  LongConvActivation activation = LongConvActivation::none;
  DType dtype = DType::f32;  // of x, K, D, the gates and y

  /// act(v): the activation of the output's pre-activation value v.
  template <class T>
  SSM_HOST_DEVICE T activate(T v) const {
    return activation == LongConvActivation::gelu ? scalar::gelu(v) : v;
  }
};

}  // namespace ssm
