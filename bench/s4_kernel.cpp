// S4 kernel generation as L grows (S4 paper, Algorithm 1 vs the naive kernel): Cauchy + Woodbury at the roots
// of unity + inverse FFT, O(N L + L log L), against powers of the dense A_bar, O(N² L); and the S4D Vandermonde
// kernel, O(N L).  One channel, HiPPO-LegS DPLR, N = 64, double.
//   bench_s4_kernel                                 # L = 64 .. 16384
//   bench_s4_kernel --benchmark_filter=Long         # adds L up to 2^20 for the Cauchy and Vandermonde kernels
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 + AVX-512 false positive in Eigen (hippo.hpp)
#endif
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "ssm/math/hippo.hpp"
#include "ssm/math/s4_kernel.hpp"

namespace {

ssm::s4::DPLRSSM legs(int N) {
  const auto d = ssm::hippo::dplr_legs(N);
  ssm::s4::DPLRSSM p;
  p.Lambda = d.Lambda.transpose();
  p.P = d.P.transpose();
  p.B = d.B.transpose();
  p.C = Eigen::MatrixXcd::Constant(1, N / 2, ssm::s4::cd(0.3, -0.2));
  p.Delta = Eigen::VectorXd::Constant(1, 1e-2);
  return p;
}

void BM_KernelCauchy(benchmark::State& state) {
  const long L = state.range(0);
  const auto p = legs(64);  // p.C plays C̃ (the kernel's cost does not depend on its value)
  for (auto _ : state) benchmark::DoNotOptimize(ssm::s4::s4_kernel_cauchy<double>(p, L));
  state.SetItemsProcessed(state.iterations() * L);
  state.counters["L"] = static_cast<double>(L);
}

void BM_KernelPowers(benchmark::State& state) {
  const long L = state.range(0);
  const auto p = legs(64);
  for (auto _ : state) benchmark::DoNotOptimize(ssm::s4::s4_kernel_powers(p, L));
  state.SetItemsProcessed(state.iterations() * L);
  state.counters["L"] = static_cast<double>(L);
}

void BM_KernelVandermonde(benchmark::State& state) {
  const long L = state.range(0);
  const auto p = legs(64);
  const ssm::s4::DiagonalSSM q{p.Lambda, p.B, p.C, p.Delta};
  for (auto _ : state) benchmark::DoNotOptimize(ssm::s4::s4d_kernel_vandermonde<double>(q, L, ssm::Discretization::zoh));
  state.SetItemsProcessed(state.iterations() * L);
  state.counters["L"] = static_cast<double>(L);
}

BENCHMARK(BM_KernelCauchy)->RangeMultiplier(4)->Range(64, 16384)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_KernelPowers)->RangeMultiplier(4)->Range(64, 16384)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_KernelVandermonde)->RangeMultiplier(4)->Range(64, 16384)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_KernelCauchy)->Name("Long/BM_KernelCauchy")->RangeMultiplier(4)->Range(65536, 1 << 20)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_KernelVandermonde)->Name("Long/BM_KernelVandermonde")->RangeMultiplier(4)->Range(65536, 1 << 20)->Unit(benchmark::kMillisecond);

}  // namespace

// Default run skips the Long/ benchmarks; any --benchmark_filter given on the command line replaces that.
int main(int argc, char** argv) {
  std::vector<char*> args(argv, argv + argc);
  std::string skip_long = "--benchmark_filter=-Long";
  bool has_filter = false;
  for (int i = 1; i < argc; ++i) has_filter |= std::string(argv[i]).rfind("--benchmark_filter", 0) == 0;
  if (!has_filter) args.push_back(skip_long.data());
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
