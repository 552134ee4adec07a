// Weight matrices held in f32, f16 or bf16, and the linear layer and embedding lookup that read them with f32
// arithmetic. A 16-bit matrix costs half the memory of f32 (a bf16 checkpoint can be used at its file size, as
// a zero-copy view of the memory-mapped file); the products convert weights to f32 on the fly:
//   - few rows (decoding, rows < kPanelRows): each weight row is streamed once and converted in registers
//     (cpu::load_f32, cpu/convert.hpp), accumulating 2 rows x 4 output features (one row: 8) at once in f32
//     vectors;
//   - many rows (prefill): a panel of output features (an L2-sized block of W) is converted to f32 once and
//     multiplied with every row by Eigen's GEMM.
// Products and sums are f32 either way (AVX-512 BF16's vdpbf16ps is not used: it would round x to bf16 too).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/convert.hpp"
#include "ssm/cpu/simd.hpp"
#include "ssm/cpu/threads.hpp"
#include "ssm/layers/basic.hpp"

namespace ssm::layers {

/// A (rows, cols) row-major matrix of f32, f16 or bf16 values (PyTorch's (out, in) layout for a linear
/// weight), stored in a contiguous cpu ssm::Tensor: owned, or a view sharing a memory-mapped file (see
/// safetensors::File::tensor). Cheap to copy: copies share the storage. Read-only.
class WeightMatrix {
 public:
  WeightMatrix() = default;
  /// Holds `t` (contiguous, cpu, rank 2, dtype f32 / f16 / bf16) without copying it.
  explicit WeightMatrix(Tensor t) : t_(std::move(t)) {
    SSM_CHECK(t_.defined() && t_.rank() == 2 && t_.device().is_cpu() && t_.view().is_contiguous(),
              "WeightMatrix: expected a contiguous rank-2 cpu tensor");
    check_dtype("WeightMatrix: the tensor's dtype", t_.dtype());
    SSM_CHECK(reinterpret_cast<std::uintptr_t>(t_.data()) % size_of(t_.dtype()) == 0,
              "WeightMatrix: the data is not aligned for ", name(t_.dtype()));
  }
  /// `values` (rows x cols f32) stored as `dtype` (f32, f16 or bf16; rounded to nearest even).
  static WeightMatrix from_f32(const float* values, index_t rows, index_t cols, DType dtype = DType::f32) {
    check_dtype("WeightMatrix::from_f32: dtype", dtype);
    Tensor t = Tensor::empty({rows, cols}, dtype);
    const std::size_t n = static_cast<std::size_t>(rows * cols);
    if (dtype == DType::f32) std::copy_n(values, n, t.data_as<float>());
    if (dtype == DType::f16)
      for (std::size_t i = 0; i < n; ++i) t.data_as<half>()[i] = half(values[i]);
    if (dtype == DType::bf16)
      for (std::size_t i = 0; i < n; ++i) t.data_as<bfloat16>()[i] = bfloat16(values[i]);
    return WeightMatrix(std::move(t));
  }
  /// Throws ssm::Error "<what> is <dtype>, which is not one of f32, f16, bf16" unless dtype is one a WeightMatrix
  /// can hold; `what` names the argument (e.g. "MambaLM::load: LoadOptions::weight_dtype").
  static void check_dtype(const char* what, DType dtype) {
    SSM_CHECK(dtype == DType::f32 || dtype == DType::f16 || dtype == DType::bf16, what, " is ", name(dtype),
              ", which is not one of f32, f16, bf16");
  }

  bool empty() const { return !t_.defined(); }
  DType dtype() const { return t_.dtype(); }
  index_t rows() const { return empty() ? 0 : t_.size(0); }
  index_t cols() const { return empty() ? 0 : t_.size(1); }
  std::size_t nbytes() const { return empty() ? 0 : t_.nbytes(); }
  const void* data() const { return t_.data(); }
  /// The values, when the dtype is f32.
  const float* f32() const {
    SSM_CHECK(dtype() == DType::f32, "WeightMatrix::f32: the matrix holds ", name(dtype()));
    return t_.data_as<float>();
  }
  const Tensor& tensor() const { return t_; }

  /// dst[0, n) = float(element i0 + k): n consecutive elements (row-major) converted to f32.
  void to_f32(index_t i0, index_t n, float* dst) const;
  /// All values in f32 (a copy).
  std::vector<float> to_f32() const {
    std::vector<float> v(static_cast<std::size_t>(rows() * cols()));
    to_f32(0, rows() * cols(), v.data());
    return v;
  }
  /// Same shape and the same values (compared in f32, row by row).
  bool same_values(const WeightMatrix& o) const {
    if (rows() != o.rows() || cols() != o.cols()) return false;
    std::vector<float> a(static_cast<std::size_t>(cols())), b(a.size());
    for (index_t r = 0; r < rows(); ++r) {
      to_f32(r * cols(), cols(), a.data());
      o.to_f32(r * cols(), cols(), b.data());
      if (a != b) return false;
    }
    return true;
  }

 private:
  Tensor t_;
};

namespace detail {

namespace simd = ::ssm::cpu::simd;
inline constexpr int kW = simd::lanes<float>;

/// y[r, j .. j + F) = x[r, :] W[j .. j + F, :]^T for the R rows of x (row stride ldx) and y (row stride ldy); W
/// (·, in) row-major in H (ssm::half or ssm::bfloat16). R x F f32 vector accumulators; each weight vector is
/// converted once (cpu::load_f32) and used for the R rows. next: the first row of the next tile (prefetched
/// when R == 1), or null.
template <class H, int R, int F>
SSM_FORCE_INLINE void gemv_tile(const float* x, index_t ldx, const H* W, index_t in, index_t j, float* y, index_t ldy,
                                const H* next = nullptr) {
  simd::Vec<float> acc[R][F];
  for (int r = 0; r < R; ++r)
    for (int f = 0; f < F; ++f) acc[r][f] = simd::Vec<float>{};
  const H* w = W + j * in;
  index_t k = 0;
  for (; k + kW <= in; k += kW) {
    simd::Vec<float> wv[F];
    for (int f = 0; f < F; ++f) wv[f] = ::ssm::cpu::load_f32(w + f * in + k);
    // One row (decoding) is bound by streaming W: prefetch every other row of the next tile, if any, at this
    // column (bench_mamba's bf16 decode step, AVX-512, 1 thread: 26.5 -> 20.0 ms CPU; prefetching every row
    // once per cache line instead gained less).
    if constexpr (R == 1)
      if (next != nullptr)
        for (int f = 0; f < F; f += 2) simd::prefetch(next + f * in + k);
    for (int r = 0; r < R; ++r) {
      const simd::Vec<float> xv = simd::load(x + r * ldx + k);
      for (int f = 0; f < F; ++f) acc[r][f] = simd::fma(xv, wv[f], acc[r][f]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int f = 0; f < F; ++f) {
      float s = simd::hsum<float>(acc[r][f]);
      for (index_t kk = k; kk < in; ++kk) s += x[r * ldx + kk] * static_cast<float>(w[f * in + kk]);
      y[r * ldy + j + f] = s;
    }
}

/// Features [j0, j1) of y (rows, ·) = x W^T by gemv tiles: rows in pairs, features in fours (one row: eights).
template <class H>
void gemv_16bit(const float* x, index_t ldx, const H* W, index_t in, index_t j0, index_t j1, float* y, index_t ldy,
                index_t rows) {
  // With 16 vector registers (AVX2, SSE2) 2 rows x 4 features keeps the accumulators and operands in registers.
  index_t j = j0;
  if (rows == 1)
    for (; j + 8 <= j1; j += 8) gemv_tile<H, 1, 8>(x, ldx, W, in, j, y, ldy, j + 16 <= j1 ? W + (j + 8) * in : nullptr);
  for (; j + 4 <= j1; j += 4) {
    index_t r = 0;
    for (; r + 2 <= rows; r += 2) gemv_tile<H, 2, 4>(x + r * ldx, ldx, W, in, j, y + r * ldy, ldy);
    if (r < rows) gemv_tile<H, 1, 4>(x + r * ldx, ldx, W, in, j, y + r * ldy, ldy);
  }
  for (; j < j1; ++j) {
    index_t r = 0;
    for (; r + 2 <= rows; r += 2) gemv_tile<H, 2, 1>(x + r * ldx, ldx, W, in, j, y + r * ldy, ldy);
    if (r < rows) gemv_tile<H, 1, 1>(x + r * ldx, ldx, W, in, j, y + r * ldy, ldy);
  }
}

/// Rows from which linear_forward converts panels of W to f32 and uses Eigen's GEMM; below it, gemv tiles.
inline constexpr index_t kPanelRows = 8;
/// f32 elements of one converted panel (128 KiB: it stays in L2 while every row is multiplied with it).
inline constexpr index_t kPanelElements = 32 * 1024;

/// y (rows, out; row stride ldy) = x (rows, in; row stride ldx) W^T (+ bias) for W (out, in) in H, output
/// features split over `threads` threads in blocks of at least 16.
template <class H>
void linear_16bit(const float* x, const H* W, const float* bias, float* y, index_t rows, index_t in, index_t out,
                  index_t ldx, index_t ldy, int threads) {
  using Stride = Eigen::OuterStride<>;
  const index_t per = std::max<index_t>(16, (out + threads - 1) / std::max(threads, 1));
  const index_t blocks = (out + per - 1) / per;
  ::ssm::cpu::parallel_for(blocks, threads, [&](index_t task) {
    const index_t j0 = task * per, j1 = std::min(out, j0 + per);
    if (rows < kPanelRows) {
      gemv_16bit<H>(x, ldx, W, in, j0, j1, y, ldy, rows);
    } else {
      Eigen::Map<const RowMatrix<float>, 0, Stride> X(x, rows, in, Stride(ldx));  // (rows, in)
      const index_t pw = std::clamp<index_t>(kPanelElements / std::max<index_t>(in, 1) / 16 * 16, 16, 256);
      std::vector<float> panel(static_cast<std::size_t>(std::min(pw, j1 - j0) * in));  // (≤ pw, in) f32
      for (index_t p0 = j0; p0 < j1; p0 += pw) {
        const index_t c = std::min(pw, j1 - p0);
        ::ssm::cpu::load_row(W + p0 * in, c * in, panel.data());
        Eigen::Map<RowMatrix<float>, 0, Stride> Y(y + p0, rows, c, Stride(ldy));  // (rows, c)
        Y.noalias() = X * ConstMatrixMap<float>(panel.data(), c, in).transpose();
      }
    }
    if (bias != nullptr)
      for (index_t r = 0; r < rows; ++r)
        for (index_t j = j0; j < j1; ++j) y[r * ldy + j] += bias[j];
  });
}

}  // namespace detail

inline void WeightMatrix::to_f32(index_t i0, index_t n, float* dst) const {
  switch (dtype()) {
    case DType::f32: std::copy_n(f32() + i0, n, dst); break;
    case DType::f16: ::ssm::cpu::load_row(static_cast<const half*>(data()) + i0, n, dst); break;
    case DType::bf16: ::ssm::cpu::load_row(static_cast<const bfloat16*>(data()) + i0, n, dst); break;
    default: fail("WeightMatrix: unexpected dtype ", name(dtype()));
  }
}

/// y = x W^T (+ bias) with W a WeightMatrix (out, in) of any dtype: f32 goes to linear_forward (Eigen), f16 and
/// bf16 are converted on the fly (see the top of this file) with f32 products and sums. x: (rows, in) with row
/// stride ldx (default in), y: (rows, out) with row stride ldy (default out); output features split over
/// `threads` threads.
inline void linear_forward(const float* x, const WeightMatrix& W, const float* bias, float* y, index_t rows,
                           index_t ldx = -1, index_t ldy = -1, int threads = 1) {
  const index_t in = W.cols(), out = W.rows();
  if (W.dtype() == DType::f32) return linear_forward(x, W.f32(), bias, y, rows, in, out, ldx, ldy, threads);
  if (ldx < 0) ldx = in;
  if (ldy < 0) ldy = out;
  if (W.dtype() == DType::f16)
    detail::linear_16bit(x, static_cast<const half*>(W.data()), bias, y, rows, in, out, ldx, ldy, threads);
  else
    detail::linear_16bit(x, static_cast<const bfloat16*>(W.data()), bias, y, rows, in, out, ldx, ldy, threads);
}

/// y[r] = table[ids[r]] converted to f32. ids: (rows), table: (vocab, dim), y: (rows, dim). Throws on an id
/// outside [0, vocab).
template <class Id>
void embedding_forward(const Id* ids, const WeightMatrix& table, float* y, index_t rows) {
  const index_t vocab = table.rows(), dim = table.cols();
  for (index_t r = 0; r < rows; ++r) {
    const auto id = static_cast<std::int64_t>(ids[r]);
    SSM_CHECK(id >= 0 && id < vocab, "embedding: token id ", id, " at position ", r, " is outside [0, ", vocab, ")");
    table.to_f32(id * dim, dim, y + r * dim);
  }
}

}  // namespace ssm::layers
