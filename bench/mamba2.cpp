// Mamba-2 against Mamba-1 on the CPU at equal d_model (768, expand 2, d_conv 4; random weights, f32):
//   Block/<kind>/prefill/l:<l>   one block's parallel forward over l tokens of one sequence (tokens/s)
//   Block/<kind>/decode          one block's one-token step with a cache (tokens/s)
//   LM/<kind>/prefill/l:<l>, LM/<kind>/decode: the 130m-shaped models (24 layers, vocab ~50k)
// Mamba-1: d_state 16 (mamba-130m). Mamba-2: 24 heads of 64, d_state 128, one group, chunk 256 (mamba2-130m).
//
//   bench_mamba2 --benchmark_filter=Block     # blocks only (seconds)
//   bench_mamba2                              # also the LMs (building them takes a few seconds)
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "ssm/models.hpp"

using ssm::index_t;
using ssm::Tensor;
using ssm::TensorView;

namespace {

constexpr index_t kDModel = 768;
constexpr index_t kVocab = 50280;

ssm::layers::MambaBlockConfig mamba1_block() {
  ssm::layers::MambaBlockConfig c;
  c.d_model = kDModel, c.d_state = 16, c.d_conv = 4, c.expand = 2;
  return c;
}
ssm::layers::Mamba2BlockConfig mamba2_block() {
  ssm::layers::Mamba2BlockConfig c;
  c.d_model = kDModel, c.d_state = 128, c.d_conv = 4, c.expand = 2, c.head_dim = 64, c.n_groups = 1, c.chunk_size = 256;
  return c;
}

std::vector<float> random_input(index_t n) {
  std::mt19937_64 rng(1);
  std::normal_distribution<float> N(0.0f, 1.0f);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = N(rng);
  return v;
}

std::vector<std::int64_t> random_ids(index_t n) {
  std::mt19937_64 rng(2);
  std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
  for (auto& x : ids) x = static_cast<std::int64_t>(rng() % kVocab);
  return ids;
}

template <class Block>
void block_prefill(benchmark::State& state, const Block& blk) {
  const index_t l = state.range(0);
  const auto u = random_input(l * kDModel);
  for (auto _ : state) {
    Tensor y = blk.forward(TensorView::of(u.data(), {1, l, kDModel}));
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations() * l);
}

template <class Block>
void block_decode(benchmark::State& state, const Block& blk) {
  const auto u = random_input(kDModel);
  auto cache = blk.make_cache(1);
  for (auto _ : state) {
    Tensor y = blk.step(TensorView::of(u.data(), {1, kDModel}), cache);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["state_bytes"] = static_cast<double>(cache.ssm_state.nbytes() + cache.conv_state.nbytes());
}

const ssm::layers::MambaBlock<float>& m1_block() {
  static const auto b = ssm::layers::MambaBlock<float>::init(mamba1_block(), 0);
  return b;
}
const ssm::layers::Mamba2Block<float>& m2_block() {
  static const auto b = ssm::layers::Mamba2Block<float>::init(mamba2_block(), 0);
  return b;
}

void BM_Block_Mamba1_Prefill(benchmark::State& s) {
  block_prefill(s, m1_block());
}
void BM_Block_Mamba2_Prefill(benchmark::State& s) {
  block_prefill(s, m2_block());
}
void BM_Block_Mamba1_Decode(benchmark::State& s) {
  block_decode(s, m1_block());
}
void BM_Block_Mamba2_Decode(benchmark::State& s) {
  block_decode(s, m2_block());
}
BENCHMARK(BM_Block_Mamba1_Prefill)
    ->Name("Block/mamba1/prefill")
    ->ArgName("l")
    ->Arg(512)
    ->Arg(2048)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_Block_Mamba2_Prefill)
    ->Name("Block/mamba2/prefill")
    ->ArgName("l")
    ->Arg(512)
    ->Arg(2048)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_Block_Mamba1_Decode)->Name("Block/mamba1/decode")->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_Block_Mamba2_Decode)->Name("Block/mamba2/decode")->Unit(benchmark::kMicrosecond)->UseRealTime();

const ssm::models::MambaLM& m1_lm() {
  static const auto m = [] {
    ssm::models::MambaConfig c;
    c.d_model = kDModel, c.n_layer = 24, c.vocab_size = kVocab, c.d_state = 16, c.d_conv = 4, c.expand = 2;
    return ssm::models::MambaLM::init(c, 0);
  }();
  return m;
}
const ssm::models::Mamba2LM& m2_lm() {
  static const auto m = [] {
    ssm::models::Mamba2Config c;
    c.d_model = kDModel, c.n_layer = 24, c.vocab_size = kVocab, c.d_state = 128, c.expand = 2;
    c.n_heads = 24, c.head_dim = 64, c.n_groups = 1, c.chunk_size = 256, c.tie_embeddings = true;
    return ssm::models::Mamba2LM::init(c, 0);
  }();
  return m;
}

template <class LM, class Cache>
void lm_prefill(benchmark::State& state, const LM& m) {
  const index_t l = state.range(0);
  const auto ids = random_ids(l);
  Cache cache;
  for (auto _ : state) {
    Tensor lg = m.prefill(TensorView::of(ids.data(), {1, l}), cache);
    benchmark::DoNotOptimize(lg.data());
  }
  state.SetItemsProcessed(state.iterations() * l);
}
template <class LM, class Cache>
void lm_decode(benchmark::State& state, const LM& m) {
  const auto ids = random_ids(16);
  Cache cache;
  m.prefill(TensorView::of(ids.data(), {1, 16}), cache);
  std::int64_t tok = 5;
  for (auto _ : state) {
    Tensor lg = m.step(std::span<const std::int64_t>(&tok, 1), cache);
    benchmark::DoNotOptimize(lg.data());
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_LM_Mamba1_Prefill(benchmark::State& s) {
  lm_prefill<ssm::models::MambaLM, ssm::models::MambaCache>(s, m1_lm());
}
void BM_LM_Mamba2_Prefill(benchmark::State& s) {
  lm_prefill<ssm::models::Mamba2LM, ssm::models::Mamba2Cache>(s, m2_lm());
}
void BM_LM_Mamba1_Decode(benchmark::State& s) {
  lm_decode<ssm::models::MambaLM, ssm::models::MambaCache>(s, m1_lm());
}
void BM_LM_Mamba2_Decode(benchmark::State& s) {
  lm_decode<ssm::models::Mamba2LM, ssm::models::Mamba2Cache>(s, m2_lm());
}
BENCHMARK(BM_LM_Mamba1_Prefill)
    ->Name("LM/mamba1/prefill")
    ->ArgName("l")
    ->Arg(512)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_LM_Mamba2_Prefill)
    ->Name("LM/mamba2/prefill")
    ->ArgName("l")
    ->Arg(512)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_LM_Mamba1_Decode)->Name("LM/mamba1/decode")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LM_Mamba2_Decode)->Name("LM/mamba2/decode")->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
