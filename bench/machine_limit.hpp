// The machine limit of a selective-scan state update: the one definition every benchmark reports against
// (bench_selective_scan's `machine_limit` / `frac_of_limit`, bench_scan_vs_attention's scan_throughput entry and
// the table tools/bench_report.py prints from it).
//
// A scan update needs one exp and at least three FMA-class operations (Delta A, a h + Delta B u, C . h). At
// start-up, on one thread, the program measures the throughput E of the library's vector exp2 (evaluations / s /
// core) and F of independent vector FMAs (lane-FMAs / s / core); the limit is
//     per_core = 1 / (1/E + 3/F)   state updates / s / core,
// and a run on t threads is compared with t * per_core (frac_of_limit = updates per second / (t * per_core)).
// Both rates are measured on the thread's CPU time, best of 3, so other processes on a shared machine do not
// lower the limit (they lower the measured rate instead, which is wall time).
#pragma once

#include <benchmark/benchmark.h>

#include <time.h>

#include <algorithm>
#include <cstdint>

#include "ssm/cpu/simd.hpp"

namespace ssm_bench {

/// CPU time of this thread in seconds.
inline double thread_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

/// CPU time of the whole process (all its threads, ended ones included) in seconds.
inline double process_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

/// Keeps v alive without taking its address: DoNotOptimize on an element of an accumulator array makes the array
/// addressable, and GCC then stored all 12 accumulators to the stack on every iteration once measure_fma_rate was
/// inlined into a benchmark (bench_selective_scan, AVX-512: 2.0e10 lane-FMAs / s read instead of 5.8e10, the
/// stores being the bottleneck), which lowered the limit by a third.
template <class V>
inline void keep(V v) {
  V sink = v;
  benchmark::DoNotOptimize(sink);
}

/// Lane-FMAs per second on one core: 12 independent accumulator chains (covers latency 4 x 2 ports).
/// noinline, like measure_exp2_rate: the loop compiles the same whatever the caller.
[[gnu::noinline]] inline double measure_fma_rate() {
  namespace simd = ssm::cpu::simd;
  using V = simd::Vec<float>;
  constexpr int K = 12;
  V acc[K];
  for (int k = 0; k < K; ++k) acc[k] = simd::broadcast(0.001f * static_cast<float>(k));
  const V a = simd::broadcast(0.999999f), b = simd::broadcast(1e-7f);
  const std::int64_t iters = 4'000'000;
  const double t0 = thread_seconds();
  for (std::int64_t i = 0; i < iters; ++i)
    for (int k = 0; k < K; ++k) acc[k] = simd::fma(acc[k], a, b);
  const double s = thread_seconds() - t0;
  V sum = acc[0];
  for (int k = 1; k < K; ++k) sum += acc[k];
  keep(sum);
  return static_cast<double>(iters) * K * simd::lanes<float> / s;
}

/// exp2 evaluations per second on one core (inputs in the range of Delta A log2(e) of a Mamba scan).
[[gnu::noinline]] inline double measure_exp2_rate() {
  namespace simd = ssm::cpu::simd;
  using V = simd::Vec<float>;
  constexpr int K = 8;
  constexpr int W = simd::lanes<float>;
  constexpr int M = 64;  // input vectors, cycled (L1-resident)
  alignas(64) float x[M * W];
  for (int i = 0; i < M * W; ++i) x[i] = -0.01f * static_cast<float>(i % 97);
  benchmark::DoNotOptimize(x);
  V acc[K] = {};
  const std::int64_t iters = 2'000'000;
  const double t0 = thread_seconds();
  for (std::int64_t i = 0; i < iters; ++i)
    for (int k = 0; k < K; ++k) acc[k] += simd::exp2(simd::load(x + ((i * K + k) % M) * W));
  const double s = thread_seconds() - t0;
  V sum = acc[0];
  for (int k = 1; k < K; ++k) sum += acc[k];
  keep(sum);
  return static_cast<double>(iters) * K * W / s;
}

struct MachineLimit {
  double fma_rate = 0;   ///< F, lane-FMAs / s / core
  double exp2_rate = 0;  ///< E, exp2 evaluations / s / core
  double per_core = 0;   ///< 1 / (1/E + 3/F), state updates / s / core
};

/// Measured once per process (about 0.5 s), on the calling thread.
inline const MachineLimit& machine_limit() {
  static const MachineLimit limit = [] {
    MachineLimit m;
    for (int r = 0; r < 3; ++r) {  // best of 3: the machine is shared, take the least disturbed measurement
      m.fma_rate = std::max(m.fma_rate, measure_fma_rate());
      m.exp2_rate = std::max(m.exp2_rate, measure_exp2_rate());
    }
    m.per_core = 1.0 / (1.0 / m.exp2_rate + 3.0 / m.fma_rate);
    return m;
  }();
  return limit;
}

/// The limit for a run on `threads` threads (one core each): threads * per_core state updates / s.
inline double limit_for(int threads) { return machine_limit().per_core * threads; }

/// The limit's own counters, the same in every benchmark: machine_limit (updates / s / core), exp2_rate, fma_rate.
/// Each benchmark adds frac_of_limit = its state updates per second / limit_for(threads).
inline void set_limit_counters(benchmark::State& state) {
  const MachineLimit& m = machine_limit();
  state.counters["machine_limit"] = m.per_core;
  state.counters["exp2_rate"] = m.exp2_rate;
  state.counters["fma_rate"] = m.fma_rate;
}

}  // namespace ssm_bench
