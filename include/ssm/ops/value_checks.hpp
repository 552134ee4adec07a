// Checks the sequence ops share: the values of their per-token inputs (GLA's log gate, RWKV-7's decay and rank-1
// vectors, the delta rule's β and g), element by element on the host (a device tensor's values copied there first:
// host_mirror), and what their CUDA kernels refuse (check_cuda_sequence_shapes). The value walk: one
// dispatch on the dtype per tensor, then a typed walk (a per-element dispatch cost as much as a token loop's forward at
// dk = 128).
#pragma once

#include <cstdint>

#include "ssm/core/check.hpp"
#include "ssm/core/dtype.hpp"
#include "ssm/core/tensor.hpp"

namespace ssm::detail {

/// On a CUDA device, what the sequence ops' kernels cannot take, by name: f64 v (the kernels compute in f32), and no
/// heads, value channels (v (b, l, h, dv), rank checked) or key channels (q (b, l, g, dk)).
inline void check_cuda_sequence_shapes(const Checker& c, const Device& device, const TensorView& q,
                                       const TensorView& v) {
  if (!device.is_cuda()) return;
  c.require(v.dtype() != DType::f64, "v",
            "f64 has no CUDA path (the kernels compute in f32; f32, f16 or bf16 run there), got f64 on ", device.str());
  c.require(v.size(2) >= 1 && v.size(3) >= 1, "v", "needs at least one head and one value channel on CUDA, got shape ",
            v.shape().str());
  c.require(q.rank() != 4 || q.size(3) >= 1, "q", "needs at least one key channel on CUDA, got shape ",
            q.shape().str());
}

/// On a CUDA device, at most 65535 sequences per call (a grid dimension of the kernels), by name: cu_seqlens when the
/// sequences are packed, else v (its batch).
inline void check_cuda_sequence_count(const Checker& c, const Device& device, index_t rows, bool packed) {
  if (!device.is_cuda()) return;
  c.require(rows <= 65535, packed ? "cu_seqlens" : "v", "CUDA takes at most 65535 sequences per call, got ", rows);
}

/// A host view of t with t's shape and strides: t itself on the CPU; for a device tensor, a copy of the storage its
/// elements span (strides >= 0), kept in `storage`. For the value checks of tensors on a CUDA device.
inline TensorView host_mirror(const TensorView& t, Tensor& storage) {
  if (t.device().is_cpu()) return t;
  if (t.numel() == 0) return TensorView(nullptr, t.dtype(), Device::cpu(), t.shape(), t.strides());
  index_t extent = 1;
  for (int k = 0; k < t.rank(); ++k) extent += (t.size(k) - 1) * t.stride(k);
  storage = Tensor::empty({extent}, t.dtype());
  ::ssm::copy(storage.view(), TensorView(t.data(), t.dtype(), t.device(), Dims{extent}, Dims{1}));
  return TensorView(storage.data(), t.dtype(), Device::cpu(), t.shape(), t.strides());
}

/// Every value x of t (a host floating tensor (b, l, h, d), checked for rank and unit last stride before) satisfies
/// valid(x) (x as double), else an ssm::Error naming `name`, `expected`, the value and its index.
template <class Valid>
void check_values(const Checker& c, const char* name, const TensorView& t, Valid&& valid, const char* expected) {
  visit_floating(t.dtype(), name, [&](auto tag) {
    using E = decltype(tag);
    const E* base = static_cast<const E*>(t.data());
    for (index_t bi = 0; bi < t.size(0); ++bi)
      for (index_t ti = 0; ti < t.size(1); ++ti)
        for (index_t hh = 0; hh < t.size(2); ++hh) {
          const E* row = base + bi * t.stride(0) + ti * t.stride(1) + hh * t.stride(2);
          for (index_t i = 0; i < t.size(3); ++i) {
            double x;
            if constexpr (std::is_same_v<E, double>) x = row[i];
            else x = static_cast<double>(to_float(row[i]));
            if (!valid(x)) c.require(false, name, expected, ", got ", x, " at (", bi, ", ", ti, ", ", hh, ", ", i, ")");
          }
        }
  });
}

}  // namespace ssm::detail
