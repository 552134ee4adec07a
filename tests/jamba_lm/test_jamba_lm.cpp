// The Jamba language model (layers/hybrid_block.hpp, models/jamba.hpp): the logits of committed tiny checkpoints equal Hugging
// Face transformers' JambaForCausalLM (golden.json written by tools/make_jamba_golden.py: Mamba layers with their δ / B
// / C norms, grouped-query attention without position encoding, dense and mixture-of-experts feed-forwards, k = 2 of 4
// and k = 1 of 3 experts, tied embeddings, projection biases, bf16 weights), through the parallel forward, prefill +
// steps and the greedy continuation; a prefill in pieces equals one (exactly, unlike transformers' second multi-token
// forward); a copied cache forks the sequences; save → load keeps the logits; bad configs are ssm::Errors naming the
// config key.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "ssm/models/jamba.hpp"
#include "ssm/models/mamba.hpp"  // each loader rejects the other's checkpoints
#include "support/golden.hpp"
#include "support/lm_prefill.hpp"

namespace {

namespace fs = std::filesystem;
using ssm::index_t;
using ssm::Tensor;
using ssm::TensorView;
using ssm::models::JambaConfig;
using ssm::models::JambaLM;
using ssm::test::data_dir;
using ssm::test::expect_error;
using ssm::test::normalized_error;

void expect_matches_golden(const std::string& name, double tol) {
  const std::string dir = data_dir("jamba/" + name);
  ssm::test::expect_lm_matches_golden(JambaLM::load(dir), ssm::test::load_golden(dir, "tools/make_jamba_golden.py"),
                                      "jamba/" + name, tol, /*stop_at_eos=*/false);
}

// f32 on both sides, the golden written with 7 significant digits; the script keeps transformers' own f32 logits within
// 1.5e-6 of the same model in f64, so a port's f32 rounding shows at that scale, not more.
TEST(JambaLM, MatchesTransformersGoldenMambaAttentionAndExperts) { expect_matches_golden("tiny", 3e-6); }
TEST(JambaLM, MatchesTransformersGoldenTiedTopOneBiases) { expect_matches_golden("tied", 3e-6); }
TEST(JambaLM, MatchesTransformersGoldenBf16) { expect_matches_golden("bf16", 3e-6); }

// Against transformers' logits of the same checkpoints in f64 (logits_f64): this model's f32 error alone.
TEST(JambaLM, MatchesTheFloat64Logits) {
  for (const char* name : {"tiny", "tied", "bf16"}) {
    const std::string dir = data_dir(std::string("jamba/") + name);
    const nlohmann::json g = ssm::test::load_golden(dir, "tools/make_jamba_golden.py");
    ASSERT_TRUE(g.contains("logits_f64")) << name;
    const auto tokens = g["tokens"].get<std::vector<std::int64_t>>();
    std::vector<float> ref;
    for (const auto& row : g["logits_f64"])
      for (const auto& v : row) ref.push_back(v.get<float>());
    const Tensor lg = JambaLM::load(dir).logits(TensorView::of(tokens.data(), {1, static_cast<index_t>(tokens.size())}));
    const double err = normalized_error(lg.data_as<float>(), ref.data(), ref.size());
    EXPECT_LE(err, 3e-6) << name;
    std::cout << "[ golden ] jamba/" << name << ": against transformers in f64, normalized error " << err << "\n";
  }
}

TEST(JambaLM, ReadsTheLayerPatternFromTheConfig) {
  const JambaLM m = JambaLM::load(data_dir("jamba/tiny"));
  const JambaConfig& c = m.config();
  EXPECT_EQ(c.n_layer, 4);
  EXPECT_EQ(c.n_kv_heads, 2);
  ASSERT_EQ(m.blocks().size(), 8u);
  using K = ssm::layers::HybridKind;
  const K want[8] = {K::mamba, K::mlp, K::mamba, K::moe, K::attention, K::mlp, K::mamba, K::moe};
  for (std::size_t j = 0; j < 8; ++j) EXPECT_EQ(m.blocks()[j].config().kind, want[j]) << "sublayer " << j;
  EXPECT_EQ(m.blocks()[3].config().experts, 4);
  EXPECT_EQ(m.blocks()[3].config().top_k, 2);
  EXPECT_FALSE(m.blocks()[3].config().normalize_topk);
}

JambaConfig small_config() {
  JambaConfig c;
  c.d_model = 24, c.n_layer = 4, c.vocab_size = 40, c.d_ff = 20, c.n_heads = 4, c.n_kv_heads = 2;
  c.attn_layer_period = 2, c.attn_layer_offset = 1, c.expert_layer_period = 2, c.expert_layer_offset = 0;
  c.num_experts = 4, c.num_experts_per_tok = 2, c.d_state = 8;
  return c;
}

// Prefill + steps, and a prefill in two pieces, equal the parallel forward, for two sequences at once; the attention
// layers' caches hold every token's keys and values.
TEST(JambaLM, PrefillAndStepsEqualTheParallelForward) {
  const auto cache = ssm::test::expect_prefill_and_steps_equal_forward(JambaLM::init(small_config(), 7), 2e-6, "jamba");
  EXPECT_EQ(cache.seqlen, 13);
  ASSERT_TRUE(cache.layers[2].kv.has_value());
  EXPECT_EQ(cache.layers[2].kv->length(), 13);
  EXPECT_FALSE(cache.layers[0].kv.has_value());
}

// A copied cache is a fork: stepping the copy leaves the original as it was.
TEST(JambaLM, CopiedCacheForksTheSequences) {
  const JambaLM m = JambaLM::init(small_config(), 3);
  const std::vector<std::int64_t> prompt{3, 1, 4, 1, 5};
  ssm::models::JambaCache a;
  m.prefill(TensorView::of(prompt.data(), {1, 5}), a);
  ssm::models::JambaCache b = a;
  const std::int64_t x = 9, y = 2;
  m.step(std::span<const std::int64_t>(&y, 1), b);
  m.step(std::span<const std::int64_t>(&y, 1), b);
  const Tensor la = m.step(std::span<const std::int64_t>(&x, 1), a);
  ssm::models::JambaCache c;
  const std::vector<std::int64_t> longer{3, 1, 4, 1, 5, 9};
  const Tensor lc = m.prefill(TensorView::of(longer.data(), {1, 6}), c);
  EXPECT_LE(normalized_error(la, lc), 2e-6);
  EXPECT_EQ(a.layers[2].kv->length(), 6);
  EXPECT_EQ(b.layers[2].kv->length(), 7);
}

TEST(JambaLM, SaveThenLoadKeepsTheLogits) {
  for (const char* dtype : {"f32", "bf16"}) {
    const JambaLM model = JambaLM::load(data_dir("jamba/tiny"));
    const fs::path dir = fs::temp_directory_path() / (std::string("ssm_test_jamba_save_") + dtype);
    fs::remove_all(dir);
    const bool bf16 = std::string(dtype) == "bf16";
    model.save(dir.string(), bf16 ? ssm::DType::bf16 : ssm::DType::f32);
    const JambaLM back = JambaLM::load(dir.string());
    const std::vector<std::int64_t> ids{1, 5, 9, 2, 49, 0, 7};
    const Tensor a = model.logits(TensorView::of(ids.data(), {1, 7}));
    const Tensor b = back.logits(TensorView::of(ids.data(), {1, 7}));
    if (bf16) EXPECT_LE(normalized_error(b, a), 5e-2) << "bf16 rounding of every weight";
    else EXPECT_EQ(normalized_error(a, b), 0.0);
    EXPECT_EQ(back.config().to_json(), model.config().to_json());
    fs::remove_all(dir);
  }
}

TEST(JambaLM, RefusedPrefillKeepsTheCache) { ssm::test::expect_refused_prefill_keeps_cache(JambaLM::init(small_config(), 2)); }

TEST(JambaLM, BadConfigsAndDevicesAreNamed) {
  auto cfg_json = [] {
    std::ifstream is(data_dir("jamba/tiny/config.json"));
    return nlohmann::json::parse(is);
  };
  nlohmann::json j = cfg_json();
  j["model_type"] = "mamba";
  expect_error([&] { JambaConfig::from_json(j); }, "model_type 'mamba' is not a Jamba model");
  j = cfg_json(), j["architectures"] = {"JambaForSequenceClassification"};
  expect_error([&] { JambaConfig::from_json(j); }, "architecture");
  j = cfg_json(), j["hidden_act"] = "gelu";
  expect_error([&] { JambaConfig::from_json(j); }, "hidden_act");
  j = cfg_json(), j["attn_layer_offset"] = 4;
  expect_error([&] { JambaConfig::from_json(j); }, "attn_layer_offset");
  j = cfg_json(), j["expert_layer_offset"] = -1;
  expect_error([&] { JambaConfig::from_json(j); }, "expert_layer_offset");
  j = cfg_json(), j["num_experts_per_tok"] = 5;
  expect_error([&] { JambaConfig::from_json(j); }, "num_experts_per_tok");
  j = cfg_json(), j["num_key_value_heads"] = 3;
  expect_error([&] { JambaConfig::from_json(j); }, "num_key_value_heads");
  j = cfg_json(), j["mamba_dt_rank"] = "auto";
  EXPECT_EQ(JambaConfig::from_json(j).dt_rank, 0);
  j = cfg_json(), j.erase("num_key_value_heads");
  EXPECT_EQ(JambaConfig::from_json(j).n_kv_heads, 4);
  j = cfg_json(), j.erase("hidden_size");
  expect_error([&] { JambaConfig::from_json(j); }, "lacks 'hidden_size'");
  expect_error([&] { JambaLM::load(data_dir("mamba/tiny")); }, "is not a Jamba model");
  expect_error([&] { ssm::models::MambaLM::load(data_dir("jamba/tiny")); }, "jamba");
  // a config the checkpoint does not fit: more experts than stored
  JambaConfig wrong = JambaLM::load(data_dir("jamba/tiny")).config();
  wrong.num_experts = 5;
  expect_error([&] { JambaLM::from_checkpoint(wrong, JambaLM::open_weights(data_dir("jamba/tiny"))); },
               "lacks tensor 'model.layers.1.feed_forward.experts.4.gate_proj.weight'");
  const JambaLM model = JambaLM::init(small_config(), 1);
  // moving to CUDA without the backend linked (tests/cuda_emu: the model on the emulated backend)
  expect_error([&] { model.to(ssm::Device::cuda(0)); }, "link the CMake target ssm::cuda");
  // an empty batch is refused before any block runs (the blocks make their own caches of a prefill)
  const std::vector<std::int64_t> none;
  ssm::models::JambaCache cache;
  expect_error([&] { model.prefill(TensorView::of(none.data(), {0, 3}), cache); }, "expected at least one sequence");
}

}  // namespace

namespace {

// The load-balancing loss of the prompt, through every MoE layer's router: transformers' aux_loss (output_router_logits;
// computed in f32 there).
TEST(JambaLM, AuxLossEqualsTransformers) {
  for (const char* name : {"tiny", "tied"}) {
    const std::string dir = data_dir(std::string("jamba/") + name);
    const nlohmann::json g = ssm::test::load_golden(dir, "tools/make_jamba_golden.py");
    const JambaLM m = JambaLM::load(dir);
    const auto prompt = g["prompt"].get<std::vector<std::int64_t>>();
    const TensorView ids = TensorView::of(prompt.data(), {1, static_cast<index_t>(prompt.size())});
    const auto r = ssm::models::jamba_router_logits(m, ids);
    EXPECT_EQ(r.router_logits.size(), g["moe_layers"].size()) << name;
    EXPECT_NEAR(ssm::models::jamba_aux_loss(m, ids).loss, g["aux_loss"].get<double>(), 2e-6) << name;
    EXPECT_EQ(normalized_error(r.logits, m.logits(ids)), 0.0);
  }
  JambaConfig dense = small_config();
  dense.num_experts = 1, dense.num_experts_per_tok = 1;  // no MoE layer
  const std::vector<std::int64_t> two{1, 2};
  EXPECT_EQ(ssm::models::jamba_aux_loss(JambaLM::init(dense, 1), TensorView::of(two.data(), {1, 2})).loss, 0.0);
}

}  // namespace

namespace {

// A cache before any token (its KV caches empty) copies, steps and resumes: the first step equals the one-token logits.
TEST(JambaLM, FreshCacheCopiesStepsAndResumes) {
  const JambaLM m = JambaLM::init(small_config(), 6);
  ssm::models::JambaCache fresh = m.make_cache(1);
  ssm::models::JambaCache copy = fresh;  // a fork of an empty cache
  const std::int64_t id = 5;
  const Tensor a = m.step(std::span<const std::int64_t>(&id, 1), copy);
  const Tensor want = m.logits(TensorView::of(&id, {1, 1}));
  EXPECT_LE(normalized_error(a.data_as<float>(), want.data_as<float>(), static_cast<std::size_t>(a.numel())), 2e-6);
  const std::vector<std::int64_t> ids{5, 7, 9};
  const Tensor b = m.prefill(TensorView::of(ids.data(), {1, 3}), fresh, /*resume=*/true);
  ssm::models::JambaCache other;
  EXPECT_LE(normalized_error(b, m.prefill(TensorView::of(ids.data(), {1, 3}), other)), 2e-6);
  // a block handed the cache of another kind is refused, not dereferenced
  const auto& attn = m.blocks()[2];  // layer 1's mixer: attention
  ASSERT_EQ(attn.config().kind, ssm::layers::HybridKind::attention);
  auto wrong = m.blocks()[0].make_cache(1);  // a Mamba layer's cache
  Tensor x = Tensor::zeros({1, 1, 24}, ssm::DType::f32), y = Tensor::empty({1, 1, 24}, ssm::DType::f32);
  expect_error([&] { attn.forward_into(x.view(), y.view(), &wrong, true); }, "KV cache");
}

}  // namespace
