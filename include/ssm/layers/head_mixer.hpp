// What the layers of the linear-attention family (layers/delta_net.hpp, layers/linear_attention.hpp) share around
// their recurrence: the input check, PyTorch-default uniform initialization, and the output path
// o (rows, h, dv) → [RMSNorm over dv per head] → [⊙ silu(o_gate)] → out_proj.
#pragma once

#include <cmath>
#include <optional>
#include <random>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/scalar.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/layers/basic.hpp"
#include "ssm/ops/rms_norm.hpp"

namespace ssm::layers::head_mixer {

/// x must be a contiguous CPU (b, l, d_model) tensor of T's dtype.
template <class T>
void check_input(const Checker& c, const TensorView& x, index_t d_model) {
  c.defined("x", x).rank("x", x, 3).shape("x", x, {kAny, kAny, d_model}).dtype("x", x, dtype_of<T>());
  c.contiguous("x", x).device("x", x, Device::cpu());
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

}  // namespace ssm::layers::head_mixer
