// Training (docs/training.md), f32, on the machine's own limits:
//   - BM_CrossEntropy/<path>/rows/vocab/threads: the fused loss and gradient (in place over the logits) at a language
//     model's vocabulary (50280, GPT-NeoX's), elements per second and bw_fraction, the bytes it must move (the logits
//     read, the gradient written: 8 per element) per second over the machine's read bandwidth on as many threads
//     (bench/bandwidth.hpp). Path 0 the CPU path (vector exp, one per element), 1 the reference in double (fewer rows).
//   - BM_StackLMStep/<mixer>/threads: one training step of a StackLM (2 layers, d 64, vocab 256, batch 4 × 256 tokens:
//     the forward, the loss, the backward through every layer, clipping and AdamW), tokens per second. Mixers: 0 Gated
//     DeltaNet, 1 GLA, 2 RWKV-7, 3 TTT-Linear, 4 Mamba (d_state 16), 5 softmax attention with RoPE (tiled), 6 Mamba-2,
//     7 Hyena, 8 the S4D layer, 9 the S4 layer (N 16, a GLU output Linear).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <string>

#include "bandwidth.hpp"
#include "ssm/models/trainable_lm.hpp"
#include "ssm/train.hpp"

namespace {

using ssm::index_t;
using ssm::Tensor;

void BM_CrossEntropy(benchmark::State& state) {
  const bool reference = state.range(0) == 1;
  const index_t rows = state.range(1), vocab = state.range(2);
  const int threads = static_cast<int>(state.range(3));
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<float> u(-4, 4);
  Tensor logits = Tensor::empty({rows, vocab}, ssm::DType::f32), work = Tensor::empty({rows, vocab}, ssm::DType::f32);
  for (index_t i = 0; i < logits.numel(); ++i) logits.data_as<float>()[i] = u(rng);
  Tensor targets = Tensor::empty({rows}, ssm::DType::i64);
  for (index_t i = 0; i < rows; ++i) targets.data_as<std::int64_t>()[i] = (i * 7919) % vocab;
  ssm::CrossEntropyOptions opt;
  opt.threads = threads;
  opt.path = reference ? ssm::CrossEntropyOptions::Path::reference : ssm::CrossEntropyOptions::Path::automatic;
  double loss = 0;
  for (auto _ : state) {
    state.PauseTiming();
    ssm::copy(work, logits);  // in place overwrites the logits: a fresh copy each time
    state.ResumeTiming();
    loss += ssm::cross_entropy({work, targets}, work.view(), opt).loss;
  }
  benchmark::DoNotOptimize(loss);
  const double elements = static_cast<double>(rows * vocab) * static_cast<double>(state.iterations());
  state.counters["elements_per_s"] = benchmark::Counter(elements, benchmark::Counter::kIsRate);
  state.counters["bytes_per_s"] = benchmark::Counter(8 * elements, benchmark::Counter::kIsRate);
  const double bw = ssm_bench::read_bandwidth(threads);
  state.counters["read_bw"] = bw;
  state.counters["bw_fraction"] = benchmark::Counter(8 * elements / bw, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_CrossEntropy)
    ->ArgNames({"path", "rows", "vocab", "threads"})
    ->Args({0, 512, 50280, 1})
    ->Args({0, 512, 50280, 2})
    ->Args({1, 16, 50280, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

using Model = ssm::models::TrainableLM<float>;
const char* const kMixers[] = {"gated_deltanet", "gla",   "rwkv7",     "ttt",      "mamba", "attention",
                               "mamba2",         "hyena", "s4d_layer", "s4_layer", "rwkv4", "striped_hyena"};

void BM_StackLMStep(benchmark::State& state) {
  const int mixer = static_cast<int>(state.range(0)), threads = static_cast<int>(state.range(1));
  const index_t d = 64, vocab = 256, b = 4, l = 256;
  Model::Stack stack(d);
  ssm::models::MixerOptions mo;
  mo.heads = 2, mo.rank = 16, mo.max_len = l, mo.threads = threads;
  for (std::uint64_t i = 0; i < 2; ++i) ssm::models::add_mixer(stack, kMixers[mixer], mo, i);
  Model model(vocab, std::move(stack), 7);
  ssm::train::ParamTree<float> params;
  params.add_all("", model);
  ssm::train::AdamW<float> opt;
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<std::int64_t> tok(0, vocab - 1);
  Tensor ids = Tensor::empty({b, l}, ssm::DType::i64), targets = Tensor::empty({b * l}, ssm::DType::i64);
  for (index_t i = 0; i < b * l; ++i) ids.data_as<std::int64_t>()[i] = tok(rng);
  for (index_t i = 0; i < b * l; ++i) targets.data_as<std::int64_t>()[i] = i % l ? ids.data_as<std::int64_t>()[i - 1] : -100;
  double loss = 0;
  for (auto _ : state) {
    Model::Grads g;
    loss += model.step(ids, targets, g).loss;
    ssm::train::ParamTree<float> grads;
    grads.add_all("", g);
    ssm::train::clip_grad_norm(grads, 1.0);
    opt.step(params, grads);
  }
  benchmark::DoNotOptimize(loss);
  state.counters["tokens_per_s"] =
      benchmark::Counter(static_cast<double>(b * l) * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.SetLabel(kMixers[mixer]);
}
BENCHMARK(BM_StackLMStep)
    ->ArgNames({"mixer", "threads"})
    ->ArgsProduct({{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
