// RWKV's token shift (Peng et al. 2023, 2025): each branch □ of a layer reads a per-channel mix of the current
// token's input x and the previous token's x_{−1} (zero before a sequence's first token, or the carried last input
// when decoding). The two generations write the mix μ_□ from opposite ends:
//
//   RWKV-4 (transformers' time_mix_*):  x_□ = μ_□ ⊙ x + (1 − μ_□) ⊙ x_{−1}
//   RWKV-7 (x_r … x_g):                  x_□ = x + (x_{−1} − x) ⊙ μ_□
//
// token_shift writes every branch's mix; token_shift_backward takes their gradients back to x and to each μ_□, for a
// sequence that started from the empty shift (what the layers' backwards train from).
#pragma once

#include <cstddef>
#include <span>

#include "ssm/core/tensor.hpp"

namespace ssm::layers {

/// Which end of the mix μ weights: the current token (RWKV-4) or the previous one (RWKV-7).
enum class TokenShift { rwkv4, rwkv7 };

/// mixed (branches, b l, C) = each branch's mix of x (b, l, C) with its previous token, branch m by mu[m] (C); the
/// token before each sequence's first is shift (b, C) when given, else zero. All contiguous.
template <class T>
void token_shift(TokenShift kind, const T* x, const T* shift, index_t b, index_t l, index_t C,
                 std::span<const T* const> mu, T* mixed) {
  const index_t rows = b * l;
  for (index_t bi = 0; bi < b; ++bi)
    for (index_t t = 0; t < l; ++t) {
      const T* xt = x + (bi * l + t) * C;
      const T* prev = t > 0 ? xt - C : (shift ? shift + bi * C : nullptr);
      for (std::size_t m = 0; m < mu.size(); ++m) {
        T* dst = mixed + (static_cast<index_t>(m) * rows + bi * l + t) * C;
        const T* u = mu[m];
        if (kind == TokenShift::rwkv4)
          for (index_t i = 0; i < C; ++i) dst[i] = xt[i] * u[i] + (prev ? prev[i] : T(0)) * (T(1) - u[i]);
        else
          for (index_t i = 0; i < C; ++i) dst[i] = xt[i] + ((prev ? prev[i] : T(0)) - xt[i]) * u[i];
      }
    }
}

/// The backward of token_shift from the empty shift: with grad_mixed (branches, b l, C) = ∂L/∂mixed, adds ∂L/∂x into
/// grad_x (b, l, C) and ∂L/∂mu[m] into grad_mu[m] (C). Branch by branch, then token by token (a fixed order).
template <class T>
void token_shift_backward(TokenShift kind, const T* x, index_t b, index_t l, index_t C, std::span<const T* const> mu,
                          const T* grad_mixed, T* grad_x, std::span<T* const> grad_mu) {
  const index_t rows = b * l;
  for (std::size_t m = 0; m < mu.size(); ++m)
    for (index_t bi = 0; bi < b; ++bi)
      for (index_t t = 0; t < l; ++t) {
        const index_t row = bi * l + t;
        const T* xt = x + row * C;
        const T* gm = grad_mixed + (static_cast<index_t>(m) * rows + row) * C;
        const T* u = mu[m];
        T* gu = grad_mu[m];
        for (index_t i = 0; i < C; ++i) {
          const T prev = t > 0 ? xt[i - C] : T(0);
          // ∂x_□/∂x, ∂x_□/∂x_{−1}, ∂x_□/∂μ
          const T on_x = kind == TokenShift::rwkv4 ? u[i] : T(1) - u[i];
          const T on_prev = kind == TokenShift::rwkv4 ? T(1) - u[i] : u[i];
          grad_x[row * C + i] += gm[i] * on_x;
          if (t > 0) grad_x[(row - 1) * C + i] += gm[i] * on_prev;
          gu[i] += gm[i] * (kind == TokenShift::rwkv4 ? xt[i] - prev : prev - xt[i]);
        }
      }
}

}  // namespace ssm::layers
