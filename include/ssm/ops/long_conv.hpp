// The long convolution op (the S4 / S4D layers' convolutional view, docs/math.md §1 and §4.3, and Hyena's order steps;
// the formula in core/params/long_conv.hpp): per batch row and channel a causal convolution with a filter as long as
// the sequence, plus the skip term, then an optional GELU, between two optional gates:
//   u = g_in ⊙ x,   y[t, c] = g_out[t, c] · act( Σ_{j<=t} K[c, j] u[t − j, c] + D[c] u[t, c] ).
// CPU tensors: cpu/long_conv.hpp (the direct sum for short sequences, the zero-padded real FFT above), or the direct
// sums in double (reference/long_conv.hpp) on request. CUDA tensors: the backend's long_conv_forward
// (cuda/kernels/long_conv.cuh: the direct sums, O(l²) per channel, tiled in registers).
#pragma once

#include <optional>
#include <string>

#include "ssm/core/backend.hpp"
#include "ssm/core/check.hpp"
#include "ssm/core/params/long_conv.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/long_conv.hpp"
#include "ssm/reference/long_conv.hpp"

namespace ssm {

struct LongConvInputs {
  TensorView x{};                 // (b, l, h)  f32 | f64, unit stride along h
  TensorView K{};                 // (h, L)     contiguous, L >= l: channel c's filter taps
  std::optional<TensorView> D{};  // (h)        contiguous: the skip term; absent: none
  std::optional<TensorView> gate_in{};   // (b, l, h)  unit stride along h: g_in; absent: none
  std::optional<TensorView> gate_out{};  // (b, l, h)  unit stride along h: g_out; absent: none
};

/// CPU: automatic = cpu/long_conv.hpp (direct up to kCausalConvDirectMaxLength steps, FFT above); reference = the
/// direct sums in double. CUDA tensors run the backend's kernel whatever the path.
enum class LongConvPath { automatic, reference };

struct LongConvOptions {
  LongConvActivation activation = LongConvActivation::none;
  LongConvPath path = LongConvPath::automatic;
  int threads = 0;  // CPU threads (0: by the amount of work)
};

namespace detail {

/// What the long convolution's CUDA grid takes: up to kLongConvDeviceMaxBatch batch rows and
/// kLongConvDeviceMaxChannels channels of `name` (b, l, h). Checked by the op and by Hyena's device path.
inline void check_long_conv_device_shape(const Checker& c, const char* name, const TensorView& t) {
  c.require(t.size(0) <= kLongConvDeviceMaxBatch && t.size(2) <= kLongConvDeviceMaxChannels, name, "on CUDA takes up ",
            "to ", kLongConvDeviceMaxBatch, " batch rows and ", kLongConvDeviceMaxChannels, " channels (the kernel's ",
            "grid), got shape ", t.shape().str());
}

}  // namespace detail

/// y (b, l, h) = g_out ⊙ act(K * u + D ⊙ u), u = g_in ⊙ x, into y (x's shape, dtype and device; unit stride along h;
/// must not overlap x, K, D or the gates).
/// Returns the path that ran: "cpu", "reference" or "cuda".
inline std::string long_conv_into(const LongConvInputs& in, const TensorView& y, const LongConvOptions& opt = {}) {
  Checker c("long_conv");
  c.defined("x", in.x).defined("K", in.K).defined("y", y).rank("x", in.x, 3);
  const Device device = dispatch_device(c, {{"x", in.x}, {"K", in.K}, {"D", in.D.value_or(in.x)},
                                            {"gate_in", in.gate_in.value_or(in.x)},
                                            {"gate_out", in.gate_out.value_or(in.x)}, {"y", y}});
  c.dtype_in("x", in.x, {DType::f32, DType::f64}).unit_stride("x", in.x, 2);
  const index_t b = in.x.size(0), l = in.x.size(1), h = in.x.size(2);
  c.same_dtype("K", in.K, "x", in.x).rank("K", in.K, 2).shape("K", in.K, {h, kAny}).contiguous("K", in.K);
  c.require(in.K.size(1) >= l, "K", "needs at least l = ", l, " taps per channel, got shape ", in.K.shape().str());
  if (in.D) c.defined("D", *in.D).same_dtype("D", *in.D, "x", in.x).shape("D", *in.D, {h}).contiguous("D", *in.D);
  c.require(opt.activation == LongConvActivation::none || opt.activation == LongConvActivation::gelu, "activation",
            "expected none or gelu, got ", static_cast<int>(opt.activation));
  c.require(opt.threads >= 0, "threads", "must be >= 0 (0: automatic), got ", opt.threads);
  if (device.is_cuda()) detail::check_long_conv_device_shape(c, "x", in.x);
  c.same_dtype("y", y, "x", in.x).shape("y", y, {b, l, h}).unit_stride("y", y, 2).disjoint("y", y, "x", in.x);
  c.distinct_elements("y", y).disjoint("y", y, "K", in.K);
  if (in.D) c.disjoint("y", y, "D", *in.D);
  auto gate = [&](const char* name, const std::optional<TensorView>& g, const void*& data, std::int64_t (&s)[2]) {
    if (!g) return;
    c.defined(name, *g).same_dtype(name, *g, "x", in.x).shape(name, *g, {b, l, h}).unit_stride(name, *g, 2);
    c.disjoint("y", y, name, *g);
    data = g->data(), s[0] = g->stride(0), s[1] = g->stride(1);
  };
  LongConvParams p;
  p.batch = b, p.seqlen = l, p.channels = h, p.filter_len = in.K.size(1), p.dtype = in.x.dtype();
  p.x = in.x.data(), p.x_strides[0] = in.x.stride(0), p.x_strides[1] = in.x.stride(1);
  p.K = in.K.data(), p.D = in.D ? in.D->data() : nullptr;
  p.y = y.data(), p.y_strides[0] = y.stride(0), p.y_strides[1] = y.stride(1);
  p.activation = opt.activation;
  gate("gate_in", in.gate_in, p.gate_in, p.gate_in_strides);
  gate("gate_out", in.gate_out, p.gate_out, p.gate_out_strides);
  if (device.is_cuda()) {
    backend_entry(c.op(), device, &DeviceBackend::long_conv_forward)(p, nullptr);
    return "cuda";
  }
  if (opt.path == LongConvPath::reference) {
    reference::long_conv_forward(p);
    return "reference";
  }
  cpu::long_conv_forward(p, opt.threads);
  return "cpu";
}

/// The convolved copy of x, allocated on x's device (contiguous).
inline Tensor long_conv(const LongConvInputs& in, const LongConvOptions& opt = {}) {
  Checker("long_conv").defined("x", in.x);
  Tensor y = Tensor::empty(in.x.shape(), in.x.dtype(), in.x.device());
  long_conv_into(in, y, opt);
  return y;
}

}  // namespace ssm
