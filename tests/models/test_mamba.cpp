// Tests of the Mamba language model (include/ssm/models/mamba.hpp): logits and greedy continuation
// equal Hugging Face transformers' on a committed tiny checkpoint (tools/make_mamba_golden.py);
// step-by-step == parallel forward over 64 tokens; forked caches; sampling; F16/BF16 checkpoints;
// every malformed-checkpoint case.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ssm/models.hpp"
#include "support/golden.hpp"

using namespace ssm;
using namespace ssm::models;
namespace fs = std::filesystem;

namespace {

using ssm::test::data_dir;
using ssm::test::normalized_error;

MambaConfig small_config() {
  MambaConfig c;
  c.d_model = 32;
  c.n_layer = 2;
  c.vocab_size = 50;  // padded to 56
  c.d_state = 8;
  c.d_conv = 4;
  return c;
}

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("ssm_test_mamba_" + name);
  fs::remove_all(p);
  return p;
}

// Loads `dir` and compares with the golden.json in `golden_dir` (default: dir; written by
// tools/make_mamba_golden.py with transformers' pure-PyTorch path): logits of every position, parallel and
// recurrent, and the greedy continuation. f32 on both sides with different summation orders (GEMMs vs PyTorch,
// sequential scan in both): observed ~1e-6; the bound is 1e-4.
void expect_matches_golden(const std::string& dir, std::string golden_dir = "") {
  if (golden_dir.empty()) golden_dir = dir;
  ssm::test::expect_lm_matches_golden(MambaLM::load(dir), ssm::test::load_golden(golden_dir, "tools/make_mamba_golden.py"),
                                      dir, 1e-4, /*stop_at_eos=*/true);
}

// A writable copy of a committed checkpoint directory.
fs::path copy_of(const std::string& rel, const std::string& name) {
  const fs::path dst = temp_dir(name);
  fs::copy(data_dir(rel), dst, fs::copy_options::recursive);
  return dst;
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream is(p);
  return nlohmann::json::parse(is);
}
void write_json(const fs::path& p, const nlohmann::json& j) { std::ofstream(p, std::ios::trunc) << j.dump(2); }

// Runs `f` and expects an ssm::Error whose message contains every needle.
template <class F>
void expect_error(F&& f, std::initializer_list<std::string> needles) {
  try {
    f();
    ADD_FAILURE() << "no error, expected one containing '" << *needles.begin() << "'";
  } catch (const ssm::Error& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

}  // namespace

// ---- golden tests against transformers ------------------------------------------------------------------

TEST(MambaLM, MatchesTransformersGolden) { expect_matches_golden(data_dir("mamba/tiny")); }

// FalconMamba: Mamba's tensors, plus an RMS normalization without weight of δ, B and C (mixer_rms_eps).
TEST(MambaLM, FalconMambaMatchesTransformersGolden) { expect_matches_golden(data_dir("falcon_mamba/tiny")); }

// The tiny model as save_pretrained(max_shard_size=...) writes it: model.safetensors.index.json + shards.
TEST(MambaLM, ShardedCheckpointMatchesTransformersGolden) {
  expect_matches_golden(data_dir("mamba/tiny_sharded"), data_dir("mamba/tiny"));
}

// The tiny model after resize_token_embeddings(257): config.json says vocab_size 257 and still carries
// pad_vocab_size_multiple 8; transformers' embedding has exactly 257 rows.
TEST(MambaLM, ResizedVocabularyMatchesTransformersGolden) { expect_matches_golden(data_dir("mamba/tiny_resized")); }

// ---- recurrent == parallel, forks ----------------------------------------------------------------------

TEST(MambaLM, StepByStepEqualsParallelOver64Tokens) {
  MambaLM model = MambaLM::init(small_config(), 42);
  const index_t b = 2, l = 64, V = model.config().padded_vocab();
  std::vector<std::int64_t> ids(b * l);
  std::mt19937_64 rng(3);
  for (auto& x : ids) x = static_cast<std::int64_t>(rng() % 50);
  Tensor full = model.logits(TensorView::of(ids.data(), {b, l}));  // (b, l, V)
  MambaCache cache = model.make_cache(b);
  double err = 0;
  for (index_t t = 0; t < l; ++t) {
    const std::int64_t tok[2] = {ids[t], ids[l + t]};
    Tensor s = model.step(std::span<const std::int64_t>(tok, 2), cache);  // (b, V)
    for (index_t bi = 0; bi < b; ++bi)
      err = std::max(err, normalized_error(s.data_as<float>() + bi * V, full.data_as<float>() + (bi * l + t) * V,
                                           static_cast<std::size_t>(V)));
  }
  // Same f32 arithmetic except GEMM vs GEMV summation order in the projections: ~1e-7 expected.
  EXPECT_LE(err, 1e-5);
  EXPECT_EQ(cache.seqlen, l);
  // A prefill in chunks of 1, 2 (shorter than d_conv − 1) and 61 tokens ends in the same state.
  std::vector<std::int64_t> chunk;
  MambaCache chunked;
  index_t start = 0;
  Tensor last;
  for (index_t len : {1, 2, 61}) {
    chunk.clear();
    for (index_t bi = 0; bi < b; ++bi)
      for (index_t t = start; t < start + len; ++t) chunk.push_back(ids[bi * l + t]);
    last = model.prefill(TensorView::of(chunk.data(), {b, len}), chunked, /*resume=*/start > 0);
    start += len;
  }
  EXPECT_EQ(chunked.seqlen, l);
  for (index_t bi = 0; bi < b; ++bi)
    EXPECT_LE(normalized_error(last.data_as<float>() + bi * V, full.data_as<float>() + (bi * l + l - 1) * V,
                               static_cast<std::size_t>(V)),
              1e-5);
  for (std::size_t i = 0; i < cache.layers.size(); ++i) {
    const auto want = cache.layers[i].ssm_state.to_vector<float>(), got = chunked.layers[i].ssm_state.to_vector<float>();
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t k = 0; k < want.size(); ++k) ASSERT_NEAR(got[k], want[k], 1e-5 * std::max(1.0f, std::abs(want[k])));
  }
}

TEST(MambaLM, ForkedCacheContinuesIndependently) {
  MambaLM model = MambaLM::init(small_config(), 7);
  const std::vector<std::int64_t> prompt = {3, 1, 4, 1, 5, 9, 2, 6};
  MambaCache a;
  model.prefill(TensorView::of(prompt.data(), {1, 8}), a);
  const std::size_t bytes = a.nbytes();
  MambaCache fork = a;  // copy = fork
  const std::int64_t x = 11, y = 22;
  Tensor la = model.step(std::span<const std::int64_t>(&x, 1), a);
  Tensor lb = model.step(std::span<const std::int64_t>(&y, 1), fork);
  // Each branch equals the parallel forward over its own full sequence.
  for (auto [tok, lg] : {std::pair<std::int64_t, Tensor*>{x, &la}, {y, &lb}}) {
    auto seq = prompt;
    seq.push_back(tok);
    Tensor full = model.logits(TensorView::of(seq.data(), {1, 9}));
    const index_t V = model.config().padded_vocab();
    EXPECT_LE(normalized_error(lg->data_as<float>(), full.data_as<float>() + 8 * V, static_cast<std::size_t>(V)), 1e-5);
  }
  EXPECT_NE(la.to_vector<float>(), lb.to_vector<float>());
  // The cache does not grow with the context.
  for (int i = 0; i < 50; ++i) model.step(std::span<const std::int64_t>(&x, 1), a);
  EXPECT_EQ(a.nbytes(), bytes);
  EXPECT_EQ(a.seqlen, 59);
}

// Prefill checks its ids and a resumed cache before it writes anything: a refused call leaves the cache's bytes.
TEST(MambaLM, RefusedPrefillLeavesTheCacheAsItWas) {
  ssm::test::expect_refused_prefill_keeps_cache(MambaLM::init(small_config(), 3));
}

// ---- sampling ------------------------------------------------------------------------------------------

TEST(MambaLM, Sampling) {
  const std::vector<float> logits = {0.0f, std::log(2.0f), std::log(3.0f), std::log(4.0f), -30.0f};
  std::mt19937_64 rng(1);
  SamplingOptions greedy;
  EXPECT_EQ(sample_token(logits, greedy, rng), 3);
  SamplingOptions k1;
  k1.temperature = 1.0;
  k1.top_k = 1;
  EXPECT_EQ(sample_token(logits, k1, rng), 3);
  // Temperature 1: probabilities 1:2:3:4 (over 10) and ~0 for the last token. 20000 draws; the counts
  // must be within 5 standard deviations (deterministic seed, so this cannot flake).
  SamplingOptions t1;
  t1.temperature = 1.0;
  std::vector<int> count(5, 0);
  const int draws = 20000;
  for (int i = 0; i < draws; ++i) ++count[static_cast<std::size_t>(sample_token(logits, t1, rng))];
  for (int k = 0; k < 4; ++k) {
    const double p = (k + 1) / 10.0;
    EXPECT_NEAR(count[k], draws * p, 5 * std::sqrt(draws * p * (1 - p))) << k;
  }
  EXPECT_EQ(count[4], 0);
  // top_k 2 keeps tokens 3 and 2 (4:3); top_p 0.5 keeps 3 and 2 (0.4 + 0.3 ≥ 0.5), never 1 or 0.
  for (auto opt : {SamplingOptions{1.0, 2, 1.0, 0}, SamplingOptions{1.0, 0, 0.5, 0}}) {
    std::vector<int> c(5, 0);
    for (int i = 0; i < 4000; ++i) ++c[static_cast<std::size_t>(sample_token(logits, opt, rng))];
    EXPECT_EQ(c[0] + c[1] + c[4], 0);
    EXPECT_NEAR(c[3] / 4000.0, 4.0 / 7.0, 0.04);
  }
  // Seeds: the same seed gives the same sequence; generation with sampling stays within the real vocab.
  MambaLM model = MambaLM::init(small_config(), 9);
  SamplingOptions s;
  s.temperature = 1.5;
  s.top_p = 0.95;
  s.seed = 123;
  const auto g1 = model.generate({1, 2, 3}, 30, s), g2 = model.generate({1, 2, 3}, 30, s);
  EXPECT_EQ(g1, g2);
  s.seed = 124;
  EXPECT_NE(model.generate({1, 2, 3}, 30, s), g1);
  for (auto t : g1) EXPECT_LT(t, 50);
  SamplingOptions bad;
  bad.top_p = 0.0;
  EXPECT_THROW(model.generate({1}, 1, bad), ssm::Error);
  bad = {};
  bad.temperature = std::nan("");
  EXPECT_THROW(model.generate({1}, 1, bad), ssm::Error);
}

// ---- checkpoints ---------------------------------------------------------------------------------------

TEST(MambaLM, SaveLoadRoundTripF32F16BF16) {
  MambaConfig cfg = small_config();
  cfg.tie_embeddings = false;
  cfg.bias = true;
  MambaLM model = MambaLM::init(cfg, 5);
  const std::vector<std::int64_t> ids = {5, 6, 7, 8, 9, 10};
  const auto ref = model.logits(TensorView::of(ids.data(), {1, 6})).to_vector<float>();
  for (DType dt : {DType::f32, DType::f16, DType::bf16}) {
    const auto dir = temp_dir("rt_" + std::string(name(dt)));
    model.save(dir.string(), dt);
    MambaLM back = MambaLM::load(dir.string());
    EXPECT_EQ(back.config().padded_vocab(), 56);
    const auto got = back.logits(TensorView::of(ids.data(), {1, 6})).to_vector<float>();
    // f32 is exact; f16 (11-bit mantissa) and bf16 (8-bit) weight rounding perturb logits by ~2^-11
    // and ~2^-8 relative, amplified modestly by two layers.
    const double tol = dt == DType::f32 ? 0.0 : dt == DType::f16 ? 5e-3 : 5e-2;
    EXPECT_LE(normalized_error(got.data(), ref.data(), ref.size()), tol) << name(dt);
    if (dt == DType::bf16) {
      // The weights themselves are the bf16 roundings of the originals.
      const auto& p0 = model.blocks()[0].params().in_proj_weight;
      const auto p1 = back.blocks()[0].full_params().in_proj_weight;  // held in bf16: converted
      for (std::size_t i = 0; i < p0.size(); ++i) ASSERT_EQ(p1[i], static_cast<float>(bfloat16(p0[i])));
    }
    fs::remove_all(dir);
  }
}

TEST(MambaLM, MalformedCheckpoints) {
  MambaConfig cfg = small_config();
  cfg.n_layer = 1;
  MambaLM model = MambaLM::init(cfg, 1);
  const auto dir = temp_dir("bad");
  model.save(dir.string());
  ASSERT_NO_THROW(MambaLM::load(dir.string()));
  const std::string st = (dir / "model.safetensors").string();
  // Owned copies of the tensors: the file is rewritten below, and a mapping must not outlive its
  // file's contents (a truncated mapped file faults on access, as with any mmap).
  std::vector<std::pair<std::string, Tensor>> original;
  {
    auto f = safetensors::File::open(st);
    for (const auto& e : f.entries()) original.emplace_back(e.name, f.tensor(e.name).to(Device::cpu()));
  }
  // Rewrites model.safetensors with the tensors transformed by `edit`.
  auto rewrite = [&](const std::function<void(std::vector<std::pair<std::string, Tensor>>&)>& edit) {
    auto ts = original;
    edit(ts);
    std::vector<std::pair<std::string, TensorView>> views;
    for (auto& [n, t] : ts) views.emplace_back(n, t.view());
    safetensors::save(st, views);
  };
  auto expect_load_error = [&](const std::string& needle) {
    try {
      MambaLM::load(dir.string());
      ADD_FAILURE() << "loaded, expected an error containing '" << needle << "'";
    } catch (const ssm::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const std::string bytes = [&] {
    std::ifstream is(st, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(is), {});
  }();
  auto restore = [&] {
    std::ofstream os(st, std::ios::binary | std::ios::trunc);
    os.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  };

  // Missing tensor.
  rewrite([](auto& ts) { ts.erase(ts.begin()); });
  expect_load_error("lacks tensor 'backbone.embeddings.weight'");
  // Extra tensor.
  rewrite([](auto& ts) { ts.emplace_back("backbone.layers.7.mixer.D", Tensor::zeros({4}, DType::f32)); });
  expect_load_error("unexpected tensor 'backbone.layers.7.mixer.D'");
  // Wrong shape for the config.
  rewrite([](auto& ts) {
    for (auto& [n, t] : ts)
      if (n == "backbone.layers.0.mixer.A_log") t = Tensor::zeros({64, 7}, DType::f32);
  });
  expect_load_error("has shape (64, 7), the config needs (64, 8)");
  // Non-floating dtype.
  rewrite([](auto& ts) {
    for (auto& [n, t] : ts)
      if (n == "backbone.norm_f.weight") t = Tensor::zeros({32}, DType::i32);
  });
  expect_load_error("dtype I32");
  // Truncated file.
  restore();
  fs::resize_file(st, bytes.size() - 5);
  expect_load_error("out of range");  // the last tensor now ends past the data section
  fs::resize_file(st, 20);
  expect_load_error("runs past the end");
  restore();
  // Missing files, bad and inconsistent config.json.
  ASSERT_NO_THROW(MambaLM::load(dir.string()));
  const auto cfg_path = dir / "config.json";
  const std::string cfg_text = [&] {
    std::ifstream is(cfg_path);
    return std::string(std::istreambuf_iterator<char>(is), {});
  }();
  auto write_cfg = [&](const std::string& s) { std::ofstream(cfg_path, std::ios::trunc) << s; };
  write_cfg("{ not json");
  expect_load_error("not valid JSON");
  auto j = nlohmann::json::parse(cfg_text);
  j["hidden_size"] = 0;
  write_cfg(j.dump());
  expect_load_error("d_model must be >= 1");
  j = nlohmann::json::parse(cfg_text);
  j["state_size"] = 16;  // the file has d_state 8
  write_cfg(j.dump());
  expect_load_error("x_proj.weight' has shape (18, 64), the config needs (34, 64)");
  j = nlohmann::json::parse(cfg_text);
  j.erase("num_hidden_layers");
  write_cfg(j.dump());
  expect_load_error("lacks 'num_hidden_layers'");
  j = nlohmann::json::parse(cfg_text);
  j["layer_norm_epsilon"] = "small";
  write_cfg(j.dump());
  expect_load_error("must be a number");
  fs::remove(cfg_path);
  expect_load_error("config.json' not found");
  write_cfg(cfg_text);
  fs::remove(st);
  expect_load_error("model.safetensors' not found");
  fs::remove_all(dir);
  // Bad ids.
  const std::vector<std::int64_t> bad = {1, 56};
  EXPECT_THROW(model.logits(TensorView::of(bad.data(), {1, 2})), ssm::Error);
  const std::vector<float> fl = {1.0f};
  EXPECT_THROW(model.logits(TensorView::of(fl.data(), {1, 1})), ssm::Error);
}

// ---- model types, config dialects ------------------------------------------------------------------------

TEST(MambaLM, ModelTypeAndArchitectures) {
  const fs::path dir = copy_of("mamba/tiny", "types");
  const auto cfg = read_json(dir / "config.json");
  auto load_with = [&](const std::function<void(nlohmann::json&)>& edit) {
    auto j = cfg;
    edit(j);
    write_json(dir / "config.json", j);
    return MambaLM::load(dir.string());
  };
  // Other architectures are named, never loaded as Mamba nor reported as a missing tensor.
  expect_error([&] { load_with([](auto& j) { j["model_type"] = "mamba2"; }); },
               {"model_type 'mamba2' is a Mamba-2 model: load it with ssm::models::Mamba2LM::load"});
  expect_error([&] { load_with([](auto& j) { j["model_type"] = "jamba"; }); },
               {"model_type 'jamba' is not a Mamba model (supported: mamba, falcon_mamba; ", "jamba with JambaLM"});
  expect_error([&] { load_with([](auto& j) { j["model_type"] = 2; }); }, {"model_type", "must be a string"});
  expect_error([&] {
    load_with([](auto& j) {
      j.erase("model_type");
      j["architectures"] = {"Mamba2ForCausalLM"};
    });
  }, {"architecture 'Mamba2ForCausalLM' is not implemented by this library"});
  expect_error([&] { load_with([](auto& j) { j["architectures"] = {"MambaModel"}; }); },
               {"architecture 'MambaModel'"});
  expect_error([&] { load_with([](auto& j) { j["model_type"] = "falcon_mamba"; }); },
               {"model_type 'falcon_mamba'", "architectures", "MambaForCausalLM"});
  expect_error([&] { load_with([](auto& j) { j["architectures"] = "MambaForCausalLM"; }); },
               {"architectures", "must be an array of strings"});
  // Only one of the two keys is enough.
  EXPECT_NO_THROW(load_with([](auto& j) { j.erase("architectures"); }));
  EXPECT_NO_THROW(load_with([](auto& j) { j.erase("model_type"); }));
  // A config with neither, and none of mamba_ssm's keys either.
  expect_error([&] {
    load_with([](auto& j) {
      j.erase("model_type");
      j.erase("architectures");
    });
  }, {"neither 'model_type' nor 'architectures'"});
  fs::remove_all(dir);
}

namespace {
// tiny's config.json in mamba_ssm's dialect (MambaLMHeadModel's config): no model_type, d_model, n_layer, ssm_cfg.
nlohmann::json mamba_ssm_config(const MambaConfig& c) {
  return {{"d_model", c.d_model},
          {"d_intermediate", 0},
          {"n_layer", c.n_layer},
          {"vocab_size", c.vocab_size},
          {"ssm_cfg", nlohmann::json::object()},
          {"attn_layer_idx", nlohmann::json::array()},
          {"attn_cfg", nlohmann::json::object()},
          {"rms_norm", true},
          {"residual_in_fp32", true},
          {"fused_add_norm", true},
          {"pad_vocab_size_multiple", c.pad_vocab_size_multiple},
          {"tie_embeddings", c.tie_embeddings}};
}
}  // namespace

TEST(MambaLM, MambaSsmConfigs) {
  // A model whose block options all differ from the defaults: biases on, conv bias off, dt_rank 3 (auto: 2).
  MambaConfig cfg = small_config();
  cfg.bias = true;
  cfg.conv_bias = false;
  cfg.dt_rank = 3;
  cfg.pad_vocab_size_multiple = 1;
  cfg.vocab_size = 56;
  MambaLM model = MambaLM::init(cfg, 4);
  const auto dir = temp_dir("ssm_cfg");
  model.save(dir.string());
  const std::vector<std::int64_t> ids = {1, 2, 3, 4, 5};
  const auto ref = model.logits(TensorView::of(ids.data(), {1, 5})).to_vector<float>();
  auto j = mamba_ssm_config(cfg);
  j["ssm_cfg"] = {{"d_state", 8}, {"d_conv", 4}, {"expand", 2}, {"dt_rank", 3}, {"bias", true}, {"conv_bias", false},
                  {"dt_min", 0.001}, {"use_fast_path", true}};
  write_json(dir / "config.json", j);
  MambaLM back = MambaLM::load(dir.string());
  EXPECT_EQ(back.config().dt_rank, 3);
  EXPECT_TRUE(back.config().bias);
  EXPECT_FALSE(back.config().conv_bias);
  EXPECT_EQ(back.logits(TensorView::of(ids.data(), {1, 5})).to_vector<float>(), ref);
  // dt_rank "auto" is ceil(d_model / 16) = 2: x_proj then has the wrong shape, reported as such.
  j["ssm_cfg"]["dt_rank"] = "auto";
  write_json(dir / "config.json", j);
  expect_error([&] { MambaLM::load(dir.string()); }, {"x_proj.weight' has shape (19, 64), the config needs (18, 64)"});
  j["ssm_cfg"]["dt_rank"] = "big";
  write_json(dir / "config.json", j);
  expect_error([&] { MambaLM::load(dir.string()); }, {"ssm_cfg", "dt_rank", "\"auto\""});
  j["ssm_cfg"]["dt_rank"] = 3;
  j["ssm_cfg"]["bias"] = 1;
  write_json(dir / "config.json", j);
  expect_error([&] { MambaLM::load(dir.string()); }, {"ssm_cfg", "bias", "must be a boolean"});
  // Mamba-2 layers, unknown block options, attention layers, MLPs and LayerNorm are not this model.
  for (auto [edit, needle] : std::vector<std::pair<std::function<void(nlohmann::json&)>, std::string>>{
           {[](auto& c) { c["ssm_cfg"] = {{"layer", "Mamba2"}}; }, "ssm_cfg layer 'Mamba2'"},
           {[](auto& c) { c["ssm_cfg"] = {{"headdim", 64}}; }, "ssm_cfg key 'headdim'"},
           {[](auto& c) { c["attn_layer_idx"] = {1}; }, "attn_layer_idx"},
           {[](auto& c) { c["d_intermediate"] = 128; }, "d_intermediate"},
           {[](auto& c) { c["rms_norm"] = false; }, "rms_norm"}}) {
    auto k = mamba_ssm_config(cfg);
    edit(k);
    write_json(dir / "config.json", k);
    expect_error([&] { MambaLM::load(dir.string()); }, {needle});
  }
  fs::remove_all(dir);
}

TEST(MambaConfig, VocabularyPadding) {
  // mamba_ssm pads the embedding to a multiple of pad_vocab_size_multiple (MambaLMHeadModel.__init__) ...
  MambaConfig c = small_config();
  c.pad_vocab_size_multiple = 8;
  auto ms = mamba_ssm_config(c);
  EXPECT_EQ(MambaConfig::from_json(ms).padded_vocab(), 56);
  ms.erase("pad_vocab_size_multiple");  // mamba_ssm's default is 8
  EXPECT_EQ(MambaConfig::from_json(ms).padded_vocab(), 56);
  // ... transformers builds nn.Embedding(vocab_size) and ignores the key, which converted checkpoints keep
  // and resize_token_embeddings leaves behind next to a vocabulary that is no longer a multiple of it.
  const auto hf = read_json(data_dir("mamba/tiny/config.json"));
  auto j = hf;
  j["vocab_size"] = 257;
  j["pad_vocab_size_multiple"] = 8;
  EXPECT_EQ(MambaConfig::from_json(j).padded_vocab(), 257);
  EXPECT_EQ(MambaConfig::from_json(j).vocab_size, 257);
}

// ---- checkpoint layouts ----------------------------------------------------------------------------------

TEST(MambaLM, ShardedCheckpoints) {
  const fs::path dir = temp_dir("shards");
  fs::create_directories(dir);
  fs::copy_file(data_dir("mamba/tiny/config.json"), dir / "config.json");
  // Three shards, tensors dealt round-robin, and the index mapping each to its shard.
  std::vector<std::pair<std::string, Tensor>> all;
  {
    auto f = safetensors::File::open(data_dir("mamba/tiny/model.safetensors"));
    for (const auto& e : f.entries()) all.emplace_back(e.name, f.tensor(e.name).to(Device::cpu()));
  }
  const char* names[3] = {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                          "model-00003-of-00003.safetensors"};
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  auto write_shards = [&](const std::vector<std::pair<std::string, Tensor>>& ts) {
    std::vector<std::pair<std::string, TensorView>> parts[3];
    for (std::size_t i = 0; i < ts.size(); ++i) parts[i % 3].emplace_back(ts[i].first, ts[i].second.view());
    for (int k = 0; k < 3; ++k) safetensors::save((dir / names[k]).string(), parts[k]);
  };
  write_shards(all);
  for (std::size_t i = 0; i < all.size(); ++i) index["weight_map"][all[i].first] = names[i % 3];
  write_json(dir / "model.safetensors.index.json", index);
  const std::vector<std::int64_t> ids = {1, 17, 42, 99, 3, 250};
  const auto ref = MambaLM::load(data_dir("mamba/tiny")).logits(TensorView::of(ids.data(), {1, 6})).to_vector<float>();
  EXPECT_EQ(MambaLM::load(dir.string()).logits(TensorView::of(ids.data(), {1, 6})).to_vector<float>(), ref);
  const std::string t0 = all[0].first, t1 = all[1].first;
  auto with_index = [&](const std::function<void(nlohmann::json&)>& edit) {
    auto j = index;
    edit(j);
    write_json(dir / "model.safetensors.index.json", j);
  };
  // A shard that is not there.
  with_index([&](auto& j) { j["weight_map"][t0] = "model-00009-of-00003.safetensors"; });
  expect_error([&] { MambaLM::load(dir.string()); }, {"model-00009-of-00003.safetensors", "not found", t0});
  // The map sends a tensor to a shard that lacks it (and then its own shard holds a tensor not in the map).
  with_index([&](auto& j) { j["weight_map"][t0] = names[1]; });
  expect_error([&] { MambaLM::load(dir.string()); }, {t0, names[1], "lacks"});
  // A tensor in a shard that the map does not list.
  with_index([&](auto& j) { j["weight_map"].erase(t0); });
  expect_error([&] { MambaLM::load(dir.string()); }, {t0, names[0], "not listed in the weight_map"});
  // A tensor in two shards.
  with_index([](auto&) {});
  {
    std::vector<std::pair<std::string, TensorView>> parts[3];
    for (std::size_t i = 0; i < all.size(); ++i) parts[i % 3].emplace_back(all[i].first, all[i].second.view());
    parts[1].emplace_back(t0, all[0].second.view());  // t0 also in the second shard
    for (int k = 0; k < 3; ++k) safetensors::save((dir / names[k]).string(), parts[k]);
  }
  expect_error([&] { MambaLM::load(dir.string()); }, {t0, names[0], names[1], "both"});
  write_shards(all);
  // A name twice in the weight_map (JSON keeps the last silently; the file is rejected).
  {
    std::string text = index.dump();
    const std::string key = "\"weight_map\":{";
    text.insert(text.find(key) + key.size(), "\"" + t1 + "\":\"" + names[2] + "\",");
    std::ofstream(dir / "model.safetensors.index.json", std::ios::trunc) << text;
  }
  expect_error([&] { MambaLM::load(dir.string()); }, {t1, "twice"});
  // Shard names are file names in the directory, not paths.
  with_index([&](auto& j) { j["weight_map"][t0] = "../model-00001-of-00003.safetensors"; });
  expect_error([&] { MambaLM::load(dir.string()); }, {"../model-00001-of-00003.safetensors", "file name"});
  with_index([&](auto& j) { j.erase("weight_map"); });
  expect_error([&] { MambaLM::load(dir.string()); }, {"model.safetensors.index.json", "weight_map"});
  std::ofstream(dir / "model.safetensors.index.json", std::ios::trunc) << "{ no";
  expect_error([&] { MambaLM::load(dir.string()); }, {"model.safetensors.index.json", "not valid JSON"});
  fs::remove_all(dir);
}

TEST(MambaLM, PyTorchPickleCheckpointsAreExplained) {
  for (const char* file : {"pytorch_model.bin", "pytorch_model.bin.index.json"}) {
    const fs::path dir = temp_dir("bin");
    fs::create_directories(dir);
    fs::copy_file(data_dir("mamba/tiny/config.json"), dir / "config.json");
    std::ofstream(dir / file) << "PK";
    expect_error([&] { MambaLM::load(dir.string()); },
                 {file, "PyTorch pickle", "does not read", "save_pretrained", "safe_serialization=True"});
    fs::remove_all(dir);
  }
  const fs::path dir = temp_dir("none");
  fs::create_directories(dir);
  fs::copy_file(data_dir("mamba/tiny/config.json"), dir / "config.json");
  expect_error([&] { MambaLM::load(dir.string()); }, {"model.safetensors", "model.safetensors.index.json", "no weights"});
  fs::remove_all(dir);
}

// ---- generation: end of sequence ---------------------------------------------------------------------------

TEST(MambaLM, GenerationStopsAtEndOfSequence) {
  const auto g = read_json(data_dir("mamba/tiny/golden.json"));
  const auto prompt = g["prompt"].get<std::vector<std::int64_t>>();
  const auto cont = g["continuation"].get<std::vector<std::int64_t>>();
  // The first token of the continuation not seen before in it, at position k >= 2.
  std::size_t k = 2;
  while (std::find(cont.begin(), cont.begin() + static_cast<std::ptrdiff_t>(k), cont[k]) != cont.begin() + static_cast<std::ptrdiff_t>(k)) ++k;
  const std::vector<std::int64_t> upto(cont.begin(), cont.begin() + static_cast<std::ptrdiff_t>(k) + 1);
  const fs::path dir = copy_of("mamba/tiny", "eos");
  auto cfg = read_json(dir / "config.json");
  // eos_token_id as an int and as a list (transformers writes both forms); the stop token is part of the output,
  // as in transformers' generate().
  for (const nlohmann::json& eos : {nlohmann::json(cont[k]), nlohmann::json({255, cont[k]})}) {
    cfg["eos_token_id"] = eos;
    write_json(dir / "config.json", cfg);
    MambaLM model = MambaLM::load(dir.string());
    EXPECT_EQ(model.generate(prompt, static_cast<index_t>(cont.size())), upto) << eos.dump();
  }
  cfg["eos_token_id"] = "x";
  write_json(dir / "config.json", cfg);
  expect_error([&] { MambaLM::load(dir.string()); }, {"eos_token_id"});
  fs::remove_all(dir);
}

TEST(MambaLM, StopIdsOverrideTheConfig) {
  MambaLM model = MambaLM::load(data_dir("mamba/tiny"));
  const auto g = read_json(data_dir("mamba/tiny/golden.json"));
  const auto prompt = g["prompt"].get<std::vector<std::int64_t>>();
  const auto cont = g["continuation"].get<std::vector<std::int64_t>>();
  EXPECT_EQ(model.config().eos_token_ids, std::vector<std::int64_t>{0});  // tiny's eos_token_id, never produced
  GenerationOptions opt;
  opt.stop_ids = std::vector<std::int64_t>{cont[0]};
  EXPECT_EQ(model.generate(prompt, 20, opt), std::vector<std::int64_t>{cont[0]});
  opt.stop_ids = std::vector<std::int64_t>{};  // never stop early
  EXPECT_EQ(model.generate(prompt, static_cast<index_t>(cont.size()), opt), cont);
  // SamplingOptions still convert (sampling only: stop at the config's ids).
  SamplingOptions s;
  EXPECT_EQ(model.generate(prompt, 3, s), std::vector<std::int64_t>(cont.begin(), cont.begin() + 3));
  opt.stop_ids = std::vector<std::int64_t>{-1};
  expect_error([&] { model.generate(prompt, 3, opt); }, {"stop_ids"});
}

// ---- threads ---------------------------------------------------------------------------------------------------

TEST(MambaLM, SetThreads) {
  MambaConfig cfg = small_config();
  cfg.d_model = 64;
  MambaLM one = MambaLM::init(cfg, 8);
  MambaLM two = one;
  EXPECT_EQ(one.threads(), 0);
  one.set_threads(1);
  two.set_threads(2);
  // Applied to every block (which split their GEMMs, conv and scan over that many threads).
  EXPECT_EQ(two.threads(), 2);
  for (const auto& b : two.blocks()) EXPECT_EQ(b.threads(), 2);
  for (const auto& b : one.blocks()) EXPECT_EQ(b.threads(), 1);
  // Large enough that the work is split (ssm::cpu::cpu_threads gives small problems one thread).
  const index_t b = 2, l = 300;
  std::vector<std::int64_t> ids(static_cast<std::size_t>(b * l));
  std::mt19937_64 rng(5);
  for (auto& x : ids) x = static_cast<std::int64_t>(rng() % 50);
  // The conv, the scan and the transposes compute every element by the same arithmetic whatever the split; the
  // GEMMs split their output features, and Eigen's kernels for a narrower block may sum in another order (seen:
  // 1 ulp on a few logits). So equal to f32 rounding, and the same tokens.
  const auto l1 = one.logits(TensorView::of(ids.data(), {b, l})).to_vector<float>();
  const auto l2 = two.logits(TensorView::of(ids.data(), {b, l})).to_vector<float>();
  EXPECT_LE(normalized_error(l2.data(), l1.data(), l1.size()), 1e-6);
  EXPECT_EQ(one.generate({1, 2, 3}, 10), two.generate({1, 2, 3}, 10));
  expect_error([&] { one.set_threads(-1); }, {"set_threads", "n must be >= 0"});
  EXPECT_EQ(one.threads(), 1);
}

TEST(MambaLM, MambaSsmCheckpointOfTinyMatchesTransformers) {
  // tiny as mamba_ssm writes it (docs/checkpoints.md's conversion of its pytorch_model.bin): the tensor name
  // backbone.embedding.weight, the tied lm_head.weight stored too, and mamba_ssm's config.json.
  const fs::path dir = temp_dir("mamba_ssm_tiny");
  fs::create_directories(dir);
  std::vector<std::pair<std::string, Tensor>> ts;
  {
    auto f = safetensors::File::open(data_dir("mamba/tiny/model.safetensors"));
    for (const auto& e : f.entries()) {
      Tensor t = f.tensor(e.name).to(Device::cpu());
      if (e.name == "backbone.embeddings.weight") {
        ts.emplace_back("backbone.embedding.weight", t);
        ts.emplace_back("lm_head.weight", t);
      } else {
        ts.emplace_back(e.name, t);
      }
    }
  }
  std::vector<std::pair<std::string, TensorView>> views;
  for (auto& [n, t] : ts) views.emplace_back(n, t.view());
  safetensors::save((dir / "model.safetensors").string(), views);
  MambaConfig c;
  c.d_model = 64;
  c.n_layer = 2;
  c.vocab_size = 256;
  c.pad_vocab_size_multiple = 8;
  write_json(dir / "config.json", mamba_ssm_config(c));
  const std::vector<std::int64_t> ids = {1, 17, 42, 99, 3, 250};
  const auto ref = MambaLM::load(data_dir("mamba/tiny")).logits(TensorView::of(ids.data(), {1, 6})).to_vector<float>();
  EXPECT_EQ(MambaLM::load(dir.string()).logits(TensorView::of(ids.data(), {1, 6})).to_vector<float>(), ref);
  fs::remove_all(dir);
}

// ---- 16-bit weights kept (LoadOptions::weight_dtype) ------------------------------------------------------

// An f16 / bf16 checkpoint loaded as it is (the default) computes what the f32 model of the SAME rounded
// weights (weight_dtype f32) computes: the only difference is the order of the f32 sums inside the products
// (converted weight panels or gemv tiles against Eigen's f32 GEMM). Each dot product here has at most 64
// (d_inner) terms, so it moves by at most ~64 · 2^-24 ≈ 4e-6 of Σ|terms|; through two layers (the scan
// and norms are identical code) the logits' normalized error stays ~1e-6 (measured: 0 for the 40-row logits,
// whose converted panels go through the same Eigen kernel as f32; the gemv tiles of step differ), and 2e-5 is
// still far below the effect of rounding the weights themselves (~1e-3 for f16, ~1e-2 for bf16).
TEST(MambaLM, HalfWeightsEqualF32OfTheSameWeights) {
  for (bool tied : {true, false})
    for (DType dt : {DType::f16, DType::bf16}) {
      SCOPED_TRACE(std::string(name(dt)) + (tied ? " tied" : " untied"));
      MambaConfig cfg = small_config();
      cfg.tie_embeddings = tied;
      cfg.bias = !tied;
      const MambaLM orig = MambaLM::init(cfg, 11);
      const auto dir = temp_dir(std::string("half_") + std::string(name(dt)));
      orig.save(dir.string(), dt);
      const MambaLM half_model = MambaLM::load(dir.string());  // default: the stored dtype is kept
      LoadOptions as_f32;
      as_f32.weight_dtype = DType::f32;
      const MambaLM f32_model = MambaLM::load(dir.string(), as_f32);
      EXPECT_EQ(half_model.weight_dtype(), dt);
      EXPECT_EQ(f32_model.weight_dtype(), DType::f32);
      EXPECT_LT(half_model.weight_bytes(), f32_model.weight_bytes() * 6 / 10);
      // 2 x 20 tokens: 40 rows take the converted-panel GEMM; prefill's head and step take the gemv tiles.
      std::vector<std::int64_t> ids(40);
      for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int64_t>((i * 7 + 3) % 50);
      const auto ids_view = TensorView::of(ids.data(), {2, 20});
      const auto a = half_model.logits(ids_view).to_vector<float>();
      const auto b = f32_model.logits(ids_view).to_vector<float>();
      const double err = normalized_error(a.data(), b.data(), b.size());
      std::printf("[ half ] %s %s: logits normalized error against f32 of the same weights %g\n",
                  std::string(name(dt)).c_str(), tied ? "tied" : "untied", err);
      EXPECT_LE(err, 2e-5);
      MambaCache ca, cb;
      const auto pa = half_model.prefill(ids_view, ca).to_vector<float>();
      const auto pb = f32_model.prefill(ids_view, cb).to_vector<float>();
      EXPECT_LE(normalized_error(pa.data(), pb.data(), pb.size()), 2e-5);
      const std::vector<std::int64_t> next = {4, 9};
      const auto sa = half_model.step(next, ca).to_vector<float>();
      const auto sb = f32_model.step(next, cb).to_vector<float>();
      EXPECT_LE(normalized_error(sa.data(), sb.data(), sb.size()), 2e-5);
      const std::vector<std::int64_t> prompt = {1, 2, 3, 4, 5};
      EXPECT_EQ(half_model.generate(prompt, 16), f32_model.generate(prompt, 16));
      // The f32 checkpoint converted at load (weight_dtype = dt) holds the same matrices as the saved dt file
      // (its small parameters stay f32, unrounded: compared below through full_params()).
      const auto dir32 = temp_dir("half_from_f32");
      orig.save(dir32.string(), DType::f32);
      LoadOptions to_half;
      to_half.weight_dtype = dt;
      const MambaLM converted = MambaLM::load(dir32.string(), to_half);
      EXPECT_EQ(converted.weight_dtype(), dt);
      // save() of a half model writes the same weights back.
      const auto dir2 = temp_dir("half_resaved");
      half_model.save(dir2.string(), dt);
      EXPECT_EQ(MambaLM::load(dir2.string()).logits(ids_view).to_vector<float>(), a);
      // The projections as held, widened to f32 (full_params): the same rounded values in the three models.
      for (std::size_t i = 0; i < half_model.blocks().size(); ++i) {
        const auto qa = half_model.blocks()[i].full_params(), qb = f32_model.blocks()[i].full_params(),
                   qc = converted.blocks()[i].full_params();
        EXPECT_EQ(qa.in_proj_weight, qb.in_proj_weight);
        EXPECT_EQ(qa.in_proj_weight, qc.in_proj_weight);
        EXPECT_EQ(qa.out_proj_weight, qb.out_proj_weight);
      }
      // backward needs f32 parameters: refused on the half model's blocks with a clear error.
      std::vector<float> u(static_cast<std::size_t>(3 * cfg.d_model), 0.5f);
      const auto U = TensorView::of(u.data(), {1, 3, cfg.d_model});
      try {
        (void)half_model.blocks()[0].backward(U, U);
        ADD_FAILURE() << "backward on 16-bit weights did not throw";
      } catch (const ssm::Error& e) {
        EXPECT_NE(std::string(e.what()).find("weight_dtype = DType::f32"), std::string::npos) << e.what();
      }
      EXPECT_NO_THROW((void)f32_model.blocks()[0].backward(U, U));
      for (const auto& d : {dir, dir32, dir2}) fs::remove_all(d);
    }
}

TEST(MambaLM, LoadOptionsRejectsOtherWeightDtypes) {
  const MambaLM model = MambaLM::init(small_config(), 2);
  const auto dir = temp_dir("bad_weight_dtype");
  model.save(dir.string(), DType::bf16);
  for (DType dt : {DType::f64, DType::i32, DType::i64, DType::u8, DType::c64}) {
    LoadOptions opt;
    opt.weight_dtype = dt;
    try {
      (void)MambaLM::load(dir.string(), opt);
      ADD_FAILURE() << name(dt) << " accepted";
    } catch (const ssm::Error& e) {
      EXPECT_NE(std::string(e.what()).find("LoadOptions::weight_dtype is " + std::string(name(dt)) +
                                           ", which is not one of f32, f16, bf16"),
                std::string::npos)
          << e.what();
    }
  }
  // f32, f16, bf16 all load.
  for (DType dt : {DType::f32, DType::f16, DType::bf16}) {
    LoadOptions opt;
    opt.weight_dtype = dt;
    EXPECT_EQ(MambaLM::load(dir.string(), opt).weight_dtype(), dt);
  }
  fs::remove_all(dir);
}
