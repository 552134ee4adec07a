// Time-major (l, k) <-> channel-major (k, l) copies of one sequence's activations, W x W blocks transposed in
// vector registers (simd::transpose), the ragged edges element by element. The ops that take channel-last views
// (the scan, whose CPU kernels run channel-major) copy through these.
#pragma once

#include <algorithm>

#include "ssm/core/index.hpp"
#include "ssm/cpu/simd.hpp"

namespace ssm::cpu {

/// dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols.
template <class T>
void transpose_tile(const T* src, index_t lds, T* dst, index_t ldd, index_t rows, index_t cols) {
  constexpr int W = simd::lanes<T>;
  index_t i = 0;
  for (; i + W <= rows; i += W) {
    index_t j = 0;
    for (; j + W <= cols; j += W) {
      simd::Vec<T> r[W];
      for (int k = 0; k < W; ++k) r[k] = simd::load(src + (i + k) * lds + j);
      simd::transpose<T>(r);
      for (int k = 0; k < W; ++k) simd::store(dst + (j + k) * ldd + i, r[k]);
    }
    for (; j < cols; ++j)
      for (index_t k = i; k < i + W; ++k) dst[j * ldd + k] = src[k * lds + j];
  }
  for (; i < rows; ++i)
    for (index_t j = 0; j < cols; ++j) dst[j * ldd + i] = src[i * lds + j];
}

/// Channels [c0, c1) of dst (k, l) (row stride l) = src (l, k) with row stride ld, tile by tile.
template <class T>
void to_channel_major(const T* src, index_t l, index_t ld, T* dst, index_t c0, index_t c1) {
  constexpr index_t kTile = 64;
  for (index_t t0 = 0; t0 < l; t0 += kTile)
    transpose_tile(src + t0 * ld + c0, ld, dst + c0 * l + t0, l, std::min(kTile, l - t0), c1 - c0);
}
/// Channels [c0, c1) of dst (l, k) with row stride ld = src (k, l) (row stride l), tile by tile.
template <class T>
void to_time_major(const T* src, index_t l, index_t ld, T* dst, index_t c0, index_t c1) {
  constexpr index_t kTile = 64;
  for (index_t t0 = 0; t0 < l; t0 += kTile)
    transpose_tile(src + c0 * l + t0, l, dst + t0 * ld + c0, ld, c1 - c0, std::min(kTile, l - t0));
}

/// Channel groups per transpose task (a multiple of the 32-wide tiles).
inline constexpr index_t kTransposeChannels = 64;

}  // namespace ssm::cpu
