// Reference gated linear unit (core/params/dense.hpp's GluParams): y[r, c] = z[r, c] σ(z[r, h + c]) in double, each
// output rounded once to its dtype.
#pragma once

#include <cstdint>

#include "ssm/core/params/dense.hpp"
#include "ssm/reference/elements.hpp"

namespace ssm::reference {

inline void glu_forward(const GluParams& p) {
  for (std::int64_t r = 0; r < p.rows; ++r)
    for (std::int64_t c = 0; c < p.dim; ++c) {
      const double a = load_real(p.z, p.dtype, r * p.z_row_stride + c);
      const double g = load_real(p.z, p.dtype, r * p.z_row_stride + p.dim + c);
      store_real(p.y, p.dtype, r * p.y_row_stride + c, GluParams::gate(a, g));
    }
}

}  // namespace ssm::reference
