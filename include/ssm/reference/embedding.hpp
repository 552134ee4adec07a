// Reference embedding lookup (nn.Embedding; the Mamba LM's token embedding, docs/math.md §6.2): y[r] = table[ids[r]]
// element by element, converted to y's dtype. Ids are checked by the op before this runs.
#pragma once

#include "ssm/core/params/dense.hpp"
#include "ssm/reference/elements.hpp"

namespace ssm::reference {

/// Token id r of p (i32 or i64) as int64.
inline std::int64_t embedding_id(const EmbeddingParams& p, std::int64_t r) {
  return p.ids_dtype == DType::i32 ? static_cast<const std::int32_t*>(p.ids)[r]
                                   : static_cast<const std::int64_t*>(p.ids)[r];
}

inline void embedding_forward(const EmbeddingParams& p) {
  for (std::int64_t r = 0; r < p.rows; ++r) {
    const std::int64_t id = embedding_id(p, r);
    for (std::int64_t k = 0; k < p.dim; ++k)
      store_real(p.y, p.dtype, r * p.y_row_stride + k, load_real(p.table, p.table_dtype, id * p.dim + k));
  }
}

}  // namespace ssm::reference
