// What the CUDA benchmarks share: the skip when no GPU is usable, the DRAM bandwidth of the device's properties,
// and timing by CUDA events around each iteration (manual time).
#pragma once

#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "ssm/core/backend.hpp"

namespace cuda_bench {

/// True when a GPU is usable; otherwise the benchmark is skipped with the runtime's message.
inline bool usable(benchmark::State& state) {
  if (ssm::backends().cuda_usable) return true;
  state.SkipWithError(("no usable GPU: " + ssm::backends().cuda_status).c_str());
  return false;
}

/// Peak DRAM bandwidth of device 0 from its properties (memory clock x bus width x 2 for DDR), bytes/s; 0 if unknown.
inline double peak_bandwidth() {
  int clock_khz = 0, bus_bits = 0;
  if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, 0) != cudaSuccess ||
      cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0) != cudaSuccess)
    return 0;
  return 2.0 * clock_khz * 1e3 * (bus_bits / 8.0);
}

/// Times `call` with CUDA events around each iteration (after one warm-up call) as the iteration's manual time;
/// returns the fastest iteration, seconds.
template <class F>
double time_with_events(benchmark::State& state, F&& call) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  call();  // warm-up (pools and caches grow here)
  cudaDeviceSynchronize();
  double best = 1e30;
  for (auto _ : state) {
    cudaEventRecord(start);
    call();
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    state.SetIterationTime(ms * 1e-3);
    best = std::min(best, ms * 1e-3);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return best;
}

}  // namespace cuda_bench
