// Benchmark of the selective-scan backward (reverse scan with chunk recompute, docs/math.md §5.3) against the
// optimized forward at the Mamba-130m shape (b = 1, d = 1536, n = 16, l = 2048, f32, D, z, delta_bias,
// softplus, variable B/C). Reports state updates per second (b·d·l·n / time) and, in one benchmark,
// the ratio backward / forward measured in the same iterations (issue 5 asks for at most 3).
#include <benchmark/benchmark.h>

#include <chrono>
#include <random>
#include <vector>

#include "../tests/conformance/scan_problem.hpp"
#include "ssm/core.hpp"
#include "ssm/ops/selective_scan.hpp"

namespace {

using ssm::index_t;
using ssm::Tensor;

/// The problem from the one scan problem generator (tests/conformance/scan_problem.hpp), and an incoming gradient.
struct Problem {
  index_t b = 1, d = 1536, n = 16, l = 2048;
  scan_problem::ScanData data;
  Tensor grad_out;  // (b, d, l)
  ssm::SelectiveScanInputs in;

  Problem() {
    scan_problem::ScanCase c;
    c.b = b, c.d = d, c.l = l, c.n = n, c.g = 1;  // B, C (b, 1, n, l)
    c.has_D = c.has_z = c.has_bias = c.softplus = true;
    c.dtype = ssm::DType::f32;
    c.seed = 7;
    data = scan_problem::make_data(c);
    in = data.inputs();
    std::mt19937_64 rng(8);
    grad_out = Tensor::empty({b, d, l}, ssm::DType::f32);
    std::uniform_real_distribution<float> dist(-1, 1);
    for (index_t i = 0; i < grad_out.numel(); ++i) grad_out.data_as<float>()[i] = dist(rng);
  }
  double updates() const { return static_cast<double>(b * d * l * n); }
};

Problem& problem() {
  static Problem p;
  return p;
}

ssm::SelectiveScanOptions options(int threads) {
  ssm::SelectiveScanOptions o;
  o.num_threads = threads;
  return o;
}

void BM_SelectiveScanForward(benchmark::State& state) {
  Problem& p = problem();
  const auto o = options(static_cast<int>(state.range(0)));
  std::string path;
  for (auto _ : state) {
    auto r = ssm::selective_scan(p.in, o);
    benchmark::DoNotOptimize(r.out.data());
    path = r.path;
  }
  state.SetLabel(path);
  state.counters["updates_per_s"] = benchmark::Counter(p.updates(), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_SelectiveScanBackward(benchmark::State& state) {
  Problem& p = problem();
  const auto o = options(static_cast<int>(state.range(0)));
  std::string path;
  for (auto _ : state) {
    auto g = ssm::selective_scan_backward(p.in, p.grad_out, std::nullopt, o);
    benchmark::DoNotOptimize(g.grad_u.data());
    path = g.path;
  }
  state.SetLabel(path);
  state.counters["updates_per_s"] = benchmark::Counter(p.updates(), benchmark::Counter::kIsIterationInvariantRate);
}

/// Forward then backward in each iteration, each timed: the ratio comes from the same run and load.
void BM_BackwardOverForward(benchmark::State& state) {
  Problem& p = problem();
  const auto o = options(static_cast<int>(state.range(0)));
  double t_fwd = 0, t_bwd = 0;
  using clock = std::chrono::steady_clock;
  for (auto _ : state) {
    const auto t0 = clock::now();
    auto r = ssm::selective_scan(p.in, o);
    benchmark::DoNotOptimize(r.out.data());
    const auto t1 = clock::now();
    auto g = ssm::selective_scan_backward(p.in, p.grad_out, std::nullopt, o);
    benchmark::DoNotOptimize(g.grad_u.data());
    const auto t2 = clock::now();
    t_fwd += std::chrono::duration<double>(t1 - t0).count();
    t_bwd += std::chrono::duration<double>(t2 - t1).count();
  }
  state.counters["fwd_ms"] = 1e3 * t_fwd / static_cast<double>(state.iterations());
  state.counters["bwd_ms"] = 1e3 * t_bwd / static_cast<double>(state.iterations());
  state.counters["bwd_over_fwd"] = t_bwd / t_fwd;
}

BENCHMARK(BM_SelectiveScanForward)->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_SelectiveScanBackward)->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_BackwardOverForward)->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
