// RWKV-7's generalized delta rule on the CPU (docs/rwkv7.md; the formulas in core/params/rwkv7.hpp): the token loop in
// the compute type (the decode step is its one-step case) and the backward as a token loop over states recomputed
// from per-chunk checkpoints. Threads split over (sequence, head). Per step and head the forward makes two passes over
// the state (dk, dv): sa = Sᵀ a, then S ← diag(w) S + b saᵀ + k vᵀ fused with o = Sᵀ q; the inner loops run along dv
// (unit stride), where the compiler vectorizes them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "ssm/core/params/rwkv7.hpp"
#include "ssm/cpu/convert.hpp"
#include "ssm/cpu/linear_attention.hpp"
#include "ssm/cpu/threads.hpp"

namespace ssm::cpu {

namespace rwkv7 {

/// One token of one head in the compute type: scale q, k, v, w = exp(log_w), a, b.
template <class T>
struct Token {
  std::vector<T> q, k, v, w, a, b;

  explicit Token(const Rwkv7Params& p)
      : q(static_cast<std::size_t>(p.dk)), k(q.size()), v(static_cast<std::size_t>(p.dv)), w(q.size()), a(q.size()),
        b(q.size()) {}

  template <class In>
  void load(const Rwkv7Params& p, std::int64_t bi, std::int64_t t, std::int64_t hh) {
    auto row = [&](const TokenRows<const void*>& src, std::int64_t n, std::vector<T>& dst) {
      load_row(static_cast<const In*>(src.data) + src.at(bi, t, hh), n, dst.data());
    };
    row(p.q, p.dk, q), row(p.k, p.dk, k), row(p.v, p.dv, v), row(p.log_w, p.dk, w), row(p.a, p.dk, a), row(p.b, p.dk, b);
    const T scale = static_cast<T>(p.scale);
    if (scale != T(1))
      for (T& x : q) x *= scale;
    for (T& x : w) x = std::exp(x);
  }
};

/// sa (dv) = Sᵀ a for S (dk, dv) row-major.
template <class T>
void state_times(const T* S, const T* a, std::int64_t dk, std::int64_t dv, T* sa) {
  std::fill_n(sa, dv, T(0));
  for (std::int64_t i = 0; i < dk; ++i) {
    const T ai = a[i];
    const T* s = S + i * dv;
    for (std::int64_t j = 0; j < dv; ++j) sa[j] += ai * s[j];
  }
}

/// One step: sa = Sᵀ a; S ← diag(w) S + b saᵀ + k vᵀ; and, when y is given, y = Sᵀ q of the new state.
template <class T>
void update(T* S, const Token<T>& x, std::int64_t dk, std::int64_t dv, T* sa, T* y) {
  state_times(S, x.a.data(), dk, dv, sa);
  if (y) std::fill_n(y, dv, T(0));
  const T* v = x.v.data();
  for (std::int64_t i = 0; i < dk; ++i) {
    const T wi = x.w[static_cast<std::size_t>(i)], bi = x.b[static_cast<std::size_t>(i)];
    const T ki = x.k[static_cast<std::size_t>(i)], qi = x.q[static_cast<std::size_t>(i)];
    T* s = S + i * dv;
    for (std::int64_t j = 0; j < dv; ++j) s[j] = wi * s[j] + bi * sa[j] + ki * v[j];
    if (y)
      for (std::int64_t j = 0; j < dv; ++j) y[j] += qi * s[j];
  }
}

/// The token loop in the compute type. The state is read into a local copy first and written at the end, so
/// initial_state and final_state may be the same buffer (the decode step).
template <class In>
void forward_recurrent(const Rwkv7Params& p, int threads) {
  using T = compute_t<In>;
  const std::int64_t h = p.nheads, dk = p.dk, dv = p.dv;
  parallel_for(p.rows() * h, threads, [&](std::int64_t task) {
    const std::int64_t s = task / h, hh = task % h, bi = p.seq_row(s);
    std::vector<T> S(static_cast<std::size_t>(dk * dv), T(0)), sa(static_cast<std::size_t>(dv)), y(sa.size());
    if (p.initial_state) std::copy_n(static_cast<const T*>(p.initial_state) + task * dk * dv, dk * dv, S.data());
    Token<T> x(p);
    for (std::int64_t t = p.seq_begin(s); t < p.seq_end(s); ++t) {
      x.template load<In>(p, bi, t, hh);
      update(S.data(), x, dk, dv, sa.data(), y.data());
      store_row(y.data(), dv, static_cast<In*>(p.out.data) + p.out.at(bi, t, hh));
    }
    if (p.final_state) std::copy(S.begin(), S.end(), static_cast<T*>(p.final_state) + task * dk * dv);
  });
}

/// The backward as a token loop in the compute type (core/params/rwkv7.hpp has the formulas). Per (sequence, head):
/// a forward pass keeps the state at the start of every chunk of p.chunk_size steps; then, chunk by chunk from the
/// last, the chunk's states are recomputed from its checkpoint and the reverse steps run over them. Memory per
/// thread: the checkpoints and one chunk's states, (l / Q + Q + 1) dk dv. Each task writes only its own head's
/// gradient rows.
template <class In>
void backward_recurrent(const Rwkv7Params& p, const Rwkv7GradParams& gr, int threads) {
  using T = compute_t<In>;
  const std::int64_t l = p.seqlen, h = p.nheads, dk = p.dk, dv = p.dv, Cq = p.chunk_size, size = dk * dv;
  parallel_for(p.rows() * h, threads, [&](std::int64_t task) {
    const std::int64_t s = task / h, hh = task % h, bi = p.seq_row(s), t0 = p.seq_begin(s), t1 = p.seq_end(s);
    const std::int64_t n_ck = (t1 - t0 + Cq - 1) / Cq;
    std::vector<T> ck(static_cast<std::size_t>(n_ck * size)), states(static_cast<std::size_t>((Cq + 1) * size));
    std::vector<T> S(static_cast<std::size_t>(size), T(0)), dS(S.size(), T(0));
    std::vector<T> sa(static_cast<std::size_t>(dv)), go(sa.size()), gsa(sa.size()), gv(sa.size());
    std::vector<T> gq(static_cast<std::size_t>(dk)), gk(gq.size()), gw(gq.size()), ga(gq.size()), gb(gq.size());
    std::vector<Token<T>> xs(static_cast<std::size_t>(Cq), Token<T>(p));
    if (p.initial_state) std::copy_n(static_cast<const T*>(p.initial_state) + task * size, size, S.data());
    for (std::int64_t t = t0; t < t1; ++t) {
      if ((t - t0) % Cq == 0) std::copy(S.begin(), S.end(), ck.begin() + (t - t0) / Cq * size);
      xs[0].template load<In>(p, bi, t, hh);
      update(S.data(), xs[0], dk, dv, sa.data(), static_cast<T*>(nullptr));
    }
    if (gr.grad_final_state) std::copy_n(static_cast<const T*>(gr.grad_final_state) + task * size, size, dS.data());
    auto store = [&](void* dst, const std::vector<T>& g, std::int64_t t) {
      if (dst) {
        const std::int64_t n = static_cast<std::int64_t>(g.size());
        store_row(g.data(), n, static_cast<In*>(dst) + ((bi * l + t) * h + hh) * n);
      }
    };
    const T scale = static_cast<T>(p.scale);
    for (std::int64_t c = n_ck - 1; c >= 0; --c) {
      const std::int64_t c0 = t0 + c * Cq, len = std::min(Cq, t1 - c0);
      std::copy(ck.begin() + c * size, ck.begin() + (c + 1) * size, states.begin());
      for (std::int64_t r = 0; r < len; ++r) {
        Token<T>& xr = xs[static_cast<std::size_t>(r)];
        xr.template load<In>(p, bi, c0 + r, hh);
        std::copy_n(states.begin() + r * size, size, states.begin() + (r + 1) * size);
        update(states.data() + (r + 1) * size, xr, dk, dv, sa.data(), static_cast<T*>(nullptr));
      }
      for (std::int64_t r = len - 1; r >= 0; --r) {
        const std::int64_t t = c0 + r;
        const Token<T>& x = xs[static_cast<std::size_t>(r)];
        const T* St = states.data() + (r + 1) * size;
        const T* Sp = states.data() + r * size;  // S_{t−1}
        load_row(static_cast<const In*>(gr.grad_out) + ((bi * l + t) * h + hh) * dv, dv, go.data());
        state_times(Sp, x.a.data(), dk, dv, sa.data());
        std::fill(gv.begin(), gv.end(), T(0)), std::fill(gsa.begin(), gsa.end(), T(0));
        // dS += (scale q) ḡoᵀ; ḡq = scale S_t ḡo; ḡk = dS v; ḡb = dS sa; ḡv = dSᵀ k; ḡsa = dSᵀ b; ḡw = rowsum(dS ⊙ S_{t−1})
        for (std::int64_t i = 0; i < dk; ++i) {
          const std::size_t ii = static_cast<std::size_t>(i);
          T* d = dS.data() + i * dv;
          const T* st = St + i * dv;
          const T* sp = Sp + i * dv;
          const T qi = x.q[ii], ki = x.k[ii], bi_ = x.b[ii];
          T aq = 0, ak = 0, ab = 0, aw = 0;
          for (std::int64_t j = 0; j < dv; ++j) {
            aq += st[j] * go[static_cast<std::size_t>(j)];
            const T dij = d[j] + qi * go[static_cast<std::size_t>(j)];
            d[j] = dij;
            ak += dij * x.v[static_cast<std::size_t>(j)];
            ab += dij * sa[static_cast<std::size_t>(j)];
            aw += dij * sp[j];
            gv[static_cast<std::size_t>(j)] += dij * ki;
            gsa[static_cast<std::size_t>(j)] += dij * bi_;
          }
          gq[ii] = scale * aq, gk[ii] = ak, gb[ii] = ab, gw[ii] = x.w[ii] * aw;
        }
        // ḡa = S_{t−1} ḡsa; dS ← diag(w) dS + a ḡsaᵀ
        for (std::int64_t i = 0; i < dk; ++i) {
          const std::size_t ii = static_cast<std::size_t>(i);
          T* d = dS.data() + i * dv;
          const T* sp = Sp + i * dv;
          const T wi = x.w[ii], ai = x.a[ii];
          T aa = 0;
          for (std::int64_t j = 0; j < dv; ++j) {
            aa += sp[j] * gsa[static_cast<std::size_t>(j)];
            d[j] = wi * d[j] + ai * gsa[static_cast<std::size_t>(j)];
          }
          ga[ii] = aa;
        }
        store(gr.grad_q, gq, t), store(gr.grad_k, gk, t), store(gr.grad_v, gv, t);
        store(gr.grad_log_w, gw, t), store(gr.grad_a, ga, t), store(gr.grad_b, gb, t);
      }
    }
    if (gr.grad_initial_state) std::copy(dS.begin(), dS.end(), static_cast<T*>(gr.grad_initial_state) + task * size);
  });
}

}  // namespace rwkv7

/// The token loop in the compute type over p (validated by the op, ops/rwkv7.hpp), on `threads` threads (0: by the
/// work); also the decode step (l = 1, the state read and written in place).
inline void rwkv7_forward_recurrent(const Rwkv7Params& p, int threads) {
  const int t = cpu_threads(threads, p.batch * p.seqlen * p.nheads * p.dk * p.dv);
  linear_attention::by_dtype(p, "rwkv7", [&](auto tag) { rwkv7::forward_recurrent<decltype(tag)>(p, t); });
}

/// The backward over p and g: the token loop over states recomputed from per-chunk checkpoints.
inline void rwkv7_backward_recurrent(const Rwkv7Params& p, const Rwkv7GradParams& g, int threads) {
  const int t = cpu_threads(threads, p.batch * p.seqlen * p.nheads * p.dk * p.dv);
  linear_attention::by_dtype(p, "rwkv7_backward", [&](auto tag) { rwkv7::backward_recurrent<decltype(tag)>(p, g, t); });
}

}  // namespace ssm::cpu
