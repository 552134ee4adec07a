// The machine's read bandwidth: the limit a decoding step runs against. Decoding one token multiplies a vector
// by every weight matrix once, so it streams all the weights from memory per token (the tied embedding too, read
// whole by the head); its ceiling is bandwidth / weight bytes tokens/s.
//
// read_bandwidth(t) sums a 512 MiB buffer (16x the largest L3 this project has run on) with vector loads on t
// threads, each its own contiguous share, on the library's own thread pool (ssm::cpu::run_threads, the one the
// model's products run on); bytes / wall time, best of 3, measured once per thread count per process.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <vector>

#include "machine_limit.hpp"  // keep
#include "ssm/cpu/simd.hpp"
#include "ssm/cpu/threads.hpp"

namespace ssm_bench {

/// Bytes per second read from memory by `threads` threads (see the file comment).
inline double read_bandwidth(int threads) {
  static std::map<int, double> measured;
  if (auto it = measured.find(threads); it != measured.end()) return it->second;
  namespace simd = ssm::cpu::simd;
  using V = simd::Vec<float>;
  constexpr int W = simd::lanes<float>;
  const std::int64_t n = (std::int64_t{512} << 20) / static_cast<std::int64_t>(sizeof(float));
  std::unique_ptr<float, decltype(&std::free)> buf(static_cast<float*>(std::aligned_alloc(64, n * sizeof(float))),
                                                   &std::free);
  std::fill(buf.get(), buf.get() + n, 1.0f);  // touch every page before timing
  std::vector<V> sums(static_cast<std::size_t>(threads));
  double best = 0;
  for (int round = 0; round < 3; ++round) {
    const auto t0 = std::chrono::steady_clock::now();
    ssm::cpu::run_threads(threads, [&](int tid) {
      const std::int64_t begin = n * tid / threads / (4 * W) * (4 * W), end = n * (tid + 1) / threads / (4 * W) * (4 * W);
      const float* p = buf.get();
      V a0{}, a1{}, a2{}, a3{};  // four independent chains: the loads, not the adds, set the pace
      for (std::int64_t i = begin; i < end; i += 4 * W) {
        a0 += simd::load(p + i);
        a1 += simd::load(p + i + W);
        a2 += simd::load(p + i + 2 * W);
        a3 += simd::load(p + i + 3 * W);
      }
      sums[static_cast<std::size_t>(tid)] = (a0 + a1) + (a2 + a3);
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (const V& v : sums) keep(v);
    best = std::max(best, static_cast<double>(n * sizeof(float)) / s);
  }
  return measured[threads] = best;
}

}  // namespace ssm_bench
