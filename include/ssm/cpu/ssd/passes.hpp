// What the chunked forward (forward.hpp) and backward (backward.hpp) share: the per-(chunk, head) buffers, the pass
// over (sequence, group, chunk) that computes every head's gate, segment sums, zero-start chunk state and decay
// (stage 2), and the state entering a sequence. One definition, so the backward's recomputed chunk states are the
// forward's bit for bit.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "ssm/core/params/ssd.hpp"
#include "ssm/cpu/ssd/chunk_state.hpp"
#include "ssm/cpu/ssd/chunks.hpp"
#include "ssm/cpu/threads.hpp"

namespace ssm::cpu::ssd {

/// The passes' per-(chunk, head) data: the chunk states (chunks, h, p, n), the value scale and the segment sums
/// (chunks, h, Q) in kept workspaces (chunks.hpp), left uninitialized (pass 1 writes every element before it is
/// read; zeroing the states cost 4% of a forward at the Mamba-2 shape, perf), and each chunk's decay (chunks, h).
/// The states are the caller's p.chunk_states where it keeps them (the forward's output for its backward), and none
/// for a backward given them (`states` false).
template <class T>
struct ChunkBuffers {
  std::int64_t h, state_size, Q;
  T* states;
  T* scale;
  double* cs;
  std::vector<T> decay;

  ChunkBuffers(const SsdParams& p, std::int64_t n_chunks, bool with_states = true)
      : h(p.nheads), state_size(p.headdim * p.dstate), Q(p.chunk_size),
        states(!with_states      ? nullptr
               : p.chunk_states ? static_cast<T*>(p.chunk_states)
                                : workspace<T>(0, n_chunks * p.nheads * p.headdim * p.dstate)),
        scale(workspace<T>(1, n_chunks * p.nheads * p.chunk_size)),
        cs(workspace<double>(3, n_chunks * p.nheads * p.chunk_size)),
        decay(static_cast<std::size_t>(n_chunks * p.nheads)) {}

  T* state_at(std::int64_t c, std::int64_t head) const { return states + (c * h + head) * state_size; }
  T* scale_at(std::int64_t c, std::int64_t head) const { return scale + (c * h + head) * Q; }
  double* cs_at(std::int64_t c, std::int64_t head) const { return cs + (c * h + head) * Q; }
};

/// Pass 1 (stage 2), over (sequence, group, chunk): B and C of the group loaded once; for each of its heads, the
/// gate's scale and log decay (gate.hpp), their segment sums, the zero-start chunk state S_c (unless `states` is
/// false: a backward given the forward's entering states) and the chunk's decay; then per_head(chunk, head, Cm) for
/// what else a caller computes from the same chunk (the backward's E_c).
template <class In, class T, class Gate, class PerHead>
void chunk_states_pass(const SsdParams& p, const Gate& gate, const ChunkList& list, ChunkBuffers<T>& buf, int threads,
                       PerHead&& per_head, bool states = true) {
  const std::int64_t h = p.nheads, hd = p.headdim, n = p.dstate, g = p.ngroups, hpg = h / g;
  const std::int64_t n_chunks = static_cast<std::int64_t>(list.chunks.size());
  parallel_for(n_chunks * g, threads, [&](std::int64_t task) {
    const Chunk& ch = list.chunks[static_cast<std::size_t>(task / g)];
    const std::int64_t gi = task % g;
    Matrix<T> Bm, Cm, X, Xw;
    load_group<In, T>(p, ch, gi, Bm, Cm);
    for (std::int64_t head = gi * hpg; head < (gi + 1) * hpg; ++head) {
      T* scale = buf.scale_at(ch.index, head);
      double* cs = buf.cs_at(ch.index, head);
      gate.steps(ch, head, scale, cs);
      segment_sums(cs, ch.len);
      T& decay = buf.decay[static_cast<std::size_t>(ch.index * h + head)];
      if (states) {
        load_head<In, T>(p, ch, head, X);
        decay = chunk_state(cs, scale, X, Bm, Xw, Eigen::Map<Matrix<T>>(buf.state_at(ch.index, head), hd, n));
      } else {
        decay = chunk_decay<T>(cs, ch.len);
      }
      per_head(ch, head, Cm);
    }
  });
}

/// H (p, n) = sequence s's initial state for `head` (zero without one).
template <class T>
void initial_state(const SsdParams& p, std::int64_t s, std::int64_t head, std::vector<T>& H) {
  const std::int64_t size = p.headdim * p.dstate;
  H.assign(static_cast<std::size_t>(size), T(0));
  if (p.initial_state) {
    const T* h0 = static_cast<const T*>(p.initial_state) + (s * p.nheads + head) * size;
    std::copy(h0, h0 + size, H.begin());
  }
}

}  // namespace ssm::cpu::ssd
