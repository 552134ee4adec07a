// Building blocks of the Mamba block and language model (docs/math.md §6), each with forward and backward:
// linear, embedding, RMSNorm, SiLU and softplus. They work on contiguous row-major arrays of T = float or double
// (activations (rows, features), weights in PyTorch's (out, in) layout); the forwards of linear, embedding and
// RMSNorm are the ops ssm::linear, ssm::embedding and ssm::rms_norm over views of those arrays. Backward functions ACCUMULATE
// into parameter gradients (grad_W += ...) and OVERWRITE input gradients.
#pragma once

#include "ssm/core/macros.hpp"
#include "ssm/core/eigen.hpp"
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/causal_conv1d.hpp"
#include "ssm/cpu/simd.hpp"
#include "ssm/cpu/threads.hpp"
#include "ssm/ops/embedding.hpp"
#include "ssm/ops/linear.hpp"
#include "ssm/ops/rms_norm.hpp"

namespace ssm::layers {

template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using MatrixMap = Eigen::Map<RowMatrix<T>>;
template <class T>
using ConstMatrixMap = Eigen::Map<const RowMatrix<T>>;

/// A view of `shape` with non-negative `strides` starting `offset` elements into the contiguous buffer t (its dtype
/// and device): how the blocks carve their activations and step workspaces. A view reaching past t is an ssm::Error
/// (a workspace smaller than the block's workspace_size()), never a write past the buffer.
inline TensorView part(const TensorView& t, index_t offset, const Dims& shape, const Dims& strides) {
  SSM_CHECK(t.is_contiguous(), "layers::part: the buffer must be contiguous, got strides ", t.strides().str());
  index_t last = offset;  // the last element the view reaches
  bool empty = false;
  for (int i = 0; i < shape.size(); ++i) {
    empty = empty || shape[i] == 0;
    last += (shape[i] - 1) * strides[i];
  }
  SSM_CHECK(offset >= 0 && (empty || last < t.numel()), "layers::part: a view of shape ", shape.str(), " at offset ",
            offset, " reaches element ", last, " of a buffer of ", t.numel(),
            " elements (a workspace smaller than workspace_size()?)");
  return TensorView(static_cast<char*>(t.data()) + offset * static_cast<index_t>(size_of(t.dtype())), t.dtype(),
                    t.device(), shape, strides);
}

/// y (rows, out) = x (rows, in) Wᵀ (+ bias) by the ssm::linear op on nt CPU threads.
inline void project(const TensorView& W, const TensorView& x, const std::optional<TensorView>& bias,
                    const TensorView& y, int nt) {
  LinearOptions opt;
  opt.num_threads = nt;
  linear_into(LinearInputs{x, W, bias}, y, opt);
}

/// A parameter vector as a (size) cpu view; none when it is empty (a bias the config does not have).
template <class T>
std::optional<TensorView> optional_view(const std::vector<T>& v) {
  if (v.empty()) return std::nullopt;
  return TensorView::of(v.data(), {static_cast<index_t>(v.size())});
}
/// A defined tensor's view; none for an undefined one (a bias held on a device, or not).
inline std::optional<TensorView> optional_view(const Tensor& t) {
  return t.defined() ? std::optional<TensorView>(t.view()) : std::nullopt;
}

/// A copy of v on `device` (its shape and dtype): how blocks and models move their parameters (to()).
inline Tensor upload(const TensorView& v, Device device) {
  Tensor t = Tensor::empty(v.shape(), v.dtype(), device);
  copy(t.view(), v);
  return t;
}
/// upload of an optional view: an undefined tensor for none.
inline Tensor upload(const std::optional<TensorView>& v, Device device) { return v ? upload(*v, device) : Tensor(); }

/// Throws ssm::Error "<layer>: parameter '<name>' has <n> elements, expected shape (…)" unless v holds the shape's
/// element count: how a block's constructor checks each vector of its parameters (their for_each).
template <class T>
void check_parameter_size(const char* layer, const char* name, const std::vector<T>& v, const Dims& shape) {
  SSM_CHECK(static_cast<index_t>(v.size()) == shape.product(), layer, ": parameter '", name, "' has ", v.size(),
            " elements, expected shape ", shape.str());
}

/// A (rows, cols) cpu view of a row-major array with row stride ld (ld < 0: cols).
template <class T>
TensorView strided_rows(T* data, index_t rows, index_t cols, index_t ld = -1) {
  return TensorView(const_cast<std::remove_const_t<T>*>(data), dtype_of<T>(), Device::cpu(), {rows, cols},
                    {ld < 0 ? cols : ld, 1});
}

// ---- scalar activations ------------------------------------------------------------------------------

// softplus (x above 20), its derivative, silu and its derivative: the shared definitions (ssm/core/scalar.hpp).
using scalar::silu;
using scalar::silu_grad;
using scalar::softplus;
using scalar::softplus_grad;

using cpu::silu_forward;  // y[i] = silu(x[i]), vectorized (cpu/causal_conv1d.hpp)
/// grad_x[i] = grad_y[i] silu'(x[i]).
template <class T>
void silu_backward(const T* x, const T* grad_y, T* grad_x, index_t n) {
  for (index_t i = 0; i < n; ++i) grad_x[i] = grad_y[i] * silu_grad(x[i]);
}
/// y[i] = softplus(x[i]).
template <class T>
void softplus_forward(const T* x, T* y, index_t n) {
  for (index_t i = 0; i < n; ++i) y[i] = softplus(x[i]);
}
/// grad_x[i] = grad_y[i] softplus'(x[i]).
template <class T>
void softplus_backward(const T* x, const T* grad_y, T* grad_x, index_t n) {
  for (index_t i = 0; i < n; ++i) grad_x[i] = grad_y[i] * softplus_grad(x[i]);
}

// ---- linear --------------------------------------------------------------------------------------------

/// y = x W^T (+ bias) with x: (rows, in), W: (out, in), bias: (out) or null, y: (rows, out); ldx / ldy: row
/// strides of x and y (default: in / out), so column slices of a wider buffer work. The ssm::linear op
/// (ops/linear.hpp) over views of these arrays; the output features split over `threads` threads.
template <class T>
void linear_forward(const T* x, const T* W, const T* bias, T* y, index_t rows, index_t in, index_t out,
                    index_t ldx = -1, index_t ldy = -1, int threads = 1) {
  LinearInputs li;
  li.x = strided_rows(x, rows, in, ldx);
  li.weight = TensorView::of(W, {out, in});
  if (bias != nullptr) li.bias = TensorView::of(bias, {out});
  LinearOptions opt;
  opt.num_threads = threads;
  linear_into(li, strided_rows(y, rows, out, ldy), opt);
}

/// Backward of linear_forward: grad_x = grad_y W (overwritten, when grad_x is not null);
/// grad_W += grad_y^T x; grad_bias += column sums of grad_y (when not null).
template <class T>
void linear_backward(const T* x, const T* W, const T* grad_y, T* grad_x, T* grad_W, T* grad_bias, index_t rows,
                     index_t in, index_t out, index_t ldx = -1, index_t ldgy = -1, index_t ldgx = -1) {
  if (ldx < 0) ldx = in;
  if (ldgy < 0) ldgy = out;
  if (ldgx < 0) ldgx = in;
  using Stride = Eigen::OuterStride<>;
  Eigen::Map<const RowMatrix<T>, 0, Stride> X(x, rows, in, Stride(ldx));          // (rows, in)
  Eigen::Map<const RowMatrix<T>, 0, Stride> GY(grad_y, rows, out, Stride(ldgy));  // (rows, out)
  ConstMatrixMap<T> Wm(W, out, in);                                               // (out, in)
  if (grad_x != nullptr) {
    Eigen::Map<RowMatrix<T>, 0, Stride> GX(grad_x, rows, in, Stride(ldgx));  // (rows, in)
    GX.noalias() = GY * Wm;
  }
  if (grad_W != nullptr) MatrixMap<T>(grad_W, out, in).noalias() += GY.transpose() * X;
  if (grad_bias != nullptr) {  // the column sums row by row, then added: the same bits wherever grad_bias sits (an
                               // Eigen map's vectorized sum would peel its unaligned first columns)
    std::vector<T> sum(static_cast<std::size_t>(out), T(0));
    for (index_t r = 0; r < rows; ++r)
      for (index_t j = 0; j < out; ++j) sum[static_cast<std::size_t>(j)] += grad_y[r * ldgy + j];
    for (index_t j = 0; j < out; ++j) grad_bias[j] += sum[static_cast<std::size_t>(j)];
  }
}

// ---- embedding -----------------------------------------------------------------------------------------

/// y[r] = table[ids[r]]. ids: (rows), table: (vocab, dim), y: (rows, dim): the ssm::embedding op
/// (ops/embedding.hpp). Throws on an id outside [0, vocab).
template <class T, class Id>
void embedding_forward(const Id* ids, const T* table, T* y, index_t rows, index_t vocab, index_t dim) {
  embedding_into(TensorView::of(ids, {rows}), TensorView::of(table, {vocab, dim}), TensorView::of(y, {rows, dim}));
}
/// grad_table[ids[r]] += grad_y[r].
template <class T, class Id>
void embedding_backward(const Id* ids, const T* grad_y, T* grad_table, index_t rows, index_t dim) {
  for (index_t r = 0; r < rows; ++r) {
    T* g = grad_table + static_cast<index_t>(ids[r]) * dim;
    for (index_t k = 0; k < dim; ++k) g[k] += grad_y[r * dim + k];
  }
}

// ---- RMSNorm -------------------------------------------------------------------------------------------

/// y = x / sqrt(mean(x^2) + eps) * weight, per row: the ssm::rms_norm op (ops/rms_norm.hpp). x, y: (rows, dim)
/// with row stride ld (default dim), weight: (dim), or null for none (FalconMamba's normalization of δ, B, C).
/// In place allowed.
template <class T>
void rmsnorm_forward(const T* x, const T* weight, T* y, index_t rows, index_t dim, double eps, index_t ld = -1) {
  RmsNormInputs in;
  in.x = strided_rows(x, rows, dim, ld);
  if (weight != nullptr) in.weight = TensorView::of(weight, {dim});
  in.eps = eps;
  rms_norm_into(in, strided_rows(y, rows, dim, ld));
}
/// Backward of rmsnorm_forward: grad_x (overwritten) and grad_weight += Σ_rows grad_y x̂ (weight and
/// grad_weight may be null: no weight). x, grad_y, grad_x share the row stride ld (default dim).
/// With x̂ = x r, r = (mean(x^2) + eps)^{-1/2}, g = grad_y ⊙ weight: grad_x = r (g − x̂ mean(g ⊙ x̂)).
template <class T>
void rmsnorm_backward(const T* x, const T* weight, const T* grad_y, T* grad_x, T* grad_weight, index_t rows,
                      index_t dim, double eps, index_t ld = -1) {
  if (ld < 0) ld = dim;
  for (index_t r = 0; r < rows; ++r) {
    const T* xr = x + r * ld;
    const T* gy = grad_y + r * ld;
    T ms = 0;
    for (index_t k = 0; k < dim; ++k) ms += xr[k] * xr[k];
    const T inv = T(1) / std::sqrt(ms / T(dim) + T(eps));
    T dot = 0;
    for (index_t k = 0; k < dim; ++k) {
      const T xhat = xr[k] * inv;
      const T wk = weight != nullptr ? weight[k] : T(1);
      if (grad_weight != nullptr) grad_weight[k] += gy[k] * xhat;
      dot += gy[k] * wk * xhat;
    }
    dot /= T(dim);
    if (grad_x != nullptr)
      for (index_t k = 0; k < dim; ++k)
        grad_x[r * ld + k] = inv * (gy[k] * (weight != nullptr ? weight[k] : T(1)) - xr[k] * inv * dot);
  }
}

// ---- LayerNorm ------------------------------------------------------------------------------------------

/// Backward of LayerNorm per row (the ssm::layer_norm op's y = (x − mean) r ⊙ weight + bias, r = (var + eps)^{-1/2}, var
/// the biased variance): grad_x (overwritten) = r (g − mean(g) − x̂ mean(g ⊙ x̂)) with g = grad_y ⊙ weight;
/// grad_weight += Σ_rows grad_y x̂ and grad_bias += Σ_rows grad_y (each may be null, as weight). x, grad_y, grad_x
/// contiguous (rows, dim).
template <class T>
void layernorm_backward(const T* x, const T* weight, const T* grad_y, T* grad_x, T* grad_weight, T* grad_bias,
                        index_t rows, index_t dim, double eps) {
  for (index_t r = 0; r < rows; ++r) {
    const T* xr = x + r * dim;
    const T* gy = grad_y + r * dim;
    T mean = 0, var = 0;
    for (index_t k = 0; k < dim; ++k) mean += xr[k];
    mean /= T(dim);
    for (index_t k = 0; k < dim; ++k) var += (xr[k] - mean) * (xr[k] - mean);
    const T inv = T(1) / std::sqrt(var / T(dim) + T(eps));
    T mg = 0, mgx = 0;  // mean(g), mean(g ⊙ x̂)
    for (index_t k = 0; k < dim; ++k) {
      const T xhat = (xr[k] - mean) * inv, g = gy[k] * (weight != nullptr ? weight[k] : T(1));
      if (grad_weight != nullptr) grad_weight[k] += gy[k] * xhat;
      if (grad_bias != nullptr) grad_bias[k] += gy[k];
      mg += g, mgx += g * xhat;
    }
    mg /= T(dim), mgx /= T(dim);
    for (index_t k = 0; k < dim; ++k) {
      const T xhat = (xr[k] - mean) * inv, g = gy[k] * (weight != nullptr ? weight[k] : T(1));
      grad_x[r * dim + k] = inv * (g - mg - xhat * mgx);
    }
  }
}

}  // namespace ssm::layers
