// One chunk of a chunked recurrence whose state's value columns evolve on their own (GLA, the delta rule), for the one
// value column a thread carries (kernels/gla.cuh, kernels/delta_rule.cuh):
//   y_t = Σ_i Qe_ti h_i + Σ_{u<=t} A_tu x_u   (t < len),   then   h_i ← dec_i h_i + Σ_t Ke_ti x_t,
// with h (dk) the column of the state entering the chunk, x (len) the column's inputs, A (len, len; row pitch Q) the
// chunk's masked scores, and Qe, Ke (len, dk) the queries and keys with their decays applied.
#pragma once

#include <cstdint>

#include "common.cuh"

namespace ssm::kernels {

/// The state's half of a chunk for one column: h_i ← dec_i h_i + Σ_t Ke_ti x_t (h at h[i hs], x at x[t xs], dec at
/// dec[i ds]). With Ke → Qe and x → ḡy it is also the backward's: the gradient of the state entering a chunk from the
/// gradient of the state it leaves.
__device__ __forceinline__ void column_pass(std::int64_t len, std::int64_t dk, const float* Ke, const float* dec,
                                            std::int64_t ds, const float* x, std::int64_t xs, float* h,
                                            std::int64_t hs) {
  for (std::int64_t i = 0; i < dk; ++i) {
    float acc = dec[i * ds] * h[i * hs];
    for (std::int64_t t = 0; t < len; ++t) acc += Ke[t * dk + i] * x[t * xs];
    h[i * hs] = acc;
  }
}

/// The chunk for one column: h at h[i hs], x at x[t xs], dec at dec[i ds] (ds = 0: one decay for every channel);
/// store(t, y_t) receives each output.
template <class Store>
__device__ __forceinline__ void chunk_column(std::int64_t len, std::int64_t dk, std::int64_t Q, const float* Qe,
                                             const float* A, const float* Ke, const float* dec, std::int64_t ds,
                                             const float* x, std::int64_t xs, float* h, std::int64_t hs,
                                             Store&& store) {
  for (std::int64_t t = 0; t < len; ++t) {
    float acc = 0.0f;
    for (std::int64_t i = 0; i < dk; ++i) acc += Qe[t * dk + i] * h[i * hs];
    for (std::int64_t u = 0; u <= t; ++u) acc += A[t * Q + u] * x[u * xs];
    store(t, acc);
  }
  column_pass(len, dk, Ke, dec, ds, x, xs, h, hs);
}

}  // namespace ssm::kernels
