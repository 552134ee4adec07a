// The backward of the gate (chunks.hpp's gate_sums; docs/math.md §8.4): the chunk's cumulative sums
// cs_t = A Σ_{k<=t} Δ_k give, with rc_k = Σ_{t>=k} ḡcs_t (a reverse cumulative sum),
//   ḡΔ_k += A rc_k,   ḡA += Σ_k Δ_k rc_k;
// then Δ = clamp(softplus(dt + dt_bias)) gives ḡdt_k = ḡΔ_k Δ'(dt_k + dt_bias) (ssd_delta_grad: zero where the limit
// clamps) and ḡdt_bias += ḡdt_k. The per-(chunk, head) sums of ḡA and ḡdt_bias are reduced by the caller in a fixed
// order, so the result does not depend on the threads.
#pragma once

#include <cstdint>

#include "ssm/cpu/ssd/chunks.hpp"

namespace ssm::cpu::ssd {

/// For one head and chunk: reads gDelta (ḡΔ from the stages) and dcs, stores ḡdt (contiguous (b, l, h)) when asked,
/// and returns this chunk's parts of ḡA and ḡdt_bias in gA, gbias.
template <class T>
void gate_backward(const SsdParams& p, const SsdGradParams& g, const Chunk& ch, std::int64_t head, const T* Delta,
                   const double* gDelta, const double* dcs, double& gA, double& gbias) {
  const T* dt = static_cast<const T*>(p.dt);
  const double A = static_cast<const T*>(p.A)[head];
  const T bias = p.dt_bias ? static_cast<const T*>(p.dt_bias)[head] : T(0);
  double rc = 0, ga = 0, gb = 0;
  for (std::int64_t t = ch.len - 1; t >= 0; --t) {
    rc += dcs[t];
    ga += static_cast<double>(Delta[t]) * rc;
    const T raw = dt[ch.row * p.dt_batch_stride + (ch.t0 + t) * p.dt_seq_stride + head * p.dt_head_stride] + bias;
    const double gdt = (gDelta[t] + A * rc) * static_cast<double>(ssd_delta_grad<T>(raw, p));
    gb += gdt;
    if (g.grad_dt) static_cast<T*>(g.grad_dt)[(ch.row * p.seqlen + ch.t0 + t) * p.nheads + head] = static_cast<T>(gdt);
  }
  gA = ga, gbias = gb;
}

}  // namespace ssm::cpu::ssd
