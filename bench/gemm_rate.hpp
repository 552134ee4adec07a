// The machine's single-thread f32 GEMM rate, measured in the benchmark binary that divides by it: Eigen products of
// the chunked mixers' shape, (64 × 128)(128 × 128), as SSD's stages and the linear-attention family's chunks at
// dk = dv = 128 run them. bench_ssd and bench_linear_attention report gemm_fraction against it.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <vector>

#include "ssm/core/macros.hpp"
SSM_EXTERNAL_INCLUDE_BEGIN
#include <Eigen/Core>
SSM_EXTERNAL_INCLUDE_END

namespace bench_gemm {

using MatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// One single-thread Eigen f32 GEMM batch: 48 products (64 × 128)(128 × 128). Returns its flops.
struct GemmBatch {
  static constexpr int kCount = 48;
  std::vector<MatrixF> A, B, C;
  GemmBatch() {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(-1, 1);
    for (int i = 0; i < kCount; ++i) {
      A.push_back(MatrixF::NullaryExpr(64, 128, [&] { return u(rng); }));
      B.push_back(MatrixF::NullaryExpr(128, 128, [&] { return u(rng); }));
      C.push_back(MatrixF::Zero(64, 128));
    }
  }
  double run() {
    for (std::size_t i = 0; i < kCount; ++i) C[i].noalias() = A[i] * B[i];
    benchmark::DoNotOptimize(C[0].data());
    return 2.0 * 64 * 128 * 128 * kCount;
  }
};

/// The machine's single-thread f32 GEMM rate (flops/s), measured once per binary: the best of 20 batches after a
/// warm-up.
inline double gemm_rate() {
  static const double rate = [] {
    GemmBatch b;
    b.run();
    double best = 1e30, flops = 0;
    for (int r = 0; r < 20; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      flops = b.run();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return flops / best;
  }();
  return rate;
}

}  // namespace bench_gemm
