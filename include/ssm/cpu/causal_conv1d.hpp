// The fast CPU path of the causal conv1d op (ops/causal_conv1d.hpp) for channel-last (time-major) activations:
// x (l, d) per sequence, rows of any stride >= d (e.g. the x half of the Mamba block's in_proj output), so that
// every tap is a vector multiply-add over the channels:
//     out[t, c] = act(bias[c] + Σ_{k<w} weight[c, k] · x[t − (w − 1) + k, c])
// with x[t < 0] read from a conv state (the last w − 1 inputs, oldest first, (w − 1, d)) or zero, act = SiLU or the
// identity (docs/math.md §6.1). Rows of different time ranges are independent, so threads split the time axis.
#pragma once

#include <algorithm>
#include <vector>

#include "ssm/core/index.hpp"
#include "ssm/cpu/simd.hpp"

namespace ssm::cpu {

/// y[i] = silu(x[i]) over n elements (in place allowed), vectorized (simd::silu: a few ulp from scalar::silu); a
/// ragged tail goes through the same vector code, so every element is computed alike.
template <class T>
void silu_forward(const T* x, T* y, index_t n) {
  constexpr int W = simd::lanes<T>;
  index_t i = 0;
  for (; i + W <= n; i += W) simd::store(y + i, simd::silu<T>(simd::load(x + i)));
  if (i < n) {
    T tail[W] = {};
    std::copy(x + i, x + n, tail);
    simd::store(tail, simd::silu<T>(simd::load(tail)));
    std::copy(tail, tail + (n - i), y + i);
  }
}

/// Arguments of the time-major conv1d for one sequence. Shapes:
///   x, out: (l, d)   weight: (d, w)   bias: (d) or null   state_in / state_out: (w − 1, d) or null
/// The conv state holds the last w − 1 inputs, oldest first.
template <class T>
struct Conv1dArgs {
  index_t l = 0, d = 0, w = 0;
  const T* weight = nullptr;  // (d, w)
  const T* bias = nullptr;    // (d)
  bool silu = false;          // fuse SiLU on the output
};

/// The input at time t (t may be negative, then read from the state; null state: zero).
template <class T>
inline T conv1d_input(const T* x, const T* state_in, index_t t, index_t c, index_t d, index_t w) {
  if (t >= 0) return x[t * d + c];
  return state_in != nullptr ? state_in[(w - 1 + t) * d + c] : T(0);
}

/// Output rows [t0, t1) of the forward (out: rows of stride ldo >= d; x: rows of stride ldx >= d, e.g. a column
/// slice of a wider buffer). Rows of different ranges are independent: threads may split the time axis.
template <class T>
void conv1d_forward_rows(const Conv1dArgs<T>& a, const T* x, index_t ldx, const T* state_in, T* out, index_t t0,
                         index_t t1, index_t ldo = -1) {
  const index_t d = a.d, w = a.w;
  if (ldo < 0) ldo = d;
  for (index_t t = t0; t < t1; ++t) {
    T* o = out + t * ldo;
    for (index_t c = 0; c < d; ++c) o[c] = a.bias != nullptr ? a.bias[c] : T(0);
    for (index_t k = 0; k < w; ++k) {
      const index_t s = t - (w - 1) + k;
      if (s >= 0) {
        const T* xs = x + s * ldx;
        for (index_t c = 0; c < d; ++c) o[c] += a.weight[c * w + k] * xs[c];
      } else if (state_in != nullptr) {
        const T* ss = state_in + (w - 1 + s) * d;
        for (index_t c = 0; c < d; ++c) o[c] += a.weight[c * w + k] * ss[c];
      }
    }
    if (a.silu) silu_forward(o, o, d);
  }
}

/// The conv state after a sequence x (l rows of stride ldx): its last w − 1 inputs, oldest first (from state_in
/// when l < w − 1). state_out may alias state_in.
template <class T>
void conv1d_next_state(const Conv1dArgs<T>& a, const T* x, index_t ldx, const T* state_in, T* state_out) {
  const index_t l = a.l, d = a.d, w = a.w;
  std::vector<T> next(static_cast<std::size_t>((w - 1) * d));  // (w - 1, d): a temporary, since it may alias
  for (index_t j = 0; j < w - 1; ++j) {
    const index_t t = l - (w - 1) + j;
    for (index_t c = 0; c < d; ++c)
      next[static_cast<std::size_t>(j * d + c)] = t >= 0 ? x[t * ldx + c] : conv1d_input(x, state_in, t, c, d, w);
  }
  std::copy(next.begin(), next.end(), state_out);
}

}  // namespace ssm::cpu
