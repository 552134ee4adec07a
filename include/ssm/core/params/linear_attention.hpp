// The argument block of linear attention (Katharopoulos et al. 2020), of RetNet's retention (Sun et al. 2023) and of
// gated linear attention, GLA (Yang et al. 2024), docs/linear_attention.md. Per sequence and head, with a state
// S (dk, dv) and, when normalized, z (dk):
//   q̃_t = scale φ(q_t),   k̃_t = φ(k_t),   φ = identity or elu + 1 (feature_map);
//   α_t = γ exp(g_t) (dk)   (γ = γ_h ∈ (0, 1] per head, 1 without a decay; g_t <= 0 GLA's log gate, 0 without one);
//   S_t = diag(α_t) S_{t−1} + k̃_t v_tᵀ,   z_t = α_t ⊙ z_{t−1} + k̃_t;
//   y_t = S_tᵀ q̃_t,  or with the normalizer  y_t = S_tᵀ q̃_t / (z_tᵀ q̃_t + eps).
// Plain pointers, sizes and element strides, trivially copyable; pointers are memory of the device that runs it.
#pragma once

#include <cstdint>

#include "ssm/core/dtype.hpp"
#include "ssm/core/scalar.hpp"

namespace ssm {

/// The feature map φ applied to q and k before the products.
enum class FeatureMap {
  identity,      // φ(x) = x
  elu_plus_one,  // φ(x) = elu(x) + 1 = x + 1 for x > 0, e^x otherwise (Katharopoulos et al. 2020): φ > 0
};

/// φ(x). One definition for the reference (T = double), the CPU paths, the step and the CUDA kernels.
template <class T>
SSM_HOST_DEVICE inline T feature_map(FeatureMap f, T x) {
  return f == FeatureMap::identity ? x : (x > T(0) ? x + T(1) : scalar::exp(x));
}

/// dφ / dx.
template <class T>
SSM_HOST_DEVICE inline T feature_map_grad(FeatureMap f, T x) {
  return f == FeatureMap::identity ? T(1) : (x > T(0) ? T(1) : scalar::exp(x));
}

struct LinearAttentionParams {
  std::int64_t batch = 0, seqlen = 0;   // b, l (with cu_seqlens: b == 1 and the sequences packed along l)
  std::int64_t nheads = 0, ngroups = 0;  // h, g (h % g == 0: head i reads q, k of group i / (h / g))
  std::int64_t dk = 0, dv = 0;          // the key and value widths: the state is (dk, dv)
  std::int64_t chunk_size = 0;          // > 0: the chunked path's block of steps (the reference ignores it)
  FeatureMap feature_map = FeatureMap::identity;
  bool normalize = false;  // divide by z_tᵀ q̃_t + eps
  double eps = 0;          // >= 0, with normalize
  double scale = 1;        // q̃ = scale φ(q)
  const double* log_gamma = nullptr;  // (h) host: log γ_h <= 0; or null (γ = 1: plain linear attention)
  const void* log_gate = nullptr;     // (b, l, h, dk) input dtype: GLA's g_t, each finite and <= 0; or null (g = 0)
  std::int64_t gate_batch_stride = 0, gate_seq_stride = 0, gate_head_stride = 0;

  // Inputs, element strides; the last dimension has unit stride.
  const void* q = nullptr;  // (b, l, g, dk) input dtype
  std::int64_t q_batch_stride = 0, q_seq_stride = 0, q_group_stride = 0;
  const void* k = nullptr;  // (b, l, g, dk) input dtype
  std::int64_t k_batch_stride = 0, k_seq_stride = 0, k_group_stride = 0;
  const void* v = nullptr;  // (b, l, h, dv) input dtype
  std::int64_t v_batch_stride = 0, v_seq_stride = 0, v_head_stride = 0;
  const void* initial_state = nullptr;       // (rows, h, dk, dv) param dtype, contiguous; or null (zero)
  const void* initial_normalizer = nullptr;  // (rows, h, dk) param dtype, contiguous; or null (zero)
  const std::int64_t* cu_seqlens = nullptr;  // (n_seqs + 1) host, validated; or null
  std::int64_t n_seqs = 0;                   // with cu_seqlens; rows = n_seqs, else rows = b

  // Outputs.
  void* out = nullptr;  // (b, l, h, dv) input dtype
  std::int64_t out_batch_stride = 0, out_seq_stride = 0, out_head_stride = 0;
  void* final_state = nullptr;       // (rows, h, dk, dv) param dtype, contiguous; or null
  void* final_normalizer = nullptr;  // (rows, h, dk) param dtype, contiguous; or null

  DType input_dtype = DType::f32;  // q, k, v, out: f32 | f64 | f16 | bf16
  DType param_dtype = DType::f32;  // the states: f64 for f64 inputs, else f32

  std::int64_t rows() const { return cu_seqlens ? n_seqs : batch; }
  std::int64_t seq_row(std::int64_t s) const { return cu_seqlens ? 0 : s; }
  std::int64_t seq_begin(std::int64_t s) const { return cu_seqlens ? cu_seqlens[s] : 0; }
  std::int64_t seq_end(std::int64_t s) const { return cu_seqlens ? cu_seqlens[s + 1] : seqlen; }
};

/// The gradients of the forward. grad_out (b, l, h, dv) input dtype, contiguous; grad_final_state (rows, h, dk, dv)
/// and grad_final_normalizer (rows, h, dk) param dtype or null (zero). Outputs, contiguous, null ones skipped:
/// grad_q, grad_k (b, l, g, dk) summed over a group's heads, grad_v (b, l, h, dv), grad_initial_state,
/// grad_initial_normalizer, grad_log_gate (b, l, h, dk) with a log gate. γ is fixed: no gradient.
struct LinearAttentionGradParams {
  const void* grad_out = nullptr;
  const void* grad_final_state = nullptr;
  const void* grad_final_normalizer = nullptr;
  void *grad_q = nullptr, *grad_k = nullptr, *grad_v = nullptr;
  void *grad_initial_state = nullptr, *grad_initial_normalizer = nullptr;
  void* grad_log_gate = nullptr;
};

}  // namespace ssm
