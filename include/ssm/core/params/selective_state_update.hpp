// The argument block of the one-token selective state update (mamba's selective_state_update, the decode step of
// the selective scan; docs/math.md §5.1 with l = 1): per batch row, head i and channel c of the head,
//   Δ = softplus(dt + dt_bias) (or dt + dt_bias without softplus), clamped to [dt_min, dt_max] (has_dt_limit),
//   h = exp(Δ A) ⊙ h + Δ B u,   y = C · h + D u,   out = y · silu(z) (or y without z),
// where B and C are those of group i / (h / g). Two forms:
//   Mamba-1 (per_head = false): h = g = 1 by default; dt, dt_bias (d), A (d, n), D (d) per channel.
//   Mamba-2 (per_head = true, mamba_ssm's tied head dim): dt (b, h), dt_bias (h), A (h) and D (h) one scalar per
//   head, shared by its dim channels; the state (b, h, dim, n) is the SSD op's state (core/params/ssd.hpp).
// Plain pointers, sizes and element strides, trivially copyable; pointers are memory of the device that runs it.
#pragma once

#include <cstdint>

#include "ssm/core/dtype.hpp"
#include "ssm/core/macros.hpp"
#include "ssm/core/scalar.hpp"

namespace ssm {

struct SelectiveStateUpdateParams {
  std::int64_t batch = 0, dim = 0, dstate = 0;  // b, d (channels per head), n
  std::int64_t nheads = 1, ngroups = 1;         // h, g (g divides h); Mamba-1: 1, 1
  bool per_head = false;                        // Mamba-2: dt, dt_bias, A, D one scalar per head (see above)
  void* state = nullptr;                        // h (b, h, d, n) contiguous, updated in place
  const void* x = nullptr;                      // u (b, h, d), unit stride along d
  std::int64_t x_batch_stride = 0, x_head_stride = 0;
  const void* dt = nullptr;                     // (b, h, d) unit stride along d; per_head: (b, h)
  std::int64_t dt_batch_stride = 0, dt_head_stride = 0;
  const void* A = nullptr;                      // (h, d, n) contiguous; per_head: (h)
  const void* B = nullptr;                      // (b, g, n), unit stride along n
  std::int64_t B_batch_stride = 0, B_group_stride = 0;
  const void* C = nullptr;                      // (b, g, n), unit stride along n
  std::int64_t C_batch_stride = 0, C_group_stride = 0;
  const void* D = nullptr;                      // (h, d); per_head: (h); or null
  const void* z = nullptr;                      // (b, h, d), unit stride along d; or null
  std::int64_t z_batch_stride = 0, z_head_stride = 0;
  const void* dt_bias = nullptr;                // (h, d); per_head: (h); or null
  bool dt_softplus = false;
  bool has_dt_limit = false;                    // clamp Δ to [dt_min, dt_max] after the softplus
  double dt_min = 0, dt_max = 0;
  void* out = nullptr;                          // (b, h, d), unit stride along d
  std::int64_t out_batch_stride = 0, out_head_stride = 0;
  DType dtype = DType::f32;                     // of every tensor: f32 | f64

  /// Element offsets of head i's channel c in the per-channel parameters: dt_bias, D ((h, d), or (h) per_head)
  /// and A's row ((h, d, n), or (h) per_head: then the row has one element for every k).
  SSM_HOST_DEVICE std::int64_t param_index(std::int64_t i, std::int64_t c) const { return per_head ? i : i * dim + c; }
  /// dt's offset for batch row bi, head i, channel c.
  SSM_HOST_DEVICE std::int64_t dt_index(std::int64_t bi, std::int64_t i, std::int64_t c) const {
    return bi * dt_batch_stride + i * dt_head_stride + (per_head ? 0 : c);
  }
  /// Δ from dt + dt_bias: softplus, then the clamp (scalar::step_size, as the SSD op's ssd_delta).
  template <class T>
  SSM_HOST_DEVICE T delta(T dt_plus_bias) const {
    return scalar::step_size(dt_plus_bias, dt_softplus, has_dt_limit, dt_min, dt_max);
  }
};

}  // namespace ssm
