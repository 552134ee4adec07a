// The argument block of the sparse mixture-of-experts feed-forward (Shazeer et al. 2017; Fedus et al. 2021; as in
// Mixtral and Jamba, docs/moe.md). Per token x (d_model):
//   logits = W_r x                      (E)      the router, W_r (E, d_model)
//   p = softmax(logits)                 (E)      over all E experts, in f32 or wider
//   (w, e) = top_k(p)                   (k)      the k largest, ties to the lower expert index; with normalize_topk
//                                                (Mixtral) w /= Σ w, without (Jamba) the weights sum to less than 1
//   y = Σ_j w_j · W_down[e_j] (act(W_gate[e_j] x) ⊙ W_up[e_j] x)                  SwiGLU experts (act = SiLU)
// W_gate and W_up are stacked as one (E, 2 d_ff, d_model) tensor, gate rows first (transformers' gate_up_proj);
// W_down is (E, d_model, d_ff). Plain pointers, sizes and element strides, trivially copyable; the memory of the
// device the tensors are on (the CPU path, or the CUDA kernels of cuda/kernels/moe.cuh).
#pragma once

#include <cmath>
#include <cstdint>

#include "ssm/core/dtype.hpp"
#include "ssm/core/scalar.hpp"

namespace ssm {

/// The experts' activation on the gate half: SiLU (SwiGLU: Mixtral, Jamba's default), exact GELU or tanh GELU.
enum class MoeActivation { silu, gelu, gelu_tanh };

/// act(v): SiLU v σ(v), GELU ½ v (1 + erf(v / √2)), or GELU's tanh form (core/scalar.hpp); host and device (the
/// reference, the CPU path and the CUDA kernels' epilogue).
template <class T>
SSM_HOST_DEVICE inline T moe_activate(MoeActivation act, T v) {
  switch (act) {
    case MoeActivation::silu: return scalar::silu(v);
    case MoeActivation::gelu: return T(0.5) * v * (T(1) + scalar::erf(v * T(0.7071067811865476)));
    case MoeActivation::gelu_tanh: return scalar::gelu_tanh(v);
  }
  return v;
}

/// The routing of one token: p = softmax(logits (E)) in double, then the k largest p (ties to the lower index, in
/// descending order of p) into expert[0, k) and their weights into weight[0, k), divided by their sum when
/// normalize_topk. probs (E) receives p when not null. The one routing rule of the reference and the CPU path.
inline void moe_route(const double* logits, std::int64_t E, std::int64_t k, bool normalize_topk, std::int64_t* expert,
                      double* weight, double* probs = nullptr) {
  double m = logits[0];
  for (std::int64_t e = 1; e < E; ++e) m = logits[e] > m ? logits[e] : m;
  double z = 0;
  for (std::int64_t e = 0; e < E; ++e) z += std::exp(logits[e] - m);
  for (std::int64_t j = 0; j < k; ++j) {
    std::int64_t best = -1;
    for (std::int64_t e = 0; e < E; ++e) {
      bool taken = false;
      for (std::int64_t i = 0; i < j; ++i) taken = taken || expert[i] == e;
      if (!taken && (best < 0 || logits[e] > logits[best])) best = e;
    }
    expert[j] = best;
    weight[j] = std::exp(logits[best] - m) / z;
  }
  if (normalize_topk) {
    double s = 0;
    for (std::int64_t j = 0; j < k; ++j) s += weight[j];
    for (std::int64_t j = 0; j < k; ++j) weight[j] /= s;
  }
  if (probs != nullptr)
    for (std::int64_t e = 0; e < E; ++e) probs[e] = std::exp(logits[e] - m) / z;
}

/// d act / dv on the host.
template <class T>
inline T moe_activate_grad(MoeActivation act, T v) {
  switch (act) {
    case MoeActivation::silu: return scalar::silu_grad(v);
    case MoeActivation::gelu: {
      const T cdf = T(0.5) * (T(1) + std::erf(v * T(0.7071067811865476)));
      return cdf + v * T(0.3989422804014327) * std::exp(T(-0.5) * v * v);
    }
    case MoeActivation::gelu_tanh: {
      const T c = T(0.7978845608028654), u = c * (v + T(0.044715) * v * v * v);
      const T th = std::tanh(u);
      return T(0.5) * (T(1) + th) + T(0.5) * v * (T(1) - th * th) * c * (T(1) + T(3 * 0.044715) * v * v);
    }
  }
  return T(1);
}

struct MoeParams {
  std::int64_t tokens = 0;   // t (every row of x is one token)
  std::int64_t d_model = 0;  // H
  std::int64_t d_ff = 0;     // I, each expert's hidden width
  std::int64_t experts = 0;  // E
  std::int64_t top_k = 0;    // k, 1 ≤ k ≤ E
  bool normalize_topk = false;
  MoeActivation act = MoeActivation::silu;

  const void* x = nullptr;  // (t, H) dtype, unit stride along H
  std::int64_t x_row_stride = 0;
  const void* router = nullptr;     // (E, H) weight_dtype, contiguous
  const void* w_gate_up = nullptr;  // (E, 2I, H) weight_dtype, contiguous: rows [0, I) gate, [I, 2I) up
  const void* w_down = nullptr;     // (E, H, I) weight_dtype, contiguous

  void* out = nullptr;  // (t, H) dtype, unit stride along H
  std::int64_t out_row_stride = 0;
  void* router_logits = nullptr;  // (t, E) dtype, contiguous, or null: the raw router outputs (for the aux loss)

  DType dtype = DType::f32;         // x, out, router_logits: f32 | f64
  DType weight_dtype = DType::f32;  // the dtype, or f16 | bf16 for f32 x
};

/// The backward of the forward above for grad_out ḡy (t, H) and an optional gradient of the router logits (t, E) (the
/// load-balancing loss's). Per token and choice j (expert e, weight w_j, [g | u] = W_gate_up[e] x, a = act(g) ⊙ u,
/// o_j = W_down[e] a):
///   ḡw_j = ⟨ḡy, o_j⟩,   ḡW_down[e] += w_j ḡy aᵀ,   ḡa = w_j W_down[e]ᵀ ḡy,
///   ḡg = ḡa ⊙ u ⊙ act'(g),   ḡu = ḡa ⊙ act(g),   ḡW_gate_up[e] += [ḡg; ḡu] xᵀ,   ḡx += W_gate_up[e]ᵀ [ḡg; ḡu]
/// then through the routing (the choice itself is piecewise constant): ḡp_e = ḡw_j (normalized: (ḡw_j − Σ_m ḡw_m w_m) /
/// S with S the chosen probabilities' sum), ḡlogits = p ⊙ (ḡp − ⟨ḡp, p⟩) + ḡrouter_logits, ḡW_r = ḡlogitsᵀ x, ḡx +=
/// W_rᵀ ḡlogits. Outputs contiguous in the dtype (weights in x's dtype); null ones are skipped.
struct MoeGradParams {
  const void* grad_out = nullptr;            // (t, H), unit stride along H
  std::int64_t grad_out_row_stride = 0;
  const void* grad_router_logits = nullptr;  // (t, E) contiguous, or null
  void* grad_x = nullptr;                    // (t, H) contiguous
  void* grad_router = nullptr;               // (E, H)
  void* grad_w_gate_up = nullptr;            // (E, 2I, H)
  void* grad_w_down = nullptr;               // (E, H, I)
};

}  // namespace ssm
