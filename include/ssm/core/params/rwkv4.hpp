// The argument block of RWKV-4's time mixing, the WKV recurrence (Peng et al. 2023, "RWKV: Reinventing RNNs for the
// Transformer Era", eq. 14–16; docs/rwkv4.md). Per sequence and channel c, with w = −exp(time_decay) < 0 the log
// decay per step and u = time_first the bonus of the current token:
//   wkv_t = (Σ_{i<t} e^{(t−1−i) w + k_i} v_i + e^{u + k_t} v_t) / (Σ_{i<t} e^{(t−1−i) w + k_i} + e^{u + k_t})
// computed with the state (num, den, max) = (A e^{−p}, B e^{−p}, p) of the running sums A = Σ e^{…} v, B = Σ e^{…}
// and a running maximum exponent p, so that no exponential overflows:
//   q = max(p, u + k_t),  e1 = e^{p − q},  e2 = e^{u + k_t − q},  wkv_t = (e1 num + e2 v_t) / (e1 den + e2)
//   r = p + w,  p' = max(r, k_t),  f1 = e^{r − p'},  f2 = e^{k_t − p'},  num' = f1 num + f2 v_t,  den' = f1 den + f2
// (transformers' rwkv_linear_attention_cpu). The empty state is (0, 0, −1e38).
// Plain pointers, sizes and element strides, trivially copyable; pointers are host memory (CPU only).
#pragma once

#include <cstdint>

#include "ssm/core/dtype.hpp"

namespace ssm {

/// The exponent of the empty state: e^{p − q} is 0 for every finite q the recurrence meets (transformers' −1e38).
inline constexpr double kRwkv4EmptyMax = -1e38;

struct Rwkv4Params {
  std::int64_t batch = 0, seqlen = 0;  // b, l (with cu_seqlens: b == 1 and the sequences packed along l)
  std::int64_t channels = 0;           // c
  std::int64_t checkpoint = 64;        // > 0: the backward's interval between saved states

  // Inputs (b, l, c) in the input dtype, unit stride along c; element strides of b and l.
  const void *k = nullptr, *v = nullptr;
  std::int64_t k_strides[2] = {0, 0}, v_strides[2] = {0, 0};
  const void* time_decay = nullptr;          // (c) param dtype: w = −exp(time_decay)
  const void* time_first = nullptr;          // (c) param dtype: u
  const void* initial_state = nullptr;       // (rows, 3, c) param dtype, contiguous: num, den, max; or null (empty)
  const std::int64_t* cu_seqlens = nullptr;  // (n_seqs + 1) host, validated; or null
  std::int64_t n_seqs = 0;                   // with cu_seqlens; rows = n_seqs, else rows = b

  // Outputs.
  void* out = nullptr;  // (b, l, c) input dtype, unit stride along c
  std::int64_t out_strides[2] = {0, 0};
  void* final_state = nullptr;  // (rows, 3, c) param dtype, contiguous; or null

  DType input_dtype = DType::f32;  // k, v, out: f32 | f64 | f16 | bf16
  DType param_dtype = DType::f32;  // time_decay, time_first, the states: f64 for f64 inputs, else f32

  std::int64_t rows() const { return cu_seqlens ? n_seqs : batch; }
  std::int64_t seq_row(std::int64_t s) const { return cu_seqlens ? 0 : s; }
  std::int64_t seq_begin(std::int64_t s) const { return cu_seqlens ? cu_seqlens[s] : 0; }
  std::int64_t seq_end(std::int64_t s) const { return cu_seqlens ? cu_seqlens[s + 1] : seqlen; }
  std::int64_t at(const std::int64_t (&strides)[2], std::int64_t bi, std::int64_t t) const {
    return bi * strides[0] + t * strides[1];
  }
};

/// The gradients of the forward, in the scaled state's terms: with ḡnum_t, ḡden_t the gradients of the state's num
/// and den entering step t (its max held fixed), y_t = wkv_t, ḡy_t = grad_out, and D = e1 den + e2,
///   ḡnum_t = f1 ḡnum_{t+1} + ḡy e1 / D           ḡden_t = f1 ḡden_{t+1} − ḡy y e1 / D
///   ḡv_t = f2 ḡnum_{t+1} + ḡy e2 / D              ḡk_t = f2 (v ḡnum_{t+1} + ḡden_{t+1}) + ḡy e2 (v − y) / D
///   ḡu += ḡy e2 (v − y) / D                        ḡw += f1 (num_t ḡnum_{t+1} + den_t ḡden_{t+1})
/// ḡtime_decay = w ḡw. The max enters the outputs only through the representation: a gradient of the final max beyond
/// num ḡnum + den ḡden flows back along the chain of maxima (p' = r when r > k_t, else k_t). The initial state's
/// gradient: (ḡnum_0, ḡden_0, num_0 ḡnum_0 + den_0 ḡden_0 + the max chain's part).
/// grad_out (b, l, c) input dtype, contiguous; grad_final_state (rows, 3, c) param dtype or null (zero). Outputs,
/// contiguous, null ones skipped: grad_k, grad_v (b, l, c) input dtype; grad_time_decay, grad_time_first (c) and
/// grad_initial_state (rows, 3, c) param dtype.
struct Rwkv4GradParams {
  const void* grad_out = nullptr;
  const void* grad_final_state = nullptr;
  void *grad_k = nullptr, *grad_v = nullptr;
  void *grad_time_decay = nullptr, *grad_time_first = nullptr;
  void* grad_initial_state = nullptr;
};

}  // namespace ssm
