// The embedding gather (nn.Embedding; the Mamba LM's token embedding, docs/math.md §6.2): y[r] = table[ids[r]], one
// block per row, each element converted from the table's type T (f32, f64, f16, bf16) to y's type Y (f64 for an
// f64 table, f32 otherwise). Used by the embedding op's CUDA entry and the device Mamba LM.
#pragma once

#include <math.h>  // NAN

#include <type_traits>

#include "common.cuh"
#include "ssm/core/params/dense.hpp"

namespace ssm::kernels {

/// Threads per block of embedding_gather_kernel (one block per row).
inline constexpr int kEmbeddingThreads = 128;

/// Grid (rows), block kEmbeddingThreads. The launcher checks the ids against the table's rows before the launch;
/// an id outside [0, vocab) that got here anyway yields a row of NaN, never a read outside the table.
template <class Id, class T, class Y>
__global__ void __launch_bounds__(kEmbeddingThreads) embedding_gather_kernel(EmbeddingParams p) {
  const index_t row = blockIdx.x;
  const index_t id = static_cast<index_t>(static_cast<const Id*>(p.ids)[row]);
  Y* dst = static_cast<Y*>(p.y) + row * p.y_row_stride;  // (dim)
  if (id < 0 || id >= p.vocab) {
    for (index_t j = threadIdx.x; j < p.dim; j += kEmbeddingThreads) dst[j] = static_cast<Y>(NAN);
    return;
  }
  const T* src = static_cast<const T*>(p.table) + id * p.dim;  // (dim)
  for (index_t j = threadIdx.x; j < p.dim; j += kEmbeddingThreads) {
    if constexpr (std::is_same_v<T, Y>) dst[j] = src[j];
    else dst[j] = static_cast<Y>(load_float(src + j));
  }
}

}  // namespace ssm::kernels
