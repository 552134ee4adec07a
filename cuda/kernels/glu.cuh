// The gated linear unit (core/params/dense.hpp's GluParams): y[r, c] = z[r, c] σ(z[r, h + c]), one thread per output.
// In place over z's first half is safe: each thread reads its two inputs, then writes its own output.
#pragma once

#include "common.cuh"
#include "ssm/core/params/dense.hpp"

namespace ssm::kernels {

/// Threads per block of glu_kernel.
inline constexpr int kGluThreads = 256;

/// Grid ceil(rows · h / kThreads), block kThreads; thread k is output (k / h, k mod h).
template <class T, int kThreads>
__global__ void __launch_bounds__(kThreads) glu_kernel(GluParams p) {
  const index_t k = static_cast<index_t>(blockIdx.x) * kThreads + static_cast<index_t>(threadIdx.x);
  if (k >= p.rows * p.dim) return;
  const index_t r = k / p.dim, c = k % p.dim;
  const T* z = static_cast<const T*>(p.z) + r * p.z_row_stride;
  const T a = z[c], g = z[p.dim + c];
  static_cast<T*>(p.y)[r * p.y_row_stride + c] = GluParams::gate(a, g);
}

}  // namespace ssm::kernels
