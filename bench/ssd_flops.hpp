// The matrix-product flops of the chunked SSD algorithm, the count both SSD benchmarks (bench_ssd on the CPU,
// bench_cuda_ssd on a GPU) divide by their time.
#pragma once

#include <algorithm>

#include "../tests/conformance/ssd_problem.hpp"

namespace ssd_bench {

using ssm::index_t;

/// The flops of the chunked algorithm's matrix products (2 per multiply-add; triangular ones counted as their
/// triangle), per chunk of q steps: forward 2 q p n (chunk state) + 2 q p n (inter-chunk output) + q (q + 1) p
/// (chunk-local, triangular) per head, and 2 q² n (C Bᵀ) per group; backward per head six q p n products (chunk state,
/// state gradient E, inter-chunk output, ḡC, B ḡSᵀ, ḡB), 2 q (q + 1) p (ḡM, Mᵀ ḡy) and with z q (q + 1) p more (the
/// chunk-local output again), per group 2 q² n + 2 q (q + 1) n (C Bᵀ, ḡG B, ḡGᵀ C). What the element-wise passes do
/// is not counted.
double ssd_flops(const ssd_problem::SsdCase& c, index_t Q, bool backward) {
  double f = 0;
  const double p = static_cast<double>(c.p), n = static_cast<double>(c.n), h = static_cast<double>(c.h),
               g = static_cast<double>(c.g);
  for (index_t t0 = 0; t0 < c.l; t0 += Q) {
    const double q = static_cast<double>(std::min(Q, c.l - t0));
    if (!backward) {
      f += h * (4 * q * p * n + q * (q + 1) * p) + g * 2 * q * q * n;
    } else {
      f += h * (12 * q * p * n + (c.has_z ? 3 : 2) * q * (q + 1) * p) + g * (2 * q * q * n + 2 * q * (q + 1) * n);
    }
  }
  return f * static_cast<double>(c.b);
}

}  // namespace ssd_bench
