// Benchmark of the selective-scan backward (reverse scan with chunk recompute, MATH.md §5) against the
// optimized forward at the Mamba-130m shape (b = 1, d = 1536, n = 16, l = 2048, f32, D, z, delta_bias,
// softplus, variable B/C). Reports state updates per second (b·d·l·n / time) and, in one benchmark,
// the ratio backward / forward measured in the same iterations (issue 5 asks for at most 3).
#include <benchmark/benchmark.h>

#include <chrono>
#include <random>
#include <vector>

#include "ssm/core.hpp"
#include "ssm/ops/selective_scan.hpp"

namespace {

using ssm::index_t;
using ssm::Tensor;

struct Problem {
  index_t b = 1, d = 1536, n = 16, l = 2048;
  Tensor u, delta, A, B, C, D, z, delta_bias, grad_out;
  ssm::SelectiveScanInputs in;

  Problem() {
    std::mt19937 rng(7);
    const auto fill = [&](const ssm::Dims& shape, float lo, float hi) {
      std::vector<float> v(static_cast<std::size_t>(shape.product()));
      std::uniform_real_distribution<float> dist(lo, hi);
      for (float& x : v) x = dist(rng);
      return Tensor::from_vector<float>(shape, v);
    };
    u = fill({b, d, l}, -1, 1);           // (b, d, l)
    delta = fill({b, d, l}, -4, -1);      // (b, d, l) softplus(delta + bias) ~ 0.01 .. 0.3
    A = fill({d, n}, -16, -1);            // (d, n)
    B = fill({b, 1, n, l}, -1, 1);        // (b, g, n, l)
    C = fill({b, 1, n, l}, -1, 1);        // (b, g, n, l)
    D = fill({d}, -1, 1);                 // (d)
    z = fill({b, d, l}, -2, 2);           // (b, d, l)
    delta_bias = fill({d}, -1, 0);        // (d)
    grad_out = fill({b, d, l}, -1, 1);    // (b, d, l)
    in.u = u;
    in.delta = delta;
    in.A = A;
    in.B = B;
    in.C = C;
    in.D = D.view();
    in.z = z.view();
    in.delta_bias = delta_bias.view();
    in.delta_softplus = true;
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
