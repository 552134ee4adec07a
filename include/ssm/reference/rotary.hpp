// Reference rotary position embedding (Su et al. 2021; the formulas in core/params/dense.hpp's RotaryParams): every
// angle, cosine and sine in double, each rotated pair rounded once to the output dtype.
#pragma once

#include <cmath>
#include <cstdint>

#include "ssm/core/params/dense.hpp"
#include "ssm/reference/elements.hpp"

namespace ssm::reference {

inline void rotary_forward(const RotaryParams& p) {
  const std::int64_t half = p.dim / 2;
  for (std::int64_t bi = 0; bi < p.batch; ++bi)
    for (std::int64_t t = 0; t < p.seqlen; ++t)
      for (std::int64_t hh = 0; hh < p.heads; ++hh) {
        const std::int64_t xo = bi * p.x_strides[0] + t * p.x_strides[1] + hh * p.x_strides[2];
        const std::int64_t yo = bi * p.y_strides[0] + t * p.y_strides[1] + hh * p.y_strides[2];
        for (std::int64_t i = 0; i < half; ++i) {
          const double angle = p.angle(p.position(t), i);
          const double a = load_real(p.x, p.dtype, xo + p.first(i)), b = load_real(p.x, p.dtype, xo + p.second(i));
          const double c = std::cos(angle), s = p.inverse ? -std::sin(angle) : std::sin(angle);
          store_real(p.y, p.dtype, yo + p.first(i), a * c - b * s);
          store_real(p.y, p.dtype, yo + p.second(i), a * s + b * c);
        }
      }
}

}  // namespace ssm::reference
