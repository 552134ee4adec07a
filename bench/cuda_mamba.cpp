// The Mamba language model on a CUDA device (model.to(ssm::Device::cuda(0)): the one model code path over the ops):
// prefill throughput (tokens / s over a whole prompt, logits of the last position) and the decode latency of one
// generation step, at Mamba-130m's sizes (d_model 768, 24 layers, vocabulary 50280; random f32 weights: the time
// does not depend on their values). Each iteration copies its logits to the host, as generation does to sample,
// so wall time is the device time plus the launch overhead. Without a GPU every benchmark reports the runtime's
// error.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cuda_timing.hpp"
#include "ssm/core/backend.hpp"
#include "ssm/models/mamba.hpp"

namespace {

/// The model on CUDA device 0 (made on first use, after usable() said a GPU is there).
const ssm::models::MambaLM* model_130m() {
  static const std::unique_ptr<ssm::models::MambaLM> m = [] {
    ssm::models::MambaConfig c;  // the defaults are Mamba-130m's
    c.vocab_size = 50277;
    return std::make_unique<ssm::models::MambaLM>(ssm::models::MambaLM::init(c, 1).to(ssm::Device::cuda(0)));
  }();
  return m.get();
}

using cuda_bench::usable;

std::vector<std::int64_t> prompt(std::int64_t count) {
  std::vector<std::int64_t> ids(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i) ids[static_cast<std::size_t>(i)] = (i * 7919) % 50277;
  return ids;
}

// Args: b, l.
void BM_CudaMambaPrefill(benchmark::State& state) {
  if (!usable(state)) return;
  const std::int64_t b = state.range(0), l = state.range(1);
  const auto& dev = *model_130m();
  const auto ids = prompt(b * l);
  ssm::models::MambaCache cache;
  for (auto _ : state)
    benchmark::DoNotOptimize(dev.prefill(ssm::TensorView::of(ids.data(), {b, l}), cache).to(ssm::Device::cpu()));
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(b * l), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_CudaMambaPrefill)->Args({1, 128})->Args({1, 1024})->Args({1, 2048})->Args({8, 1024})->Unit(benchmark::kMillisecond)->UseRealTime();

// Args: b. One token per sequence per iteration; the time per iteration is the decode latency.
void BM_CudaMambaDecode(benchmark::State& state) {
  if (!usable(state)) return;
  const std::int64_t b = state.range(0);
  const auto& dev = *model_130m();
  const auto ids = prompt(b * 16);
  ssm::models::MambaCache cache;
  (void)dev.prefill(ssm::TensorView::of(ids.data(), {b, 16}), cache);
  std::vector<std::int64_t> next(static_cast<std::size_t>(b), 17);
  for (auto _ : state) benchmark::DoNotOptimize(dev.step(next, cache).to(ssm::Device::cpu()));
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(b), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_CudaMambaDecode)->Arg(1)->Arg(8)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
