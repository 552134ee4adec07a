// The backward of SSD stage 3 (state_passing.hpp; docs/math.md §8.4): the reverse scan over one sequence's chunks of
// one head. With H_in[c + 1] = a_c H_in[c] + S_c (a_c = exp(cs_last of c)) and E_c the gradient the chunk's own
// outputs give its entering state (chunk_output_backward.hpp), from ḡH = ḡ(final state):
//   for c = last .. 0:  ḡS_c = ḡH,   ḡa_c = ⟨ḡH, H_in[c]⟩,   ḡH ← a_c ḡH + E_c;
// what is left in ḡH is the initial state's gradient. ḡa_c a_c is then ḡcs_last of chunk c.
#pragma once

#include <cstdint>

#include "ssm/cpu/ssd/chunks.hpp"

namespace ssm::cpu::ssd {

/// grads: the sequence's chunks' E_c for this head (each (p, n), `stride` apart), replaced by ḡS_c; states: their
/// H_in[c] (same layout); decay[c] (stride decay_stride) a_c; gdecay[c] (same stride) receives ḡa_c a_c. dH (p, n)
/// holds ḡ(final state) on entry and ḡ(initial state) on return.
template <class T>
void state_passing_backward(T* grads, const T* states, std::int64_t n_chunks, std::int64_t stride, const T* decay,
                            double* gdecay, std::int64_t decay_stride, Eigen::Map<Matrix<T>> dH) {
  const std::int64_t size = dH.size();
  T* SSM_RESTRICT d = dH.data();
  for (std::int64_t c = n_chunks - 1; c >= 0; --c) {
    T* SSM_RESTRICT E = grads + c * stride;
    const T* SSM_RESTRICT H = states + c * stride;
    const T a = decay[c * decay_stride];
    double ga = 0;
    for (std::int64_t k = 0; k < size; ++k) {  // one pass: E_c <- ḡS_c = ḡH, ḡH <- a ḡH + E_c
      const T e = E[k];
      E[k] = d[k];
      ga += static_cast<double>(d[k]) * static_cast<double>(H[k]);
      d[k] = a * d[k] + e;
    }
    gdecay[c * decay_stride] = ga * static_cast<double>(a);
  }
}

}  // namespace ssm::cpu::ssd
