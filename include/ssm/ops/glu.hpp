// The gated linear unit op (PyTorch's nn.GLU over the last dimension; the S4 / S4D layers' gelu_glu output mixing):
// y[r, c] = z[r, c] · σ(z[r, h + c]) for z (rows, 2h). CPU tensors: cpu/glu.hpp, or the reference in double on
// request; CUDA tensors: the backend's glu_forward (cuda/kernels/glu.cuh).
#pragma once

#include <string>

#include "ssm/core/backend.hpp"
#include "ssm/core/check.hpp"
#include "ssm/core/params/dense.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/glu.hpp"
#include "ssm/reference/glu.hpp"

namespace ssm {

enum class GluPath { automatic, reference };

/// y (rows, h) = z[:, :h] ⊙ σ(z[:, h:]) for z (rows, 2h) (f32 | f64, unit stride along the last dimension); y in z's
/// dtype on z's device, unit stride along h, disjoint from z or exactly its first half (the same data and row stride:
/// in place). Returns the path that ran: "cpu", "reference" or "cuda".
inline std::string glu_into(const TensorView& z, const TensorView& y, GluPath path = GluPath::automatic) {
  Checker c("glu");
  c.defined("z", z).defined("y", y).rank("z", z, 2);
  const Device device = dispatch_device(c, {{"z", z}, {"y", y}});
  c.dtype_in("z", z, {DType::f32, DType::f64}).unit_stride("z", z, 1);
  c.require(z.size(1) % 2 == 0, "z", "expected an even last dimension (values, then their gates), got shape ",
            z.shape().str());
  const index_t rows = z.size(0), h = z.size(1) / 2;
  c.same_dtype("y", y, "z", z).shape("y", y, {rows, h}).unit_stride("y", y, 1);
  c.distinct_elements("y", y);
  const bool in_place = y.data() == z.data() && (rows <= 1 || y.stride(0) == z.stride(0));
  if (in_place)  // each row's outputs over its own values, never over another row's gates
    c.require(rows <= 1 || z.stride(0) >= 2 * h || z.stride(0) <= -2 * h, "y", "in place needs z's rows apart by at ",
              "least 2h = ", 2 * h, " elements, got row stride ", z.stride(0));
  else
    c.disjoint("y", y, "z", z);
  GluParams p;
  p.rows = rows, p.dim = h, p.dtype = z.dtype();
  p.z = z.data(), p.z_row_stride = z.stride(0), p.y = y.data(), p.y_row_stride = y.stride(0);
  if (device.is_cuda()) {
    backend_entry(c.op(), device, &DeviceBackend::glu_forward)(p, nullptr);
    return "cuda";
  }
  if (path == GluPath::reference) {
    reference::glu_forward(p);
    return "reference";
  }
  cpu::glu_forward(p);
  return "cpu";
}

/// z[:, :h] ⊙ σ(z[:, h:]), allocated on z's device (contiguous).
inline Tensor glu(const TensorView& z, GluPath path = GluPath::automatic) {
  Checker("glu").defined("z", z).rank("z", z, 2);
  Tensor y = Tensor::empty({z.size(0), z.size(1) / 2}, z.dtype(), z.device());
  glu_into(z, y, path);
  return y;
}

}  // namespace ssm
