// The CPU path of the one-token selective state update (ops/selective_state_update.hpp; mamba_ssm's
// selective_state_update): for each batch row, head i and channel c, with Δ = softplus(dt + dt_bias) (clamped),
//   h[i, c, :] = exp(Δ A) ⊙ h[i, c, :] + Δ B u,   y = C · h[i, c, :] + D u,   out = y silu(z),
// B and C those of head i's group, accumulating in T (f32 or f64). The Mamba block's decoding step (Mamba-1 form,
// A per channel and state) and the Mamba-2 block's (per_head form: one decay exp(Δ A) per head) run it once per token
// and layer. The Mamba-1 form's exp(Δ A) over the states runs in vectors (simd::exp, the scan's own exp2; a scalar
// exp per state was a tenth of a Mamba-130m decode step), the states past the last full vector in scalars.
#pragma once

#include <cmath>

#include "ssm/core/index.hpp"
#include "ssm/core/params/selective_state_update.hpp"
#include "ssm/core/scalar.hpp"
#include "ssm/cpu/simd.hpp"

namespace ssm::cpu {

template <class T>
void selective_state_update_rows(const SelectiveStateUpdateParams& p) {
  const index_t d = p.dim, n = p.dstate, nh = p.nheads, heads_per_group = p.nheads / p.ngroups;
  const T* A = static_cast<const T*>(p.A);              // (h, d, n), or (h) per head
  const T* D = static_cast<const T*>(p.D);              // (h, d), (h) per head, or null
  const T* dt_bias = static_cast<const T*>(p.dt_bias);  // (h, d), (h) per head, or null
  for (index_t bi = 0; bi < p.batch; ++bi)
    for (index_t i = 0; i < nh; ++i) {
      const index_t gi = i / heads_per_group;
      const T* u = static_cast<const T*>(p.x) + bi * p.x_batch_stride + i * p.x_head_stride;           // (d)
      const T* B = static_cast<const T*>(p.B) + bi * p.B_batch_stride + gi * p.B_group_stride;         // (n)
      const T* C = static_cast<const T*>(p.C) + bi * p.C_batch_stride + gi * p.C_group_stride;         // (n)
      const T* z = p.z != nullptr ? static_cast<const T*>(p.z) + bi * p.z_batch_stride + i * p.z_head_stride
                                  : nullptr;                                                            // (d) or null
      T* h = static_cast<T*>(p.state) + (bi * nh + i) * d * n;                                          // (d, n)
      T* out = static_cast<T*>(p.out) + bi * p.out_batch_stride + i * p.out_head_stride;                // (d)
      const T* dt = static_cast<const T*>(p.dt);
      // The per-head form: one Δ and one decay for the whole head.
      T Delta_head = 0, decay_head = 0;
      if (p.per_head) {
        Delta_head = p.delta<T>(dt[p.dt_index(bi, i, 0)] + (dt_bias != nullptr ? dt_bias[i] : T(0)));
        decay_head = std::exp(Delta_head * A[i]);
      }
      for (index_t c = 0; c < d; ++c) {
        const index_t pc = p.param_index(i, c);
        const T uc = u[c];
        T* hc = h + c * n;
        T y = 0;
        if (p.per_head) {
          const T du = Delta_head * uc;
          for (index_t k = 0; k < n; ++k) {
            hc[k] = decay_head * hc[k] + du * B[k];
            y += C[k] * hc[k];
          }
        } else {
          const T Delta = p.delta<T>(dt[p.dt_index(bi, i, c)] + (dt_bias != nullptr ? dt_bias[pc] : T(0)));
          const T* Ac = A + pc * n;  // (n)
          using V = simd::Vec<T>;
          constexpr int W = simd::lanes<T>;
          const V Delta_v = simd::broadcast(Delta), du = simd::broadcast(Delta * uc);
          V yv{};
          index_t k = 0;
          for (; k + W <= n; k += W) {
            const V h_new = simd::fma(simd::exp<T>(Delta_v * simd::load(Ac + k)), simd::load(hc + k),
                                      du * simd::load(B + k));
            simd::store(hc + k, h_new);
            yv = simd::fma(simd::load(C + k), h_new, yv);
          }
          y = simd::hsum<T>(yv);
          for (; k < n; ++k) {
            hc[k] = std::exp(Delta * Ac[k]) * hc[k] + Delta * B[k] * uc;
            y += C[k] * hc[k];
          }
        }
        if (D != nullptr) y += D[pc] * uc;
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
