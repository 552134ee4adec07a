// SSD (Mamba-2; ops/ssd.hpp, docs/ssd.md) throughput in state updates per second, b·l·h·p·n / time, at the Mamba-2
// shape (24 heads of 64, d_state 128, one group, b = 1, l = 2048 and 8192), f32, with D, z, dt_bias and softplus as
// the Mamba-2 block calls it:
//   - the chunked forward at chunk sizes 64, 128 and 256 on 1 and 2 threads, and at 128 keeping what the backward
//     reads (BM_ssd_chunked_saving: SsdSaved, fresh per call or reused);
//   - the chunked forward against the token loop (SsdPath::recurrent) at short lengths (where each wins);
//   - the chunked backward (ssm::ssd_backward, chunk 128) on 1 and 2 threads, with its time over the forward's:
//     saved:0 recomputes the chunk states and y; saved:1 reads what the forward kept (SsdSaved, as the Mamba-2
//     block's backward does), its forward timed keeping them (into one reused SsdSaved);
//   - an Eigen f32 GEMM of the stages' shape (p × Q by Q × n, 64 × 128 by 128 × 128), the machine's GEMM rate
//     (bench/gemm_rate.hpp, shared with bench_linear_attention).
// Counters: updates_per_s; updates_per_s_per_thread (the forward target: >= 1e10 per core); flops_per_s, the
// matrix-product flops the chunked algorithm needs (bench/ssd_flops.hpp) over the time; gemm_fraction, that rate per
// thread over the single-thread GEMM rate measured in this binary; bwd_over_fwd (the backward's best time over the
// forward's best, measured in the same run; the target: <= 3).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>
#include <vector>

#include "../tests/conformance/ssd_problem.hpp"
#include "gemm_rate.hpp"
#include "ssd_flops.hpp"
#include "ssm/ops/ssd.hpp"

namespace {

using ssm::index_t;
using Clock = std::chrono::steady_clock;
using bench_gemm::gemm_rate;
using bench_gemm::GemmBatch;

ssd_problem::SsdCase mamba2_case(index_t l) {
  ssd_problem::SsdCase c;
  c.b = 1, c.l = l, c.h = 24, c.p = 64, c.g = 1, c.n = 128;
  c.has_D = c.has_z = c.has_bias = c.softplus = true;
  c.dtype = ssm::DType::f32;
  return c;
}

void BM_eigen_gemm_f32(benchmark::State& state) {
  GemmBatch b;
  double flops = 0;
  for (auto _ : state) flops = b.run();
  state.counters["flops_per_s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["gemm_rate_best"] = gemm_rate();
}

/// chunk <= 0: the token loop (no flops counters: it does no matrix products). seconds: the loop's time, measured by
/// the caller (gemm_fraction is a plain ratio, not a rate).
void set_counters(benchmark::State& state, const ssd_problem::SsdCase& c, index_t chunk, int threads,
                  ssd_bench::SsdPass pass, double seconds) {
  const double updates = static_cast<double>(c.b * c.l * c.h * c.p * c.n);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(updates));
  state.counters["updates_per_s"] = benchmark::Counter(updates, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["updates_per_s_per_thread"] =
      benchmark::Counter(updates / threads, benchmark::Counter::kIsIterationInvariantRate);
  if (chunk <= 0) return;
  const double flops = ssd_bench::ssd_flops(c, chunk, pass);
  state.counters["flops_per_s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["gemm_fraction"] =
      flops * static_cast<double>(state.iterations()) / seconds / threads / gemm_rate();
}

/// The forward on `path`; with `save`, keeping what the backward reads: into one SsdSaved passed to every call (its
/// tensors reused, as a training loop that keeps one per layer) when the benchmark's 4th argument (reuse) is 1, else
/// into a fresh one per call (allocated and freed, its pages faulted in each time).
void run(benchmark::State& state, ssm::SsdPath path, bool save = false) {
  const index_t l = state.range(0), chunk = state.range(1);
  const int threads = static_cast<int>(state.range(2));
  const ssd_problem::SsdData d = ssd_problem::make_data(mamba2_case(l));
  const ssm::Tensor out = ssm::Tensor::empty(d.x.shape(), d.x.dtype());
  ssm::SsdOptions opt;
  opt.chunk_size = chunk, opt.threads = threads, opt.path = path;
  const ssm::SsdInputs in = d.inputs();
  gemm_rate();
  const auto start = Clock::now();
  const bool reuse = save && state.range(3) != 0;
  ssm::SsdSaved kept;
  for (auto _ : state) {
    if (!reuse) kept = {};
    ssm::ssd_into(in, out, std::nullopt, opt, save ? &kept : nullptr);
    benchmark::DoNotOptimize(out.data());
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  set_counters(state, d.cs, path == ssm::SsdPath::recurrent ? 0 : chunk, threads, ssd_bench::SsdPass::forward,
               seconds);
}

void BM_ssd_chunked(benchmark::State& s) { run(s, ssm::SsdPath::chunked); }
void BM_ssd_recurrent(benchmark::State& s) { run(s, ssm::SsdPath::recurrent); }
void BM_ssd_chunked_saving(benchmark::State& s) { run(s, ssm::SsdPath::chunked, true); }

/// The chunked backward for a random grad_out (no gradient of the final state, as in training), gradients allocated
/// by the op as a caller gets them; with `saved`, from what the forward kept. bwd_over_fwd: its best iteration over
/// the best of 5 forward calls (keeping SsdSaved with `saved`), timed here.
void BM_ssd_backward(benchmark::State& state) {
  const index_t l = state.range(0), chunk = state.range(1);
  const int threads = static_cast<int>(state.range(2));
  const bool saved = state.range(3) != 0;
  const ssd_problem::SsdData d = ssd_problem::make_data(mamba2_case(l));
  std::mt19937_64 rng(5);
  const ssm::Tensor grad_out = ssd_problem::uniform(rng, d.x.shape(), d.x.dtype(), -1, 1);
  const ssm::Tensor out = ssm::Tensor::empty(d.x.shape(), d.x.dtype());
  ssm::SsdOptions opt;
  opt.chunk_size = chunk, opt.threads = threads, opt.path = ssm::SsdPath::chunked;
  const ssm::SsdInputs in = d.inputs();
  gemm_rate();
  double fwd = 1e30, bwd = 1e30;
  ssm::SsdSaved kept;  // one for every call, its tensors reused (BM_ssd_chunked_saving/reuse:1)
  for (int r = 0; r < 6; ++r) {  // the first a warm-up
    const auto t0 = Clock::now();
    ssm::ssd_into(in, out, std::nullopt, opt, saved ? &kept : nullptr);
    if (r > 0) fwd = std::min(fwd, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  double seconds = 0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    ssm::SsdGrads g = ssm::ssd_backward(in, grad_out, opt, saved ? &kept : nullptr);
    benchmark::DoNotOptimize(g.grad_x.data());
    const double t = std::chrono::duration<double>(Clock::now() - t0).count();
    bwd = std::min(bwd, t), seconds += t;
  }
  set_counters(state, d.cs, chunk, threads,
               saved ? ssd_bench::SsdPass::backward_from_saved : ssd_bench::SsdPass::backward, seconds);
  state.counters["bwd_over_fwd"] = bwd / fwd;
}

BENCHMARK(BM_eigen_gemm_f32)->Unit(benchmark::kMillisecond)->UseRealTime();
// (l, chunk, threads)
BENCHMARK(BM_ssd_chunked)
    ->ArgsProduct({{2048, 8192}, {64, 128, 256}, {1, 2}})
    ->ArgNames({"l", "chunk", "threads"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_ssd_chunked_saving)
    ->ArgsProduct({{2048, 8192}, {128}, {1, 2}, {0, 1}})
    ->ArgNames({"l", "chunk", "threads", "reuse"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_ssd_backward)
    ->ArgsProduct({{2048, 8192}, {128}, {1, 2}, {0, 1}})
    ->ArgNames({"l", "chunk", "threads", "saved"})
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
