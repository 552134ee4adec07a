// Reference causal depthwise conv1d (docs/math.md §6.1; the channel-major layout of `causal_conv1d_fn`), forward
// and backward, as plain loops in double over contiguous row-major buffers: the oracle the conv1d op's CPU loops
// and CUDA kernels are tested against. Written from the formulas, independently of ops/causal_conv1d.hpp.
//
// With e the extended input of one (batch, channel) row, e = (h0[0], ..., h0[w-2], x[0], ..., x[l-1]) (h0 the
// initial state, zeros when absent):
//   pre_t   = bias + sum_k weight[k] e[t + k]            (t = 0 .. l-1, k = 0 .. w-1)
//   out_t   = silu(pre_t) or pre_t
//   final_j = e[l + j]                                   (j = 0 .. w-2: the last w - 1 inputs)
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "ssm/core/error.hpp"

namespace ssm::reference {

/// Sizes of one conv1d call: x, out (b, d, l); weight (d, w); bias (d); initial / final state (b, d, w - 1).
struct Conv1dDims {
  std::int64_t b = 1, d = 1, l = 1, w = 2;
  bool silu = true;
};

namespace conv1d_detail {

/// The extended input row e (l + w - 1) of (bi, ch).
inline std::vector<double> extended_row(const Conv1dDims& s, const std::vector<double>& x,
                                        const std::vector<double>* h0, std::int64_t bi, std::int64_t ch) {
  std::vector<double> e(static_cast<std::size_t>(s.l + s.w - 1), 0.0);
  const std::int64_t row = bi * s.d + ch;
  if (h0)
    for (std::int64_t j = 0; j < s.w - 1; ++j) e[static_cast<std::size_t>(j)] = (*h0)[static_cast<std::size_t>(row * (s.w - 1) + j)];
  for (std::int64_t t = 0; t < s.l; ++t) e[static_cast<std::size_t>(s.w - 1 + t)] = x[static_cast<std::size_t>(row * s.l + t)];
  return e;
}

inline double pre_activation(const Conv1dDims& s, const std::vector<double>& e, const std::vector<double>& weight,
                             const std::vector<double>* bias, std::int64_t ch, std::int64_t t) {
  double acc = bias ? (*bias)[static_cast<std::size_t>(ch)] : 0.0;
  for (std::int64_t k = 0; k < s.w; ++k)
    acc += weight[static_cast<std::size_t>(ch * s.w + k)] * e[static_cast<std::size_t>(t + k)];
  return acc;
}

}  // namespace conv1d_detail

/// Forward: writes out (b, d, l) and final_state (b, d, w - 1). bias / initial_state may be null.
inline void causal_conv1d_forward(const Conv1dDims& s, const std::vector<double>& x, const std::vector<double>& weight,
                                  const std::vector<double>* bias, const std::vector<double>* initial_state,
                                  std::vector<double>& out, std::vector<double>& final_state) {
  SSM_CHECK(s.w >= 2 && s.l >= 0, "reference::causal_conv1d_forward: need w >= 2 and l >= 0");
  out.assign(static_cast<std::size_t>(s.b * s.d * s.l), 0.0);
  final_state.assign(static_cast<std::size_t>(s.b * s.d * (s.w - 1)), 0.0);
  for (std::int64_t bi = 0; bi < s.b; ++bi)
    for (std::int64_t ch = 0; ch < s.d; ++ch) {
      const std::int64_t row = bi * s.d + ch;
      const std::vector<double> e = conv1d_detail::extended_row(s, x, initial_state, bi, ch);
      for (std::int64_t t = 0; t < s.l; ++t) {
        const double pre = conv1d_detail::pre_activation(s, e, weight, bias, ch, t);
        out[static_cast<std::size_t>(row * s.l + t)] = s.silu ? pre / (1.0 + std::exp(-pre)) : pre;
      }
      for (std::int64_t j = 0; j < s.w - 1; ++j)
        final_state[static_cast<std::size_t>(row * (s.w - 1) + j)] = e[static_cast<std::size_t>(s.l + j)];
    }
}

/// Backward of L(out, final_state) given grad_out (b, d, l) and grad_final_state (b, d, w - 1) or null (zero):
/// grad_x (b, d, l), grad_weight (d, w), grad_bias (d), grad_initial_state (b, d, w - 1), all overwritten.
inline void causal_conv1d_backward(const Conv1dDims& s, const std::vector<double>& x, const std::vector<double>& weight,
                                   const std::vector<double>* bias, const std::vector<double>* initial_state,
                                   const std::vector<double>& grad_out, const std::vector<double>* grad_final_state,
                                   std::vector<double>& grad_x, std::vector<double>& grad_weight,
                                   std::vector<double>& grad_bias, std::vector<double>& grad_initial_state) {
  const std::int64_t ext = s.l + s.w - 1;
  grad_x.assign(static_cast<std::size_t>(s.b * s.d * s.l), 0.0);
  grad_weight.assign(static_cast<std::size_t>(s.d * s.w), 0.0);
  grad_bias.assign(static_cast<std::size_t>(s.d), 0.0);
  grad_initial_state.assign(static_cast<std::size_t>(s.b * s.d * (s.w - 1)), 0.0);
  for (std::int64_t bi = 0; bi < s.b; ++bi)
    for (std::int64_t ch = 0; ch < s.d; ++ch) {
      const std::int64_t row = bi * s.d + ch;
      const std::vector<double> e = conv1d_detail::extended_row(s, x, initial_state, bi, ch);
      std::vector<double> grad_e(static_cast<std::size_t>(ext), 0.0);  // dL/de
      for (std::int64_t t = 0; t < s.l; ++t) {
        const double pre = conv1d_detail::pre_activation(s, e, weight, bias, ch, t);
        const double sig = 1.0 / (1.0 + std::exp(-pre));
        const double dact = s.silu ? sig * (1.0 + pre * (1.0 - sig)) : 1.0;  // d silu(pre) / d pre
        const double g = grad_out[static_cast<std::size_t>(row * s.l + t)] * dact;
        grad_bias[static_cast<std::size_t>(ch)] += g;
        for (std::int64_t k = 0; k < s.w; ++k) {
          grad_weight[static_cast<std::size_t>(ch * s.w + k)] += g * e[static_cast<std::size_t>(t + k)];
          grad_e[static_cast<std::size_t>(t + k)] += g * weight[static_cast<std::size_t>(ch * s.w + k)];
        }
      }
      if (grad_final_state)  // final_j = e[l + j]
        for (std::int64_t j = 0; j < s.w - 1; ++j)
          grad_e[static_cast<std::size_t>(s.l + j)] += (*grad_final_state)[static_cast<std::size_t>(row * (s.w - 1) + j)];
      for (std::int64_t t = 0; t < s.l; ++t)
        grad_x[static_cast<std::size_t>(row * s.l + t)] = grad_e[static_cast<std::size_t>(s.w - 1 + t)];
      for (std::int64_t j = 0; j < s.w - 1; ++j)
        grad_initial_state[static_cast<std::size_t>(row * (s.w - 1) + j)] = grad_e[static_cast<std::size_t>(j)];
    }
}

}  // namespace ssm::reference
