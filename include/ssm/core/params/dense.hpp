// The argument blocks of the dense ops a layer is made of: the linear map (y = x Wᵀ + b), RMSNorm with its fused
// residual add, the embedding lookup (docs/math.md §6). Read by the CPU paths and by a device backend's entry
// points: plain pointers, sizes and element strides, trivially copyable. Pointers are memory of the device that
// runs the op.
#pragma once

#include <cstdint>

#include "ssm/core/dtype.hpp"

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

}  // namespace ssm
