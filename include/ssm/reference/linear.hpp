// Reference linear map (PyTorch's nn.Linear; docs/math.md §6.1): y = x Wᵀ + bias as plain loops accumulating in
// double, over the strided buffers of a LinearParams. The oracle the CPU GEMM / GEMV paths are tested against.
#pragma once

#include "ssm/core/params/dense.hpp"
#include "ssm/reference/elements.hpp"

namespace ssm::reference {

/// y[r, j] = Σ_k x[r, k] W[j, k] + bias[j], accumulated in double, rounded once to y's dtype.
inline void linear_forward(const LinearParams& p) {
  for (std::int64_t r = 0; r < p.rows; ++r)
    for (std::int64_t j = 0; j < p.out; ++j) {
      double acc = p.bias != nullptr ? load_real(p.bias, p.dtype, j) : 0.0;
      for (std::int64_t k = 0; k < p.in; ++k)
        acc += load_real(p.x, p.dtype, r * p.x_row_stride + k) * load_real(p.weight, p.weight_dtype, j * p.in + k);
      store_real(p.y, p.dtype, r * p.y_row_stride + j, acc);
    }
}

}  // namespace ssm::reference
