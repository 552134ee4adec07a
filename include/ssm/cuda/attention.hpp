// Host API of the CUDA attention kernels (docs/math.md §7; Dao et al. 2022, FlashAttention; Dao 2023,
// FlashAttention-2): causal scaled-dot-product attention, multi-head and grouped-query, f32, head dimension up
// to 128. The forward is tiled with an online softmax (no score matrix in memory); a few queries over a long
// context (decoding) take a split-key path: blocks over slices of the keys, then one combine; the backward
// recomputes the probabilities from the saved log-sum-exp. Kernels in cuda/kernels/attention.cuh.
//
// Layouts as the op's: q, out, grad_out, grad_q (b, l_q, h, p); k, v, grad_k, grad_v (b, l_k, h_kv, p), unit
// stride along p, any strides elsewhere; lse and the backward's delta (b, h, l_q) contiguous. Query head i reads
// kv head i / (h / h_kv); causal masking aligns the queries with the end of the keys (query i sits at position
// l_k - l_q + i).
#pragma once

#include <algorithm>
#include <cstdint>

#include "ssm/core/params/attention.hpp"

namespace ssm::cuda {

/// At most this many queries per call take the split-key (decoding) path; more take the tiled forward.
inline constexpr std::int64_t kAttentionDecodeMaxQueries = 4;

/// How the forward splits the keys for p: (splits, keys per split); splits = 0 when it takes the tiled path.
struct AttentionSplit {
  std::int64_t splits = 0, keys_per_split = 0;
};
inline AttentionSplit attention_split(const AttentionParams& p) {
  if (p.seqlen_q < 1 || p.seqlen_q > kAttentionDecodeMaxQueries || p.seqlen_k < 1) return {};
  // About 256 blocks in all (two waves of an H100's 132 SMs), slices of at least 64 keys.
  const std::int64_t rows = p.batch * p.heads * p.seqlen_q;
  std::int64_t splits = rows >= 256 ? 1 : (256 + rows - 1) / rows;
  splits = std::max<std::int64_t>(1, std::min<std::int64_t>(splits, (p.seqlen_k + 63) / 64));
  const std::int64_t per = (p.seqlen_k + splits - 1) / splits;
  return {(p.seqlen_k + per - 1) / per, per};
}
/// Floats of workspace the forward needs for p (the split-key partials: m, l and p values per row and split).
inline std::int64_t attention_workspace_floats(const AttentionParams& p) {
  const AttentionSplit s = attention_split(p);
  return s.splits * p.batch * p.heads * p.seqlen_q * (p.head_dim + 2);
}

/// out = softmax(q kᵀ · scale + causal mask) v and lse, on the current device. Throws ssm::Error for arguments the
/// kernels do not take (p > 128, missing pointers or workspace, grid limits) and for CUDA failures (no GPU).
void attention_forward(const AttentionParams& p, void* stream = nullptr);
/// Gradients of attention_forward (p as given to it, with out and lse filled): a pass for delta, then one kernel
/// for grad_k and grad_v (a block per key tile and kv head, over every query head of its group: no atomics) and
/// one for grad_q (a block per query tile and head).
void attention_backward(const AttentionParams& p, const AttentionGradParams& g, void* stream = nullptr);

}  // namespace ssm::cuda
