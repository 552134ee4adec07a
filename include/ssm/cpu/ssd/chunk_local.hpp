// SSD stage 1, chunk-local (the "diagonal blocks", docs/ssd.md): within one chunk, the output the chunk's own steps
// give, as masked attention,
//   Y_diag = (C Bᵀ ⊙ L) (Δ x),   L_ij = exp(cs_i − cs_j) for j <= i, 0 above the diagonal,
// with G = C Bᵀ (len, len) computed once per group and shared by its heads. Only the lower triangle of the masked
// matrix is formed and read (a triangular product), so no exponent above the diagonal is ever taken.
#pragma once

#include <cstdint>
#include <vector>

#include "ssm/cpu/ssd/chunks.hpp"

namespace ssm::cpu::ssd {

/// G (len, len) = C Bᵀ for one group and chunk (Cm, Bm: (len, n)).
template <class T>
void chunk_gram(const Matrix<T>& Cm, const Matrix<T>& Bm, Matrix<T>& G) {
  G.noalias() = Cm * Bm.transpose();
}

/// Y (len, p) += (G ⊙ L)(diag(Delta) X) for one head; M (len, len) and Xd (len, p) are workspaces.
template <class T>
void chunk_local(const Matrix<T>& G, const double* cs, const T* Delta, const Matrix<T>& X,
                 Matrix<T>& M, Matrix<T>& Xd, Matrix<T>& Y) {
  const std::int64_t len = G.rows();
  M.resize(len, len);
  for (std::int64_t i = 0; i < len; ++i) {
    T* m = M.row(i).data();
    const double ci = cs[i];
    for (std::int64_t j = 0; j <= i; ++j) m[j] = static_cast<T>(cs[j] - ci);  // -(seg) >= 0
    auto row = M.row(i).head(i + 1).array();
    row = (-row).exp() * G.row(i).head(i + 1).array();
  }
  Xd.noalias() = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>(Delta, len).asDiagonal() * X;
  Y.noalias() += M.template triangularView<Eigen::Lower>() * Xd;
}

}  // namespace ssm::cpu::ssd
