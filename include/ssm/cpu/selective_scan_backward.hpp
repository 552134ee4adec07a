// CPU backward of the selective scan (S6; Gu & Dao 2023, "Mamba", §3.3.2 "recomputation"; docs/math.md §5.3):
// the reverse scan g_t = C_t dy_t + conj(a_{t+1}) g_{t+1}, with the states recomputed chunk by chunk
// from saved chunk-boundary states (no (b, d, l, n) storage), threaded over blocks of channels or, for few
// channels and long sequences, over pieces of each sequence in time (std::thread).
// Arithmetic in f32 for f32/f16/bf16 inputs, f64 for f64; real and complex A.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <complex>
#include <cstring>
#include <cstdint>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "ssm/core/dtype.hpp"
#include "ssm/cpu/selective_scan.hpp"
#include "ssm/cpu/simd.hpp"
#include "ssm/cpu/threads.hpp"
#include "ssm/core/params/selective_scan_grad.hpp"
#include "ssm/core/params/selective_scan.hpp"

namespace ssm::cpu {

struct ScanBackwardOptions {
  int num_threads = 0;         // 0: all hardware threads
  /// Real A: sequential = blocks of channels over the threads; chunked = each sequence split in time over the threads
  /// (a first phase finds the state and the gradient carry at every split point); automatic: chunked when the
  /// channel blocks of a group are fewer than twice the threads and a sequence has at least 4096 steps.
  ScanAlgo algo = ScanAlgo::automatic;
  std::int64_t chunk_len = 0;  // states recomputed per chunk of this many steps; 0: automatic
  /// The forward's saved chunk states (ScanCpuOptions::chunk_states: weight type, (b, ceil(l / kSavedChunkLen), d,
  /// n)), for real A without cu_seqlens: the backward restarts its chunks from them (chunks of kSavedChunkLen steps)
  /// instead of recomputing them with a first pass over the sequence. Ignored otherwise.
  const void* chunk_states = nullptr;
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

using simd::hsum;  // sum of a vector's lanes as a tree

using scalar::sigmoid;
using scalar::softplus;

/// Per-thread scratch: one row's per-step scalars, chunk buffers (K + 1 rows of n), and the private
/// accumulators of variable B/C gradients (time-major, reduced over threads at the end).
template <class S, class W>
struct Scratch {
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

template <class In, bool Complex>
void backward_impl(const ScanParams& p, const ScanGradParams& gp, const ScanBackwardOptions& opt) {
  using W = compute_t<In>;
  using S = std::conditional_t<Complex, std::complex<W>, W>;  // state / weight arithmetic
  using BC = std::conditional_t<Complex, std::complex<W>, In>;  // variable B/C storage
  constexpr int L = simd::lanes<W>;
  const index_t b = p.batch, d = p.dim, l = p.seqlen, n = p.dstate, g = p.n_groups, dg = d / g;
  const index_t K = opt.chunk_len > 0 ? opt.chunk_len : 64;
  const auto sz = [](index_t v) { return static_cast<std::size_t>(v); };
  const W cf = Complex ? W(2) : W(1);  // y = 2 Re(C . h) for complex A

  int threads = cpu_threads(opt.num_threads, b * d * l * n);
  threads = static_cast<int>(std::min<index_t>(threads, d));
  std::vector<Scratch<S, W>> scratch(sz(threads));
  std::atomic<index_t> next_channel{0};

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
    Scratch<S, W>& sc = scratch[sz(tid)];
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
    std::vector<W> A2(sz(n));  // (n) A log2(e) (real A: exp(Delta A) = 2^(Delta A2))
    std::vector<S> B_fixed(sz(n)), C_fixed(sz(n));  // (n) this channel's fixed B, C rows
    for (index_t c = next_channel++; c < d; c = next_channel++) {
      for (index_t k = 0; k < n; ++k) A[sz(k)] = A_ptr[c * p.A_d_stride + k * p.A_n_stride];
      if constexpr (!Complex)
        for (index_t k = 0; k < n; ++k) A2[sz(k)] = A[sz(k)] * simd::kLog2e<W>;
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
          if constexpr (!Complex) {
            // a = 2^(Delta A log2 e) over the whole chunk in vectors, then the recurrence (elementwise in n).
            const W* A2p = A2.data();
            for (index_t i = 0; i < len; ++i)
              for (index_t k = 0; k < n; ++k) a[i * n + k] = Delta[i] * A2p[k];
            for (index_t j = 0; j < len * n; j += L) simd::store(a + j, simd::exp2(simd::load(a + j)));
          }
          const S* Ap = A.data();
          for (index_t i = 0; i < len; ++i) {
            const W Delta_u = Delta[i] * sc.u[sz(r0 + i)];
            const S* h_prev = H + i * n;
            S* h = H + (i + 1) * n;
            S* ai = a + i * n;
            const S* Bi = B_base + (t0 + r0 + i) * B_ts;
            if constexpr (Complex) {
              for (index_t k = 0; k < n; ++k) {
                const S ak = std::exp(Delta[i] * Ap[k]);
                ai[k] = ak;
                h[k] = ak * h_prev[k] + Delta_u * Bi[k];
              }
            } else {
              for (index_t k = 0; k < n; ++k) h[k] = ai[k] * h_prev[k] + Delta_u * Bi[k];
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
          const W grad_pre = p.delta_softplus ? (pre > W(20) ? grad_Delta : grad_Delta * sigmoid(pre)) : grad_Delta;
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
              index_t k = 0;
              if constexpr (!Complex) {
                simd::Vec<W> v_y = simd::broadcast<W>(0);
                for (; k + L <= n; k += L) v_y = simd::fma(simd::load(Ci + k), simd::load(h + k), v_y);
                y = hsum<W>(v_y);
              }
              for (; k < n; ++k) y += re_conj_mul(conj_(Ci[k]), h[k]);
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
              const S Gk = G[k] + cdy * conj_(Ci[k]);
              Gi[k] = Gk;
              G[k] = conj_(ai[k]) * Gk;
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
            index_t k = 0;
            if constexpr (!Complex) {
              using V = simd::Vec<W>;
              V v_a = simd::broadcast<W>(0), v_B = simd::broadcast<W>(0);
              for (; k + L <= n; k += L) {
                const V G_v = simd::load(Gi + k), ahg = simd::load(ai + k) * simd::load(h_prev + k) * G_v;
                simd::store(gA + k, simd::fma(simd::broadcast(Delta), ahg, simd::load(gA + k)));
                v_a = simd::fma(simd::load(Ap + k), ahg, v_a);
                v_B = simd::fma(simd::load(Bi + k), G_v, v_B);
                simd::store(gB + k, simd::fma(simd::broadcast(Delta_u), G_v, simd::load(gB + k)));
                simd::store(gC + k, simd::fma(simd::broadcast(cdy), simd::load(h + k), simd::load(gC + k)));
              }
              sum_a = hsum<W>(v_a);
              sum_B = hsum<W>(v_B);
            }
            for (; k < n; ++k) {
              const S grad_a = conj_(h_prev[k]) * Gi[k];
              gA[k] += Delta * conj_(ai[k]) * grad_a;
              sum_a += re_conj_mul(Ap[k] * ai[k], grad_a);
              sum_B += re_conj_mul(Bi[k], Gi[k]);
              gB[k] += Delta_u * Gi[k];
              gC[k] += cdy * conj_(h[k]);
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
  if (threads == 1) {
    worker(0);
  } else {
    std::vector<std::thread> pool;
    pool.reserve(sz(threads));
    for (int t = 0; t < threads; ++t) pool.emplace_back(worker, t);
    for (std::thread& th : pool) th.join();
  }
  // Variable B/C: sum the threads' shares (channels of one group may have run on different threads)
  // and write them back in the (b, g, n, l) layout.
  const auto reduce = [&](bool variable, void* dst, std::vector<S> Scratch<S, W>::*member) {
    if (!variable) return;
    BC* out = static_cast<BC*>(dst);
    for (index_t bg = 0; bg < b * g; ++bg)
      for (index_t k = 0; k < n; ++k)
        for (index_t t = 0; t < l; ++t) {
          S acc(0);
          for (const Scratch<S, W>& sc : scratch) acc += (sc.*member)[sz((bg * l + t) * n + k)];
          out[(bg * n + k) * l + t] = store<BC>(acc);
        }
  };
  reduce(p.variable_B, gp.grad_B, &Scratch<S, W>::grad_B_var);
  reduce(p.variable_C, gp.grad_C, &Scratch<S, W>::grad_C_var);
}

// ---- real A: channels in the lanes of a vector, as in the forward ------------------------------------------
//
// W channels of one group (a block) share a vector; the state loop runs inside, so every per-channel quantity
// (h, G = dL/dh, grad_A, grad_D, grad_delta_bias, fixed grad_B / grad_C) is lane-wise with no horizontal sum.
// Per (batch row, group) the blocks of the group are split over the threads, and every thread walks its blocks
// chunk by chunk in reverse time, so that the gradients of variable B and C, which are sums over the channels
// of the group, accumulate lane-wise over all of the thread's blocks in a chunk buffer (chunk, n, W) and are
// reduced over the lanes once per chunk (not once per block and step). Per segment:
//   pass 1  per block: the forward recurrence (no output) from the initial state, recording the state at the
//           start of every chunk of K steps;
//   pass 2  chunks in reverse; per block: recompute the chunk's states h_t and decays a_t = 2^(Delta_t A log2 e)
//           from the recorded state (stored, (K, n, W)), the output side (y, dy = dL/dy, grad_z, grad_D), then
//           the reverse scan G_t = C_t dy_t + a_{t+1} G_{t+1} with the per-step sums over n
//           SA_t = sum_k A_k a_tk h_{t-1,k} G_tk and SB_t = sum_k B_tk G_tk, from which
//           grad_Delta_t = SA_t + u_t SB_t, grad_u_t = Delta_t SB_t + D dy_t (docs/math.md §5.3).
// Time split (few blocks, long sequences: the long-thin shape): each sequence is cut into one piece per thread on
// chunk boundaries. Both recurrences are linear, so a first phase runs, per piece and in parallel, the forward
// recurrence from a zero state (its end state; not for the last piece, nor with saved states) and the reverse one
// from a zero gradient (its carry at the start; not for the first piece), with the sum of Delta over the piece;
// a serial pass composes them with the decay over a piece 2^(A log2(e) sum Delta):
//   h(start of piece q + 1) = decay_q h(start of q) + hend_q,   G(into piece q - 1) = decay_q G(into q) + Gloc_q,
// and then every piece runs the passes above from its true state and carry, writing its own range of every
// per-step output (the variable grad_B / grad_C included: one shared buffer, no per-thread copies).
template <class In>
struct BlockBackward {
  using T = detail::scan::weight_t<In>;
  using V = simd::Vec<T>;
  static constexpr int W = simd::lanes<T>;
  // States per group of independent chains in the inner loops: 4 with 32 vector registers, 2 with 16 (the reverse
  // loop holds G, grad_A and A per state plus five per-step vectors: 4 states would spill on AVX2).
  static constexpr int NG = simd::kRegisters >= 32 ? 4 : 2;

  const ScanParams& p;
  const ScanGradParams& gp;
  detail::scan::RealScan<In> scan;
  // Steps per recompute chunk: the chunk's h, a and the variable grad_B / grad_C sums, (K, n, W) each, stay in L2
  // (K n <= 2048: 512 KiB per thread for f32). Measured at b = 1, d = 1536, n = 16, l = 2048, one thread
  // (bench_selective_scan): K = 128 41.2 ms, K = 32 45.3 ms, K = 256 44.0 ms; l = 8192: 180 ms against 210 ms.
  index_t K = 32;

  const T* saved = nullptr;  // the forward's chunk states (b, chunks of K = kSavedChunkLen, d, n), or null

  BlockBackward(const ScanParams& params, const ScanGradParams& grads) : p(params), gp(grads), scan(params) {}

  /// Constants of one block, cached for pass 2 (setup_block fills them from the weights).
  struct BlockConst {
    std::vector<T> A2, A, Bf, Cf;  // (n, W): A log2(e), A, fixed B, fixed C (0 in unused lanes)
    T D[W] = {}, bias[W] = {};
    index_t c0 = 0;
    int count = 0;
  };

  /// Per-thread scratch.
  struct Scratch {
    detail::scan::Workspace<T> ws;  // the forward's workspace (tile = K): rows, conversions, B / C tiles
    detail::scan::AlignedBuffer<T> pre, Delta, u, du, z, go, y, dy, SA, SB;  // (K, W) each
    detail::scan::AlignedBuffer<T> hbuf;        // (K + 1, n, W): slot 0 the state before the chunk, slot i + 1 h_i
    detail::scan::AlignedBuffer<T> abuf;        // (K, n, W)
    detail::scan::AlignedBuffer<T> P, Q;        // (K, n, W) lane-wise sums of grad_B / grad_C over the blocks
    detail::scan::AlignedBuffer<T> rows;        // (W, K padded) a chunk transposed back to channel rows
    std::vector<T> gB, gC;                      // (b * g, n, l) this thread's variable grad_B / grad_C, unless
    T* gBp = nullptr;                           // they accumulate in the output itself (thread 0, In = T): where
    T* gCp = nullptr;                           // this thread's sums go
    detail::scan::PrefetchPlan pf;              // the next block's rows, fetched while this block is processed
  };

  // ---- accessors ------------------------------------------------------------------------------------------
  const In* go_row(index_t bi, index_t c) const {
    return static_cast<const In*>(gp.grad_out) + bi * gp.grad_out_batch_stride + c * gp.grad_out_d_stride;
  }
  In* out_row(void* base, index_t bi, index_t c) const { return static_cast<In*>(base) + (bi * p.dim + c) * p.seqlen; }

  /// rows of the block's channels at [t0, t0 + len) <- src (len, W), transposed back, in the input type.
  void scatter(Scratch& sc, void* base, index_t bi, index_t t0, index_t len, const T* src) const {
    if (base == nullptr) return;
    const index_t ld = sc.ws.tile_pad();
    scan.transpose_to_rows(sc.ws, len, src, sc.rows.data());
    for (int j = 0; j < sc.ws.count; ++j)
      detail::scan::store_row(sc.rows.data() + j * ld, len, out_row(base, bi, sc.ws.c0 + j) + t0);
  }

  /// Plans the prefetch of the delta, u, z and grad_out rows of channels [c0, c0 + count) over [t0, t0 + len).
  void plan_prefetch(Scratch& sc, index_t bi, index_t c0, int count, index_t t0, index_t len) const {
    auto& pf = sc.pf;
    pf.nrows = 0;
    for (int j = 0; j < count; ++j) {
      const index_t c = c0 + j;
      pf.rows[pf.nrows++] = reinterpret_cast<const char*>(scan.delta_row(bi, c) + t0);
      pf.rows[pf.nrows++] = reinterpret_cast<const char*>(scan.u_row(bi, c) + t0);
      if (p.z) pf.rows[pf.nrows++] = reinterpret_cast<const char*>(scan.z_row(bi, c) + t0);
      pf.rows[pf.nrows++] = reinterpret_cast<const char*>(go_row(bi, c) + t0);
    }
    pf.row = 0;
    pf.off = 0;
    pf.end = pf.nrows > 0 ? len * static_cast<index_t>(sizeof(In)) : 0;
  }

  /// (len, W) tiles of the chunk [t0, t0 + len): pre = delta + bias, Delta, u, Delta u; with `all` also z and
  /// grad_out.
  void prepare(Scratch& sc, const BlockConst& bc, index_t bi, index_t t0, index_t len, bool all) const {
    auto& ws = sc.ws;
    scan.gather_transposed(ws, [&](index_t c) { return scan.delta_row(bi, c); }, t0, len, sc.pre.data());
    scan.gather_transposed(ws, [&](index_t c) { return scan.u_row(bi, c); }, t0, len, sc.u.data());
    const V bias = simd::load(bc.bias);
    for (index_t i = 0; i < len; ++i) {
      const V x = simd::load(sc.pre.data() + i * W) + bias;
      simd::store(sc.pre.data() + i * W, x);
      const V dt = p.delta_softplus ? simd::softplus<T>(x) : x;
      simd::store(sc.Delta.data() + i * W, dt);
      simd::store(sc.du.data() + i * W, dt * simd::load(sc.u.data() + i * W));
    }
    if (!all) return;
    if (p.z) scan.gather_transposed(ws, [&](index_t c) { return scan.z_row(bi, c); }, t0, len, sc.z.data());
    scan.gather_transposed(ws, [&](index_t c) { return go_row(bi, c); }, t0, len, sc.go.data());
  }

  /// Calls f(std::integral_constant<int, G>{}, k0) over the n states in groups of G: NG, then 2, then 1. The group
  /// size is a compile-time constant so that a group's chains stay in registers (with a run-time size GCC kept the
  /// arrays of chains on the stack: a store and a reload on every step's dependency chain).
  template <class F>
  static void state_groups(index_t n, F&& f) {
    index_t k0 = 0;
    for (; k0 + NG <= n; k0 += NG) f(std::integral_constant<int, NG>{}, k0);
    if constexpr (NG > 2)
      for (; k0 + 2 <= n; k0 += 2) f(std::integral_constant<int, 2>{}, k0);
    for (; k0 < n; ++k0) f(std::integral_constant<int, 1>{}, k0);
  }

  /// The recurrence over len steps from h (n, W; advanced in place). With Store, a_t and h_t go to abuf / hbuf
  /// and y_t = C_t . h_t to sc.y.
  template <bool Store, bool VarB, bool VarC>
  void recur(Scratch& sc, const BlockConst& bc, index_t len, T* SSM_RESTRICT h, const T* Bp, index_t Bns,
             const T* Cp, index_t Cns) const {
    if constexpr (Store) std::memset(static_cast<void*>(sc.y.data()), 0, static_cast<std::size_t>(len * W) * sizeof(T));
    state_groups(p.dstate, [&](auto group, index_t k0) {
      recur_group<decltype(group)::value, Store, VarB, VarC>(sc, bc, len, k0, h, Bp, Bns, Cp, Cns);
    });
  }
  /// recur for the states [k0, k0 + G). The sizes and strides are parameters, not captures by reference: the
  /// prefetch plan's int64 stores could alias those, and they were reloaded on every step.
  template <int G, bool Store, bool VarB, bool VarC>
  void recur_group(Scratch& sc, const BlockConst& bc, index_t len, index_t k0, T* SSM_RESTRICT h, const T* Bp,
                   index_t Bns, const T* Cp, index_t Cns) const {
    const index_t n = p.dstate;
    // the buffers as local restrict pointers: read through sc, they were reloaded on every step
    const T* SSM_RESTRICT dl = sc.Delta.data();
    const T* SSM_RESTRICT du = sc.du.data();
    T* SSM_RESTRICT ab = sc.abuf.data();
    T* SSM_RESTRICT hb = sc.hbuf.data();
    T* SSM_RESTRICT y = sc.y.data();
    detail::scan::PrefetchPlan& pf = sc.pf;
    V a2[G], hk[G], bf[G], cf[G];
    for (int j = 0; j < G; ++j) {
      const index_t k = k0 + j;
      a2[j] = simd::load(bc.A2.data() + k * W);
      hk[j] = simd::load(h + k * W);
      if constexpr (Store) simd::store(hb + k * W, hk[j]);  // slot 0: the state before the chunk
      if constexpr (!VarB) bf[j] = simd::load(bc.Bf.data() + k * W);
      if constexpr (!VarC) cf[j] = simd::load(bc.Cf.data() + k * W);
    }
    for (index_t i = 0; i < len; ++i) {
      if constexpr (Store) pf.next();
      const V d = simd::load(dl + i * W), x = simd::load(du + i * W);
      V acc = simd::broadcast(T(0));
      for (int j = 0; j < G; ++j) {
        const index_t k = k0 + j;
        const V a = simd::exp2_decay(d * a2[j]);
        const V bx = VarB ? x * Bp[k * Bns + i] : x * bf[j];
        hk[j] = simd::fma(a, hk[j], bx);
        if constexpr (Store) {
          simd::store(ab + (i * n + k) * W, a);
          simd::store(hb + ((i + 1) * n + k) * W, hk[j]);
          acc = VarC ? simd::fma(hk[j], simd::broadcast(Cp[k * Cns + i]), acc) : simd::fma(hk[j], cf[j], acc);
        }
      }
      if constexpr (Store) simd::store(y + i * W, simd::load(y + i * W) + acc);
    }
    for (int j = 0; j < G; ++j) simd::store(h + (k0 + j) * W, hk[j]);
  }

  /// The reverse scan of one chunk for one block: G (n, W) carried in (dL/dh after the chunk, times the next
  /// decay) and out; accumulators gA, gBf, gCf (n, W) lane-wise; variable B / C sums into sc.P / sc.Q.
  template <bool VarB, bool VarC>
  void reverse(Scratch& sc, const BlockConst& bc, index_t len, T* SSM_RESTRICT G, T* SSM_RESTRICT gA,
               T* SSM_RESTRICT gBf, T* SSM_RESTRICT gCf, const T* Bp, index_t Bns, const T* Cp, index_t Cns) const {
    std::memset(static_cast<void*>(sc.SA.data()), 0, static_cast<std::size_t>(len * W) * sizeof(T));
    std::memset(static_cast<void*>(sc.SB.data()), 0, static_cast<std::size_t>(len * W) * sizeof(T));
    state_groups(p.dstate, [&](auto group, index_t k0) {
      reverse_group<decltype(group)::value, VarB, VarC>(sc, bc, len, k0, G, gA, gBf, gCf, Bp, Bns, Cp, Cns);
    });
  }
  /// reverse for the states [k0, k0 + NS) (parameters by value, as in recur_group).
  template <int NS, bool VarB, bool VarC>
  void reverse_group(Scratch& sc, const BlockConst& bc, index_t len, index_t k0, T* SSM_RESTRICT G,
                     T* SSM_RESTRICT gA, T* SSM_RESTRICT gBf, T* SSM_RESTRICT gCf, const T* Bp, index_t Bns,
                     const T* Cp, index_t Cns) const {
    const index_t n = p.dstate;
    const T* SSM_RESTRICT dyp = sc.dy.data();
    const T* SSM_RESTRICT dl = sc.Delta.data();
    const T* SSM_RESTRICT du = sc.du.data();
    const T* SSM_RESTRICT ab = sc.abuf.data();
    const T* SSM_RESTRICT hb = sc.hbuf.data();
    T* SSM_RESTRICT SA = sc.SA.data();
    T* SSM_RESTRICT SB = sc.SB.data();
    T* SSM_RESTRICT Pb = sc.P.data();
    T* SSM_RESTRICT Qb = sc.Q.data();
    detail::scan::PrefetchPlan& pf = sc.pf;
    V Gk[NS], gAk[NS], Ak[NS], bf[NS], cf[NS], gbf[NS], gcf[NS];
    V hk[NS];  // h_t of the step about to be processed: each step loads h_{t-1}, which is the next step's h_t
    for (int j = 0; j < NS; ++j) {
      const index_t k = k0 + j;
      hk[j] = simd::load(hb + (len * n + k) * W);
      Gk[j] = simd::load(G + k * W);
      gAk[j] = simd::load(gA + k * W);
      Ak[j] = simd::load(bc.A.data() + k * W);
      if constexpr (!VarB) {
        bf[j] = simd::load(bc.Bf.data() + k * W);
        gbf[j] = simd::load(gBf + k * W);
      }
      if constexpr (!VarC) {
        cf[j] = simd::load(bc.Cf.data() + k * W);
        gcf[j] = simd::load(gCf + k * W);
      }
    }
    for (index_t i = len - 1; i >= 0; --i) {
      pf.next();
      const V dy = simd::load(dyp + i * W), dt = simd::load(dl + i * W);
      const V x = simd::load(du + i * W);
      V sa = simd::load(SA + i * W), sb = simd::load(SB + i * W);
      for (int j = 0; j < NS; ++j) {
        const index_t k = k0 + j;
        const V Ck = VarC ? simd::broadcast(Cp[k * Cns + i]) : cf[j];
        const V Bk = VarB ? simd::broadcast(Bp[k * Bns + i]) : bf[j];
        const V Gt = simd::fma(Ck, dy, Gk[j]);  // dL/dh_t
        const V a = simd::load(ab + (i * n + k) * W);
        const V h = hk[j];                                        // h_t
        const V h_prev = simd::load(hb + (i * n + k) * W);        // h_{t-1}
        hk[j] = h_prev;
        // a_t h_{t-1} from h_{t-1} itself. Recovering it as h_t - Delta_t u_t B_t saves this load but cancels
        // where a_t << 1 (large Delta): grad_A was then 1.9e-3 off in f32 at Delta ~ 20.
        const V ahg = a * h_prev * Gt;
        gAk[j] = simd::fma(dt, ahg, gAk[j]);
        sa = simd::fma(Ak[j], ahg, sa);
        sb = simd::fma(Bk, Gt, sb);
        if constexpr (VarB) {
          T* P = Pb + (i * n + k) * W;
          simd::store(P, simd::fma(x, Gt, simd::load(P)));
        } else {
          gbf[j] = simd::fma(x, Gt, gbf[j]);
        }
        if constexpr (VarC) {
          T* Q = Qb + (i * n + k) * W;
          simd::store(Q, simd::fma(dy, h, simd::load(Q)));
        } else {
          gcf[j] = simd::fma(dy, h, gcf[j]);
        }
        Gk[j] = a * Gt;
      }
      simd::store(SA + i * W, sa);
      simd::store(SB + i * W, sb);
    }
    for (int j = 0; j < NS; ++j) {
      const index_t k = k0 + j;
      simd::store(G + k * W, Gk[j]);
      simd::store(gA + k * W, gAk[j]);
      if constexpr (!VarB) simd::store(gBf + k * W, gbf[j]);
      if constexpr (!VarC) simd::store(gCf + k * W, gcf[j]);
    }
  }

  template <bool Store>
  void recur_any(Scratch& sc, const BlockConst& bc, index_t len, T* h, const T* Bp, index_t Bns, const T* Cp,
                 index_t Cns) const {
    if (p.variable_B && p.variable_C) recur<Store, true, true>(sc, bc, len, h, Bp, Bns, Cp, Cns);
    else if (p.variable_B) recur<Store, true, false>(sc, bc, len, h, Bp, Bns, Cp, Cns);
    else if (p.variable_C) recur<Store, false, true>(sc, bc, len, h, Bp, Bns, Cp, Cns);
    else recur<Store, false, false>(sc, bc, len, h, Bp, Bns, Cp, Cns);
  }
  void reverse_any(Scratch& sc, const BlockConst& bc, index_t len, T* G, T* gA, T* gBf, T* gCf,
                   const T* Bp, index_t Bns, const T* Cp, index_t Cns) const {
    if (p.variable_B && p.variable_C) reverse<true, true>(sc, bc, len, G, gA, gBf, gCf, Bp, Bns, Cp, Cns);
    else if (p.variable_B) reverse<true, false>(sc, bc, len, G, gA, gBf, gCf, Bp, Bns, Cp, Cns);
    else if (p.variable_C) reverse<false, true>(sc, bc, len, G, gA, gBf, gCf, Bp, Bns, Cp, Cns);
    else reverse<false, false>(sc, bc, len, G, gA, gBf, gCf, Bp, Bns, Cp, Cns);
  }

  /// Lane-wise accumulators of one block over one piece.
  struct BlockAcc {
    std::vector<T> gA, gBf, gCf;  // (n, W)
    T gD[W] = {}, gbias[W] = {};
  };

  /// Per-channel sums of one thread: grad_A and fixed grad_B / grad_C (d, n), grad_D and grad_delta_bias (d).
  struct ChannelSums {
    std::vector<T> gA, gBf, gCf, gD, gbias;
    void init(index_t d, index_t n) {
      for (auto* v : {&gA, &gBf, &gCf}) v->assign(static_cast<std::size_t>(d * n), T(0));
      for (auto* v : {&gD, &gbias}) v->assign(static_cast<std::size_t>(d), T(0));
    }
  };

  /// A time range [begin, end) of sequence s (batch row bi) for the blocks of one group. Where the range starts or
  /// ends its sequence, the state and the gradient come from the call's arguments (initial state, grad_last_state,
  /// grad_initial_state); inside a sequence (the time-split path) from h0 / G_in and to G_out, each (nb, n, W).
  /// G is dL/dh carried through the recurrence: G_in the one of h_{end-1} from the steps after `end`, G_out the
  /// one of h_{begin-1}.
  struct Piece {
    index_t begin = 0, end = 0, s = 0;
    const T* h0 = nullptr;    // state at begin; null: the sequence's initial state
    const T* G_in = nullptr;  // null: grad_last_state (or zero)
    T* G_out = nullptr;       // null: grad_initial_state (when asked for)
  };

  /// The constants of `blocks` (filled through ws).
  std::vector<BlockConst> make_consts(detail::scan::Workspace<T>& ws, const std::vector<std::pair<index_t, int>>& blocks) const {
    const index_t nW = p.dstate * W;
    std::vector<BlockConst> bcs(blocks.size());
    for (std::size_t j = 0; j < blocks.size(); ++j) {
      const auto [c0, count] = blocks[j];
      scan.setup_block(ws, c0, count);
      BlockConst& bc = bcs[j];
      bc.c0 = c0, bc.count = count;
      bc.A2.assign(ws.A2.data(), ws.A2.data() + nW);
      bc.A.resize(static_cast<std::size_t>(nW));
      for (std::size_t e = 0; e < bc.A.size(); ++e) bc.A[e] = bc.A2[e] / simd::kLog2e<T>;  // A itself
      bc.Bf.assign(ws.Bfix.data(), ws.Bfix.data() + nW);
      bc.Cf.assign(ws.Cfix.data(), ws.Cfix.data() + nW);
      std::copy(ws.D, ws.D + W, bc.D);
      std::copy(ws.bias, ws.bias + W, bc.bias);
    }
    return bcs;
  }

  static void use_block(Scratch& sc, const BlockConst& bc) {
    sc.ws.c0 = bc.c0;
    sc.ws.count = bc.count;
  }

  /// dst (n, W) <- grad_last_state of sequence s for the block's channels (0 in unused lanes, and without it).
  void load_grad_last(const BlockConst& bc, index_t s, T* dst) const {
    std::fill(dst, dst + p.dstate * W, T(0));
    if (!gp.grad_last_state) return;
    const T* src = static_cast<const T*>(gp.grad_last_state) + s * gp.grad_last_batch_stride;
    for (int lane = 0; lane < bc.count; ++lane)
      for (index_t k = 0; k < p.dstate; ++k)
        dst[k * W + lane] = src[(bc.c0 + lane) * gp.grad_last_d_stride + k * gp.grad_last_n_stride];
  }

  /// h (n, W) advanced over the lc steps from t0 (no output); the block must be in use (use_block).
  void advance(Scratch& sc, const BlockConst& bc, index_t bi, index_t grp, index_t t0, index_t lc, T* h) const {
    prepare(sc, bc, bi, t0, lc, false);
    const T *Bp, *Cp;
    index_t Bns, Cns;
    scan.tile_BC(sc.ws, bi, grp, t0, lc, Bp, Bns, Cp, Cns);
    recur_any<false>(sc, bc, lc, h, Bp, Bns, Cp, Cns);
  }

  /// x (n, W) <- 2^(A log2(e) sum Delta) x + local: a state or gradient carry taken across a range, from the range's
  /// sum of Delta per lane (ds) and what the range gives from zero (local). The time split's composition.
  void compose(const BlockConst& bc, const double* ds, const T* local, T* x) const {
    alignas(64) T sum[W];
    for (int lane = 0; lane < W; ++lane) sum[lane] = static_cast<T>(ds[lane]);
    detail::scan::compose_decay(p.dstate, bc.A2.data(), simd::load(sum), local, x);
  }

  /// dy = dL/dy of the chunk's steps in sc.dy: grad_out * silu(z) (sc.go, sc.z from prepare), or grad_out.
  /// With grad_z, sc.z is overwritten by dL/dz = grad_out * (y + D u) * silu'(z) (y in sc.y); returns sum dy u.
  V output_side(Scratch& sc, const BlockConst& bc, index_t len, bool grad_z) const {
    const V D = simd::load(bc.D);
    V gD = simd::broadcast(T(0));
    for (index_t i = 0; i < len; ++i) {
      const V u = simd::load(sc.u.data() + i * W), go = simd::load(sc.go.data() + i * W);
      V dy = go;
      if (p.z) {
        const V z = simd::load(sc.z.data() + i * W);
        const V sg = simd::reciprocal<T>(T(1) + simd::exp<T>(-z));
        dy = go * z * sg;
        if (grad_z) {
          const V y = simd::fma(D, u, simd::load(sc.y.data() + i * W));
          simd::store(sc.z.data() + i * W, go * y * sg * (T(1) + z * (T(1) - sg)));
        }
      }
      simd::store(sc.dy.data() + i * W, dy);
      gD = simd::fma(dy, u, gD);
    }
    return gD;
  }

  /// The reverse recurrence alone (the time-split path's first phase): G <- the carry after len steps backwards,
  /// G_t = C_t dy_t + G, G = a_t G_t (a_t = 2^(Delta_t A log2 e), as recur computes it).
  template <bool VarC>
  void reverse_carry(const Scratch& sc, const BlockConst& bc, index_t len, T* SSM_RESTRICT G, const T* Cp,
                     index_t Cns) const {
    state_groups(p.dstate, [&](auto group, index_t k0) {
      constexpr int NS = decltype(group)::value;
      V Gk[NS], a2[NS], cf[NS];
      for (int j = 0; j < NS; ++j) {
        const index_t k = k0 + j;
        Gk[j] = simd::load(G + k * W);
        a2[j] = simd::load(bc.A2.data() + k * W);
        if constexpr (!VarC) cf[j] = simd::load(bc.Cf.data() + k * W);
      }
      for (index_t i = len - 1; i >= 0; --i) {
        const V dy = simd::load(sc.dy.data() + i * W), dt = simd::load(sc.Delta.data() + i * W);
        for (int j = 0; j < NS; ++j) {
          const V Ck = VarC ? simd::broadcast(Cp[(k0 + j) * Cns + i]) : cf[j];
          Gk[j] = simd::exp2_decay(dt * a2[j]) * simd::fma(Ck, dy, Gk[j]);
        }
      }
      for (int j = 0; j < NS; ++j) simd::store(G + (k0 + j) * W, Gk[j]);
    });
  }

  /// First phase of the time-split path for the blocks bcs[0, nb) of group grp over [begin, end) of batch row bi:
  /// with hend (nb, n, W), the state at `end` reached from a zero state at `begin`; with Gloc (nb, n, W), the carry
  /// at `begin` of the reverse recurrence started from zero after `end`; in either case dsum (nb, W) = sum of
  /// Delta over the range per lane (f32 within a chunk, added up in double).
  void carry(Scratch& sc, const BlockConst* bcs, std::size_t nb, index_t bi, index_t grp, index_t begin, index_t end,
             T* hend, T* Gloc, double* dsum) const {
    const index_t nW = p.dstate * W, chunks = (end - begin + K - 1) / K;
    for (std::size_t j = 0; j < nb; ++j) {
      const BlockConst& bc = bcs[j];
      use_block(sc, bc);
      double* ds = dsum + j * W;
      std::fill(ds, ds + W, 0.0);
      const auto add_dsum = [&](index_t lc) {
        V s = simd::broadcast(T(0));
        for (index_t i = 0; i < lc; ++i) s += simd::load(sc.Delta.data() + i * W);
        alignas(64) T part[W];
        simd::store(part, s);
        for (int lane = 0; lane < W; ++lane) ds[lane] += static_cast<double>(part[lane]);
      };
      if (hend) {
        T* h = hend + j * nW;
        std::fill(h, h + nW, T(0));
        for (index_t ch = 0; ch < chunks; ++ch) {
          const index_t t0 = begin + ch * K, lc = std::min(K, end - t0);
          advance(sc, bc, bi, grp, t0, lc, h);
          add_dsum(lc);
        }
      }
      if (Gloc) {
        T* G = Gloc + j * nW;
        std::fill(G, G + nW, T(0));
        for (index_t ch = chunks - 1; ch >= 0; --ch) {
          const index_t t0 = begin + ch * K, lc = std::min(K, end - t0);
          prepare(sc, bc, bi, t0, lc, true);
          (void)output_side(sc, bc, lc, false);
          const T *Bp, *Cp;
          index_t Bns, Cns;
          scan.tile_BC(sc.ws, bi, grp, t0, lc, Bp, Bns, Cp, Cns);
          if (p.variable_C) reverse_carry<true>(sc, bc, lc, G, Cp, Cns);
          else reverse_carry<false>(sc, bc, lc, G, Cp, Cns);
          if (!hend) add_dsum(lc);
        }
      }
    }
  }

  /// The blocks bcs[0, nb) (one group, grp) over one piece of batch row bi: every gradient of the piece. Adds into
  /// the thread's per-channel sums and its variable grad_B / grad_C (sc.gBp, sc.gCp).
  void run_slice(Scratch& sc, index_t bi, index_t grp, const BlockConst* bcs, std::size_t nb, const Piece& piece,
                 ChannelSums& sums) const {
    const index_t n = p.dstate, nW = n * W;
    std::vector<BlockAcc> acc(nb);
    for (BlockAcc& a : acc)
      for (auto* v : {&a.gA, &a.gBf, &a.gCf}) v->assign(static_cast<std::size_t>(nW), T(0));
    const index_t len = piece.end - piece.begin, chunks = std::max<index_t>(1, (len + K - 1) / K);
    std::vector<T> bound(static_cast<std::size_t>(nb * chunks * nW), T(0));  // (nb, chunks, n, W)
    std::vector<T> G(static_cast<std::size_t>(nb * nW));                      // (nb, n, W)
    std::vector<T> h(static_cast<std::size_t>(nW));
    const auto bound_of = [&](std::size_t j, index_t ch) {
      return bound.data() + (j * static_cast<std::size_t>(chunks) + static_cast<std::size_t>(ch)) * static_cast<std::size_t>(nW);
    };
    // pass 1: the state at the start of every chunk (saved by the forward, or recomputed here)
    if (saved) {  // (b, ceil(l / K), d, n); the piece starts on a chunk boundary (no cu_seqlens)
      const index_t all_chunks = (p.seqlen + K - 1) / K, first = piece.begin / K;
      for (std::size_t j = 0; j < nb; ++j)
        for (index_t ch = 0; ch < chunks; ++ch) {
          T* dst = bound_of(j, ch);
          const T* src = saved + ((bi * all_chunks + first + ch) * p.dim + bcs[j].c0) * n;
          for (int lane = 0; lane < bcs[j].count; ++lane)  // unused lanes stay 0
            for (index_t k = 0; k < n; ++k) dst[k * W + lane] = src[lane * n + k];
        }
    }
    for (std::size_t j = 0; j < (saved ? 0 : nb); ++j) {
      use_block(sc, bcs[j]);
      if (piece.h0) {
        std::copy(piece.h0 + j * nW, piece.h0 + (j + 1) * nW, h.begin());
      } else {
        scan.load_state(sc.ws, piece.s);
        std::copy(sc.ws.h.data(), sc.ws.h.data() + nW, h.begin());
      }
      for (index_t ch = 0; ch < chunks; ++ch) {
        std::copy(h.begin(), h.end(), bound_of(j, ch));
        const index_t t0 = piece.begin + ch * K, lc = std::min(K, piece.end - t0);
        if (ch + 1 == chunks || lc <= 0) break;
        advance(sc, bcs[j], bi, grp, t0, lc, h.data());
      }
    }
    // pass 2: chunks in reverse
    for (std::size_t j = 0; j < nb; ++j) {
      T* Gj = G.data() + j * static_cast<std::size_t>(nW);
      if (piece.G_in) {
        std::copy(piece.G_in + j * nW, piece.G_in + (j + 1) * nW, Gj);
      } else {
        load_grad_last(bcs[j], piece.s, Gj);
      }
    }
    for (index_t ch = chunks - 1; ch >= 0; --ch) {
      const index_t t0 = piece.begin + ch * K, lc = std::min(K, piece.end - t0);
      if (lc <= 0) continue;
      const auto chunk_bytes = static_cast<std::size_t>(lc * nW) * sizeof(T);
      if (p.variable_B) std::memset(static_cast<void*>(sc.P.data()), 0, chunk_bytes);
      if (p.variable_C) std::memset(static_cast<void*>(sc.Q.data()), 0, chunk_bytes);
      for (std::size_t j = 0; j < nb; ++j) {
        const BlockConst& bc = bcs[j];
        BlockAcc& a = acc[j];
        use_block(sc, bc);
        prepare(sc, bc, bi, t0, lc, true);
        if (j + 1 < nb) {
          plan_prefetch(sc, bi, bcs[j + 1].c0, bcs[j + 1].count, t0, lc);
        } else if (ch > 0) {
          plan_prefetch(sc, bi, bcs[0].c0, bcs[0].count, t0 - K, K);
        } else {
          sc.pf.end = 0;
        }
        const T *Bp, *Cp;
        index_t Bns, Cns;
        scan.tile_BC(sc.ws, bi, grp, t0, lc, Bp, Bns, Cp, Cns);
        const T* h0 = bound_of(j, ch);
        std::copy(h0, h0 + nW, h.begin());
        recur_any<true>(sc, bc, lc, h.data(), Bp, Bns, Cp, Cns);
        // the output side: out = (y + D u) silu(z)
        simd::store(a.gD, simd::load(a.gD) + output_side(sc, bc, lc, true));
        reverse_any(sc, bc, lc, G.data() + j * static_cast<std::size_t>(nW), a.gA.data(), a.gBf.data(),
                    a.gCf.data(), Bp, Bns, Cp, Cns);
        // grad_delta (through softplus), grad_u, grad_delta_bias
        const V D = simd::load(bc.D);
        V gbias = simd::load(a.gbias);
        for (index_t i = 0; i < lc; ++i) {
          const V sa = simd::load(sc.SA.data() + i * W), sb = simd::load(sc.SB.data() + i * W);
          const V u = simd::load(sc.u.data() + i * W), dt = simd::load(sc.Delta.data() + i * W);
          V gpre = simd::fma(u, sb, sa);  // grad_Delta
          if (p.delta_softplus) {
            const V pre = simd::load(sc.pre.data() + i * W);
            const V sg = simd::reciprocal<T>(T(1) + simd::exp<T>(-pre));
            gpre = simd::select<T>(pre > T(20), gpre, gpre * sg);
          }
          gbias += gpre;
          simd::store(sc.pre.data() + i * W, gpre);                                                  // grad_delta
          simd::store(sc.u.data() + i * W, simd::fma(D, simd::load(sc.dy.data() + i * W), dt * sb));  // grad_u
        }
        simd::store(a.gbias, gbias);
        sc.pf.finish();
        scatter(sc, gp.grad_delta, bi, t0, lc, sc.pre.data());
        scatter(sc, gp.grad_u, bi, t0, lc, sc.u.data());
        if (p.z) scatter(sc, gp.grad_z, bi, t0, lc, sc.z.data());
      }
      // variable B / C: the lane-wise sums over this thread's blocks, reduced over the lanes. W steps at a time:
      // the (W steps, W lanes) tile of one state transposed in registers and its rows added, so one vector holds
      // the sums of W consecutive steps (added to the output with one load and store); the tail step by step.
      // (With a single channel block, the long-thin shape, the reduction per step was half of the backward.)
      const auto reduce = [&](bool variable, const detail::scan::AlignedBuffer<T>& buf, T* out) {
        if (!variable) return;
        T* o = out + (bi * p.n_groups + grp) * n * p.seqlen;
        index_t i0 = 0;
        for (; i0 + W <= lc; i0 += W)
          for (index_t k = 0; k < n; ++k) {
            V rows[W];
            for (int r = 0; r < W; ++r) rows[r] = simd::load(buf.data() + ((i0 + r) * n + k) * W);
            simd::transpose<T>(rows);  // rows[lane][r] = buf[i0 + r, k, lane]
            V sum = rows[0];
            for (int r = 1; r < W; ++r) sum = sum + rows[r];
            T* dst = o + k * p.seqlen + t0 + i0;
            simd::store(dst, simd::load(dst) + sum);
          }
        for (index_t i = i0; i < lc; ++i)
          for (index_t k = 0; k < n; ++k)
            o[k * p.seqlen + t0 + i] += hsum<T>(simd::load(buf.data() + (i * n + k) * W));
      };
      reduce(p.variable_B, sc.P, sc.gBp);
      reduce(p.variable_C, sc.Q, sc.gCp);
    }
    for (std::size_t j = 0; j < nb; ++j) {
      const T* Gj = G.data() + j * static_cast<std::size_t>(nW);
      if (piece.G_out) {
        std::copy(Gj, Gj + nW, piece.G_out + j * nW);
      } else if (gp.grad_initial_state) {
        for (int lane = 0; lane < bcs[j].count; ++lane)
          for (index_t k = 0; k < n; ++k)
            static_cast<T*>(gp.grad_initial_state)[(piece.s * p.dim + bcs[j].c0 + lane) * n + k] = Gj[k * W + lane];
      }
    }
    for (std::size_t j = 0; j < nb; ++j)
      for (int lane = 0; lane < bcs[j].count; ++lane) {
        const index_t c = bcs[j].c0 + lane;
        for (index_t k = 0; k < n; ++k) {
          const auto e = static_cast<std::size_t>(k * W + lane), o = static_cast<std::size_t>(c * n + k);
          sums.gA[o] += acc[j].gA[e];
          sums.gBf[o] += acc[j].gBf[e];
          sums.gCf[o] += acc[j].gCf[e];
        }
        sums.gD[static_cast<std::size_t>(c)] += acc[j].gD[lane];
        sums.gbias[static_cast<std::size_t>(c)] += acc[j].gbias[lane];
      }
  }

  /// Pieces of the time-split path for a sequence [begin, end): up to `parts` ranges starting on chunk boundaries
  /// (multiples of K from begin), as equal as whole chunks allow.
  std::vector<index_t> split_bounds(index_t begin, index_t end, int parts) const {
    const index_t chunks = (end - begin + K - 1) / K;
    parts = static_cast<int>(std::clamp<index_t>(chunks, 1, parts));
    std::vector<index_t> b;
    for (int i = 0; i < parts; ++i) b.push_back(begin + K * (chunks * i / parts));
    b.push_back(end);
    return b;
  }

  /// Returns the path's name: "channel-blocks" (blocks of channels over the threads) or "time-split" (each sequence
  /// split in time over the threads: the states and gradient carries at the split points from a first phase, then
  /// every piece in parallel).
  std::string run(int threads, index_t chunk_len, const void* chunk_states, ScanAlgo algo) {
    const index_t n = p.dstate, d = p.dim, b = p.batch, g = p.n_groups, l = p.seqlen, nW = n * W;
    K = chunk_len > 0 ? chunk_len : std::clamp<index_t>(2048 / std::max<index_t>(1, n) / 16 * 16, 16, 128);
    if (chunk_states && p.cu_seqlens == nullptr && l > 0) {
      saved = static_cast<const T*>(chunk_states);
      K = kSavedChunkLen;
    }
    const auto blocks = detail::scan::channel_blocks(p, W);
    // blocks per group (channel_blocks splits at group boundaries when B or C is variable; otherwise one "group")
    const bool grouped = p.variable_B || p.variable_C;
    std::vector<std::vector<std::pair<index_t, int>>> by_group(static_cast<std::size_t>(grouped ? g : 1));
    for (const auto& blk : blocks)
      by_group[static_cast<std::size_t>(grouped ? scan.group_of(blk.first) : 0)].push_back(blk);
    std::size_t most_blocks = 1;
    for (const auto& blks : by_group) most_blocks = std::max(most_blocks, blks.size());
    index_t longest = 0;
    for (index_t s = 0; s < (p.cu_seqlens ? p.n_seqs : 1); ++s)
      longest = std::max(longest, p.cu_seqlens ? p.cu_seqlens[s + 1] - p.cu_seqlens[s] : l);
    // Time split when the blocks of a group cannot keep the threads busy (the long-thin shape: one or two blocks)
    // and a sequence is long enough for pieces of kMinPiece steps: it costs a first phase over the sequence (one
    // recurrence per piece but the last, forward or backward): about a fifth of the time at the long-thin shape.
    constexpr index_t kMinPiece = 2048;
    const bool time_split = threads > 1 && (algo == ScanAlgo::chunked ||
                                            (algo == ScanAlgo::automatic && most_blocks < 2 * static_cast<std::size_t>(threads) &&
                                             longest >= 2 * kMinPiece));
    // Channel blocks: at most one thread per block of a group.
    if (!time_split) threads = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(threads), most_blocks));
    std::vector<Scratch> scratch(static_cast<std::size_t>(threads));
    const auto KW = static_cast<std::size_t>(K * W), KnW = static_cast<std::size_t>(K * nW);
    for (Scratch& sc : scratch) {
      sc.ws.init(n, K, detail::scan::RealScan<In>::kConvertBC);
      for (auto* buf : {&sc.pre, &sc.Delta, &sc.u, &sc.du, &sc.z, &sc.go, &sc.y, &sc.dy, &sc.SA, &sc.SB})
        buf->resize(KW);
      sc.hbuf.resize(KnW + nW);  // (K + 1, n, W): the state before the chunk, then h_t
      sc.abuf.resize(KnW);
      if (p.variable_B) sc.P.resize(KnW);
      if (p.variable_C) sc.Q.resize(KnW);
      sc.rows.resize(static_cast<std::size_t>(W * sc.ws.tile_pad()));
    }
    // Variable grad_B / grad_C. Channel blocks: thread 0 accumulates in the output when it has the accumulation type
    // (no copy of b g n l elements to allocate, fault in and add), the others in their own copy. Time split: the
    // threads' pieces are disjoint in time, so all of them add into one buffer, the output when the types agree.
    const auto var_size = static_cast<std::size_t>(b * g * n * l);
    for (std::size_t t = 0; t < scratch.size(); ++t) {
      const auto setup = [&](bool variable, void* dst, std::vector<T> Scratch::*own, T* Scratch::*ptr) {
        if (!variable) return;
        Scratch& sc = scratch[t];
        if (t > 0 && time_split) {
          sc.*ptr = scratch[0].*ptr;
        } else if (t == 0 && std::is_same_v<In, T>) {
          sc.*ptr = static_cast<T*>(dst);
          std::fill_n(sc.*ptr, var_size, T(0));
        } else {
          (sc.*own).assign(var_size, T(0));
          sc.*ptr = (sc.*own).data();
        }
      };
      setup(p.variable_B, gp.grad_B, &Scratch::gB, &Scratch::gBp);
      setup(p.variable_C, gp.grad_C, &Scratch::gC, &Scratch::gCp);
    }
    std::vector<ChannelSums> sums(scratch.size());
    for (ChannelSums& s : sums) s.init(d, n);
    // The blocks' constants, group by group in by_group's order (offset[gi]: the first of group gi).
    std::vector<BlockConst> consts;
    std::vector<std::size_t> offset;
    for (const auto& blks : by_group) {
      offset.push_back(consts.size());
      auto c = make_consts(scratch[0].ws, blks);
      consts.insert(consts.end(), std::make_move_iterator(c.begin()), std::make_move_iterator(c.end()));
    }
    const auto nblocks = consts.size();
    for (index_t bi = 0; bi < (p.cu_seqlens ? 1 : b); ++bi) {
      if (!time_split) {
        for (std::size_t gi = 0; gi < by_group.size(); ++gi) {
          const auto& blks = by_group[gi];
          const int used = static_cast<int>(std::clamp<std::size_t>(blks.size(), 1, static_cast<std::size_t>(threads)));
          detail::scan::run_threads(used, [&](int tid) {
            const std::size_t j0 = blks.size() * static_cast<std::size_t>(tid) / static_cast<std::size_t>(used);
            const std::size_t j1 = blks.size() * static_cast<std::size_t>(tid + 1) / static_cast<std::size_t>(used);
            if (j0 < j1)
              for (const detail::scan::Segment& seg : detail::scan::segments_of(p, bi))
                run_slice(scratch[static_cast<std::size_t>(tid)], bi, static_cast<index_t>(gi),
                          consts.data() + offset[gi] + j0, j1 - j0, Piece{seg.begin, seg.end, seg.s}, sums[static_cast<std::size_t>(tid)]);
            simd::stream_fence();  // the gradient rows may have been written with streaming stores (store_row)
          });
        }
        continue;
      }
      for (const detail::scan::Segment& seg : detail::scan::segments_of(p, bi)) {
        const index_t seg_len = seg.end - seg.begin;
        const int want = algo == ScanAlgo::chunked
                             ? threads
                             : static_cast<int>(std::clamp<index_t>(seg_len / kMinPiece, 1, threads));
        const std::vector<index_t> bounds = split_bounds(seg.begin, seg.end, want);
        const int parts = static_cast<int>(bounds.size()) - 1;
        // (parts, all blocks, n, W) states / carries and (parts, all blocks, W) sums of Delta
        const auto per_part = static_cast<std::size_t>(nblocks) * static_cast<std::size_t>(nW);
        const std::size_t all = static_cast<std::size_t>(parts) * per_part;
        std::vector<T> hend(all), Gloc(all), h0(all), Gin(all);
        std::vector<double> dsum(static_cast<std::size_t>(parts) * nblocks * W);
        const auto at = [&](std::vector<T>& v, int part, std::size_t block) {
          return v.data() + static_cast<std::size_t>(part) * per_part + block * static_cast<std::size_t>(nW);
        };
        if (parts > 1) {
          // phase 1: the local end states (pieces but the last, unless saved) and carries (pieces but the first). Each
          // of these recurrences is cut into `parts` sub-ranges of whole chunks, handed out to the threads as tasks
          // (so that all threads share the work also when only the carries are needed), and composed per piece.
          struct Task {
            int q;     // piece
            bool fwd;  // the end state (else the carry)
            index_t begin, end;
          };
          std::vector<Task> tasks;  // the tasks of one (piece, kind) consecutive, in time order
          for (int q = 0; q < parts; ++q) {
            const auto sub = split_bounds(bounds[static_cast<std::size_t>(q)], bounds[static_cast<std::size_t>(q) + 1], parts);
            for (const bool fwd : {true, false}) {
              if (fwd ? (saved != nullptr || q + 1 == parts) : q == 0) continue;
              for (std::size_t i = 0; i + 1 < sub.size(); ++i) tasks.push_back({q, fwd, sub[i], sub[i + 1]});
            }
          }
          std::vector<T> task_out(tasks.size() * per_part);                                 // (tasks, all blocks, n, W)
          std::vector<double> task_dsum(tasks.size() * nblocks * static_cast<std::size_t>(W));  // (tasks, all blocks, W)
          std::atomic<std::size_t> next_task{0};
          detail::scan::run_threads(parts, [&](int tid) {
            for (std::size_t t = next_task++; t < tasks.size(); t = next_task++) {
              const Task& task = tasks[t];
              for (std::size_t gi = 0; gi < by_group.size(); ++gi) {
                T* out = task_out.data() + t * per_part + offset[gi] * static_cast<std::size_t>(nW);
                carry(scratch[static_cast<std::size_t>(tid)], consts.data() + offset[gi], by_group[gi].size(), bi,
                      static_cast<index_t>(gi), task.begin, task.end, task.fwd ? out : nullptr, task.fwd ? nullptr : out,
                      task_dsum.data() + (t * nblocks + offset[gi]) * W);
              }
            }
          });
          // a piece's end state: its sub-ranges composed in order (h = decay h + local); its carry: from the last
          // (G = decay G + local); its sum of Delta: the sub-ranges' sums
          for (std::size_t t0 = 0; t0 < tasks.size();) {
            std::size_t t1 = t0;
            while (t1 < tasks.size() && tasks[t1].q == tasks[t0].q && tasks[t1].fwd == tasks[t0].fwd) ++t1;
            const int q = tasks[t0].q;
            const bool fwd = tasks[t0].fwd;
            for (std::size_t j = 0; j < nblocks; ++j) {
              double* ds = dsum.data() + (static_cast<std::size_t>(q) * nblocks + j) * W;
              std::fill(ds, ds + W, 0.0);
              T* dst = fwd ? at(hend, q, j) : at(Gloc, q, j);
              std::fill(dst, dst + nW, T(0));
              for (std::size_t i = 0; i < t1 - t0; ++i) {
                const std::size_t t = fwd ? t0 + i : t1 - 1 - i;
                const double* tds = task_dsum.data() + (t * nblocks + j) * W;
                for (int lane = 0; lane < W; ++lane) ds[lane] += tds[lane];
                compose(consts[j], tds, task_out.data() + t * per_part + j * static_cast<std::size_t>(nW), dst);
              }
            }
            t0 = t1;
          }
          // phase 2: carry across the pieces, with the decay over a piece exp(A sum Delta) = 2^(A2 sum Delta):
          // h at the start of piece q + 1 = decay_q h_q + hend_q;  G into piece q - 1 = decay_q G_q + Gloc_q.
          for (std::size_t j = 0; j < nblocks; ++j) {
            const auto ds = [&](int part) { return dsum.data() + (static_cast<std::size_t>(part) * nblocks + j) * W; };
            if (!saved) {
              use_block(scratch[0], consts[j]);
              scan.load_state(scratch[0].ws, seg.s);
              std::copy(scratch[0].ws.h.data(), scratch[0].ws.h.data() + nW, at(h0, 0, j));
              for (int q = 0; q + 1 < parts; ++q) {
                std::copy(at(h0, q, j), at(h0, q, j) + nW, at(h0, q + 1, j));
                compose(consts[j], ds(q), at(hend, q, j), at(h0, q + 1, j));
              }
            }
            load_grad_last(consts[j], seg.s, at(Gin, parts - 1, j));  // into the last piece (its G_in stays null)
            for (int q = parts - 1; q > 0; --q) {
              std::copy(at(Gin, q, j), at(Gin, q, j) + nW, at(Gin, q - 1, j));
              compose(consts[j], ds(q), at(Gloc, q, j), at(Gin, q - 1, j));
            }
          }
        }
        detail::scan::run_threads(parts, [&](int tid) {  // phase 3: every piece
          const auto q = static_cast<std::size_t>(tid);
          for (std::size_t gi = 0; gi < by_group.size(); ++gi) {
            Piece piece{bounds[q], bounds[q + 1], seg.s};
            if (tid > 0 && !saved) piece.h0 = at(h0, tid, offset[gi]);
            if (tid + 1 < parts) piece.G_in = at(Gin, tid, offset[gi]);
            if (tid > 0) piece.G_out = at(Gloc, tid, offset[gi]);  // the carry out of a middle piece is not used
            run_slice(scratch[q], bi, static_cast<index_t>(gi), consts.data() + offset[gi], by_group[gi].size(), piece,
                      sums[q]);
          }
          simd::stream_fence();
        });
      }
    }
    // outputs: per-channel sums of the threads, and the variable B / C sums in the (b, g, n, l) layout
    const auto add_up = [&](std::vector<T> ChannelSums::*member, void* dst) {
      if (dst == nullptr) return;
      T* out = static_cast<T*>(dst);
      const std::vector<T>& first = sums[0].*member;
      for (std::size_t e = 0; e < first.size(); ++e) {
        T s = first[e];
        for (std::size_t t = 1; t < sums.size(); ++t) s += (sums[t].*member)[e];
        out[e] = s;
      }
    };
    add_up(&ChannelSums::gA, gp.grad_A);
    if (!p.variable_B) add_up(&ChannelSums::gBf, gp.grad_B);
    if (!p.variable_C) add_up(&ChannelSums::gCf, gp.grad_C);
    add_up(&ChannelSums::gD, gp.grad_D);
    add_up(&ChannelSums::gbias, gp.grad_delta_bias);
    const auto write = [&](bool variable, void* dst, T* Scratch::*member) {
      if (!variable) return;
      In* out = static_cast<In*>(dst);
      const bool in_place = static_cast<void*>(scratch[0].*member) == dst;  // thread 0 summed into the output
      const std::size_t copies = time_split ? 1 : scratch.size();         // time split: one shared buffer
      if (in_place && copies == 1) return;
      for (std::size_t e = 0; e < var_size; ++e) {
        T s(0);
        for (std::size_t t = 0; t < copies; ++t) s += (scratch[t].*member)[e];  // in place: out[e] is thread 0's sum
        out[e] = store<In>(s);
      }
    };
    write(p.variable_B, gp.grad_B, &Scratch::gBp);
    write(p.variable_C, gp.grad_C, &Scratch::gCp);
    return time_split ? "time-split" : "channel-blocks";
  }
};
}  // namespace scan_backward_detail

/// CPU selective-scan backward over a validated ScanParams and ScanGradParams (shapes there): the
/// reverse scan with states recomputed per chunk of opt.chunk_len steps from saved chunk-boundary
/// states, threaded over channels. In: float, double, ssm::half or ssm::bfloat16.
/// Returns the path that ran: "cpu-<simd>-channel-blocks" (real A: channels in vector lanes, blocks of channels over
/// the threads, see BlockBackward), "cpu-<simd>-time-split" (real A, few channel blocks and long sequences, or
/// opt.algo = chunked: each sequence split in time over the threads) or "cpu-per-channel" (complex A: one channel
/// at a time).
template <class In>
std::string selective_scan_backward(const ScanParams& p, const ScanGradParams& gp,
                                    const ScanBackwardOptions& opt = {}) {
  if (p.is_complex) {
    scan_backward_detail::backward_impl<In, true>(p, gp, opt);
    return "cpu-per-channel";
  }
  const int threads = cpu_threads(opt.num_threads, p.batch * p.dim * p.seqlen * p.dstate);
  scan_backward_detail::BlockBackward<In> bw(p, gp);
  return std::string("cpu-") + simd::kLevel + "-" + bw.run(threads, opt.chunk_len, opt.chunk_states, opt.algo);
}

}  // namespace ssm::cpu
