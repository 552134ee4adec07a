// Reference SSD (Mamba-2; docs/ssd.md, docs/math.md §8): the token loop of the recurrence in double, one state
// H (p, n) per sequence and head, forward and backward, over an SsdParams (core/params/ssd.hpp holds the formulas). Initial and final
// state; with cu_seqlens every packed sequence starts from its own initial state (zero without one). The oracle
// the chunked CPU path is tested against: no chunks, no threads, no GEMM.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "ssm/core/params/ssd.hpp"
#include "ssm/core/scalar.hpp"
#include "ssm/reference/elements.hpp"

namespace ssm::reference {

inline void ssd_forward(const SsdParams& p) {
  const DType it = p.input_dtype, pt = p.param_dtype;
  const std::int64_t h = p.nheads, hd = p.headdim, n = p.dstate, heads_per_group = p.nheads / p.ngroups;
  std::vector<double> H(static_cast<std::size_t>(hd * n));  // (p, n)
  for (std::int64_t s = 0; s < p.rows(); ++s) {
    const std::int64_t bi = p.seq_row(s);
    for (std::int64_t hh = 0; hh < h; ++hh) {
      const std::int64_t gi = hh / heads_per_group;
      const double A = load_real(p.A, pt, hh);
      const double bias = p.dt_bias ? load_real(p.dt_bias, pt, hh) : 0.0;
      const std::int64_t state_off = (s * h + hh) * hd * n;
      for (std::int64_t k = 0; k < hd * n; ++k)
        H[static_cast<std::size_t>(k)] = p.initial_state ? load_real(p.initial_state, pt, state_off + k) : 0.0;
      for (std::int64_t t = p.seq_begin(s); t < p.seq_end(s); ++t) {
        const double Delta =
            ssd_delta(load_real(p.dt, pt, bi * p.dt_batch_stride + t * p.dt_seq_stride + hh * p.dt_head_stride) + bias, p);
        const double decay = std::exp(Delta * A);
        const std::int64_t xo = bi * p.x_batch_stride + t * p.x_seq_stride + hh * p.x_head_stride;
        const std::int64_t Bo = bi * p.B_batch_stride + t * p.B_seq_stride + gi * p.B_group_stride;
        const std::int64_t Co = bi * p.C_batch_stride + t * p.C_seq_stride + gi * p.C_group_stride;
        for (std::int64_t i = 0; i < hd; ++i) {
          const double u = load_real(p.x, it, xo + i);
          double y = 0;
          for (std::int64_t k = 0; k < n; ++k) {
            double& hk = H[static_cast<std::size_t>(i * n + k)];
            hk = decay * hk + Delta * u * load_real(p.B, it, Bo + k);
            y += hk * load_real(p.C, it, Co + k);
          }
          if (p.D) y += load_real(p.D, pt, p.D_per_channel ? hh * hd + i : hh) * u;
          if (p.z) y *= scalar::silu(load_real(p.z, it, bi * p.z_batch_stride + t * p.z_seq_stride + hh * p.z_head_stride + i));
          store_real(p.out, it, bi * p.out_batch_stride + t * p.out_seq_stride + hh * p.out_head_stride + i, y);
        }
      }
      if (p.final_state)
        for (std::int64_t k = 0; k < hd * n; ++k) store_real(p.final_state, pt, state_off + k, H[static_cast<std::size_t>(k)]);
    }
  }
}

}  // namespace ssm::reference

namespace ssm::reference {

/// The backward of ssd_forward (docs/math.md §8.3) in double: the forward's states H_t recomputed and kept (l p n
/// doubles per sequence and head), then one reverse pass per sequence and head. Gradients of shared inputs (A, B,
/// C, D, dt_bias) are sums over the steps and heads that read them.
inline void ssd_backward(const SsdParams& p, const SsdGradParams& g) {
  const DType it = p.input_dtype, pt = p.param_dtype;
  const std::int64_t b = p.batch, l = p.seqlen, h = p.nheads, hd = p.headdim, n = p.dstate, ng = p.ngroups;
  const std::int64_t hpg = h / ng;
  // Accumulators in double for the shared inputs, stored at the end.
  std::vector<double> gA(static_cast<std::size_t>(h)), gbias(static_cast<std::size_t>(h)),
      gD(static_cast<std::size_t>(p.D_per_channel ? h * hd : h)), gB(static_cast<std::size_t>(b * l * ng * n)),
      gC(static_cast<std::size_t>(b * l * ng * n));
  auto at = [](std::vector<double>& v, std::int64_t i) -> double& { return v[static_cast<std::size_t>(i)]; };
  for (std::int64_t s = 0; s < p.rows(); ++s) {
    const std::int64_t bi = p.seq_row(s), t0 = p.seq_begin(s), t1 = p.seq_end(s), len = t1 - t0;
    for (std::int64_t hh = 0; hh < h; ++hh) {
      const std::int64_t gi = hh / hpg, state_off = (s * h + hh) * hd * n;
      const double A = load_real(p.A, pt, hh), bias = p.dt_bias ? load_real(p.dt_bias, pt, hh) : 0.0;
      auto xo = [&](std::int64_t t) { return bi * p.x_batch_stride + t * p.x_seq_stride + hh * p.x_head_stride; };
      auto Bo = [&](std::int64_t t) { return bi * p.B_batch_stride + t * p.B_seq_stride + gi * p.B_group_stride; };
      auto Co = [&](std::int64_t t) { return bi * p.C_batch_stride + t * p.C_seq_stride + gi * p.C_group_stride; };
      auto dense = [&](std::int64_t t) { return ((bi * l + t) * h + hh) * hd; };      // (b, l, h, p) contiguous
      auto dense_bc = [&](std::int64_t t) { return ((bi * l + t) * ng + gi) * n; };  // (b, l, g, n) contiguous
      auto raw = [&](std::int64_t t) {
        return load_real(p.dt, pt, bi * p.dt_batch_stride + t * p.dt_seq_stride + hh * p.dt_head_stride) + bias;
      };
      // forward: H_t for t in [t0 - 1, t1), kept
      std::vector<double> H(static_cast<std::size_t>((len + 1) * hd * n));
      for (std::int64_t k = 0; k < hd * n; ++k)
        H[static_cast<std::size_t>(k)] = p.initial_state ? load_real(p.initial_state, pt, state_off + k) : 0.0;
      for (std::int64_t t = t0; t < t1; ++t) {
        const double Delta = ssd_delta(raw(t), p), a = std::exp(Delta * A);
        const double* prev = H.data() + (t - t0) * hd * n;
        double* cur = H.data() + (t - t0 + 1) * hd * n;
        for (std::int64_t i = 0; i < hd; ++i)
          for (std::int64_t k = 0; k < n; ++k)
            cur[i * n + k] = a * prev[i * n + k] + Delta * load_real(p.x, it, xo(t) + i) * load_real(p.B, it, Bo(t) + k);
      }
      // reverse
      std::vector<double> dH(static_cast<std::size_t>(hd * n)), gy(static_cast<std::size_t>(hd));
      for (std::int64_t k = 0; k < hd * n; ++k)
        dH[static_cast<std::size_t>(k)] = g.grad_final_state ? load_real(g.grad_final_state, pt, state_off + k) : 0.0;
      for (std::int64_t t = t1 - 1; t >= t0; --t) {
        const double* Ht = H.data() + (t - t0 + 1) * hd * n;
        const double* Hp = H.data() + (t - t0) * hd * n;
        const double r = raw(t), Delta = ssd_delta(r, p), a = std::exp(Delta * A);
        double gDelta = 0, ga = 0;
        for (std::int64_t i = 0; i < hd; ++i) {
          const double u = load_real(p.x, it, xo(t) + i), go = load_real(g.grad_out, it, dense(t) + i);
          double y = 0;
          for (std::int64_t k = 0; k < n; ++k) y += Ht[i * n + k] * load_real(p.C, it, Co(t) + k);
          const double Dv = p.D ? load_real(p.D, pt, p.D_per_channel ? hh * hd + i : hh) : 0.0;
          y += Dv * u;
          double gyi = go;
          if (p.z) {
            const double z = load_real(p.z, it, bi * p.z_batch_stride + t * p.z_seq_stride + hh * p.z_head_stride + i);
            gyi = go * scalar::silu(z);
            if (g.grad_z) store_real(g.grad_z, it, dense(t) + i, go * y * scalar::silu_grad(z));
          }
          gy[static_cast<std::size_t>(i)] = gyi;
          if (p.D) at(gD, p.D_per_channel ? hh * hd + i : hh) += gyi * u;
        }
        for (std::int64_t i = 0; i < hd; ++i) {
          const double u = load_real(p.x, it, xo(t) + i), gyi = gy[static_cast<std::size_t>(i)];
          double gx = p.D ? load_real(p.D, pt, p.D_per_channel ? hh * hd + i : hh) * gyi : 0.0, dHB = 0;
          for (std::int64_t k = 0; k < n; ++k) {
            double& d = dH[static_cast<std::size_t>(i * n + k)];
            const double Ck = load_real(p.C, it, Co(t) + k), Bk = load_real(p.B, it, Bo(t) + k);
            at(gC, dense_bc(t) + k) += Ht[i * n + k] * gyi;
            d += gyi * Ck;                 // y_t = H_t C_t
            ga += d * Hp[i * n + k];       // H_t = a H_{t-1} + Δ u B
            dHB += d * Bk;
            at(gB, dense_bc(t) + k) += d * Delta * u;
          }
          gx += Delta * dHB;
          gDelta += u * dHB;
          if (g.grad_x) store_real(g.grad_x, it, dense(t) + i, gx);
        }
        for (std::int64_t k = 0; k < hd * n; ++k) dH[static_cast<std::size_t>(k)] *= a;
        gDelta += ga * a * A;
        at(gA, hh) += ga * a * Delta;
        const double graw = gDelta * ssd_delta_grad(r, p);
        if (g.grad_dt) store_real(g.grad_dt, pt, (bi * l + t) * h + hh, graw);
        at(gbias, hh) += graw;
      }
      if (g.grad_initial_state)
        for (std::int64_t k = 0; k < hd * n; ++k) store_real(g.grad_initial_state, pt, state_off + k, dH[static_cast<std::size_t>(k)]);
    }
  }
  auto store_all = [](void* dst, DType t, const std::vector<double>& v) {
    if (dst)
      for (std::size_t i = 0; i < v.size(); ++i) store_real(dst, t, static_cast<std::int64_t>(i), v[i]);
  };
  store_all(g.grad_A, pt, gA);
  if (p.dt_bias) store_all(g.grad_dt_bias, pt, gbias);
  if (p.D) store_all(g.grad_D, pt, gD);
  store_all(g.grad_B, it, gB);
  store_all(g.grad_C, it, gC);
}

}  // namespace ssm::reference
