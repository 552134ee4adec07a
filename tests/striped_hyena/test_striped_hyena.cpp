// StripedHyenaLM (models/striped_hyena.hpp): Hyena layers (StripedHyena's gated convolution with modal filters) striped
// with rotary grouped-query attention. Prefill + steps and a prefill in pieces equal the parallel forward; the Hyena
// layers' decoding state does not grow with the context (only the attention layers' KV caches do); a copied cache
// forks; save → load keeps the logits; the config's keys are read and bad ones named.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "ssm/models/striped_hyena.hpp"
#include "support/golden.hpp"
#include "support/lm_prefill.hpp"

namespace {

namespace fs = std::filesystem;
using ssm::index_t;
using ssm::Tensor;
using ssm::TensorView;
using ssm::models::StripedHyenaConfig;
using ssm::models::StripedHyenaLM;
using ssm::test::expect_error;
using ssm::test::normalized_error;

StripedHyenaConfig small_config() {
  StripedHyenaConfig c;
  c.d_model = 24, c.n_layer = 4, c.vocab_size = 50, c.n_heads = 4, c.n_kv_heads = 2, c.attn_layer_idxs = {1, 3};
  c.state_size = 2, c.d_ff = 40, c.l_max = 64;
  return c;
}

TEST(StripedHyenaLM, PrefillAndStepsEqualTheParallelForward) {
  const StripedHyenaLM m = StripedHyenaLM::init(small_config(), 7);
  using K = ssm::layers::HybridKind;
  const K want[8] = {K::hyena, K::mlp, K::attention, K::mlp, K::hyena, K::mlp, K::attention, K::mlp};
  for (std::size_t j = 0; j < 8; ++j) EXPECT_EQ(m.blocks()[j].config().kind, want[j]) << "sublayer " << j;
  const auto cache = ssm::test::expect_prefill_and_steps_equal_forward(m, 2e-6, "striped_hyena");
  // the Hyena layers' state: the FIR's 2 inputs of 3 H and S = 2 complex sums per channel, for 2 sequences
  EXPECT_EQ(cache.layers[0].nbytes(), static_cast<std::size_t>(2 * (2 * 72 + 24 * 2 * 2) * 4));
  EXPECT_EQ(cache.layers[2].kv->length(), 13);
}

TEST(StripedHyenaLM, CacheOfTheHyenaLayersDoesNotGrowAndForks) {
  const StripedHyenaLM m = StripedHyenaLM::init(small_config(), 3);
  std::vector<std::int64_t> prompt(30);
  for (std::size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<std::int64_t>((i * 7 + 3) % 50);
  ssm::models::StripedHyenaCache a, b;
  m.prefill(TensorView::of(prompt.data(), {1, 5}), a);
  m.prefill(TensorView::of(prompt.data(), {1, 30}), b);
  EXPECT_EQ(a.layers[0].nbytes(), b.layers[0].nbytes());
  auto fork = a;
  const std::int64_t x = 4, y = 9;
  m.step(std::span<const std::int64_t>(&y, 1), fork);
  const Tensor la = m.step(std::span<const std::int64_t>(&x, 1), a);
  std::vector<std::int64_t> six(prompt.begin(), prompt.begin() + 5);
  six.push_back(x);
  ssm::models::StripedHyenaCache c;
  EXPECT_LE(normalized_error(la, m.prefill(TensorView::of(six.data(), {1, 6}), c)), 2e-6);
}

TEST(StripedHyenaLM, SaveThenLoadKeepsTheLogits) {
  const StripedHyenaLM model = StripedHyenaLM::init(small_config(), 5);
  const fs::path dir = fs::temp_directory_path() / "ssm_test_striped_hyena_save";
  fs::remove_all(dir);
  model.save(dir.string());
  const StripedHyenaLM back = StripedHyenaLM::load(dir.string());
  const std::vector<std::int64_t> ids{1, 5, 9, 2, 49, 0, 7};
  EXPECT_EQ(normalized_error(model.logits(TensorView::of(ids.data(), {1, 7})),
                             back.logits(TensorView::of(ids.data(), {1, 7}))),
            0.0);
  EXPECT_EQ(back.config().to_json(), model.config().to_json());
  fs::remove_all(dir);
}

TEST(StripedHyenaLM, RefusedPrefillKeepsTheCache) {
  ssm::test::expect_refused_prefill_keeps_cache(StripedHyenaLM::init(small_config(), 2));
}

TEST(StripedHyenaLM, ConfigKeysAreReadAndBadOnesNamed) {
  const nlohmann::json good = small_config().to_json();
  const StripedHyenaConfig c = StripedHyenaConfig::from_json(good);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.attn_layer_idxs, (std::vector<index_t>{1, 3}));
  EXPECT_EQ(c.ffn(), 40);
  nlohmann::json j = good;
  j["model_type"] = "mamba";
  expect_error([&] { StripedHyenaConfig::from_json(j); }, "is not a StripedHyena model");
  j = good, j["hyena_filter_groups"] = 2;
  expect_error([&] { StripedHyenaConfig::from_json(j); }, "hyena_filter_groups");
  j = good, j["qkv_proj_bias"] = true;
  expect_error([&] { StripedHyenaConfig::from_json(j); }, "qkv_proj_bias");
  j = good, j["attn_layer_idxs"] = {1, 7};
  expect_error([&] { StripedHyenaConfig::from_json(j); }, "attn_layer_idxs entry 7");
  j = good, j["hyena_layer_idxs"] = {0};
  expect_error([&] { StripedHyenaConfig::from_json(j); }, "layer 2 must be in exactly one");
  j = good, j["proj_groups"] = 3;
  expect_error([&] { StripedHyenaConfig::from_json(j); }, "proj_groups");
  j = good, j.erase("inner_mlp_size");
  EXPECT_EQ(StripedHyenaConfig::from_json(j).ffn(), 64);  // ⌈⌊8 · 24 / 3⌋ / 64⌉ · 64
  const StripedHyenaLM model = StripedHyenaLM::init(small_config(), 1);
  expect_error([&] { model.to(ssm::Device::cuda(0)); }, "CPU only");
}

// Sequences longer than max_seqlen (the Hyena filters' precomputed length) run in pieces that continue the modal
// state: the logits equal a prefill of the first 64 tokens followed by steps.
TEST(StripedHyenaLM, SequencesLongerThanMaxSeqlenContinueTheModalState) {
  const StripedHyenaLM m = StripedHyenaLM::init(small_config(), 4);
  const index_t l = 150, V = 50;
  std::vector<std::int64_t> ids(2 * l);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int64_t>((i * 13 + 5) % V);
  const Tensor full = m.logits(TensorView::of(ids.data(), {2, l}));
  ssm::models::StripedHyenaCache cache;
  std::vector<std::int64_t> head;
  for (index_t bi = 0; bi < 2; ++bi) head.insert(head.end(), ids.begin() + bi * l, ids.begin() + bi * l + 64);
  m.prefill(TensorView::of(head.data(), {2, 64}), cache);
  double err = 0;
  for (index_t t = 64; t < l; ++t) {
    const std::int64_t step_ids[2] = {ids[static_cast<std::size_t>(t)], ids[static_cast<std::size_t>(l + t)]};
    const Tensor lg = m.step(std::span<const std::int64_t>(step_ids, 2), cache);
    for (index_t bi = 0; bi < 2; ++bi)
      err = std::max(err, normalized_error(lg.data_as<float>() + bi * V, full.data_as<float>() + (bi * l + t) * V,
                                           static_cast<std::size_t>(V)));
  }
  EXPECT_LE(err, 5e-6);
}

}  // namespace

namespace {

// A cache before any token: the first step equals the one-token logits; a Hyena block refuses a state of another size.
TEST(StripedHyenaLM, FreshCacheStepsAndWrongStatesAreRefused) {
  const StripedHyenaLM m = StripedHyenaLM::init(small_config(), 6);
  ssm::models::StripedHyenaCache fresh = m.make_cache(1);
  ssm::models::StripedHyenaCache copy = fresh;
  const std::int64_t id = 11;
  const Tensor a = m.step(std::span<const std::int64_t>(&id, 1), copy), want = m.logits(TensorView::of(&id, {1, 1}));
  EXPECT_LE(normalized_error(a.data_as<float>(), want.data_as<float>(), static_cast<std::size_t>(a.numel())), 2e-6);
  const auto& hyena = m.blocks()[0];
  ASSERT_EQ(hyena.config().kind, ssm::layers::HybridKind::hyena);
  auto state = hyena.make_cache(1);
  state.recurrent.ssm_state = Tensor::zeros({1, 24, 1, 2}, ssm::DType::f32);  // S = 1 where the layer has 2
  Tensor x = Tensor::zeros({1, 1, 24}, ssm::DType::f32), y = Tensor::empty({1, 1, 24}, ssm::DType::f32);
  expect_error([&] { hyena.forward_into(x.view(), y.view(), &state, true); }, "argument 'state'");
}

}  // namespace
