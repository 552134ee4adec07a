// The backward of SSD stage 4 and of the epilogue (chunk_output.hpp; docs/math.md §8.4). For one head and chunk, with
// ḡ the incoming gradient of out, e_t = exp(cs_t) and Y_off = diag(e) C H_inᵀ:
//   epilogue:  ḡy = ḡ ⊙ silu(z),  ḡz = ḡ ⊙ y ⊙ silu'(z),  ḡD += Σ_t ḡy_t ⊙ x_t,  ḡx = D ⊙ ḡy (the rest comes later);
//   stage 4:   ḡH_in += (diag(e) ḡy)ᵀ C,  ḡC += diag(e) ḡy H_in,  ḡcs_t += ⟨ḡy_t, Y_off,t⟩ = ⟨C_t, (diag(e) ḡy H_in)_t⟩
//              (from d e_t / d cs_t = e_t; the second form needs no Y_off: only ḡz reads y).
// The state's part (ḡH_in) is what the reverse state passing (state_passing_backward.hpp) starts from.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "ssm/cpu/ssd/chunks.hpp"

namespace ssm::cpu::ssd {

/// One head's incoming gradient over one chunk: Gout (len, p), Z (len, p) (z's rows; untouched without z) and
/// gY = Gout ⊙ silu(Z) (or Gout). grad_out is contiguous (b, l, h, p).
template <class In, class T>
void load_grad_y(const SsdParams& p, const SsdGradParams& g, const Chunk& ch, std::int64_t head, Matrix<T>& Gout,
                 Matrix<T>& Z, Matrix<T>& gY) {
  const std::int64_t hd = p.headdim, l = p.seqlen, h = p.nheads;
  Gout.resize(ch.len, hd);
  for (std::int64_t t = 0; t < ch.len; ++t)
    load_row(static_cast<const In*>(g.grad_out) + ((ch.row * l + ch.t0 + t) * h + head) * hd, hd, Gout.row(t).data());
  if (!p.z) {
    gY = Gout;
    return;
  }
  Z.resize(ch.len, hd);
  for (std::int64_t t = 0; t < ch.len; ++t)
    load_row(static_cast<const In*>(p.z) + ch.row * p.z_batch_stride + (ch.t0 + t) * p.z_seq_stride +
                 head * p.z_head_stride,
             hd, Z.row(t).data());
  gY = Gout;
  for (std::int64_t t = 0; t < ch.len; ++t) multiply_silu(gY.row(t).data(), Z.row(t).data(), hd);
}

/// Ge (len, p) = diag(e) gY, e_t = exp(cs_t): the incoming gradient of each step by the decay from the chunk's start.
template <class T>
void decayed_rows(const double* cs, const Matrix<T>& gY, Matrix<T>& Ge) {
  Ge.resize(gY.rows(), gY.cols());
  for (std::int64_t t = 0; t < gY.rows(); ++t) Ge.row(t) = gY.row(t) * static_cast<T>(std::exp(cs[t]));
}

/// The state's gradient from this chunk's outputs, E (p, n) = (diag(e) gY)ᵀ C; Ge (len, p) a workspace.
template <class T>
void chunk_output_state_grad(const double* cs, const Matrix<T>& Cm, const Matrix<T>& gY, Matrix<T>& Ge,
                             Eigen::Map<Matrix<T>> E) {
  decayed_rows(cs, gY, Ge);
  E.noalias() = Ge.transpose() * Cm;
}

/// Stage 4's backward for one head: Ge (len, p) = diag(e) gY and gCh (len, n) = Ge H_in, gC (len, n) += gCh, and
/// dcs_t += ⟨C_t, gCh_t⟩, which is ⟨gY_t, Yoff_t⟩ (Yoff = diag(e) C H_inᵀ) without forming Yoff. Ge and gCh are
/// workspaces.
template <class T>
void chunk_output_backward(const double* cs, const Matrix<T>& Cm, Eigen::Map<const Matrix<T>> H_in,
                           const Matrix<T>& gY, Matrix<T>& Ge, Matrix<T>& gCh, Matrix<T>& gC, double* dcs) {
  decayed_rows(cs, gY, Ge);
  gCh.noalias() = Ge * H_in;
  gC += gCh;
  for (std::int64_t t = 0; t < gY.rows(); ++t) dcs[t] += static_cast<double>(Cm.row(t).dot(gCh.row(t)));
}

/// y (len, p) of one head and chunk before the gate, from where the forward kept it (g.saved_y, contiguous
/// (b, l, h, p) in the compute type).
template <class T>
void load_saved_y(const SsdParams& p, const SsdGradParams& g, const Chunk& ch, std::int64_t head, Matrix<T>& Y) {
  const std::int64_t hd = p.headdim;
  Y.resize(ch.len, hd);
  for (std::int64_t t = 0; t < ch.len; ++t) {
    const T* y = static_cast<const T*>(g.saved_y) + ((ch.row * p.seqlen + ch.t0 + t) * p.nheads + head) * hd;
    std::copy(y, y + hd, Y.row(t).data());
  }
}

/// The epilogue's backward for one head and chunk. Y (len, p) holds y = Y_diag + Y_off + D x (read only with z); gX (len, p)
/// is set to D ⊙ gY (or zero); gD (p) accumulates Σ_t gY_t ⊙ x_t (per channel; the caller sums it for D per head);
/// grad_z rows (contiguous (b, l, h, p)) are stored when asked.
template <class In, class T>
void epilogue_backward(const SsdParams& p, const SsdGradParams& g, const Chunk& ch, std::int64_t head,
                       const Matrix<T>& X, const Matrix<T>& Y, const Matrix<T>& Gout, const Matrix<T>& Z, const Matrix<T>& gY,
                       Matrix<T>& gX, double* gD, std::vector<T>& row) {
  const std::int64_t hd = p.headdim;
  const T* D = static_cast<const T*>(p.D);
  using Arr = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
  gX.resize(ch.len, hd);
  if (!D) gX.setZero();
  row.resize(static_cast<std::size_t>(hd));
  for (std::int64_t t = 0; t < ch.len; ++t) {
    if (D) {
      if (p.D_per_channel) {
        const Arr d(D + head * hd, hd);
        gX.row(t).array() = d.transpose() * gY.row(t).array();
      } else {
        gX.row(t) = D[head] * gY.row(t);
      }
      for (std::int64_t i = 0; i < hd; ++i) gD[i] += static_cast<double>(gY(t, i)) * static_cast<double>(X(t, i));
    }
    if (p.z && g.grad_z) {  // ḡz = ḡ y s (1 + z (1 − s)), s = sigmoid(z)
      const auto z = Z.row(t).array();
      const auto s = (T(1) / (T(1) + (-z).exp())).eval();
      Eigen::Map<Eigen::Array<T, 1, Eigen::Dynamic>>(row.data(), hd) =
          Gout.row(t).array() * Y.row(t).array() * s * (T(1) + z * (T(1) - s));
      store_row(row.data(), hd,
                static_cast<In*>(g.grad_z) + ((ch.row * p.seqlen + ch.t0 + t) * p.nheads + head) * hd);
    }
  }
}

}  // namespace ssm::cpu::ssd
