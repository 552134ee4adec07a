// The CPU path of the rms_norm op (ops/rms_norm.hpp): per row, r = x (+ residual, stored back), then
// y = r / sqrt(mean(r²) + eps) ⊙ weight, the sum of squares accumulated in T (f32 or f64) in order.
#pragma once

#include <cmath>

#include "ssm/core/index.hpp"
#include "ssm/core/params/dense.hpp"

namespace ssm::cpu {

/// Rows of x (row stride ldx), residual (ldr; null: none) and y (ldy; may be x); weight (dim) or null.
template <class T>
void rms_norm_rows(const T* x, index_t ldx, T* residual, index_t ldr, const T* weight, T* y, index_t ldy,
                   index_t rows, index_t dim, double eps) {
  for (index_t i = 0; i < rows; ++i) {
    const T* xr = x + i * ldx;
    const T* rr = xr;  // the row that is normalized
    if (residual != nullptr) {
      T* res = residual + i * ldr;
      for (index_t k = 0; k < dim; ++k) res[k] += xr[k];
      rr = res;
    }
    T* yr = y + i * ldy;
    T ms = 0;
    for (index_t k = 0; k < dim; ++k) ms += rr[k] * rr[k];
    const T inv = T(1) / std::sqrt(ms / T(dim) + T(eps));
    if (weight != nullptr)
      for (index_t k = 0; k < dim; ++k) yr[k] = rr[k] * inv * weight[k];
    else
      for (index_t k = 0; k < dim; ++k) yr[k] = rr[k] * inv;
  }
}

/// The op's CPU path for a validated p (dtype f32 or f64).
inline void rms_norm_forward(const RmsNormParams& p) {
  auto run = [&](auto tag) {
    using T = decltype(tag);
    rms_norm_rows(static_cast<const T*>(p.x), p.x_row_stride, static_cast<T*>(p.residual), p.residual_row_stride,
                  static_cast<const T*>(p.weight), static_cast<T*>(p.y), p.y_row_stride, p.rows, p.dim, p.eps);
  };
  if (p.dtype == DType::f64) run(double{});
  else run(float{});
}

}  // namespace ssm::cpu
