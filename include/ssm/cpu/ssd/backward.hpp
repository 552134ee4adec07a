// The chunked SSD backward on the CPU (docs/ssd.md, docs/math.md §8.4): each stage's backward (one file each) on
// GEMMs (Eigen), in three threaded passes like the forward (cpu/threads.hpp). The states entering the chunks and y
// before the gate are the forward's where it kept them (SsdGradParams::saved_states, saved_y), else recomputed:
//   pass 1, over (sequence, group, chunk): the gate's steps and segment sums (and, without kept states, stage 2 again:
//           the forward's own pass, passes.hpp), and the state gradient the chunk's own outputs give,
//           E_c = (diag(exp(cs)) ḡy)ᵀ C;
//   pass 2, over (sequence, head):         without kept states stage 3 forward (S_c -> H_in[c], the final state
//           discarded); then its reverse (E_c -> ḡS_c, each chunk's decay gradient, the initial state's gradient);
//   pass 3, over (sequence, group, chunk): the backward of the epilogue and of stages 4, 1 and 2 (with z and no kept y,
//           y again for ḡz), then the gate's (gate.hpp: for SSD ḡdt, ḡA, ḡdt_bias); ḡB and ḡC summed over the
//           group's heads, ḡC += ḡG B and ḡB += ḡGᵀ C once.
// Workspace: two (chunks, h, p, n) buffers in the compute type (the states, unless kept, and their gradients), the
// scale and cs per (chunk, head), kept between calls (chunks.hpp: workspace), and per-(chunk, head) parts of ḡD and
// of the gate's gradients (ḡA, ḡdt_bias), reduced in chunk order at the end. Every output element is written by one
// task in a fixed order, so results do not depend on the thread count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/instances.hpp"
#include "ssm/core/params/ssd.hpp"
#include "ssm/cpu/ssd/chunk_local.hpp"
#include "ssm/cpu/ssd/chunk_local_backward.hpp"
#include "ssm/cpu/ssd/chunk_output.hpp"
#include "ssm/cpu/ssd/chunk_output_backward.hpp"
#include "ssm/cpu/ssd/chunk_state.hpp"
#include "ssm/cpu/ssd/chunk_state_backward.hpp"
#include "ssm/cpu/ssd/chunks.hpp"
#include "ssm/cpu/ssd/gate.hpp"
#include "ssm/cpu/ssd/passes.hpp"
#include "ssm/cpu/ssd/state_passing.hpp"
#include "ssm/cpu/ssd/state_passing_backward.hpp"
#include "ssm/cpu/threads.hpp"

namespace ssm::cpu {

namespace ssd {

template <class In, class Gate>
void backward_chunked(const SsdParams& p, const SsdGradParams& g, Gate& gate, int threads) {
  using T = compute_t<In>;
  const ChunkList list = make_chunks(p);
  const std::int64_t h = p.nheads, hd = p.headdim, n = p.dstate, ng = p.ngroups, hpg = h / ng, l = p.seqlen;
  const std::int64_t n_chunks = static_cast<std::int64_t>(list.chunks.size()), state_size = hd * n;
  // the states entering the chunks: the forward's (g.saved_states), or recomputed by passes 1 and 2 into buf.states
  const T* const saved = static_cast<const T*>(g.saved_states);
  ChunkBuffers<T> buf(p, n_chunks, saved == nullptr);
  auto entering = [&](std::int64_t c, std::int64_t head) -> const T* {
    return saved ? saved + (c * h + head) * state_size : buf.state_at(c, head);
  };
  // the states' gradients, (chunks, h, p, n), a kept workspace (chunks.hpp) left uninitialized: pass 1 writes every
  // element before it is read.
  T* const grads = workspace<T>(2, n_chunks * h * state_size);
  auto grad_at = [&](std::int64_t c, std::int64_t head) { return grads + (c * h + head) * state_size; };
  std::vector<double> gdecay(static_cast<std::size_t>(n_chunks * h));
  // per (chunk, head) parts of ḡD, reduced in chunk order at the end (the gate keeps its own)
  std::vector<double> gD_part(p.D ? static_cast<std::size_t>(n_chunks * h * hd) : 0);
  gate.prepare(n_chunks * h);

  // pass 1: stage 2 again (the forward's pass; only the gate's steps where the states were kept), and E_c
  chunk_states_pass<In, T>(
      p, gate, list, buf, threads,
      [&](const Chunk& ch, std::int64_t head, const Matrix<T>& Cm) {
        thread_local Matrix<T> Gout, Z, gY, Ge;
        load_grad_y<In, T>(p, g, ch, head, Gout, Z, gY);
        chunk_output_state_grad(buf.cs_at(ch.index, head), Cm, gY, Ge,
                                Eigen::Map<Matrix<T>>(grad_at(ch.index, head), hd, n));
      },
      saved == nullptr);

  // pass 2: stage 3 forward (unless kept), then its reverse
  parallel_for(p.rows() * h, threads, [&](std::int64_t task) {
    const std::int64_t s = task / h, head = task % h, state_off = (s * h + head) * state_size;
    std::vector<T> H;
    const std::int64_t c0 = list.first_chunk[static_cast<std::size_t>(s)];
    const std::int64_t count = list.first_chunk[static_cast<std::size_t>(s + 1)] - c0;
    if (!saved) {
      initial_state(p, s, head, H);
      state_passing(buf.state_at(c0, head), count, h * state_size, buf.decay.data() + c0 * h + head, h,
                    Eigen::Map<Matrix<T>>(H.data(), hd, n));
    }
    if (g.grad_final_state) {
      const T* gf = static_cast<const T*>(g.grad_final_state) + state_off;
      H.assign(gf, gf + state_size);
    } else {
      H.assign(static_cast<std::size_t>(state_size), T(0));
    }
    state_passing_backward(grad_at(c0, head), entering(c0, head), count, h * state_size,
                           buf.decay.data() + c0 * h + head, gdecay.data() + c0 * h + head, h,
                           Eigen::Map<Matrix<T>>(H.data(), hd, n));
    if (g.grad_initial_state) std::copy(H.begin(), H.end(), static_cast<T*>(g.grad_initial_state) + state_off);
  });

  // pass 3: the stages' backward
  parallel_for(n_chunks * ng, threads, [&](std::int64_t task) {
    const Chunk& ch = list.chunks[static_cast<std::size_t>(task / ng)];
    const std::int64_t gi = task % ng, len = ch.len;
    Matrix<T> Bm, Cm, G, X, Gout, Z, gY, Ge, gCh, Y, L, M, Xd, dM, gXd, P, gX;
    std::vector<T> row, col;
    std::vector<double> gDelta, dcs;
    load_group<In, T>(p, ch, gi, Bm, Cm);
    chunk_gram(Cm, Bm, G);
    Matrix<T> dG = Matrix<T>::Zero(len, len), gB(len, n), gC = Matrix<T>::Zero(len, n);
    Matrix<T> Xw(len, hpg * hd);  // (len, heads p): diag(w) x of every head
    for (std::int64_t head = gi * hpg; head < (gi + 1) * hpg; ++head) {
      const std::size_t ci = static_cast<std::size_t>(ch.index * h + head);
      const T* Delta = buf.scale_at(ch.index, head);
      const double* cs = buf.cs_at(ch.index, head);
      const Eigen::Map<const Matrix<T>> H_in(entering(ch.index, head), hd, n), dS(grad_at(ch.index, head), hd, n);
      load_head<In, T>(p, ch, head, X);
      load_grad_y<In, T>(p, g, ch, head, Gout, Z, gY);
      gDelta.assign(static_cast<std::size_t>(len), 0.0);
      dcs.assign(static_cast<std::size_t>(len), 0.0);
      dcs[static_cast<std::size_t>(len - 1)] = gdecay[ci];  // the decay a_c = exp(cs_last)
      chunk_output_backward<T>(cs, Cm, H_in, gY, Ge, gCh, gC, dcs.data());  // stage 4's
      decay_mask(G, cs, L, M);  // stage 1's mask
      Xd.noalias() = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>(Delta, len).asDiagonal() * X;
      if (p.z) {  // y before the gate, for ḡz: the forward's, or stages 4 and 1 and the skip again
        if (g.saved_y) {
          load_saved_y(p, g, ch, head, Y);
        } else {
          chunk_output(cs, Cm, H_in, Y);
          Y.noalias() += M.template triangularView<Eigen::Lower>() * Xd;
          add_skip(p, head, X, Y);
        }
      }
      epilogue_backward<In, T>(p, g, ch, head, X, Y, Gout, Z, gY, gX, p.D ? gD_part.data() + ci * hd : nullptr, row);
      chunk_local_backward(L, M, Delta, X, Xd, gY, dM, gXd, col, gX, gDelta.data(), dG, dcs.data());
      const std::int64_t block = (head - gi * hpg) * hd;  // this head's columns of Xw
      chunk_state_backward<T>(cs, Delta, X, Bm, dS, P, Xw.middleCols(block, hd), gX, gDelta.data(), dcs.data());
      segment_sums_backward(dcs.data(), len);  // ḡcs -> ḡlog a
      gate.backward(ch, head, ci, Delta, gDelta.data(), dcs.data());
      if (g.grad_x)
        for (std::int64_t t = 0; t < len; ++t)
          store_row(gX.row(t).data(), hd, static_cast<In*>(g.grad_x) + ((ch.row * l + ch.t0 + t) * h + head) * hd);
    }
    // the heads' ḡS are contiguous (heads p, n) in the (chunks, h, p, n) buffer
    gB.noalias() = Xw * Eigen::Map<const Matrix<T>>(grad_at(ch.index, gi * hpg), hpg * hd, n);
    gC.noalias() += dG.template triangularView<Eigen::Lower>() * Bm;
    gB.noalias() += dG.template triangularView<Eigen::Lower>().transpose() * Cm;
    for (std::int64_t t = 0; t < len; ++t) {
      const std::int64_t off = ((ch.row * l + ch.t0 + t) * ng + gi) * n;
      if (g.grad_B) store_row(gB.row(t).data(), n, static_cast<In*>(g.grad_B) + off);
      if (g.grad_C) store_row(gC.row(t).data(), n, static_cast<In*>(g.grad_C) + off);
    }
  });

  // the shared gradients, summed over chunks in order
  gate.finish(n_chunks);
  if (p.D && g.grad_D)
    for (std::int64_t head = 0; head < h; ++head) {
      std::vector<double> gd(static_cast<std::size_t>(hd), 0.0);
      for (std::int64_t c = 0; c < n_chunks; ++c) {
        const std::size_t ci = static_cast<std::size_t>(c * h + head);
        for (std::int64_t i = 0; i < hd; ++i)
          gd[static_cast<std::size_t>(i)] += gD_part[ci * static_cast<std::size_t>(hd) + static_cast<std::size_t>(i)];
      }
      T* gDo = static_cast<T*>(g.grad_D);
      if (p.D_per_channel) {
        for (std::int64_t i = 0; i < hd; ++i) gDo[head * hd + i] = static_cast<T>(gd[static_cast<std::size_t>(i)]);
      } else {
        double sum = 0;
        for (double v : gd) sum += v;
        gDo[head] = static_cast<T>(sum);
      }
    }
}

}  // namespace ssd

/// The chunked SSD backward over p (validated by the op, ops/ssd.hpp) and g, p.chunk_size steps a chunk, on
/// `threads` threads (0: by the amount of work).
inline void ssd_backward_chunked(const SsdParams& p, const SsdGradParams& g, int threads) {
  const int t = cpu_threads(threads, p.batch * p.seqlen * p.nheads * p.headdim * p.dstate);
  switch (p.input_dtype) {
    case DType::f32: { ssd::SsdGate<float> gate{p, &g}; ssd::backward_chunked<float>(p, g, gate, t); break; }
    case DType::f64: { ssd::SsdGate<double> gate{p, &g}; ssd::backward_chunked<double>(p, g, gate, t); break; }
    case DType::f16: { ssd::SsdGate<float> gate{p, &g}; ssd::backward_chunked<half>(p, g, gate, t); break; }
    case DType::bf16: { ssd::SsdGate<float> gate{p, &g}; ssd::backward_chunked<bfloat16>(p, g, gate, t); break; }
    default: fail("ssd_backward: input dtype ", name(p.input_dtype), " has no CPU path");
  }
}

}  // namespace ssm::cpu

/// The chunked backward's entry for one input type In, compiled once where SSM_EXTERN_INSTANCES is set
/// (core/instances.hpp, src/instances/).
#define SSM_CPU_SSD_BACKWARD_INSTANCES(PREFIX, In)                                                 \
  PREFIX void ssm::cpu::ssd::backward_chunked<In, ::ssm::cpu::ssd::SsdGate<::ssm::compute_t<In>>>( \
      const ::ssm::SsdParams&, const ::ssm::SsdGradParams&, ::ssm::cpu::ssd::SsdGate<::ssm::compute_t<In>>&, int);
#if SSM_EXTERN_INSTANCES
SSM_FOR_EACH_INPUT(SSM_CPU_SSD_BACKWARD_INSTANCES, extern template)
#endif
