// The CPU path of the one-token selective state update (ops/selective_state_update.hpp; mamba_ssm's
// selective_state_update): for each batch row and channel c, with Δ = softplus(dt + dt_bias),
//   h[c, :] = exp(Δ A[c, :]) ⊙ h[c, :] + Δ B u,   y = C · h[c, :] + D u,   out = y silu(z),
// accumulating in T (f32 or f64). The Mamba block's decoding step runs it once per token and layer.
#pragma once

#include <cmath>

#include "ssm/core/index.hpp"
#include "ssm/core/params/selective_state_update.hpp"
#include "ssm/core/scalar.hpp"

namespace ssm::cpu {

template <class T>
void selective_state_update_rows(const SelectiveStateUpdateParams& p) {
  const index_t d = p.dim, n = p.dstate;
  const T* A = static_cast<const T*>(p.A);            // (d, n)
  const T* D = static_cast<const T*>(p.D);            // (d) or null
  const T* dt_bias = static_cast<const T*>(p.dt_bias);  // (d) or null
  for (index_t bi = 0; bi < p.batch; ++bi) {
    const T* u = static_cast<const T*>(p.x) + bi * p.x_batch_stride;    // (d)
    const T* dt = static_cast<const T*>(p.dt) + bi * p.dt_batch_stride;  // (d)
    const T* B = static_cast<const T*>(p.B) + bi * p.B_batch_stride;     // (n)
    const T* C = static_cast<const T*>(p.C) + bi * p.C_batch_stride;     // (n)
    const T* z = p.z != nullptr ? static_cast<const T*>(p.z) + bi * p.z_batch_stride : nullptr;  // (d) or null
    T* h = static_cast<T*>(p.state) + bi * d * n;                        // (d, n)
    T* out = static_cast<T*>(p.out) + bi * p.out_batch_stride;           // (d)
    for (index_t c = 0; c < d; ++c) {
      const T uc = u[c];
      const T pre = dt[c] + (dt_bias != nullptr ? dt_bias[c] : T(0));
      const T Delta = p.dt_softplus ? scalar::softplus(pre) : pre;
      T* hc = h + c * n;
      const T* Ac = A + c * n;
      T y = 0;
      for (index_t k = 0; k < n; ++k) {
        hc[k] = std::exp(Delta * Ac[k]) * hc[k] + Delta * B[k] * uc;
        y += C[k] * hc[k];
      }
      if (D != nullptr) y += D[c] * uc;
      out[c] = z != nullptr ? y * scalar::silu(z[c]) : y;
    }
  }
}

/// The op's CPU path for a validated p (dtype f32 or f64).
inline void selective_state_update(const SelectiveStateUpdateParams& p) {
  if (p.dtype == DType::f64) selective_state_update_rows<double>(p);
  else selective_state_update_rows<float>(p);
}

}  // namespace ssm::cpu
