// Reference RWKV-4 WKV recurrence (docs/rwkv4.md; the formulas in core/params/rwkv4.hpp): the token loop in double,
// one scaled state (num, den, max) per sequence and channel, forward and backward (every state of a sequence kept).
// With cu_seqlens every packed sequence starts from its own initial state. The oracle the CPU loop and the step are
// tested against; its backward is checked against central differences.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "ssm/core/params/rwkv4.hpp"
#include "ssm/reference/elements.hpp"

namespace ssm::reference {

namespace rwkv4_detail {

/// The state entering a step: num, den, max.
struct State {
  double num = 0, den = 0, max = kRwkv4EmptyMax;
};

inline State load_state(const Rwkv4Params& p, std::int64_t s, std::int64_t c) {
  if (!p.initial_state) return {};
  const std::int64_t o = s * 3 * p.channels + c;
  return {load_real(p.initial_state, p.param_dtype, o), load_real(p.initial_state, p.param_dtype, o + p.channels),
          load_real(p.initial_state, p.param_dtype, o + 2 * p.channels)};
}

/// wkv_t of one channel from the state entering the step, and that state's successor.
inline double output(const State& x, double u, double k, double v) {
  const double q = std::max(x.max, u + k), e1 = std::exp(x.max - q), e2 = std::exp(u + k - q);
  return (e1 * x.num + e2 * v) / (e1 * x.den + e2);
}
inline State advance(const State& x, double w, double k, double v) {
  const double r = x.max + w, q = r > k ? r : k, f1 = std::exp(r - q), f2 = std::exp(k - q);
  return {f1 * x.num + f2 * v, f1 * x.den + f2, q};
}

}  // namespace rwkv4_detail

inline void rwkv4_forward(const Rwkv4Params& p) {
  namespace d = rwkv4_detail;
  const std::int64_t C = p.channels;
  for (std::int64_t s = 0; s < p.rows(); ++s) {
    const std::int64_t bi = p.seq_row(s);
    for (std::int64_t c = 0; c < C; ++c) {
      const double w = -std::exp(load_real(p.time_decay, p.param_dtype, c));
      const double u = load_real(p.time_first, p.param_dtype, c);
      d::State x = d::load_state(p, s, c);
      for (std::int64_t t = p.seq_begin(s); t < p.seq_end(s); ++t) {
        const double k = load_real(p.k, p.input_dtype, p.at(p.k_strides, bi, t) + c);
        const double v = load_real(p.v, p.input_dtype, p.at(p.v_strides, bi, t) + c);
        store_real(p.out, p.input_dtype, p.at(p.out_strides, bi, t) + c, d::output(x, u, k, v));
        x = d::advance(x, w, k, v);
      }
      if (p.final_state) {
        const std::int64_t o = s * 3 * C + c;
        store_real(p.final_state, p.param_dtype, o, x.num);
        store_real(p.final_state, p.param_dtype, o + C, x.den);
        store_real(p.final_state, p.param_dtype, o + 2 * C, x.max);
      }
    }
  }
}

/// The backward of rwkv4_forward (core/params/rwkv4.hpp), the forward's states recomputed and kept per sequence.
inline void rwkv4_backward(const Rwkv4Params& p, const Rwkv4GradParams& g) {
  namespace d = rwkv4_detail;
  const std::int64_t C = p.channels;
  std::vector<double> gw(static_cast<std::size_t>(C), 0.0), gu(gw.size(), 0.0);
  std::vector<d::State> states;
  for (std::int64_t s = 0; s < p.rows(); ++s) {
    const std::int64_t bi = p.seq_row(s), t0 = p.seq_begin(s), t1 = p.seq_end(s);
    for (std::int64_t c = 0; c < C; ++c) {
      const std::size_t cc = static_cast<std::size_t>(c);
      const double w = -std::exp(load_real(p.time_decay, p.param_dtype, c));
      const double u = load_real(p.time_first, p.param_dtype, c);
      auto k_at = [&](std::int64_t t) { return load_real(p.k, p.input_dtype, p.at(p.k_strides, bi, t) + c); };
      auto v_at = [&](std::int64_t t) { return load_real(p.v, p.input_dtype, p.at(p.v_strides, bi, t) + c); };
      states.assign(1, d::load_state(p, s, c));  // states[i]: entering step t0 + i
      for (std::int64_t t = t0; t < t1; ++t) states.push_back(d::advance(states.back(), w, k_at(t), v_at(t)));
      const d::State& last = states.back();
      double gn = 0, gd = 0, gp = 0;  // ḡnum, ḡden entering the step after t; the max chain's gradient
      if (g.grad_final_state) {
        const std::int64_t o = s * 3 * C + c;
        gn = load_real(g.grad_final_state, p.param_dtype, o);
        gd = load_real(g.grad_final_state, p.param_dtype, o + C);
        gp = load_real(g.grad_final_state, p.param_dtype, o + 2 * C) - gn * last.num - gd * last.den;
      }
      for (std::int64_t t = t1 - 1; t >= t0; --t) {
        const d::State& x = states[static_cast<std::size_t>(t - t0)];
        const double k = k_at(t), v = v_at(t);
        const double gy = load_real(g.grad_out, p.input_dtype, (bi * p.seqlen + t) * C + c);
        // the output
        const double q = std::max(x.max, u + k), e1 = std::exp(x.max - q), e2 = std::exp(u + k - q);
        const double D = e1 * x.den + e2, y = (e1 * x.num + e2 * v) / D;
        const double g_o = gy * e2 * (v - y) / D;  // ∂L/∂(u + k_t) through wkv_t
        // the update (its max branch as the forward took it)
        const double r = x.max + w, branch_r = r > k ? 1.0 : 0.0, pn = r > k ? r : k;
        const double f1 = std::exp(r - pn), f2 = std::exp(k - pn);
        const double gk = f2 * (v * gn + gd) + g_o + (1 - branch_r) * gp;
        const double gv = f2 * gn + gy * e2 / D;
        gw[cc] += f1 * (x.num * gn + x.den * gd) + branch_r * gp;
        gu[cc] += g_o;
        gp *= branch_r;
        const double gn_prev = f1 * gn + gy * e1 / D, gd_prev = f1 * gd - gy * y * e1 / D;
        gn = gn_prev, gd = gd_prev;
        const std::int64_t o = (bi * p.seqlen + t) * C + c;
        if (g.grad_k) store_real(g.grad_k, p.input_dtype, o, gk);
        if (g.grad_v) store_real(g.grad_v, p.input_dtype, o, gv);
      }
      if (g.grad_initial_state) {
        const d::State& x = states.front();
        const std::int64_t o = s * 3 * C + c;
        store_real(g.grad_initial_state, p.param_dtype, o, gn);
        store_real(g.grad_initial_state, p.param_dtype, o + C, gd);
        store_real(g.grad_initial_state, p.param_dtype, o + 2 * C, x.num * gn + x.den * gd + gp);
      }
    }
  }
  for (std::int64_t c = 0; c < C; ++c) {
    const double w = -std::exp(load_real(p.time_decay, p.param_dtype, c));
    if (g.grad_time_decay) store_real(g.grad_time_decay, p.param_dtype, c, w * gw[static_cast<std::size_t>(c)]);
    if (g.grad_time_first) store_real(g.grad_time_first, p.param_dtype, c, gu[static_cast<std::size_t>(c)]);
  }
}

}  // namespace ssm::reference
