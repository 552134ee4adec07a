// The CPU forward of the selective scan (S6; Gu & Dao 2023, "Mamba", Algorithm 2; docs/math.md §5): the driver and
// its two schedules of the real-A engine (scan/engine.hpp). "sequential": threads over (batch row, channel block),
// each sequence in order; "chunked": each sequence split in time over the threads, composed with the associative
// operator (a1, b1) o (a2, b2) = (a2 a1, a2 b1 + b2). Complex A runs its own loop (scan/complex.hpp). The
// reference these are tested against: ssm/reference/selective_scan.hpp.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/instances.hpp"
#include "ssm/core/params/selective_scan.hpp"
#include "ssm/cpu/scan/complex.hpp"
#include "ssm/cpu/scan/engine.hpp"
#include "ssm/cpu/simd.hpp"
#include "ssm/cpu/threads.hpp"

namespace ssm::cpu {

/// Options of the optimized CPU forward.
struct ScanCpuOptions {
  int num_threads = 0;                   ///< 0: all hardware threads
  /// sequential, chunked, or automatic: chunked for few long sequences with few channels (sequential when saving
  /// chunk states). reference is an ssm::Error (that is ssm::reference::selective_scan_forward).
  ScanPath path = ScanPath::automatic;
  std::int64_t chunk_len = 0;            ///< chunked path: 0 = balanced split over the threads
  /// When data is set (weight type, (b, d, n_chunks, n) with chunk_len = kCpuScanChunkLen, n_chunks =
  /// ChunkStates::count(l, chunk_len)), the sequential path of a real-A scan without cu_seqlens writes the state at
  /// the end of every chunk there: what the backward (ScanBackwardOptions::chunk_states) restarts from instead of
  /// recomputing them. Other paths leave it untouched; ScanRun::saved_chunk_states says whether they were written.
  ChunkStates chunk_states{};
};

namespace detail::scan {

/// Sequential path: work items (batch row, channel block) distributed over the threads.
template <class In>
void forward_sequential(const ScanParams& p, int threads, const ChunkStates* chunk_states = nullptr) {
  using T = weight_t<In>;
  RealScan<In> scan(p);
  const auto blocks = channel_blocks(p, simd::lanes<T>);
  const index_t items = p.batch * static_cast<index_t>(blocks.size());
  threads = static_cast<int>(std::clamp<index_t>(items, 1, threads));
  std::atomic<index_t> next{0};
  run_threads(threads, [&](int) {
    Workspace<T> ws;
    ws.init(p.dstate, scan.tile, RealScan<In>::kConvertBC);
    for (index_t item = next++; item < items; item = next++) {
      const index_t bi = item / static_cast<index_t>(blocks.size());
      const auto [c0, count] = blocks[static_cast<std::size_t>(item % static_cast<index_t>(blocks.size()))];
      scan.setup_block(ws, c0, count);
      for (const Segment& seg : segments_of(p, bi)) {
        scan.load_state(ws, seg.s);
        scan.template scan_range<true>(ws, bi, seg.begin, seg.end, p.cu_seqlens ? nullptr : chunk_states);
        scan.store_state(ws, ws.h.data(), seg.s);
      }
    }
    simd::stream_fence();
  });
}

/// Chunk boundaries of [begin, end): uniform chunk_len, or balanced for `threads` threads (chunk 0, scanned
/// once, is longer: the others are scanned twice, once for their end state and once for the output).
inline std::vector<index_t> chunk_bounds(index_t begin, index_t end, int threads, index_t chunk_len) {
  std::vector<index_t> b{begin};
  const index_t len = end - begin;
  if (chunk_len > 0) {
    for (index_t t = begin + chunk_len; t < end; t += chunk_len) b.push_back(t);
  } else if (threads > 1 && len > 0) {
    // phase 1: thread 0 scans chunk 0 (cost L0) while the others find the end states of the rest (cost
    // ~0.9 per step without the output); phase 2: all threads rescan the rest. Balance phase 1.
    const double alpha = 0.9;
    const auto L0 = static_cast<index_t>(alpha * static_cast<double>(len) / (alpha + threads - 1));
    const index_t rest = len - L0;
    if (L0 > 0) b.push_back(begin + L0);
    for (int i = 1; i < threads; ++i) {
      const index_t t = begin + L0 + rest * i / threads;
      if (t > b.back() && t < end) b.push_back(t);
    }
  }
  b.push_back(end);
  return b;
}

/// Chunked path: each sequence of each channel block is split in time; chunk k >= 1 first computes its
/// end state from zero and its decay exp(A sum Delta) (in parallel), the prefix is carried across chunks
/// with (a1, b1) o (a2, b2) = (a2 a1, a2 b1 + b2), then chunks k >= 1 rescan from their true start state.
template <class In>
void forward_chunked(const ScanParams& p, int threads, index_t chunk_len) {
  using T = weight_t<In>;
  constexpr int W = simd::lanes<T>;
  RealScan<In> scan(p);
  const auto blocks = channel_blocks(p, W);
  std::vector<Workspace<T>> ws(static_cast<std::size_t>(threads));
  for (auto& w : ws) w.init(p.dstate, scan.tile, RealScan<In>::kConvertBC);
  const index_t nW = p.dstate * W;
  for (index_t bi = 0; bi < p.batch; ++bi) {
    for (const auto& block : blocks) {
      // Named copies, not a structured binding: the lambdas below capture them, which clang before 16 rejects.
      const index_t c0 = block.first;
      const int count = block.second;
      for (const Segment& seg : segments_of(p, bi)) {
        const auto bounds = chunk_bounds(seg.begin, seg.end, threads, chunk_len);
        const index_t chunks = static_cast<index_t>(bounds.size()) - 1;
        AlignedBuffer<T> hend(static_cast<std::size_t>(std::max<index_t>(chunks, 1) * nW));   // (chunks, n, W)
        AlignedBuffer<T> hstart(static_cast<std::size_t>(std::max<index_t>(chunks, 1) * nW));  // (chunks, n, W)
        AlignedBuffer<T> dsum(static_cast<std::size_t>(std::max<index_t>(chunks, 1) * W));     // (chunks, W)
        std::atomic<index_t> next{0};
        const int used = static_cast<int>(std::clamp<index_t>(chunks, 1, threads));
        run_threads(used, [&](int tid) {  // phase 1
          Workspace<T>& w = ws[static_cast<std::size_t>(tid)];
          scan.setup_block(w, c0, count);
          for (index_t k = next++; k < chunks; k = next++) {
            if (k == 0) {
              scan.load_state(w, seg.s);
              scan.template scan_range<true>(w, bi, bounds[0], bounds[1]);
            } else {
              std::memset(static_cast<void*>(w.h.data()), 0, static_cast<std::size_t>(nW) * sizeof(T));
              scan.template scan_range<false>(w, bi, bounds[static_cast<std::size_t>(k)],
                                              bounds[static_cast<std::size_t>(k + 1)]);
              std::memcpy(dsum.data() + k * W, w.dsum.data(), W * sizeof(T));
            }
            std::memcpy(hend.data() + k * nW, w.h.data(), static_cast<std::size_t>(nW) * sizeof(T));
          }
          simd::stream_fence();  // chunk 0's output rows may have been written with streaming stores
        });
        // phase 2: carry the prefix. H_k = exp(A sum_k Delta) H_{k-1} + hend_k.
        Workspace<T>& w0 = ws[0];
        scan.setup_block(w0, c0, count);
        AlignedBuffer<T> H(static_cast<std::size_t>(nW));
        if (chunks > 0) {
          std::memcpy(H.data(), hend.data(), static_cast<std::size_t>(nW) * sizeof(T));
        } else {
          scan.load_state(w0, seg.s);
          std::memcpy(H.data(), w0.h.data(), static_cast<std::size_t>(nW) * sizeof(T));
        }
        for (index_t k = 1; k < chunks; ++k) {
          std::memcpy(hstart.data() + k * nW, H.data(), static_cast<std::size_t>(nW) * sizeof(T));
          compose_decay(p.dstate, w0.A2.data(), simd::load(dsum.data() + k * W), hend.data() + k * nW, H.data());
        }
        scan.store_state(w0, H.data(), seg.s);
        // phase 3: rescan chunks k >= 1 from their start state, writing the output.
        std::atomic<index_t> next3{1};
        const int used3 = static_cast<int>(std::clamp<index_t>(chunks - 1, 1, threads));
        if (chunks > 1) {
          run_threads(used3, [&](int tid) {
            Workspace<T>& w = ws[static_cast<std::size_t>(tid)];
            scan.setup_block(w, c0, count);
            for (index_t k = next3++; k < chunks; k = next3++) {
              std::memcpy(w.h.data(), hstart.data() + k * nW, static_cast<std::size_t>(nW) * sizeof(T));
              scan.template scan_range<true>(w, bi, bounds[static_cast<std::size_t>(k)],
                                             bounds[static_cast<std::size_t>(k + 1)]);
            }
            simd::stream_fence();
          });
        }
      }
    }
  }
  simd::stream_fence();
}

}  // namespace detail::scan

/// Optimized forward of the selective scan for a validated ScanParams (the op `ssm::selective_scan` checks
/// the tensors and fills it). In: the input element type (float, double, ssm::half, ssm::bfloat16); weights
/// and state are double for In = double, float otherwise. Every ScanParams feature is supported: real
/// and complex A, fixed (d, n) or variable (b, g, n, l) B and C, groups, D, z, delta_bias, softplus,
/// initial and last state, cu_seqlens. Writes p.out (b, d, l) and p.last_state (b | n_seqs, d, n) when
/// set. Returns what ran (ScanRun): path sequential or chunked, and its name "cpu-<simd>-sequential",
/// "cpu-<simd>-chunked" (simd: avx512, avx2 or generic) or, for complex A (one loop, sequential in time, whatever
/// opt.path asks; the op rejects chunked), "cpu-scalar-complex".
template <class In>
ScanRun selective_scan_forward(const ScanParams& p, const ScanCpuOptions& opt = {}) {
  using namespace detail::scan;
  SSM_CHECK(opt.path != ScanPath::reference, "ssm::cpu::selective_scan_forward: ScanPath::reference is not a CPU "
            "kernel path: call ssm::reference::selective_scan_forward (or the op with path = reference)");
  const int threads = cpu_threads(opt.num_threads, p.batch * p.dim * p.seqlen * p.dstate);
  ScanRun ran;
  if (p.is_complex) {
    forward_complex<In>(p, threads);
    ran.complex = true;
    ran.name = "cpu-scalar-complex";
    return ran;
  }
  const ChunkStates& cs = opt.chunk_states;
  const bool save = cs.data != nullptr && p.cu_seqlens == nullptr;  // only the sequential path saves them
  if (save)
    SSM_CHECK(cs.chunk_len == kCpuScanChunkLen && cs.n_chunks == ChunkStates::count(p.seqlen, cs.chunk_len),
              "ssm::cpu::selective_scan_forward: chunk_states: the CPU forward saves chunks of ", kCpuScanChunkLen,
              " steps, ", ChunkStates::count(p.seqlen, kCpuScanChunkLen), " for l = ", p.seqlen, "; got chunk_len ",
              cs.chunk_len, ", n_chunks ", cs.n_chunks);
  ran.path = opt.path;
  if (opt.path == ScanPath::automatic) {
    ran.path = ScanPath::sequential;
    if (threads > 1 && !save) {
      // Few independent (batch, block) items for the threads, and long sequences: split the time axis.
      const auto blocks = static_cast<index_t>(channel_blocks(p, simd::lanes<weight_t<In>>).size());
      const index_t items = p.batch * blocks;
      index_t longest = 0;
      if (p.cu_seqlens) {
        for (index_t s = 0; s < p.n_seqs; ++s) longest = std::max(longest, p.cu_seqlens[s + 1] - p.cu_seqlens[s]);
      } else {
        longest = p.seqlen;
      }
      if (items < threads && longest >= 8192) ran.path = ScanPath::chunked;
    }
  }
  const std::string level = simd::kLevel;
  if (ran.path == ScanPath::chunked) {
    forward_chunked<In>(p, threads, opt.chunk_len);
    ran.name = "cpu-" + level + "-chunked";
    return ran;
  }
  forward_sequential<In>(p, threads, save ? &cs : nullptr);
  ran.saved_chunk_states = save;
  ran.name = "cpu-" + level + "-sequential";
  return ran;
}

}  // namespace ssm::cpu

/// The forward's entry for one input type In, compiled once where SSM_EXTERN_INSTANCES is set (core/instances.hpp,
/// src/instances/).
#define SSM_CPU_SCAN_FORWARD_INSTANCES(PREFIX, In)                                          \
  PREFIX ::ssm::cpu::ScanRun ssm::cpu::selective_scan_forward<In>(const ::ssm::ScanParams&, \
                                                                  const ::ssm::cpu::ScanCpuOptions&);
#if SSM_EXTERN_INSTANCES
SSM_FOR_EACH_INPUT(SSM_CPU_SCAN_FORWARD_INSTANCES, extern template)
#endif
