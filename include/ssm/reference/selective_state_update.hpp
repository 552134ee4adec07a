// Reference one-token selective state update (mamba_ssm's selective_state_update, the decode step of the
// selective scan, docs/math.md §5.1 at l = 1; and of SSD, docs/ssd.md), plain loops accumulating in double over a
// SelectiveStateUpdateParams (core/params/selective_state_update.hpp holds the formulas and the two forms).
#pragma once

#include <cmath>

#include "ssm/core/params/selective_state_update.hpp"
#include "ssm/core/scalar.hpp"
#include "ssm/reference/elements.hpp"

namespace ssm::reference {

inline void selective_state_update(const SelectiveStateUpdateParams& p) {
  const DType t = p.dtype;
  const std::int64_t heads_per_group = p.nheads / p.ngroups;
  for (std::int64_t bi = 0; bi < p.batch; ++bi)
    for (std::int64_t i = 0; i < p.nheads; ++i) {
      const std::int64_t gi = i / heads_per_group;
      for (std::int64_t c = 0; c < p.dim; ++c) {
        const std::int64_t pc = p.param_index(i, c);
        const double u = load_real(p.x, t, bi * p.x_batch_stride + i * p.x_head_stride + c);
        const double Delta =
            p.delta(load_real(p.dt, t, p.dt_index(bi, i, c)) + (p.dt_bias ? load_real(p.dt_bias, t, pc) : 0.0));
        double y = 0;
        for (std::int64_t k = 0; k < p.dstate; ++k) {
          const std::int64_t hi = ((bi * p.nheads + i) * p.dim + c) * p.dstate + k;
          const double A = load_real(p.A, t, p.per_head ? i : pc * p.dstate + k);
          const double h = std::exp(Delta * A) * load_real(p.state, t, hi) +
                           Delta * load_real(p.B, t, bi * p.B_batch_stride + gi * p.B_group_stride + k) * u;
          store_real(p.state, t, hi, h);
          y += load_real(p.C, t, bi * p.C_batch_stride + gi * p.C_group_stride + k) * h;
        }
        if (p.D != nullptr) y += load_real(p.D, t, pc) * u;
        if (p.z != nullptr) y *= scalar::silu(load_real(p.z, t, bi * p.z_batch_stride + i * p.z_head_stride + c));
        store_real(p.out, t, bi * p.out_batch_stride + i * p.out_head_stride + c, y);
      }
    }
}

}  // namespace ssm::reference
