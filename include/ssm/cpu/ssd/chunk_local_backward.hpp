// The backward of SSD stage 1 (chunk_local.hpp; docs/math.md §8.4): for one head and chunk, with the decay mask
// L_ts = exp(cs_t − cs_s) (s <= t), M = G ⊙ L (G = C Bᵀ), Xd = diag(Δ) X and Y_diag = M Xd,
//   ḡM = tril(ḡy Xdᵀ),  ḡXd = Mᵀ ḡy  (so ḡx += diag(Δ) ḡXd, ḡΔ_t += ⟨x_t, ḡXd_t⟩),
//   ḡG += ḡM ⊙ L (summed over the group's heads; ḡC += ḡG B, ḡB += ḡGᵀ C once per group),
//   ḡcs_t += Σ_s R_ts − Σ_s R_st,  R = ḡM ⊙ M   (d L_ts / d cs_t = L_ts, d L_ts / d cs_s = −L_ts).
// Only lower triangles are formed (a triangular product into a triangular result), so, as in the forward, no
// exponent above the diagonal is taken.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "ssm/cpu/ssd/chunks.hpp"

namespace ssm::cpu::ssd {

/// The lower triangles of L and M = G ⊙ L (len, len) for one head; their upper triangles are not written.
template <class T>
void decay_mask(const Matrix<T>& G, const double* cs, Matrix<T>& L, Matrix<T>& M) {
  const std::int64_t len = G.rows();
  L.resize(len, len);
  M.resize(len, len);
  for (std::int64_t i = 0; i < len; ++i) {
    T* li = L.row(i).data();
    const double ci = cs[i];
    for (std::int64_t j = 0; j <= i; ++j) li[j] = static_cast<T>(cs[j] - ci);  // −(cs_i − cs_j) >= 0
    L.row(i).head(i + 1) = (-L.row(i).head(i + 1).array()).exp().matrix();
    M.row(i).head(i + 1) = (L.row(i).head(i + 1).array() * G.row(i).head(i + 1).array()).matrix();
  }
}

/// Stage 1's backward for one head: gX (len, p) += diag(Δ) Mᵀ gY, gDelta_t += ⟨x_t, (Mᵀ gY)_t⟩, dG (len, len, lower;
/// zero above) += tril(gY Xdᵀ) ⊙ L, dcs += the mask's part. dM, gXd (len, p) and col (len) are workspaces.
template <class T>
void chunk_local_backward(const Matrix<T>& L, const Matrix<T>& M, const T* Delta, const Matrix<T>& X,
                          const Matrix<T>& Xd, const Matrix<T>& gY, Matrix<T>& dM, Matrix<T>& gXd,
                          std::vector<T>& col, Matrix<T>& gX, double* gDelta, Matrix<T>& dG, double* dcs) {
  const std::int64_t len = M.rows();
  dM.resize(len, len);
  dM.template triangularView<Eigen::Lower>() = gY * Xd.transpose();
  gXd.noalias() = M.template triangularView<Eigen::Lower>().transpose() * gY;
  for (std::int64_t t = 0; t < len; ++t) {
    gX.row(t) += Delta[t] * gXd.row(t);
    gDelta[t] += static_cast<double>(X.row(t).dot(gXd.row(t)));
  }
  col.assign(static_cast<std::size_t>(len), T(0));
  Eigen::Map<Eigen::Array<T, 1, Eigen::Dynamic>> colsum(col.data(), len);
  for (std::int64_t i = 0; i < len; ++i) {
    const auto dm = dM.row(i).head(i + 1).array();
    dG.row(i).head(i + 1).array() += dm * L.row(i).head(i + 1).array();
    const auto r = (dm * M.row(i).head(i + 1).array()).eval();
    dcs[i] += static_cast<double>(r.sum());
    colsum.head(i + 1) += r;
  }
  for (std::int64_t j = 0; j < len; ++j) dcs[j] -= static_cast<double>(col[static_cast<std::size_t>(j)]);
}

}  // namespace ssm::cpu::ssd
