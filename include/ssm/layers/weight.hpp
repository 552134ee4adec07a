// Weight matrices held in f32, f16 or bf16, and the linear layer and embedding lookup that read them with f32
// arithmetic (the ops ssm::linear and ssm::embedding). A 16-bit matrix costs half the memory of f32 (a bf16
// checkpoint can be used at its file size, as a zero-copy view of the memory-mapped file); the products convert
// weights to f32 on the fly (cpu/linear.hpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/convert.hpp"
#include "ssm/layers/basic.hpp"

namespace ssm::layers {

/// A (rows, cols) row-major matrix of f32, f16 or bf16 values (PyTorch's (out, in) layout for a linear
/// weight), stored in a contiguous cpu ssm::Tensor: owned, or a view sharing a memory-mapped file (see
/// safetensors::File::tensor). Cheap to copy: copies share the storage. Read-only.
class WeightMatrix {
 public:
  WeightMatrix() = default;
  /// Holds `t` (contiguous, cpu, rank 2, dtype f32 / f16 / bf16) without copying it.
  explicit WeightMatrix(Tensor t) : t_(std::move(t)) {
    SSM_CHECK(t_.defined() && t_.rank() == 2 && t_.device().is_cpu() && t_.view().is_contiguous(),
              "WeightMatrix: expected a contiguous rank-2 cpu tensor");
    check_dtype("WeightMatrix: the tensor's dtype", t_.dtype());
    SSM_CHECK(reinterpret_cast<std::uintptr_t>(t_.data()) % size_of(t_.dtype()) == 0,
              "WeightMatrix: the data is not aligned for ", name(t_.dtype()));
  }
  /// `values` (rows x cols f32) stored as `dtype` (f32, f16 or bf16; rounded to nearest even).
  static WeightMatrix from_f32(const float* values, index_t rows, index_t cols, DType dtype = DType::f32) {
    check_dtype("WeightMatrix::from_f32: dtype", dtype);
    Tensor t = Tensor::empty({rows, cols}, dtype);
    const std::size_t n = static_cast<std::size_t>(rows * cols);
    if (dtype == DType::f32) std::copy_n(values, n, t.data_as<float>());
    if (dtype == DType::f16)
      for (std::size_t i = 0; i < n; ++i) t.data_as<half>()[i] = half(values[i]);
    if (dtype == DType::bf16)
      for (std::size_t i = 0; i < n; ++i) t.data_as<bfloat16>()[i] = bfloat16(values[i]);
    return WeightMatrix(std::move(t));
  }
  /// Throws ssm::Error "<what> is <dtype>, which is not one of f32, f16, bf16" unless dtype is one a WeightMatrix
  /// can hold; `what` names the argument (e.g. "MambaLM::load: LoadOptions::weight_dtype").
  static void check_dtype(const char* what, DType dtype) {
    SSM_CHECK(dtype == DType::f32 || dtype == DType::f16 || dtype == DType::bf16, what, " is ", name(dtype),
              ", which is not one of f32, f16, bf16");
  }

  bool empty() const { return !t_.defined(); }
  DType dtype() const { return t_.dtype(); }
  index_t rows() const { return empty() ? 0 : t_.size(0); }
  index_t cols() const { return empty() ? 0 : t_.size(1); }
  std::size_t nbytes() const { return empty() ? 0 : t_.nbytes(); }
  const void* data() const { return t_.data(); }
  /// The values, when the dtype is f32.
  const float* f32() const {
    SSM_CHECK(dtype() == DType::f32, "WeightMatrix::f32: the matrix holds ", name(dtype()));
    return t_.data_as<float>();
  }
  const Tensor& tensor() const { return t_; }

  /// dst[0, n) = float(element i0 + k): n consecutive elements (row-major) converted to f32.
  void to_f32(index_t i0, index_t n, float* dst) const;
  /// All values in f32 (a copy).
  std::vector<float> to_f32() const {
    std::vector<float> v(static_cast<std::size_t>(rows() * cols()));
    to_f32(0, rows() * cols(), v.data());
    return v;
  }
  /// Same shape and the same values (compared in f32, row by row).
  bool same_values(const WeightMatrix& o) const {
    if (rows() != o.rows() || cols() != o.cols()) return false;
    std::vector<float> a(static_cast<std::size_t>(cols())), b(a.size());
    for (index_t r = 0; r < rows(); ++r) {
      to_f32(r * cols(), cols(), a.data());
      o.to_f32(r * cols(), cols(), b.data());
      if (a != b) return false;
    }
    return true;
  }

 private:
  Tensor t_;
};


/// dst[0, n) = float(src[i0 + k]): n consecutive elements of a buffer of f32, f16 or bf16 values, converted to f32.
inline void elements_to_f32(const void* src, DType dtype, index_t i0, index_t n, float* dst) {
  switch (dtype) {
    case DType::f32: std::copy_n(static_cast<const float*>(src) + i0, n, dst); break;
    case DType::f16: ::ssm::cpu::load_row(static_cast<const half*>(src) + i0, n, dst); break;
    case DType::bf16: ::ssm::cpu::load_row(static_cast<const bfloat16*>(src) + i0, n, dst); break;
    default: fail("elements_to_f32: expected f32, f16 or bf16 values, got ", name(dtype));
  }
}

inline void WeightMatrix::to_f32(index_t i0, index_t n, float* dst) const {
  elements_to_f32(data(), dtype(), i0, n, dst);
}

/// y = x W^T (+ bias) with W a WeightMatrix (out, in) of any dtype: the ssm::linear op (ops/linear.hpp; f32 by
/// Eigen, f16 and bf16 converted on the fly with f32 products and sums). x: (rows, in) with row stride ldx (default
/// in), y: (rows, out) with row stride ldy (default out); output features split over `threads` threads.
inline void linear_forward(const float* x, const WeightMatrix& W, const float* bias, float* y, index_t rows,
                           index_t ldx = -1, index_t ldy = -1, int threads = 1) {
  LinearInputs li;
  li.x = strided_rows(x, rows, W.cols(), ldx);
  li.weight = W.tensor();
  if (bias != nullptr) li.bias = TensorView::of(bias, {W.rows()});
  LinearOptions opt;
  opt.num_threads = threads;
  linear_into(li, strided_rows(y, rows, W.rows(), ldy), opt);
}

/// y[r] = table[ids[r]] converted to f32 (the ssm::embedding op). ids: (rows), table: (vocab, dim), y: (rows, dim).
/// Throws on an id outside [0, vocab).
template <class Id>
void embedding_forward(const Id* ids, const WeightMatrix& table, float* y, index_t rows) {
  embedding_into(TensorView::of(ids, {rows}), table.tensor(), TensorView::of(y, {rows, table.cols()}));
}

}  // namespace ssm::layers
