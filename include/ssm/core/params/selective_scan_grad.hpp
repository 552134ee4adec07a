// The argument block of the selective-scan backward (Gu & Dao 2023, Mamba; docs/math.md §5.3): the
// incoming gradients and the gradient outputs, next to the forward's ScanParams. Trivially copyable.
// Complex gradients follow PyTorch's convention: grad = dL/dRe + i dL/dIm (L real).
#pragma once

#include <cstdint>

#include "ssm/core/index.hpp"

namespace ssm {

struct ScanGradParams {
  using index_t = ::ssm::index_t;

  // ---- incoming gradients ----
  const void* grad_out = nullptr;  // (b, d, l) input dtype, unit stride along l
  index_t grad_out_batch_stride = 0, grad_out_d_stride = 0;
  const void* grad_last_state = nullptr;  // (b, d, n) or (n_seqs, d, n), state dtype, or null (zero)
  index_t grad_last_batch_stride = 0, grad_last_d_stride = 0, grad_last_n_stride = 0;

  // ---- gradient outputs: contiguous, each with the shape and dtype of its input; null when absent ----
  void* grad_u = nullptr;              // (b, d, l) input dtype
  void* grad_delta = nullptr;          // (b, d, l) input dtype
  void* grad_z = nullptr;              // (b, d, l) input dtype
  void* grad_A = nullptr;              // (d, n) weight dtype (complex when A is)
  void* grad_B = nullptr;              // variable: (b, g, n, l) dtype of B; fixed: (d, n) weight dtype
  void* grad_C = nullptr;              // like grad_B
  void* grad_D = nullptr;              // (d) weight dtype
  void* grad_delta_bias = nullptr;     // (d) weight dtype
  void* grad_initial_state = nullptr;  // (b, d, n) or (n_seqs, d, n) state dtype
};

}  // namespace ssm
