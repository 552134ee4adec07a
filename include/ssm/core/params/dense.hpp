// The argument blocks of the dense ops a layer is made of: the linear map (y = x Wᵀ + b), RMSNorm with its fused
// residual add, the rotary embedding, the gated linear unit, the embedding lookup (docs/math.md §6), and the
// language-model loss (cross-entropy with its gradient). Read by the CPU paths and by a device backend's entry points:
// plain pointers, sizes and element strides, trivially copyable. Pointers are memory of the device that runs the op.
#pragma once

#include <cstdint>

#include "ssm/core/dtype.hpp"
#include "ssm/core/macros.hpp"
#include "ssm/core/scalar.hpp"

namespace ssm {

/// y (rows, out) = x (rows, in) Wᵀ + bias, W (out, in) in PyTorch's nn.Linear layout.
struct LinearParams {
  std::int64_t rows = 0, in = 0, out = 0;
  const void* x = nullptr;     // (rows, in) activation dtype (f32 | f64), unit stride along in
  std::int64_t x_row_stride = 0;
  const void* weight = nullptr;  // (out, in) contiguous, weight_dtype: the activation dtype, or f16 | bf16 for f32
  DType weight_dtype = DType::f32;
  const void* bias = nullptr;  // (out) activation dtype, contiguous; or null
  void* y = nullptr;           // (rows, out) activation dtype, unit stride along out
  std::int64_t y_row_stride = 0;
  DType dtype = DType::f32;    // the activation dtype of x, bias and y
};

/// Per row: r = x (+ residual, stored back into residual when given); y = r / sqrt(mean(r²) + eps) ⊙ weight.
struct RmsNormParams {
  std::int64_t rows = 0, dim = 0;
  const void* x = nullptr;      // (rows, dim), unit stride along dim
  std::int64_t x_row_stride = 0;
  void* residual = nullptr;     // (rows, dim), unit stride along dim; updated in place; or null
  std::int64_t residual_row_stride = 0;
  const void* weight = nullptr;  // (dim) contiguous; or null (no weight)
  void* y = nullptr;            // (rows, dim), unit stride along dim; may be x
  std::int64_t y_row_stride = 0;
  double eps = 1e-5;
  DType dtype = DType::f32;     // of x, residual, weight and y
};

/// LayerNorm per row: y = (x − mean) / sqrt(var + eps) ⊙ weight + bias (var the biased variance).
struct LayerNormParams {
  std::int64_t rows = 0, dim = 0;
  const void* x = nullptr;  // (rows, dim), unit stride along dim
  std::int64_t x_row_stride = 0;
  const void* weight = nullptr;  // (dim) contiguous; or null (1)
  const void* bias = nullptr;    // (dim) contiguous; or null (0)
  void* y = nullptr;             // (rows, dim), unit stride along dim; may be x
  std::int64_t y_row_stride = 0;
  void* residual = nullptr;  // (rows, dim), unit stride along dim; or null. Given: residual += x, y = LN(residual)
  std::int64_t residual_row_stride = 0;
  double eps = 1e-5;
  DType dtype = DType::f32;  // of x, weight, bias, residual and y
};

/// Rotary position embedding (Su et al. 2021, RoFormer) of x (b, l, h, d), d even: channel pair i of the token at
/// position pos is rotated by the angle pos · base^(−2i / d); pos = position_offset + t, taken mod period when period >
/// 0. Pair i is (2i, 2i + 1) when interleaved (GPT-J, TTT), else (i, i + d / 2) (GPT-NeoX, Llama).
struct RotaryParams {
  std::int64_t batch = 0, seqlen = 0, heads = 0, dim = 0;
  const void* x = nullptr;  // (b, l, h, d), unit stride along d
  std::int64_t x_strides[3] = {0, 0, 0};
  void* y = nullptr;  // (b, l, h, d), unit stride along d; may be x
  std::int64_t y_strides[3] = {0, 0, 0};
  double base = 10000;
  std::int64_t position_offset = 0, period = 0;
  bool interleaved = true;
  bool inverse = false;      // rotate by −angle: Rᵀ, the rotation's backward
  DType dtype = DType::f32;  // of x and y

  /// The position of step t and the pair (first, second) channels of pair i.
  SSM_HOST_DEVICE std::int64_t position(std::int64_t t) const {
    return period > 0 ? (position_offset + t) % period : position_offset + t;
  }
  /// The angle of pair i at position pos: pos · base^(−2i / d), in double (the reference, the CPU table and the CUDA
  /// kernel all take it from here).
  SSM_HOST_DEVICE double angle(std::int64_t pos, std::int64_t i) const {
    return static_cast<double>(pos) * scalar::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(dim));
  }
  SSM_HOST_DEVICE std::int64_t first(std::int64_t i) const { return interleaved ? 2 * i : i; }
  SSM_HOST_DEVICE std::int64_t second(std::int64_t i) const { return interleaved ? 2 * i + 1 : i + dim / 2; }
};

/// The gated linear unit (PyTorch's nn.GLU over the last dimension; the S4 layers' gelu_glu output):
/// y[r, c] = z[r, c] · σ(z[r, h + c]), c < h.
struct GluParams {
  std::int64_t rows = 0, dim = 0;  // dim = h
  const void* z = nullptr;         // (rows, 2h), unit stride along 2h
  std::int64_t z_row_stride = 0;
  void* y = nullptr;  // (rows, h), unit stride along h; may be z's first half (the same data and row stride)
  std::int64_t y_row_stride = 0;
  DType dtype = DType::f32;  // of z and y

  /// The output of a value a and its gate g: a σ(g).
  template <class T>
  SSM_HOST_DEVICE static T gate(T a, T g) {
    return a * scalar::sigmoid(g);
  }
};

/// y[r] = table[ids[r]], converted to y's dtype.
struct EmbeddingParams {
  std::int64_t rows = 0, vocab = 0, dim = 0;
  const void* ids = nullptr;   // (rows) contiguous, ids_dtype (i32 | i64), each in [0, vocab)
  DType ids_dtype = DType::i64;
  const void* table = nullptr;  // (vocab, dim) contiguous, table_dtype (f32 | f64 | f16 | bf16)
  DType table_dtype = DType::f32;
  void* y = nullptr;           // (rows, dim) dtype, unit stride along dim
  std::int64_t y_row_stride = 0;
  DType dtype = DType::f32;    // of y: f64 for an f64 table, f32 otherwise
};

/// Cross-entropy of softmax(logits) against integer targets, fused with its gradient. Per row r whose target t_r is not
/// ignore_index: loss_r = logsumexp(logits_r) − logits_r[t_r], and ∂/∂logits_r = softmax(logits_r) − onehot(t_r).
/// The op's loss is the mean over those rows; grad_logits = grad_scale · ∂(mean loss)/∂logits (zero rows where ignored).
struct CrossEntropyParams {
  std::int64_t rows = 0, vocab = 0;
  const void* logits = nullptr;  // (rows, vocab), unit stride along vocab
  std::int64_t logits_row_stride = 0;
  const void* targets = nullptr;  // (rows) contiguous, target_dtype
  DType target_dtype = DType::i64;  // i32 | i64
  std::int64_t ignore_index = -100;
  std::int64_t count = 0;          // rows whose target is not ignore_index (the mean's denominator; > 0 for grads)
  double* row_loss = nullptr;      // (rows) host doubles: loss_r, 0 where ignored
  void* grad_logits = nullptr;     // (rows, vocab) logits' dtype, unit stride along vocab, may be logits; or null
  std::int64_t grad_row_stride = 0;
  double grad_scale = 1.0;         // multiplies the gradient (loss scaling, gradient accumulation)
  DType dtype = DType::f32;        // of logits and grad_logits (f32 | f64)

  /// The target of row r as i64.
  std::int64_t target(std::int64_t r) const {
    return target_dtype == DType::i32 ? static_cast<const std::int32_t*>(targets)[r]
                                      : static_cast<const std::int64_t*>(targets)[r];
  }
};

}  // namespace ssm
