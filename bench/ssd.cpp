// SSD (Mamba-2; ops/ssd.hpp, docs/ssd.md) forward throughput in state updates per second, b·l·h·p·n / time, at the
// Mamba-2 shape (24 heads of 64, d_state 128, one group, b = 1, l = 2048 and 8192), f32, with D, z, dt_bias and
// softplus as the Mamba-2 block calls it: the chunked form at chunk sizes 64, 128 and 256 on 1 and 2 threads, and
// the chunked form against the token loop (SsdPath::recurrent) at short lengths (where each wins).
// Counters: updates_per_s, and updates_per_s_per_thread (the target: >= 1e10 per core).
#include <benchmark/benchmark.h>

#include <cstdint>

#include "../tests/conformance/ssd_problem.hpp"
#include "ssm/ops/ssd.hpp"

namespace {

using ssm::index_t;

ssd_problem::SsdCase mamba2_case(index_t l) {
  ssd_problem::SsdCase c;
  c.b = 1, c.l = l, c.h = 24, c.p = 64, c.g = 1, c.n = 128;
  c.has_D = c.has_z = c.has_bias = c.softplus = true;
  c.dtype = ssm::DType::f32;
  return c;
}

void run(benchmark::State& state, ssm::SsdPath path) {
  const index_t l = state.range(0), chunk = state.range(1);
  const int threads = static_cast<int>(state.range(2));
  const ssd_problem::SsdData d = ssd_problem::make_data(mamba2_case(l));
  const ssm::Tensor out = ssm::Tensor::empty(d.x.shape(), d.x.dtype());
  ssm::SsdOptions opt;
  opt.chunk_size = chunk, opt.threads = threads, opt.path = path;
  const ssm::SsdInputs in = d.inputs();
  for (auto _ : state) {
    ssm::ssd_into(in, out, std::nullopt, opt);
    benchmark::DoNotOptimize(out.data());
  }
  const double updates = static_cast<double>(d.cs.b * l * d.cs.h * d.cs.p * d.cs.n);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(updates));
  state.counters["updates_per_s"] = benchmark::Counter(updates, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["updates_per_s_per_thread"] =
      benchmark::Counter(updates / threads, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_ssd_chunked(benchmark::State& s) { run(s, ssm::SsdPath::chunked); }
void BM_ssd_recurrent(benchmark::State& s) { run(s, ssm::SsdPath::recurrent); }

// (l, chunk, threads)
BENCHMARK(BM_ssd_chunked)
    ->ArgsProduct({{2048, 8192}, {64, 128, 256}, {1, 2}})
    ->ArgNames({"l", "chunk", "threads"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
// Short sequences: the chunked form against the token loop (the loop ignores the chunk).
BENCHMARK(BM_ssd_chunked)
    ->ArgsProduct({{16, 64, 256}, {64}, {1}})
    ->ArgNames({"l", "chunk", "threads"})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_ssd_recurrent)
    ->ArgsProduct({{16, 64, 256, 2048}, {1}, {1}})
    ->ArgNames({"l", "chunk", "threads"})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
