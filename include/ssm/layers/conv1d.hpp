// Causal depthwise conv1d (the short convolution of the Mamba block, docs/math.md §6.1): every channel c has
// its own kernel of width w ≥ 2, left-padded by w − 1 steps of an initial conv state (zeros when none):
//     out[t, c] = act(bias[c] + Σ_{k<w} weight[c, k] · x[t − (w − 1) + k, c])
// with x[t < 0] read from the state, act = identity or SiLU. Forward over a sequence (final conv
// state out), backward, and the one-token update for decoding. Time-major layout: x (l, d) per batch.
#pragma once

#include <algorithm>

#include "ssm/cpu/causal_conv1d.hpp"
#include "ssm/layers/basic.hpp"

namespace ssm::layers {

// Conv1dArgs, conv1d_input, conv1d_forward_rows and conv1d_next_state: the op's CPU path (cpu/causal_conv1d.hpp).
using cpu::Conv1dArgs;
using cpu::conv1d_forward_rows;
using cpu::conv1d_input;
using cpu::conv1d_next_state;

/// Forward over a sequence. out may not alias x. state_out (when not null) receives the last w − 1
/// inputs (from the state when l < w − 1); it may alias state_in. x has row stride ldx (default d).
template <class T>
void conv1d_forward(const Conv1dArgs<T>& a, const T* x, const T* state_in, T* out, T* state_out, index_t ldx = -1) {
  if (ldx < 0) ldx = a.d;
  conv1d_forward_rows(a, x, ldx, state_in, out, 0, a.l);
  if (state_out != nullptr) conv1d_next_state(a, x, ldx, state_in, state_out);
}

/// Backward of conv1d_forward. Overwrites grad_x (l, d) and grad_state_in ((w − 1, d), when not null);
/// accumulates grad_weight (d, w) and grad_bias (d) (when not null). grad_out: (l, d) w.r.t. out.
/// (The final state is a copy of inputs; its gradient grad_state_out, when given, adds to them.)
template <class T>
void conv1d_backward(const Conv1dArgs<T>& a, const T* x, const T* state_in, const T* grad_out,
                     const T* grad_state_out, T* grad_x, T* grad_state_in, T* grad_weight, T* grad_bias) {
  const index_t l = a.l, d = a.d, w = a.w;
  // Gradient with respect to the pre-activation.
  std::vector<T> g(grad_out, grad_out + l * d);  // (l, d)
  if (a.silu) {
    std::vector<T> pre(static_cast<std::size_t>(l * d));  // (l, d)
    Conv1dArgs<T> lin = a;
    lin.silu = false;
    conv1d_forward(lin, x, state_in, pre.data(), static_cast<T*>(nullptr));
    for (index_t i = 0; i < l * d; ++i) g[static_cast<std::size_t>(i)] *= silu_grad(pre[static_cast<std::size_t>(i)]);
  }
  std::fill_n(grad_x, l * d, T(0));
  if (grad_state_in != nullptr) std::fill_n(grad_state_in, (w - 1) * d, T(0));
  for (index_t t = 0; t < l; ++t) {
    const T* gt = g.data() + t * d;
    if (grad_bias != nullptr)
      for (index_t c = 0; c < d; ++c) grad_bias[c] += gt[c];
    for (index_t k = 0; k < w; ++k) {
      const index_t s = t - (w - 1) + k;
      for (index_t c = 0; c < d; ++c) {
        if (grad_weight != nullptr) grad_weight[c * w + k] += gt[c] * conv1d_input(x, state_in, s, c, d, w);
        if (s >= 0)
          grad_x[s * d + c] += a.weight[c * w + k] * gt[c];
        else if (grad_state_in != nullptr)
          grad_state_in[(w - 1 + s) * d + c] += a.weight[c * w + k] * gt[c];
      }
    }
  }
  if (grad_state_out != nullptr) {
    for (index_t j = 0; j < w - 1; ++j) {
      const index_t s = l - (w - 1) + j;
      for (index_t c = 0; c < d; ++c) {
        const T gs = grad_state_out[j * d + c];
        if (s >= 0)
          grad_x[s * d + c] += gs;
        else if (grad_state_in != nullptr)
          grad_state_in[(w - 1 + s) * d + c] += gs;
      }
    }
  }
}

/// One decoding step: x (d) is the new input; state ((w − 1, d), updated in place) the last w − 1
/// inputs; out (d). Equal to conv1d_forward over one token with state_in = state_out = state.
template <class T>
void conv1d_update(const Conv1dArgs<T>& a, const T* x, T* state, T* out) {
  const index_t d = a.d, w = a.w;
  for (index_t c = 0; c < d; ++c) {
    const T* wc = a.weight + c * w;
    T acc = a.bias != nullptr ? a.bias[c] : T(0);
    for (index_t k = 0; k < w - 1; ++k) acc += wc[k] * state[k * d + c];
    acc += wc[w - 1] * x[c];
    out[c] = acc;
  }
  if (a.silu) silu_forward(out, out, d);
  if (w > 1) {
    std::copy(state + d, state + (w - 1) * d, state);  // shift one step to the past
    std::copy(x, x + d, state + (w - 2) * d);
  }
}

}  // namespace ssm::layers
