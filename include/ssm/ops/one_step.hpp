// The decode steps of the sequence ops (linear attention, the delta rule, RWKV-7) run their token loop on a sequence
// of one step: a step's per-token tensor (b, x...) is read as the sequence op's (b, 1, x...).
#pragma once

#include <vector>

#include "ssm/core/tensor.hpp"

namespace ssm::detail {

/// t (b, x...) as (b, 1, x...), the same memory (rank >= 1; a rank-0 view is returned as it is, for the checks to
/// reject).
inline TensorView as_one_step(const TensorView& t) {
  if (t.rank() < 1) return t;
  std::vector<index_t> shape{t.size(0), 1}, strides{t.stride(0), t.stride(0)};
  for (int d = 1; d < t.rank(); ++d) shape.push_back(t.size(d)), strides.push_back(t.stride(d));
  return TensorView(const_cast<void*>(t.data()), t.dtype(), t.device(), Dims(shape), Dims(strides));
}

}  // namespace ssm::detail
