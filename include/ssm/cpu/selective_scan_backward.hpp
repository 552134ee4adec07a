// CPU backward of the selective scan (S6; Gu & Dao 2023, "Mamba", §3.3.2 "recomputation"; MATH.md §5):
// the reverse scan g_t = C_t dy_t + conj(a_{t+1}) g_{t+1}, with the states recomputed chunk by chunk
// from saved chunk-boundary states (no (b, d, l, n) storage), threaded over channels (std::thread).
// Arithmetic in f32 for f32/f16/bf16 inputs, f64 for f64; real and complex A.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <complex>
#include <cstdint>
#include <thread>
#include <type_traits>
#include <vector>

#include "ssm/core/dtype.hpp"
#include "ssm/ops/selective_scan_grad_params.hpp"
#include "ssm/ops/selective_scan_params.hpp"

namespace ssm::cpu {

struct ScanBackwardOptions {
  int num_threads = 0;         // 0: all hardware threads
  std::int64_t chunk_len = 0;  // states recomputed per chunk of this many steps; 0: 64
};

namespace scan_backward_detail {

using index_t = std::int64_t;

template <class T>
inline auto load(T x) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) return x;
  else if constexpr (std::is_same_v<T, std::complex<float>> || std::is_same_v<T, std::complex<double>>) return x;
  else return static_cast<float>(x);  // half, bfloat16
}
template <class T, class V>
inline T store(V x) {
  if constexpr (std::is_same_v<T, V>) return x;
  else if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) return static_cast<T>(x);
  else return T(static_cast<float>(x));
}
template <class W>
inline W re(W x) { return x; }
template <class W>
inline W re(std::complex<W> x) { return x.real(); }
template <class W>
inline W conj_(W x) { return x; }
template <class W>
inline std::complex<W> conj_(std::complex<W> x) { return std::conj(x); }
/// Re(conj(x) * y) without forming the product's imaginary part.
template <class W>
inline W re_conj_mul(W x, W y) { return x * y; }
template <class W>
inline W re_conj_mul(std::complex<W> x, std::complex<W> y) { return x.real() * y.real() + x.imag() * y.imag(); }

template <class W>
inline W softplus(W x) { return x > W(20) ? x : std::log1p(std::exp(x)); }
template <class W>
inline W sigmoid(W x) { return W(1) / (W(1) + std::exp(-x)); }

/// Per-thread scratch: chunk buffers (K + 1 rows of n) and the private accumulators of variable B/C.
template <class S, class W>
struct Scratch {
  std::vector<S> bounds;                       // (n_chunks, n) state before each chunk
  std::vector<S> H;                            // (K + 1, n) h_{t-1} of the chunk's first step, then h_t
  std::vector<S> a;                            // (K, n) exp(Delta_t A)
  std::vector<S> Bt, Ct;                       // (K, n) B_t, C_t of the chunk, time-major
  std::vector<W> Delta, u, dy, pre;            // (K)
  std::vector<S> G;                            // (n) dL/dh carried backwards
  std::vector<S> grad_A, grad_B_fixed, grad_C_fixed;  // (n)
  std::vector<S> grad_B_var, grad_C_var;       // (b, g, n, l) this thread's share of variable B/C grads
};

template <class In, bool Complex>
void backward_impl(const ScanParams& p, const ScanGradParams& gp, const ScanBackwardOptions& opt) {
  using W = std::conditional_t<std::is_same_v<In, double>, double, float>;
  using S = std::conditional_t<Complex, std::complex<W>, W>;  // state / weight arithmetic
  using BC = std::conditional_t<Complex, std::complex<W>, In>;  // variable B/C storage
  const index_t b = p.batch, d = p.dim, l = p.seqlen, n = p.dstate, g = p.n_groups, dg = d / g;
  const index_t K = opt.chunk_len > 0 ? opt.chunk_len : 64;
  const auto sz = [](index_t v) { return static_cast<std::size_t>(v); };
  const W cf = Complex ? W(2) : W(1);  // y = 2 Re(C . h) for complex A

  int threads = opt.num_threads > 0 ? opt.num_threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = static_cast<int>(std::min<index_t>(threads, d));
  std::vector<Scratch<S, W>> scratch(sz(threads));
  std::atomic<index_t> next_channel{0};

  const In* u_ptr = static_cast<const In*>(p.u);
  const In* delta_ptr = static_cast<const In*>(p.delta);
  const In* z_ptr = static_cast<const In*>(p.z);
  const In* go_ptr = static_cast<const In*>(gp.grad_out);
  const S* A_ptr = static_cast<const S*>(p.A);
  const W* D_ptr = static_cast<const W*>(p.D);
  const W* bias_ptr = static_cast<const W*>(p.delta_bias);

  const auto worker = [&](int tid) {
    Scratch<S, W>& sc = scratch[sz(tid)];
    sc.H.assign(sz((K + 1) * n), S(0));
    sc.a.assign(sz(K * n), S(0));
    sc.Bt.assign(sz(K * n), S(0));
    sc.Ct.assign(sz(K * n), S(0));
    sc.Delta.assign(sz(K), W(0));
    sc.u.assign(sz(K), W(0));
    sc.dy.assign(sz(K), W(0));
    sc.pre.assign(sz(K), W(0));
    sc.G.assign(sz(n), S(0));
    sc.grad_A.assign(sz(n), S(0));
    sc.grad_B_fixed.assign(sz(n), S(0));
    sc.grad_C_fixed.assign(sz(n), S(0));
    if (p.variable_B) sc.grad_B_var.assign(sz(b * g * n * l), S(0));
    if (p.variable_C) sc.grad_C_var.assign(sz(b * g * n * l), S(0));
    std::vector<S> A(sz(n));  // (n) this channel's row of A
    for (index_t c = next_channel++; c < d; c = next_channel++) {
      for (index_t k = 0; k < n; ++k) A[sz(k)] = A_ptr[c * p.A_d_stride + k * p.A_n_stride];
      const W Dc = D_ptr ? D_ptr[c] : W(0), bias = bias_ptr ? bias_ptr[c] : W(0);
      std::fill(sc.grad_A.begin(), sc.grad_A.end(), S(0));
      std::fill(sc.grad_B_fixed.begin(), sc.grad_B_fixed.end(), S(0));
      std::fill(sc.grad_C_fixed.begin(), sc.grad_C_fixed.end(), S(0));
      W grad_D = 0, grad_bias = 0;
      const index_t grp = c / dg;
      const index_t n_rows = p.cu_seqlens ? p.n_seqs : b;
      for (index_t s = 0; s < n_rows; ++s) {
        const index_t bi = p.cu_seqlens ? 0 : s;
        const index_t t0 = p.cu_seqlens ? p.cu_seqlens[s] : 0, t1 = p.cu_seqlens ? p.cu_seqlens[s + 1] : l;
        const index_t n_chunks = (t1 - t0 + K - 1) / K;
        const In* u_row = u_ptr + bi * p.u_batch_stride + c * p.u_d_stride;
        const In* delta_row = delta_ptr + bi * p.delta_batch_stride + c * p.delta_d_stride;
        const In* z_row = z_ptr ? z_ptr + bi * p.z_batch_stride + c * p.z_d_stride : nullptr;
        const In* go_row = go_ptr + bi * gp.grad_out_batch_stride + c * gp.grad_out_d_stride;
        const index_t grad_row = (bi * d + c) * l;  // contiguous (b, d, l) gradient outputs
        const auto B_at = [&](index_t k, index_t t) -> S {
          if (p.variable_B)
            return S(load(static_cast<const BC*>(p.B)[bi * p.B_batch_stride + grp * p.B_group_stride + k * p.B_n_stride + t]));
          return static_cast<const S*>(p.B)[c * p.B_group_stride + k * p.B_n_stride];
        };
        const auto C_at = [&](index_t k, index_t t) -> S {
          if (p.variable_C)
            return S(load(static_cast<const BC*>(p.C)[bi * p.C_batch_stride + grp * p.C_group_stride + k * p.C_n_stride + t]));
          return static_cast<const S*>(p.C)[c * p.C_group_stride + k * p.C_n_stride];
        };
        // Loads the chunk [tc, tc + len): per-step scalars and B_t, C_t time-major (n contiguous).
        const auto load_chunk = [&](index_t tc, index_t len, bool with_C) {
          for (index_t i = 0; i < len; ++i) {
            const W pre = static_cast<W>(load(delta_row[tc + i])) + bias;
            sc.pre[sz(i)] = pre;
            sc.Delta[sz(i)] = p.delta_softplus ? softplus(pre) : pre;
            sc.u[sz(i)] = static_cast<W>(load(u_row[tc + i]));
          }
          for (index_t k = 0; k < n; ++k)
            for (index_t i = 0; i < len; ++i) sc.Bt[sz(i * n + k)] = B_at(k, tc + i);
          if (with_C)
            for (index_t k = 0; k < n; ++k)
              for (index_t i = 0; i < len; ++i) sc.Ct[sz(i * n + k)] = C_at(k, tc + i);
        };
        // Runs the recurrence over a loaded chunk from H[0]; keeps a_t and h_t when `keep`.
        const auto scan_chunk = [&](index_t len) {
          S* H = sc.H.data();
          S* a = sc.a.data();
          const S* Bt = sc.Bt.data();
          const S* Ap = A.data();
          for (index_t i = 0; i < len; ++i) {
            const W Delta = sc.Delta[sz(i)], Delta_u = Delta * sc.u[sz(i)];
            const S* h_prev = H + i * n;
            S* h = H + (i + 1) * n;
            S* ai = a + i * n;
            const S* Bi = Bt + i * n;
            for (index_t k = 0; k < n; ++k) {
              const S ak = std::exp(Delta * Ap[k]);
              ai[k] = ak;
              h[k] = ak * h_prev[k] + Delta_u * Bi[k];
            }
          }
        };

        // Pass 1: the state before each chunk.
        sc.bounds.resize(sz(std::max<index_t>(n_chunks, 1) * n));
        for (index_t k = 0; k < n; ++k)
          sc.H[sz(k)] = p.initial_state ? static_cast<const S*>(p.initial_state)[s * p.init_batch_stride + c * p.init_d_stride +
                                                                                 k * p.init_n_stride]
                                        : S(0);
        for (index_t ch = 0; ch < n_chunks; ++ch) {
          const index_t tc = t0 + ch * K, len = std::min(K, t1 - tc);
          std::copy_n(sc.H.begin(), n, sc.bounds.begin() + ch * n);
          if (ch + 1 == n_chunks) break;  // the last chunk's end state is not needed
          load_chunk(tc, len, false);
          scan_chunk(len);
          std::copy_n(sc.H.begin() + len * n, n, sc.H.begin());
        }

        // Pass 2: chunks in reverse; recompute the chunk's states, then the reverse scan through it.
        for (index_t k = 0; k < n; ++k)
          sc.G[sz(k)] = gp.grad_last_state
                            ? static_cast<const S*>(gp.grad_last_state)[s * gp.grad_last_batch_stride + c * gp.grad_last_d_stride +
                                                                        k * gp.grad_last_n_stride]
                            : S(0);
        for (index_t ch = n_chunks - 1; ch >= 0; --ch) {
          const index_t tc = t0 + ch * K, len = std::min(K, t1 - tc);
          load_chunk(tc, len, true);
          std::copy_n(sc.bounds.begin() + ch * n, n, sc.H.begin());
          scan_chunk(len);
          // Output side: out = (y + D u) silu(z)  →  dy, grad_z, grad_D.
          for (index_t i = 0; i < len; ++i) {
            const index_t t = tc + i;
            const W go = static_cast<W>(load(go_row[t]));
            W dy = go;
            if (z_row) {
              const S* h = sc.H.data() + (i + 1) * n;
              const S* Ci = sc.Ct.data() + i * n;
              W y = 0;
              for (index_t k = 0; k < n; ++k) y += re_conj_mul(conj_(Ci[k]), h[k]);
              y = cf * y + Dc * sc.u[sz(i)];
              const W zv = static_cast<W>(load(z_row[t])), sg = sigmoid(zv);
              dy = go * zv * sg;
              static_cast<In*>(gp.grad_z)[grad_row + t] = store<In>(go * y * sg * (W(1) + zv * (W(1) - sg)));
            }
            sc.dy[sz(i)] = dy;
            grad_D += dy * sc.u[sz(i)];
          }
          S* G = sc.G.data();
          S* gA = sc.grad_A.data();
          const S* Ap = A.data();
          for (index_t i = len - 1; i >= 0; --i) {
            const index_t t = tc + i;
            const W Delta = sc.Delta[sz(i)], u = sc.u[sz(i)], dy = sc.dy[sz(i)], Delta_u = Delta * u;
            const W cdy = cf * dy;
            const S* h = sc.H.data() + (i + 1) * n;
            const S* h_prev = sc.H.data() + i * n;
            const S* ai = sc.a.data() + i * n;
            const S* Bi = sc.Bt.data() + i * n;
            const S* Ci = sc.Ct.data() + i * n;
            S* gB = sc.Bt.data() + i * n;  // B_t is consumed here: its slot takes grad_B_t
            S* gC = sc.Ct.data() + i * n;  // likewise C_t → grad_C_t
            W sum_B = 0, sum_a = 0;
            for (index_t k = 0; k < n; ++k) {
              const S Gk = G[k] + cdy * conj_(Ci[k]);
              const S grad_a = conj_(h_prev[k]) * Gk;
              gA[k] += Delta * conj_(ai[k]) * grad_a;
              sum_a += re_conj_mul(Ap[k] * ai[k], grad_a);
              sum_B += re_conj_mul(Bi[k], Gk);
              gC[k] = cdy * conj_(h[k]);
              gB[k] = Delta_u * Gk;
              G[k] = conj_(ai[k]) * Gk;
            }
            const W grad_Delta = sum_a + u * sum_B;
            const W grad_pre =
                p.delta_softplus ? (sc.pre[sz(i)] > W(20) ? grad_Delta : grad_Delta * sigmoid(sc.pre[sz(i)])) : grad_Delta;
            grad_bias += grad_pre;
            static_cast<In*>(gp.grad_delta)[grad_row + t] = store<In>(grad_pre);
            static_cast<In*>(gp.grad_u)[grad_row + t] = store<In>(Delta * sum_B + Dc * dy);
          }
          // Scatter grad_B_t / grad_C_t of the chunk: per time step (variable) or summed (fixed).
          const auto scatter = [&](bool variable, const std::vector<S>& chunk, std::vector<S>& var, std::vector<S>& fixed) {
            if (variable) {
              S* dst = var.data() + ((bi * g + grp) * n) * l + tc;
              for (index_t k = 0; k < n; ++k)
                for (index_t i = 0; i < len; ++i) dst[k * l + i] += chunk[sz(i * n + k)];
            } else {
              for (index_t i = 0; i < len; ++i)
                for (index_t k = 0; k < n; ++k) fixed[sz(k)] += chunk[sz(i * n + k)];
            }
          };
          scatter(p.variable_B, sc.Bt, sc.grad_B_var, sc.grad_B_fixed);
          scatter(p.variable_C, sc.Ct, sc.grad_C_var, sc.grad_C_fixed);
        }
        if (gp.grad_initial_state)
          for (index_t k = 0; k < n; ++k)
            static_cast<S*>(gp.grad_initial_state)[(s * d + c) * n + k] = sc.G[sz(k)];
      }
      for (index_t k = 0; k < n; ++k) static_cast<S*>(gp.grad_A)[c * n + k] = sc.grad_A[sz(k)];
      if (!p.variable_B)
        for (index_t k = 0; k < n; ++k) static_cast<S*>(gp.grad_B)[c * n + k] = sc.grad_B_fixed[sz(k)];
      if (!p.variable_C)
        for (index_t k = 0; k < n; ++k) static_cast<S*>(gp.grad_C)[c * n + k] = sc.grad_C_fixed[sz(k)];
      if (gp.grad_D) static_cast<W*>(gp.grad_D)[c] = grad_D;
      if (gp.grad_delta_bias) static_cast<W*>(gp.grad_delta_bias)[c] = grad_bias;
    }
  };
  if (threads == 1) {
    worker(0);
  } else {
    std::vector<std::thread> pool;
    pool.reserve(sz(threads));
    for (int t = 0; t < threads; ++t) pool.emplace_back(worker, t);
    for (std::thread& th : pool) th.join();
  }
  // Variable B/C: sum the threads' shares (channels of one group may have run on different threads).
  const auto reduce = [&](bool variable, void* dst, std::vector<S> Scratch<S, W>::*member) {
    if (!variable) return;
    BC* out = static_cast<BC*>(dst);
    const index_t total = b * g * n * l;
    for (index_t i = 0; i < total; ++i) {
      S acc(0);
      for (const Scratch<S, W>& sc : scratch) acc += (sc.*member)[sz(i)];
      out[i] = store<BC>(acc);
    }
  };
  reduce(p.variable_B, gp.grad_B, &Scratch<S, W>::grad_B_var);
  reduce(p.variable_C, gp.grad_C, &Scratch<S, W>::grad_C_var);
}

}  // namespace scan_backward_detail

/// CPU selective-scan backward over a validated ScanParams and ScanGradParams (shapes there): the
/// reverse scan with states recomputed per chunk of opt.chunk_len steps from saved chunk-boundary
/// states, threaded over channels. In: float, double, ssm::half or ssm::bfloat16.
template <class In>
void selective_scan_backward(const ScanParams& p, const ScanGradParams& gp, const ScanBackwardOptions& opt = {}) {
  if (p.is_complex) scan_backward_detail::backward_impl<In, true>(p, gp, opt);
  else scan_backward_detail::backward_impl<In, false>(p, gp, opt);
}

}  // namespace ssm::cpu
