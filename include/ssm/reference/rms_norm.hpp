// Reference RMSNorm (Zhang & Sennrich 2019; the Mamba LM's pre-norm, docs/math.md §6.2) with the residual add the
// Mamba LM fuses into it (mamba_ssm's RMSNorm with prenorm and residual_in_fp32): per row, r = x + residual
// (stored back into residual, in its dtype), y = r / sqrt(mean(r²) + eps) ⊙ weight. Plain loops in double over
// a RmsNormParams.
#pragma once

#include <cmath>
#include <vector>

#include "ssm/core/params/dense.hpp"
#include "ssm/reference/elements.hpp"

namespace ssm::reference {

inline void rms_norm_forward(const RmsNormParams& p) {
  std::vector<double> r(static_cast<std::size_t>(p.dim));  // (dim) the row after the residual add
  for (std::int64_t i = 0; i < p.rows; ++i) {
    double ms = 0;
    for (std::int64_t k = 0; k < p.dim; ++k) {
      double v = load_real(p.x, p.dtype, i * p.x_row_stride + k);
      if (p.residual != nullptr) {
        v += load_real(p.residual, p.dtype, i * p.residual_row_stride + k);
        store_real(p.residual, p.dtype, i * p.residual_row_stride + k, v);
      }
      r[static_cast<std::size_t>(k)] = v;
      ms += v * v;
    }
    const double inv = 1.0 / std::sqrt(ms / static_cast<double>(p.dim) + p.eps);
    for (std::int64_t k = 0; k < p.dim; ++k) {
      const double w = p.weight != nullptr ? load_real(p.weight, p.dtype, k) : 1.0;
      store_real(p.y, p.dtype, i * p.y_row_stride + k, r[static_cast<std::size_t>(k)] * inv * w);
    }
  }
}

}  // namespace ssm::reference
