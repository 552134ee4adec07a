// The rotary position embedding op (Su et al. 2021, "RoFormer"; TTT-Linear rotates q and k by their position inside
// the mini-batch): channel pair i of the token at position pos is rotated by pos · base^(−2i / d), the pairs
// interleaved (2i, 2i + 1) or split (i, i + d / 2); the formulas in core/params/dense.hpp's RotaryParams. CPU
// tensors: cpu/rotary.hpp, or the reference in double on request; CUDA tensors: the backend's rotary_forward
// (cuda/kernels/rotary.cuh). Every path computes each angle, cosine and sine in double.
#pragma once

#include <cmath>
#include <string>

#include "ssm/core/backend.hpp"
#include "ssm/core/check.hpp"
#include "ssm/core/params/dense.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/rotary.hpp"
#include "ssm/reference/rotary.hpp"

namespace ssm {

struct RotaryOptions {
  double base = 10000;          // finite and > 1
  index_t position_offset = 0;  // >= 0: the position of step 0
  index_t period = 0;           // >= 0; > 0: positions taken mod period (TTT: the mini-batch size)
  bool interleaved = true;      // pairs (2i, 2i + 1); false: (i, i + d / 2)
  bool inverse = false;         // rotate by −angle (Rᵀ = R⁻¹): the backward of the rotation, ∂L/∂x = Rᵀ ∂L/∂y
};

enum class RotaryPath { automatic, reference };

/// Rotates x (b, l, h, d) (f32 | f64, d even, unit stride along d) into y (the same shape and dtype, unit stride along
/// d; may be x), on the CPU or a CUDA device. Returns the path that ran: "cpu", "reference" or "cuda" (the reference
/// is a CPU path: CUDA tensors take the kernel whatever `path` says).
inline std::string rotary_into(const TensorView& x, const TensorView& y, const RotaryOptions& opt = {},
                               RotaryPath path = RotaryPath::automatic) {
  Checker c("rotary");
  c.defined("x", x).defined("y", y).rank("x", x, 4);
  const Device device = dispatch_device(c, {{"x", x}, {"y", y}});
  c.dtype_in("x", x, {DType::f32, DType::f64}).unit_stride("x", x, 3);
  c.require(x.size(3) % 2 == 0, "x", "expected an even last dimension (channel pairs), got shape ", x.shape().str());
  c.require(std::isfinite(opt.base) && opt.base > 1, "base", "must be finite and > 1, got ", opt.base);
  c.require(opt.position_offset >= 0, "position_offset", "must be >= 0, got ", opt.position_offset);
  c.require(opt.period >= 0, "period", "must be >= 0 (0: none), got ", opt.period);
  c.same_dtype("y", y, "x", x).shape("y", y, {x.size(0), x.size(1), x.size(2), x.size(3)}).unit_stride("y", y, 3);
  RotaryParams p;
  p.batch = x.size(0), p.seqlen = x.size(1), p.heads = x.size(2), p.dim = x.size(3), p.dtype = x.dtype();
  p.x = x.data(), p.y = y.data();
  for (int i = 0; i < 3; ++i) p.x_strides[i] = x.stride(i), p.y_strides[i] = y.stride(i);
  p.base = opt.base, p.position_offset = opt.position_offset, p.period = opt.period, p.interleaved = opt.interleaved;
  p.inverse = opt.inverse;
  if (device.is_cuda()) {
    backend_entry(c.op(), device, &DeviceBackend::rotary_forward)(p, nullptr);
    return "cuda";
  }
  if (path == RotaryPath::reference) {
    reference::rotary_forward(p);
    return "reference";
  }
  cpu::rotary_forward(p);
  return "cpu";
}

/// The rotated copy of x, allocated (contiguous).
inline Tensor rotary(const TensorView& x, const RotaryOptions& opt = {}, RotaryPath path = RotaryPath::automatic) {
  Checker("rotary").defined("x", x);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  rotary_into(x, y, opt, path);
  return y;
}

}  // namespace ssm
