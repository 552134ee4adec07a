// The CPU path of the one-token selective state update (ops/selective_state_update.hpp; mamba_ssm's
// selective_state_update): for each batch row, head i and channel c, with Δ = softplus(dt + dt_bias) (clamped),
//   h[i, c, :] = exp(Δ A) ⊙ h[i, c, :] + Δ B u,   y = C · h[i, c, :] + D u,   out = y silu(z),
// B and C those of head i's group, accumulating in T (f32 or f64). The Mamba block's decoding step (Mamba-1 form,
// A per channel and state) and the Mamba-2 block's (per_head form: one decay exp(Δ A) per head) run it once per token
// and layer.
//
// Everything runs in vectors, a block of kBlock channels at a time: Δ over the block's channels (simd::softplus, the
// scan's own), then each channel's state along n (the Mamba-1 form's exp(Δ A) per state through simd::exp), then
// out = (y + D u) silu(z) over the block's channels. A block's last partial vector goes through zero-padded copies,
// so a channel's result does not depend on where it falls in the block. (Scalar softplus and silu per channel, and
// the per-head form's scalar loop along n, were 9% of a Mamba-130m decode step with bf16 weights on one thread.)
#pragma once

#include <algorithm>
#include <cmath>

#include "ssm/core/index.hpp"
#include "ssm/core/params/selective_state_update.hpp"
#include "ssm/core/scalar.hpp"
#include "ssm/cpu/simd.hpp"

namespace ssm::cpu {

namespace state_update_detail {

template <class T>
using V = simd::Vec<T>;
template <class T>
inline constexpr int W = simd::lanes<T>;
/// Channels per block: the size of the on-stack Δ and y (a multiple of every W).
inline constexpr index_t kBlock = 64;

/// m ≤ W elements of `src` as a vector, zeros in the lanes past m (src may end at the m-th element).
template <class T>
SSM_FORCE_INLINE V<T> load_first(const T* src, index_t m) {
  if (m == W<T>) return simd::load(src);
  alignas(64) T tmp[W<T>] = {};
  std::copy_n(src, m, tmp);
  return simd::load(tmp);
}
template <class T>
SSM_FORCE_INLINE void store_first(T* dst, V<T> v, index_t m) {
  if (m == W<T>) return simd::store(dst, v);
  alignas(64) T tmp[W<T>];
  simd::store(tmp, v);
  std::copy_n(tmp, m, dst);
}

/// Δ = step_size(dt + dt_bias) of m channels (scalar::step_size in vectors: softplus, then the clamp).
template <class T>
void step_sizes(const SelectiveStateUpdateParams& p, const T* dt, const T* dt_bias, index_t m, T* Delta) {
  const V<T> lo = simd::broadcast(static_cast<T>(p.dt_min)), hi = simd::broadcast(static_cast<T>(p.dt_max));
  for (index_t c = 0; c < m; c += W<T>) {
    const index_t w = std::min<index_t>(W<T>, m - c);
    V<T> x = load_first(dt + c, w);
    if (dt_bias != nullptr) x += load_first(dt_bias + c, w);
    if (p.dt_softplus) x = simd::softplus<T>(x);
    if (p.has_dt_limit) x = simd::select<T>(x < lo, lo, simd::select<T>(x > hi, hi, x));  // NaN stays NaN
    simd::store(Delta + c, x);  // Delta has room for whole vectors
  }
}

/// Channel state hc (n): hc = decay ⊙ hc + du B with decay = exp(Δ A_c) per state (kPerState, the Mamba-1 form) or
/// the head's one decay; returns C · hc.
template <class T, bool kPerState>
SSM_FORCE_INLINE T update_channel(T* hc, const T* A_c, T Delta, T decay, T du, const T* B, const T* C, index_t n) {
  const V<T> Delta_v = simd::broadcast(Delta), decay_v = simd::broadcast(decay), du_v = simd::broadcast(du);
  V<T> yv{};
  index_t k = 0;
  for (; k + W<T> <= n; k += W<T>) {
    V<T> a = decay_v;
    if constexpr (kPerState) a = simd::exp<T>(Delta_v * simd::load(A_c + k));
    const V<T> h_new = simd::fma(a, simd::load(hc + k), du_v * simd::load(B + k));
    simd::store(hc + k, h_new);
    yv = simd::fma(simd::load(C + k), h_new, yv);
  }
  T y = simd::hsum<T>(yv);
  for (; k < n; ++k) {
    hc[k] = (kPerState ? std::exp(Delta * A_c[k]) : decay) * hc[k] + du * B[k];
    y += C[k] * hc[k];
  }
  return y;
}

}  // namespace state_update_detail

template <class T>
void selective_state_update_rows(const SelectiveStateUpdateParams& p) {
  namespace sd = state_update_detail;
  using V = sd::V<T>;
  constexpr index_t W = sd::W<T>, kBlock = sd::kBlock;
  const index_t d = p.dim, n = p.dstate, nh = p.nheads, heads_per_group = p.nheads / p.ngroups;
  const T* A = static_cast<const T*>(p.A);              // (h, d, n), or (h) per head
  const T* D = static_cast<const T*>(p.D);              // (h, d), (h) per head, or null
  const T* dt_bias = static_cast<const T*>(p.dt_bias);  // (h, d), (h) per head, or null
  alignas(64) T Delta[kBlock] = {}, y[kBlock] = {};     // the block's Δ (Mamba-1 form) and C · h
  for (index_t bi = 0; bi < p.batch; ++bi)
    for (index_t i = 0; i < nh; ++i) {
      const index_t gi = i / heads_per_group;
      const T* u = static_cast<const T*>(p.x) + bi * p.x_batch_stride + i * p.x_head_stride;           // (d)
      const T* B = static_cast<const T*>(p.B) + bi * p.B_batch_stride + gi * p.B_group_stride;         // (n)
      const T* C = static_cast<const T*>(p.C) + bi * p.C_batch_stride + gi * p.C_group_stride;         // (n)
      const T* z = p.z != nullptr ? static_cast<const T*>(p.z) + bi * p.z_batch_stride + i * p.z_head_stride
                                  : nullptr;                                                            // (d) or null
      T* h = static_cast<T*>(p.state) + (bi * nh + i) * d * n;                                          // (d, n)
      T* out = static_cast<T*>(p.out) + bi * p.out_batch_stride + i * p.out_head_stride;                // (d)
      const T* dt = static_cast<const T*>(p.dt) + p.dt_index(bi, i, 0);  // (d), or the head's one value per head
      // The per-head form: one Δ and one decay for the whole head.
      T Delta_head = 0, decay_head = 0;
      if (p.per_head) {
        Delta_head = p.delta<T>(dt[0] + (dt_bias != nullptr ? dt_bias[i] : T(0)));
        decay_head = std::exp(Delta_head * A[i]);
      }
      for (index_t c0 = 0; c0 < d; c0 += kBlock) {
        const index_t m = std::min(kBlock, d - c0);
        if (!p.per_head)
          sd::step_sizes<T>(p, dt + c0, dt_bias != nullptr ? dt_bias + p.param_index(i, c0) : nullptr, m, Delta);
        for (index_t j = 0, c = c0; j < m; ++j, ++c)
          y[j] = p.per_head ? sd::update_channel<T, false>(h + c * n, nullptr, Delta_head, decay_head,
                                                           Delta_head * u[c], B, C, n)
                            : sd::update_channel<T, true>(h + c * n, A + p.param_index(i, c) * n, Delta[j], T(0),
                                                          Delta[j] * u[c], B, C, n);
        // out = (y + D u) silu(z) over the block's channels.
        for (index_t j = 0; j < m; j += W) {
          const index_t w = std::min<index_t>(W, m - j), c = c0 + j;
          V o = simd::load(y + j);
          if (D != nullptr)
            o = simd::fma(p.per_head ? simd::broadcast(D[i]) : sd::load_first(D + p.param_index(i, c), w),
                          sd::load_first(u + c, w), o);
          if (z != nullptr) o *= simd::silu<T>(sd::load_first(z + c, w));
          sd::store_first(out + c, o, w);
        }
      }
    }
}

/// The op's CPU path for a validated p (dtype f32 or f64).
inline void selective_state_update(const SelectiveStateUpdateParams& p) {
  if (p.dtype == DType::f64) selective_state_update_rows<double>(p);
  else selective_state_update_rows<float>(p);
}

}  // namespace ssm::cpu
