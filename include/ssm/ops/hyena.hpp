// The Hyena op (Poli et al. 2023; docs/hyena.md; the formulas in core/params/hyena.hpp): the gated long convolutions
// of an order-N Hyena operator, y = x_0 ⊙ (h_{N−2} ∗ (x_1 ⊙ … (h_0 ∗ (x_{N−1} ⊙ v) + D_0 ⊙ …)) + D_{N−2} ⊙ …), with
// one long filter per channel and order. Forms: FFT convolutions (cpu/hyena.hpp) and the direct convolutions in double
// (reference/hyena.hpp). Forward and backward (every input: v, the gates, the filters and their skip terms). The
// filters come from the caller (the layer's implicit filter, layers/hyena.hpp). CUDA tensors: the forward as N − 1
// gated long convolutions (ops/long_conv.hpp's kernel, direct sums); the backward runs on the CPU.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "ssm/core/backend.hpp"
#include "ssm/core/check.hpp"
#include "ssm/core/params/hyena.hpp"
#include "ssm/core/params/long_conv.hpp"
#include "ssm/ops/long_conv.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/hyena.hpp"
#include "ssm/reference/hyena.hpp"

namespace ssm {

/// Every tensor f32 or f64, one dtype. v, the gates and out: (b, l, d) with unit stride along d (column slices of a
/// wider projection are fine); h and bias contiguous.
struct HyenaInputs {
  TensorView v{};                // (b, l, d)
  std::vector<TensorView> x{};   // N gates x_0 … x_{N−1}, each (b, l, d); 2 ≤ N ≤ kHyenaMaxOrder
  TensorView h{};                // (N − 1, d, L), L ≥ l: h_o's taps (filter o pairs with gate x_{N−1−o})
  TensorView bias{};             // (N − 1, d): D_o
};

/// automatic = fft; fft = the FFT convolutions; reference = the direct convolutions in double (CPU paths: CUDA tensors
/// run the device's gated long convolutions whatever the path).
enum class HyenaPath { automatic, reference, fft };

struct HyenaOptions {
  HyenaPath path = HyenaPath::automatic;
  int threads = 0;  // CPU threads (0: by the amount of work)
};

struct HyenaGrads {
  Tensor grad_v;     // (b, l, d)
  Tensor grad_x;     // (N, b, l, d): the gates' gradients, x_0 first
  Tensor grad_h;     // (N − 1, d, L) (taps ≥ l zero)
  Tensor grad_bias;  // (N − 1, d)
  std::string path;  // "cpu-fft" or "reference"
};

namespace detail {

/// Validates a Hyena call: every tensor on v's device (returned in `device`).
inline HyenaParams check_hyena(const Checker& c, const HyenaInputs& in, const TensorView& out, const HyenaOptions& opt,
                               Device& device, const char* out_name = "out") {
  c.defined("v", in.v).defined("h", in.h).defined("bias", in.bias).defined(out_name, out);
  device = in.v.device();
  c.rank("v", in.v, 3).dtype_in("v", in.v, {DType::f32, DType::f64}).unit_stride("v", in.v, 2);
  const index_t N = static_cast<index_t>(in.x.size());
  c.require(N >= 2 && N <= kHyenaMaxOrder, "x", "needs between 2 and ", kHyenaMaxOrder,
            " gates (the order N; N − 1 long convolutions), got ", N);
  c.require(opt.threads >= 0, "threads", "must be >= 0 (0: automatic), got ", opt.threads);
  HyenaParams p;
  p.batch = in.v.size(0), p.seqlen = in.v.size(1), p.channels = in.v.size(2), p.order = N;
  p.dtype = in.v.dtype();
  const index_t b = p.batch, l = p.seqlen, d = p.channels;
  for (index_t i = 0; i < N; ++i) {
    const std::string nm = "x[" + std::to_string(i) + "]";
    const TensorView& xi = in.x[static_cast<std::size_t>(i)];
    c.defined(nm.c_str(), xi).device(nm.c_str(), xi, device).same_dtype(nm.c_str(), xi, "v", in.v);
    c.shape(nm.c_str(), xi, {b, l, d}).unit_stride(nm.c_str(), xi, 2);
    p.x[i] = xi.data(), p.x_strides[i][0] = xi.stride(0), p.x_strides[i][1] = xi.stride(1);
  }
  c.device("h", in.h, device).same_dtype("h", in.h, "v", in.v).rank("h", in.h, 3);
  c.shape("h", in.h, {N - 1, d, kAny}).contiguous("h", in.h);
  p.filter_len = in.h.size(2);
  c.require(p.filter_len >= l, "h", "needs at least l = ", l, " taps per filter, got ", p.filter_len);
  c.device("bias", in.bias, device).same_dtype("bias", in.bias, "v", in.v).shape("bias", in.bias, {N - 1, d});
  c.contiguous("bias", in.bias);
  c.device(out_name, out, device).same_dtype(out_name, out, "v", in.v).shape(out_name, out, {b, l, d});
  c.unit_stride(out_name, out, 2);
  p.v = in.v.data(), p.v_strides[0] = in.v.stride(0), p.v_strides[1] = in.v.stride(1);
  p.h = in.h.data(), p.bias = in.bias.data();
  p.out = out.data(), p.out_strides[0] = out.stride(0), p.out_strides[1] = out.stride(1);
  return p;
}

/// The forward on a device: N − 1 gated long convolutions (the backend's long_conv_forward), w_0 = v and
///   w_{o+1} = h_o ∗ (x_{N−1−o} ⊙ w_o) + D_o ⊙ (x_{N−1−o} ⊙ w_o),   out = x_0 ⊙ w_{N−1} (the last one's output gate),
/// the intermediate w_1 … w_{N−2} in two buffers on the device. out must not overlap v or a gate (the convolutions
/// read them across steps while writing).
inline void hyena_device_forward(const Checker& c, const HyenaInputs& in, const TensorView& out, const HyenaParams& p,
                                 Device device) {
  c.disjoint("out", out, "v", in.v).disjoint("out", out, "h", in.h).disjoint("out", out, "bias", in.bias);
  c.distinct_elements("out", out);
  (void)dispatch_device(c, {{"v", in.v}, {"h", in.h}, {"bias", in.bias}, {"out", out}});  // a usable device
  check_long_conv_device_shape(c, "v", in.v);
  for (std::size_t i = 0; i < in.x.size(); ++i)
    c.disjoint("out", out, ("x[" + std::to_string(i) + "]").c_str(), in.x[i]);
  const auto run = backend_entry(c.op(), device, &DeviceBackend::long_conv_forward);
  const index_t N = p.order, b = p.batch, l = p.seqlen, d = p.channels;
  const std::size_t es = size_of(p.dtype);
  Tensor w[2];  // (b, l, d) each: w_o and w_{o+1}, alternating
  if (N > 2)
    for (Tensor& t : w) t = Tensor::empty({b, l, d}, p.dtype, device);
  for (index_t o = 0; o <= N - 2; ++o) {
    LongConvParams q;
    q.batch = b, q.seqlen = l, q.channels = d, q.filter_len = p.filter_len, q.dtype = p.dtype;
    q.K = static_cast<const char*>(p.h) + static_cast<std::size_t>(o * d * p.filter_len) * es;  // h_o (d, L)
    q.D = static_cast<const char*>(p.bias) + static_cast<std::size_t>(o * d) * es;                // D_o (d)
    if (o == 0) q.x = p.v, q.x_strides[0] = p.v_strides[0], q.x_strides[1] = p.v_strides[1];
    else q.x = w[(o - 1) % 2].data(), q.x_strides[0] = l * d, q.x_strides[1] = d;
    const index_t i = N - 1 - o;  // the gate of this order
    q.gate_in = p.x[i], q.gate_in_strides[0] = p.x_strides[i][0], q.gate_in_strides[1] = p.x_strides[i][1];
    if (o == N - 2) {
      q.y = p.out, q.y_strides[0] = p.out_strides[0], q.y_strides[1] = p.out_strides[1];
      q.gate_out = p.x[0], q.gate_out_strides[0] = p.x_strides[0][0], q.gate_out_strides[1] = p.x_strides[0][1];
    } else {
      q.y = w[o % 2].data(), q.y_strides[0] = l * d, q.y_strides[1] = d;
    }
    run(q, nullptr);
  }
}

}  // namespace detail

/// y into out (b, l, d) (v's dtype, unit stride along d; on a CUDA device, disjoint from v and the gates). Returns the
/// path that ran: "cpu-fft", "reference" or "cuda".
inline std::string hyena_into(const HyenaInputs& in, const TensorView& out, const HyenaOptions& opt = {}) {
  const Checker c("hyena");
  Device device;
  const HyenaParams p = detail::check_hyena(c, in, out, opt, device);
  if (device.is_cuda()) {
    detail::hyena_device_forward(c, in, out, p, device);
    return "cuda";
  }
  if (opt.path == HyenaPath::reference) {
    reference::hyena_forward(p);
    return "reference";
  }
  cpu::hyena_forward(p, opt.threads);
  return "cpu-fft";
}

/// The allocating form: y (b, l, d).
inline Tensor hyena(const HyenaInputs& in, const HyenaOptions& opt = {}) {
  Checker("hyena").defined("v", in.v);
  Tensor out = Tensor::empty(in.v.shape(), in.v.dtype(), in.v.device());
  hyena_into(in, out, opt);
  return out;
}

/// Gradients for grad_out (b, l, d) (v's dtype, contiguous): of v, every gate, the filters (all L taps; those beyond l
/// are zero) and their skip terms.
inline HyenaGrads hyena_backward(const HyenaInputs& in, const TensorView& grad_out, const HyenaOptions& opt = {}) {
  Checker c("hyena_backward");
  Device device;
  HyenaParams p = detail::check_hyena(c, in, grad_out, opt, device, "grad_out");
  c.require(device.is_cpu(), "v", "is on ", device.str(), ": the Hyena backward runs on the CPU (CPU tensors)");
  p.out = nullptr;
  c.contiguous("grad_out", grad_out);
  const index_t N = p.order, b = p.batch, l = p.seqlen, d = p.channels;
  HyenaGrads r;
  r.grad_v = Tensor::empty({b, l, d}, p.dtype);
  r.grad_x = Tensor::empty({N, b, l, d}, p.dtype);
  r.grad_h = Tensor::empty(in.h.shape(), p.dtype);
  r.grad_bias = Tensor::empty(in.bias.shape(), p.dtype);
  HyenaGradParams g;
  g.grad_out = grad_out.data(), g.grad_v = r.grad_v.data(), g.grad_x = r.grad_x.data();
  g.grad_h = r.grad_h.data(), g.grad_bias = r.grad_bias.data();
  if (opt.path == HyenaPath::reference) {
    reference::hyena_backward(p, g);
    r.path = "reference";
  } else {
    cpu::hyena_backward(p, g, opt.threads);
    r.path = "cpu-fft";
  }
  return r;
}

}  // namespace ssm
