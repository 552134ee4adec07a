// The three ways to run one S4D channel over a sequence of length L (docs/math.md §1, §4): causal FFT convolution
// O(L log L), direct convolution O(L²), and the recurrence O(N L) (N/2 = 32 complex modes, as N = 64).  float.
//   bench_s4_conv                                   # L = 16 .. 16384
//   bench_s4_conv --benchmark_filter=Long           # FFT and recurrence to L = 2^20, direct to 2^17
#include <benchmark/benchmark.h>

#include <complex>
#include <random>
#include <string>
#include <vector>

#include "ssm/math/causal_conv.hpp"

namespace {

std::vector<float> signal(long L, unsigned seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> nd;
  std::vector<float> v(L);
  for (auto& x : v) x = nd(g);
  return v;
}

void BM_ConvFFT(benchmark::State& state) {
  const long L = state.range(0);
  const auto x = signal(L, 1), K = signal(L, 2);
  std::vector<float> y(L);
  ssm::fft::RealFFT<float> plan;
  for (auto _ : state) {
    ssm::causal_conv_fft(x.data(), K.data(), y.data(), L, &plan);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations() * L);
}

void BM_ConvDirect(benchmark::State& state) {
  const long L = state.range(0);
  const auto x = signal(L, 1), K = signal(L, 2);
  std::vector<float> y(L);
  for (auto _ : state) {
    ssm::causal_conv_direct(x.data(), K.data(), y.data(), L);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations() * L);
}

void BM_Recurrence(benchmark::State& state) {
  const long L = state.range(0), m = 32;
  const auto x = signal(L, 1);
  std::vector<float> y(L);
  std::vector<std::complex<float>> A_bar(m), B_bar(m), C(m), s(m);
  for (long i = 0; i < m; ++i) {
    A_bar[i] = std::exp(std::complex<float>(-0.005f, 0.03f * static_cast<float>(i)));
    B_bar[i] = {0.01f, 0.0f};
    C[i] = {1.0f, -0.5f};
  }
  for (auto _ : state) {
    std::fill(s.begin(), s.end(), std::complex<float>(0));
    for (long t = 0; t < L; ++t) {
      std::complex<float> acc(0);
      for (long i = 0; i < m; ++i) {
        s[i] = A_bar[i] * s[i] + B_bar[i] * x[t];
        acc += C[i] * s[i];
      }
      y[t] = 2 * acc.real();
    }
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations() * L);
}

BENCHMARK(BM_ConvFFT)->RangeMultiplier(4)->Range(16, 16384);
BENCHMARK(BM_ConvDirect)->RangeMultiplier(4)->Range(16, 16384);
BENCHMARK(BM_Recurrence)->RangeMultiplier(4)->Range(16, 16384);
BENCHMARK(BM_ConvFFT)->Name("Long/BM_ConvFFT")->RangeMultiplier(4)->Range(65536, 1 << 20)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Recurrence)->Name("Long/BM_Recurrence")->RangeMultiplier(4)->Range(65536, 1 << 20)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ConvDirect)->Name("Long/BM_ConvDirect")->Arg(65536)->Arg(131072)->Unit(benchmark::kMillisecond)->Iterations(1);
// Crossover search around the direct/FFT switch (kCausalConvDirectMaxLength).
BENCHMARK(BM_ConvFFT)->Name("Cross/BM_ConvFFT")->DenseRange(32, 256, 32);
BENCHMARK(BM_ConvDirect)->Name("Cross/BM_ConvDirect")->DenseRange(32, 256, 32);

}  // namespace

// Default run skips the Long/ and Cross/ benchmarks; any --benchmark_filter replaces that.
int main(int argc, char** argv) {
  std::vector<char*> args(argv, argv + argc);
  std::string skip = "--benchmark_filter=-(Long|Cross)";
  bool has_filter = false;
  for (int i = 1; i < argc; ++i) has_filter |= std::string(argv[i]).rfind("--benchmark_filter", 0) == 0;
  if (!has_filter) args.push_back(skip.data());
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
