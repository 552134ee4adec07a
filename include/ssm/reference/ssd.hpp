// Reference SSD (Mamba-2; docs/ssd.md, docs/math.md §8): the token loop of the recurrence in double, one state
// H (p, n) per sequence and head, over an SsdParams (core/params/ssd.hpp holds the formulas). Initial and final
// state; with cu_seqlens every packed sequence starts from its own initial state (zero without one). The oracle
// the chunked CPU path is tested against: no chunks, no threads, no GEMM.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "ssm/core/params/ssd.hpp"
#include "ssm/core/scalar.hpp"
#include "ssm/reference/elements.hpp"

namespace ssm::reference {

inline void ssd_forward(const SsdParams& p) {
  const DType it = p.input_dtype, pt = p.param_dtype;
  const std::int64_t h = p.nheads, hd = p.headdim, n = p.dstate, heads_per_group = p.nheads / p.ngroups;
  std::vector<double> H(static_cast<std::size_t>(hd * n));  // (p, n)
  for (std::int64_t s = 0; s < p.rows(); ++s) {
    const std::int64_t bi = p.seq_row(s);
    for (std::int64_t hh = 0; hh < h; ++hh) {
      const std::int64_t gi = hh / heads_per_group;
      const double A = load_real(p.A, pt, hh);
      const double bias = p.dt_bias ? load_real(p.dt_bias, pt, hh) : 0.0;
      const std::int64_t state_off = (s * h + hh) * hd * n;
      for (std::int64_t k = 0; k < hd * n; ++k)
        H[static_cast<std::size_t>(k)] = p.initial_state ? load_real(p.initial_state, pt, state_off + k) : 0.0;
      for (std::int64_t t = p.seq_begin(s); t < p.seq_end(s); ++t) {
        const double Delta =
            ssd_delta(load_real(p.dt, pt, bi * p.dt_batch_stride + t * p.dt_seq_stride + hh * p.dt_head_stride) + bias, p);
        const double decay = std::exp(Delta * A);
        const std::int64_t xo = bi * p.x_batch_stride + t * p.x_seq_stride + hh * p.x_head_stride;
        const std::int64_t Bo = bi * p.B_batch_stride + t * p.B_seq_stride + gi * p.B_group_stride;
        const std::int64_t Co = bi * p.C_batch_stride + t * p.C_seq_stride + gi * p.C_group_stride;
        for (std::int64_t i = 0; i < hd; ++i) {
          const double u = load_real(p.x, it, xo + i);
          double y = 0;
          for (std::int64_t k = 0; k < n; ++k) {
            double& hk = H[static_cast<std::size_t>(i * n + k)];
            hk = decay * hk + Delta * u * load_real(p.B, it, Bo + k);
            y += hk * load_real(p.C, it, Co + k);
          }
          if (p.D) y += load_real(p.D, pt, p.D_per_channel ? hh * hd + i : hh) * u;
          if (p.z) y *= scalar::silu(load_real(p.z, it, bi * p.z_batch_stride + t * p.z_seq_stride + hh * p.z_head_stride + i));
          store_real(p.out, it, bi * p.out_batch_stride + t * p.out_seq_stride + hh * p.out_head_stride + i, y);
        }
      }
      if (p.final_state)
        for (std::int64_t k = 0; k < hd * n; ++k) store_real(p.final_state, pt, state_off + k, H[static_cast<std::size_t>(k)]);
    }
  }
}

}  // namespace ssm::reference
