// Jamba and its mixture of experts (docs/jamba.md, docs/moe.md), f32, d_model 768:
//   BM_moe/t/E: the mixture-of-experts op (the grouped CPU path: the router GEMM, tokens grouped by expert, two GEMMs
//     per active expert) on t tokens, E experts of width I = 2048, k = 2, 1 thread; BM_moe_dense/t: the dense SwiGLU of
//     width k·I (the same multiply-adds per token: the op with one expert). moe_over_dense = the MoE's best time over
//     the dense one's, measured in the same process: 1 would mean routing, gathering and scattering are free; with
//     few tokens (decoding) every active expert's weights are read for one or two rows, so it grows towards the
//     ratio of weights read (up to E / k when every expert is active).
//   BM_stack_forward/kind/l and BM_stack_decode/kind/ctx: an 8-layer stack built by JambaLM (vocab 256, so the head is
//     negligible), kind 0 = Jamba (attention at layer 4 only, period 8; Mamba elsewhere), kind 1 = all attention (the
//     same blocks with attn_layer_period 1: a transformer without position encoding); both with the mixture of 8
//     experts (k 2) in every other layer and dense MLPs between. forward: the logits of l tokens (tokens/s);
//     decode: one token after a prefill of ctx tokens (the cache rewound to ctx after every step), with cache_MB (the
//     Mamba states plus the keys and values). Where kind 0 overtakes kind 1 is the crossover the README quotes.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "ssm/models/jamba.hpp"
#include "ssm/ops/moe.hpp"

namespace {

using ssm::index_t;
using Clock = std::chrono::steady_clock;

constexpr index_t kDModel = 768, kDff = 2048, kTopK = 2;

ssm::Tensor uniform(const ssm::Dims& shape, std::uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> U(-scale, scale);
  ssm::Tensor t = ssm::Tensor::empty(shape, ssm::DType::f32);
  for (index_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = U(rng);
  return t;
}

struct MoeWeights {
  ssm::Tensor router, gate_up, down;
  MoeWeights(index_t E, index_t I)
      : router(uniform({E, kDModel}, 1, 0.05f)), gate_up(uniform({E, 2 * I, kDModel}, 2, 0.03f)),
        down(uniform({E, kDModel, I}, 3, 0.02f)) {}
};

double time_moe(const ssm::Tensor& x, const MoeWeights& w, index_t k, ssm::Tensor& out) {
  ssm::MoeOptions opt;
  opt.top_k = k, opt.threads = 1;
  const auto t0 = Clock::now();
  ssm::moe_into({x.view(), w.router.view(), w.gate_up.view(), w.down.view()}, out.view(), std::nullopt, opt);
  benchmark::DoNotOptimize(out.data());
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void BM_moe(benchmark::State& state) {
  const index_t t = state.range(0), E = state.range(1);
  const MoeWeights moe(E, kDff), dense(1, kTopK * kDff);
  const ssm::Tensor x = uniform({t, kDModel}, 4, 1.0f);
  ssm::Tensor out = ssm::Tensor::empty({t, kDModel}, ssm::DType::f32);
  double best = 1e30, best_dense = 1e30;
  for (auto _ : state) {
    best = std::min(best, time_moe(x, moe, kTopK, out));
    state.PauseTiming();
    best_dense = std::min(best_dense, time_moe(x, dense, 1, out));  // interleaved: the same machine state
    state.ResumeTiming();
  }
  state.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(t), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["moe_over_dense"] = best / best_dense;
  state.counters["dense_ms"] = best_dense * 1e3;
}

ssm::models::JambaConfig stack_config(int kind) {
  ssm::models::JambaConfig c;
  c.d_model = kDModel, c.n_layer = 8, c.vocab_size = 256, c.d_ff = kDff, c.n_heads = 12, c.n_kv_heads = 12;
  c.attn_layer_period = kind == 0 ? 8 : 1, c.attn_layer_offset = kind == 0 ? 4 : 0;
  c.expert_layer_period = 2, c.expert_layer_offset = 1, c.num_experts = 8, c.num_experts_per_tok = kTopK;
  c.d_state = 16, c.d_conv = 4, c.expand = 2;
  return c;
}

std::vector<std::int64_t> ids(index_t n) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) v[i] = (i * 37 + 11) % 256;
  return v;
}

/// The 8-layer stack of `kind` (stack_config) with random weights, on 1 thread.
ssm::models::JambaLM make_stack(int kind) {
  ssm::models::JambaLM model = ssm::models::JambaLM::init(stack_config(kind), 1);
  model.set_threads(1);
  return model;
}

void BM_stack_forward(benchmark::State& state) {
  const index_t l = state.range(1);
  const ssm::models::JambaLM model = make_stack(static_cast<int>(state.range(0)));
  const auto tokens = ids(l);
  for (auto _ : state) {
    const ssm::Tensor lg = model.logits(ssm::TensorView::of(tokens.data(), {1, l}));
    benchmark::DoNotOptimize(lg.data());
  }
  state.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(l), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_stack_decode(benchmark::State& state) {
  const index_t ctx = state.range(1);
  const ssm::models::JambaLM model = make_stack(static_cast<int>(state.range(0)));
  const auto tokens = ids(ctx);
  ssm::models::JambaCache cache;
  model.prefill(ssm::TensorView::of(tokens.data(), {1, ctx}), cache);
  const std::int64_t next = 7;
  for (auto _ : state) {
    const ssm::Tensor lg = model.step(std::span<const std::int64_t>(&next, 1), cache);
    benchmark::DoNotOptimize(lg.data());
    // Rewound to ctx tokens, so every step sees the context the name says (the Mamba states' values do not change
    // the cost; the attention layers' keys and values are cut back).
    cache.seqlen = ctx;
    for (auto& layer : cache.layers)
      if (layer.kv) layer.kv->truncate(ctx);
  }
  state.counters["cache_MB"] = static_cast<double>(cache.nbytes()) / 1e6;
}

BENCHMARK(BM_moe)->ArgsProduct({{1, 16, 512}, {8, 16}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_stack_forward)->ArgsProduct({{0, 1}, {256, 1024, 4096}})->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(2);
BENCHMARK(BM_stack_decode)->ArgsProduct({{0, 1}, {256, 1024, 4096}})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
