// The CPU path of the Hyena recurrence (ops/hyena.hpp; the formulas in core/params/hyena.hpp): the long convolutions
// by zero-padded real FFTs of a smooth size n ≥ 2l − 1 (math/fft.hpp), each filter's spectrum computed once per call
// and shared by the batch. Threads take channels (a channel's filters, every batch row): the channels are independent,
// and a channel's filter gradients are summed over the batch inside its task, so nothing is shared. The backward
// recomputes the forward's series of its channel and runs the adjoint convolutions as convolutions of the reversed
// gradient: per order one forward transform and two inverse ones.
#pragma once

#include <algorithm>
#include <complex>
#include <cstdint>
#include <vector>

#include "ssm/core/params/hyena.hpp"
#include "ssm/cpu/threads.hpp"
#include "ssm/math/fft.hpp"

namespace ssm::cpu {

namespace hyena_detail {

template <class T>
using Spectrum = std::vector<std::complex<T>>;

/// One channel's transforms: the plan, the padded size n and a scratch buffer.
template <class T>
struct ChannelFft {
  fft::RealFFT<T> plan;
  std::int64_t l, n;
  std::vector<T> buf;  // (n)
  explicit ChannelFft(std::int64_t l_) : l(l_), n(fft::smooth_fft_size(2 * l_ - 1)), buf(static_cast<std::size_t>(n)) {}

  /// The spectrum of u (l) zero-padded to n; reversed: of u read backwards.
  Spectrum<T> spectrum(const T* u, bool reversed = false) {
    std::fill(buf.begin(), buf.end(), T(0));
    for (std::int64_t t = 0; t < l; ++t) buf[t] = reversed ? u[l - 1 - t] : u[t];
    Spectrum<T> S;
    plan.rfft(buf, S);
    return S;
  }
  /// out[t] = the first l values of irfft(A ⊙ B), read backwards when reversed.
  void product(const Spectrum<T>& A, const Spectrum<T>& B, T* out, bool reversed = false) {
    Spectrum<T> P(A.size());
    for (std::size_t k = 0; k < A.size(); ++k) P[k] = A[k] * B[k];
    plan.irfft(P, buf, static_cast<int>(n));
    for (std::int64_t t = 0; t < l; ++t) out[t] = reversed ? buf[l - 1 - t] : buf[t];
  }
};

/// Channel c of batch row bi: x (N, l), w (N, l) and w' (N − 1, l) with their spectra, after the forward.
template <class T>
struct Series {
  std::vector<std::vector<T>> x, w, wp;
  std::vector<Spectrum<T>> WP;
};

template <class T>
Series<T> forward_channel(const HyenaParams& p, std::int64_t bi, std::int64_t c, ChannelFft<T>& F,
                          const std::vector<Spectrum<T>>& Hs, bool keep) {
  const std::int64_t N = p.order, l = p.seqlen, d = p.channels;
  const T* bias = static_cast<const T*>(p.bias);
  Series<T> s;
  s.x.assign(static_cast<std::size_t>(N), std::vector<T>(static_cast<std::size_t>(l)));
  s.w.assign(static_cast<std::size_t>(keep ? N : 1), std::vector<T>(static_cast<std::size_t>(l)));
  for (std::int64_t i = 0; i < N; ++i) {
    const T* xi = static_cast<const T*>(p.x[i]) + c;
    for (std::int64_t t = 0; t < l; ++t) s.x[i][t] = xi[p.at(p.x_strides[i], bi, t)];
  }
  std::vector<T> w(static_cast<std::size_t>(l)), wp(w.size());
  const T* v = static_cast<const T*>(p.v) + c;
  for (std::int64_t t = 0; t < l; ++t) w[t] = v[p.at(p.v_strides, bi, t)];
  if (keep) s.w[0] = w;
  for (std::int64_t o = 0; o + 1 < N; ++o) {
    const T D = bias[o * d + c];
    for (std::int64_t t = 0; t < l; ++t) wp[t] = w[t] * s.x[N - 1 - o][t];
    Spectrum<T> WP = F.spectrum(wp.data());
    F.product(WP, Hs[o], w.data());
    for (std::int64_t t = 0; t < l; ++t) w[t] += D * wp[t];
    if (keep) s.wp.push_back(wp), s.WP.push_back(std::move(WP)), s.w[o + 1] = w;
  }
  if (!keep) s.w[0] = w;  // w_{N−1}
  return s;
}

/// The spectra of channel c's filters, the first l taps of each: (N − 1) of them.
template <class T>
std::vector<Spectrum<T>> filter_spectra(const HyenaParams& p, std::int64_t c, ChannelFft<T>& F) {
  std::vector<Spectrum<T>> Hs;
  for (std::int64_t o = 0; o + 1 < p.order; ++o)
    Hs.push_back(F.spectrum(static_cast<const T*>(p.h) + (o * p.channels + c) * p.filter_len));
  return Hs;
}

template <class T>
void forward(const HyenaParams& p, int threads) {
  const std::int64_t l = p.seqlen, d = p.channels;
  if (l == 0 || p.batch == 0) return;
  threads = cpu_threads(threads, p.batch * d * l * 16 * (p.order - 1));
  parallel_for(d, threads, [&](std::int64_t c) {
    ChannelFft<T> F(l);
    const std::vector<Spectrum<T>> Hs = filter_spectra(p, c, F);
    T* out = static_cast<T*>(p.out) + c;
    for (std::int64_t bi = 0; bi < p.batch; ++bi) {
      const Series<T> s = forward_channel(p, bi, c, F, Hs, false);
      for (std::int64_t t = 0; t < l; ++t) out[p.at(p.out_strides, bi, t)] = s.w[0][t] * s.x[0][t];
    }
  });
}

template <class T>
void backward(const HyenaParams& p, const HyenaGradParams& g, int threads) {
  const std::int64_t N = p.order, l = p.seqlen, d = p.channels, b = p.batch, L = p.filter_len;
  T* gh_all = static_cast<T*>(g.grad_h);
  T* gD_all = static_cast<T*>(g.grad_bias);
  if (gh_all) std::fill_n(gh_all, (N - 1) * d * L, T(0));
  if (gD_all) std::fill_n(gD_all, (N - 1) * d, T(0));
  if (l == 0 || b == 0) return;
  threads = cpu_threads(threads, b * d * l * 40 * (N - 1));
  const T* gy_all = static_cast<const T*>(g.grad_out);
  T* gx_all = static_cast<T*>(g.grad_x);
  T* gv_all = static_cast<T*>(g.grad_v);
  const T* bias = static_cast<const T*>(p.bias);
  parallel_for(d, threads, [&](std::int64_t c) {
    ChannelFft<T> F(l);
    const std::vector<Spectrum<T>> Hs = filter_spectra(p, c, F);
    std::vector<T> gw(static_cast<std::size_t>(l)), gwp(gw.size()), tmp(gw.size());
    auto row = [&](std::int64_t bi, std::int64_t t) { return (bi * l + t) * d + c; };  // contiguous (b, l, d)
    for (std::int64_t bi = 0; bi < b; ++bi) {
      const Series<T> s = forward_channel(p, bi, c, F, Hs, true);
      for (std::int64_t t = 0; t < l; ++t) {
        const T gy = gy_all[row(bi, t)];
        gw[t] = gy * s.x[0][t];
        if (gx_all) gx_all[row(bi, t)] = gy * s.w[N - 1][t];
      }
      for (std::int64_t o = N - 2; o >= 0; --o) {
        const Spectrum<T> R = F.spectrum(gw.data(), /*reversed=*/true);
        F.product(R, Hs[o], gwp.data(), /*reversed=*/true);  // Σ_{s≥t} h[s − t] ḡw[s]
        const T D = bias[o * d + c];
        T dD = 0;
        for (std::int64_t t = 0; t < l; ++t) gwp[t] += D * gw[t], dD += gw[t] * s.wp[o][t];
        if (gD_all) gD_all[o * d + c] += dD;
        if (gh_all) {
          F.product(R, s.WP[o], tmp.data(), /*reversed=*/true);  // Σ_t ḡw[t] w'[t − τ]
          T* gh = gh_all + (o * d + c) * L;
          for (std::int64_t tau = 0; tau < l; ++tau) gh[tau] += tmp[tau];
        }
        const std::int64_t i = N - 1 - o;
        for (std::int64_t t = 0; t < l; ++t) {
          if (gx_all) gx_all[i * b * l * d + row(bi, t)] = gwp[t] * s.w[o][t];
          gw[t] = gwp[t] * s.x[i][t];
        }
      }
      if (gv_all)
        for (std::int64_t t = 0; t < l; ++t) gv_all[row(bi, t)] = gw[t];
    }
  });
}

}  // namespace hyena_detail

/// The Hyena recurrence for a validated p (f32 or f64) on up to `threads` threads (0: by the work).
inline void hyena_forward(const HyenaParams& p, int threads) {
  if (p.dtype == DType::f64) hyena_detail::forward<double>(p, threads);
  else hyena_detail::forward<float>(p, threads);
}

inline void hyena_backward(const HyenaParams& p, const HyenaGradParams& g, int threads) {
  if (p.dtype == DType::f64) hyena_detail::backward<double>(p, g, threads);
  else hyena_detail::backward<float>(p, g, threads);
}

}  // namespace ssm::cpu
