// Reference RWKV-7 generalized delta rule (docs/rwkv7.md; the formulas in core/params/rwkv7.hpp): the token loop in
// double, one state S (dk, dv) per sequence and head, forward and backward. With cu_seqlens every packed sequence
// starts from its own initial state. The oracle the CPU token loop and the step are tested against. Each step:
//   sa = S_{t−1}ᵀ a_t,   S_t = diag(w_t) S_{t−1} + b_t saᵀ + k_t v_tᵀ,   o_t = S_tᵀ (scale q_t).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "ssm/core/params/rwkv7.hpp"
#include "ssm/reference/elements.hpp"

namespace ssm::reference {

namespace rwkv7_detail {

/// One token's inputs of one head in double: scale q, k, v, w = exp(log_w), a, b.
struct Token {
  std::vector<double> q, k, v, w, a, b;

  void load(const Rwkv7Params& p, std::int64_t bi, std::int64_t t, std::int64_t hh) {
    const DType it = p.input_dtype;
    auto row = [&](const TokenRows<const void*>& src, std::int64_t n, std::vector<double>& dst) {
      dst.resize(static_cast<std::size_t>(n));
      for (std::int64_t i = 0; i < n; ++i) dst[static_cast<std::size_t>(i)] = load_real(src.data, it, src.at(bi, t, hh) + i);
    };
    row(p.q, p.dk, q), row(p.k, p.dk, k), row(p.v, p.dv, v), row(p.log_w, p.dk, w), row(p.a, p.dk, a), row(p.b, p.dk, b);
    for (double& x : q) x *= p.scale;
    for (double& x : w) x = std::exp(x);
  }
};

/// One step on S (dk, dv): sa = Sᵀ a (kept in sa), S ← diag(w) S + b saᵀ + k vᵀ.
inline void rwkv7_update(std::vector<double>& S, const Token& x, std::int64_t dk, std::int64_t dv,
                         std::vector<double>& sa) {
  sa.assign(static_cast<std::size_t>(dv), 0.0);
  for (std::int64_t i = 0; i < dk; ++i)
    for (std::int64_t j = 0; j < dv; ++j)
      sa[static_cast<std::size_t>(j)] += S[static_cast<std::size_t>(i * dv + j)] * x.a[static_cast<std::size_t>(i)];
  for (std::int64_t i = 0; i < dk; ++i) {
    const std::size_t ii = static_cast<std::size_t>(i);
    for (std::int64_t j = 0; j < dv; ++j) {
      const std::size_t jj = static_cast<std::size_t>(j);
      double& s = S[static_cast<std::size_t>(i * dv + j)];
      s = x.w[ii] * s + x.b[ii] * sa[jj] + x.k[ii] * x.v[jj];
    }
  }
}

inline void load_state(const Rwkv7Params& p, const void* src, std::int64_t so, std::vector<double>& S) {
  for (std::size_t i = 0; i < S.size(); ++i)
    S[i] = src ? load_real(src, p.param_dtype, so + static_cast<std::int64_t>(i)) : 0.0;
}

}  // namespace rwkv7_detail

inline void rwkv7_forward(const Rwkv7Params& p) {
  using rwkv7_detail::Token;
  const std::int64_t h = p.nheads, dk = p.dk, dv = p.dv;
  std::vector<double> S(static_cast<std::size_t>(dk * dv)), sa;
  Token x;
  for (std::int64_t s = 0; s < p.rows(); ++s) {
    const std::int64_t bi = p.seq_row(s);
    for (std::int64_t hh = 0; hh < h; ++hh) {
      const std::int64_t so = (s * h + hh) * dk * dv;
      rwkv7_detail::load_state(p, p.initial_state, so, S);
      for (std::int64_t t = p.seq_begin(s); t < p.seq_end(s); ++t) {
        x.load(p, bi, t, hh);
        rwkv7_detail::rwkv7_update(S, x, dk, dv, sa);
        for (std::int64_t j = 0; j < dv; ++j) {
          double y = 0;
          for (std::int64_t i = 0; i < dk; ++i) y += S[static_cast<std::size_t>(i * dv + j)] * x.q[static_cast<std::size_t>(i)];
          store_real(p.out.data, p.input_dtype, p.out.at(bi, t, hh) + j, y);
        }
      }
      if (p.final_state)
        for (std::int64_t i = 0; i < dk * dv; ++i) store_real(p.final_state, p.param_dtype, so + i, S[static_cast<std::size_t>(i)]);
    }
  }
}

/// The backward of rwkv7_forward in double: the states S_t recomputed and kept ((len + 1) dk dv doubles per sequence
/// and head), then one reverse pass with dS the gradient of S_t (core/params/rwkv7.hpp has the formulas).
inline void rwkv7_backward(const Rwkv7Params& p, const Rwkv7GradParams& gr) {
  using rwkv7_detail::Token;
  const DType it = p.input_dtype;
  const std::int64_t l = p.seqlen, h = p.nheads, dk = p.dk, dv = p.dv, size = dk * dv;
  auto store = [&](void* dst, std::int64_t bi, std::int64_t t, std::int64_t hh, const std::vector<double>& g) {
    if (!dst) return;
    const std::int64_t n = static_cast<std::int64_t>(g.size()), off = ((bi * l + t) * h + hh) * n;
    for (std::int64_t i = 0; i < n; ++i) store_real(dst, it, off + i, g[static_cast<std::size_t>(i)]);
  };
  for (std::int64_t s = 0; s < p.rows(); ++s) {
    const std::int64_t bi = p.seq_row(s), t0 = p.seq_begin(s), len = p.seq_end(s) - t0;
    for (std::int64_t hh = 0; hh < h; ++hh) {
      const std::int64_t so = (s * h + hh) * size;
      std::vector<Token> xs(static_cast<std::size_t>(len));
      std::vector<double> S(static_cast<std::size_t>((len + 1) * size)), cur(static_cast<std::size_t>(size)), sa;
      rwkv7_detail::load_state(p, p.initial_state, so, cur);
      std::copy(cur.begin(), cur.end(), S.begin());
      for (std::int64_t r = 0; r < len; ++r) {
        xs[static_cast<std::size_t>(r)].load(p, bi, t0 + r, hh);
        rwkv7_detail::rwkv7_update(cur, xs[static_cast<std::size_t>(r)], dk, dv, sa);
        std::copy(cur.begin(), cur.end(), S.begin() + (r + 1) * size);
      }
      std::vector<double> dS(static_cast<std::size_t>(size)), go(static_cast<std::size_t>(dv)), gsa, gq, gk, gv, gw, ga, gb;
      rwkv7_detail::load_state(p, gr.grad_final_state, so, dS);
      auto D = [&](std::int64_t i, std::int64_t j) -> double& { return dS[static_cast<std::size_t>(i * dv + j)]; };
      for (std::int64_t r = len - 1; r >= 0; --r) {
        const std::int64_t t = t0 + r;
        const Token& x = xs[static_cast<std::size_t>(r)];
        const double* St = S.data() + (r + 1) * size;
        const double* Sp = S.data() + r * size;  // S_{t−1}
        auto X = [](const std::vector<double>& v, std::int64_t i) { return v[static_cast<std::size_t>(i)]; };
        for (std::int64_t j = 0; j < dv; ++j) go[static_cast<std::size_t>(j)] = load_real(gr.grad_out, it, ((bi * l + t) * h + hh) * dv + j);
        gq.assign(static_cast<std::size_t>(dk), 0.0), gk.assign(static_cast<std::size_t>(dk), 0.0);
        gb.assign(static_cast<std::size_t>(dk), 0.0), ga.assign(static_cast<std::size_t>(dk), 0.0);
        gw.assign(static_cast<std::size_t>(dk), 0.0), gv.assign(static_cast<std::size_t>(dv), 0.0);
        gsa.assign(static_cast<std::size_t>(dv), 0.0), sa.assign(static_cast<std::size_t>(dv), 0.0);
        for (std::int64_t i = 0; i < dk; ++i)
          for (std::int64_t j = 0; j < dv; ++j) {
            gq[static_cast<std::size_t>(i)] += p.scale * St[i * dv + j] * X(go, j);  // ḡq = scale S_t ḡo
            D(i, j) += X(x.q, i) * X(go, j);                                         // x.q is scale q
            sa[static_cast<std::size_t>(j)] += Sp[i * dv + j] * X(x.a, i);
          }
        for (std::int64_t i = 0; i < dk; ++i)
          for (std::int64_t j = 0; j < dv; ++j) {
            gk[static_cast<std::size_t>(i)] += D(i, j) * X(x.v, j);
            gv[static_cast<std::size_t>(j)] += D(i, j) * X(x.k, i);
            gb[static_cast<std::size_t>(i)] += D(i, j) * X(sa, j);
            gsa[static_cast<std::size_t>(j)] += D(i, j) * X(x.b, i);
            gw[static_cast<std::size_t>(i)] += D(i, j) * Sp[i * dv + j];
          }
        for (std::int64_t i = 0; i < dk; ++i) {
          gw[static_cast<std::size_t>(i)] *= X(x.w, i);  // through w = exp(log_w)
          for (std::int64_t j = 0; j < dv; ++j) {
            ga[static_cast<std::size_t>(i)] += Sp[i * dv + j] * X(gsa, j);
            D(i, j) = X(x.w, i) * D(i, j) + X(x.a, i) * X(gsa, j);  // the gradient of S_{t−1}
          }
        }
        store(gr.grad_q, bi, t, hh, gq), store(gr.grad_k, bi, t, hh, gk), store(gr.grad_v, bi, t, hh, gv);
        store(gr.grad_log_w, bi, t, hh, gw), store(gr.grad_a, bi, t, hh, ga), store(gr.grad_b, bi, t, hh, gb);
      }
      if (gr.grad_initial_state)
        for (std::int64_t i = 0; i < size; ++i) store_real(gr.grad_initial_state, p.param_dtype, so + i, dS[static_cast<std::size_t>(i)]);
    }
  }
}

}  // namespace ssm::reference
