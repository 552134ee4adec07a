// The Mamba-2 block and language model (layers/mamba2.hpp, models/mamba2.hpp): the logits of committed tiny
// checkpoints equal Hugging Face transformers' pure-PyTorch Mamba2ForCausalLM (golden.json written by
// tools/make_mamba2_golden.py: head_dim 16 / 8 / 32, 1 and 2 groups, chunk sizes 8 / 5 / 16 that leave remainders,
// tied and untied embeddings, biases, a dt limit that clamps, bf16 weights); prefill + steps equal the parallel
// forward; a prefill in pieces equals one; bad configs are ssm::Errors naming the field.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ssm/models/mamba.hpp"  // MambaLM: each loader rejects the other's checkpoints
#include "ssm/models/mamba2.hpp"
#include "support/golden.hpp"
#include "support/lm_prefill.hpp"

namespace {

namespace fs = std::filesystem;
using ssm::index_t;
using ssm::Tensor;
using ssm::TensorView;
using ssm::models::Mamba2Config;
using ssm::models::Mamba2LM;

using ssm::test::data_dir;
using ssm::test::expect_error;
using ssm::test::normalized_error;

// Logits of every position (parallel), the prompt's prefill then one step per token, and the greedy continuation,
// against golden.json. f32 on both sides, different summation orders and SSD algorithms (chunked on GEMMs here,
// PyTorch's einsums); the golden is written with 7 significant digits.
void expect_matches_golden(const std::string& name) {
  const std::string dir = data_dir("mamba2/" + name);
  ssm::test::expect_lm_matches_golden(Mamba2LM::load(dir), ssm::test::load_golden(dir, "tools/make_mamba2_golden.py"),
                                      "mamba2/" + name, 1e-5, /*stop_at_eos=*/false);
}

TEST(Mamba2LM, MatchesTransformersGoldenHeads4Tied) {
  expect_matches_golden("heads4");
}
TEST(Mamba2LM, MatchesTransformersGoldenGroups2UntiedBiasDtLimit) {
  expect_matches_golden("groups2");
}
TEST(Mamba2LM, MatchesTransformersGoldenBf16) {
  expect_matches_golden("bf16");
}

TEST(Mamba2LM, Bf16WeightsStayBf16) {
  const Mamba2LM m = Mamba2LM::load(data_dir("mamba2/bf16"));
  EXPECT_EQ(m.blocks()[0].params().in_proj.dtype(), ssm::DType::bf16);
  EXPECT_EQ(m.blocks()[0].params().out_proj.dtype(), ssm::DType::bf16);
}

// Prefill + steps, and a prefill in two pieces, equal the parallel forward, for two sequences at once (each
// position's logits), at chunk sizes that do and do not divide the pieces.
TEST(Mamba2LM, PrefillAndStepsEqualTheParallelForward) {
  for (index_t chunk : {1, 3, 8, 64}) {
    Mamba2Config cfg;
    cfg.d_model = 24, cfg.n_layer = 2, cfg.vocab_size = 50, cfg.d_state = 6, cfg.expand = 2;
    cfg.head_dim = 12, cfg.n_heads = 4, cfg.n_groups = 2, cfg.chunk_size = chunk, cfg.bias = true;
    cfg.dt_limit = {0.02, 0.08};  // clamps (dt_bias starts in [0.001, 0.1])
    ssm::test::expect_prefill_and_steps_equal_forward(Mamba2LM::init(cfg, 7), 2e-6, "chunk " + std::to_string(chunk));
  }
}

TEST(Mamba2Block, StepEqualsForwardAtBlockLevel) {
  ssm::layers::Mamba2BlockConfig cfg;
  cfg.d_model = 16, cfg.d_state = 5, cfg.head_dim = 4, cfg.n_groups = 4, cfg.chunk_size = 4;  // 8 heads, 4 groups
  const auto blk = ssm::layers::Mamba2Block::init(cfg, 3);
  const index_t b = 3, l = 9;
  std::vector<float> u(static_cast<std::size_t>(b * l * 16));
  for (std::size_t i = 0; i < u.size(); ++i) u[i] = std::sin(0.37f * float(i));
  const Tensor y = blk.forward(TensorView::of(u.data(), {b, l, 16}));
  auto cache = blk.make_cache(b);
  double err = 0;
  for (index_t t = 0; t < l; ++t) {
    std::vector<float> ut(static_cast<std::size_t>(b * 16));
    for (index_t bi = 0; bi < b; ++bi) std::copy_n(u.begin() + (bi * l + t) * 16, 16, ut.begin() + bi * 16);
    const Tensor yt = blk.step(TensorView::of(ut.data(), {b, 16}), cache);
    for (index_t bi = 0; bi < b; ++bi)
      err = std::max(err, normalized_error(yt.data_as<float>() + bi * 16, y.data_as<float>() + (bi * l + t) * 16, 16));
  }
  EXPECT_LE(err, 2e-6);
}

TEST(Mamba2Block, StepIntoRefusesAWorkspaceShorterThanWorkspaceSize) {
  ssm::layers::Mamba2BlockConfig cfg;
  cfg.d_model = 16, cfg.d_state = 5, cfg.head_dim = 4, cfg.n_groups = 2, cfg.chunk_size = 4;
  const auto blk = ssm::layers::Mamba2Block::init(cfg, 3);
  const index_t b = 2;
  auto cache = blk.make_cache(b);
  std::vector<float> u(static_cast<std::size_t>(b * 16), 0.5f), out(u.size());
  std::vector<float> work(static_cast<std::size_t>(blk.workspace_size(b)));
  const auto step = [&](index_t work_elements) {
    blk.step_into(TensorView::of(u.data(), {b, 16}), TensorView::of(out.data(), {b, 16}), cache.conv_state,
                  cache.ssm_state, TensorView::of(work.data(), {work_elements}));
  };
  EXPECT_NO_THROW(step(blk.workspace_size(b)));
  try {
    step(blk.workspace_size(b) - 1);  // one element short: an error, not a write past the buffer
    FAIL() << "expected ssm::Error";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("workspace_size()"), std::string::npos) << e.what();
  }
}

TEST(Mamba2Config, BadConfigsAreNamed) {
  ssm::layers::Mamba2BlockConfig cfg;
  cfg.d_model = 16, cfg.d_state = 4, cfg.head_dim = 5;  // d_inner 32
  expect_error([&] { cfg.validate(); }, "head_dim 5 does not divide d_inner = 32");
  cfg.head_dim = 8, cfg.n_groups = 3;  // 4 heads
  expect_error([&] { cfg.validate(); }, "n_groups 3 does not divide the number of heads d_inner / head_dim = 4");
  cfg.n_groups = 2, cfg.chunk_size = 0;
  expect_error([&] { cfg.validate(); }, "chunk_size must be >= 1");

  std::ifstream is(data_dir("mamba2/heads4/config.json"));
  const auto base = nlohmann::json::parse(is);
  auto with = [&](const char* key, const nlohmann::json& v) {
    auto j = base;
    j[key] = v;
    return j;
  };
  expect_error([&] { Mamba2Config::from_json(with("head_dim", 24)); }, "head_dim 24 does not divide d_inner = 64");
  expect_error([&] { Mamba2Config::from_json(with("n_groups", 3)); }, "n_groups 3 does not divide the number of heads");
  expect_error([&] { Mamba2Config::from_json(with("num_heads", 3)); }, "num_heads 3 × head_dim 16 must equal");
  expect_error([&] { Mamba2Config::from_json(with("model_type", "jamba")); },
               "model_type 'jamba' is not a Mamba-2 model");
  expect_error([&] { Mamba2Config::from_json(with("time_step_limit", {0.5, 0.1})); }, "dt_limit (time_step_limit)");
  expect_error([&] { Mamba2Config::from_json(with("hidden_size", "big")); }, "field 'hidden_size' must be an integer");
  // the default limit as transformers 5 writes it
  EXPECT_TRUE(std::isinf(Mamba2Config::from_json(base).dt_limit.second));
}

TEST(Mamba2LM, LoadersRejectEachOthersModelTypesByName) {
  expect_error([] { Mamba2LM::load(data_dir("mamba/tiny")); }, "model_type 'mamba' is not a Mamba-2 model");
  expect_error([] { ssm::models::MambaLM::load(data_dir("mamba2/heads4")); },
               "model_type 'mamba2' is a Mamba-2 model: load it with ssm::models::Mamba2LM::load");
  expect_error([] { Mamba2LM::load(data_dir("mamba2/no_such_model")); }, "not found");
}

Mamba2Config small_config() {
  Mamba2Config cfg;
  cfg.d_model = 16, cfg.n_layer = 2, cfg.vocab_size = 40, cfg.d_state = 4, cfg.expand = 2;
  cfg.head_dim = 8, cfg.n_heads = 4, cfg.n_groups = 2, cfg.chunk_size = 3;
  return cfg;
}

// Prefill checks its ids and a resumed cache before it writes anything: a refused call leaves the cache's bytes.
TEST(Mamba2LM, RefusedPrefillLeavesTheCacheAsItWas) {
  ssm::test::expect_refused_prefill_keeps_cache(Mamba2LM::init(small_config(), 3));
}

// Mamba2LM is the one LM body: generate with sampling (seeded, reproducible, within the vocabulary, stopping at a
// stop id), generate_stream handing out the same tokens, greedy generate equal to generate_greedy.
TEST(Mamba2LM, GeneratesWithSamplingAndStreams) {
  const Mamba2LM model = Mamba2LM::init(small_config(), 5);
  const std::vector<std::int64_t> prompt{3, 1, 4, 1, 5};
  ssm::models::GenerationOptions opt;
  opt.temperature = 0.9, opt.top_k = 10, opt.top_p = 0.9, opt.seed = 3;
  opt.stop_ids.emplace();
  const auto a = model.generate(prompt, 8, opt);
  EXPECT_EQ(a, model.generate(prompt, 8, opt));
  ASSERT_EQ(a.size(), 8u);
  for (auto id : a) EXPECT_TRUE(id >= 0 && id < 40) << id;
  std::vector<std::int64_t> streamed;
  model.generate_stream(prompt, 8, opt, [&](std::int64_t id) {
    streamed.push_back(id);
    return true;
  });
  EXPECT_EQ(streamed, a);
  opt.stop_ids = std::vector<std::int64_t>{a[2]};
  const auto stopped = model.generate(prompt, 8, opt);
  EXPECT_EQ(stopped, std::vector<std::int64_t>(a.begin(), a.begin() + (std::find(a.begin(), a.end(), a[2]) - a.begin()) + 1));
  EXPECT_EQ(model.generate(prompt, 6, ssm::models::GenerationOptions{}), model.generate_greedy(prompt, 6));
}

// save writes what load reads: the same logits, in f32 exactly.
TEST(Mamba2LM, SaveThenLoadGivesTheSameLogits) {
  Mamba2Config cfg = small_config();
  cfg.bias = true, cfg.dt_limit = {0.01, 0.2};
  const Mamba2LM model = Mamba2LM::init(cfg, 9);
  const fs::path dir = fs::temp_directory_path() / "ssm_test_mamba2_save";
  fs::remove_all(dir);
  model.save(dir.string());
  const Mamba2LM back = Mamba2LM::load(dir.string());
  fs::remove_all(dir);
  EXPECT_EQ(back.config().dt_limit, cfg.dt_limit);
  const std::vector<std::int64_t> ids{1, 7, 39, 0, 12};
  EXPECT_EQ(normalized_error(back.logits(TensorView::of(ids.data(), {1, 5})), model.logits(TensorView::of(ids.data(), {1, 5}))), 0.0);
}


}  // namespace
