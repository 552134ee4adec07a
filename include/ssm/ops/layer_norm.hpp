// The LayerNorm op (Ba et al. 2016; TTT-Linear's post-norm, RWKV's pre-norms): per row, r = x + residual (stored back
// into residual) or r = x, then y = (r − mean) / sqrt(var + eps) ⊙ weight + bias, var the biased variance (PyTorch's
// nn.LayerNorm). CPU tensors: cpu/layer_norm.hpp, or the reference in double on request. CUDA tensors are an
// ssm::Error (no kernel yet).
#pragma once

#include <optional>
#include <string>
#include <tuple>

#include "ssm/core/check.hpp"
#include "ssm/core/params/dense.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/layer_norm.hpp"
#include "ssm/reference/layer_norm.hpp"

namespace ssm {

struct LayerNormInputs {
  TensorView x{};                     // (rows, dim) f32 | f64, unit stride along dim
  std::optional<TensorView> weight{};  // (dim) x's dtype, contiguous; absent: 1
  std::optional<TensorView> bias{};    // (dim) x's dtype, contiguous; absent: 0
  double eps = 1e-5;                   // finite and > 0
  std::optional<TensorView> residual{};  // (rows, dim) x's dtype, unit stride along dim: residual += x, in place, and
                                         // the sum is normalized (a pre-norm's residual add); not x itself
};

enum class LayerNormPath { automatic, reference };

/// LayerNorm into y (rows, dim): x's dtype, unit stride along dim; y may be x (in place). Returns the path that ran:
/// "cpu" or "reference".
inline std::string layer_norm_into(const LayerNormInputs& in, const TensorView& y,
                                   LayerNormPath path = LayerNormPath::automatic) {
  Checker c("layer_norm");
  c.defined("x", in.x).rank("x", in.x, 2).defined("y", y);
  c.same_device({{"x", in.x}, {"weight", in.weight.value_or(in.x)}, {"bias", in.bias.value_or(in.x)}, {"y", y}});
  c.require(in.x.device().is_cpu(), "x", "layer_norm has no CUDA path yet (x is on ", in.x.device().str(), ")");
  c.dtype_in("x", in.x, {DType::f32, DType::f64}).unit_stride("x", in.x, 1);
  c.positive("eps", in.eps);
  LayerNormParams p;
  p.rows = in.x.size(0), p.dim = in.x.size(1), p.eps = in.eps, p.dtype = in.x.dtype();
  p.x = in.x.data(), p.x_row_stride = in.x.stride(0);
  for (const auto& [nm, t, dst] : {std::tuple{"weight", &in.weight, &p.weight}, std::tuple{"bias", &in.bias, &p.bias}})
    if (*t) {
      c.defined(nm, **t).same_dtype(nm, **t, "x", in.x).shape(nm, **t, {p.dim}).contiguous(nm, **t);
      *dst = (*t)->data();
    }
  if (in.residual) {
    const TensorView& r = *in.residual;
    c.defined("residual", r).same_device({{"residual", r}, {"x", in.x}}).same_dtype("residual", r, "x", in.x);
    c.shape("residual", r, {p.rows, p.dim}).unit_stride("residual", r, 1);
    c.require(r.data() != in.x.data() || p.rows * p.dim == 0, "residual", "must not be x itself");
    p.residual = r.data(), p.residual_row_stride = r.stride(0);
  }
  c.same_dtype("y", y, "x", in.x).shape("y", y, {p.rows, p.dim}).unit_stride("y", y, 1);
  p.y = y.data(), p.y_row_stride = y.stride(0);
  if (path == LayerNormPath::reference) {
    reference::layer_norm_forward(p);
    return "reference";
  }
  cpu::layer_norm_forward(p);
  return "cpu";
}

/// LayerNorm of x (rows, dim), allocated.
inline Tensor layer_norm(const LayerNormInputs& in, LayerNormPath path = LayerNormPath::automatic) {
  Checker("layer_norm").defined("x", in.x).rank("x", in.x, 2);
  Tensor y = Tensor::empty(in.x.shape(), in.x.dtype(), in.x.device());  // (rows, dim)
  layer_norm_into(in, y, path);
  return y;
}

}  // namespace ssm
