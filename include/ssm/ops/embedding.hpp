// The embedding op (nn.Embedding; the Mamba LM's token embedding, docs/math.md §6.2): y[r] = table[ids[r]], the rows
// converted to y's dtype (f32; f64 for an f64 table). CPU tensors: row copies / 16-bit row conversions
// (cpu::load_row), or the reference on request. CUDA tensors: the backend's embedding_forward entry, an ssm::Error
// while it is not implemented there. An id outside [0, vocab) is an ssm::Error naming 'ids' (checked on the CPU;
// on CUDA the entry must check it).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#include "ssm/core/backend.hpp"
#include "ssm/core/check.hpp"
#include "ssm/core/params/dense.hpp"
#include "ssm/core/scalar.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/convert.hpp"
#include "ssm/reference/embedding.hpp"

namespace ssm {

enum class EmbeddingPath { automatic, reference };

namespace detail {

/// ids (rows) i32 | i64 contiguous; table (vocab, dim) f32 | f64 | f16 | bf16 contiguous.
inline EmbeddingParams check_embedding(const Checker& c, const TensorView& ids, const TensorView& table,
                                       Device& device) {
  c.defined("ids", ids).defined("table", table).rank("ids", ids, 1).rank("table", table, 2);
  device = dispatch_device(c, {{"ids", ids}, {"table", table}});
  c.dtype_in("ids", ids, {DType::i32, DType::i64}).contiguous("ids", ids);
  c.floating("table", table).contiguous("table", table);
  EmbeddingParams p;
  p.rows = ids.size(0), p.vocab = table.size(0), p.dim = table.size(1);
  p.ids = ids.data(), p.ids_dtype = ids.dtype(), p.table = table.data(), p.table_dtype = table.dtype();
  p.dtype = compute_dtype(table.dtype());
  if (device.is_cpu())
    for (index_t r = 0; r < p.rows; ++r) {
      const std::int64_t id = reference::embedding_id(p, r);
      c.require(id >= 0 && id < p.vocab, "ids", "token id ", id, " at position ", r, " is outside [0, ", p.vocab,
                ") (the table's rows)");
    }
  return p;
}

}  // namespace detail

/// y (rows, dim) = table[ids]: y in compute_dtype(table's dtype), unit stride along dim, on the ids' device.
/// Returns the path that ran: "cpu", "reference" or "cuda".
inline std::string embedding_into(const TensorView& ids, const TensorView& table, const TensorView& y,
                                  EmbeddingPath path = EmbeddingPath::automatic) {
  Checker c("embedding");
  Device device;
  EmbeddingParams p = detail::check_embedding(c, ids, table, device);
  c.defined("y", y).dtype("y", y, p.dtype).shape("y", y, {p.rows, p.dim}).unit_stride("y", y, 1).device("y", y, device);
  p.y = y.data(), p.y_row_stride = y.stride(0);
  if (device.is_cuda()) {
    backend_entry(c.op(), device, &DeviceBackend::embedding_forward)(p, nullptr);
    return "cuda";
  }
  if (path == EmbeddingPath::reference) {
    reference::embedding_forward(p);
    return "reference";
  }
  visit_floating(p.table_dtype, "embedding", [&](auto tag) {
    using T = decltype(tag);
    using Y = compute_t<T>;
    const T* table_data = static_cast<const T*>(p.table);
    for (index_t r = 0; r < p.rows; ++r) {
      const T* row = table_data + reference::embedding_id(p, r) * p.dim;  // (dim)
      Y* dst = static_cast<Y*>(p.y) + r * p.y_row_stride;                // (dim)
      if constexpr (std::is_same_v<T, Y>) std::copy_n(row, p.dim, dst);
      else cpu::load_row(row, p.dim, dst);
    }
  });
  return "cpu";
}

/// table[ids] (rows, dim), allocated on the ids' device.
inline Tensor embedding(const TensorView& ids, const TensorView& table, EmbeddingPath path = EmbeddingPath::automatic) {
  Checker c("embedding");
  Device device;
  const EmbeddingParams p = detail::check_embedding(c, ids, table, device);
  Tensor y = Tensor::empty({p.rows, p.dim}, p.dtype, device);  // (rows, dim)
  embedding_into(ids, table, y, path);
  return y;
}

}  // namespace ssm
