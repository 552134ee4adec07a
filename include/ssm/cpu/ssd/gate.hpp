// The engine's gate (docs/ssd.md, docs/math.md §8.4): what the chunk stages need of the recurrence
// H_t = a_t H_{t−1} + s_t v_t k_tᵀ, per head and step, a value scale s_t and a log decay log a_t <= 0. The stages
// know nothing else of it; a Gate is an object with
//   steps(chunk, head, T* scale, double* log_decay)          the chunk's s_t and log a_t (len each);
//   prepare(parts)                                           before a backward: (chunks · heads) parts;
//   backward(chunk, head, part, scale, ḡs, ḡlog a)           the chunk's part of the gate's own gradients;
//   finish(chunks)                                           after it: those parts reduced in chunk order.
// SsdGate is Mamba-2's (s = Δ = step_size(dt + dt_bias), log a = Δ A); FixedDecayGate has s = 1 and a fixed
// log a = log γ_h per head (linear attention: γ = 1; RetNet's retention: γ_h < 1), with no gradient of its own.
#pragma once

#include <cstdint>
#include <vector>

#include "ssm/core/params/ssd.hpp"
#include "ssm/cpu/ssd/chunks.hpp"

namespace ssm::cpu::ssd {

/// Mamba-2's gate from SsdParams' dt, A, dt_bias, softplus and limit. backward: with ḡlog a_t = ρ_t,
///   ḡΔ_t += A ρ_t,   ḡA += Σ_t Δ_t ρ_t,   ḡdt_t = ḡΔ_t Δ'(dt_t + dt_bias) (ssd_delta_grad),   ḡdt_bias += Σ_t ḡdt_t.
template <class T>
struct SsdGate {
  const SsdParams& p;
  const SsdGradParams* g = nullptr;  // the backward's outputs (grad_dt, grad_A, grad_dt_bias)
  std::vector<double> gA_part, gbias_part;  // per (chunk, head)

  explicit SsdGate(const SsdParams& params, const SsdGradParams* grads = nullptr) : p(params), g(grads) {}

  T raw(const Chunk& ch, std::int64_t head, std::int64_t t) const {
    const T bias = p.dt_bias ? static_cast<const T*>(p.dt_bias)[head] : T(0);
    return static_cast<const T*>(p.dt)[ch.row * p.dt_batch_stride + (ch.t0 + t) * p.dt_seq_stride +
                                       head * p.dt_head_stride] + bias;
  }

  void steps(const Chunk& ch, std::int64_t head, T* Delta, double* log_decay) const {
    const double A = static_cast<const T*>(p.A)[head];
    for (std::int64_t t = 0; t < ch.len; ++t) {
      const T d = ssd_delta<T>(raw(ch, head, t), p);
      Delta[t] = d;
      log_decay[t] = static_cast<double>(d) * A;
    }
  }

  void prepare(std::int64_t parts) {
    gA_part.assign(static_cast<std::size_t>(parts), 0.0);
    gbias_part.assign(static_cast<std::size_t>(parts), 0.0);
  }

  void backward(const Chunk& ch, std::int64_t head, std::size_t part, const T* Delta, const double* gDelta,
                const double* glog) {
    const double A = static_cast<const T*>(p.A)[head];
    double ga = 0, gb = 0;
    for (std::int64_t t = ch.len - 1; t >= 0; --t) {
      ga += static_cast<double>(Delta[t]) * glog[t];
      const double gdt = (gDelta[t] + A * glog[t]) * static_cast<double>(ssd_delta_grad<T>(raw(ch, head, t), p));
      gb += gdt;
      if (g->grad_dt)
        static_cast<T*>(g->grad_dt)[(ch.row * p.seqlen + ch.t0 + t) * p.nheads + head] = static_cast<T>(gdt);
    }
    gA_part[part] = ga, gbias_part[part] = gb;
  }

  void finish(std::int64_t n_chunks) const {
    for (std::int64_t head = 0; head < p.nheads; ++head) {
      double ga = 0, gb = 0;
      for (std::int64_t c = 0; c < n_chunks; ++c) {
        const std::size_t ci = static_cast<std::size_t>(c * p.nheads + head);
        ga += gA_part[ci], gb += gbias_part[ci];
      }
      if (g->grad_A) static_cast<T*>(g->grad_A)[head] = static_cast<T>(ga);
      if (p.dt_bias && g->grad_dt_bias) static_cast<T*>(g->grad_dt_bias)[head] = static_cast<T>(gb);
    }
  }
};

/// A fixed decay per head: s_t = 1, log a_t = log_gamma[head] (<= 0; null: 0 for every head). No gradient.
template <class T>
struct FixedDecayGate {
  const double* log_gamma = nullptr;  // (h) or null

  void steps(const Chunk& ch, std::int64_t head, T* scale, double* log_decay) const {
    const double lg = log_gamma ? log_gamma[head] : 0.0;
    for (std::int64_t t = 0; t < ch.len; ++t) scale[t] = T(1), log_decay[t] = lg;
  }
  void prepare(std::int64_t) {}
  void backward(const Chunk&, std::int64_t, std::size_t, const T*, const double*, const double*) {}
  void finish(std::int64_t) const {}
};

}  // namespace ssm::cpu::ssd
