// The Mamba-2 block and language model (layers/mamba2.hpp, models/mamba2.hpp): the logits of committed tiny
// checkpoints equal Hugging Face transformers' pure-PyTorch Mamba2ForCausalLM (golden.json written by
// tools/make_mamba2_golden.py: head_dim 16 / 8 / 32, 1 and 2 groups, chunk sizes 8 / 5 / 16 that leave remainders,
// tied and untied embeddings, biases, a dt limit that clamps, bf16 weights); prefill + steps equal the parallel
// forward; a prefill in pieces equals one; bad configs are ssm::Errors naming the field. The block's backward against
// central differences in double (every parameter, several groups, chunks that leave a remainder, with and without a
// clamping dt limit), f32 against f64, and its errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "ssm/models/mamba.hpp"  // MambaLM: each loader rejects the other's checkpoints
#include "ssm/models/mamba2.hpp"
#include "support/central_differences.hpp"
#include "support/expect_error.hpp"
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
  EXPECT_EQ(m.blocks()[0].matrices().in_proj.dtype(), ssm::DType::bf16);
  EXPECT_EQ(m.blocks()[0].matrices().out_proj.dtype(), ssm::DType::bf16);
  EXPECT_TRUE(m.blocks()[0].params().in_proj_weight.empty());
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
  const auto blk = ssm::layers::Mamba2Block<float>::init(cfg, 3);
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
  const auto blk = ssm::layers::Mamba2Block<float>::init(cfg, 3);
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
  EXPECT_EQ(stopped,
            std::vector<std::int64_t>(a.begin(), a.begin() + (std::find(a.begin(), a.end(), a[2]) - a.begin()) + 1));
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
  EXPECT_EQ(normalized_error(back.logits(TensorView::of(ids.data(), {1, 5})),
                             model.logits(TensorView::of(ids.data(), {1, 5}))),
            0.0);
}

}  // namespace

// ---- backward ------------------------------------------------------------------------------------------------------

namespace {

using ssm::DType;
using ssm::layers::Mamba2Block;
using ssm::layers::Mamba2BlockConfig;

/// d_model 8, 4 heads of 4 channels in 2 groups, state 3, chunks of 4 (l = 11 leaves a remainder), both biases.
Mamba2BlockConfig grad_config() {
  Mamba2BlockConfig cfg;
  cfg.d_model = 8, cfg.d_state = 3, cfg.head_dim = 4, cfg.n_groups = 2, cfg.chunk_size = 4, cfg.bias = true;
  return cfg;
}

/// A block of cfg with D and the norm's weight drawn away from their init (1), so a dropped term would show.
template <class T>
Mamba2Block<T> grad_block(const Mamba2BlockConfig& cfg, std::uint64_t seed) {
  Mamba2Block<T> blk = Mamba2Block<T>::init(cfg, seed);
  std::mt19937_64 rng(seed + 100);
  std::uniform_real_distribution<double> u(0.5, 1.5);
  for (T& d : blk.params().D) d = static_cast<T>(u(rng) - 1.0);
  for (T& w : blk.params().norm_weight) w = static_cast<T>(u(rng));
  blk.set_threads(1);
  return blk;
}

Tensor normal_tensor(ssm::Dims shape, std::uint64_t seed) {
  Tensor t = Tensor::empty(shape, DType::f64);
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n(0, 1);
  for (index_t i = 0; i < t.numel(); ++i) t.data_as<double>()[i] = n(rng);
  return t;
}

/// max |a − b| / max |b| (f32 results against f64 ones).
double error_vs_double(const std::vector<float>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    num = std::max(num, std::abs(double(a[i]) - b[i])), den = std::max(den, std::abs(b[i]));
  return num / std::max(den, 1e-300);
}

Tensor to_f32(const Tensor& t) {
  Tensor f = Tensor::empty(t.shape(), DType::f32);
  for (index_t i = 0; i < t.numel(); ++i) f.data_as<float>()[i] = static_cast<float>(t.data_as<double>()[i]);
  return f;
}

/// ∂L/∂u and every parameter of the block against central differences of L = Σ forward(u) ⊙ R.
void expect_block_gradients(Mamba2Block<double>& blk, index_t b, index_t l, int expected_params) {
  const index_t dm = blk.config().d_model;
  Tensor u = normal_tensor({b, l, dm}, 1), R = normal_tensor({b, l, dm}, 2);
  auto loss = [&] { return ssm_test::weighted_sum(blk.forward(u), R); };
  auto g = blk.backward(u, R);
  ssm_test::expect_central_differences("u", u, ssm_test::to_tensor(g.grad_u), loss);
  EXPECT_EQ(ssm_test::expect_parameter_gradients(blk.params(), g.params, loss), expected_params);
}

}  // namespace

TEST(Mamba2Block, BackwardMatchesCentralDifferences) {
  Mamba2Block<double> blk = grad_block<double>(grad_config(), 3);
  expect_block_gradients(blk, 2, 11, 10);  // in_proj, conv, dt_bias, A_log, D, norm, out_proj: weights and biases
}

// A limit that clamps Δ for some heads and steps (dt_bias puts softplus(dt_bias) in [0.001, 0.1]), without biases, one
// group, a chunk longer than the sequence.
TEST(Mamba2Block, BackwardWithAClampingDtLimitMatchesCentralDifferences) {
  Mamba2BlockConfig cfg = grad_config();
  cfg.dt_limit = {0.01, 0.05}, cfg.bias = false, cfg.n_groups = 1, cfg.chunk_size = 64;
  Mamba2Block<double> blk = grad_block<double>(cfg, 4);
  expect_block_gradients(blk, 2, 9, 8);  // the conv's bias stays; no projection biases
}

// The f32 block's backward equals the f64 one's (the same parameters) to f32's precision, on a longer sequence over
// several chunks and two threads.
TEST(Mamba2Block, FloatBackwardAgreesWithDouble) {
  Mamba2BlockConfig cfg = grad_config();
  cfg.chunk_size = 16;
  const Mamba2Block<double> bd = grad_block<double>(cfg, 5);
  ssm::layers::Mamba2BlockParams<float> pf;
  auto pd = bd.params();
  std::map<std::string, std::vector<double>> by_name;
  pd.for_each([&](const char* name, std::vector<double>& v) { by_name[name] = v; });
  pf.for_each(cfg, [&](const char* name, std::vector<float>& v, const ssm::Dims&) {
    v.assign(by_name[name].begin(), by_name[name].end());
  });
  Mamba2Block<float> bf(cfg, pf);
  bf.set_threads(2);
  const index_t b = 2, l = 70;
  const Tensor ud = normal_tensor({b, l, 8}, 6), Rd = normal_tensor({b, l, 8}, 7);
  const Tensor uf = to_f32(ud), Rf = to_f32(Rd);
  const auto gd = bd.backward(ud, Rd);
  const auto gf = bf.backward(uf, Rf);
  const std::vector<double> yd = bd.forward(ud).to_vector<double>();
  const std::vector<float> yf = bf.forward(uf).to_vector<float>();
  EXPECT_LE(error_vs_double(yf, yd), 1e-5);
  EXPECT_LE(error_vs_double(gf.grad_u, gd.grad_u), 1e-4);
  std::map<std::string, std::vector<double>> gd_by_name;
  auto gdp = gd.params;
  gdp.for_each([&](const char* name, std::vector<double>& v) { gd_by_name[name] = v; });
  int compared = 0;
  auto gfp = gf.params;
  gfp.for_each([&](const char* name, std::vector<float>& v) {
    SCOPED_TRACE(name);
    EXPECT_LE(error_vs_double(v, gd_by_name[name]), 1e-4);
    ++compared;
  });
  EXPECT_EQ(compared, 10);
}

// params() hands out the parameters to an optimizer: a change (A_log included) is used by the next call exactly as by a
// block built from the changed parameters; a parameter resized there, or one the config lacks, is an error.
TEST(Mamba2Block, UpdatedParametersTakeEffectAtOnce) {
  const Mamba2BlockConfig cfg = grad_config();
  Mamba2Block<double> trained = grad_block<double>(cfg, 8);
  trained.params().for_each([](const char*, std::vector<double>& v) {
    for (double& e : v) e *= 1.25;
  });
  const Mamba2Block<double> rebuilt(cfg, trained.params());
  const Tensor u = normal_tensor({2, 6, 8}, 9);
  EXPECT_EQ(trained.forward(u).to_vector<double>(), rebuilt.forward(u).to_vector<double>());
  EXPECT_EQ(trained.backward(u, u).params.A_log, rebuilt.backward(u, u).params.A_log);
  trained.params().D.pop_back();
  ssm_test::expect_error([&] { trained.forward(u); }, {"'D'", "expected shape (4)"});
  auto p = rebuilt.params();
  Mamba2BlockConfig no_bias = cfg;
  no_bias.bias = false;
  ssm_test::expect_error([&] { Mamba2Block<double>(no_bias, p); }, {"'in_proj.bias'", "the config does not have it"});
  // The same found at the next call when set through params(): the forward would read a bias backward ignores.
  Mamba2Block<double> unbiased = grad_block<double>(no_bias, 8);
  unbiased.params().out_proj_bias.assign(8, 0.5);
  ssm_test::expect_error([&] { unbiased.forward(u); }, {"'out_proj.bias'", "the config does not have it"});
}

TEST(Mamba2Block, BackwardBadInputIsAnErrorNamingTheArgument) {
  const Mamba2Block<double> blk = grad_block<double>(grad_config(), 10);
  const Tensor u = normal_tensor({2, 5, 8}, 11);
  ssm_test::expect_error([&] { blk.backward(u, normal_tensor({2, 4, 8}, 12)); }, {"argument 'grad_out'", "(2, 5, 8)"});
  ssm_test::expect_error([&] { blk.backward(to_f32(u), u); }, {"argument 'u'", "f64"});
  ssm_test::expect_error([&] { blk.backward(normal_tensor({2, 5, 7}, 13), u); }, "argument 'u'");
  // A checkpoint's bf16 projections stay weight matrices: the backward says how to get T parameters.
  const Mamba2LM lm = Mamba2LM::load(data_dir("mamba2/bf16"));
  const auto& b16 = lm.blocks()[0];
  const Tensor uf = Tensor::zeros({1, 3, b16.config().d_model}, DType::f32);
  ssm_test::expect_error([&] { b16.backward(uf, uf); }, {"weight matrices", "full_params()"});
  EXPECT_NO_THROW(Mamba2Block<float>(b16.config(), b16.full_params()).backward(uf, uf));
  // A projection given both ways is refused.
  auto both = b16.full_params();
  ssm_test::expect_error([&] { Mamba2Block<float>(b16.config(), both, b16.matrices()); },
                         {"'in_proj.weight'", "both as a vector and as a matrix"});
  // An f32 checkpoint keeps its projections as parameters: its blocks train as loaded.
  const Mamba2LM f32 = Mamba2LM::load(data_dir("mamba2/heads4"));
  EXPECT_FALSE(f32.blocks()[0].matrices().any());
  const Tensor u4 = Tensor::zeros({1, 3, f32.blocks()[0].config().d_model}, DType::f32);
  EXPECT_EQ(f32.blocks()[0].backward(u4, u4).grad_u.size(), 3u * f32.blocks()[0].config().d_model);
}
