// SSD stage 3, state passing (docs/ssd.md): the short sequential scan over one sequence's chunks of one head that
// turns each chunk's zero-start state S_c into the state entering it,
//   H_in[0] = h0,   H_in[c + 1] = exp(cs_last of c) H_in[c] + S_c,
// in place (S_c is replaced by H_in[c]); the state after the last chunk is the sequence's final state.
#pragma once

#include <cstdint>

#include "ssm/cpu/ssd/chunks.hpp"

namespace ssm::cpu::ssd {

/// states: the sequence's chunks' S_c for this head, each (p, n) contiguous, `stride` elements apart; decay[c]
/// (stride decay_stride) their exp(cs_last). H (p, n) holds h0 on entry and the final state on return.
template <class T>
void state_passing(T* states, std::int64_t n_chunks, std::int64_t stride, const T* decay, std::int64_t decay_stride,
                   Eigen::Map<Matrix<T>> H) {
  const std::int64_t size = H.size();
  T* SSM_RESTRICT h = H.data();
  for (std::int64_t c = 0; c < n_chunks; ++c) {
    T* SSM_RESTRICT S = states + c * stride;
    const T a = decay[c * decay_stride];
    for (std::int64_t k = 0; k < size; ++k) {  // one pass: S_c <- H_in[c], H <- a H + S_c
      const T s = S[k];
      S[k] = h[k];
      h[k] = a * h[k] + s;
    }
  }
}

}  // namespace ssm::cpu::ssd
