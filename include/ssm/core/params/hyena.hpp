// The argument block of the Hyena recurrence (Poli et al. 2023, "Hyena Hierarchy", §3; safari's HyenaOperator;
// docs/hyena.md): the gated long convolutions of an order-N Hyena operator, per batch row and channel c:
//   w_0 = v
//   for o = 0 .. N−2:   w'_o = w_o ⊙ x_{N−1−o},   w_{o+1} = h_o ∗ w'_o + D_o ⊙ w'_o      (h_o ∗ u)_t = Σ_{τ≤t} h_o[τ] u_{t−τ}
//   y = w_{N−1} ⊙ x_0
// with x_0 … x_{N−1} the gates and v the value (the N + 1 projections of the input after their short convolution),
// h_o (d, L) the long filters (one per channel; L ≥ l, taps beyond l − 1 unused) and D_o (d) their skip terms. Order 2
// is H(q, k, v) = D_q T_h D_k v with q = x_0, k = x_1 (the paper's data-controlled form; StripedHyena's gated
// convolution block). Plain pointers, sizes and element strides, trivially copyable; host memory.
#pragma once

#include <cstdint>

#include "ssm/core/dtype.hpp"

namespace ssm {

/// The largest order N of one call (N gates; N − 1 long convolutions).
inline constexpr int kHyenaMaxOrder = 8;

struct HyenaParams {
  std::int64_t batch = 0, seqlen = 0, channels = 0;  // b, l, d
  std::int64_t order = 2;                            // N: gates x_0 … x_{N−1}, filters h_0 … h_{N−2}
  std::int64_t filter_len = 0;                       // L ≥ l

  // (b, l, d) each, unit stride along d; element strides of b and l.
  const void* v = nullptr;
  std::int64_t v_strides[2] = {0, 0};
  const void* x[kHyenaMaxOrder] = {};
  std::int64_t x_strides[kHyenaMaxOrder][2] = {};
  const void* h = nullptr;     // (N − 1, d, L) contiguous
  const void* bias = nullptr;  // (N − 1, d) contiguous: D_o
  void* out = nullptr;         // (b, l, d), unit stride along d
  std::int64_t out_strides[2] = {0, 0};

  DType dtype = DType::f32;  // every tensor: f32 | f64

  std::int64_t at(const std::int64_t (&s)[2], std::int64_t bi, std::int64_t t) const { return bi * s[0] + t * s[1]; }
};

/// The gradients for ḡy (grad_out): going back through the orders with ḡw_{N−1} = ḡy ⊙ x_0, ḡx_0 = ḡy ⊙ w_{N−1}, and
///   ḡw'_o[t] = Σ_{s≥t} h_o[s − t] ḡw_{o+1}[s] + D_o ḡw_{o+1}[t]       ḡh_o[τ] = Σ_{b, t} ḡw_{o+1}[t] w'_o[t − τ]
///   ḡD_o = Σ_{b, t} ḡw_{o+1} ⊙ w'_o      ḡx_{N−1−o} = ḡw'_o ⊙ w_o      ḡw_o = ḡw'_o ⊙ x_{N−1−o}
/// ending with ḡv = ḡw_0. Outputs contiguous in the dtype, null ones skipped: grad_v (b, l, d), grad_x (N, b, l, d),
/// grad_h (N − 1, d, L) (taps ≥ l zero), grad_bias (N − 1, d).
struct HyenaGradParams {
  const void* grad_out = nullptr;  // (b, l, d) contiguous
  void* grad_v = nullptr;
  void* grad_x = nullptr;
  void* grad_h = nullptr;
  void* grad_bias = nullptr;
};

}  // namespace ssm
