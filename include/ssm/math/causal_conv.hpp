// Causal convolution y_t = Σ_{j<=t} K_j x_{t-j}, t = 0..l-1 (the S4 convolutional view, docs/math.md §1 and §4.3):
// a direct O(l²) reference and the FFT form (zero-pad x and K to a smooth size >= 2l - 1, multiply the real
// FFTs, invert, keep the first l), and `causal_conv` which picks one by length. One channel on host pointers: the op
// over tensors (batch rows and channels, the skip term, GELU, CUDA) is ssm::long_conv (ops/long_conv.hpp).
#pragma once

#include <algorithm>
#include <complex>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/math/fft.hpp"

namespace ssm {

/// Up to this length the direct convolution is used.  Measured crossover (bench_s4_conv --benchmark_filter=Cross,
/// float, one channel, shared 2-core box, CPU time): direct 2.5 us vs FFT 3.6 us at l = 128, direct 3.9 us vs FFT
/// 3.2 us at l = 160.
inline constexpr long kCausalConvDirectMaxLength = 128;

namespace detail {
inline void check_conv(const char* op, const void* x, const void* K, const void* y, long l) {
  SSM_CHECK(l >= 1, op, ": argument 'l' (sequence length) must be >= 1, got ", l);
  SSM_CHECK(x != nullptr, op, ": argument 'x' is null");
  SSM_CHECK(K != nullptr, op, ": argument 'K' is null");
  SSM_CHECK(y != nullptr, op, ": argument 'y' is null");
}
}  // namespace detail

using fft::smooth_fft_size;

/// Direct causal convolution, the reference.  x: (l), K: (l), y: (l) (y may not alias x or K).
template <class T>
void causal_conv_direct(const T* x, const T* K, T* y, long l) {
  detail::check_conv("causal_conv_direct", x, K, y, l);
  for (long t = 0; t < l; ++t) {
    T acc = 0;
    for (long j = 0; j <= t; ++j) acc += K[j] * x[t - j];
    y[t] = acc;
  }
}

/// Causal convolution by zero-padded real FFT, O(l log l).  x: (l), K: (l), y: (l) (y may alias x).
/// `plan` is an optional reusable FFT object (its twiddle cache is kept between calls of one size).
template <class T>
void causal_conv_fft(const T* x, const T* K, T* y, long l, fft::RealFFT<T>* plan = nullptr) {
  detail::check_conv("causal_conv_fft", x, K, y, l);
  fft::RealFFT<T> local;
  fft::RealFFT<T>& f = plan ? *plan : local;
  const long n = smooth_fft_size(2 * l - 1);  // no wrap-around: the linear convolution has 2l - 1 terms
  std::vector<T> xp(n, T(0)), Kp(n, T(0));    // (n)
  std::copy(x, x + l, xp.begin());
  std::copy(K, K + l, Kp.begin());
  std::vector<std::complex<T>> X, KF;  // (n/2+1)
  f.rfft(xp, X);
  f.rfft(Kp, KF);
  for (size_t k = 0; k < X.size(); ++k) X[k] *= KF[k];
  f.irfft(X, xp, static_cast<int>(n));
  std::copy(xp.begin(), xp.begin() + l, y);
}

/// Causal convolution, direct for l <= kCausalConvDirectMaxLength, FFT above.  x: (l), K: (l), y: (l).
template <class T>
void causal_conv(const T* x, const T* K, T* y, long l, fft::RealFFT<T>* plan = nullptr) {
  if (l <= kCausalConvDirectMaxLength) {
    std::vector<T> tmp(static_cast<size_t>(std::max(l, 1L)));  // (l)  allows y to alias x
    causal_conv_direct(x, K, tmp.data(), l);
    std::copy(tmp.begin(), tmp.begin() + l, y);
  } else {
    causal_conv_fft(x, K, y, l, plan);
  }
}

}  // namespace ssm
