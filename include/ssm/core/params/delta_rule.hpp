// The argument block of the delta rule: DeltaNet (Schlag et al. 2021; Yang et al. 2024, "Parallelizing Linear
// Transformers with the Delta Rule over Sequence Length") and Gated DeltaNet (Yang, Kautz and Hatamizadeh 2024),
// docs/delta_rule.md. Per sequence and head, with a state S (dk, dv):
//   q̂_t = scale n(q_t),   k̂_t = n(k_t),   n(x) = x / sqrt(|x|² + norm_eps) (l2_normalize) or x;
//   α_t = exp(g_t) with g_t <= 0 (Gated DeltaNet), or α_t = 1 (DeltaNet);
//   S_t = α_t (I − β_t k̂_t k̂_tᵀ) S_{t−1} + β_t k̂_t v_tᵀ,   β_t ∈ (0, 2];
//   o_t = S_tᵀ q̂_t.
// Plain pointers, sizes and element strides, trivially copyable; pointers are memory of the device that runs it
// (cu_seqlens: host memory).
#pragma once

#include <cmath>
#include <cstdint>

#include "ssm/core/dtype.hpp"
#include "ssm/core/macros.hpp"
#include "ssm/core/scalar.hpp"

namespace ssm {

/// n(x) = x / sqrt(|x|² + eps): the inverse norm 1 / sqrt(|x|² + eps) of a row. One definition for the reference
/// (T = double), the CPU paths and the CUDA kernels.
template <class T>
SSM_HOST_DEVICE inline T l2_inverse_norm(const T* x, std::int64_t n, T eps) {
  T s = 0;
  for (std::int64_t i = 0; i < n; ++i) s += x[i] * x[i];
  return T(1) / scalar::sqrt(s + eps);
}

/// The backward of y = n(x) = x / sqrt(|x|² + eps), in place on g (n): ḡx = (ḡy − x ⟨x, ḡy⟩ / (|x|² + eps)) / sqrt(|x|² +
/// eps), from the raw row x, accumulated in double. (The form ḡy − y ⟨y, ḡy⟩ from the rounded y loses the result to
/// cancellation in f32 when |y| is 1 to within eps, as for dk = 1.)
template <class T>
inline void l2_normalize_grad(const T* x, std::int64_t n, double eps, T* g) {
  double n2 = 0, d = 0;
  for (std::int64_t i = 0; i < n; ++i) n2 += static_cast<double>(x[i]) * x[i], d += static_cast<double>(x[i]) * g[i];
  const double r = d / (n2 + eps), inv = 1.0 / std::sqrt(n2 + eps);
  for (std::int64_t i = 0; i < n; ++i) g[i] = static_cast<T>(inv * (static_cast<double>(g[i]) - static_cast<double>(x[i]) * r));
}

struct DeltaRuleParams {
  std::int64_t batch = 0, seqlen = 0;    // b, l (with cu_seqlens: b == 1 and the sequences packed along l)
  std::int64_t nheads = 0, ngroups = 0;  // h, g (h % g == 0: head i reads q, k of group i / (h / g))
  std::int64_t dk = 0, dv = 0;           // the key and value widths: the state is (dk, dv)
  std::int64_t chunk_size = 0;           // > 0: the chunked path's block of steps (the token loops ignore it)
  bool l2_normalize = true;              // q̂, k̂ L2-normalized (then scaled: q̂ = scale n(q))
  double norm_eps = 1e-6;                // > 0 under the square root of the norm
  double scale = 1;                      // q̂ = scale n(q)

  // Inputs, element strides; the last dimension has unit stride.
  const void* q = nullptr;  // (b, l, g, dk) input dtype
  std::int64_t q_batch_stride = 0, q_seq_stride = 0, q_group_stride = 0;
  const void* k = nullptr;  // (b, l, g, dk) input dtype
  std::int64_t k_batch_stride = 0, k_seq_stride = 0, k_group_stride = 0;
  const void* v = nullptr;  // (b, l, h, dv) input dtype
  std::int64_t v_batch_stride = 0, v_seq_stride = 0, v_head_stride = 0;
  const void* beta = nullptr;  // (b, l, h) input dtype, each in (0, 2]; unit stride over h
  std::int64_t beta_batch_stride = 0, beta_seq_stride = 0;
  const void* g = nullptr;  // (b, l, h) input dtype, each <= 0 (log α); unit stride over h; null: DeltaNet (α = 1)
  std::int64_t g_batch_stride = 0, g_seq_stride = 0;
  const void* initial_state = nullptr;       // (rows, h, dk, dv) param dtype, contiguous; or null (zero)
  const std::int64_t* cu_seqlens = nullptr;  // (n_seqs + 1) host, validated; or null
  std::int64_t n_seqs = 0;                   // with cu_seqlens; rows = n_seqs, else rows = b

  // Outputs.
  void* out = nullptr;  // (b, l, h, dv) input dtype
  std::int64_t out_batch_stride = 0, out_seq_stride = 0, out_head_stride = 0;
  void* final_state = nullptr;  // (rows, h, dk, dv) param dtype, contiguous; or null

  DType input_dtype = DType::f32;  // q, k, v, beta, g, out: f32 | f64 | f16 | bf16
  DType param_dtype = DType::f32;  // the states: f64 for f64 inputs, else f32

  std::int64_t rows() const { return cu_seqlens ? n_seqs : batch; }
  std::int64_t seq_row(std::int64_t s) const { return cu_seqlens ? 0 : s; }
  std::int64_t seq_begin(std::int64_t s) const { return cu_seqlens ? cu_seqlens[s] : 0; }
  std::int64_t seq_end(std::int64_t s) const { return cu_seqlens ? cu_seqlens[s + 1] : seqlen; }
  SSM_HOST_DEVICE std::int64_t q_at(std::int64_t bi, std::int64_t t, std::int64_t gi) const {
    return bi * q_batch_stride + t * q_seq_stride + gi * q_group_stride;
  }
  SSM_HOST_DEVICE std::int64_t k_at(std::int64_t bi, std::int64_t t, std::int64_t gi) const {
    return bi * k_batch_stride + t * k_seq_stride + gi * k_group_stride;
  }
  SSM_HOST_DEVICE std::int64_t v_at(std::int64_t bi, std::int64_t t, std::int64_t hh) const {
    return bi * v_batch_stride + t * v_seq_stride + hh * v_head_stride;
  }
  SSM_HOST_DEVICE std::int64_t beta_at(std::int64_t bi, std::int64_t t, std::int64_t hh) const {
    return bi * beta_batch_stride + t * beta_seq_stride + hh;
  }
  SSM_HOST_DEVICE std::int64_t g_at(std::int64_t bi, std::int64_t t, std::int64_t hh) const {
    return bi * g_batch_stride + t * g_seq_stride + hh;
  }
  SSM_HOST_DEVICE std::int64_t out_at(std::int64_t bi, std::int64_t t, std::int64_t hh) const {
    return bi * out_batch_stride + t * out_seq_stride + hh * out_head_stride;
  }
};

/// The gradients of the forward. grad_out (b, l, h, dv) input dtype, contiguous; grad_final_state (rows, h, dk, dv)
/// param dtype or null (zero). Outputs, contiguous, null ones skipped: grad_q, grad_k (b, l, g, dk) summed over a
/// group's heads, grad_v (b, l, h, dv), grad_beta, grad_g (b, l, h), grad_initial_state (rows, h, dk, dv).
struct DeltaRuleGradParams {
  const void* grad_out = nullptr;
  const void* grad_final_state = nullptr;
  void *grad_q = nullptr, *grad_k = nullptr, *grad_v = nullptr, *grad_beta = nullptr, *grad_g = nullptr;
  void* grad_initial_state = nullptr;
};

}  // namespace ssm
