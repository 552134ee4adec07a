// RWKV-4's WKV recurrence on the CPU (docs/rwkv4.md; the formulas in core/params/rwkv4.hpp): the token loop in the
// compute type, vectorized across channels (every channel is an independent recurrence), forward (also the decode
// step: l = 1) and backward over states recomputed from checkpoints every p.checkpoint steps. Threads split over
// sequences, and a sequence's channels into contiguous ranges when there are fewer sequences than threads.
//
// Of the two exponentials of each max (e1, e2 of the output, f1, f2 of the update) one is e^0 = 1: each pair is one
// exp of min − max and a select, two exponentials per channel and step instead of four.
//
// Memory. A task walks its sequence's rows in order, reading each token's contiguous span of k and v once (12 bytes
// per channel and step in f32 with the output). Narrow blocks of channels walked down the whole sequence (one task
// per block) stride through memory and ran 3× slower at c = 768; tiles of 32 steps × 256 channels were no faster than
// whole rows (measured, l = 4096, c = 768 and 2048, one AVX-512 core), so there are none.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "ssm/core/instances.hpp"
#include "ssm/core/params/rwkv4.hpp"
#include "ssm/cpu/convert.hpp"
#include "ssm/cpu/linear_attention.hpp"
#include "ssm/cpu/simd.hpp"
#include "ssm/cpu/threads.hpp"

namespace ssm::cpu {

namespace rwkv4 {

template <class T>
using V = simd::Vec<T>;

/// (e^{a − m}, e^{b − m}) with m = max(a, b), from one exponential; which one is 1 follows m: a when a > b.
template <class T>
SSM_FORCE_INLINE void pair_exp(V<T> a, V<T> b, V<T>& ea, V<T>& eb) {
  const auto a_max = a > b;  // lanes where m = a
  const V<T> small = simd::exp<T>(simd::vmin<T>(a, b) - simd::vmax<T>(a, b));
  const V<T> one = simd::broadcast<T>(T(1));
  ea = a_max ? one : small;
  eb = a_max ? small : one;
}

/// How a task's channels are cut: the whole row per sequence, split into at most `threads` ranges of whole vectors
/// when there are fewer sequences than threads. Each task walks its sequence's rows in order, reading contiguous
/// spans (cutting a row into narrow blocks would stride through memory and leave the loop waiting on it).
struct Split {
  std::int64_t parts = 1, width = 0;  // ranges per row, channels per range (a multiple of the vector width)

  Split(std::int64_t rows, std::int64_t C, int threads, int lanes) {
    const std::int64_t vectors = (C + lanes - 1) / lanes;
    parts = rows >= threads ? 1 : std::min<std::int64_t>(vectors, (threads + rows - 1) / std::max<std::int64_t>(rows, 1));
    parts = std::max<std::int64_t>(parts, 1);
    width = (vectors + parts - 1) / parts * lanes;
    parts = C > 0 ? (C + width - 1) / width : 0;  // no channels: no tasks
  }
};

/// One task's channels [c0, c0 + n): w, u, the state and the token's k, v, y, padded to whole vectors (padding lanes
/// hold an empty state and zero inputs, which stay finite).
template <class T>
struct Channels {
  std::vector<T> w, u, num, den, mx, k, v, y;
  std::int64_t c0 = 0, n = 0, padded = 0;

  void load(const Rwkv4Params& p, std::int64_t s, std::int64_t c0_, std::int64_t n_) {
    c0 = c0_, n = n_, padded = (n + simd::lanes<T> - 1) / simd::lanes<T> * simd::lanes<T>;
    const std::size_t N = static_cast<std::size_t>(padded);
    w.assign(N, T(0)), u.assign(N, T(0)), k.assign(N, T(0)), v.assign(N, T(0)), y.assign(N, T(0));
    num.assign(N, T(0)), den.assign(N, T(0)), mx.assign(N, static_cast<T>(kRwkv4EmptyMax));
    const T* td = static_cast<const T*>(p.time_decay) + c0;
    const T* tf = static_cast<const T*>(p.time_first) + c0;
    for (std::int64_t i = 0; i < n; ++i) w[static_cast<std::size_t>(i)] = -std::exp(td[i]), u[static_cast<std::size_t>(i)] = tf[i];
    if (p.initial_state) {
      const T* st = static_cast<const T*>(p.initial_state) + s * 3 * p.channels + c0;
      std::copy_n(st, n, num.data()), std::copy_n(st + p.channels, n, den.data()), std::copy_n(st + 2 * p.channels, n, mx.data());
    }
  }
  void save(const Rwkv4Params& p, std::int64_t s, void* dst) const {
    T* st = static_cast<T*>(dst) + s * 3 * p.channels + c0;
    std::copy_n(num.data(), n, st), std::copy_n(den.data(), n, st + p.channels), std::copy_n(mx.data(), n, st + 2 * p.channels);
  }
  /// The state into / from dst (3 padded rows: num, den, max).
  void keep(T* dst) const {
    std::copy(num.begin(), num.end(), dst), std::copy(den.begin(), den.end(), dst + padded);
    std::copy(mx.begin(), mx.end(), dst + 2 * padded);
  }
  void restore(const T* src) {
    std::copy_n(src, padded, num.data()), std::copy_n(src + padded, padded, den.data());
    std::copy_n(src + 2 * padded, padded, mx.data());
  }
  /// Token t's k and v.
  template <class In>
  void load_kv(const Rwkv4Params& p, std::int64_t bi, std::int64_t t) {
    load_row(static_cast<const In*>(p.k) + p.at(p.k_strides, bi, t) + c0, n, k.data());
    load_row(static_cast<const In*>(p.v) + p.at(p.v_strides, bi, t) + c0, n, v.data());
  }

  /// y = wkv of the loaded token, and the state advanced past it.
  void step() {
    constexpr int L = simd::lanes<T>;
    for (std::int64_t i = 0; i < padded; i += L) {
      const V<T> kk = simd::load(k.data() + i), vv = simd::load(v.data() + i), p = simd::load(mx.data() + i);
      const V<T> nm = simd::load(num.data() + i), dn = simd::load(den.data() + i);
      V<T> e1, e2, f1, f2;
      pair_exp<T>(p, simd::load(u.data() + i) + kk, e1, e2);
      simd::store(y.data() + i, simd::fma(e1, nm, e2 * vv) / simd::fma(e1, dn, e2));
      const V<T> r = p + simd::load(w.data() + i);
      pair_exp<T>(r, kk, f1, f2);
      simd::store(num.data() + i, simd::fma(f1, nm, f2 * vv));
      simd::store(den.data() + i, simd::fma(f1, dn, f2));
      simd::store(mx.data() + i, r > kk ? r : kk);
    }
  }
};

template <class In>
void forward(const Rwkv4Params& p, int threads) {
  using T = compute_t<In>;
  const Split split(p.rows(), p.channels, threads, simd::lanes<T>);
  parallel_for(p.rows() * split.parts, threads, [&](std::int64_t task) {
    const std::int64_t s = task / split.parts, c0 = (task % split.parts) * split.width, bi = p.seq_row(s);
    Channels<T> x;
    x.load(p, s, c0, std::min(split.width, p.channels - c0));
    for (std::int64_t t = p.seq_begin(s); t < p.seq_end(s); ++t) {
      x.template load_kv<In>(p, bi, t);
      x.step();
      store_row(x.y.data(), x.n, static_cast<In*>(p.out) + p.at(p.out_strides, bi, t) + c0);
    }
    if (p.final_state) x.save(p, s, p.final_state);
  });
  simd::stream_fence();
}

/// The backward (core/params/rwkv4.hpp): per task, the states at every checkpoint from one forward pass, then the
/// checkpoint intervals in reverse, each one's states recomputed and walked back. ḡw and ḡu are summed per sequence
/// and then over sequences in order (the result does not depend on the thread count).
template <class In>
void backward(const Rwkv4Params& p, const Rwkv4GradParams& g, int threads) {
  using T = compute_t<In>;
  constexpr int L = simd::lanes<T>;
  const std::int64_t C = p.channels, P = p.checkpoint;
  const Split split(p.rows(), C, threads, L);
  std::vector<T> gw_rows(static_cast<std::size_t>(p.rows() * C)), gu_rows(gw_rows.size());  // (rows, c)
  parallel_for(p.rows() * split.parts, threads, [&](std::int64_t task) {
    const std::int64_t s = task / split.parts, c0 = (task % split.parts) * split.width, bi = p.seq_row(s);
    const std::int64_t n = std::min(split.width, C - c0), t0 = p.seq_begin(s), t1 = p.seq_end(s);
    Channels<T> x;
    x.load(p, s, c0, n);
    const std::int64_t N = x.padded, S = 3 * N;  // a saved state: three padded rows
    // checkpoints: the state entering t0, t0 + P, ...; then the state entering each step of one interval
    const std::int64_t intervals = (t1 - t0 + P - 1) / P;
    std::vector<T> saved(static_cast<std::size_t>(std::max<std::int64_t>(intervals, 1) * S));
    std::vector<T> steps(static_cast<std::size_t>(std::min(P, std::max<std::int64_t>(t1 - t0, 1)) * S));
    for (std::int64_t i = 0; i < intervals; ++i) {
      x.keep(saved.data() + i * S);
      for (std::int64_t t = t0 + i * P; t < std::min(t1, t0 + (i + 1) * P); ++t) x.template load_kv<In>(p, bi, t), x.step();
    }
    // the gradients flowing back: ḡnum, ḡden, the max chain's ḡp; the sums ḡw, ḡu; one token's ḡy, ḡk, ḡv
    std::vector<T> gn(static_cast<std::size_t>(N), T(0)), gd(gn), gp(gn), gw(gn), gu(gn), gy(gn), gk(gn), gv(gn);
    if (g.grad_final_state) {
      const T* gs = static_cast<const T*>(g.grad_final_state) + s * 3 * C + c0;
      for (std::int64_t c = 0; c < n; ++c) {
        const std::size_t i = static_cast<std::size_t>(c);
        gn[i] = gs[c], gd[i] = gs[C + c];
        gp[i] = gs[2 * C + c] - gn[i] * x.num[i] - gd[i] * x.den[i];
      }
    }
    const In* grad_out = static_cast<const In*>(g.grad_out);
    for (std::int64_t i = intervals - 1; i >= 0; --i) {
      const std::int64_t a = t0 + i * P, e = std::min(t1, a + P);
      x.restore(saved.data() + i * S);
      for (std::int64_t t = a; t < e; ++t) {
        x.keep(steps.data() + (t - a) * S);
        if (t + 1 < e) x.template load_kv<In>(p, bi, t), x.step();
      }
      for (std::int64_t t = e - 1; t >= a; --t) {
        const T* st = steps.data() + (t - a) * S;  // the state entering step t: num, den, max
        x.template load_kv<In>(p, bi, t);
        load_row(grad_out + (bi * p.seqlen + t) * C + c0, n, gy.data());
        for (std::int64_t j = 0; j < N; j += L) {
          const V<T> kk = simd::load(x.k.data() + j), vv = simd::load(x.v.data() + j), pm = simd::load(st + 2 * N + j);
          const V<T> nm = simd::load(st + j), dn = simd::load(st + N + j);
          const V<T> gyy = simd::load(gy.data() + j), gnn = simd::load(gn.data() + j), gdd = simd::load(gd.data() + j);
          const V<T> gpp = simd::load(gp.data() + j);
          V<T> e1, e2, f1, f2;
          pair_exp<T>(pm, simd::load(x.u.data() + j) + kk, e1, e2);
          const V<T> inv = simd::broadcast<T>(T(1)) / simd::fma(e1, dn, e2);
          const V<T> y = simd::fma(e1, nm, e2 * vv) * inv;
          const V<T> g_o = gyy * e2 * (vv - y) * inv;  // ∂L/∂(u + k_t) through wkv_t
          const V<T> r = pm + simd::load(x.w.data() + j);
          pair_exp<T>(r, kk, f1, f2);
          const auto branch_r = r > kk;  // the update's max as the forward took it
          const V<T> zero = simd::broadcast<T>(T(0));
          simd::store(gk.data() + j, simd::fma(f2, simd::fma(vv, gnn, gdd), g_o) + (branch_r ? zero : gpp));
          simd::store(gv.data() + j, simd::fma(f2, gnn, gyy * e2 * inv));
          simd::store(gw.data() + j, simd::load(gw.data() + j) + simd::fma(f1, simd::fma(nm, gnn, dn * gdd), branch_r ? gpp : zero));
          simd::store(gu.data() + j, simd::load(gu.data() + j) + g_o);
          simd::store(gp.data() + j, branch_r ? gpp : zero);
          const V<T> ge = gyy * e1 * inv;
          simd::store(gn.data() + j, simd::fma(f1, gnn, ge));
          simd::store(gd.data() + j, simd::fma(f1, gdd, -ge * y));
        }
        const std::int64_t o = (bi * p.seqlen + t) * C + c0;
        if (g.grad_k) store_row(gk.data(), n, static_cast<In*>(g.grad_k) + o);
        if (g.grad_v) store_row(gv.data(), n, static_cast<In*>(g.grad_v) + o);
      }
    }
    if (g.grad_initial_state) {
      x.load(p, s, c0, n);  // the initial state
      T* gs = static_cast<T*>(g.grad_initial_state) + s * 3 * C + c0;
      for (std::int64_t c = 0; c < n; ++c) {
        const std::size_t i = static_cast<std::size_t>(c);
        gs[c] = gn[i], gs[C + c] = gd[i], gs[2 * C + c] = x.num[i] * gn[i] + x.den[i] * gd[i] + gp[i];
      }
    }
    std::copy_n(gw.data(), n, gw_rows.data() + s * C + c0), std::copy_n(gu.data(), n, gu_rows.data() + s * C + c0);
  });
  simd::stream_fence();
  const T* td = static_cast<const T*>(p.time_decay);
  for (std::int64_t c = 0; c < C; ++c) {
    T sw = 0, su = 0;
    for (std::int64_t s = 0; s < p.rows(); ++s)
      sw += gw_rows[static_cast<std::size_t>(s * C + c)], su += gu_rows[static_cast<std::size_t>(s * C + c)];
    if (g.grad_time_decay) static_cast<T*>(g.grad_time_decay)[c] = -std::exp(td[c]) * sw;
    if (g.grad_time_first) static_cast<T*>(g.grad_time_first)[c] = su;
  }
}

}  // namespace rwkv4

/// The forward over p (validated by the op, ops/rwkv4.hpp) on `threads` threads (0: by the amount of work).
inline void rwkv4_forward(const Rwkv4Params& p, int threads) {
  const int t = cpu_threads(threads, p.batch * p.seqlen * p.channels * 8);
  linear_attention::by_dtype(p, "rwkv4", [&](auto tag) { rwkv4::forward<decltype(tag)>(p, t); });
}

/// The backward over p and g.
inline void rwkv4_backward(const Rwkv4Params& p, const Rwkv4GradParams& g, int threads) {
  const int t = cpu_threads(threads, p.batch * p.seqlen * p.channels * 16);
  linear_attention::by_dtype(p, "rwkv4_backward", [&](auto tag) { rwkv4::backward<decltype(tag)>(p, g, t); });
}

}  // namespace ssm::cpu

/// The kernels' entry points for one input type In, compiled once where SSM_EXTERN_INSTANCES is set
/// (core/instances.hpp, src/instances/).
#define SSM_CPU_RWKV4_INSTANCES(PREFIX, In)                                 \
  PREFIX void ssm::cpu::rwkv4::forward<In>(const ::ssm::Rwkv4Params&, int); \
  PREFIX void ssm::cpu::rwkv4::backward<In>(const ::ssm::Rwkv4Params&, const ::ssm::Rwkv4GradParams&, int);
#if SSM_EXTERN_INSTANCES
SSM_FOR_EACH_INPUT(SSM_CPU_RWKV4_INSTANCES, extern template)
#endif
