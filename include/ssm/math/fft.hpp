// Real FFT helpers (rfft / irfft of any length) used by the S4 kernels (docs/math.md §4.2, step 4) and by the
// causal FFT convolution. Backend: Eigen's unsupported FFT module (kissfft, mixed radix, any length); kept
// behind these two functions so another FFT can be swapped in.
#pragma once

#include <algorithm>
#include <complex>
#include <vector>

#include "ssm/core/macros.hpp"
SSM_EXTERNAL_INCLUDE_BEGIN
#include <unsupported/Eigen/FFT>
SSM_EXTERNAL_INCLUDE_END

#include "ssm/core/error.hpp"

namespace ssm::fft {

/// Smallest n >= m of the form 2^a 3^b 5^c (kissfft is fast for these radices; a large prime factor would make
/// it quadratic).
inline long smooth_fft_size(long m) {
  for (long n = std::max(1L, m);; ++n) {
    long r = n;
    for (long f : {2L, 3L, 5L})
      while (r % f == 0) r /= f;
    if (r == 1) return n;
  }
}

/// A reusable real FFT plan for one length (kissfft caches twiddles per length inside the object).
template <class T>
class RealFFT {
 public:
  /// Forward real transform: x (n) → X (n/2 + 1), X_k = Σ_j x_j exp(-2πi jk/n).
  void rfft(const std::vector<T>& x, std::vector<std::complex<T>>& X) {  // x: (n), X: (n/2+1)
    SSM_CHECK(!x.empty(), "ssm::fft::rfft: argument 'x' must not be empty");
    if (x.size() == 1) {  // kissfft does not handle a length-1 transform
      X.assign(1, std::complex<T>(x[0], 0));
      return;
    }
    fft_.SetFlag(Eigen::FFT<T>::HalfSpectrum);
    fft_.fwd(X, x);
    X.resize(x.size() / 2 + 1);
  }
  /// Inverse real transform of a half spectrum X (n/2 + 1) to x (n) (scaled by 1/n, so irfft(rfft(x)) = x).
  void irfft(const std::vector<std::complex<T>>& X, std::vector<T>& x, int n) {  // X: (n/2+1), x: (n)
    SSM_CHECK(n >= 1, "ssm::fft::irfft: argument 'n' must be >= 1, got ", n);
    SSM_CHECK(static_cast<int>(X.size()) == n / 2 + 1, "ssm::fft::irfft: argument 'X' expected ", n / 2 + 1,
              " entries (n/2 + 1 for n = ", n, "), got ", X.size());
    x.resize(n);
    if (n == 1) {
      x[0] = X[0].real();
      return;
    }
    fft_.SetFlag(Eigen::FFT<T>::HalfSpectrum);
    fft_.inv(x.data(), X.data(), n);
  }

 private:
  Eigen::FFT<T> fft_;
};

/// x (n) → X (n/2 + 1).
template <class T>
std::vector<std::complex<T>> rfft(const std::vector<T>& x) {
  RealFFT<T> f;
  std::vector<std::complex<T>> X;  // (n/2+1)
  f.rfft(x, X);
  return X;
}

/// X (n/2 + 1) → x (n).
template <class T>
std::vector<T> irfft(const std::vector<std::complex<T>>& X, int n) {
  RealFFT<T> f;
  std::vector<T> x;  // (n)
  f.irfft(X, x, n);
  return x;
}

}  // namespace ssm::fft
