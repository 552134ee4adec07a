// Reference long convolution (the formula in core/params/long_conv.hpp): the gates, the direct O(l²) causal sums, the
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
        auto at = [&](const void* v, const std::int64_t (&s)[2], std::int64_t step) {
          return load_real(v, p.dtype, bi * s[0] + step * s[1] + c);
        };
        auto u = [&](std::int64_t s) {  // g_in ⊙ x
          return p.gate_in ? at(p.gate_in, p.gate_in_strides, s) * at(p.x, p.x_strides, s) : at(p.x, p.x_strides, s);
        };
        double acc = p.D ? load_real(p.D, p.dtype, c) * u(t) : 0.0;
        for (std::int64_t j = 0; j <= t; ++j) acc += load_real(p.K, p.dtype, c * p.filter_len + j) * u(t - j);
        const double g = p.gate_out ? at(p.gate_out, p.gate_out_strides, t) : 1.0;
        store_real(p.y, p.dtype, bi * p.y_strides[0] + t * p.y_strides[1] + c, g * p.activate(acc));
      }
}

}  // namespace ssm::reference
