// The argument block of TTT-Linear (Sun et al. 2024, "Learning to (Learn at Test Time): RNNs with Expressive Hidden
// States", §2 and the mini-batch TTT of §2.5–2.7), docs/ttt_linear.md. Per sequence and head the hidden state is a
// linear model W (d, d) with a bias b (d), kept as one matrix Ŵ = [W; bᵀ] (d + 1, d) so that x̂ = [x; 1] gives
// x̂ᵀ Ŵ = xᵀ W + bᵀ. The inner model is f(x; Ŵ) = x + LN(x̂ᵀ Ŵ), LN the layer norm over d with weight γ and bias β
// (per head), and the inner loss of token t, with training view k_t and label v_t, is
//   ℓ_t(Ŵ) = ½ ‖f(k_t; Ŵ) − v_t‖² = ½ ‖LN(k̂_tᵀ Ŵ) − (v_t − k_t)‖²,     ∇ℓ_t = k̂_t G_tᵀ,
// G_t (d) the gradient of ℓ_t with respect to Z = k̂_tᵀ Ŵ (through the layer norm). Mini-batch gradient descent
// with mini-batches of m tokens counted from each sequence's start: inside the mini-batch that starts with Ŵ′, every
// gradient is taken at Ŵ′ and token t at position i = t mod m sees
//   A_t = Σ_{s in the batch, s <= t} η_s k̂_s G_sᵀ   (G_s at Ŵ′),     Ŵ_t = Ŵ′ − τ_i A_t,
//   o_t = q_t + LN(q̂_tᵀ Ŵ_t),
// η_s >= 0 the per-token learning rate and τ_i >= 0 a weight per position (1 for the plain sum; the paper's code takes
// 1 / (i + 1), the mean of the gradients so far). At the end of the mini-batch Ŵ′ ← Ŵ_t and A ← 0. The decode state
// after a token is (Ŵ′, A): the weights at the start of the unfinished mini-batch and the sum accumulated in it.
// Plain pointers, sizes and element strides, trivially copyable; pointers are host memory (CPU only).
#pragma once

#include <cstdint>

#include "ssm/core/dtype.hpp"
#include "ssm/core/params/rwkv7.hpp"  // TokenRows

namespace ssm {

struct TttLinearParams {
  std::int64_t batch = 0, seqlen = 0;  // b, l (with cu_seqlens: b == 1 and the sequences packed along l)
  std::int64_t nheads = 0;             // h
  std::int64_t d = 0;                  // the head width: W is (d, d), the state Ŵ (d + 1, d)
  std::int64_t mini_batch = 0;         // m > 0
  std::int64_t start = 0;              // [0, m): the mini-batch position of every sequence's first token
  double ln_eps = 1e-6;                // the layer norm's ε, > 0

  // Inputs (b, l, h, d) but eta (b, l, h) (its head_stride the only stride along h), input dtype.
  TokenRows<const void*> q{}, k{}, v{}, eta{};
  const void* ln_weight = nullptr;         // γ (h, d) param dtype, contiguous
  const void* ln_bias = nullptr;           // β (h, d) param dtype, contiguous
  const void* position_weights = nullptr;  // τ (m) param dtype; or null (every τ_i = 1)
  const void* initial_state = nullptr;     // Ŵ′ (rows, h, d + 1, d) param dtype, contiguous; or null (zero)
  const void* initial_pending = nullptr;   // A (rows, h, d + 1, d) param dtype, contiguous; or null (zero)
  const std::int64_t* cu_seqlens = nullptr;  // (n_seqs + 1) host, validated; or null
  std::int64_t n_seqs = 0;                   // with cu_seqlens; rows = n_seqs, else rows = b

  // Outputs.
  TokenRows<void*> out{};         // (b, l, h, d) input dtype
  void* final_state = nullptr;    // Ŵ′ after the last token (rows, h, d + 1, d) param dtype, contiguous; or null
  void* final_pending = nullptr;  // A after the last token, the same shape; or null

  DType input_dtype = DType::f32;  // q, k, v, eta, out: f32 | f64 | f16 | bf16
  DType param_dtype = DType::f32;  // γ, β, τ and the states: f64 for f64 inputs, else f32

  std::int64_t rows() const { return cu_seqlens ? n_seqs : batch; }
  std::int64_t seq_row(std::int64_t s) const { return cu_seqlens ? 0 : s; }
  std::int64_t seq_begin(std::int64_t s) const { return cu_seqlens ? cu_seqlens[s] : 0; }
  std::int64_t seq_end(std::int64_t s) const { return cu_seqlens ? cu_seqlens[s + 1] : seqlen; }
  std::int64_t state_size() const { return (d + 1) * d; }
};

/// The gradients of the forward. grad_out (b, l, h, d) input dtype, contiguous; grad_final_state and
/// grad_final_pending (rows, h, d + 1, d) param dtype, or null (zero). Outputs, null ones skipped: grad_q, grad_k,
/// grad_v (b, l, h, d) and grad_eta (b, l, h), contiguous in the input dtype; grad_ln_weight, grad_ln_bias (h, d),
/// grad_position_weights (m), grad_initial_state and grad_initial_pending (rows, h, d + 1, d) in the param dtype.
/// The backward of one mini-batch (core of reference/ttt_linear.hpp and cpu/ttt_linear_backward.hpp): with C the
/// gradient of the pending sum carried backward through the mini-batch, every output's Ẑ̄ = LN'(ḡo) adds
/// −τ_i q̂ Ẑ̄ᵀ to C, and every training token receives k̂̄ += C E_s, Ē_s = Cᵀ k̂_s before its own term is passed; Ē
/// then flows through E = η G and the layer norm's gradient G(Z, v − k, γ, β) (its derivative: docs/ttt_linear.md).
struct TttLinearGradParams {
  const void* grad_out = nullptr;
  const void* grad_final_state = nullptr;
  const void* grad_final_pending = nullptr;
  void *grad_q = nullptr, *grad_k = nullptr, *grad_v = nullptr, *grad_eta = nullptr;
  void *grad_ln_weight = nullptr, *grad_ln_bias = nullptr, *grad_position_weights = nullptr;
  void *grad_initial_state = nullptr, *grad_initial_pending = nullptr;
};

}  // namespace ssm
