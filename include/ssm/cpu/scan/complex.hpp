// The complex-A path of the CPU selective scan (S4D-style complex diagonal A; docs/math.md §5): h complex,
// y = 2 Re(C . h) + D u. Forward: a threaded scalar loop per (batch row, channel). Backward: the reverse scan
// g_t = C_t dy_t + conj(a_{t+1}) g_{t+1}, one channel at a time, with the states recomputed chunk by chunk from
// the state before each chunk (no (b, d, l, n) storage; Gu & Dao 2023, §3.3.2 "recomputation"; docs/math.md §5.3).
// Arithmetic in f32 for f32/f16/bf16 inputs, f64 for f64.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <complex>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "ssm/core/params/selective_scan.hpp"
#include "ssm/core/params/selective_scan_grad.hpp"
#include "ssm/core/scalar.hpp"
#include "ssm/cpu/scan/engine.hpp"
#include "ssm/cpu/simd.hpp"
#include "ssm/cpu/threads.hpp"

namespace ssm::cpu::detail::scan {

/// Complex A: a threaded scalar loop per (batch row, channel) (h complex; y = 2 Re(C . h) + D u).
template <class In>
void forward_complex(const ScanParams& p, int threads) {
  using T = weight_t<In>;
  using Cx = std::complex<T>;
  const index_t items = p.batch * p.dim;
  threads = static_cast<int>(std::clamp<index_t>(items, 1, threads));
  std::atomic<index_t> next{0};
  const index_t n = p.dstate;
  const index_t dg = p.dim / p.n_groups;
  run_threads(threads, [&](int) {
    std::vector<Cx> h(static_cast<std::size_t>(n));
    for (index_t item = next++; item < items; item = next++) {
      const index_t bi = item / p.dim, c = item % p.dim, g = c / dg;
      const In* u = static_cast<const In*>(p.u) + bi * p.u_batch_stride + c * p.u_d_stride;
      const In* delta = static_cast<const In*>(p.delta) + bi * p.delta_batch_stride + c * p.delta_d_stride;
      const In* z = p.z ? static_cast<const In*>(p.z) + bi * p.z_batch_stride + c * p.z_d_stride : nullptr;
      In* out = static_cast<In*>(p.out) + bi * p.out_batch_stride + c * p.out_d_stride;
      const Cx* A = static_cast<const Cx*>(p.A) + c * p.A_d_stride;
      const Cx* B = static_cast<const Cx*>(p.B) +
                    (p.variable_B ? bi * p.B_batch_stride + g * p.B_group_stride : c * p.B_group_stride);
      const Cx* C = static_cast<const Cx*>(p.C) +
                    (p.variable_C ? bi * p.C_batch_stride + g * p.C_group_stride : c * p.C_group_stride);
      const T D = p.D ? static_cast<const T*>(p.D)[c] : T(0);
      const T bias = p.delta_bias ? static_cast<const T*>(p.delta_bias)[c] : T(0);
      for (const Segment& seg : segments_of(p, bi)) {
        for (index_t k = 0; k < n; ++k)
          h[static_cast<std::size_t>(k)] =
              p.initial_state ? static_cast<const Cx*>(p.initial_state)[seg.s * p.init_batch_stride +
                                                                         c * p.init_d_stride + k * p.init_n_stride]
                              : Cx(0);
        for (index_t t = seg.begin; t < seg.end; ++t) {
          T dt = static_cast<T>(delta[t]) + bias;
          if (p.delta_softplus) dt = scalar::softplus(dt);
          const T ut = static_cast<T>(u[t]);
          T y = 0;
          for (index_t k = 0; k < n; ++k) {
            const Cx a = A[k * p.A_n_stride];
            const T mag = std::exp(dt * a.real());
            const Cx dA(mag * std::cos(dt * a.imag()), mag * std::sin(dt * a.imag()));
            const Cx Bk = p.variable_B ? B[k * p.B_n_stride + t] : B[k * p.B_n_stride];
            const Cx Ck = p.variable_C ? C[k * p.C_n_stride + t] : C[k * p.C_n_stride];
            Cx& hk = h[static_cast<std::size_t>(k)];
            hk = dA * hk + (dt * ut) * Bk;
            y += Ck.real() * hk.real() - Ck.imag() * hk.imag();
          }
          T o = T(2) * y + D * ut;
          if (z) {
            const T zt = static_cast<T>(z[t]);
            o *= zt / (T(1) + std::exp(-zt));
          }
          if constexpr (std::is_same_v<In, T>) {
            out[t] = o;
          } else {
            out[t] = In(static_cast<float>(o));
          }
        }
        if (p.last_state) {
          Cx* last = static_cast<Cx*>(p.last_state) + seg.s * p.last_batch_stride + c * p.last_d_stride;
          for (index_t k = 0; k < n; ++k) last[k] = h[static_cast<std::size_t>(k)];
        }
      }
    }
  });
}

/// Re(conj(x) * y) without forming the product's imaginary part.
template <class W>
inline W re_conj_mul(std::complex<W> x, std::complex<W> y) { return x.real() * y.real() + x.imag() * y.imag(); }

using scalar::sigmoid;
using scalar::softplus;

/// Per-thread scratch of the per-channel backward: one row's per-step scalars, chunk buffers (K + 1 rows of n), and
/// the private accumulators of variable B/C gradients (time-major, reduced over threads at the end).
template <class S, class W>
struct ChannelScratch {
  std::vector<S> bounds;                      // (n_chunks, n) state before each chunk
  std::vector<S> H;                           // (K + 1, n) h_{t-1} of the chunk's first step, then h_t
  std::vector<S> a;                           // (K, n) exp(Delta_t A) (padded to whole vectors)
  std::vector<S> G_chunk;                     // (K, n) dL/dh_t of the chunk
  std::vector<W> Delta, u, pre;               // (l) the row's per-step scalars
  std::vector<W> dy;                          // (K)
  std::vector<S> G;                           // (n) dL/dh carried backwards
  std::vector<S> grad_A, grad_B_fixed, grad_C_fixed;  // (n)
  std::vector<S> grad_B_var, grad_C_var;      // (b, g, l, n) this thread's share, time-major
};

/// The complex-A backward, one channel at a time (real A runs the block kernels, scan/backward_kernels.hpp).
/// chunk_len: states recomputed per chunk of this many steps (0: 64); num_threads: 0 for all hardware threads.
template <class In>
void backward_complex(const ScanParams& p, const ScanGradParams& gp, int num_threads, index_t chunk_len) {
  using W = compute_t<In>;
  using S = std::complex<W>;   // state / weight arithmetic
  using BC = std::complex<W>;  // variable B/C storage
  constexpr int L = simd::lanes<W>;
  const index_t b = p.batch, d = p.dim, l = p.seqlen, n = p.dstate, g = p.n_groups, dg = d / g;
  const index_t K = chunk_len > 0 ? chunk_len : 64;
  const auto sz = [](index_t v) { return static_cast<std::size_t>(v); };
  const W cf = W(2);  // y = 2 Re(C . h)

  int threads = cpu_threads(num_threads, b * d * l * n);
  threads = static_cast<int>(std::max<index_t>(1, std::min<index_t>(threads, d)));  // d = 0: one idle worker
  std::vector<ChannelScratch<S, W>> scratch(sz(threads));

  // Variable B and C once in time-major layout (b, g, l, n), shared by every channel of a group.
  const auto time_major = [&](const void* src, index_t sb, index_t sg, index_t sn) {
    std::vector<S> out(sz(b * g * l * n));  // (b, g, l, n)
    for (index_t bi = 0; bi < b; ++bi)
      for (index_t gi = 0; gi < g; ++gi)
        for (index_t k = 0; k < n; ++k) {
          const BC* row = static_cast<const BC*>(src) + bi * sb + gi * sg + k * sn;
          S* dst = out.data() + (bi * g + gi) * l * n + k;
          for (index_t t = 0; t < l; ++t) dst[t * n] = S(load(row[t]));
        }
    return out;
  };
  const std::vector<S> B_tm = p.variable_B ? time_major(p.B, p.B_batch_stride, p.B_group_stride, p.B_n_stride)
                                           : std::vector<S>{};  // (b, g, l, n)
  const std::vector<S> C_tm = p.variable_C ? time_major(p.C, p.C_batch_stride, p.C_group_stride, p.C_n_stride)
                                           : std::vector<S>{};  // (b, g, l, n)

  const In* u_ptr = static_cast<const In*>(p.u);
  const In* delta_ptr = static_cast<const In*>(p.delta);
  const In* z_ptr = static_cast<const In*>(p.z);
  const In* go_ptr = static_cast<const In*>(gp.grad_out);
  const S* A_ptr = static_cast<const S*>(p.A);
  const W* D_ptr = static_cast<const W*>(p.D);
  const W* bias_ptr = static_cast<const W*>(p.delta_bias);

  const auto worker = [&](int tid) {
    ChannelScratch<S, W>& sc = scratch[sz(tid)];
    sc.H.assign(sz((K + 1) * n), S(0));
    sc.a.assign(sz(K * n + L), S(0));  // padded: exp2 runs over whole vectors
    sc.G_chunk.assign(sz(K * n), S(0));
    sc.Delta.assign(sz(l + L), W(0));
    sc.u.assign(sz(l), W(0));
    sc.pre.assign(sz(l + L), W(0));
    sc.dy.assign(sz(K), W(0));
    sc.G.assign(sz(n), S(0));
    sc.grad_A.assign(sz(n), S(0));
    sc.grad_B_fixed.assign(sz(n), S(0));
    sc.grad_C_fixed.assign(sz(n), S(0));
    if (p.variable_B) sc.grad_B_var.assign(sz(b * g * l * n), S(0));
    if (p.variable_C) sc.grad_C_var.assign(sz(b * g * l * n), S(0));
    std::vector<S> A(sz(n));   // (n) this channel's row of A
    std::vector<S> B_fixed(sz(n)), C_fixed(sz(n));  // (n) this channel's fixed B, C rows
    // A fixed block of channels per thread (each channel is the same work): the threads' shares of the variable B / C
    // gradients are summed below in thread order, so which channels share a partial sum must not depend on timing.
    for (index_t c = d * tid / threads, c_end = d * (tid + 1) / threads; c < c_end; ++c) {
      for (index_t k = 0; k < n; ++k) A[sz(k)] = A_ptr[c * p.A_d_stride + k * p.A_n_stride];
      if (!p.variable_B)
        for (index_t k = 0; k < n; ++k) B_fixed[sz(k)] = static_cast<const S*>(p.B)[c * p.B_group_stride + k * p.B_n_stride];
      if (!p.variable_C)
        for (index_t k = 0; k < n; ++k) C_fixed[sz(k)] = static_cast<const S*>(p.C)[c * p.C_group_stride + k * p.C_n_stride];
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
        const index_t len_row = t1 - t0, n_chunks = (len_row + K - 1) / K;
        const In* u_row = u_ptr + bi * p.u_batch_stride + c * p.u_d_stride;
        const In* delta_row = delta_ptr + bi * p.delta_batch_stride + c * p.delta_d_stride;
        const In* z_row = z_ptr ? z_ptr + bi * p.z_batch_stride + c * p.z_d_stride : nullptr;
        const In* go_row = go_ptr + bi * gp.grad_out_batch_stride + c * gp.grad_out_d_stride;
        const index_t grad_row = (bi * d + c) * l;  // contiguous (b, d, l) gradient outputs
        // B_t, C_t rows (n) and their gradient accumulators: time-major with stride n, or fixed (stride 0).
        const index_t BC_off = (bi * g + grp) * l * n;
        const S* B_base = p.variable_B ? B_tm.data() + BC_off : B_fixed.data();
        const S* C_base = p.variable_C ? C_tm.data() + BC_off : C_fixed.data();
        S* gB_base = p.variable_B ? sc.grad_B_var.data() + BC_off : nullptr;
        S* gC_base = p.variable_C ? sc.grad_C_var.data() + BC_off : nullptr;
        const index_t B_ts = p.variable_B ? n : 0, C_ts = p.variable_C ? n : 0;

        // The row's per-step scalars (index t - t0): delta + bias, Delta (softplus in vectors), u.
        for (index_t i = 0; i < len_row; ++i) {
          sc.pre[sz(i)] = static_cast<W>(load(delta_row[t0 + i])) + bias;
          sc.u[sz(i)] = static_cast<W>(load(u_row[t0 + i]));
        }
        if (p.delta_softplus) {
          for (index_t i = 0; i < len_row; i += L)
            simd::store(sc.Delta.data() + i, simd::softplus<W>(simd::load(sc.pre.data() + i)));
        } else {
          std::copy_n(sc.pre.begin(), len_row, sc.Delta.begin());
        }

        // Runs the recurrence over the chunk starting at row index r0 from H[0], keeping a_t and h_t.
        const auto scan_chunk = [&](index_t r0, index_t len) {
          S* H = sc.H.data();
          S* a = sc.a.data();
          const W* Delta = sc.Delta.data() + r0;
          const S* Ap = A.data();
          for (index_t i = 0; i < len; ++i) {
            const W Delta_u = Delta[i] * sc.u[sz(r0 + i)];
            const S* h_prev = H + i * n;
            S* h = H + (i + 1) * n;
            S* ai = a + i * n;
            const S* Bi = B_base + (t0 + r0 + i) * B_ts;
            for (index_t k = 0; k < n; ++k) {
              const S ak = std::exp(Delta[i] * Ap[k]);
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
          const index_t r0 = ch * K, len = std::min(K, len_row - r0);
          std::copy_n(sc.H.begin(), n, sc.bounds.begin() + ch * n);
          if (ch + 1 == n_chunks) break;  // the last chunk's end state is not needed
          scan_chunk(r0, len);
          std::copy_n(sc.H.begin() + len * n, n, sc.H.begin());
        }

        // Pass 2: chunks in reverse; recompute the chunk's states, then the reverse scan through it.
        for (index_t k = 0; k < n; ++k)
          sc.G[sz(k)] = gp.grad_last_state
                            ? static_cast<const S*>(gp.grad_last_state)[s * gp.grad_last_batch_stride + c * gp.grad_last_d_stride +
                                                                        k * gp.grad_last_n_stride]
                            : S(0);
        S* G = sc.G.data();
        S* gA = sc.grad_A.data();
        const S* Ap = A.data();
        // grad_delta (through softplus), grad_delta_bias and grad_u of row index r from the sums over n:
        // sum_a = Re sum conj(A a_t) conj(h_{t-1}) g_t, sum_B = Re sum conj(B_t) g_t.
        const auto finish_step = [&](index_t r, W dy, W sum_a, W sum_B) {
          const W Delta = sc.Delta[sz(r)], u = sc.u[sz(r)], pre = sc.pre[sz(r)];
          const W grad_Delta = sum_a + u * sum_B;
          const W grad_pre = p.delta_softplus ? grad_Delta * scalar::softplus_grad(pre) : grad_Delta;
          grad_bias += grad_pre;
          static_cast<In*>(gp.grad_delta)[grad_row + t0 + r] = store<In>(grad_pre);
          static_cast<In*>(gp.grad_u)[grad_row + t0 + r] = store<In>(Delta * sum_B + Dc * dy);
        };
        for (index_t ch = n_chunks - 1; ch >= 0; --ch) {
          const index_t r0 = ch * K, len = std::min(K, len_row - r0), tc = t0 + r0;
          std::copy_n(sc.bounds.begin() + ch * n, n, sc.H.begin());
          scan_chunk(r0, len);
          // Output side: out = (y + D u) silu(z)  →  dy, grad_z, grad_D.
          for (index_t i = 0; i < len; ++i) {
            const index_t t = tc + i;
            const W go = static_cast<W>(load(go_row[t]));
            W dy = go;
            if (z_row) {
              const S* h = sc.H.data() + (i + 1) * n;
              const S* Ci = C_base + t * C_ts;
              W y = 0;
              for (index_t k = 0; k < n; ++k) y += re_conj_mul(std::conj(Ci[k]), h[k]);
              y = cf * y + Dc * sc.u[sz(r0 + i)];
              const W zv = static_cast<W>(load(z_row[t])), sg = sigmoid(zv);
              dy = go * zv * sg;
              static_cast<In*>(gp.grad_z)[grad_row + t] = store<In>(go * y * sg * (W(1) + zv * (W(1) - sg)));
            }
            sc.dy[sz(i)] = dy;
            grad_D += dy * sc.u[sz(r0 + i)];
          }
          // The serial part: g_t = C_t dy_t + conj(a_{t+1}) g_{t+1}, elementwise in n.
          for (index_t i = len - 1; i >= 0; --i) {
            const W cdy = cf * sc.dy[sz(i)];
            const S* ai = sc.a.data() + i * n;
            const S* Ci = C_base + (tc + i) * C_ts;
            S* Gi = sc.G_chunk.data() + i * n;
            for (index_t k = 0; k < n; ++k) {
              const S Gk = G[k] + cdy * std::conj(Ci[k]);
              Gi[k] = Gk;
              G[k] = std::conj(ai[k]) * Gk;
            }
          }
          // The rest has no dependency between steps: vectors over n, one pair of sums per step.
          for (index_t i = 0; i < len; ++i) {
            const index_t r = r0 + i, t = tc + i;
            const W Delta = sc.Delta[sz(r)], Delta_u = Delta * sc.u[sz(r)], cdy = cf * sc.dy[sz(i)];
            const S* h = sc.H.data() + (i + 1) * n;
            const S* h_prev = sc.H.data() + i * n;
            const S* ai = sc.a.data() + i * n;
            const S* Gi = sc.G_chunk.data() + i * n;
            const S* Bi = B_base + t * B_ts;
            S* gB = gB_base ? gB_base + t * n : sc.grad_B_fixed.data();
            S* gC = gC_base ? gC_base + t * n : sc.grad_C_fixed.data();
            W sum_a = 0, sum_B = 0;
            for (index_t k = 0; k < n; ++k) {
              const S grad_a = std::conj(h_prev[k]) * Gi[k];
              gA[k] += Delta * std::conj(ai[k]) * grad_a;
              sum_a += re_conj_mul(Ap[k] * ai[k], grad_a);
              sum_B += re_conj_mul(Bi[k], Gi[k]);
              gB[k] += Delta_u * Gi[k];
              gC[k] += cdy * std::conj(h[k]);
            }
            finish_step(r, sc.dy[sz(i)], sum_a, sum_B);
          }
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
  run_threads(threads, worker);  // the one pool (cpu/threads.hpp); an exception reaches the caller
  // Variable B/C: sum the threads' shares (channels of one group may have run on different threads)
  // and write them back in the (b, g, n, l) layout.
  const auto reduce = [&](bool variable, void* dst, std::vector<S> ChannelScratch<S, W>::*member) {
    if (!variable) return;
    BC* out = static_cast<BC*>(dst);
    for (index_t bg = 0; bg < b * g; ++bg)
      for (index_t k = 0; k < n; ++k)
        for (index_t t = 0; t < l; ++t) {
          S acc(0);
          for (const ChannelScratch<S, W>& sc : scratch) acc += (sc.*member)[sz((bg * l + t) * n + k)];
          out[(bg * n + k) * l + t] = store<BC>(acc);
        }
  };
  reduce(p.variable_B, gp.grad_B, &ChannelScratch<S, W>::grad_B_var);
  reduce(p.variable_C, gp.grad_C, &ChannelScratch<S, W>::grad_C_var);
}

}  // namespace ssm::cpu::detail::scan
