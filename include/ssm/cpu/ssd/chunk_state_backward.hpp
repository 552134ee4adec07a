// The backward of SSD stage 2 (chunk_state.hpp; docs/math.md §8.4): for one head and chunk, S = (diag(w) X)ᵀ B with
// w_t = exp(cs_last − cs_t) Δ_t and ḡS the gradient of the state the chunk leaves (from the reverse state passing):
//   P = B ḡSᵀ (len, p),   ḡx_t += w_t P_t,   ḡB += diag(w) X ḡS,   ḡΔ_t += exp(cs_last − cs_t) ⟨x_t, P_t⟩,
//   q_t = w_t ⟨x_t, P_t⟩:  ḡcs_t −= q_t,  ḡcs_last += Σ_t q_t   (= ⟨ḡS, S⟩).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "ssm/cpu/ssd/chunks.hpp"

namespace ssm::cpu::ssd {

/// Stage 2's backward for one head: gX (len, p), gDelta and dcs (len) accumulate; Xw (len, p) = diag(w) X, a block
/// of the group's (len, heads p) matrix, whose product with the heads' stacked ḡS (heads p, n) the caller adds to gB
/// once per group (one GEMM of depth heads p); P (len, p) is a workspace.
template <class T>
void chunk_state_backward(const double* cs, const T* Delta, const Matrix<T>& X, const Matrix<T>& Bm,
                          Eigen::Map<const Matrix<T>> dS, Matrix<T>& P,
                          Eigen::Ref<Matrix<T>, 0, Eigen::OuterStride<>> Xw, Matrix<T>& gX, double* gDelta,
                          double* dcs) {
  const std::int64_t len = X.rows();
  const double last = cs[len - 1];
  P.noalias() = Bm * dS.transpose();
  double q_sum = 0;
  for (std::int64_t t = 0; t < len; ++t) {
    const double decay = std::exp(last - cs[t]);
    const T w = static_cast<T>(decay * static_cast<double>(Delta[t]));
    const double r = static_cast<double>(X.row(t).dot(P.row(t)));
    gX.row(t) += w * P.row(t);
    Xw.row(t) = w * X.row(t);
    gDelta[t] += decay * r;
    const double q = static_cast<double>(w) * r;
    dcs[t] -= q;
    q_sum += q;
  }
  dcs[len - 1] += q_sum;
}

}  // namespace ssm::cpu::ssd
