// The CPU path of the gated linear unit (ops/glu.hpp; core/params/dense.hpp's GluParams): one pass in the compute
// type. In place over z's first half is safe: element (r, c) reads z[r, c] and z[r, h + c], then writes y[r, c] only.
#pragma once

#include <cstdint>

#include "ssm/core/params/dense.hpp"

namespace ssm::cpu {

inline void glu_forward(const GluParams& p) {
  auto run = [&](auto tag) {
    using T = decltype(tag);
    for (std::int64_t r = 0; r < p.rows; ++r) {
      const T* z = static_cast<const T*>(p.z) + r * p.z_row_stride;
      T* y = static_cast<T*>(p.y) + r * p.y_row_stride;
      for (std::int64_t c = 0; c < p.dim; ++c) y[c] = GluParams::gate(z[c], z[p.dim + c]);
    }
  };
  if (p.dtype == DType::f64) run(double{});
  else run(float{});
}

}  // namespace ssm::cpu
