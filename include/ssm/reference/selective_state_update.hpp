// Reference one-token selective state update (mamba_ssm's selective_state_update, the decode step of the
// selective scan; docs/math.md §5.1 at l = 1), plain loops accumulating in double over a
// SelectiveStateUpdateParams (core/params/selective_state_update.hpp holds the formulas).
#pragma once

#include <cmath>

#include "ssm/core/params/selective_state_update.hpp"
#include "ssm/reference/elements.hpp"

namespace ssm::reference {

inline void selective_state_update(const SelectiveStateUpdateParams& p) {
  const DType t = p.dtype;
  for (std::int64_t bi = 0; bi < p.batch; ++bi)
    for (std::int64_t c = 0; c < p.dim; ++c) {
      const double u = load_real(p.x, t, bi * p.x_batch_stride + c);
      double Delta = load_real(p.dt, t, bi * p.dt_batch_stride + c) + (p.dt_bias ? load_real(p.dt_bias, t, c) : 0.0);
      // softplus with PyTorch's threshold: the identity above 20
      if (p.dt_softplus) Delta = Delta > 20.0 ? Delta : std::log1p(std::exp(Delta));
      double y = 0;
      for (std::int64_t k = 0; k < p.dstate; ++k) {
        const std::int64_t hi = (bi * p.dim + c) * p.dstate + k;
        const double h = std::exp(Delta * load_real(p.A, t, c * p.dstate + k)) * load_real(p.state, t, hi) +
                         Delta * load_real(p.B, t, bi * p.B_batch_stride + k) * u;
        store_real(p.state, t, hi, h);
        y += load_real(p.C, t, bi * p.C_batch_stride + k) * h;
      }
      if (p.D != nullptr) y += load_real(p.D, t, c) * u;
      if (p.z != nullptr) {
        const double z = load_real(p.z, t, bi * p.z_batch_stride + c);
        y *= z / (1.0 + std::exp(-z));
      }
      store_real(p.out, t, bi * p.out_batch_stride + c, y);
    }
}

}  // namespace ssm::reference
