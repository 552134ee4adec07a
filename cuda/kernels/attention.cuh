// Attention kernels (docs/math.md §7; FlashAttention, Dao et al. 2022; FlashAttention-2, Dao 2023; split-key decoding
// as in Flash-Decoding): causal scaled-dot-product attention in f32, multi-head and grouped-query, head dimension
// up to kDim (a template: 32, 64 or 128; the real p may be smaller, the rest is zero padding).
//
// A query (or key) row is shared by kParts = kDim / kDimsPerThread neighbouring threads of a warp: thread `part`
// holds dims part, part + kParts, part + 2 kParts, ... (interleaved, so the kParts threads read consecutive
// shared-memory banks), and a dot product is its partial sum reduced by log2(kParts) xor-shuffles within the
// row's lanes. Scores live in the exp2 domain: s = q·k · scale · log2(e), so the softmax uses exp2f.
//
//   attention_fwd_kernel        one block per (tile of kRows queries, head, batch); key tiles of kKeys staged in
//                               shared memory; online softmax with the running max m and sum l per row.
//   attention_decode_kernel     one block per (slice of keys, head, batch x query): each warp walks its keys
//                               (lanes over dims) with an online softmax, the warps merge in shared memory, the
//                               block writes (m, l, o) for its slice.
//   attention_combine_kernel    one block per (query, head, batch): merges the slices into out and lse.
//   attention_bwd_delta_kernel  delta = rowsum(grad_out * out), a warp per row.
//   attention_bwd_dkdv_kernel   one block per (tile of keys, kv head, batch), looping over every query head of the
//                               group and the query tiles that see the keys: grad_k and grad_v in registers.
//   attention_bwd_dq_kernel     one block per (tile of queries, head, batch) over the key tiles: grad_q.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common.cuh"
#include "ssm/core/error.hpp"
#include "ssm/cuda/attention.hpp"

namespace ssm::kernels {

using ::ssm::AttentionGradParams;
using ::ssm::AttentionParams;

inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;
inline constexpr float kNegInf = -__builtin_huge_valf();

/// Threads, rows per block and keys per staged tile of the tiled kernels for head dimension kDim.
template <int kDim, int kDimsPerThread>
struct AttnTile {
  static_assert(kDim % kDimsPerThread == 0 && kDim / kDimsPerThread <= 32, "AttnTile: bad split of the head dim");
  static constexpr int kThreads = 128;
  static constexpr int kDpt = kDimsPerThread;
  static constexpr int kParts = kDim / kDimsPerThread;  // threads per row
  static constexpr int kRows = kThreads / kParts;       // rows (queries or keys) per block
  static constexpr int kOther = 16;                     // rows of the other side staged per tile
};
template <int kDim>
using AttnFwdTile = AttnTile<kDim, 16>;
template <int kDim>
using AttnBwdTile = AttnTile<kDim, 16>;

/// The sum over the kParts threads of one row (neighbouring lanes) of their partial sums.
template <int kParts>
__device__ __forceinline__ float row_sum(float v) {
  SSM_UNROLL
  for (int off = 1; off < kParts; off <<= 1) v += __shfl_xor_sync(0xffffffffu, v, off, kParts);
  return v;
}

/// Stages rows [row0, row0 + kCount) of a (l, ·, p) tensor's head into tile[kCount * kDim], zero past l and past p.
template <int kThreads, int kCount, int kDim, class Tile>
__device__ __forceinline__ void stage_rows(Tile& tile, const float* base, std::int64_t row_stride, std::int64_t row0,
                                           std::int64_t len, int head_dim, float mul) {
  for (int e = static_cast<int>(threadIdx.x); e < kCount * kDim; e += kThreads) {
    const int j = e / kDim, dd = e % kDim;
    const std::int64_t row = row0 + j;
    tile[e] = (row < len && dd < head_dim) ? base[row * row_stride + dd] * mul : 0.0f;
  }
}

/// Loads this thread's dims of one row (dims part + i kParts) scaled by mul; zero past p or for a missing row.
template <int kDpt, int kParts>
__device__ __forceinline__ void load_row(float (&r)[kDpt], const float* row, bool valid, int part, int head_dim,
                                         float mul) {
  SSM_UNROLL
  for (int i = 0; i < kDpt; ++i) {
    const int dd = i * kParts + part;
    r[i] = (valid && dd < head_dim) ? row[dd] * mul : 0.0f;
  }
}

/// The number of keys the queries [q0, q1) need: all l_k without masking, up to the last query's position with.
__device__ __forceinline__ std::int64_t keys_needed(const AttentionParams& p, std::int64_t q1) {
  return p.causal ? std::min<std::int64_t>(p.seqlen_k, p.seqlen_k - p.seqlen_q + q1) : p.seqlen_k;
}

/// A thread's place in the kernels over query tiles (grid (tiles of kRows queries, heads, batch)): its query row and
/// lane within the row, the query's position among the keys (causal), and the head's K / V.
template <class Cfg>
struct QueryRow {
  int tid, part, head_dim;
  std::int64_t head, batch, q0, qi, pos;
  bool valid;
  const float* k;
  const float* v;
  __device__ __forceinline__ explicit QueryRow(const AttentionParams& p)
      : tid(static_cast<int>(threadIdx.x)), part(tid % Cfg::kParts), head_dim(static_cast<int>(p.head_dim)),
        head(blockIdx.y), batch(blockIdx.z), q0(static_cast<std::int64_t>(blockIdx.x) * Cfg::kRows),
        qi(q0 + tid / Cfg::kParts), pos(p.seqlen_k - p.seqlen_q + qi), valid(qi < p.seqlen_q) {
    const std::int64_t kv_head = head / (p.heads / p.kv_heads);
    k = p.k + batch * p.k_batch_stride + kv_head * p.k_head_stride;
    v = p.v + batch * p.v_batch_stride + kv_head * p.v_head_stride;
  }
};

// ---- forward, tiled ---------------------------------------------------------------------------------------------

template <int kDim>
__global__ void __launch_bounds__(AttnFwdTile<kDim>::kThreads, 4) attention_fwd_kernel(AttentionParams p) {
  using Cfg = AttnFwdTile<kDim>;
  constexpr int kDpt = Cfg::kDpt, kParts = Cfg::kParts, kRows = Cfg::kRows, kKeys = Cfg::kOther;
  static_assert(2 * kKeys * kDim * sizeof(float) <= 32 * 1024, "attention_fwd_kernel: smem over 32 KiB");
  SSM_SHARED(float, k_tile, kKeys * kDim);  // (kKeys, kDim)
  SSM_SHARED(float, v_tile, kKeys * kDim);  // (kKeys, kDim)

  const QueryRow<Cfg> r(p);
  const int part = r.part, head_dim = r.head_dim;
  const std::int64_t head = r.head, batch = r.batch, q0 = r.q0, qi = r.qi, pos = r.pos;
  const bool valid = r.valid;
  const float *k = r.k, *v = r.v;

  float q[kDpt], o[kDpt];
  load_row<kDpt, kParts>(q, p.q + batch * p.q_batch_stride + qi * p.q_seq_stride + head * p.q_head_stride, valid, part,
                         head_dim, p.scale * kLog2e);
  SSM_UNROLL
  for (int i = 0; i < kDpt; ++i) o[i] = 0.0f;
  float m = kNegInf, l = 0.0f;

  const std::int64_t n_keys = keys_needed(p, std::min<std::int64_t>(q0 + kRows, p.seqlen_q));
  for (std::int64_t k0 = 0; k0 < n_keys; k0 += kKeys) {
    __syncthreads();  // the previous tile is consumed
    stage_rows<Cfg::kThreads, kKeys, kDim>(k_tile, k, p.k_seq_stride, k0, n_keys, head_dim, 1.0f);
    stage_rows<Cfg::kThreads, kKeys, kDim>(v_tile, v, p.v_seq_stride, k0, n_keys, head_dim, 1.0f);
    __syncthreads();
    float s[kKeys];
    float m_tile = kNegInf;
    SSM_UNROLL
    for (int j = 0; j < kKeys; ++j) {
      float acc = 0.0f;
      SSM_UNROLL
      for (int i = 0; i < kDpt; ++i) acc += q[i] * k_tile[j * kDim + i * kParts + part];
      acc = row_sum<kParts>(acc);
      const std::int64_t key = k0 + j;
      s[j] = (key < n_keys && (!p.causal || key <= pos)) ? acc : kNegInf;
      m_tile = fmaxf(m_tile, s[j]);
    }
    const float m_new = fmaxf(m, m_tile);
    if (m_new == kNegInf) continue;  // nothing visible yet (a padding row): m, l, o stay empty; uniform per row
    const float alpha = exp2f(m - m_new);  // 0 when m = -inf
    l *= alpha;
    SSM_UNROLL
    for (int i = 0; i < kDpt; ++i) o[i] *= alpha;
    SSM_UNROLL
    for (int j = 0; j < kKeys; ++j) {
      const float pj = exp2f(s[j] - m_new);  // 0 for masked keys
      l += pj;
      SSM_UNROLL
      for (int i = 0; i < kDpt; ++i) o[i] += pj * v_tile[j * kDim + i * kParts + part];
    }
    m = m_new;
  }
  if (!valid) return;  // after the last barrier and shuffle
  const float inv = 1.0f / l;
  float* out = p.out + batch * p.out_batch_stride + qi * p.out_seq_stride + head * p.out_head_stride;
  SSM_UNROLL
  for (int i = 0; i < kDpt; ++i) {
    const int dd = i * kParts + part;
    if (dd < head_dim) out[dd] = o[i] * inv;
  }
  if (part == 0) p.lse[(batch * p.heads + head) * p.seqlen_q + qi] = (m + log2f(l)) * kLn2;
}

// ---- forward, split keys (decoding) -------------------------------------------------------------------------------

inline constexpr int kDecodeThreads = 128;
inline constexpr int kDecodeWarps = kDecodeThreads / 32;

template <int kDim>
__global__ void __launch_bounds__(kDecodeThreads) attention_decode_kernel(AttentionParams p) {
  constexpr int kDpl = kDim / 32;  // dims per lane: lane + 32 i
  SSM_SHARED(float, warp_ml, 2 * kDecodeWarps);     // (m, l) of each warp
  SSM_SHARED(float, warp_o, kDecodeWarps * kDim);   // o of each warp
  static_assert((2 * kDecodeWarps + kDecodeWarps * kDim) * sizeof(float) <= 4 * 1024, "attention_decode: smem");

  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid % 32, warp = tid / 32;
  const std::int64_t split = blockIdx.x, head = blockIdx.y;
  const std::int64_t batch = blockIdx.z / p.seqlen_q, qi = blockIdx.z % p.seqlen_q;
  const std::int64_t kv_head = head / (p.heads / p.kv_heads);
  const int head_dim = static_cast<int>(p.head_dim);
  const std::int64_t visible = p.causal ? p.seqlen_k - p.seqlen_q + qi + 1 : p.seqlen_k;
  const std::int64_t key_begin = split * p.keys_per_split;
  const std::int64_t key_end = std::min<std::int64_t>(visible, key_begin + p.keys_per_split);
  const float* k = p.k + batch * p.k_batch_stride + kv_head * p.k_head_stride;
  const float* v = p.v + batch * p.v_batch_stride + kv_head * p.v_head_stride;

  float q[kDpl], o[kDpl];
  const float* qrow = p.q + batch * p.q_batch_stride + qi * p.q_seq_stride + head * p.q_head_stride;
  SSM_UNROLL
  for (int i = 0; i < kDpl; ++i) {
    const int dd = lane + 32 * i;
    q[i] = dd < head_dim ? qrow[dd] * (p.scale * kLog2e) : 0.0f;
    o[i] = 0.0f;
  }
  float m = kNegInf, l = 0.0f;
  for (std::int64_t key = key_begin + warp; key < key_end; key += kDecodeWarps) {  // uniform per warp
    const float* krow = k + key * p.k_seq_stride;
    const float* vrow = v + key * p.v_seq_stride;
    float acc = 0.0f;
    SSM_UNROLL
    for (int i = 0; i < kDpl; ++i) {
      const int dd = lane + 32 * i;
      if (dd < head_dim) acc += q[i] * krow[dd];
    }
    const float s = row_sum<32>(acc);
    const float m_new = fmaxf(m, s);
    const float alpha = exp2f(m - m_new), pk = exp2f(s - m_new);
    l = l * alpha + pk;
    SSM_UNROLL
    for (int i = 0; i < kDpl; ++i) {
      const int dd = lane + 32 * i;
      o[i] = o[i] * alpha + (dd < head_dim ? pk * vrow[dd] : 0.0f);
    }
    m = m_new;
  }
  // Merge the warps: each writes its (m, l, o); then the block rescales them to the largest m.
  if (lane == 0) {
    warp_ml[2 * warp] = m;
    warp_ml[2 * warp + 1] = l;
  }
  SSM_UNROLL
  for (int i = 0; i < kDpl; ++i) warp_o[warp * kDim + lane + 32 * i] = o[i];
  __syncthreads();
  float m_blk = kNegInf;
  SSM_UNROLL
  for (int w = 0; w < kDecodeWarps; ++w) m_blk = fmaxf(m_blk, warp_ml[2 * w]);
  float factor[kDecodeWarps];
  float l_blk = 0.0f;
  SSM_UNROLL
  for (int w = 0; w < kDecodeWarps; ++w) {
    const float mw = warp_ml[2 * w];
    factor[w] = mw == kNegInf ? 0.0f : exp2f(mw - m_blk);  // a warp without keys counts for nothing
    l_blk += factor[w] * warp_ml[2 * w + 1];
  }
  const std::int64_t row = (batch * p.heads + head) * p.seqlen_q + qi;
  float* part = p.workspace + (row * p.splits + split) * (p.head_dim + 2);  // (m, l, o[p])
  for (int dd = tid; dd < head_dim; dd += kDecodeThreads) {
    float acc = 0.0f;
    SSM_UNROLL
    for (int w = 0; w < kDecodeWarps; ++w) acc += factor[w] * warp_o[w * kDim + dd];
    part[2 + dd] = acc;
  }
  if (tid == 0) {
    part[0] = m_blk;
    part[1] = l_blk;
  }
}

/// Merges the splits of one (query, head, batch) row: out = sum_s 2^(m_s - M) o_s / L, lse = (M + log2 L) ln 2.
__global__ void __launch_bounds__(kDecodeThreads) attention_combine_kernel(AttentionParams p) {
  const int tid = static_cast<int>(threadIdx.x);
  const std::int64_t qi = blockIdx.x, head = blockIdx.y, batch = blockIdx.z;
  const std::int64_t row = (batch * p.heads + head) * p.seqlen_q + qi;
  const std::int64_t stride = p.head_dim + 2;
  const float* parts = p.workspace + row * p.splits * stride;
  float M = kNegInf;
  for (std::int64_t s = 0; s < p.splits; ++s) M = fmaxf(M, parts[s * stride]);
  float L = 0.0f;
  for (std::int64_t s = 0; s < p.splits; ++s) {
    const float ms = parts[s * stride];
    if (ms != kNegInf) L += exp2f(ms - M) * parts[s * stride + 1];
  }
  const float inv = 1.0f / L;
  float* out = p.out + batch * p.out_batch_stride + qi * p.out_seq_stride + head * p.out_head_stride;
  for (int dd = tid; dd < static_cast<int>(p.head_dim); dd += kDecodeThreads) {
    float acc = 0.0f;
    for (std::int64_t s = 0; s < p.splits; ++s) {
      const float ms = parts[s * stride];
      if (ms != kNegInf) acc += exp2f(ms - M) * parts[s * stride + 2 + dd];
    }
    out[dd] = acc * inv;
  }
  if (tid == 0) p.lse[row] = (M + log2f(L)) * kLn2;
}

// ---- backward -----------------------------------------------------------------------------------------------------

inline constexpr int kDeltaThreads = 128;

/// delta[b, h, i] = sum_d grad_out[b, i, h, d] out[b, i, h, d]: a warp per query row.
__global__ void __launch_bounds__(kDeltaThreads) attention_bwd_delta_kernel(AttentionParams p, AttentionGradParams g) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const std::int64_t qi = static_cast<std::int64_t>(blockIdx.x) * (kDeltaThreads / 32) + threadIdx.x / 32;
  const std::int64_t head = blockIdx.y, batch = blockIdx.z;
  const bool valid = qi < p.seqlen_q;
  float acc = 0.0f;
  if (valid) {
    const float* o = g.out + batch * g.out_batch_stride + qi * g.out_seq_stride + head * g.out_head_stride;
    const float* go = g.grad_out + batch * g.grad_out_batch_stride + qi * g.grad_out_seq_stride +
                      head * g.grad_out_head_stride;
    for (std::int64_t dd = lane; dd < p.head_dim; dd += 32) acc += o[dd] * go[dd];
  }
  acc = row_sum<32>(acc);  // the whole warp takes part (a padding row adds zeros)
  if (valid && lane == 0) g.delta[(batch * p.heads + head) * p.seqlen_q + qi] = acc;
}

/// grad_k and grad_v of a tile of kRows keys of one kv head: for every query head of the group and every query
/// that sees a key of the tile, p_ij = 2^(s_ij - lse_i log2 e), grad_v_j += p_ij grad_out_i,
/// ds_ij = p_ij (grad_out_i · v_j - delta_i), grad_k_j += scale ds_ij q_i.
template <int kDim>
__global__ void __launch_bounds__(AttnBwdTile<kDim>::kThreads, 4) attention_bwd_dkdv_kernel(AttentionParams p,
                                                                                             AttentionGradParams g) {
  using Cfg = AttnBwdTile<kDim>;
  constexpr int kDpt = Cfg::kDpt, kParts = Cfg::kParts, kRows = Cfg::kRows, kQ = Cfg::kOther;
  static_assert((2 * kQ * kDim + 2 * kQ) * sizeof(float) <= 32 * 1024, "attention_bwd_dkdv_kernel: smem over 32 KiB");
  SSM_SHARED(float, q_tile, kQ * kDim);   // (kQ, kDim), scaled by scale log2 e
  SSM_SHARED(float, go_tile, kQ * kDim);  // (kQ, kDim)
  SSM_SHARED(float, lse_tile, kQ);        // lse log2 e
  SSM_SHARED(float, delta_tile, kQ);

  const int tid = static_cast<int>(threadIdx.x);
  const int part = tid % kParts;
  const std::int64_t kv_head = blockIdx.y, batch = blockIdx.z;
  const std::int64_t group = p.heads / p.kv_heads;
  const std::int64_t key0 = static_cast<std::int64_t>(blockIdx.x) * kRows;
  const std::int64_t key = key0 + tid / kParts;
  const bool valid = key < p.seqlen_k;
  const int head_dim = static_cast<int>(p.head_dim);
  const std::int64_t shift = p.seqlen_k - p.seqlen_q;  // query i sits at key position shift + i
  const float qscale = p.scale * kLog2e;

  float kr[kDpt], vr[kDpt], dk[kDpt], dv[kDpt];
  load_row<kDpt, kParts>(kr, p.k + batch * p.k_batch_stride + key * p.k_seq_stride + kv_head * p.k_head_stride, valid,
                         part, head_dim, 1.0f);
  load_row<kDpt, kParts>(vr, p.v + batch * p.v_batch_stride + key * p.v_seq_stride + kv_head * p.v_head_stride, valid,
                         part, head_dim, 1.0f);
  SSM_UNROLL
  for (int i = 0; i < kDpt; ++i) dk[i] = dv[i] = 0.0f;

  // The first query that sees key0 (causal), and every query otherwise.
  const std::int64_t q_begin = p.causal ? std::max<std::int64_t>(0, key0 - shift) : 0;
  for (std::int64_t hq = kv_head * group; hq < (kv_head + 1) * group; ++hq) {
    const float* qh = p.q + batch * p.q_batch_stride + hq * p.q_head_stride;
    const float* goh = g.grad_out + batch * g.grad_out_batch_stride + hq * g.grad_out_head_stride;
    const float* lse = p.lse + (batch * p.heads + hq) * p.seqlen_q;
    const float* delta = g.delta + (batch * p.heads + hq) * p.seqlen_q;
    for (std::int64_t q0 = q_begin; q0 < p.seqlen_q; q0 += kQ) {
      __syncthreads();  // the previous tile is consumed
      stage_rows<Cfg::kThreads, kQ, kDim>(q_tile, qh, p.q_seq_stride, q0, p.seqlen_q, head_dim, qscale);
      stage_rows<Cfg::kThreads, kQ, kDim>(go_tile, goh, g.grad_out_seq_stride, q0, p.seqlen_q, head_dim, 1.0f);
      if (tid < kQ) {
        const bool in = q0 + tid < p.seqlen_q;
        lse_tile[tid] = in ? lse[q0 + tid] * kLog2e : 0.0f;
        delta_tile[tid] = in ? delta[q0 + tid] : 0.0f;
      }
      __syncthreads();
      for (int i = 0; i < kQ; ++i) {
        float s = 0.0f, dp = 0.0f;
        SSM_UNROLL
        for (int e = 0; e < kDpt; ++e) {
          s += q_tile[i * kDim + e * kParts + part] * kr[e];
          dp += go_tile[i * kDim + e * kParts + part] * vr[e];
        }
        s = row_sum<kParts>(s);
        dp = row_sum<kParts>(dp);
        const std::int64_t qi = q0 + i;
        const bool seen = valid && qi < p.seqlen_q && (!p.causal || key <= shift + qi);
        const float pij = seen ? exp2f(s - lse_tile[i]) : 0.0f;
        const float ds = pij * (dp - delta_tile[i]);
        SSM_UNROLL
        for (int e = 0; e < kDpt; ++e) {
          dv[e] += pij * go_tile[i * kDim + e * kParts + part];
          dk[e] += ds * q_tile[i * kDim + e * kParts + part];  // q_tile holds scale log2 e q: fixed below
        }
      }
    }
  }
  if (!valid) return;  // after the last barrier and shuffle
  float* gk = g.grad_k + batch * g.grad_k_batch_stride + key * g.grad_k_seq_stride + kv_head * g.grad_k_head_stride;
  float* gv = g.grad_v + batch * g.grad_v_batch_stride + key * g.grad_v_seq_stride + kv_head * g.grad_v_head_stride;
  SSM_UNROLL
  for (int e = 0; e < kDpt; ++e) {
    const int dd = e * kParts + part;
    if (dd < head_dim) {
      gk[dd] = dk[e] * kLn2;  // (scale log2 e q) ln 2 = scale q
      gv[dd] = dv[e];
    }
  }
}

/// grad_q of a tile of kRows queries of one head: grad_q_i = scale sum_j ds_ij k_j over the visible keys.
template <int kDim>
__global__ void __launch_bounds__(AttnBwdTile<kDim>::kThreads, 4) attention_bwd_dq_kernel(AttentionParams p,
                                                                                           AttentionGradParams g) {
  using Cfg = AttnBwdTile<kDim>;
  constexpr int kDpt = Cfg::kDpt, kParts = Cfg::kParts, kRows = Cfg::kRows, kKeys = Cfg::kOther;
  static_assert(2 * kKeys * kDim * sizeof(float) <= 32 * 1024, "attention_bwd_dq_kernel: smem over 32 KiB");
  SSM_SHARED(float, k_tile, kKeys * kDim);  // (kKeys, kDim)
  SSM_SHARED(float, v_tile, kKeys * kDim);  // (kKeys, kDim)

  const QueryRow<Cfg> r(p);
  const int part = r.part, head_dim = r.head_dim;
  const std::int64_t head = r.head, batch = r.batch, q0 = r.q0, qi = r.qi, pos = r.pos;
  const bool valid = r.valid;
  const float *k = r.k, *v = r.v;
  const std::int64_t row = (batch * p.heads + head) * p.seqlen_q + qi;

  float q[kDpt], go[kDpt], dq[kDpt];
  load_row<kDpt, kParts>(q, p.q + batch * p.q_batch_stride + qi * p.q_seq_stride + head * p.q_head_stride, valid, part,
                         head_dim, p.scale * kLog2e);
  load_row<kDpt, kParts>(go, g.grad_out + batch * g.grad_out_batch_stride + qi * g.grad_out_seq_stride +
                                 head * g.grad_out_head_stride,
                         valid, part, head_dim, 1.0f);
  SSM_UNROLL
  for (int i = 0; i < kDpt; ++i) dq[i] = 0.0f;
  const float lse2 = valid ? p.lse[row] * kLog2e : 0.0f;
  const float delta = valid ? g.delta[row] : 0.0f;

  const std::int64_t n_keys = keys_needed(p, std::min<std::int64_t>(q0 + kRows, p.seqlen_q));
  for (std::int64_t k0 = 0; k0 < n_keys; k0 += kKeys) {
    __syncthreads();
    stage_rows<Cfg::kThreads, kKeys, kDim>(k_tile, k, p.k_seq_stride, k0, n_keys, head_dim, 1.0f);
    stage_rows<Cfg::kThreads, kKeys, kDim>(v_tile, v, p.v_seq_stride, k0, n_keys, head_dim, 1.0f);
    __syncthreads();
    for (int j = 0; j < kKeys; ++j) {
      float s = 0.0f, dp = 0.0f;
      SSM_UNROLL
      for (int e = 0; e < kDpt; ++e) {
        s += q[e] * k_tile[j * kDim + e * kParts + part];
        dp += go[e] * v_tile[j * kDim + e * kParts + part];
      }
      s = row_sum<kParts>(s);
      dp = row_sum<kParts>(dp);
      const std::int64_t key = k0 + j;
      const bool seen = valid && key < n_keys && (!p.causal || key <= pos);
      const float ds = seen ? exp2f(s - lse2) * (dp - delta) : 0.0f;
      SSM_UNROLL
      for (int e = 0; e < kDpt; ++e) dq[e] += ds * k_tile[j * kDim + e * kParts + part];
    }
  }
  if (!valid) return;
  float* gq = g.grad_q + batch * g.grad_q_batch_stride + qi * g.grad_q_seq_stride + head * g.grad_q_head_stride;
  SSM_UNROLL
  for (int e = 0; e < kDpt; ++e) {
    const int dd = e * kParts + part;
    if (dd < head_dim) gq[dd] = dq[e] * p.scale;
  }
}

}  // namespace ssm::kernels

// ---- launch sequences, over an executor: void launch(kernel, LaunchDims grid, LaunchDims block, args...) -----------
// (cuda/src/attention.cu launches on the device; tests run the same sequences under the host emulation.)

namespace ssm::kernels {

/// Calls f(std::integral_constant<int, kDim>{}) for the smallest template head dimension >= p.head_dim.
template <class F>
void visit_attention_dim(std::int64_t head_dim, F&& f) {
  if (head_dim <= 32) f(std::integral_constant<int, 32>{});
  else if (head_dim <= 64) f(std::integral_constant<int, 64>{});
  else f(std::integral_constant<int, 128>{});
}

/// The argument checks every attention launch shares (what the kernels cannot take), naming `op`.
inline void check_attention_params(const AttentionParams& p, const char* op) {
  SSM_CHECK(p.batch >= 0 && p.seqlen_q >= 0 && p.seqlen_k >= 0, op, ": sizes must be >= 0, got b = ", p.batch,
            ", l_q = ", p.seqlen_q, ", l_k = ", p.seqlen_k);
  SSM_CHECK(p.head_dim >= 1 && p.head_dim <= ::ssm::kAttentionMaxHeadDim, op, ": head_dim must be in [1, ",
            ::ssm::kAttentionMaxHeadDim, "] on CUDA, got ", p.head_dim);
  SSM_CHECK(p.heads >= 1 && p.kv_heads >= 1 && p.heads % p.kv_heads == 0, op,
            ": kv_heads must divide heads (both >= 1), got heads = ", p.heads, ", kv_heads = ", p.kv_heads);
  SSM_CHECK(p.seqlen_q == 0 || p.seqlen_k >= 1, op, ": ", p.seqlen_q, " queries need at least one key");
  SSM_CHECK(!p.causal || p.seqlen_k >= p.seqlen_q, op, ": causal attention needs l_k >= l_q, got l_q = ", p.seqlen_q,
            ", l_k = ", p.seqlen_k);
  SSM_CHECK(std::isfinite(p.scale) && p.scale > 0, op, ": scale must be finite and > 0, got ", p.scale);
  SSM_CHECK(p.heads <= 65535 && p.batch <= 65535 && p.batch * std::max<std::int64_t>(1, std::min<std::int64_t>(
                                                                 p.seqlen_q, ::ssm::cuda::kAttentionDecodeMaxQueries)) <=
                                                        65535,
            op, ": heads and b (times the queries, for decoding) must be at most 65535");
  SSM_CHECK(p.seqlen_q < (std::int64_t{1} << 35) && p.seqlen_k < (std::int64_t{1} << 35), op,
            ": l_q and l_k must be below 2^35 (the grid's x extent), got ", p.seqlen_q, " and ", p.seqlen_k);
  const bool queries = p.batch > 0 && p.seqlen_q > 0, keys = p.batch > 0 && p.seqlen_k > 0;
  SSM_CHECK((!queries || (p.q && p.out && p.lse)) && (!keys || (p.k && p.v)), op,
            ": q, k, v, out and lse must be set (when not empty)");
}

inline unsigned blocks_for(std::int64_t rows, int per_block) {
  return static_cast<unsigned>(std::max<std::int64_t>(1, (rows + per_block - 1) / per_block));
}

/// The forward: the split-key kernel and the combine for at most kAttentionDecodeMaxQueries queries, the tiled kernel
/// otherwise. p.workspace must hold attention_workspace_floats(p) floats.
template <class Exec>
void attention_forward_launches(Exec& exec, AttentionParams p) {
  constexpr const char* op = "ssm::cuda::attention_forward";
  check_attention_params(p, op);
  if (p.batch == 0 || p.seqlen_q == 0) return;
  const ::ssm::cuda::AttentionSplit split = ::ssm::cuda::attention_split(p);
  p.splits = split.splits;
  p.keys_per_split = split.keys_per_split;
  SSM_CHECK(p.splits == 0 || p.workspace, op, ": the split-key path needs a workspace of ",
            ::ssm::cuda::attention_workspace_floats(p), " floats");
  const auto heads = static_cast<unsigned>(p.heads), batch = static_cast<unsigned>(p.batch);
  visit_attention_dim(p.head_dim, [&](auto dim) {
    constexpr int kDim = decltype(dim)::value;
    if (p.splits > 0) {
      exec.launch(attention_decode_kernel<kDim>,
                  LaunchDims{static_cast<unsigned>(p.splits), heads, static_cast<unsigned>(p.batch * p.seqlen_q)},
                  LaunchDims{kDecodeThreads}, p);
      exec.launch(attention_combine_kernel, LaunchDims{static_cast<unsigned>(p.seqlen_q), heads, batch},
                  LaunchDims{kDecodeThreads}, p);
    } else {
      using Cfg = AttnFwdTile<kDim>;
      exec.launch(attention_fwd_kernel<kDim>, LaunchDims{blocks_for(p.seqlen_q, Cfg::kRows), heads, batch},
                  LaunchDims{Cfg::kThreads}, p);
    }
  });
}

/// The backward: delta, then grad_k / grad_v, then grad_q. p as given to the forward (out and lse filled).
template <class Exec>
void attention_backward_launches(Exec& exec, const AttentionParams& p, const AttentionGradParams& g) {
  constexpr const char* op = "ssm::cuda::attention_backward";
  check_attention_params(p, op);
  const bool queries = p.batch > 0 && p.seqlen_q > 0, keys = p.batch > 0 && p.seqlen_k > 0;
  SSM_CHECK((!queries || (g.out && g.grad_out && g.grad_q && g.delta)) && (!keys || (g.grad_k && g.grad_v)), op,
            ": out, grad_out, grad_q, grad_k, grad_v and delta must be set (when not empty)");
  if (p.batch == 0 || (p.seqlen_q == 0 && p.seqlen_k == 0)) return;
  const auto heads = static_cast<unsigned>(p.heads), batch = static_cast<unsigned>(p.batch);
  if (p.seqlen_q > 0)
    exec.launch(attention_bwd_delta_kernel, LaunchDims{blocks_for(p.seqlen_q, kDeltaThreads / 32), heads, batch},
                LaunchDims{kDeltaThreads}, p, g);
  visit_attention_dim(p.head_dim, [&](auto dim) {
    constexpr int kDim = decltype(dim)::value;
    using Cfg = AttnBwdTile<kDim>;
    if (p.seqlen_k > 0)  // every key row is written (zero for keys no query sees)
      exec.launch(attention_bwd_dkdv_kernel<kDim>,
                  LaunchDims{blocks_for(p.seqlen_k, Cfg::kRows), static_cast<unsigned>(p.kv_heads), batch},
                  LaunchDims{Cfg::kThreads}, p, g);
    if (p.seqlen_q > 0)
      exec.launch(attention_bwd_dq_kernel<kDim>, LaunchDims{blocks_for(p.seqlen_q, Cfg::kRows), heads, batch},
                  LaunchDims{Cfg::kThreads}, p, g);
  });
}

}  // namespace ssm::kernels
