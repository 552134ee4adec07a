// The matrix-product flops of the chunked SSD algorithm, the count both SSD benchmarks (bench_ssd on the CPU,
// bench_cuda_ssd on a GPU) divide by their time.
#pragma once

#include <algorithm>

#include "../tests/conformance/ssd_problem.hpp"

namespace ssd_bench {

using ssm::index_t;

/// What is counted: the forward, the backward that recomputes what the forward does not keep (the CUDA backward
/// always; the CPU one without SsdSaved), or the CPU backward from the forward's kept chunk states and y.
enum class SsdPass { forward, backward, backward_from_saved };

/// The flops of the chunked algorithm's matrix products (2 per multiply-add; triangular ones counted as their
/// triangle), per chunk of q steps: forward 2 q p n (chunk state) + 2 q p n (inter-chunk output) + q (q + 1) p
/// (chunk-local, triangular) per head, and 2 q² n (C Bᵀ) per group. Backward per head four q p n products (state
/// gradient E, ḡC, B ḡSᵀ, ḡB) and 2 q (q + 1) p (ḡM, Mᵀ ḡy), per group 2 q² n + 2 q (q + 1) n (C Bᵀ, ḡG B, ḡGᵀ C);
/// recomputing, also the chunk state again and, with z, y again for ḡz: the inter-chunk output and q (q + 1) p
/// (chunk-local). What the element-wise passes do is not counted.
double ssd_flops(const ssd_problem::SsdCase& c, index_t Q, SsdPass pass) {
  double f = 0;
  const double p = static_cast<double>(c.p), n = static_cast<double>(c.n), h = static_cast<double>(c.h),
               g = static_cast<double>(c.g);
  for (index_t t0 = 0; t0 < c.l; t0 += Q) {
    const double q = static_cast<double>(std::min(Q, c.l - t0));
    if (pass == SsdPass::forward) {
      f += h * (4 * q * p * n + q * (q + 1) * p) + g * 2 * q * q * n;
      continue;
    }
    f += h * (8 * q * p * n + 2 * q * (q + 1) * p) + g * (2 * q * q * n + 2 * q * (q + 1) * n);
    if (pass == SsdPass::backward) f += h * (2 * q * p * n + (c.has_z ? 2 * q * p * n + q * (q + 1) * p : 0));
  }
  return f * static_cast<double>(c.b);
}

}  // namespace ssd_bench
