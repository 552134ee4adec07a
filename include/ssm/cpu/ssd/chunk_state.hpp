// SSD stage 2, chunk states (docs/ssd.md): the state one chunk leaves when it starts from zero,
//   S (p, n) = Σ_t exp(cs_last − cs_t) Δ_t x_t B_tᵀ = (diag(w) X)ᵀ B,   w_t = exp(cs_last − cs_t) Δ_t,
// and the chunk's total decay exp(cs_last) that stage 3 applies to the state entering it. Exponents <= 0.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "ssm/cpu/ssd/chunks.hpp"

namespace ssm::cpu::ssd {

/// The chunk's total decay exp(cs_last), cs (len) its segment sums.
template <class T>
T chunk_decay(const double* cs, std::int64_t len) {
  return static_cast<T>(std::exp(cs[len - 1]));
}

/// S (p, n) of one head and chunk (X (len, p), Bm (len, n)); Xw (len, p) a workspace. Returns exp(cs_last).
template <class T>
T chunk_state(const double* cs, const T* Delta, const Matrix<T>& X, const Matrix<T>& Bm,
              Matrix<T>& Xw, Eigen::Map<Matrix<T>> S) {
  const std::int64_t len = X.rows();
  const double last = cs[len - 1];
  Xw.resize(len, X.cols());
  for (std::int64_t t = 0; t < len; ++t)
    Xw.row(t) = X.row(t) * static_cast<T>(std::exp(last - cs[t]) *
                                          static_cast<double>(Delta[t]));
  S.noalias() = Xw.transpose() * Bm;
  return chunk_decay<T>(cs, len);
}

}  // namespace ssm::cpu::ssd
