// The RWKV-4 language model (layers/rwkv4.hpp, models/rwkv.hpp): the logits of committed tiny checkpoints equal
// Hugging Face transformers' RwkvForCausalLM in eval mode (golden.json written by tools/make_rwkv_golden.py: 3 layers
// with rescale_every 2, so that transformers halves the hidden state once; attention_hidden_size and
// intermediate_size other than the defaults; bf16 weights), through the parallel forward, prefill + steps and the
// greedy continuation; a prefill in pieces equals one; save → load keeps the logits; bad configs and devices are
// ssm::Errors naming the field.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ssm/models/hybrid.hpp"
#include "ssm/models/mamba.hpp"  // each loader rejects the other's checkpoints
#include "ssm/models/rwkv.hpp"
#include "support/golden.hpp"
#include "support/lm_prefill.hpp"

namespace {

namespace fs = std::filesystem;
using ssm::index_t;
using ssm::Tensor;
using ssm::TensorView;
using ssm::models::RwkvConfig;
using ssm::models::RwkvLM;
using ssm::test::data_dir;
using ssm::test::expect_error;
using ssm::test::normalized_error;

// f32 on both sides; the golden is written with 7 significant digits.
void expect_matches_golden(const std::string& name, double tol) {
  const std::string dir = data_dir("rwkv/" + name);
  ssm::test::expect_lm_matches_golden(RwkvLM::load(dir), ssm::test::load_golden(dir, "tools/make_rwkv_golden.py"),
                                      "rwkv/" + name, tol, /*stop_at_eos=*/false);
}

TEST(RwkvLM, MatchesTransformersGoldenTinyRescaled) { expect_matches_golden("tiny", 2e-6); }
TEST(RwkvLM, MatchesTransformersGoldenWideAttentionAndFfn) { expect_matches_golden("wide", 2e-6); }
TEST(RwkvLM, MatchesTransformersGoldenBf16) { expect_matches_golden("bf16", 2e-6); }

// transformers' rescaling (halving the stream after every rescale_every blocks, the weights divided to match) shows
// only through the LayerNorms' eps: the model folds it into eps · 4^k. Without the fold the tiny checkpoint's logits
// move by far more than the bound above, so the golden test sees it.
TEST(RwkvLM, RescalingIsFoldedIntoTheNormsEps) {
  const std::string dir = data_dir("rwkv/tiny");
  const nlohmann::json g = ssm::test::load_golden(dir, "tools/make_rwkv_golden.py");
  ASSERT_FALSE(g.is_null());
  const auto tokens = g["tokens"].get<std::vector<std::int64_t>>();
  const std::vector<float> ref = ssm::test::flat_logits(g);
  RwkvConfig cfg = RwkvLM::load(dir).config();
  EXPECT_EQ(cfg.rescale_every, 2);
  EXPECT_DOUBLE_EQ(cfg.norm_eps(0), 1e-5);       // block 0: no halving before it
  EXPECT_DOUBLE_EQ(cfg.norm_eps(4), 4e-5);       // block 2's ln1: one halving before it
  EXPECT_DOUBLE_EQ(cfg.norm_eps(2 * 3), 4e-5);   // ln_out: one halving (3 / 2)
  cfg.rescale_every = 0;
  const RwkvLM plain = RwkvLM::from_checkpoint(cfg, RwkvLM::open_weights(dir));
  const Tensor lg = plain.logits(TensorView::of(tokens.data(), {1, static_cast<index_t>(tokens.size())}));
  EXPECT_GT(normalized_error(lg.data_as<float>(), ref.data(), ref.size()), 5e-6);
}

RwkvConfig small_config() {
  RwkvConfig cfg;
  cfg.d_model = 24, cfg.n_layer = 3, cfg.vocab_size = 50, cfg.d_att = 20, cfg.d_ffn = 40, cfg.rescale_every = 1;
  return cfg;
}

// Prefill + steps, and a prefill in two pieces, equal the parallel forward, for two sequences at once.
TEST(RwkvLM, PrefillAndStepsEqualTheParallelForward) {
  const auto cache = ssm::test::expect_prefill_and_steps_equal_forward(RwkvLM::init(small_config(), 7), 2e-6, "rwkv");
  // the cache's size does not depend on the length: per sublayer (b, 1, H) and, for time mixing, (b, 3, A)
  const index_t b = 2;
  EXPECT_EQ(cache.nbytes(), static_cast<std::size_t>(3 * (2 * b * 24 + b * 3 * 20) * 4));
}

// Each sublayer as a sequence mixer: steps of 1 and 3 tokens equal the forward; in a HybridStack with its decoding.
TEST(Rwkv4Block, StepsEqualTheForwardAndTheBlockIsASequenceMixer) {
  static_assert(ssm::models::SequenceMixer<ssm::layers::Rwkv4Block>);
  const RwkvConfig cfg = small_config();
  const index_t b = 2, l = 10, H = cfg.d_model;
  std::vector<float> x(static_cast<std::size_t>(b * l * H));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * float(i));
  const TensorView xv = TensorView::of(x.data(), {b, l, H});
  for (index_t j : {0, 1}) {
    const auto blk = ssm::layers::Rwkv4Block::init(cfg.block(j), 5);
    const Tensor y = blk.forward(xv);
    for (index_t t_step : {1, 3}) {
      auto state = blk.init_state(b);
      Tensor got = Tensor::empty({b, l, H}, ssm::DType::f32);
      for (index_t t0 = 0; t0 < l; t0 += t_step) {
        const index_t n = std::min(t_step, l - t0);
        Tensor xt = Tensor::empty({b, n, H}, ssm::DType::f32);
        ssm::copy(xt.view(), xv.narrow(1, t0, n));
        const Tensor yt = blk.step(xt, state);
        ssm::copy(got.view().narrow(1, t0, n), yt.view());
      }
      EXPECT_LE(normalized_error(got, y), 1e-6) << "sublayer " << j << " steps of " << t_step;
    }
  }
  ssm::models::HybridStack<float, ssm::layers::Rwkv4Block> stack(H);
  stack.add(ssm::layers::Rwkv4Block::init(cfg.block(0), 1));
  stack.add(ssm::layers::Rwkv4Block::init(cfg.block(1), 2));
  const Tensor full = stack.forward(xv);
  auto state = stack.init_state(b);
  Tensor first = Tensor::empty({b, 4, H}, ssm::DType::f32), rest = Tensor::empty({b, l - 4, H}, ssm::DType::f32);
  ssm::copy(first.view(), xv.narrow(1, 0, 4));
  ssm::copy(rest.view(), xv.narrow(1, 4, l - 4));
  stack.step(first, state);
  const Tensor tail = stack.step(rest, state);
  Tensor want = Tensor::empty({b, l - 4, H}, ssm::DType::f32);
  ssm::copy(want.view(), full.view().narrow(1, 4, l - 4));
  EXPECT_LE(normalized_error(tail, want), 1e-6);
  const auto bad = ssm::layers::Rwkv4Block::init(cfg.block(0), 1);
  auto wrong = bad.init_state(3);
  expect_error([&] { bad.step(xv, wrong); }, "argument 'state'");
  const std::vector<double> x64(static_cast<std::size_t>(b * l * H));
  expect_error([&] { bad.forward(TensorView::of(x64.data(), {b, l, H})); }, "argument 'x'");
}

TEST(RwkvLM, SaveThenLoadKeepsTheLogits) {
  const RwkvLM model = RwkvLM::init(small_config(), 3);
  const fs::path dir = fs::temp_directory_path() / "ssm_test_rwkv_save";
  fs::remove_all(dir);
  model.save(dir.string());
  const RwkvLM back = RwkvLM::load(dir.string());
  const std::vector<std::int64_t> ids{1, 5, 9, 2, 49, 0, 7};
  const Tensor a = model.logits(TensorView::of(ids.data(), {1, 7})), b = back.logits(TensorView::of(ids.data(), {1, 7}));
  EXPECT_EQ(normalized_error(a, b), 0.0);
  EXPECT_EQ(back.config().rescale_every, 1);
  fs::remove_all(dir);
}

TEST(RwkvLM, BadConfigsAndDevicesAreNamed) {
  auto cfg_json = [] {
    std::ifstream is(data_dir("rwkv/tiny/config.json"));
    return nlohmann::json::parse(is);
  };
  nlohmann::json j = cfg_json();
  j["model_type"] = "mamba";
  expect_error([&] { RwkvConfig::from_json(j); }, "model_type 'mamba' is not an RWKV-4 model");
  j = cfg_json(), j["architectures"] = {"RwkvForSequenceClassification"};
  expect_error([&] { RwkvConfig::from_json(j); }, "architecture");
  j = cfg_json(), j["rescale_every"] = -1;
  expect_error([&] { RwkvConfig::from_json(j); }, "rescale_every");
  j = cfg_json(), j["attention_hidden_size"] = "wide";
  expect_error([&] { RwkvConfig::from_json(j); }, "'attention_hidden_size' must be an integer");
  j = cfg_json(), j["attention_hidden_size"] = nullptr, j["intermediate_size"] = nullptr;  // the defaults
  const RwkvConfig d = RwkvConfig::from_json(j);
  EXPECT_EQ(d.att(), 32);
  EXPECT_EQ(d.ffn(), 128);
  j = cfg_json(), j.erase("hidden_size");
  expect_error([&] { RwkvConfig::from_json(j); }, "lacks 'hidden_size'");
  // a Mamba checkpoint is refused by the RWKV loader and the other way round
  expect_error([&] { RwkvLM::load(data_dir("mamba/tiny")); }, "is not an RWKV-4 model");
  expect_error([&] { ssm::models::MambaLM::load(data_dir("rwkv/tiny")); }, "rwkv");
  // wrongly shaped tensors: a config whose attention width the checkpoint does not have
  RwkvConfig wrong = RwkvLM::load(data_dir("rwkv/tiny")).config();
  wrong.d_att = 16;
  expect_error([&] { RwkvLM::from_checkpoint(wrong, RwkvLM::open_weights(data_dir("rwkv/tiny"))); }, "time_decay");
  const RwkvLM model = RwkvLM::init(small_config(), 1);
  expect_error([&] { model.to(ssm::Device::cuda(0)); }, "CPU only");
}

}  // namespace
