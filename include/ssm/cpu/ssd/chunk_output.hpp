// SSD stage 4, inter-chunk output (the "off-diagonal blocks", docs/ssd.md): what the state entering a chunk gives
// each of its steps,
//   Y_off (len, p) = diag(exp(cs)) C H_inᵀ,   cs_t <= 0 the decay from the chunk's start to step t,
// then the epilogue of the whole output: y = Y_diag + Y_off + D x, out = y silu(z).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "ssm/cpu/ssd/chunks.hpp"

namespace ssm::cpu::ssd {

/// Y (len, p) = diag(exp(cs)) Cm (len, n) H_inᵀ (H_in (p, n)).
template <class T>
void chunk_output(const double* cs, const Matrix<T>& Cm, Eigen::Map<const Matrix<T>> H_in, Matrix<T>& Y) {
  Y.noalias() = Cm * H_in.transpose();
  for (std::int64_t t = 0; t < Y.rows(); ++t) Y.row(t) *= static_cast<T>(std::exp(cs[t]));
}

/// Y (len, p) += D x (X (len, p)): what makes Y_diag + Y_off the whole y before the gate.
template <class T>
void add_skip(const SsdParams& p, std::int64_t head, const Matrix<T>& X, Matrix<T>& Y) {
  const T* D = static_cast<const T*>(p.D);
  if (!D) return;
  const std::int64_t hd = p.headdim;
  for (std::int64_t t = 0; t < Y.rows(); ++t) {
    if (p.D_per_channel)
      Y.row(t).array() += Eigen::Map<const Eigen::Array<T, 1, Eigen::Dynamic>>(D + head * hd, hd) * X.row(t).array();
    else
      Y.row(t) += D[head] * X.row(t);
  }
}

/// out rows of one head and chunk = Y silu(z) (Y the whole y, add_skip), converted to the input type In; Y's rows
/// also into p.y (contiguous (b, l, h, p)) where the forward keeps them for its backward.
template <class In, class T>
void store_output(const SsdParams& p, const Chunk& ch, std::int64_t head, Matrix<T>& Y, std::vector<T>& zrow) {
  const std::int64_t hd = p.headdim;
  zrow.resize(static_cast<std::size_t>(hd));
  for (std::int64_t t = 0; t < ch.len; ++t) {
    const std::int64_t tt = ch.t0 + t;
    T* y = Y.row(t).data();
    if (p.y) std::copy(y, y + hd, static_cast<T*>(p.y) + ((ch.row * p.seqlen + tt) * p.nheads + head) * hd);
    if (p.z) {
      load_row(static_cast<const In*>(p.z) + ch.row * p.z_batch_stride + tt * p.z_seq_stride + head * p.z_head_stride,
               hd, zrow.data());
      multiply_silu(y, zrow.data(), hd);
    }
    store_row(y, hd,
              static_cast<In*>(p.out) + ch.row * p.out_batch_stride + tt * p.out_seq_stride + head * p.out_head_stride);
  }
}

}  // namespace ssm::cpu::ssd
