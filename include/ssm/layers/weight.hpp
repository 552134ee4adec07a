// Weight matrices held in f32, f16 or bf16, and the linear layer and embedding lookup that read them with f32
// arithmetic. A 16-bit matrix costs half the memory of f32 (a bf16 checkpoint can be used at its file size, as
// a zero-copy view of the memory-mapped file); the products convert weights to f32 on the fly:
//   - few rows (decoding, rows < kPanelRows): each weight row is streamed once and converted in registers
//     (AVX-512: _mm512_cvtph_ps for f16, a 16-bit shift for bf16; AVX2+F16C: the 256-bit forms; SSE2: bf16
//     by unpacking, f16 through ssm::half), accumulating rows x 4 output features at once in f32 vectors;
//   - many rows (prefill): a panel of output features (an L2-sized block of W) is converted to f32 once and
//     multiplied with every row by Eigen's GEMM.
// Products and sums are f32 either way (AVX-512 BF16's vdpbf16ps is not used: it would round x to bf16 too).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
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
    check_dtype("WeightMatrix", t_.dtype());
    SSM_CHECK(reinterpret_cast<std::uintptr_t>(t_.data()) % size_of(t_.dtype()) == 0,
              "WeightMatrix: the data is not aligned for ", name(t_.dtype()));
  }
  /// `values` (rows x cols f32) stored as `dtype` (f32, f16 or bf16; rounded to nearest even).
  static WeightMatrix from_f32(const float* values, index_t rows, index_t cols, DType dtype = DType::f32) {
    check_dtype("WeightMatrix::from_f32", dtype);
    Tensor t = Tensor::empty({rows, cols}, dtype);
    const std::size_t n = static_cast<std::size_t>(rows * cols);
    if (dtype == DType::f32) std::copy_n(values, n, t.data_as<float>());
    if (dtype == DType::f16)
      for (std::size_t i = 0; i < n; ++i) t.data_as<half>()[i] = half(values[i]);
    if (dtype == DType::bf16)
      for (std::size_t i = 0; i < n; ++i) t.data_as<bfloat16>()[i] = bfloat16(values[i]);
    return WeightMatrix(std::move(t));
  }
  /// Throws ssm::Error unless dtype is one a WeightMatrix can hold (f32, f16, bf16).
  static void check_dtype(const char* op, DType dtype) {
    SSM_CHECK(dtype == DType::f32 || dtype == DType::f16 || dtype == DType::bf16, op, ": weight dtype ", name(dtype),
              " is not one of f32, f16, bf16");
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

/// lanes<float> 16-bit values (H = half or bfloat16) at p, any alignment, as f32.
template <class H>
SSM_FORCE_INLINE simd::Vec<float> load_16bit(const std::uint16_t* p) {
#if defined(__AVX512F__)  // maskz forms: the plain ones take an undefined vector, a false -Wuninitialized in GCC 12
  if constexpr (std::is_same_v<H, half>) {
    return _mm512_maskz_cvtph_ps(0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  } else {
    const __m512i v = _mm512_maskz_cvtepu16_epi32(0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
  }
#elif defined(__AVX2__)
  if constexpr (std::is_same_v<H, bfloat16>) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  }
#if defined(__F16C__)
  if constexpr (std::is_same_v<H, half>) return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#endif
#elif defined(__SSE2__)
  if constexpr (std::is_same_v<H, bfloat16>) {
    const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return _mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), v));
  }
#endif
  // f16 without a conversion instruction (AVX2 without F16C, SSE2) or no vectors: ssm::half's conversion.
  float tmp[kW];
  for (int i = 0; i < kW; ++i) tmp[i] = static_cast<float>(H::from_bits(p[i]));
  return simd::load(tmp);
}

template <class H>
inline float load_16bit_scalar(const std::uint16_t* p) {
  return static_cast<float>(H::from_bits(*p));
}

template <class H>
void convert_16bit(const std::uint16_t* src, index_t n, float* dst) {
  index_t i = 0;
  for (; i + kW <= n; i += kW) simd::store(dst + i, load_16bit<H>(src + i));
  for (; i < n; ++i) dst[i] = load_16bit_scalar<H>(src + i);
}

SSM_FORCE_INLINE float hsum(simd::Vec<float> v) {
  float s = 0;
  for (int i = 0; i < kW; ++i) s += v[i];
  return s;
}

/// y[r, j] = x[r, :] · W[j, :] for R rows from r0 and F features from j: R x F f32 vector accumulators, each
/// weight vector converted once and used for the R rows.
template <class H, int R, int F>
SSM_FORCE_INLINE void gemv_tile(const float* x, index_t ldx, const std::uint16_t* W, index_t in, index_t j, float* y,
                                index_t ldy, const std::uint16_t* next = nullptr) {
  simd::Vec<float> acc[R][F];
  for (int r = 0; r < R; ++r)
    for (int f = 0; f < F; ++f) acc[r][f] = simd::Vec<float>{};
  const std::uint16_t* w = W + j * in;
  index_t k = 0;
  for (; k + kW <= in; k += kW) {
    simd::Vec<float> wv[F];
    for (int f = 0; f < F; ++f) wv[f] = load_16bit<H>(w + f * in + k);
    // One row (decoding) is bound by streaming W: prefetch every other row of the next tile, if any, at this
    // column (bench_mamba's bf16 decode step, AVX-512, 1 thread: 27.2 -> 21.1 ms CPU; prefetching every row
    // once per cache line instead: 22.7 ms).
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
      float s = hsum(acc[r][f]);
      for (index_t kk = k; kk < in; ++kk) s += x[r * ldx + kk] * load_16bit_scalar<H>(w + f * in + kk);
      y[r * ldy + j + f] = s;
    }
}

/// Features [j0, j1) of y (rows, ·) = x W^T by gemv tiles: rows in pairs, features in fours (one row: eights).
template <class H>
void gemv_16bit(const float* x, index_t ldx, const std::uint16_t* W, index_t in, index_t j0, index_t j1, float* y,
                index_t ldy, index_t rows) {
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

template <class H>
void linear_16bit(const float* x, const std::uint16_t* W, const float* bias, float* y, index_t rows, index_t in,
                  index_t out, index_t ldx, index_t ldy, int threads) {
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
        convert_16bit<H>(W + p0 * in, c * in, panel.data());
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
  const auto* p = static_cast<const std::uint16_t*>(data());
  switch (dtype()) {
    case DType::f32: std::copy_n(f32() + i0, n, dst); break;
    case DType::f16: detail::convert_16bit<half>(p + i0, n, dst); break;
    case DType::bf16: detail::convert_16bit<bfloat16>(p + i0, n, dst); break;
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
  const auto* w = static_cast<const std::uint16_t*>(W.data());
  if (W.dtype() == DType::f16) detail::linear_16bit<half>(x, w, bias, y, rows, in, out, ldx, ldy, threads);
  else detail::linear_16bit<bfloat16>(x, w, bias, y, rows, in, out, ldx, ldy, threads);
}

/// y[r] = table[ids[r]] converted to f32. ids: (rows), table: (vocab, dim), y: (rows, dim). Throws on an id
/// outside [0, vocab).
template <class Id>
void embedding_forward(const Id* ids, const WeightMatrix& table, float* y, index_t rows) {
  const index_t vocab = table.rows(), dim = table.cols();
  for (index_t r = 0; r < rows; ++r) {
    const auto id = static_cast<std::int64_t>(ids[r]);
    SSM_CHECK(id >= 0 && id < vocab, "embedding: token id ", id, " at position ", r, " is outside [0, ", vocab,
              ")");
    table.to_f32(id * dim, dim, y + r * dim);
  }
}

}  // namespace ssm::layers
