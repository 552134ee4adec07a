// The CPU path of the layer_norm op (ops/layer_norm.hpp): per row, y = (x − mean) / sqrt(var + eps) ⊙ weight + bias,
// the mean and the (biased) variance accumulated in T (f32 or f64) in two passes. The row function and its backward
// are also TTT-Linear's inner normalization (cpu/ttt_linear.hpp). Row sums and dot products are cpu/reduce.hpp's:
// vectorized (a plain loop's float reduction is not, without reassociation) in an order that does not depend on where
// the row sits.
#pragma once

#include <cmath>
#include <cstdint>

#include "ssm/core/params/dense.hpp"
#include "ssm/cpu/reduce.hpp"

namespace ssm::cpu {

/// One row z (d): ẑ = (z − mean) / σ into zhat (may be null), y = γ ⊙ ẑ + β into y (may be z; γ, β null: 1 and 0).
/// Returns 1 / σ.
template <class T>
T layer_norm_row(const T* z, const T* gamma, const T* beta, std::int64_t d, T eps, T* zhat, T* y) {
  const T mean = reduce::sum(z, d) / static_cast<T>(d);
  const T var = reduce::sum_of<T>(d, [&](auto read, std::int64_t j) {
                  const auto c = read(z, j) - mean;
                  return c * c;
                }) /
                static_cast<T>(d);
  const T inv_sigma = T(1) / std::sqrt(var + eps);
  for (std::int64_t j = 0; j < d; ++j) {
    const T zh = (z[j] - mean) * inv_sigma;
    if (zhat) zhat[j] = zh;
    y[j] = (gamma ? gamma[j] : T(1)) * zh + (beta ? beta[j] : T(0));
  }
  return inv_sigma;
}

/// The backward of one row, y = γ ⊙ ẑ + β with ẑ (d) and 1 / σ from the forward, for ȳ: z̄ written (may not alias
/// ȳ), γ̄ += ȳ ⊙ ẑ and β̄ += ȳ (γ null: 1; γ̄, β̄ null: skipped). z̄ = (t − mean(t) − ẑ mean(t ⊙ ẑ)) / σ, t = γ ⊙ ȳ.
template <class T>
void layer_norm_row_backward(const T* zhat, T inv_sigma, const T* gamma, const T* ybar, std::int64_t d, T* zbar,
                             T* gamma_bar, T* beta_bar) {
  for (std::int64_t j = 0; j < d; ++j) zbar[j] = (gamma ? gamma[j] : T(1)) * ybar[j];  // t, first
  const T mt = reduce::sum(zbar, d) / static_cast<T>(d), mtz = reduce::dot(zbar, zhat, d) / static_cast<T>(d);
  for (std::int64_t j = 0; j < d; ++j) {
    zbar[j] = (zbar[j] - mt - zhat[j] * mtz) * inv_sigma;
    if (gamma_bar) gamma_bar[j] += ybar[j] * zhat[j];
    if (beta_bar) beta_bar[j] += ybar[j];
  }
}

/// The op's CPU path for a validated p (dtype f32 or f64).
inline void layer_norm_forward(const LayerNormParams& p) {
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* x = static_cast<const T*>(p.x);
    T* y = static_cast<T*>(p.y);
    for (std::int64_t i = 0; i < p.rows; ++i) {
      const T* row = x + i * p.x_row_stride;  // the row that is normalized
      if (p.residual != nullptr) {
        T* res = static_cast<T*>(p.residual) + i * p.residual_row_stride;
        for (std::int64_t k = 0; k < p.dim; ++k) res[k] += row[k];
        row = res;
      }
      layer_norm_row(row, static_cast<const T*>(p.weight), static_cast<const T*>(p.bias), p.dim, static_cast<T>(p.eps),
                     static_cast<T*>(nullptr), y + i * p.y_row_stride);
    }
  };
  if (p.dtype == DType::f64) run(double{});
  else run(float{});
}

}  // namespace ssm::cpu
