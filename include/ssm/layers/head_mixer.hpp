// What the layers of the linear-attention family (layers/delta_net.hpp, layers/linear_attention.hpp) share around
// their recurrence: the input check, PyTorch-default uniform initialization, the output path
// o (rows, h, dv) → [RMSNorm over dv per head] → [⊙ silu(o_gate)] → out_proj and its backward, and the gradients'
// container.
#pragma once

#include <algorithm>
#include <cmath>
#include <optional>
#include <random>
#include <type_traits>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/scalar.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/layers/basic.hpp"
#include "ssm/ops/rms_norm.hpp"

namespace ssm::layers::head_mixer {

/// What a mixer layer's backward returns: the input's gradient and one of every parameter, in the parameters' layout.
template <class T, class Params>
struct MixerGrads {
  std::vector<T> grad_x;  // (b, l, d_model)
  Params params;          // ∂L/∂ each parameter; empty where the layer has no such parameter
};

/// x must be a contiguous CPU (b, l, d_model) tensor of T's dtype.
template <class T>
void check_input(const Checker& c, const TensorView& x, index_t d_model) {
  c.defined("x", x).rank("x", x, 3).shape("x", x, {kAny, kAny, d_model}).dtype("x", x, dtype_of<T>());
  c.contiguous("x", x).device("x", x, Device::cpu());
}

/// A gradient argument (∂L/∂y of a layer's backward, named `name`) must be a contiguous CPU tensor of x's shape
/// (b, l, d_model) and T's dtype.
template <class T>
void check_grad_out(const Checker& c, const TensorView& grad_out, const TensorView& x, const char* name = "grad_out") {
  c.defined(name, grad_out).shape(name, grad_out, {x.size(0), x.size(1), x.size(2)}).dtype(name, grad_out, dtype_of<T>());
  c.contiguous(name, grad_out).device(name, grad_out, Device::cpu());
}

/// The check of a parameter an optimizer may hold (and resize) through a layer's params(): v must have n values and,
/// with `finite` (at construction), every one finite; an ssm::Error names it otherwise.
template <class T>
void check_parameter(const Checker& c, const char* name, const std::vector<T>& v, index_t n, bool finite) {
  c.require(static_cast<index_t>(v.size()) == n, name, "expected ", n, " values, got ", v.size());
  if (finite)
    for (T e : v) c.require(std::isfinite(static_cast<double>(e)), name, "must be finite, got ", e);
}

/// Parameters of p's sizes, all zero (the accumulators of a backward); Params has for_each(f(name, vector)).
template <class Params>
Params zeros_like(const Params& p) {
  Params z = p;
  z.for_each([](const char*, auto& v) { std::fill(v.begin(), v.end(), typename std::decay_t<decltype(v)>::value_type(0)); });
  return z;
}

/// count values uniform in ±1/√fan_in (PyTorch's default bound for linear and conv weights).
template <class T>
std::vector<T> uniform_fan_in(std::mt19937_64& rng, index_t count, double fan_in) {
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<T> v(static_cast<std::size_t>(count));
  for (T& x : v) x = static_cast<T>((2 * unit(rng) - 1) / std::sqrt(fan_in));
  return v;
}

/// The output path, in place on o (rows, h, dv) contiguous, then out (rows, d_model) = o out_projᵀ:
/// with norm_weight (dv) non-empty, RMSNorm over each head's dv (ssm::rms_norm); with a gate, o ⊙ silu(gate) where
/// gate (rows, h dv) is a view with unit stride along its columns (a column slice of the projection).
template <class T>
void normalize_gate_project(const TensorView& o, const std::vector<T>& norm_weight, double eps,
                            const std::optional<TensorView>& gate, const std::vector<T>& out_proj,
                            const TensorView& out, int threads) {
  const index_t rows = o.size(0), h = o.size(1), dv = o.size(2), dm = out.size(1);
  if (!norm_weight.empty()) {
    const TensorView o_rows = o.reshape({rows * h, dv});
    rms_norm_into(RmsNormInputs{o_rows, TensorView::of(norm_weight.data(), {dv}), std::nullopt, eps}, o_rows);
  }
  if (gate) {
    T* os = static_cast<T*>(o.data());
    const T* g = static_cast<const T*>(gate->data());
    const index_t ld = gate->stride(0);
    for (index_t r = 0; r < rows; ++r)
      for (index_t j = 0; j < h * dv; ++j) os[r * h * dv + j] *= scalar::silu(g[r * ld + j]);
  }
  project(TensorView::of(out_proj.data(), {dm, h * dv}), o.reshape({rows, h * dv}), std::nullopt, out, threads);
}

/// Backward of normalize_gate_project. o (rows, h, dv) contiguous holds the recurrence's output before the norm;
/// grad_out (rows, d_model) contiguous is ∂L/∂out. Writes grad_o (rows, h dv), ∂L/∂o, and, with a gate, grad_gate
/// (rows, h dv) with row stride ld_grad_gate (a column slice of the projection's gradient); accumulates
/// grad_norm_weight (dv) and grad_out_proj (d_model, h dv).
template <class T>
void normalize_gate_project_backward(const T* o, const std::vector<T>& norm_weight, double eps,
                                     const std::optional<TensorView>& gate, const std::vector<T>& out_proj,
                                     const T* grad_out, index_t rows, index_t h, index_t dv, index_t dm, T* grad_o,
                                     T* grad_gate, index_t ld_grad_gate, std::vector<T>& grad_norm_weight,
                                     std::vector<T>& grad_out_proj) {
  const index_t hv = h * dv;
  std::vector<T> o_n(o, o + rows * hv);  // (rows, h dv): RMSNorm(o) · w, or o
  if (!norm_weight.empty()) rmsnorm_forward(o, norm_weight.data(), o_n.data(), rows * h, dv, eps);
  std::vector<T> o_g = o_n;  // (rows, h dv): out_proj's input, o_n ⊙ silu(gate)
  const T* g = gate ? static_cast<const T*>(gate->data()) : nullptr;
  const index_t ldg = gate ? gate->stride(0) : 0;
  if (g != nullptr)
    for (index_t r = 0; r < rows; ++r)
      for (index_t j = 0; j < hv; ++j) o_g[r * hv + j] *= scalar::silu(g[r * ldg + j]);
  std::vector<T> grad_og(static_cast<std::size_t>(rows * hv));  // (rows, h dv)
  linear_backward(o_g.data(), out_proj.data(), grad_out, grad_og.data(), grad_out_proj.data(), static_cast<T*>(nullptr),
                  rows, hv, dm);
  if (g != nullptr)
    for (index_t r = 0; r < rows; ++r)
      for (index_t j = 0; j < hv; ++j) {
        const T gj = g[r * ldg + j], dy = grad_og[r * hv + j];
        grad_gate[r * ld_grad_gate + j] = dy * o_n[r * hv + j] * scalar::silu_grad(gj);
        grad_og[r * hv + j] = dy * scalar::silu(gj);  // now ∂L/∂o_n
      }
  if (norm_weight.empty())
    std::copy(grad_og.begin(), grad_og.end(), grad_o);
  else
    rmsnorm_backward(o, norm_weight.data(), grad_og.data(), grad_o, grad_norm_weight.data(), rows * h, dv, eps);
}

}  // namespace ssm::layers::head_mixer
