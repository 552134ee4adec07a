// The vectorized recurrence of the CPU selective scan (S6; Gu & Dao 2023, "Mamba", Algorithm 2; docs/math.md §5),
// shared by the forward (scan/forward.hpp) and the backward (scan/backward_kernels.hpp). Channels sit in the lanes
// of a vector (16 f32 channels per AVX-512 register), so a time step updates W channels x 1 state with no
// horizontal sum; exp(Delta A) is an exp2 polynomial with A pre-scaled by log2(e); softplus, conversions, transposes
// and D / silu(z) are separate vectorized passes over time tiles. Here: the per-thread workspace of one block of W
// channels, the scan of one tile (h_t = 2^(Delta_t A log2 e) h_{t-1} + Delta_t B_t u_t, y_t = C_t . h_t), the tile's
// pre- and post-passes (RealScan), and the ways the work is cut (sequences, channel blocks).
#pragma once

#include <algorithm>
#include <complex>
#include <cstdint>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "ssm/core/dtype.hpp"
#include "ssm/core/params/selective_scan.hpp"
#include "ssm/cpu/convert.hpp"
#include "ssm/cpu/simd.hpp"
#include "ssm/cpu/threads.hpp"

namespace ssm::cpu {

/// What a CPU scan call ran, decided by the driver (scan/forward.hpp, scan/backward_schedule.hpp) and reported as
/// is: the schedule, whether complex A's own loop ran, whether the forward wrote the chunk states it was given, and
/// the name the op returns to users (SelectiveScanOutputs::path, SelectiveScanGrads::path).
struct ScanRun {
  ScanPath path = ScanPath::sequential;  ///< sequential or chunked (never automatic or reference)
  bool complex = false;                  ///< complex A (scan/complex.hpp): one loop, sequential in time
  bool saved_chunk_states = false;       ///< the forward wrote ScanCpuOptions::chunk_states
  std::string name;                      ///< e.g. "cpu-avx512-sequential", "cpu-avx2-time-split", "cpu-per-channel"
};

namespace detail::scan {

using index_t = std::int64_t;

/// Weight / state type for an input element type: double for double, float otherwise.
template <class In>
using weight_t = compute_t<In>;

/// Element conversions of the scalar loops: In (float, double, half, bfloat16, complex) to its arithmetic type, and
/// back.
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

using simd::hsum;  // sum of a vector's lanes as a tree

/// Zero-initialized buffer aligned to the vector width (64 bytes at least).
template <class T>
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t count) { resize(count); }
  void resize(std::size_t count) {
    release();
    if (count == 0) return;
    data_ = static_cast<T*>(::operator new(count * sizeof(T), std::align_val_t{kAlign}));
    std::memset(static_cast<void*>(data_), 0, count * sizeof(T));
    size_ = count;
  }
  ~AlignedBuffer() { release(); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  T* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  static constexpr std::size_t kAlign = 64;
  void release() {
    if (data_) ::operator delete(static_cast<void*>(data_), std::align_val_t{kAlign});
    data_ = nullptr;
    size_ = 0;
  }
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

// ---- element conversion passes (In <-> the weight type T): cpu/convert.hpp ---------------------------------

using ::ssm::cpu::load_row;
using ::ssm::cpu::store_row;

// ---- prefetch of the next tile ------------------------------------------------------------------------------

/// The cache lines [off, end) of up to 4 x 16 rows (delta, u, z of a block's channels; the backward adds
/// grad_out), issued one per call of next() across all rows for one line offset, then the next offset: spread
/// over a tile's scan steps, so the next tile streams in without a burst of misses. No list is built.
struct PrefetchPlan {
  static constexpr int kMaxRows = 4 * 16;
  const char* rows[kMaxRows] = {};
  int nrows = 0, row = 0;
  std::int64_t off = 0, end = 0;  // bytes from each row's start

  SSM_FORCE_INLINE void next() {
    if (off >= end) return;
    simd::prefetch(rows[row] + off);
    if (++row == nrows) {
      row = 0;
      off += 64;
    }
  }
  void finish() {
    while (off < end) next();
  }
};

/// x (n, W) <- 2^(s A2) x + local, state by state: a state (or a gradient) carried across a range of steps whose
/// sum of Delta per lane is s, given what the range gives from zero (local). A2 (n, W) = A log2(e). The chunked
/// forward's prefix and the backward's time split compose their pieces with it.
template <class T>
inline void compose_decay(index_t n, const T* A2, simd::Vec<T> s, const T* local, T* x) {
  constexpr int W = simd::lanes<T>;
  for (index_t k = 0; k < n; ++k)
    simd::store(x + k * W, simd::fma(simd::exp2(s * simd::load(A2 + k * W)), simd::load(x + k * W),
                                     simd::load(local + k * W)));
}

// ---- the per-thread workspace for one block of W channels ---------------------------------------------

template <class T>
struct Workspace {
  static constexpr int W = simd::lanes<T>;
  index_t tile = 0;  // time steps per tile
  index_t n = 0;
  AlignedBuffer<T> A2;      // (n, W)   A log2(e) of the block's channels (0 in unused lanes)
  AlignedBuffer<T> Bfix;    // (n, W)   fixed B of the block's channels
  AlignedBuffer<T> Cfix;    // (n, W)
  AlignedBuffer<T> h;       // (n, W)   the running state
  AlignedBuffer<T> dt;      // (tile, W) Delta after bias and softplus
  AlignedBuffer<T> du;      // (tile, W) Delta * u
  AlignedBuffer<T> y;       // (tile, W) C . h
  AlignedBuffer<T> scratch; // (tile, W) rows transposed one by one (for_each_transposed's slow path)
  AlignedBuffer<T> row, row2;  // (tile_pad) conversion rows
  AlignedBuffer<T> yrows;   // (W, tile_pad) y back in rows of channels
  AlignedBuffer<T> Bt, Ct;  // (n, tile)    variable B / C converted to T (inputs of another type)
  AlignedBuffer<T> dsum;    // (W)          sum of Delta over a chunk (chunked path)
  T D[W] = {};
  T bias[W] = {};
  PrefetchPlan pf;  // the next tile's rows, prefetched during this tile's scan
  index_t c0 = 0;  // first channel of the block
  int count = 0;   // channels in the block (<= W)

  void init(index_t n_, index_t tile_, bool convert_BC) {
    n = n_;
    tile = tile_;
    const auto nW = static_cast<std::size_t>(n * W);
    const auto tW = static_cast<std::size_t>(tile * W);
    A2.resize(nW);
    Bfix.resize(nW);
    Cfix.resize(nW);
    h.resize(nW);
    dt.resize(tW);
    du.resize(tW);
    y.resize(tW);
    const index_t tile_pad = (tile + W - 1) / W * W;
    scratch.resize(tW);
    row.resize(static_cast<std::size_t>(tile_pad));
    row2.resize(static_cast<std::size_t>(tile_pad));
    yrows.resize(static_cast<std::size_t>(W * tile_pad));
    if (convert_BC) {
      Bt.resize(static_cast<std::size_t>(n * tile));
      Ct.resize(static_cast<std::size_t>(n * tile));
    }
    dsum.resize(W);
  }
  index_t tile_pad() const { return (tile + W - 1) / W * W; }
};

/// The scan of one time tile for one block, n states in groups of NG interleaved (independent chains):
/// per step t and state k,  a = 2^(dt_t A2_k),  h_k = a h_k + du_t B_tk,  y_t += C_tk h_k.
/// B/C variable: Bp[k * Bns + t] (the same for every lane: a broadcast); fixed: Bfix[k] (a vector).
template <class T, int NG, bool VarB, bool VarC, bool Out>
SSM_FORCE_INLINE void scan_states(index_t len, index_t k0, const T* SSM_RESTRICT A2, T* SSM_RESTRICT h,
                                  const T* SSM_RESTRICT dt, const T* SSM_RESTRICT du, const T* SSM_RESTRICT Bp,
                                  index_t Bns, const T* SSM_RESTRICT Bfix, const T* SSM_RESTRICT Cp, index_t Cns,
                                  const T* SSM_RESTRICT Cfix, T* SSM_RESTRICT y, PrefetchPlan& pf) {
  using V = simd::Vec<T>;
  constexpr int W = simd::lanes<T>;
  V a2[NG], hk[NG], bf[NG], cf[NG];
  const T* Bk[NG];
  const T* Ck[NG];
  for (int j = 0; j < NG; ++j) {
    a2[j] = simd::load(A2 + (k0 + j) * W);
    hk[j] = simd::load(h + (k0 + j) * W);
    if constexpr (!VarB) bf[j] = simd::load(Bfix + (k0 + j) * W);
    if constexpr (!VarC) cf[j] = simd::load(Cfix + (k0 + j) * W);
    Bk[j] = VarB ? Bp + (k0 + j) * Bns : nullptr;
    Ck[j] = VarC ? Cp + (k0 + j) * Cns : nullptr;
  }
  for (index_t t = 0; t < len; ++t) {
    pf.next();  // the next tile's rows, one line per step (see plan_prefetch)
    const V d = simd::load(dt + t * W);
    const V x = simd::load(du + t * W);
    V acc[NG];
    for (int j = 0; j < NG; ++j) {
      const V a = simd::exp2_decay(d * a2[j]);
      V bx;
      if constexpr (VarB) {
        bx = x * Bk[j][t];
      } else {
        bx = x * bf[j];
      }
      hk[j] = simd::fma(a, hk[j], bx);
      if constexpr (Out) {
        if constexpr (VarC) {
          acc[j] = hk[j] * Ck[j][t];
        } else {
          acc[j] = hk[j] * cf[j];
        }
      }
    }
    if constexpr (Out) {
      V sum = simd::load(y + t * W);
      for (int j = 0; j < NG; ++j) sum += acc[j];
      simd::store(y + t * W, sum);
    }
  }
  for (int j = 0; j < NG; ++j) simd::store(h + (k0 + j) * W, hk[j]);
}

/// Runs the state groups of one tile, issuing the planned prefetches (ws.pf) spread over the steps.
template <class T, bool VarB, bool VarC, bool Out>
inline void scan_tile(Workspace<T>& ws, index_t len, const T* Bp, index_t Bns, const T* Cp, index_t Cns) {
  const index_t n = ws.n;
  auto group = [&](auto ng, index_t k) {
    scan_states<T, decltype(ng)::value, VarB, VarC, Out>(len, k, ws.A2.data(), ws.h.data(), ws.dt.data(),
                                                         ws.du.data(), Bp, Bns, ws.Bfix.data(), Cp, Cns,
                                                         ws.Cfix.data(), ws.y.data(), ws.pf);
  };
  // Groups of 4 states with 32 vector registers; with 16 (AVX2) the fourth chain spills its state to the stack
  // on every step: groups of 2 (measured on Zen 3, one tile in L1: 2.7 ns per 8-lane update against 3.9 ns).
  index_t k = 0;
  if constexpr (simd::kRegisters >= 32)
    for (; k + 4 <= n; k += 4) group(std::integral_constant<int, 4>{}, k);
  for (; k + 2 <= n; k += 2) group(std::integral_constant<int, 2>{}, k);
  for (; k < n; ++k) group(std::integral_constant<int, 1>{}, k);
  ws.pf.finish();
}

/// The real-A forward: one instance per call, shared by the threads (each thread has its Workspace).
template <class In>
struct RealScan {
  using T = weight_t<In>;
  using V = simd::Vec<T>;
  static constexpr int W = simd::lanes<T>;
  static constexpr bool kConvertBC = !std::is_same_v<In, T>;

  const ScanParams& p;
  // Time steps per tile: 128 keeps a tile's working set ((t, lane) tiles 5 x 8 KB in f32, B / C rows
  // 2 x 8 KB at n = 16) about the size of the 48 KB L1, well inside L2; 64 and 256 measured the same
  // within the (shared machine's) noise.
  index_t tile = kCpuScanChunkLen;  // also the chunk of the saved states (ScanCpuOptions::chunk_states)

  explicit RealScan(const ScanParams& params) : p(params) {}

  const In* u_row(index_t bi, index_t c) const {
    return static_cast<const In*>(p.u) + bi * p.u_batch_stride + c * p.u_d_stride;
  }
  const In* delta_row(index_t bi, index_t c) const {
    return static_cast<const In*>(p.delta) + bi * p.delta_batch_stride + c * p.delta_d_stride;
  }
  const In* z_row(index_t bi, index_t c) const {
    return static_cast<const In*>(p.z) + bi * p.z_batch_stride + c * p.z_d_stride;
  }
  In* out_row(index_t bi, index_t c) const {
    return static_cast<In*>(p.out) + bi * p.out_batch_stride + c * p.out_d_stride;
  }
  index_t group_of(index_t c) const { return c / (p.dim / p.n_groups); }

  /// Loads the per-channel constants of block [c0, c0 + count) into ws.
  void setup_block(Workspace<T>& ws, index_t c0, int count) const {
    ws.c0 = c0;
    ws.count = count;
    const T* A = static_cast<const T*>(p.A);
    const T* Bw = static_cast<const T*>(p.B);
    const T* Cw = static_cast<const T*>(p.C);
    const T* D = static_cast<const T*>(p.D);
    const T* bias = static_cast<const T*>(p.delta_bias);
    for (int j = 0; j < W; ++j) {
      const bool live = j < count;
      const index_t c = c0 + j;
      ws.D[j] = live && D ? D[c] : T(0);
      ws.bias[j] = live && bias ? bias[c] : T(0);
      for (index_t k = 0; k < p.dstate; ++k) {
        ws.A2.data()[k * W + j] = live ? A[c * p.A_d_stride + k * p.A_n_stride] * simd::kLog2e<T> : T(0);
        if (!p.variable_B)
          ws.Bfix.data()[k * W + j] = live ? Bw[c * p.B_group_stride + k * p.B_n_stride] : T(0);
        if (!p.variable_C)
          ws.Cfix.data()[k * W + j] = live ? Cw[c * p.C_group_stride + k * p.C_n_stride] : T(0);
      }
    }
  }

  /// h <- initial state of sequence s (or zeros).
  void load_state(Workspace<T>& ws, index_t s) const {
    T* h = ws.h.data();
    std::memset(static_cast<void*>(h), 0, static_cast<std::size_t>(p.dstate * W) * sizeof(T));
    if (!p.initial_state) return;
    const T* h0 = static_cast<const T*>(p.initial_state) + s * p.init_batch_stride;
    for (int j = 0; j < ws.count; ++j)
      for (index_t k = 0; k < p.dstate; ++k)
        h[k * W + j] = h0[(ws.c0 + j) * p.init_d_stride + k * p.init_n_stride];
  }
  void store_state(const Workspace<T>& ws, const T* h, index_t s) const {
    if (!p.last_state) return;
    T* out = static_cast<T*>(p.last_state) + s * p.last_batch_stride;
    for (int j = 0; j < ws.count; ++j)
      for (index_t k = 0; k < p.dstate; ++k) out[(ws.c0 + j) * p.last_d_stride + k] = h[k * W + j];
  }

  /// fn(i, v) for i in [0, len), v (W) = rows(bi, c)[t0 + i] of the block's channels (0 in unused lanes): the rows
  /// transposed. Full blocks of f32 / f64 input: W x W blocks transposed in registers, handed over without a round
  /// trip through memory; otherwise row by row through `scratch` (len, W).
  template <class RowFn, class Fn>
  void for_each_transposed(const Workspace<T>& ws, RowFn rows_of, index_t t0, index_t len, T* scratch,
                           Fn&& fn) const {
    index_t t = 0;
    if constexpr (std::is_same_v<In, T>) {
      if (ws.count == W) {
        const In* rows[W];
        for (int j = 0; j < W; ++j) rows[j] = rows_of(ws.c0 + j) + t0;
        for (; t + W <= len; t += W) {
          V r[W];
          for (int j = 0; j < W; ++j) r[j] = simd::load(rows[j] + t);
          simd::transpose<T>(r);
          for (int i = 0; i < W; ++i) fn(t + i, r[i]);
        }
      }
    }
    if (t == len) return;
    T* row = ws.row.data();
    for (int j = 0; j < W; ++j) {
      if (j < ws.count) {
        load_row(rows_of(ws.c0 + j) + t0 + t, len - t, row);
        for (index_t i = t; i < len; ++i) scratch[i * W + j] = row[i - t];
      } else {
        for (index_t i = t; i < len; ++i) scratch[i * W + j] = T(0);
      }
    }
    for (index_t i = t; i < len; ++i) fn(i, simd::load(scratch + i * W));
  }

  /// dst (len, W) <- rows(bi, c)[t0, t0 + len) of the block's channels, transposed (0 in unused lanes).
  template <class RowFn>
  void gather_transposed(const Workspace<T>& ws, RowFn rows_of, index_t t0, index_t len, T* SSM_RESTRICT dst) const {
    for_each_transposed(ws, rows_of, t0, len, dst, [dst](index_t i, V v) { simd::store(dst + i * W, v); });
  }

  /// Plans the prefetch of the block's u / delta / z rows over [t0, t1) (the next tile): one cache line
  /// per scan step, so the loads stream in while this tile is scanned without a burst of misses.
  void plan_prefetch(Workspace<T>& ws, index_t bi, index_t t0, index_t t1) const {
    PrefetchPlan& pf = ws.pf;
    pf.nrows = 0;
    for (int j = 0; j < ws.count; ++j) {
      const index_t c = ws.c0 + j;
      pf.rows[pf.nrows++] = reinterpret_cast<const char*>(delta_row(bi, c) + t0);
      pf.rows[pf.nrows++] = reinterpret_cast<const char*>(u_row(bi, c) + t0);
      if (p.z) pf.rows[pf.nrows++] = reinterpret_cast<const char*>(z_row(bi, c) + t0);
    }
    pf.row = 0;
    pf.off = 0;
    pf.end = pf.nrows > 0 ? (t1 - t0) * static_cast<index_t>(sizeof(In)) : 0;
  }

  /// Pre-pass of a tile: Delta = softplus(delta + bias) and Delta u per (t, lane), straight from the transposed
  /// rows (u is transposed only to multiply it in here; the post-pass reads its rows).
  void prepare_tile(Workspace<T>& ws, index_t bi, index_t t0, index_t len) const {
    T* SSM_RESTRICT dt = ws.dt.data();
    T* SSM_RESTRICT du = ws.du.data();
    const V bias = simd::load(ws.bias);
    const bool softplus = p.delta_softplus;
    for_each_transposed(ws, [&](index_t c) { return delta_row(bi, c); }, t0, len, ws.scratch.data(),
                        [&](index_t t, V x) {
                          x += bias;
                          simd::store(dt + t * W, softplus ? simd::softplus<T>(x) : x);
                        });
    for_each_transposed(ws, [&](index_t c) { return u_row(bi, c); }, t0, len, ws.scratch.data(),
                        [&](index_t t, V u) { simd::store(du + t * W, simd::load(dt + t * W) * u); });
  }

  /// Post-pass of a tile: y (len, W) back to one row per channel, then, row by row in the input's own layout
  /// (so u and z need no transpose), out = (y + D u) * silu(z) in the input type; streaming stores for aligned
  /// f32 / f64 rows (the output is not read again here).
  void finish_tile(Workspace<T>& ws, index_t bi, index_t t0, index_t len) const {
    T* yrows = ws.yrows.data();  // (W, tile)
    transpose_to_rows(ws, len, ws.y.data(), yrows);
    for (int j = 0; j < ws.count; ++j) {
      const index_t c = ws.c0 + j;
      T* yr = yrows + j * ws.tile_pad();
      const T* ur;
      const T* zr = nullptr;
      if constexpr (std::is_same_v<In, T>) {
        ur = u_row(bi, c) + t0;
        if (p.z) zr = z_row(bi, c) + t0;
      } else {
        load_row(u_row(bi, c) + t0, len, ws.row.data());
        ur = ws.row.data();
        if (p.z) {
          load_row(z_row(bi, c) + t0, len, ws.row2.data());
          zr = ws.row2.data();
        }
      }
      const V D = simd::broadcast(ws.D[j]);
      auto out_of = [&](V y, V u, const T* z) {
        y = simd::fma(D, u, y);
        return z ? y * simd::silu<T>(simd::load(z)) : y;
      };
      index_t t = 0;
      if constexpr (std::is_same_v<In, T>) {
        In* out = out_row(bi, c) + t0;
        if (reinterpret_cast<std::uintptr_t>(out) % simd::kBytes == 0) {
          for (; t + W <= len; t += W)
            simd::store_stream(out + t, out_of(simd::load(yr + t), simd::load(ur + t), zr ? zr + t : nullptr));
        } else {
          for (; t + W <= len; t += W)
            simd::store(out + t, out_of(simd::load(yr + t), simd::load(ur + t), zr ? zr + t : nullptr));
        }
        if (t < len) {  // ragged tail through W-lane copies, so every element sees the same vector code
          alignas(64) T ut[W] = {}, zt[W] = {}, yt[W] = {};
          for (index_t i = t; i < len; ++i) {
            ut[i - t] = ur[i];
            yt[i - t] = yr[i];
            if (zr) zt[i - t] = zr[i];
          }
          simd::store(yt, out_of(simd::load(yt), simd::load(ut), zr ? zt : nullptr));
          for (index_t i = t; i < len; ++i) out[i] = yt[i - t];
        }
      } else {
        // rows are padded to a multiple of W (tile_pad): the vector loop covers the tail of the tile
        for (; t < len; t += W)
          simd::store(yr + t, out_of(simd::load(yr + t), simd::load(ur + t), zr ? zr + t : nullptr));
        store_row(yr, len, out_row(bi, c) + t0);
      }
    }
  }

  /// dst (W, tile_pad) <- src (len, W) transposed (rows of the block's channels).
  void transpose_to_rows(const Workspace<T>& ws, index_t len, const T* SSM_RESTRICT src, T* SSM_RESTRICT dst) const {
    index_t t = 0;
    for (; t + W <= len; t += W) {
      V r[W];
      for (int i = 0; i < W; ++i) r[i] = simd::load(src + (t + i) * W);
      simd::transpose<T>(r);
      for (int j = 0; j < W; ++j) simd::store(dst + j * ws.tile_pad() + t, r[j]);
    }
    for (; t < len; ++t)
      for (int j = 0; j < W; ++j) dst[j * ws.tile_pad() + t] = src[t * W + j];
  }

  /// Pointers to the variable B / C of tile [t0, t0 + len) for batch bi and group g (converted if needed).
  void tile_BC(Workspace<T>& ws, index_t bi, index_t g, index_t t0, index_t len, const T*& Bp, index_t& Bns,
               const T*& Cp, index_t& Cns) const {
    // B and C take the same route: a pointer into the input, or its f32 conversion in the workspace.
    auto tile = [&](bool variable, const void* base, index_t batch_stride, index_t group_stride, index_t n_stride,
                    AlignedBuffer<T>& converted, const T*& ptr, index_t& ns) {
      ptr = nullptr;
      ns = 0;
      if (!variable) return;
      const In* X = static_cast<const In*>(base) + bi * batch_stride + g * group_stride + t0;
      if constexpr (kConvertBC) {
        for (index_t k = 0; k < p.dstate; ++k) load_row(X + k * n_stride, len, converted.data() + k * ws.tile);
        ptr = converted.data();
        ns = ws.tile;
      } else {
        ptr = X;
        ns = n_stride;
      }
    };
    tile(p.variable_B, p.B, p.B_batch_stride, p.B_group_stride, p.B_n_stride, ws.Bt, Bp, Bns);
    tile(p.variable_C, p.C, p.C_batch_stride, p.C_group_stride, p.C_n_stride, ws.Ct, Cp, Cns);
  }

  template <bool Out>
  void run_tile(Workspace<T>& ws, index_t len, const T* Bp, index_t Bns, const T* Cp, index_t Cns) const {
    if (p.variable_B && p.variable_C) scan_tile<T, true, true, Out>(ws, len, Bp, Bns, Cp, Cns);
    else if (p.variable_B) scan_tile<T, true, false, Out>(ws, len, Bp, Bns, Cp, Cns);
    else if (p.variable_C) scan_tile<T, false, true, Out>(ws, len, Bp, Bns, Cp, Cns);
    else scan_tile<T, false, false, Out>(ws, len, Bp, Bns, Cp, Cns);
  }

  /// Scans [t_begin, t_end) of batch bi for the block in ws from the state in ws.h. With Out the output is
  /// written; without it only the end state (and the sum of Delta per lane in ws.dsum) is computed.
  /// With `save` (chunks of ws.tile steps from t_begin = 0), the state at the end of each tile is written there for
  /// the block's channels.
  template <bool Out>
  void scan_range(Workspace<T>& ws, index_t bi, index_t t_begin, index_t t_end, const ChunkStates* save = nullptr) const {
    const index_t g = group_of(ws.c0);
    V dsum = simd::broadcast(T(0));
    const index_t n = p.dstate;
    for (index_t t0 = t_begin; t0 < t_end; t0 += ws.tile) {
      const index_t len = std::min(ws.tile, t_end - t0);
      prepare_tile(ws, bi, t0, len);
      if (t0 + len < t_end) {
        plan_prefetch(ws, bi, t0 + len, std::min(t_end, t0 + len + ws.tile));
      } else {
        ws.pf.end = 0;
      }
      if constexpr (Out) {
        std::memset(static_cast<void*>(ws.y.data()), 0, static_cast<std::size_t>(len * W) * sizeof(T));
      } else {
        for (index_t t = 0; t < len; ++t) dsum += simd::load(ws.dt.data() + t * W);
      }
      const T* Bp;
      const T* Cp;
      index_t Bns, Cns;
      tile_BC(ws, bi, g, t0, len, Bp, Bns, Cp, Cns);
      run_tile<Out>(ws, len, Bp, Bns, Cp, Cns);
      if (save) {  // (b, d, n_chunks, n): lane j's n states are row (bi, c0 + j) of this chunk, n_chunks n apart
        T* dst = static_cast<T*>(save->data) + save->offset(bi, ws.c0, (t0 - t_begin) / ws.tile, p.dim, n);
        const index_t ld = save->n_chunks * n;
        for (int lane = 0; lane < ws.count; ++lane)
          for (index_t k = 0; k < n; ++k) dst[lane * ld + k] = ws.h.data()[k * W + lane];
      }
      if constexpr (Out) finish_tile(ws, bi, t0, len);
    }
    simd::store(ws.dsum.data(), dsum);
  }
};

/// One sequence: batch row bi, time range [begin, end), state index s (initial / last state).
struct Segment {
  index_t bi, begin, end, s;
};

inline std::vector<Segment> segments_of(const ScanParams& p, index_t bi) {
  std::vector<Segment> segs;
  if (p.cu_seqlens) {
    for (index_t s = 0; s < p.n_seqs; ++s) segs.push_back({bi, p.cu_seqlens[s], p.cu_seqlens[s + 1], s});
  } else {
    segs.push_back({bi, 0, p.seqlen, bi});
  }
  return segs;
}

/// Channel blocks: W consecutive channels of one group (groups only matter when B or C is variable).
inline std::vector<std::pair<index_t, int>> channel_blocks(const ScanParams& p, int W) {
  std::vector<std::pair<index_t, int>> blocks;
  const index_t per = (p.variable_B || p.variable_C) ? p.dim / p.n_groups : p.dim;
  for (index_t g0 = 0; g0 < p.dim; g0 += per)
    for (index_t c = g0; c < g0 + per; c += W)
      blocks.emplace_back(c, static_cast<int>(std::min<index_t>(W, g0 + per - c)));
  return blocks;
}

}  // namespace detail::scan
}  // namespace ssm::cpu
