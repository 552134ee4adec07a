// The linear op (PyTorch's nn.Linear; every projection of the Mamba block, the LM head, attention's q/k/v/o):
// y (rows, out) = x (rows, in) Wᵀ + bias, W (out, in). CPU tensors: Eigen's GEMM (GEMV for one row) for W in the
// activation dtype, or f16 / bf16 weights converted to f32 on the fly (cpu/linear.hpp); the reference on request.
// CUDA tensors: the backend's linear_forward entry (cuBLAS), an ssm::Error while it is not implemented there.
#pragma once

#include <optional>
#include <string>

#include "ssm/core/backend.hpp"
#include "ssm/core/check.hpp"
#include "ssm/core/params/dense.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/linear.hpp"
#include "ssm/cpu/threads.hpp"
#include "ssm/reference/linear.hpp"

namespace ssm {

struct LinearInputs {
  TensorView x{};                  // (rows, in)  f32 | f64, unit stride along in (the row stride is free)
  TensorView weight{};             // (out, in)   contiguous; x's dtype, or f16 | bf16 for f32 x
  std::optional<TensorView> bias{};  // (out)     x's dtype
};

/// CPU: automatic = the fast path (Eigen GEMM / GEMV, or the 16-bit GEMV / panel GEMM); reference = the plain
/// loops in double. CUDA tensors run the backend's entry whatever the path.
enum class LinearPath { automatic, reference };

struct LinearOptions {
  LinearPath path = LinearPath::automatic;
  /// Threads the CPU path splits the output features over; 0: the hardware threads, fewer for a small product
  /// (ssm::cpu::cpu_threads over rows · in · out). Results depend on it only by rounding (Eigen blocks the sum
  /// over `in` by the width of each thread's block of features).
  int num_threads = 1;
};

namespace detail {

/// Validates a linear call and fills its argument block (without y).
inline LinearParams check_linear(const Checker& c, const LinearInputs& in, const LinearOptions& opt, Device& device) {
  c.defined("x", in.x).defined("weight", in.weight).rank("x", in.x, 2).rank("weight", in.weight, 2);
  device = dispatch_device(c, {{"x", in.x}, {"weight", in.weight}, {"bias", in.bias.value_or(in.x)}});
  c.dtype_in("x", in.x, {DType::f32, DType::f64});
  LinearParams p;
  p.rows = in.x.size(0), p.in = in.x.size(1), p.out = in.weight.size(0);
  p.dtype = in.x.dtype();
  p.weight_dtype = in.weight.dtype();
  if (p.dtype == DType::f32) c.dtype_in("weight", in.weight, {DType::f32, DType::f16, DType::bf16});
  else c.dtype("weight", in.weight, DType::f64);
  c.shape("weight", in.weight, {kAny, p.in}).contiguous("weight", in.weight);
  c.unit_stride("x", in.x, 1);
  c.require(opt.num_threads >= 0, "num_threads", "must be >= 0 (0: automatic), got ", opt.num_threads);
  p.x = in.x.data(), p.x_row_stride = in.x.stride(0), p.weight = in.weight.data();
  if (in.bias) {
    c.defined("bias", *in.bias).same_dtype("bias", *in.bias, "x", in.x).shape("bias", *in.bias, {p.out});
    c.contiguous("bias", *in.bias);
    p.bias = in.bias->data();
  }
  return p;
}

}  // namespace detail

/// y = x Wᵀ + bias into y (rows, out): x's dtype, unit stride along out, on x's device; y must not overlap x.
/// Returns the path that ran: "cpu-eigen", "cpu-gemv-bf16", "cpu-panel-f16", ..., "reference" or "cuda".
inline std::string linear_into(const LinearInputs& in, const TensorView& y, const LinearOptions& opt = {}) {
  Checker c("linear");
  Device device;
  LinearParams p = detail::check_linear(c, in, opt, device);
  c.defined("y", y).same_dtype("y", y, "x", in.x).shape("y", y, {p.rows, p.out}).unit_stride("y", y, 1);
  c.device("y", y, device);
  p.y = y.data(), p.y_row_stride = y.stride(0);
  if (device.is_cuda()) {
    backend_entry(c.op(), device, &DeviceBackend::linear_forward)(p, nullptr);
    return "cuda";
  }
  if (p.rows == 0 || p.out == 0) return "empty";
  if (opt.path == LinearPath::reference) {
    reference::linear_forward(p);
    return "reference";
  }
  return cpu::linear_forward(p, cpu::cpu_threads(opt.num_threads, p.rows * p.in * p.out));
}

/// y (rows, out) = x Wᵀ + bias, allocated on x's device.
inline Tensor linear(const LinearInputs& in, const LinearOptions& opt = {}) {
  Checker c("linear");
  Device device;
  const LinearParams p = detail::check_linear(c, in, opt, device);
  Tensor y = Tensor::empty({p.rows, p.out}, p.dtype, device);  // (rows, out)
  linear_into(in, y, opt);
  return y;
}

}  // namespace ssm
