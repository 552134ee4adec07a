// The chunked SSD forward on the CPU (docs/ssd.md): the four stages of chunks.hpp's layout, each a set of GEMMs
// (Eigen) on one chunk, run in three passes over the threads (cpu/threads.hpp):
//   pass 1, over (sequence, group, chunk): stage 2, each head's zero-start chunk state and decay;
//   pass 2, over (sequence, head):         stage 3, the states entering the chunks and the final state;
//   pass 3, over (sequence, group, chunk): stages 1 and 4 and the epilogue, each head's output rows.
// C Bᵀ is formed once per (group, chunk) and B, C converted once per (group, chunk), shared by the group's heads.
// The gate (the value scale and log decay per step) is a Gate object (gate.hpp): SSD's from dt and A, or another op's.
// Workspace: the chunk states, (chunks, h, p, n) in the compute type, kept between calls (passes.hpp), or the caller's
// p.chunk_states, which then hold the states entering the chunks (and p.y the output before the gate) for the
// backward. Results depend on the thread count not at all (each output element is computed by one task in a fixed
// order) and on the chunk size by rounding only.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/instances.hpp"
#include "ssm/core/params/ssd.hpp"
#include "ssm/cpu/ssd/chunk_local.hpp"
#include "ssm/cpu/ssd/chunk_output.hpp"
#include "ssm/cpu/ssd/chunk_state.hpp"
#include "ssm/cpu/ssd/chunks.hpp"
#include "ssm/cpu/ssd/gate.hpp"
#include "ssm/cpu/ssd/passes.hpp"
#include "ssm/cpu/ssd/state_passing.hpp"
#include "ssm/cpu/threads.hpp"

namespace ssm::cpu {

namespace ssd {

template <class In, class Gate>
void forward_chunked(const SsdParams& p, const Gate& gate, int threads) {
  using T = compute_t<In>;
  const ChunkList list = make_chunks(p);
  const std::int64_t h = p.nheads, hd = p.headdim, n = p.dstate, g = p.ngroups, hpg = h / g;
  const std::int64_t n_chunks = static_cast<std::int64_t>(list.chunks.size()), state_size = hd * n;
  ChunkBuffers<T> buf(p, n_chunks);

  // pass 1: stage 2
  chunk_states_pass<In, T>(p, gate, list, buf, threads, [](const Chunk&, std::int64_t, const Matrix<T>&) {});

  // pass 2: stage 3
  parallel_for(p.rows() * h, threads, [&](std::int64_t task) {
    const std::int64_t s = task / h, head = task % h;
    std::vector<T> H0;
    initial_state(p, s, head, H0);
    const std::int64_t c0 = list.first_chunk[static_cast<std::size_t>(s)];
    const std::int64_t count = list.first_chunk[static_cast<std::size_t>(s + 1)] - c0;
    state_passing(buf.state_at(c0, head), count, h * state_size, buf.decay.data() + c0 * h + head, h,
                  Eigen::Map<Matrix<T>>(H0.data(), hd, n));
    if (p.final_state) std::copy(H0.begin(), H0.end(), static_cast<T*>(p.final_state) + (s * h + head) * state_size);
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
      const T* scale = buf.scale_at(ch.index, head);
      const double* cs = buf.cs_at(ch.index, head);
      load_head<In, T>(p, ch, head, X);
      chunk_output(cs, Cm, Eigen::Map<const Matrix<T>>(buf.state_at(ch.index, head), hd, n), Y);
      chunk_local(G, cs, scale, X, M, Xd, Y);
      add_skip(p, head, X, Y);
      store_output<In, T>(p, ch, head, Y, zrow);
    }
  });
}

}  // namespace ssd

/// The chunked SSD forward over p (validated by the op, ops/ssd.hpp), p.chunk_size steps a chunk, on `threads`
/// threads (0: by the amount of work).
inline void ssd_forward_chunked(const SsdParams& p, int threads) {
  const int t = cpu_threads(threads, p.batch * p.seqlen * p.nheads * p.headdim * p.dstate);
  switch (p.input_dtype) {
    case DType::f32: ssd::forward_chunked<float>(p, ssd::SsdGate<float>{p}, t); break;
    case DType::f64: ssd::forward_chunked<double>(p, ssd::SsdGate<double>{p}, t); break;
    case DType::f16: ssd::forward_chunked<half>(p, ssd::SsdGate<float>{p}, t); break;
    case DType::bf16: ssd::forward_chunked<bfloat16>(p, ssd::SsdGate<float>{p}, t); break;
    default: fail("ssd: input dtype ", name(p.input_dtype), " has no CPU path");
  }
}

}  // namespace ssm::cpu

/// The chunked forward's entry for one input type In (its gate computed in f64 for f64 input, else in f32),
/// compiled once where SSM_EXTERN_INSTANCES is set (core/instances.hpp, src/instances/).
#define SSM_CPU_SSD_FORWARD_INSTANCES(PREFIX, In)                                                 \
  PREFIX void ssm::cpu::ssd::forward_chunked<In, ::ssm::cpu::ssd::SsdGate<::ssm::compute_t<In>>>( \
      const ::ssm::SsdParams&, const ::ssm::cpu::ssd::SsdGate<::ssm::compute_t<In>>&, int);
#if SSM_EXTERN_INSTANCES
SSM_FOR_EACH_INPUT(SSM_CPU_SSD_FORWARD_INSTANCES, extern template)
#endif
