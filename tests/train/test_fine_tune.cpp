// Fine-tuning a checkpoint language model (models/fine_tune.hpp): the tiny Hugging Face checkpoints of tests/data as
// StackLMs compute the checkpoint model's logits; back to the checkpoint's model, the weights are the same; a model
// fine-tuned for a few steps goes back, saves and loads with the trained weights; bad input is an error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ssm/models/fine_tune.hpp"
#include "ssm/models/mamba.hpp"
#include "ssm/models/mamba2.hpp"
#include "ssm/models/trainable_lm.hpp"
#include "ssm/train.hpp"
#include "support/expect_error.hpp"
#include "support/golden.hpp"

namespace {

using ssm::DType;
using ssm::index_t;
using ssm::Tensor;
using ssm::test::data_dir;
using ssm_test::expect_error;

/// ids (2, 11) in [0, vocab), from seed.
Tensor prompt(index_t vocab, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int64_t> tok(0, vocab - 1);
  Tensor ids = Tensor::empty({2, 11}, DType::i64);
  for (index_t i = 0; i < ids.numel(); ++i) ids.data_as<std::int64_t>()[i] = tok(rng);
  return ids;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  const auto x = a.to_vector<float>(), y = b.to_vector<float>();
  EXPECT_EQ(x.size(), y.size());
  double m = 0;
  for (std::size_t i = 0; i < std::min(x.size(), y.size()); ++i) m = std::max(m, std::abs(double(x[i]) - y[i]));
  return m;
}

/// The checkpoint at `rel` as a StackLM: bit-identical logits (the two models run the same ops in the same order: the
/// blocks' forward, the residual adds and norms, the head's product; a 16-bit matrix's values are exact in f32), one
/// StackLM parameter per checkpoint weight; back through from_trainable, bit-identical logits again.
template <class Spec>
void expect_round_trip(const std::string& rel) {
  using LM = ssm::models::CausalLM<Spec>;
  SCOPED_TRACE(rel);
  const LM lm = LM::load(data_dir(rel));
  auto t = ssm::models::to_trainable(lm);
  EXPECT_EQ(t.tie_embeddings(), lm.config().tie_embeddings);
  const Tensor ids = prompt(lm.config().vocab_size, 1);
  const Tensor expected = lm.logits(ids);
  EXPECT_EQ(t.logits(ids).template to_vector<float>(), expected.template to_vector<float>());
  std::size_t n_weights = 0, n_params = 0;
  lm.for_each_weight([&](const std::string&, const std::vector<float>&, const ssm::Dims&) { ++n_weights; });
  t.for_each([&](const char*, std::vector<float>&) { ++n_params; });
  EXPECT_EQ(n_params, n_weights);
  const LM back = ssm::models::from_trainable<Spec>(lm.config(), t);
  EXPECT_EQ(back.logits(ids).template to_vector<float>(), expected.template to_vector<float>());
  // the same into the StackLM over every trainable mixer (what the Python Trainer holds)
  using Any = ssm::models::TrainableLM<float>;
  const Any any = ssm::models::to_trainable<Spec, Any>(lm);
  EXPECT_EQ(any.logits(ids).template to_vector<float>(), expected.template to_vector<float>());
  const LM any_back = ssm::models::from_trainable<Spec, Any>(lm.config(), any);
  EXPECT_EQ(any_back.logits(ids).template to_vector<float>(), expected.template to_vector<float>());
}

TEST(FineTune, CheckpointModelsTrainAsStackLMsWithTheSameLogits) {
  expect_round_trip<ssm::models::MambaSpec>("mamba/tiny");       // tied
  expect_round_trip<ssm::models::Mamba2Spec>("mamba2/heads4");   // tied
  expect_round_trip<ssm::models::Mamba2Spec>("mamba2/groups2");  // untied, biases, the dt limit
  expect_round_trip<ssm::models::Mamba2Spec>("mamba2/bf16");     // bf16 matrices, trained in f32
}

/// A gradient v against a fine_tune.json record: its size, its L2 norm (relative 1e-4) and each sampled element
/// (within 1e-5 of the norm: f32 sums in another order).
void expect_gradient(const std::vector<float>& v, const nlohmann::json& ref) {
  ASSERT_EQ(static_cast<std::int64_t>(v.size()), ref["numel"].get<std::int64_t>());
  const double norm = ref["norm"].get<double>();
  double our_norm = 0;
  for (float x : v) our_norm += double(x) * x;
  EXPECT_NEAR(std::sqrt(our_norm), norm, 1e-4 * norm + 1e-9);
  const auto stride = ref["stride"].get<std::size_t>();
  const auto sample = ref["sample"].get<std::vector<double>>();
  for (std::size_t i = 0; i < sample.size(); ++i)
    EXPECT_NEAR(v[i * stride], sample[i], 1e-5 * norm + 1e-9) << "element " << i * stride;
}

/// One StackLM step of the checkpoint at `rel` on the batch of its fine_tune.json (tools/make_fine_tune_golden.py:
/// transformers with labels = input_ids) against transformers' loss and gradients: every parameter under its
/// checkpoint name, its gradient's L2 norm and a spread sample of its elements.
template <class Spec>
void expect_transformers_gradients(const std::string& rel) {
  SCOPED_TRACE(rel);
  const nlohmann::json golden =
      ssm::test::load_golden(data_dir(rel), "tools/make_fine_tune_golden.py", "fine_tune.json");
  if (golden.is_null()) return;
  auto t = ssm::models::to_trainable(ssm::models::CausalLM<Spec>::load(data_dir(rel)));
  const auto rows = golden["input_ids"].get<std::vector<std::vector<std::int64_t>>>();
  const index_t b = static_cast<index_t>(rows.size()), l = static_cast<index_t>(rows[0].size());
  Tensor ids = Tensor::empty({b, l}, DType::i64), targets = Tensor::empty({b * l}, DType::i64);
  for (index_t i = 0; i < b; ++i)
    for (index_t k = 0; k < l; ++k) {  // transformers' shift: position k predicts token k + 1
      ids.data_as<std::int64_t>()[i * l + k] = rows[i][k];
      targets.data_as<std::int64_t>()[i * l + k] = k + 1 < l ? rows[i][k + 1] : -100;
    }
  typename ssm::models::TrainableOf<Spec>::Grads g;
  const auto r = t.step(ids, targets, g);
  EXPECT_NEAR(r.loss, golden["loss"].get<double>(), 1e-5 * golden["loss"].get<double>());
  std::map<std::string, std::vector<float>> ours;  // checkpoint name -> gradient
  g.for_each(
      [&](const char* name, std::vector<float>& v) { ours[ssm::models::detail::checkpoint_name<Spec>(name)] = v; });
  EXPECT_EQ(ours.size(), golden["grads"].size());
  for (const auto& [name, ref] : golden["grads"].items()) {
    SCOPED_TRACE(name);
    const auto it = ours.find(name);
    ASSERT_NE(it, ours.end());
    expect_gradient(it->second, ref);
  }
}

TEST(FineTune, GradientsMatchTransformers) {
  expect_transformers_gradients<ssm::models::MambaSpec>("mamba/tiny");
  expect_transformers_gradients<ssm::models::Mamba2Spec>("mamba2/heads4");
  expect_transformers_gradients<ssm::models::Mamba2Spec>("mamba2/groups2");
}

// A few AdamW steps on one batch of the shifted copy lower the loss; the fine-tuned model goes back to a MambaLM with
// the trained weights (its logits are the StackLM's), which saves and loads as a checkpoint.
TEST(FineTune, AFineTunedMambaGoesBackSavesAndLoads) {
  const ssm::models::MambaLM lm = ssm::models::MambaLM::load(data_dir("mamba/tiny"));
  auto t = ssm::models::to_trainable(lm);
  const Tensor ids = prompt(lm.config().vocab_size, 2);
  Tensor targets = Tensor::empty({ids.numel()}, DType::i64);
  for (index_t i = 0; i < ids.numel(); ++i)
    targets.data_as<std::int64_t>()[i] = i % 11 == 0 ? -100 : ids.data_as<std::int64_t>()[i - 1];
  ssm::train::ParamTree<float> params;
  params.add_all("", t);
  ssm::train::AdamWConfig acfg;
  acfg.lr = 3e-3;
  acfg.decays = ssm::train::decays_by_default;
  ssm::train::AdamW<float> opt(acfg);
  double first = 0, last = 0;
  for (int step = 0; step < 8; ++step) {
    decltype(t)::Grads g;
    last = t.step(ids, targets, g).loss;
    if (step == 0) first = last;
    ssm::train::ParamTree<float> grads;
    grads.add_all("", g);
    opt.step(params, grads);
  }
  EXPECT_LT(last, 0.8 * first);
  const auto back = ssm::models::from_trainable<ssm::models::MambaSpec>(lm.config(), t);
  EXPECT_EQ(back.logits(ids).to_vector<float>(), t.logits(ids).to_vector<float>());
  EXPECT_GT(max_abs_diff(back.logits(ids), lm.logits(ids)), 1e-2);  // the weights did change
  const auto dir = std::filesystem::temp_directory_path() / ("ssm_fine_tune_" + std::to_string(std::random_device{}()));
  std::filesystem::remove_all(dir);
  back.save(dir.string());
  const auto loaded = ssm::models::MambaLM::load(dir.string());
  EXPECT_EQ(loaded.logits(ids).to_vector<float>(), back.logits(ids).to_vector<float>());
  std::filesystem::remove_all(dir);
}

TEST(FineTune, BadInputIsAnErrorNamingTheArgument) {
  const ssm::models::MambaLM lm = ssm::models::MambaLM::load(data_dir("mamba/tiny"));
  auto t = ssm::models::to_trainable(lm);
  auto cfg = lm.config();
  cfg.n_layer += 1;
  expect_error([&] { ssm::models::from_trainable<ssm::models::MambaSpec>(cfg, t); }, {"argument 't'", "layers"});
  cfg = lm.config();
  cfg.tie_embeddings = false;
  expect_error([&] { ssm::models::from_trainable<ssm::models::MambaSpec>(cfg, t); }, {"argument 't'", "tied"});
  cfg = lm.config();
  cfg.norm_epsilon *= 2;
  expect_error([&] { ssm::models::from_trainable<ssm::models::MambaSpec>(cfg, t); }, {"argument 't'", "eps"});
  // Mamba-2 with 2 groups of state 4 in place of 1 of state 8: every tensor keeps its size, the block does not
  const auto lm2 = ssm::models::Mamba2LM::load(data_dir("mamba2/heads4"));
  const auto t2 = ssm::models::to_trainable(lm2);
  auto cfg2 = lm2.config();
  cfg2.n_groups = 2, cfg2.d_state = 4;
  expect_error([&] { ssm::models::from_trainable<ssm::models::Mamba2Spec>(cfg2, t2); },
               {"argument 't'", "another configuration"});
  // a parameter resized through for_each: from_trainable names the checkpoint tensor it was to become
  t.for_each([](const char* name, std::vector<float>& v) {
    if (std::string(name) == "layers.1.mixer.D") v.pop_back();
  });
  expect_error([&] { ssm::models::from_trainable<ssm::models::MambaSpec>(lm.config(), t); }, "layers.1.mixer.D");
}

}  // namespace
