// The argument blocks of causal scaled-dot-product attention (docs/math.md §7), read by the CUDA launchers and
// kernels (cuda/kernels/attention.cuh). Layouts: q, out (b, l_q, h, p); k, v (b, l_k, h_kv, p), unit stride
// along p; lse and delta (b, h, l_q) contiguous. Pointers are memory of the device that runs the op.
#pragma once

#include <cstdint>

namespace ssm {

/// The largest head dimension the kernels take.
inline constexpr std::int64_t kAttentionMaxHeadDim = 128;

/// Arguments of the forward. Pointers are device memory.
struct AttentionParams {
  std::int64_t batch = 0, seqlen_q = 0, seqlen_k = 0;  // b, l_q, l_k
  std::int64_t heads = 0, kv_heads = 0, head_dim = 0;   // h, h_kv, p (p <= 128)
  float scale = 0;                                      // softmax scale, finite and > 0
  bool causal = true;
  const float* q = nullptr;
  std::int64_t q_batch_stride = 0, q_seq_stride = 0, q_head_stride = 0;
  const float* k = nullptr;
  std::int64_t k_batch_stride = 0, k_seq_stride = 0, k_head_stride = 0;
  const float* v = nullptr;
  std::int64_t v_batch_stride = 0, v_seq_stride = 0, v_head_stride = 0;
  float* out = nullptr;
  std::int64_t out_batch_stride = 0, out_seq_stride = 0, out_head_stride = 0;
  float* lse = nullptr;        // (b, h, l_q) contiguous: the natural log-sum-exp of each score row
  float* workspace = nullptr;  // attention_workspace_floats(p) floats (the split-key partials), or null when 0
  // Set by attention_forward (the split-key path's slices); callers leave them 0.
  std::int64_t splits = 0, keys_per_split = 0;
};

/// Arguments of the backward besides the forward's. grad_q, grad_k, grad_v are written (not accumulated).
struct AttentionGradParams {
  const float* out = nullptr;  // the forward's output
  std::int64_t out_batch_stride = 0, out_seq_stride = 0, out_head_stride = 0;
  const float* grad_out = nullptr;
  std::int64_t grad_out_batch_stride = 0, grad_out_seq_stride = 0, grad_out_head_stride = 0;
  float* grad_q = nullptr;
  std::int64_t grad_q_batch_stride = 0, grad_q_seq_stride = 0, grad_q_head_stride = 0;
  float* grad_k = nullptr;
  std::int64_t grad_k_batch_stride = 0, grad_k_seq_stride = 0, grad_k_head_stride = 0;
  float* grad_v = nullptr;
  std::int64_t grad_v_batch_stride = 0, grad_v_seq_stride = 0, grad_v_head_stride = 0;
  float* delta = nullptr;  // (b, h, l_q) contiguous scratch: rowsum(grad_out * out)
};

}  // namespace ssm
