// The RMSNorm op (Zhang & Sennrich 2019; the Mamba LM's pre-norm and final norm, FalconMamba's normalization of δ,
// B and C; docs/math.md §6.2), with the residual add the Mamba LM fuses into it (mamba_ssm's fused add + norm):
//   r = x + residual (stored back into residual) or r = x,   y = r / sqrt(mean(r²) + eps) ⊙ weight, per row.
// CPU tensors: cpu/rms_norm.hpp, or the reference on request. CUDA tensors: the backend's rms_norm_forward entry,
// an ssm::Error while it is not implemented there.
#pragma once

#include <optional>
#include <string>

#include "ssm/core/backend.hpp"
#include "ssm/core/check.hpp"
#include "ssm/core/params/dense.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/rms_norm.hpp"
#include "ssm/reference/rms_norm.hpp"

namespace ssm {

struct RmsNormInputs {
  TensorView x{};                        // (rows, dim)  f32 | f64, unit stride along dim
  std::optional<TensorView> weight{};    // (dim)        x's dtype; absent: no weight
  std::optional<TensorView> residual{};  // (rows, dim)  x's dtype, unit stride along dim: residual += x, in place,
                                         //              and the sum is what is normalized
  double eps = 1e-5;
};

enum class RmsNormPath { automatic, reference };

namespace detail {

inline RmsNormParams check_rms_norm(const Checker& c, const RmsNormInputs& in, Device& device) {
  c.defined("x", in.x).rank("x", in.x, 2);
  device = dispatch_device(c, {{"x", in.x}, {"weight", in.weight.value_or(in.x)},
                               {"residual", in.residual.value_or(in.x)}});
  c.dtype_in("x", in.x, {DType::f32, DType::f64}).unit_stride("x", in.x, 1);
  c.positive("eps", in.eps);
  RmsNormParams p;
  p.rows = in.x.size(0), p.dim = in.x.size(1), p.eps = in.eps, p.dtype = in.x.dtype();
  p.x = in.x.data(), p.x_row_stride = in.x.stride(0);
  if (in.weight) {
    c.defined("weight", *in.weight).same_dtype("weight", *in.weight, "x", in.x).shape("weight", *in.weight, {p.dim});
    c.contiguous("weight", *in.weight);
    p.weight = in.weight->data();
  }
  if (in.residual) {
    const TensorView& r = *in.residual;
    c.defined("residual", r).same_dtype("residual", r, "x", in.x).shape("residual", r, {p.rows, p.dim});
    c.unit_stride("residual", r, 1);
    c.require(r.data() != in.x.data() || p.rows * p.dim == 0, "residual", "must not be x itself");
    p.residual = r.data(), p.residual_row_stride = r.stride(0);
  }
  return p;
}

}  // namespace detail

/// RMSNorm into y (rows, dim): x's dtype, unit stride along dim, on x's device; y may be x (in place). Returns the
/// path that ran: "cpu", "reference" or "cuda".
inline std::string rms_norm_into(const RmsNormInputs& in, const TensorView& y, RmsNormPath path = RmsNormPath::automatic) {
  Checker c("rms_norm");
  Device device;
  RmsNormParams p = detail::check_rms_norm(c, in, device);
  c.defined("y", y).same_dtype("y", y, "x", in.x).shape("y", y, {p.rows, p.dim}).unit_stride("y", y, 1);
  c.device("y", y, device);
  p.y = y.data(), p.y_row_stride = y.stride(0);
  if (device.is_cuda()) {
    backend_entry(c.op(), device, &DeviceBackend::rms_norm_forward)(p, nullptr);
    return "cuda";
  }
  if (path == RmsNormPath::reference) {
    reference::rms_norm_forward(p);
    return "reference";
  }
  cpu::rms_norm_forward(p);
  return "cpu";
}

/// RMSNorm of x (rows, dim), allocated on x's device (residual, when given, is updated in place).
inline Tensor rms_norm(const RmsNormInputs& in, RmsNormPath path = RmsNormPath::automatic) {
  Checker c("rms_norm");
  Device device;
  const RmsNormParams p = detail::check_rms_norm(c, in, device);
  Tensor y = Tensor::empty({p.rows, p.dim}, p.dtype, device);  // (rows, dim)
  rms_norm_into(in, y, path);
  return y;
}

}  // namespace ssm
