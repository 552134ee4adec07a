// The schedule of the CPU backward of the selective scan (docs/math.md §5.3): which thread runs which blocks and
// which pieces of time (channel blocks or time split, over the block kernels of scan/backward_kernels.hpp), and
// the driver, which also sends complex A to its per-channel backward (scan/complex.hpp).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/instances.hpp"
#include "ssm/core/params/selective_scan.hpp"
#include "ssm/core/params/selective_scan_grad.hpp"
#include "ssm/cpu/scan/backward_kernels.hpp"
#include "ssm/cpu/scan/complex.hpp"
#include "ssm/cpu/scan/engine.hpp"
#include "ssm/cpu/simd.hpp"
#include "ssm/cpu/threads.hpp"

namespace ssm::cpu {

struct ScanBackwardOptions {
  int num_threads = 0;         // 0: all hardware threads
  /// Real A: sequential = blocks of channels over the threads ("channel-blocks"); chunked = each sequence split in
  /// time over the threads ("time-split": a first phase finds the state and the gradient carry at every split point);
  /// automatic: chunked when the channel blocks of a group are fewer than twice the threads and a sequence has at
  /// least 4096 steps. reference is an ssm::Error (that is ssm::reference::selective_scan_backward).
  ScanPath path = ScanPath::automatic;
  std::int64_t chunk_len = 0;  // states recomputed per chunk of this many steps; 0: automatic
  /// The forward's saved chunk states (ScanCpuOptions::chunk_states: weight type, (b, d, n_chunks, n), any
  /// chunk_len), for real A without cu_seqlens: the backward restarts its chunks (then of chunk_len steps) from them
  /// instead of recomputing them with a first pass over the sequence. Ignored otherwise (data null: none).
  ChunkStates chunk_states{};
};

namespace detail::scan {

/// One real-A backward call: the block kernels (BlockBackward) and what the two schedules share, the per-thread
/// scratch and sums and the constants of the channel blocks, group by group.
// Channel blocks: per (batch row, group) the blocks of the group are split over the threads (at most one thread per
// block); every thread runs every segment of its blocks.
// Time split (few blocks, long sequences: the long-thin shape): each sequence is cut into one piece per thread on
// chunk boundaries. Both recurrences are linear, so a first phase runs, per piece and in parallel, the forward
// recurrence from a zero state (its end state; not for the last piece, nor with saved states) and the reverse one
// from a zero gradient (its carry at the start; not for the first piece), with the sum of Delta over the piece;
// a serial pass composes them with the decay over a piece 2^(A log2(e) sum Delta):
//   h(start of piece q + 1) = decay_q h(start of q) + hend_q,   G(into piece q - 1) = decay_q G(into q) + Gloc_q,
// and then every piece runs the block kernels from its true state and carry, writing its own range of every
// per-step output (the variable grad_B / grad_C included: one shared buffer, no per-thread copies).
template <class In>
struct BackwardSchedule {
  using Kernels = BlockBackward<In>;
  using T = typename Kernels::T;
  using Scratch = typename Kernels::Scratch;
  using ChannelSums = typename Kernels::ChannelSums;
  using BlockConst = typename Kernels::BlockConst;
  using Piece = typename Kernels::Piece;
  static constexpr int W = Kernels::W;
  // Time split when a sequence is long enough for pieces of kMinPiece steps: it costs a first phase over the sequence
  // (one recurrence per piece but the last, forward or backward): about a fifth of the time at the long-thin shape.
  static constexpr index_t kMinPiece = 2048;

  Kernels& kb;
  const ScanParams& p;
  bool time_split = false;
  std::vector<std::vector<std::pair<index_t, int>>> by_group;  // (groups) the channel blocks of each group
  std::vector<BlockConst> consts;                               // the blocks' constants, group by group
  std::vector<std::size_t> offset;                              // (groups) the first of group gi in consts
  std::vector<Scratch> scratch;                                 // (threads)
  std::vector<ChannelSums> sums;                                // (threads)
  std::size_t var_size = 0;                                     // b g n l: a variable grad_B / grad_C

  explicit BackwardSchedule(Kernels& kernels) : kb(kernels), p(kernels.p) {}

  /// Pieces of the time-split path for a sequence [begin, end): up to `parts` ranges starting on chunk boundaries
  /// (multiples of K from begin), as equal as whole chunks allow.
  std::vector<index_t> split_bounds(index_t begin, index_t end, int parts) const {
    const index_t K = kb.K;
    const index_t chunks = (end - begin + K - 1) / K;
    parts = static_cast<int>(std::clamp<index_t>(chunks, 1, parts));
    std::vector<index_t> b;
    for (int i = 0; i < parts; ++i) b.push_back(begin + K * (chunks * i / parts));
    b.push_back(end);
    return b;
  }

  /// Runs the backward; returns the schedule that ran: ScanPath::sequential ("channel-blocks": blocks of channels
  /// over the threads) or ScanPath::chunked ("time-split": each sequence split in time over the threads, the states
  /// and gradient carries at the split points from a first phase, then every piece in parallel).
  ScanPath run(int threads, index_t chunk_len, const ChunkStates& chunk_states, ScanPath path) {
    const index_t n = p.dstate, d = p.dim, b = p.batch, g = p.n_groups, l = p.seqlen, nW = n * W;
    kb.K = chunk_len > 0 ? chunk_len : std::clamp<index_t>(2048 / std::max<index_t>(1, n) / 16 * 16, 16, 128);
    if (chunk_states.data && p.cu_seqlens == nullptr && l > 0) {
      SSM_CHECK(chunk_states.chunk_len >= 1 && chunk_states.n_chunks == ChunkStates::count(l, chunk_states.chunk_len),
                "ssm::cpu::selective_scan_backward: chunk_states: ", chunk_states.n_chunks, " chunks of ",
                chunk_states.chunk_len, " steps do not cover l = ", l, " (ChunkStates::count)");
      kb.saved = chunk_states;
      kb.K = chunk_states.chunk_len;
    }
    const index_t K = kb.K;
    const auto blocks = channel_blocks(p, W);
    // blocks per group (channel_blocks splits at group boundaries when B or C is variable; otherwise one "group")
    const bool grouped = p.variable_B || p.variable_C;
    by_group.assign(static_cast<std::size_t>(grouped ? g : 1), {});
    for (const auto& blk : blocks)
      by_group[static_cast<std::size_t>(grouped ? kb.scan.group_of(blk.first) : 0)].push_back(blk);
    std::size_t most_blocks = 1;
    for (const auto& blks : by_group) most_blocks = std::max(most_blocks, blks.size());
    index_t longest = 0;
    for (index_t s = 0; s < (p.cu_seqlens ? p.n_seqs : 1); ++s)
      longest = std::max(longest, p.cu_seqlens ? p.cu_seqlens[s + 1] - p.cu_seqlens[s] : l);
    // Time split when the blocks of a group cannot keep the threads busy (the long-thin shape: one or two blocks)
    // and a sequence is long enough.
    time_split = threads > 1 && (path == ScanPath::chunked ||
                                 (path == ScanPath::automatic && most_blocks < 2 * static_cast<std::size_t>(threads) &&
                                  longest >= 2 * kMinPiece));
    // Channel blocks: at most one thread per block of a group.
    if (!time_split) threads = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(threads), most_blocks));
    scratch = std::vector<Scratch>(static_cast<std::size_t>(threads));
    const auto KW = static_cast<std::size_t>(K * W), KnW = static_cast<std::size_t>(K * nW);
    for (Scratch& sc : scratch) {
      sc.ws.init(n, K, RealScan<In>::kConvertBC);
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
    var_size = static_cast<std::size_t>(b * g * n * l);
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
      setup(p.variable_B, kb.gp.grad_B, &Scratch::gB, &Scratch::gBp);
      setup(p.variable_C, kb.gp.grad_C, &Scratch::gC, &Scratch::gCp);
    }
    sums = std::vector<ChannelSums>(scratch.size());
    for (ChannelSums& s : sums) s.init(d, n);
    for (const auto& blks : by_group) {
      offset.push_back(consts.size());
      auto c = kb.make_consts(scratch[0].ws, blks);
      consts.insert(consts.end(), std::make_move_iterator(c.begin()), std::make_move_iterator(c.end()));
    }
    for (index_t bi = 0; bi < (p.cu_seqlens ? 1 : b); ++bi) {
      if (!time_split) {
        run_channel_blocks(bi);
        continue;
      }
      for (const Segment& seg : segments_of(p, bi)) run_time_split(bi, seg, path);
    }
    write_outputs();
    return time_split ? ScanPath::chunked : ScanPath::sequential;
  }

  /// Channel blocks, batch row bi: per group, its blocks split over the threads, each running every segment.
  void run_channel_blocks(index_t bi) {
    const auto threads = scratch.size();
    for (std::size_t gi = 0; gi < by_group.size(); ++gi) {
      const auto& blks = by_group[gi];
      const int used = static_cast<int>(std::clamp<std::size_t>(blks.size(), 1, threads));
      run_threads(used, [&](int tid) {
        const std::size_t j0 = blks.size() * static_cast<std::size_t>(tid) / static_cast<std::size_t>(used);
        const std::size_t j1 = blks.size() * static_cast<std::size_t>(tid + 1) / static_cast<std::size_t>(used);
        if (j0 < j1)
          for (const Segment& seg : segments_of(p, bi))
            kb.run_slice(scratch[static_cast<std::size_t>(tid)], bi, static_cast<index_t>(gi),
                         consts.data() + offset[gi] + j0, j1 - j0, Piece{seg.begin, seg.end, seg.s},
                         sums[static_cast<std::size_t>(tid)]);
        simd::stream_fence();  // the gradient rows may have been written with streaming stores (store_row)
      });
    }
  }

  /// Time split, one segment of batch row bi: phase 1 (the pieces' local end states and carries, in parallel),
  /// phase 2 (composed across the pieces), phase 3 (every piece from its true state and carry, in parallel).
  void run_time_split(index_t bi, const Segment& seg, ScanPath path) {
    const int threads = static_cast<int>(scratch.size());
    const index_t nW = p.dstate * W;
    const std::size_t nblocks = consts.size();
    const bool saved = kb.saved.data != nullptr;
    const index_t seg_len = seg.end - seg.begin;
    const int want = path == ScanPath::chunked
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
          if (fwd ? (saved || q + 1 == parts) : q == 0) continue;
          for (std::size_t i = 0; i + 1 < sub.size(); ++i) tasks.push_back({q, fwd, sub[i], sub[i + 1]});
        }
      }
      std::vector<T> task_out(tasks.size() * per_part);                                     // (tasks, all blocks, n, W)
      std::vector<double> task_dsum(tasks.size() * nblocks * static_cast<std::size_t>(W));  // (tasks, all blocks, W)
      std::atomic<std::size_t> next_task{0};
      run_threads(parts, [&](int tid) {
        for (std::size_t t = next_task++; t < tasks.size(); t = next_task++) {
          const Task& task = tasks[t];
          for (std::size_t gi = 0; gi < by_group.size(); ++gi) {
            T* out = task_out.data() + t * per_part + offset[gi] * static_cast<std::size_t>(nW);
            kb.carry(scratch[static_cast<std::size_t>(tid)], consts.data() + offset[gi], by_group[gi].size(), bi,
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
            kb.compose(consts[j], tds, task_out.data() + t * per_part + j * static_cast<std::size_t>(nW), dst);
          }
        }
        t0 = t1;
      }
      // phase 2: carry across the pieces, with the decay over a piece exp(A sum Delta) = 2^(A2 sum Delta):
      // h at the start of piece q + 1 = decay_q h_q + hend_q;  G into piece q - 1 = decay_q G_q + Gloc_q.
      for (std::size_t j = 0; j < nblocks; ++j) {
        const auto ds = [&](int part) { return dsum.data() + (static_cast<std::size_t>(part) * nblocks + j) * W; };
        if (!saved) {
          Kernels::use_block(scratch[0], consts[j]);
          kb.scan.load_state(scratch[0].ws, seg.s);
          std::copy(scratch[0].ws.h.data(), scratch[0].ws.h.data() + nW, at(h0, 0, j));
          for (int q = 0; q + 1 < parts; ++q) {
            std::copy(at(h0, q, j), at(h0, q, j) + nW, at(h0, q + 1, j));
            kb.compose(consts[j], ds(q), at(hend, q, j), at(h0, q + 1, j));
          }
        }
        kb.load_grad_last(consts[j], seg.s, at(Gin, parts - 1, j));  // into the last piece (its G_in stays null)
        for (int q = parts - 1; q > 0; --q) {
          std::copy(at(Gin, q, j), at(Gin, q, j) + nW, at(Gin, q - 1, j));
          kb.compose(consts[j], ds(q), at(Gloc, q, j), at(Gin, q - 1, j));
        }
      }
    }
    run_threads(parts, [&](int tid) {  // phase 3: every piece
      const auto q = static_cast<std::size_t>(tid);
      for (std::size_t gi = 0; gi < by_group.size(); ++gi) {
        Piece piece{bounds[q], bounds[q + 1], seg.s};
        if (tid > 0 && !saved) piece.h0 = at(h0, tid, offset[gi]);
        if (tid + 1 < parts) piece.G_in = at(Gin, tid, offset[gi]);
        if (tid > 0) piece.G_out = at(Gloc, tid, offset[gi]);  // the carry out of a middle piece is not used
        kb.run_slice(scratch[q], bi, static_cast<index_t>(gi), consts.data() + offset[gi], by_group[gi].size(), piece,
                     sums[q]);
      }
      simd::stream_fence();
    });
  }

  /// The outputs: per-channel sums of the threads, and the variable B / C sums in the (b, g, n, l) layout.
  void write_outputs() {
    const ScanGradParams& gp = kb.gp;
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
  }
};

}  // namespace detail::scan

/// CPU selective-scan backward over a validated ScanParams and ScanGradParams (shapes there): the
/// reverse scan with states recomputed per chunk of opt.chunk_len steps from saved chunk-boundary
/// states, threaded over channels. In: float, double, ssm::half or ssm::bfloat16.
/// Returns what ran (ScanRun): "cpu-<simd>-channel-blocks" (path sequential; real A: channels in vector lanes,
/// blocks of channels over the threads, see BlockBackward), "cpu-<simd>-time-split" (path chunked; real A, few channel
/// blocks and long sequences, or opt.path = chunked: each sequence split in time over the threads) or
/// "cpu-per-channel" (complex A: one channel at a time).
template <class In>
ScanRun selective_scan_backward(const ScanParams& p, const ScanGradParams& gp, const ScanBackwardOptions& opt = {}) {
  SSM_CHECK(opt.path != ScanPath::reference, "ssm::cpu::selective_scan_backward: ScanPath::reference is not a CPU "
            "kernel path: call ssm::reference::selective_scan_backward (or the op with path = reference)");
  ScanRun ran;
  if (p.is_complex) {
    detail::scan::backward_complex<In>(p, gp, opt.num_threads, opt.chunk_len);
    ran.complex = true;
    ran.name = "cpu-per-channel";
    return ran;
  }
  const int threads = cpu_threads(opt.num_threads, p.batch * p.dim * p.seqlen * p.dstate);
  detail::scan::BlockBackward<In> kernels(p, gp);
  detail::scan::BackwardSchedule<In> schedule(kernels);
  ran.path = schedule.run(threads, opt.chunk_len, opt.chunk_states, opt.path);
  ran.name = std::string("cpu-") + simd::kLevel + (ran.path == ScanPath::chunked ? "-time-split" : "-channel-blocks");
  return ran;
}

}  // namespace ssm::cpu

/// The backward's entry for one input type In, compiled once where SSM_EXTERN_INSTANCES is set (core/instances.hpp,
/// src/instances/).
#define SSM_CPU_SCAN_BACKWARD_INSTANCES(PREFIX, In)                 \
  PREFIX ::ssm::cpu::ScanRun ssm::cpu::selective_scan_backward<In>( \
      const ::ssm::ScanParams&, const ::ssm::ScanGradParams&, const ::ssm::cpu::ScanBackwardOptions&);
#if SSM_EXTERN_INSTANCES
SSM_FOR_EACH_INPUT(SSM_CPU_SCAN_BACKWARD_INSTANCES, extern template)
#endif
