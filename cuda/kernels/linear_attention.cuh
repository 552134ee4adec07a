// Linear attention and retention on CUDA (docs/linear_attention.md "On CUDA"): the element-wise kernels around the
// chunked SSD kernels, which do the recurrence. The same packing as the CPU path (cpu/linear_attention.hpp): the
// engine's state H (dv1, dk) per head is Sᵀ, with C = q̃ = scale φ(q), B = k̃ = φ(k), x = [v, 1] (the column of ones only
// with the normalizer: row dv of H is then z, column dv of y the denominator zᵀ q̃), Δ = 1 and A = log γ_h (0 without a
// decay). Every buffer of the workspace is f32 and contiguous; the formulas are in core/params/linear_attention.hpp.
#pragma once

#include <cstdint>

#include "common.cuh"
#include "ssm/core/params/linear_attention.hpp"

namespace ssm::kernels {

inline constexpr int kLaThreads = 256;

/// Blocks of kLaThreads for n elements, one per thread, at most 4096 (the kernels' loops stride over the rest).
inline unsigned la_blocks(std::int64_t n) {
  const std::int64_t blocks = (n + kLaThreads - 1) / kLaThreads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 4096 ? 4096 : blocks));
}

/// The engine's inputs and outputs in the workspace (kernels/launch/linear_attention.cuh lays them out); dv1 = dv, or
/// dv + 1 with the normalizer. Null where the call has no use for a buffer.
struct LaWorkspace {
  std::int64_t dv1 = 0;
  float* q = nullptr;   // (b, l, g, dk) q̃
  float* k = nullptr;   // (b, l, g, dk) k̃
  float* x = nullptr;   // (b, l, h, dv1) [v, 1]
  float* y = nullptr;   // (b, l, h, dv1) the engine's y: [S_tᵀ q̃_t, z_tᵀ q̃_t]
  float* H0 = nullptr;  // (rows, h, dv1, dk) the initial states
  float* HT = nullptr;  // (rows, h, dv1, dk) the final states
  // the backward's
  float* gy = nullptr;  // (b, l, h, dv1) ḡy: [ḡ / d, −⟨ḡ, y⟩ / d²] with the normalizer (y the numerator), else ḡ
  float* gq = nullptr;   // (b, l, g, dk) the engine's ḡC
  float* gk = nullptr;   // (b, l, g, dk) its ḡB
  float* gx = nullptr;   // (b, l, h, dv1) its ḡx
  float* GF = nullptr;   // (rows, h, dv1, dk) the final states' gradients
  float* GH0 = nullptr;  // (rows, h, dv1, dk) the initial states' gradients
};

/// The first element of this thread and the grid's stride, for the loops over n elements.
__device__ __forceinline__ std::int64_t la_first() {
  return static_cast<std::int64_t>(blockIdx.x) * kLaThreads + threadIdx.x;
}
__device__ __forceinline__ std::int64_t la_stride() {
  return static_cast<std::int64_t>(gridDim.x) * kLaThreads;
}

/// w.q = scale φ(q), w.k = φ(k) (b, l, g, dk), then w.x = [v, 1] (b, l, h, dv1), in one loop over both ranges.
template <class In>
__global__ void __launch_bounds__(kLaThreads) la_pack_kernel(LinearAttentionParams p, LaWorkspace w) {
  const std::int64_t dk = p.dk, g = p.ngroups, h = p.nheads, l = p.seqlen;
  const std::int64_t nq = p.batch * l * g * dk, nx = p.batch * l * h * w.dv1;
  const float scale = static_cast<float>(p.scale);
  for (std::int64_t i = la_first(); i < nq + nx; i += la_stride()) {
    if (i < nq) {
      const std::int64_t j = i % dk, gi = (i / dk) % g, bt = i / (dk * g), bi = bt / l, t = bt % l;
      const float qv = load_float(static_cast<const In*>(p.q) + bi * p.q_batch_stride + t * p.q_seq_stride +
                                  gi * p.q_group_stride + j);
      const float kv = load_float(static_cast<const In*>(p.k) + bi * p.k_batch_stride + t * p.k_seq_stride +
                                  gi * p.k_group_stride + j);
      w.q[i] = feature_map(p.feature_map, qv) * scale;
      w.k[i] = feature_map(p.feature_map, kv);
    } else {
      const std::int64_t e = i - nq, j = e % w.dv1, hh = (e / w.dv1) % h, bt = e / (w.dv1 * h), bi = bt / l, t = bt % l;
      w.x[e] = j < p.dv ? load_float(static_cast<const In*>(p.v) + bi * p.v_batch_stride + t * p.v_seq_stride +
                                     hh * p.v_head_stride + j)
                        : 1.0f;
    }
  }
}

/// H (n, dv1, dk) from the op's S (n, dk, dv) and z (n, dk); either may be null (zero).
__global__ void __launch_bounds__(kLaThreads)
    la_states_in_kernel(const float* S, const float* z, std::int64_t n, std::int64_t dk, std::int64_t dv,
                        std::int64_t dv1, float* H) {
  for (std::int64_t e = la_first(); e < n * dv1 * dk; e += la_stride()) {
    const std::int64_t i = e % dk, r = (e / dk) % dv1, s = e / (dk * dv1);
    H[e] = r < dv ? (S ? S[(s * dk + i) * dv + r] : 0.0f) : (z ? z[s * dk + i] : 0.0f);
  }
}

/// The op's S (n, dk, dv) and z (n, dk) from H (n, dv1, dk); either may be null (not wanted).
__global__ void __launch_bounds__(kLaThreads)
    la_states_out_kernel(const float* H, std::int64_t n, std::int64_t dk, std::int64_t dv, std::int64_t dv1, float* S,
                         float* z) {
  for (std::int64_t e = la_first(); e < n * dv1 * dk; e += la_stride()) {
    const std::int64_t i = e % dk, r = (e / dk) % dv1, s = e / (dk * dv1);
    if (r < dv) {
      if (S) S[(s * dk + i) * dv + r] = H[e];
    } else if (z) {
      z[s * dk + i] = H[e];
    }
  }
}

/// out = y, or y / (d + eps) with the normalizer (d = column dv of the engine's y), converted to In.
template <class In>
__global__ void __launch_bounds__(kLaThreads) la_epilogue_kernel(LinearAttentionParams p, LaWorkspace w) {
  const std::int64_t dv = p.dv, h = p.nheads, l = p.seqlen;
  for (std::int64_t e = la_first(); e < p.batch * l * h * dv; e += la_stride()) {
    const std::int64_t j = e % dv, row = e / dv, hh = row % h, bt = row / h, bi = bt / l, t = bt % l;
    const float* y = w.y + row * w.dv1;
    float out = y[j];
    if (p.normalize) out *= 1.0f / (y[dv] + static_cast<float>(p.eps));
    store_float(static_cast<In*>(p.out) + bi * p.out_batch_stride + t * p.out_seq_stride + hh * p.out_head_stride + j,
                out);
  }
}

/// The engine's incoming gradient w.gy (b, l, h, dv1) from grad_out (b, l, h, dv, contiguous): ḡ, or with the
/// normalizer [ḡ / d, −⟨ḡ, y⟩ / d²] (y the forward's numerator w.y, d + eps its denominator). One thread per row.
template <class In>
__global__ void __launch_bounds__(kLaThreads)
    la_grad_in_kernel(LinearAttentionParams p, LinearAttentionGradParams g, LaWorkspace w) {
  const std::int64_t dv = p.dv, dv1 = w.dv1;
  for (std::int64_t row = la_first(); row < p.batch * p.seqlen * p.nheads; row += la_stride()) {
    const In* go = static_cast<const In*>(g.grad_out) + row * dv;
    float* gy = w.gy + row * dv1;
    if (!p.normalize) {
      for (std::int64_t j = 0; j < dv; ++j) gy[j] = load_float(go + j);
      continue;
    }
    const float* y = w.y + row * dv1;
    const float inv = 1.0f / (y[dv] + static_cast<float>(p.eps));
    float gd = 0.0f;
    for (std::int64_t j = 0; j < dv; ++j) {
      const float gj = load_float(go + j);
      gd -= gj * y[j];
      gy[j] = gj * inv;
    }
    gy[dv] = gd * inv * inv;
  }
}

/// grad_q = ḡC φ'(q) scale, grad_k = ḡB φ'(k) (b, l, g, dk), then grad_v = ḡx without the column of ones
/// (b, l, h, dv), all contiguous in In; null ones skipped.
template <class In>
__global__ void __launch_bounds__(kLaThreads)
    la_grad_out_kernel(LinearAttentionParams p, LinearAttentionGradParams g, LaWorkspace w) {
  const std::int64_t dk = p.dk, gr = p.ngroups, l = p.seqlen;
  const std::int64_t nq = p.batch * l * gr * dk, nv = p.batch * l * p.nheads * p.dv;
  const float scale = static_cast<float>(p.scale);
  for (std::int64_t i = la_first(); i < nq + nv; i += la_stride()) {
    if (i < nq) {
      const std::int64_t j = i % dk, gi = (i / dk) % gr, bt = i / (dk * gr), bi = bt / l, t = bt % l;
      if (g.grad_q) {
        const float qv = load_float(static_cast<const In*>(p.q) + bi * p.q_batch_stride + t * p.q_seq_stride +
                                    gi * p.q_group_stride + j);
        store_float(static_cast<In*>(g.grad_q) + i, w.gq[i] * feature_map_grad(p.feature_map, qv) * scale);
      }
      if (g.grad_k) {
        const float kv = load_float(static_cast<const In*>(p.k) + bi * p.k_batch_stride + t * p.k_seq_stride +
                                    gi * p.k_group_stride + j);
        store_float(static_cast<In*>(g.grad_k) + i, w.gk[i] * feature_map_grad(p.feature_map, kv));
      }
    } else if (g.grad_v) {
      const std::int64_t e = i - nq, j = e % p.dv, row = e / p.dv;
      store_float(static_cast<In*>(g.grad_v) + e, w.gx[row * w.dv1 + j]);
    }
  }
}

}  // namespace ssm::kernels
