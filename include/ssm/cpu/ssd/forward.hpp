// The chunked SSD forward on the CPU (docs/ssd.md): the four stages of chunks.hpp's layout, each a set of GEMMs
// (Eigen) on one chunk, run in three passes over the threads (cpu/threads.hpp):
//   pass 1, over (sequence, group, chunk): stage 2, each head's zero-start chunk state and decay;
//   pass 2, over (sequence, head):         stage 3, the states entering the chunks and the final state;
//   pass 3, over (sequence, group, chunk): stages 1 and 4 and the epilogue, each head's output rows.
// C Bᵀ is formed once per (group, chunk) and B, C converted once per (group, chunk), shared by the group's heads.
// Workspace: the chunk states, (chunks, h, p, n) in the compute type, kept between calls (chunks.hpp: workspace). Results depend on the thread count not at all
// (each output element is computed by one task in a fixed order) and on the chunk size by rounding only.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/params/ssd.hpp"
#include "ssm/cpu/ssd/chunk_local.hpp"
#include "ssm/cpu/ssd/chunk_output.hpp"
#include "ssm/cpu/ssd/chunk_state.hpp"
#include "ssm/cpu/ssd/chunks.hpp"
#include "ssm/cpu/ssd/state_passing.hpp"
#include "ssm/cpu/threads.hpp"

namespace ssm::cpu {

namespace ssd {

template <class In>
void forward_chunked(const SsdParams& p, int threads) {
  using T = compute_t<In>;
  const ChunkList list = make_chunks(p);
  const std::int64_t h = p.nheads, hd = p.headdim, n = p.dstate, g = p.ngroups, hpg = h / g;
  const std::int64_t n_chunks = static_cast<std::int64_t>(list.chunks.size()), state_size = hd * n;
  // (chunks, h, p, n), a kept workspace left uninitialized: pass 1 writes every element before it is read (zeroing
  // it cost 4% of a call at the Mamba-2 shape, perf).
  T* const states = workspace<T>(0, n_chunks * h * state_size);
  // Δ and the gate's cumulative sums of every (chunk, head), (chunks, h, Q): from pass 1, reused by pass 3.
  const std::int64_t Q = p.chunk_size;
  T* const Delta_all = workspace<T>(1, n_chunks * h * Q);
  double* const cs_all = workspace<double>(3, n_chunks * h * Q);
  auto Delta_at = [&](std::int64_t chunk, std::int64_t head) { return Delta_all + (chunk * h + head) * Q; };
  auto cs_at = [&](std::int64_t chunk, std::int64_t head) { return cs_all + (chunk * h + head) * Q; };
  std::vector<T> decay(static_cast<std::size_t>(n_chunks * h));                // (chunks, h)
  auto state_at = [&](std::int64_t chunk, std::int64_t head) { return states + (chunk * h + head) * state_size; };

  // pass 1: stage 2
  parallel_for(n_chunks * g, threads, [&](std::int64_t task) {
    const Chunk& ch = list.chunks[static_cast<std::size_t>(task / g)];
    const std::int64_t gi = task % g;
    Matrix<T> Bm, Cm, X, Xw;
    load_group<In, T>(p, ch, gi, Bm, Cm);
    for (std::int64_t head = gi * hpg; head < (gi + 1) * hpg; ++head) {
      T* Delta = Delta_at(ch.index, head);
      double* cs = cs_at(ch.index, head);
      load_head<In, T>(p, ch, head, X);
      gate_sums<T>(p, ch, head, Delta, cs);
      decay[static_cast<std::size_t>(ch.index * h + head)] =
          chunk_state(cs, Delta, X, Bm, Xw, Eigen::Map<Matrix<T>>(state_at(ch.index, head), hd, n));
    }
  });

  // pass 2: stage 3
  parallel_for(p.rows() * h, threads, [&](std::int64_t task) {
    const std::int64_t s = task / h, head = task % h;
    std::vector<T> H0(static_cast<std::size_t>(state_size), T(0));
    const std::int64_t state_off = (s * h + head) * state_size;
    if (p.initial_state) {
      const T* h0 = static_cast<const T*>(p.initial_state) + state_off;
      std::copy(h0, h0 + state_size, H0.begin());
    }
    const std::int64_t c0 = list.first_chunk[static_cast<std::size_t>(s)];
    const std::int64_t count = list.first_chunk[static_cast<std::size_t>(s + 1)] - c0;
    state_passing(state_at(c0, head), count, h * state_size, decay.data() + c0 * h + head, h,
                  Eigen::Map<Matrix<T>>(H0.data(), hd, n));
    if (p.final_state) std::copy(H0.begin(), H0.end(), static_cast<T*>(p.final_state) + state_off);
  });

  // pass 3: stages 1 and 4, the epilogue
  parallel_for(n_chunks * g, threads, [&](std::int64_t task) {
    const Chunk& ch = list.chunks[static_cast<std::size_t>(task / g)];
    const std::int64_t gi = task % g;
    Matrix<T> Bm, Cm, G, X, M, Xd, Y;
    std::vector<T> zrow;
    load_group<In, T>(p, ch, gi, Bm, Cm);
    chunk_gram(Cm, Bm, G);
    for (std::int64_t head = gi * hpg; head < (gi + 1) * hpg; ++head) {
      const T* Delta = Delta_at(ch.index, head);
      const double* cs = cs_at(ch.index, head);
      load_head<In, T>(p, ch, head, X);
      chunk_output(cs, Cm, Eigen::Map<const Matrix<T>>(state_at(ch.index, head), hd, n), Y);
      chunk_local(G, cs, Delta, X, M, Xd, Y);
      store_output<In, T>(p, ch, head, X, Y, zrow);
    }
  });
}

}  // namespace ssd

/// The chunked SSD forward over p (validated by the op, ops/ssd.hpp), p.chunk_size steps a chunk, on `threads`
/// threads (0: by the amount of work).
inline void ssd_forward_chunked(const SsdParams& p, int threads) {
  const int t = cpu_threads(threads, p.batch * p.seqlen * p.nheads * p.headdim * p.dstate);
  switch (p.input_dtype) {
    case DType::f32: ssd::forward_chunked<float>(p, t); break;
    case DType::f64: ssd::forward_chunked<double>(p, t); break;
    case DType::f16: ssd::forward_chunked<half>(p, t); break;
    case DType::bf16: ssd::forward_chunked<bfloat16>(p, t); break;
    default: fail("ssd: input dtype ", name(p.input_dtype), " has no CPU path");
  }
}

}  // namespace ssm::cpu
