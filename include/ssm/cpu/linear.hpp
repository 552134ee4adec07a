// The fast CPU path of the linear op (ops/linear.hpp): y (rows, out) = x (rows, in) Wᵀ + bias, W (out, in).
//   - W in the activation dtype (f32, f64): Eigen's GEMM, output features split in column blocks over the threads
//     (Eigen's GEMM is single-threaded without OpenMP); f32 with few rows (decoding) by the gemv tiles below,
//     which stream W with prefetching (bench_mamba, Mamba-130m shape, f32 decode on 1 thread, AVX2: 25.3 -> 29.9
//     tokens/s against Eigen's matrix-vector product); f64 with one row by Eigen's matrix-vector product.
//   - W in f16 or bf16 with f32 activations, converted to f32 on the fly (f32 products and sums):
//       few rows (decoding, rows < kPanelRows): each weight row is streamed once and converted in registers
//       (cpu::load_f32, cpu/convert.hpp), accumulating 2 rows x 4 output features (one row: 8) at once in f32
//       vectors;
//       many rows (prefill): a panel of up to 256 output features (about 1 MiB of W in f32) is converted to f32 once
//       and multiplied with every row by Eigen's GEMM.
//     AVX-512 BF16's vdpbf16ps is not used: it would round x to bf16 too.
#pragma once

#include "ssm/core/macros.hpp"
#include "ssm/core/eigen.hpp"
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/index.hpp"
#include "ssm/core/params/dense.hpp"
#include "ssm/cpu/convert.hpp"
#include "ssm/cpu/simd.hpp"
#include "ssm/cpu/threads.hpp"

namespace ssm::cpu {

namespace linear_detail {

template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Stride = Eigen::OuterStride<>;

namespace simd = ::ssm::cpu::simd;
inline constexpr int kW = simd::lanes<float>;

/// y[r, j .. j + F) = x[r, :] W[j .. j + F, :]^T for the R rows of x (row stride ldx) and y (row stride ldy); W
/// (·, in) row-major in H (float, ssm::half or ssm::bfloat16). R x F f32 vector accumulators; each weight vector is
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
    for (int f = 0; f < F; ++f) wv[f] = load_f32(w + f * in + k);
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
void gemv_tiles(const float* x, index_t ldx, const H* W, index_t in, index_t j0, index_t j1, float* y, index_t ldy,
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

/// Rows below which a product counts as decoding (a matrix-vector product or a few).
inline constexpr index_t kFewRows = 8;

/// Output features per thread task, in blocks of at least 16 (a block of >= 16 columns keeps Eigen's kernels
/// efficient): many rows, one even share per thread; few rows (decoding: each call is short and a worker may join
/// late), four tasks per thread, so whoever is there takes the next and the shares even out.
inline index_t features_per_task(index_t out, int threads, index_t rows) {
  const index_t tasks = std::max(threads, 1) * (rows < kFewRows ? 4 : 1);
  return std::max<index_t>(16, (out + tasks - 1) / tasks);
}

}  // namespace linear_detail

/// Rows from which linear_16bit converts panels of W to f32 and uses Eigen's GEMM; below it, gemv tiles.
inline constexpr index_t kLinearPanelRows = linear_detail::kFewRows;
/// f32 elements of one converted panel at most (1 MiB). Each panel is one Eigen GEMM, which packs all of x again,
/// so a panel must be wide: x's packing costs 1/width of the product. 32 columns of the Mamba-130m shape's in_proj
/// made bf16 prefill 1.36x slower than f32; 256 columns, 1.07x (bench_mamba WeightsPrefill, 128 tokens, 1 thread).
inline constexpr index_t kLinearPanelElements = 256 * 1024;

namespace linear_detail {
/// Output features per converted panel for `in` input features: as many as kLinearPanelElements hold, in [16, 256]
/// (a multiple of 16).
inline index_t panel_features(index_t in) {
  return std::clamp<index_t>(kLinearPanelElements / std::max<index_t>(in, 1) / 16 * 16, 16, 256);
}
}  // namespace linear_detail

/// y = x W^T (+ bias), all in T (f32 or f64): Eigen's GEMM; for one or two rows (decoding) the gemv tiles (f32) or
/// Eigen's matrix-vector product (f64, one row).
/// x (rows, in) with row stride ldx, W (out, in) contiguous, bias (out) or null, y (rows, out) with row stride ldy.
template <class T>
void linear_eigen(const T* x, index_t ldx, const T* W, const T* bias, T* y, index_t ldy, index_t rows, index_t in,
                  index_t out, int threads) {
  using namespace linear_detail;
  Eigen::Map<const RowMatrix<T>, 0, Stride> X(x, rows, in, Stride(ldx));  // (rows, in)
  const index_t per = features_per_task(out, threads, rows);
  const index_t blocks = (out + per - 1) / per;
  parallel_for(blocks, threads, [&](index_t task) {
    const index_t j0 = task * per, c = std::min(per, out - j0);
    Eigen::Map<const RowMatrix<T>> Wm(W + j0 * in, c, in);                  // (c, in)
    Eigen::Map<RowMatrix<T>, 0, Stride> Y(y + j0, rows, c, Stride(ldy));  // (rows, c)
    if constexpr (std::is_same_v<T, float>) {
      if (rows <= 2) {  // one pass over W (the 2 x 4 and 1 x 8 tiles)
        gemv_tiles<float>(x, ldx, W, in, j0, j0 + c, y, ldy, rows);
        if (bias != nullptr) Y.rowwise() += Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(bias + j0, c);
        return;
      }
    }
    if (rows == 1) {
      // One token (decoding): a matrix-vector product.
      Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>> yv(y + j0, c);
      yv.noalias() = Wm * Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>(x, in);
    } else {
      Y.noalias() = X * Wm.transpose();
    }
    if (bias != nullptr) Y.rowwise() += Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(bias + j0, c);
  });
}

/// y (rows, out; row stride ldy) = x (rows, in; row stride ldx) W^T (+ bias) for W (out, in) in H (half or
/// bfloat16), f32 products and sums; output features split over `threads` threads in blocks of at least 16.
template <class H>
void linear_16bit(const float* x, index_t ldx, const H* W, const float* bias, float* y, index_t ldy, index_t rows,
                  index_t in, index_t out, int threads) {
  using namespace linear_detail;
  const index_t per = features_per_task(out, threads, rows);
  const index_t blocks = (out + per - 1) / per;
  parallel_for(blocks, threads, [&](index_t task) {
    const index_t j0 = task * per, j1 = std::min(out, j0 + per);
    if (rows < kLinearPanelRows) {
      gemv_tiles<H>(x, ldx, W, in, j0, j1, y, ldy, rows);
    } else {
      Eigen::Map<const RowMatrix<float>, 0, Stride> X(x, rows, in, Stride(ldx));  // (rows, in)
      const index_t pw = panel_features(in);
      std::vector<float> panel(static_cast<std::size_t>(std::min(pw, j1 - j0) * in));  // (≤ pw, in) f32
      for (index_t p0 = j0; p0 < j1; p0 += pw) {
        const index_t c = std::min(pw, j1 - p0);
        load_row(W + p0 * in, c * in, panel.data());
        Eigen::Map<RowMatrix<float>, 0, Stride> Y(y + p0, rows, c, Stride(ldy));  // (rows, c)
        Y.noalias() = X * Eigen::Map<const RowMatrix<float>>(panel.data(), c, in).transpose();
      }
    }
    if (bias != nullptr)
      for (index_t r = 0; r < rows; ++r)
        for (index_t j = j0; j < j1; ++j) y[r * ldy + j] += bias[j];
  });
}

/// The linear op's CPU path for a validated p on `threads` threads; returns the path name: "cpu-eigen" (W in
/// the activation dtype), "cpu-gemv-<f16|bf16>" (rows < kLinearPanelRows) or "cpu-panel-<f16|bf16>".
inline std::string linear_forward(const LinearParams& p, int threads) {
  const index_t rows = p.rows, in = p.in, out = p.out, ldx = p.x_row_stride, ldy = p.y_row_stride;
  if (p.dtype == DType::f64) {
    linear_eigen(static_cast<const double*>(p.x), ldx, static_cast<const double*>(p.weight),
                 static_cast<const double*>(p.bias), static_cast<double*>(p.y), ldy, rows, in, out, threads);
    return "cpu-eigen";
  }
  const auto* x = static_cast<const float*>(p.x);
  const auto* bias = static_cast<const float*>(p.bias);
  auto* y = static_cast<float*>(p.y);
  switch (p.weight_dtype) {
    case DType::f32:
      linear_eigen(x, ldx, static_cast<const float*>(p.weight), bias, y, ldy, rows, in, out, threads);
      return "cpu-eigen";
    case DType::f16:
      linear_16bit(x, ldx, static_cast<const half*>(p.weight), bias, y, ldy, rows, in, out, threads);
      break;
    case DType::bf16:
      linear_16bit(x, ldx, static_cast<const bfloat16*>(p.weight), bias, y, ldy, rows, in, out, threads);
      break;
    default: fail("linear: internal: weight dtype ", name(p.weight_dtype));
  }
  return std::string(rows < kLinearPanelRows ? "cpu-gemv-" : "cpu-panel-") + std::string(name(p.weight_dtype));
}

}  // namespace ssm::cpu

/// The linear layer's CPU products (f32 / f64 weights through Eigen, f16 / bf16 weights through the gemv tiles and
/// f32 panels), compiled once where SSM_EXTERN_INSTANCES is set (core/instances.hpp, src/instances/).
#define SSM_CPU_LINEAR_INSTANCES(PREFIX)                                                                              \
  PREFIX void ssm::cpu::linear_eigen<float>(const float*, ::ssm::index_t, const float*, const float*, float*,         \
                                            ::ssm::index_t, ::ssm::index_t, ::ssm::index_t, ::ssm::index_t, int);     \
  PREFIX void ssm::cpu::linear_eigen<double>(const double*, ::ssm::index_t, const double*, const double*, double*,    \
                                             ::ssm::index_t, ::ssm::index_t, ::ssm::index_t, ::ssm::index_t, int);    \
  PREFIX void ssm::cpu::linear_16bit<::ssm::half>(const float*, ::ssm::index_t, const ::ssm::half*, const float*,     \
                                                  float*, ::ssm::index_t, ::ssm::index_t, ::ssm::index_t,             \
                                                  ::ssm::index_t, int);                                               \
  PREFIX void ssm::cpu::linear_16bit<::ssm::bfloat16>(const float*, ::ssm::index_t, const ::ssm::bfloat16*,           \
                                                      const float*, float*, ::ssm::index_t, ::ssm::index_t,           \
                                                      ::ssm::index_t, ::ssm::index_t, int);
#if SSM_EXTERN_INSTANCES
SSM_CPU_LINEAR_INSTANCES(extern template)
#endif
