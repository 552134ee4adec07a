// Host API of the dense ops on a CUDA device (argument blocks in core/params/dense.hpp): the linear map through
// cuBLAS, RMSNorm with the fused residual add, the rotary embedding, the GLU and the embedding gather (kernels in
// cuda/kernels/rms_norm.cuh, rotary.cuh, glu.cuh, embedding.cuh, linear.cuh; launch logic in cuda/kernels/launch/).
// Pointers are device memory of the current device; the calls run on `stream` (null: the default stream) and do not
// synchronize, except embedding_forward, which copies the ids to the host to check them. ssm::Error for what they do
// not take and for CUDA failures.
#pragma once

#include "ssm/core/params/dense.hpp"

namespace ssm::cuda {

/// y = x Wᵀ + bias: W in x's dtype, cuBLAS GEMM (f32 without TF32, or f64) then the bias, the row strides of x and y
/// at least in and out (rows do not overlap); f16 / bf16 W with f32 x, a warp-per-feature kernel (rows <= 65535).
void linear_forward(const LinearParams& p, void* stream = nullptr);
/// RMSNorm (+ residual, updated in place), f32 or f64.
void rms_norm_forward(const RmsNormParams& p, void* stream = nullptr);
/// Rotary position embedding of x (b, l, h, d) into y (may be x), f32 or f64, angles in double.
void rotary_forward(const RotaryParams& p, void* stream = nullptr);
/// The gated linear unit y[r, c] = z[r, c] σ(z[r, h + c]), f32 or f64 (y may be z's first half).
void glu_forward(const GluParams& p, void* stream = nullptr);
/// y[r] = table[ids[r]]: ids i32 | i64, checked against [0, vocab) on the host first (an ssm::Error naming 'ids');
/// table f32 | f64 | f16 | bf16.
void embedding_forward(const EmbeddingParams& p, void* stream = nullptr);

}  // namespace ssm::cuda
