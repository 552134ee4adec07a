// The matrix-product flops of the linear-attention family's chunked forwards, the count bench_linear_attention divides
// by its best time for flops_per_s and gemm_fraction (bench/gemm_rate.hpp), as bench/ssd_flops.hpp does for SSD. Per
// head and chunk of q steps (the last one may be shorter), 2 flops per multiply-add, a product whose result is used
// only on or below the diagonal counted as that triangle; the element-wise passes (gates, exponents, layer norms) are
// not counted. The counts are of each algorithm's products as docs/<mixer>.md writes them.
#pragma once

#include <algorithm>
#include <cstdint>

namespace mixer_flops {

/// Σ over the chunks of f(q), q the chunk's length, for a sequence of l steps in chunks of Q.
template <class F>
double over_chunks(std::int64_t l, std::int64_t Q, F&& f) {
  double sum = 0;
  for (std::int64_t t0 = 0; t0 < l; t0 += Q) sum += f(static_cast<double>(std::min(Q, l - t0)));
  return sum;
}

/// Linear attention, retention and GLA: the chunk's state read Q̂ S and update K̂ᵀ V (2 q dk dv each), the masked
/// scores Q̂K̂ᵀ and their product with V (q (q + 1) dk and q (q + 1) dv); dv + 1 columns with the normalizer.
inline double linear_attention(std::int64_t b, std::int64_t l, std::int64_t h, std::int64_t dk, std::int64_t dv,
                               std::int64_t Q) {
  const double k = static_cast<double>(dk), v = static_cast<double>(dv);
  return static_cast<double>(b * h) *
         over_chunks(l, Q, [&](double q) { return 4 * q * k * v + q * (q + 1) * (k + v); });
}

/// DeltaNet / Gated DeltaNet, the WY / UT chunk: A = strictly-lower(K̂K̂ᵀ) (q (q − 1) dk), the forward substitution for
/// [Ũ | W] (q (q − 1) (dv + dk)), U = Ũ − W S_in, the state read Q̂ S_in and the update K̂ᵀ U (2 q dk dv each), the
/// masked scores Q̂K̂ᵀ and their product with U (q (q + 1) (dk + dv)).
inline double delta_rule(std::int64_t b, std::int64_t l, std::int64_t h, std::int64_t dk, std::int64_t dv,
                         std::int64_t Q) {
  const double k = static_cast<double>(dk), v = static_cast<double>(dv);
  return static_cast<double>(b * h) * over_chunks(l, Q, [&](double q) {
           return 6 * q * k * v + q * (q - 1) * k + q * (q - 1) * (k + v) + q * (q + 1) * (k + v);
         });
}

/// RWKV-7's chunk (docs/rwkv7.md "The chunked form"): the four decayed scores Mqk, Mqb (on and below the diagonal) and
/// Lak, Lab (below it) over dk; Lak V and the solve with (I − Lab), q (q − 1) dv each; Mqb U and Mqk V, q (q + 1) dv
/// each; the reads of S_0 by A and Q and the state's updates by Bᵀ U and Kᵀ V, 2 q dk dv each.
inline double rwkv7(std::int64_t b, std::int64_t l, std::int64_t h, std::int64_t dk, std::int64_t dv, std::int64_t Q) {
  const double k = static_cast<double>(dk), v = static_cast<double>(dv);
  return static_cast<double>(b * h) * over_chunks(l, Q, [&](double q) {
           return 8 * q * k * v + 2 * q * (q + 1) * k + 2 * q * (q - 1) * k + 2 * q * (q - 1) * v + 2 * q * (q + 1) * v;
         });
}

/// TTT-Linear's dual form per mini-batch of n tokens (a fresh start: mini-batches of m from the first token), the
/// state Ŵ (d + 1, d): K̂Ŵ′, Q̂Ŵ′ and the pending sum's K̂ᵀE (2 n (d + 1) d each), the masked Q̂K̂ᵀ (n (n + 1) (d + 1))
/// and its product with E (n (n + 1) d).
inline double ttt_dual(std::int64_t b, std::int64_t l, std::int64_t h, std::int64_t d, std::int64_t m) {
  const double e = static_cast<double>(d);
  return static_cast<double>(b * h) *
         over_chunks(l, m, [&](double n) { return 6 * n * (e + 1) * e + n * (n + 1) * (e + 1) + n * (n + 1) * e; });
}

}  // namespace mixer_flops
