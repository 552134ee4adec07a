// Decoding a sequence in pieces through anything with init_state(b) and step(x (b, t, d), state): the first
// `prefill` tokens in one call, then one token per call. Tests compare the result with the parallel forward.
#pragma once

#include <algorithm>

#include "ssm/core/tensor.hpp"

namespace ssm_test {

/// y (b, l, d) from m.step over x (b, l, d) contiguous: a prefill of `prefill` tokens (at least 1), then single tokens.
template <class Mixer>
ssm::Tensor decode_in_pieces(const Mixer& m, const ssm::Tensor& x, ssm::index_t prefill = 1) {
  const ssm::index_t b = x.size(0), l = x.size(1), d = x.size(2);
  auto state = m.init_state(b);
  ssm::Tensor y = ssm::Tensor::empty({b, l, d}, x.dtype());
  for (ssm::index_t t0 = 0; t0 < l;) {
    const ssm::index_t t = t0 == 0 ? std::clamp<ssm::index_t>(prefill, 1, l) : 1;
    ssm::Tensor xt = ssm::Tensor::empty({b, t, d}, x.dtype());
    ssm::copy(xt, x.view().narrow(1, t0, t));
    ssm::copy(y.view().narrow(1, t0, t), m.step(xt, state));
    t0 += t;
  }
  return y;
}

}  // namespace ssm_test
