// Reference long convolution (the formula in core/params/long_conv.hpp): the direct O(l²) causal sums in double, the
// skip term and the activation in double, each output rounded once to its dtype.
#pragma once

#include <cstdint>

#include "ssm/core/params/long_conv.hpp"
#include "ssm/reference/elements.hpp"

namespace ssm::reference {

inline void long_conv_forward(const LongConvParams& p) {
  for (std::int64_t bi = 0; bi < p.batch; ++bi)
    for (std::int64_t c = 0; c < p.channels; ++c)
      for (std::int64_t t = 0; t < p.seqlen; ++t) {
        auto x_at = [&](std::int64_t s) { return load_real(p.x, p.dtype, bi * p.x_strides[0] + s * p.x_strides[1] + c); };
        double acc = p.D ? load_real(p.D, p.dtype, c) * x_at(t) : 0.0;
        for (std::int64_t j = 0; j <= t; ++j) acc += load_real(p.K, p.dtype, c * p.filter_len + j) * x_at(t - j);
        store_real(p.y, p.dtype, bi * p.y_strides[0] + t * p.y_strides[1] + c, p.activate(acc));
      }
}

}  // namespace ssm::reference
