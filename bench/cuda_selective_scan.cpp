// The fused CUDA selective-scan forward (cuda/kernels/selective_scan_fwd.cuh) on a GPU: time per call (CUDA
// events), tokens/s, bytes moved at the minimum (u, delta, z read once, out written once, B and C read once per
// sequence and group) and that traffic as a fraction of the GPU's peak bandwidth. Builds everywhere; without a
// usable GPU each benchmark reports the runtime's message and is skipped.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include <ssm/ssm.hpp>

#include "../tests/conformance/scan_problem.hpp"
#include "cuda_timing.hpp"
#include "ssm/cuda/runtime.hpp"
#include "ssm/cuda/selective_scan.hpp"

namespace {

template <class In>
void BM_cuda_selective_scan_forward(benchmark::State& state) {
  const std::int64_t b = state.range(0), d = state.range(1), l = state.range(2), n = state.range(3), g = 1;
  if (!cuda_bench::usable(state)) return;
  // The one problem generator (tests/conformance/scan_problem.hpp): z, D and softplus, B and C per step; its inputs
  // moved to cuda:0 and the ScanParams built by ssm::scan_params.
  scan_problem::ScanCase c;
  c.b = b;
  c.d = d;
  c.l = l;
  c.n = n;
  c.g = g;
  c.has_D = c.has_z = c.softplus = true;
  c.dtype = ssm::dtype_of<In>();
  const scan_problem::Scan scan = scan_problem::make_scan(c, ssm::Device::cuda(0));
  const ssm::ScanParams& p = scan.prepared.p;
  const std::size_t s_in = sizeof(In);
  const std::size_t bdl = static_cast<std::size_t>(b * d * l), bgnl = static_cast<std::size_t>(b * g * n * l);
  const ssm::DType t = ssm::dtype_of<In>();
  cuda_bench::time_with_events(state, [&] { (void)ssm::cuda::selective_scan_forward(p, t); });
  const double bytes = static_cast<double>(4 * bdl * s_in + 2 * bgnl * s_in);
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes) * state.iterations());
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(b * l) * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["state_updates/s"] =
      benchmark::Counter(static_cast<double>(bdl) * static_cast<double>(n) * state.iterations(), benchmark::Counter::kIsRate);
  const double peak = cuda_bench::peak_bandwidth();
  state.counters["peak_GB/s"] = peak * 1e-9;
  state.counters["fraction_of_peak"] =
      benchmark::Counter(peak > 0 ? bytes / peak * state.iterations() : 0, benchmark::Counter::kIsRate);
}

// Mamba-130m-like shapes: d_inner 1536, n 16; a long prompt and a batch of medium ones.
BENCHMARK(BM_cuda_selective_scan_forward<float>)->Args({1, 1536, 4096, 16})->Args({8, 1536, 1024, 16})->UseManualTime();
BENCHMARK(BM_cuda_selective_scan_forward<ssm::bfloat16>)
    ->Args({1, 1536, 4096, 16})
    ->Args({8, 1536, 1024, 16})
    ->UseManualTime();

}  // namespace

BENCHMARK_MAIN();
