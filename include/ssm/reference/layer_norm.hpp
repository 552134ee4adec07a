// Reference LayerNorm (Ba et al. 2016): per row, y = (x − mean) / sqrt(var + eps) ⊙ weight + bias with the biased
// variance, in double. The row function is also TTT-Linear's inner normalization (reference/ttt_linear.hpp).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "ssm/core/params/dense.hpp"
#include "ssm/reference/elements.hpp"

namespace ssm::reference {

/// One row z (n) in double: ẑ = (z − mean) / σ with σ = sqrt(var + eps) into zhat, y = γ ⊙ ẑ + β into y (γ, β of n,
/// or empty: 1 and 0). Returns 1 / σ.
inline double layer_norm_row(const std::vector<double>& z, const std::vector<double>& gamma,
                             const std::vector<double>& beta, double eps, std::vector<double>& zhat,
                             std::vector<double>& y) {
  const std::size_t n = z.size();
  double mean = 0, var = 0;
  for (double x : z) mean += x;
  mean /= static_cast<double>(n);
  for (double x : z) var += (x - mean) * (x - mean);
  var /= static_cast<double>(n);
  const double inv_sigma = 1.0 / std::sqrt(var + eps);
  zhat.resize(n), y.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    zhat[i] = (z[i] - mean) * inv_sigma;
    y[i] = (gamma.empty() ? 1.0 : gamma[i]) * zhat[i] + (beta.empty() ? 0.0 : beta[i]);
  }
  return inv_sigma;
}

inline void layer_norm_forward(const LayerNormParams& p) {
  const std::size_t n = static_cast<std::size_t>(p.dim);
  std::vector<double> z(n), gamma, beta, zhat, y;
  if (p.weight) gamma.resize(n);
  if (p.bias) beta.resize(n);
  for (std::size_t k = 0; k < gamma.size(); ++k) gamma[k] = load_real(p.weight, p.dtype, static_cast<std::int64_t>(k));
  for (std::size_t k = 0; k < beta.size(); ++k) beta[k] = load_real(p.bias, p.dtype, static_cast<std::int64_t>(k));
  for (std::int64_t i = 0; i < p.rows; ++i) {
    for (std::size_t k = 0; k < n; ++k) z[k] = load_real(p.x, p.dtype, i * p.x_row_stride + static_cast<std::int64_t>(k));
    if (p.residual)  // residual += x, rounded to the dtype as stored; that sum is normalized
      for (std::size_t k = 0; k < n; ++k) {
        const std::int64_t o = i * p.residual_row_stride + static_cast<std::int64_t>(k);
        store_real(p.residual, p.dtype, o, load_real(p.residual, p.dtype, o) + z[k]);
        z[k] = load_real(p.residual, p.dtype, o);
      }
    layer_norm_row(z, gamma, beta, p.eps, zhat, y);
    for (std::size_t k = 0; k < n; ++k) store_real(p.y, p.dtype, i * p.y_row_stride + static_cast<std::int64_t>(k), y[k]);
  }
}

}  // namespace ssm::reference
