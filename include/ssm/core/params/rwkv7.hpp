// The argument block of RWKV-7's generalized delta rule (Peng et al. 2025, "RWKV-7 'Goose' with Expressive Dynamic
// State Evolution", eq. for the WKV state), docs/rwkv7.md. Per sequence and head, with a state S (dk, dv) (the paper's
// state transposed, as for the library's other linear-attention ops):
//   w_t = exp(log_w_t) ∈ (0, 1]^dk       a diagonal decay per key channel (log_w_t finite and <= 0)
//   sa_t = S_{t−1}ᵀ a_t                  (dv)
//   S_t = diag(w_t) S_{t−1} + b_t sa_tᵀ + k_t v_tᵀ  =  (diag(w_t) + b_t a_tᵀ) S_{t−1} + k_t v_tᵀ
//   o_t = S_tᵀ (scale q_t)
// a diagonal-plus-rank-1 transition. RWKV-7 takes q = r (receptance), a = −κ̂ and b = κ̂ ⊙ a_icl (κ̂ the L2-normalized
// removal key, a_icl ∈ (0, 1) the in-context learning rate); the op takes any a and b.
// Plain pointers, sizes and element strides, trivially copyable; pointers are memory of the device that runs it
// (cu_seqlens: host memory).
#pragma once

#include <cstdint>

#include "ssm/core/dtype.hpp"
#include "ssm/core/macros.hpp"

namespace ssm {

/// A per-token tensor (b, l, h, d): its data and element strides; the last dimension has unit stride.
template <class Ptr>
struct TokenRows {
  Ptr data = nullptr;
  std::int64_t batch_stride = 0, seq_stride = 0, head_stride = 0;

  SSM_HOST_DEVICE std::int64_t at(std::int64_t bi, std::int64_t t, std::int64_t hh) const {
    return bi * batch_stride + t * seq_stride + hh * head_stride;
  }
};

struct Rwkv7Params {
  std::int64_t batch = 0, seqlen = 0;  // b, l (with cu_seqlens: b == 1 and the sequences packed along l)
  std::int64_t nheads = 0;             // h
  std::int64_t dk = 0, dv = 0;         // the key and value widths: the state is (dk, dv)
  std::int64_t chunk_size = 0;         // > 0: the chunked forms' chunk; the token-loop backwards' checkpoint interval
  double scale = 1;                    // o_t = S_tᵀ (scale q_t)

  // Inputs (b, l, h, dk) but v (b, l, h, dv), input dtype.
  TokenRows<const void*> q{}, k{}, v{}, log_w{}, a{}, b{};
  const void* initial_state = nullptr;       // (rows, h, dk, dv) param dtype, contiguous; or null (zero)
  const std::int64_t* cu_seqlens = nullptr;  // (n_seqs + 1) host, validated; or null
  std::int64_t n_seqs = 0;                   // with cu_seqlens; rows = n_seqs, else rows = b

  // Outputs.
  TokenRows<void*> out{};       // (b, l, h, dv) input dtype
  void* final_state = nullptr;  // (rows, h, dk, dv) param dtype, contiguous; or null

  DType input_dtype = DType::f32;  // q, k, v, log_w, a, b, out: f32 | f64 | f16 | bf16
  DType param_dtype = DType::f32;  // the states: f64 for f64 inputs, else f32

  std::int64_t rows() const { return cu_seqlens ? n_seqs : batch; }
  std::int64_t seq_row(std::int64_t s) const { return cu_seqlens ? 0 : s; }
  std::int64_t seq_begin(std::int64_t s) const { return cu_seqlens ? cu_seqlens[s] : 0; }
  std::int64_t seq_end(std::int64_t s) const { return cu_seqlens ? cu_seqlens[s + 1] : seqlen; }
};

/// The gradients of the forward. grad_out (b, l, h, dv) input dtype, contiguous; grad_final_state (rows, h, dk, dv)
/// param dtype or null (zero). Outputs, contiguous (b, l, h, d) in the input dtype, null ones skipped:
///   ḡq = scale S_t ḡo;  ḡk = dS v;  ḡv = dSᵀ k;  ḡb = dS sa;  ḡa = S_{t−1} (dSᵀ b);  ḡlog_w = w ⊙ rowsum(dS ⊙ S_{t−1});
///   dS_{t−1} = diag(w) dS + a (dSᵀ b)ᵀ,   with dS the gradient of S_t (scale q ḡoᵀ added at step t);
/// and grad_initial_state (rows, h, dk, dv) param dtype.
struct Rwkv7GradParams {
  const void* grad_out = nullptr;
  const void* grad_final_state = nullptr;
  void *grad_q = nullptr, *grad_k = nullptr, *grad_v = nullptr, *grad_log_w = nullptr, *grad_a = nullptr,
       *grad_b = nullptr;
  void* grad_initial_state = nullptr;
};

}  // namespace ssm
