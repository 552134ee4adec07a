// The chunked SSD's layout (docs/ssd.md): every sequence cut into chunks of Q steps from its own start (the last one
// ragged), so a packed sequence (cu_seqlens) never shares a chunk with the next; and what a stage reads of one
// chunk, converted once to the compute type T (f32 for f32 / f16 / bf16 inputs, f64 for f64): B and C of a group,
// and x, the value scale (Δ) and the gate's cumulative sums of a head (the gate itself: gate.hpp).
//
// Segment sums. The weight of step j at step i >= j inside a chunk is exp(Σ_{k=j+1..i} Δ_k A) = exp(cs_i − cs_j)
// with cs the chunk's inclusive cumulative sum of the per-step log decay (Δ A for SSD). cs is kept in double whatever T, so the difference has an
// absolute error of about 1e-16 |cs| (f32 cumulative sums would lose 6e-8 |cs| to cancellation, which for a long
// chunk exceeds the f32 target). With every log decay <= 0 (SSD: Δ >= 0, A <= 0) every exponent the stages take is <= 0: pairs j > i are
// never exponentiated (masked), the chunk state's weights are cs_last − cs_t, the inter-chunk ones cs_t.
#pragma once

#include "ssm/core/macros.hpp"
#include "ssm/core/eigen.hpp"
#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "ssm/core/params/ssd.hpp"
#include "ssm/cpu/convert.hpp"

namespace ssm::cpu::ssd {

template <class T>
using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// A buffer of at least `size` elements of T (uninitialized), kept by the calling thread between calls; `slot` (0..3)
/// picks one of four per T. Slots are numbered across types (f64 states and the double cumulative sums share T):
/// 0 the chunk states, 1 Δ, 2 the states' gradients, 3 the cumulative sums. The chunked passes' large workspaces (the chunk states: (chunks, h, p, n), 50 MB at
/// l = 8192 at the Mamba-2 shape) live here: allocated per call, their pages were faulted in and zeroed by the
/// kernel on every call. What a buffer holds is kept until the thread ends (the largest problem's size).
template <class T>
T* workspace(int slot, std::int64_t size) {
  struct Buffer {
    std::unique_ptr<T[]> data;
    std::int64_t size = 0;
  };
  thread_local Buffer buffers[4];
  Buffer& b = buffers[slot];
  if (b.size < size) {
    b.data.reset();
    b.size = 0;  // (a failed allocation below leaves an empty buffer, not a stale size)
    b.data.reset(new T[static_cast<std::size_t>(size)]);
    b.size = size;
  }
#ifndef NDEBUG
  // Debug builds (the sanitizer run among them) hand out NaN, so a pass that reads an element no pass wrote in this
  // call fails its test instead of reading the previous call's value.
  if constexpr (std::is_floating_point_v<T>)
    std::fill_n(b.data.get(), static_cast<std::size_t>(size), std::numeric_limits<T>::quiet_NaN());
#endif
  return b.data.get();
}

/// One chunk: sequence `seq` (batch row `row`), steps [t0, t0 + len) along l, and its index among all chunks.
struct Chunk {
  std::int64_t seq, row, t0, len, index;
  bool last;  // the sequence's last chunk
};

/// Every chunk of every sequence, in order (sequence-major); first_chunk[s] is sequence s's first.
struct ChunkList {
  std::vector<Chunk> chunks;
  std::vector<std::int64_t> first_chunk;  // (rows + 1)
};

inline ChunkList make_chunks(const SsdParams& p) {
  ChunkList r;
  r.first_chunk.push_back(0);
  for (std::int64_t s = 0; s < p.rows(); ++s) {
    const std::int64_t begin = p.seq_begin(s), end = p.seq_end(s);
    for (std::int64_t t0 = begin; t0 < end; t0 += p.chunk_size) {
      const std::int64_t len = std::min(p.chunk_size, end - t0);
      r.chunks.push_back({s, p.seq_row(s), t0, len, static_cast<std::int64_t>(r.chunks.size()), t0 + len == end});
    }
    r.first_chunk.push_back(static_cast<std::int64_t>(r.chunks.size()));
  }
  return r;
}

/// B and C of one group over one chunk: (len, n) each.
template <class In, class T>
void load_group(const SsdParams& p, const Chunk& ch, std::int64_t group, Matrix<T>& Bm, Matrix<T>& Cm) {
  const std::int64_t n = p.dstate;
  Bm.resize(ch.len, n);
  Cm.resize(ch.len, n);
  for (std::int64_t t = 0; t < ch.len; ++t) {
    const std::int64_t tt = ch.t0 + t;
    load_row(static_cast<const In*>(p.B) + ch.row * p.B_batch_stride + tt * p.B_seq_stride + group * p.B_group_stride,
             n, Bm.row(t).data());
    load_row(static_cast<const In*>(p.C) + ch.row * p.C_batch_stride + tt * p.C_seq_stride + group * p.C_group_stride,
             n, Cm.row(t).data());
  }
}

/// x of one head over one chunk: X (len, p).
template <class In, class T>
void load_head(const SsdParams& p, const Chunk& ch, std::int64_t head, Matrix<T>& X) {
  X.resize(ch.len, p.headdim);
  for (std::int64_t t = 0; t < ch.len; ++t)
    load_row(static_cast<const In*>(p.x) + ch.row * p.x_batch_stride + (ch.t0 + t) * p.x_seq_stride +
                 head * p.x_head_stride,
             p.headdim, X.row(t).data());
}

/// The segment sums' cumulative sums, in place: cs (len) holds the steps' log decays log a_t on entry (a Gate's,
/// gate.hpp) and cs_t = Σ_{k<=t} log a_k on return, in double.
inline void segment_sums(double* cs, std::int64_t len) {
  double sum = 0;
  for (std::int64_t t = 0; t < len; ++t) cs[t] = sum += cs[t];
}

/// The backward of segment_sums, in place: dcs (len) holds ḡcs on entry and ḡlog a_k = Σ_{t>=k} ḡcs_t on return.
inline void segment_sums_backward(double* dcs, std::int64_t len) {
  double rc = 0;
  for (std::int64_t t = len - 1; t >= 0; --t) dcs[t] = rc += dcs[t];
}

/// y (n) *= silu(z) = z / (1 + e^-z) (scalar::silu's formula) on Eigen's vector exp: a scalar exp per element cost a
/// fifth of the whole SSD forward at the Mamba-2 shape (perf, l = 2048, chunk 128).
template <class T>
void multiply_silu(T* y, const T* z, std::int64_t n) {
  Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> yv(y, n);
  const Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>> zv(z, n);
  yv *= zv / (T(1) + (-zv).exp());
}

}  // namespace ssm::cpu::ssd
