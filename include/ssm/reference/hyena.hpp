// Reference Hyena recurrence (docs/hyena.md; the formulas in core/params/hyena.hpp): per batch row and channel, the
// direct O(l²) causal convolutions in double, every intermediate w_o kept; forward and backward. The oracle the FFT
// path is tested against; its backward is checked against central differences.
#pragma once

#include <cstdint>
#include <vector>

#include "ssm/core/params/hyena.hpp"
#include "ssm/reference/elements.hpp"

namespace ssm::reference {

namespace hyena_detail {

/// Channel c of batch row bi: the gates x_i (N, l), v (l), and after the forward the series w_o (N, l) and w'_o
/// (N − 1, l) (w_{N−1} last).
struct Series {
  std::vector<std::vector<double>> x, w, wp;
};

inline Series forward_channel(const HyenaParams& p, std::int64_t bi, std::int64_t c) {
  const std::int64_t N = p.order, l = p.seqlen, L = p.filter_len, d = p.channels;
  Series s;
  s.x.assign(static_cast<std::size_t>(N), std::vector<double>(static_cast<std::size_t>(l)));
  s.w.assign(static_cast<std::size_t>(N), std::vector<double>(static_cast<std::size_t>(l)));
  s.wp.assign(static_cast<std::size_t>(N > 1 ? N - 1 : 0), std::vector<double>(static_cast<std::size_t>(l)));
  for (std::int64_t t = 0; t < l; ++t) {
    for (std::int64_t i = 0; i < N; ++i) s.x[i][t] = load_real(p.x[i], p.dtype, p.at(p.x_strides[i], bi, t) + c);
    s.w[0][t] = load_real(p.v, p.dtype, p.at(p.v_strides, bi, t) + c);
  }
  for (std::int64_t o = 0; o + 1 < N; ++o) {
    const double D = load_real(p.bias, p.dtype, o * d + c);
    for (std::int64_t t = 0; t < l; ++t) s.wp[o][t] = s.w[o][t] * s.x[N - 1 - o][t];
    for (std::int64_t t = 0; t < l; ++t) {
      double acc = D * s.wp[o][t];
      for (std::int64_t tau = 0; tau <= t; ++tau) acc += load_real(p.h, p.dtype, (o * d + c) * L + tau) * s.wp[o][t - tau];
      s.w[o + 1][t] = acc;
    }
  }
  return s;
}

}  // namespace hyena_detail

inline void hyena_forward(const HyenaParams& p) {
  const std::int64_t N = p.order;
  for (std::int64_t bi = 0; bi < p.batch; ++bi)
    for (std::int64_t c = 0; c < p.channels; ++c) {
      const hyena_detail::Series s = hyena_detail::forward_channel(p, bi, c);
      for (std::int64_t t = 0; t < p.seqlen; ++t)
        store_real(p.out, p.dtype, p.at(p.out_strides, bi, t) + c, s.w[N - 1][t] * s.x[0][t]);
    }
}

inline void hyena_backward(const HyenaParams& p, const HyenaGradParams& g) {
  const std::int64_t N = p.order, l = p.seqlen, L = p.filter_len, d = p.channels, b = p.batch;
  std::vector<double> gh(static_cast<std::size_t>((N - 1) * d * L), 0.0), gD(static_cast<std::size_t>((N - 1) * d), 0.0);
  std::vector<double> gw(static_cast<std::size_t>(l)), gwp(static_cast<std::size_t>(l));
  auto put = [&](void* dst, std::int64_t i, double v) {
    if (dst) store_real(dst, p.dtype, i, v);
  };
  for (std::int64_t bi = 0; bi < b; ++bi)
    for (std::int64_t c = 0; c < d; ++c) {
      const hyena_detail::Series s = hyena_detail::forward_channel(p, bi, c);
      auto row = [&](std::int64_t t) { return (bi * l + t) * d + c; };  // contiguous (b, l, d)
      for (std::int64_t t = 0; t < l; ++t) {
        const double gy = load_real(g.grad_out, p.dtype, row(t));
        gw[t] = gy * s.x[0][t];
        put(g.grad_x, row(t), gy * s.w[N - 1][t]);  // ḡx_0
      }
      for (std::int64_t o = N - 2; o >= 0; --o) {
        const double D = load_real(p.bias, p.dtype, o * d + c);
        for (std::int64_t t = 0; t < l; ++t) {
          double acc = D * gw[t];
          for (std::int64_t u = t; u < l; ++u) acc += load_real(p.h, p.dtype, (o * d + c) * L + (u - t)) * gw[u];
          gwp[t] = acc;
          gD[o * d + c] += gw[t] * s.wp[o][t];
        }
        for (std::int64_t tau = 0; tau < l; ++tau) {
          double acc = 0;
          for (std::int64_t t = tau; t < l; ++t) acc += gw[t] * s.wp[o][t - tau];
          gh[(o * d + c) * L + tau] += acc;
        }
        const std::int64_t i = N - 1 - o;
        for (std::int64_t t = 0; t < l; ++t) {
          put(g.grad_x, i * b * l * d + row(t), gwp[t] * s.w[o][t]);
          gw[t] = gwp[t] * s.x[i][t];
        }
      }
      for (std::int64_t t = 0; t < l; ++t) put(g.grad_v, row(t), gw[t]);
    }
  for (std::size_t i = 0; i < gh.size(); ++i) put(g.grad_h, static_cast<std::int64_t>(i), gh[i]);
  for (std::size_t i = 0; i < gD.size(); ++i) put(g.grad_bias, static_cast<std::int64_t>(i), gD[i]);
}

}  // namespace ssm::reference
