// The argument block of the one-token selective state update (mamba's selective_state_update, the decode step of
// the selective scan; docs/math.md §5.1 with l = 1): per batch row and channel c,
//   Δ = softplus(dt + dt_bias) (or dt + dt_bias without softplus),   h = exp(Δ A) ⊙ h + Δ B u,
//   y = C · h + D u,   out = y · silu(z) (or y without z).
// Plain pointers, sizes and element strides, trivially copyable; pointers are memory of the device that runs it.
#pragma once

#include <cstdint>

#include "ssm/core/dtype.hpp"

namespace ssm {

struct SelectiveStateUpdateParams {
  std::int64_t batch = 0, dim = 0, dstate = 0;  // b, d, n
  void* state = nullptr;                        // h (b, d, n) contiguous, updated in place
  const void* x = nullptr;                      // u (b, d), unit stride along d
  std::int64_t x_batch_stride = 0;
  const void* dt = nullptr;                     // (b, d), unit stride along d
  std::int64_t dt_batch_stride = 0;
  const void* A = nullptr;                      // (d, n) contiguous
  const void* B = nullptr;                      // (b, n), unit stride along n
  std::int64_t B_batch_stride = 0;
  const void* C = nullptr;                      // (b, n), unit stride along n
  std::int64_t C_batch_stride = 0;
  const void* D = nullptr;                      // (d) or null
  const void* z = nullptr;                      // (b, d), unit stride along d; or null
  std::int64_t z_batch_stride = 0;
  const void* dt_bias = nullptr;                // (d) or null
  bool dt_softplus = false;
  void* out = nullptr;                          // (b, d), unit stride along d
  std::int64_t out_batch_stride = 0;
  DType dtype = DType::f32;                     // of every tensor: f32 | f64
};

}  // namespace ssm
