// The block kernels of the real-A CPU backward of the selective scan (S6; Gu & Dao 2023, "Mamba", §3.3.2
// "recomputation"; docs/math.md §5.3): the forward recurrence recomputed chunk by chunk (the engine's workspace and
// tile passes, scan/engine.hpp), the output side, the reverse scan and the gradients of one piece of a sequence for
// the channel blocks of one group. How the pieces and blocks are handed to the threads: scan/backward_schedule.hpp.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "ssm/core/params/selective_scan.hpp"
#include "ssm/core/params/selective_scan_grad.hpp"
#include "ssm/cpu/scan/engine.hpp"
#include "ssm/cpu/simd.hpp"

namespace ssm::cpu::detail::scan {

// ---- real A: channels in the lanes of a vector, as in the forward ------------------------------------------
//
// W channels of one group (a block) share a vector; the state loop runs inside, so every per-channel quantity
// (h, G = dL/dh, grad_A, grad_D, grad_delta_bias, fixed grad_B / grad_C) is lane-wise with no horizontal sum.
// A thread walks the blocks of one group it was given (scan/backward_schedule.hpp) chunk by chunk in reverse time,
// so that the gradients of variable B and C, which are sums over the channels of the group, accumulate lane-wise over all of the thread's blocks in a chunk buffer (chunk, n, W) and are
// reduced over the lanes once per chunk (not once per block and step). Per segment:
//   pass 1  per block: the forward recurrence (no output) from the initial state, recording the state at the
//           start of every chunk of K steps;
//   pass 2  chunks in reverse; per block: recompute the chunk's states h_t and decays a_t = 2^(Delta_t A log2 e)
//           from the recorded state (stored, (K, n, W)), the output side (y, dy = dL/dy, grad_z, grad_D), then
//           the reverse scan G_t = C_t dy_t + a_{t+1} G_{t+1} with the per-step sums over n
//           SA_t = sum_k A_k a_tk h_{t-1,k} G_tk and SB_t = sum_k B_tk G_tk, from which
//           grad_Delta_t = SA_t + u_t SB_t, grad_u_t = Delta_t SB_t + D dy_t (docs/math.md §5.3).
// The time split (scan/backward_schedule.hpp) runs the same passes per piece of a sequence, from the state and the
// gradient carry its first phase found at the piece's ends (Piece; carry() is that phase's kernel).
template <class In>
struct BlockBackward {
  using T = weight_t<In>;
  using V = simd::Vec<T>;
  static constexpr int W = simd::lanes<T>;
  // States per group of independent chains in the inner loops: 4 with 32 vector registers, 2 with 16 (the reverse
  // loop holds G, grad_A and A per state plus five per-step vectors: 4 states would spill on AVX2).
  static constexpr int NG = simd::kRegisters >= 32 ? 4 : 2;

  const ScanParams& p;
  const ScanGradParams& gp;
  RealScan<In> scan;
  // Steps per recompute chunk: the chunk's h, a and the variable grad_B / grad_C sums, (K, n, W) each, stay in L2
  // (K n <= 2048: 512 KiB per thread for f32). Measured at b = 1, d = 1536, n = 16, l = 2048, one thread
  // (bench_selective_scan): K = 128 41.2 ms, K = 32 45.3 ms, K = 256 44.0 ms; l = 8192: 180 ms against 210 ms.
  index_t K = 32;

  ChunkStates saved{};  // the forward's chunk states (b, d, n_chunks, n), chunks of K steps; data null: none

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
    Workspace<T> ws;  // the forward's workspace (tile = K): rows, conversions, B / C tiles
    AlignedBuffer<T> pre, Delta, u, du, z, go, y, dy, SA, SB;  // (K, W) each
    AlignedBuffer<T> hbuf;        // (K + 1, n, W): slot 0 the state before the chunk, slot i + 1 h_i
    AlignedBuffer<T> abuf;        // (K, n, W)
    AlignedBuffer<T> P, Q;        // (K, n, W) lane-wise sums of grad_B / grad_C over the blocks
    AlignedBuffer<T> rows;        // (W, K padded) a chunk transposed back to channel rows
    std::vector<T> gB, gC;                      // (b * g, n, l) this thread's variable grad_B / grad_C, unless
    T* gBp = nullptr;                           // they accumulate in the output itself (thread 0, In = T): where
    T* gCp = nullptr;                           // this thread's sums go
    PrefetchPlan pf;              // the next block's rows, fetched while this block is processed
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
      store_row(sc.rows.data() + j * ld, len, out_row(base, bi, sc.ws.c0 + j) + t0);
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
    PrefetchPlan& pf = sc.pf;
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
    PrefetchPlan& pf = sc.pf;
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
  std::vector<BlockConst> make_consts(Workspace<T>& ws, const std::vector<std::pair<index_t, int>>& blocks) const {
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
    compose_decay(p.dstate, bc.A2.data(), simd::load(sum), local, x);
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
    if (saved.data) {  // the piece starts on a chunk boundary (no cu_seqlens): its chunk ch is chunk first + ch
      const index_t first = piece.begin / K, ld = saved.n_chunks * n;
      for (std::size_t j = 0; j < nb; ++j)
        for (index_t ch = 0; ch < chunks; ++ch) {
          T* dst = bound_of(j, ch);
          if (first + ch == 0) {  // before the first chunk: the initial state
            use_block(sc, bcs[j]);
            scan.load_state(sc.ws, piece.s);
            std::copy(sc.ws.h.data(), sc.ws.h.data() + nW, dst);
            continue;
          }
          // (b, d, n_chunks, n): the end of the chunk before, lane j's n states n_chunks n apart
          const T* src = static_cast<const T*>(saved.data) + saved.offset(bi, bcs[j].c0, first + ch - 1, p.dim, n);
          for (int lane = 0; lane < bcs[j].count; ++lane)  // unused lanes stay 0
            for (index_t k = 0; k < n; ++k) dst[k * W + lane] = src[lane * ld + k];
        }
    }
    for (std::size_t j = 0; j < (saved.data ? 0 : nb); ++j) {
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
            gpre = simd::select<T>(pre > scalar::kSoftplusThreshold<T>, gpre, gpre * sg);
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
      const auto reduce = [&](bool variable, const AlignedBuffer<T>& buf, T* out) {
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
};

}  // namespace ssm::cpu::detail::scan
