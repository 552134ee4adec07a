// The Mamba language model on a CUDA device (ssm::cuda::MambaLMDevice): prefill throughput (tokens / s over a
// whole prompt, logits of the last position) and the decode latency of one generation step, at Mamba-130m's
// sizes (d_model 768, 24 layers, vocabulary 50280; random weights: the time does not depend on their values).
// Every call synchronizes, so wall time is the device time plus the launch overhead. Without a GPU every
// benchmark reports the runtime's error.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ssm/core/backend.hpp"
#include "ssm/models/mamba.hpp"

namespace {

const ssm::models::MambaLM* model_130m() {
  static const std::unique_ptr<ssm::models::MambaLM> m = [] {
    ssm::models::MambaConfig c;  // the defaults are Mamba-130m's
    c.vocab_size = 50277;
    return std::make_unique<ssm::models::MambaLM>(ssm::models::MambaLM::init(c, 1));
  }();
  return m.get();
}

bool usable(benchmark::State& state) {
  if (ssm::backends().cuda_usable) return true;
  state.SkipWithError(("no usable GPU: " + ssm::backends().cuda_status).c_str());
  return false;
}

std::vector<std::int64_t> prompt(std::int64_t count) {
  std::vector<std::int64_t> ids(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i) ids[static_cast<std::size_t>(i)] = (i * 7919) % 50277;
  return ids;
}

// Args: b, l.
void BM_CudaMambaPrefill(benchmark::State& state) {
  if (!usable(state)) return;
  const std::int64_t b = state.range(0), l = state.range(1);
  const auto& dev = model_130m()->on_cuda();
  const auto ids = prompt(b * l);
  ssm::cuda::MambaDeviceCache cache;
  for (auto _ : state) benchmark::DoNotOptimize(dev.prefill(ssm::TensorView::of(ids.data(), {b, l}), cache));
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(b * l), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_CudaMambaPrefill)->Args({1, 128})->Args({1, 1024})->Args({1, 2048})->Args({8, 1024})->Unit(benchmark::kMillisecond)->UseRealTime();

// Args: b. One token per sequence per iteration; the time per iteration is the decode latency.
void BM_CudaMambaDecode(benchmark::State& state) {
  if (!usable(state)) return;
  const std::int64_t b = state.range(0);
  const auto& dev = model_130m()->on_cuda();
  const auto ids = prompt(b * 16);
  ssm::cuda::MambaDeviceCache cache;
  (void)dev.prefill(ssm::TensorView::of(ids.data(), {b, 16}), cache);
  std::vector<std::int64_t> next(static_cast<std::size_t>(b), 17);
  for (auto _ : state) benchmark::DoNotOptimize(dev.step(ssm::TensorView::of(next.data(), {b}), cache));
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(b), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_CudaMambaDecode)->Arg(1)->Arg(8)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
