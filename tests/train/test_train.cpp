// Training: ssm::cross_entropy (against central differences, known values and bad input), ssm::train's AdamW (against
// torch.optim.AdamW's golden steps), the warmup + cosine schedule, clip_grad_norm, the parameter tree's checks, a tiny
// language model (ssm::models::StackLM: embedding, a pre-norm Gated DeltaNet layer, the final norm, a head) whose step
// gradients match central differences and whose loss on a copy task must fall below a bound in a few steps, and a run
// resumed from a saved training state equal bit for bit to one never interrupted.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "ssm/layers/attention.hpp"
#include "ssm/layers/basic.hpp"
#include "ssm/layers/delta_net.hpp"
#include "ssm/layers/linear_attention.hpp"
#include "ssm/layers/mamba.hpp"
#include "ssm/layers/rwkv7.hpp"
#include "ssm/layers/ttt_linear.hpp"
#include "ssm/models/hybrid.hpp"
#include "ssm/models/jamba.hpp"
#include "ssm/models/stack_lm.hpp"
#include "ssm/models/trainable_lm.hpp"
#include "ssm/train.hpp"
#include "support/central_differences.hpp"
#include "support/decode.hpp"
#include "support/expect_error.hpp"

namespace {

using ssm::DType;
using ssm::index_t;
using ssm::Tensor;
using ssm::TensorView;
using ssm::train::AdamW;
using ssm::train::AdamWConfig;
using ssm::train::ParamTree;
using ssm_test::expect_arg_error;
using ssm_test::expect_error;

Tensor ids_tensor(const std::vector<std::int64_t>& v) {
  Tensor t = Tensor::empty({static_cast<index_t>(v.size())}, DType::i64);
  std::copy(v.begin(), v.end(), t.data_as<std::int64_t>());
  return t;
}

Tensor random_logits(index_t rows, index_t vocab, double spread, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-spread, spread);
  Tensor t = Tensor::empty({rows, vocab}, DType::f64);
  for (index_t i = 0; i < t.numel(); ++i) t.data_as<double>()[i] = u(rng);
  return t;
}

// ---- cross_entropy ----------------------------------------------------------------------------------------------

TEST(CrossEntropy, KnownValues) {
  // Equal logits: ln V whatever the target. One row [0, ln 3]: softmax (1/4, 3/4).
  Tensor flat = Tensor::zeros({3, 7}, DType::f64);
  const Tensor t036 = ids_tensor({0, 3, 6}), t0 = ids_tensor({0}), t2 = ids_tensor({2});
  EXPECT_NEAR(ssm::cross_entropy({flat, t036}).loss, std::log(7.0), 1e-15);
  Tensor two = Tensor::empty({1, 2}, DType::f64);
  two.data_as<double>()[0] = 0, two.data_as<double>()[1] = std::log(3.0);
  Tensor g = Tensor::empty({1, 2}, DType::f64);
  const auto r = ssm::cross_entropy({two, t0}, g.view());
  EXPECT_NEAR(r.loss, std::log(4.0), 1e-15);
  EXPECT_EQ(r.count, 1);
  EXPECT_NEAR(g.data_as<double>()[0], 0.25 - 1, 1e-15);
  EXPECT_NEAR(g.data_as<double>()[1], 0.75, 1e-15);
  // Huge logits do not overflow (f32: exp(100) is inf).
  Tensor big = Tensor::empty({1, 3}, DType::f32);
  big.data_as<float>()[0] = 100, big.data_as<float>()[1] = 100, big.data_as<float>()[2] = -100;
  EXPECT_NEAR(ssm::cross_entropy({big, t2}).loss, 200 + std::log(2.0), 1e-4);
}

TEST(CrossEntropy, GradientMatchesCentralDifferences) {
  for (bool in_place : {false, true}) {
    Tensor logits = random_logits(6, 9, 3, 5);
    const Tensor targets = ids_tensor({0, 8, -100, 4, 4, 1});  // one ignored row
    ssm::CrossEntropyOptions opt;
    opt.grad_scale = 0.7;
    Tensor grad = Tensor::empty({6, 9}, DType::f64);
    Tensor work = Tensor::empty({6, 9}, DType::f64);
    ssm::copy(work, logits);
    const auto r = ssm::cross_entropy({work, targets}, in_place ? work.view() : grad.view(), opt);
    if (in_place) ssm::copy(grad, work);
    EXPECT_EQ(r.count, 5);
    for (index_t j = 0; j < 9; ++j) EXPECT_EQ(grad.data_as<double>()[2 * 9 + j], 0.0);  // the ignored row
    ssm_test::expect_central_differences(in_place ? "in place" : "separate", logits, grad, [&] {
      return 0.7 * ssm::cross_entropy({logits, targets}).loss;
    });
  }
}

TEST(CrossEntropy, FloatAgreesWithDoubleAndThreadsChangeNothing) {
  const Tensor ld = random_logits(33, 1000, 8, 6);
  Tensor lf = Tensor::empty(ld.shape(), DType::f32);
  for (index_t i = 0; i < ld.numel(); ++i) lf.data_as<float>()[i] = static_cast<float>(ld.data_as<double>()[i]);
  std::vector<std::int64_t> t(33);
  for (index_t i = 0; i < 33; ++i) t[i] = (i * 37) % 1000;
  const Tensor targets = ids_tensor(t);
  ssm::CrossEntropyOptions one, two;
  one.threads = 1, two.threads = 2;
  Tensor g1 = Tensor::empty(lf.shape(), DType::f32), g2 = Tensor::empty(lf.shape(), DType::f32);
  const double a = ssm::cross_entropy({lf, targets}, g1.view(), one).loss;
  const double b = ssm::cross_entropy({lf, targets}, g2.view(), two).loss;
  EXPECT_EQ(a, b);  // rows are independent and summed in order: bit-identical
  EXPECT_EQ(std::memcmp(g1.data(), g2.data(), g1.nbytes()), 0);
  EXPECT_NEAR(a, ssm::cross_entropy({ld, targets}).loss, 1e-5 * a);
}

TEST(CrossEntropy, BadInputIsAnErrorNamingTheArgument) {
  const Tensor logits = random_logits(3, 5, 1, 1);
  const Tensor t012 = ids_tensor({0, 1, 2}), t051 = ids_tensor({0, 5, 1}), tm1 = ids_tensor({0, -1, 1});
  const Tensor t01 = ids_tensor({0, 1}), t0 = ids_tensor({0}), ints = Tensor::empty({3, 5}, DType::i64);
  expect_arg_error("targets", [&] { ssm::cross_entropy({logits, t051}); });  // 5 >= vocab
  expect_arg_error("targets", [&] { ssm::cross_entropy({logits, tm1}); });   // -1, not ignored
  expect_arg_error("targets", [&] { ssm::cross_entropy({logits, t01}); });   // 2 rows, not 3
  expect_arg_error("targets", [&] { ssm::cross_entropy({logits, logits.view().reshape({15})}); });  // f64 targets
  expect_arg_error("logits", [&] { ssm::cross_entropy({logits.view().reshape({15}), t0}); });        // rank 1
  expect_arg_error("logits", [&] { ssm::cross_entropy({ints, t012}); });                              // i64 logits
  ssm::CrossEntropyOptions nan;
  nan.grad_scale = std::numeric_limits<double>::quiet_NaN();
  expect_arg_error("grad_scale", [&] { ssm::cross_entropy({logits, t012}, std::nullopt, nan); });
  Tensor g32 = Tensor::empty({3, 5}, DType::f32);
  expect_arg_error("grad_logits", [&] { ssm::cross_entropy({logits, t012}, g32.view()); });
  Tensor g_small = Tensor::empty({3, 4}, DType::f64);
  expect_arg_error("grad_logits", [&] { ssm::cross_entropy({logits, t012}, g_small.view()); });
  // A gradient buffer overlapping the logits, one element off: refused (in place means the logits themselves).
  Tensor wide = Tensor::empty({4 * 5 + 1}, DType::f64);
  const TensorView lw = wide.view().narrow(0, 0, 15).reshape({3, 5}), gw = wide.view().narrow(0, 1, 15).reshape({3, 5});
  expect_arg_error("grad_logits", [&] { ssm::cross_entropy({lw, t012}, gw); });
  const TensorView overlapping_rows(wide.data(), DType::f64, ssm::Device::cpu(), {3, 5}, {3, 1});  // rows 3 apart
  expect_arg_error("logits", [&] { ssm::cross_entropy({overlapping_rows, t012}); });
  expect_arg_error("grad_logits", [&] { ssm::cross_entropy({logits, t012}, overlapping_rows); });
}

// ---- AdamW, the schedule, clipping, the tree --------------------------------------------------------------------

/// torch.optim.AdamW's steps from tests/data/train/adamw.json (tools/make_train_golden.py): the parameters after
/// every step, for each case's hyperparameters and per-step learning rates and gradients.
TEST(AdamW, MatchesTorch) {
  std::ifstream is(std::string(SSM_TEST_DATA_DIR) + "/train/adamw.json");
  ASSERT_TRUE(is.good()) << "tests/data/train/adamw.json missing (tools/make_train_golden.py)";
  const nlohmann::json golden = nlohmann::json::parse(is);
  int cases = 0;
  for (const auto& c : golden["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    AdamWConfig cfg;
    cfg.beta1 = c["beta1"], cfg.beta2 = c["beta2"], cfg.eps = c["eps"], cfg.weight_decay = c["weight_decay"];
    AdamW<double> opt(cfg);
    std::vector<double> p = c["initial"].get<std::vector<double>>(), g;
    ParamTree<double> params, grads;
    params.add("w", p);
    grads.add("w", g = std::vector<double>(p.size()));
    const auto& steps = c["steps"];
    for (const auto& s : steps) {
      const std::vector<double> grad = s["grad"].get<std::vector<double>>();
      std::copy(grad.begin(), grad.end(), g.begin());
      opt.step(params, grads, s["lr"].get<double>());
      const std::vector<double> want = s["after"].get<std::vector<double>>();
      for (std::size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(p[i], want[i], 1e-12 * std::max(1.0, std::abs(want[i])));
    }
    EXPECT_EQ(opt.steps(), static_cast<std::int64_t>(steps.size()));
    ++cases;
  }
  EXPECT_GE(cases, 3);
}

TEST(AdamW, WeightDecayOnlyWhereAsked) {
  AdamWConfig cfg;
  cfg.weight_decay = 0.5, cfg.lr = 0.1;
  cfg.decays = [](const std::string& name) { return name != "bias"; };
  AdamW<double> opt(cfg);
  std::vector<double> w{1.0}, b{1.0}, gw{0.0}, gb{0.0};
  ParamTree<double> p, g;
  p.add("weight", w).add("bias", b);
  g.add("weight", gw).add("bias", gb);
  opt.step(p, g);
  EXPECT_DOUBLE_EQ(w[0], 1 - 0.1 * 0.5);  // a zero gradient moves nothing but the decay
  EXPECT_DOUBLE_EQ(b[0], 1.0);
}

TEST(WarmupCosine, FollowsItsFormula) {
  ssm::train::WarmupCosine s{1e-2, 1e-3, 10, 110};
  EXPECT_DOUBLE_EQ(s(0), 1e-3);
  EXPECT_DOUBLE_EQ(s(9), 1e-2);
  EXPECT_DOUBLE_EQ(s(10), 1e-2);
  EXPECT_NEAR(s(60), 1e-3 + 0.5 * (1e-2 - 1e-3), 1e-15);  // half way through the decay
  EXPECT_NEAR(s(110), 1e-3, 1e-15);
  EXPECT_NEAR(s(500), 1e-3, 1e-15);
  ssm::train::WarmupCosine bad = s;
  bad.peak_lr = std::numeric_limits<double>::infinity();
  expect_arg_error("peak_lr", [&] { bad(0); });
  bad = s, bad.min_lr = 1;
  expect_arg_error("min_lr", [&] { bad.validate(); });
  bad = s, bad.total_steps = 5;
  expect_arg_error("total_steps", [&] { bad.validate(); });
  expect_arg_error("step", [&] { s(-1); });
}

TEST(ClipGradNorm, ScalesToTheBoundAndRefusesNonFinite) {
  std::vector<double> a{3, 0}, b{0, 4};
  ParamTree<double> g;
  g.add("a", a).add("b", b);
  EXPECT_DOUBLE_EQ(ssm::train::clip_grad_norm(g, 10.0), 5.0);  // under the bound: unchanged
  EXPECT_EQ(a[0], 3.0);
  EXPECT_DOUBLE_EQ(ssm::train::clip_grad_norm(g, 1.0), 5.0);
  EXPECT_NEAR(std::hypot(a[0], b[1]), 1.0, 1e-6);
  b[0] = std::numeric_limits<double>::quiet_NaN();
  expect_error([&] { ssm::train::clip_grad_norm(g, 1.0); }, {"argument 'grads'", "'b'"});
  expect_arg_error("max_norm", [&] { ssm::train::clip_grad_norm(g, 0.0); });
}

TEST(AdamW, BadInputIsAnErrorNamingTheArgument) {
  auto bad = [](auto edit) {
    AdamWConfig c;
    edit(c);
    return [c] { AdamW<double> opt(c); };
  };
  expect_arg_error("lr", bad([](AdamWConfig& c) { c.lr = std::numeric_limits<double>::quiet_NaN(); }));
  expect_arg_error("beta1", bad([](AdamWConfig& c) { c.beta1 = 1; }));
  expect_arg_error("beta2", bad([](AdamWConfig& c) { c.beta2 = -0.1; }));
  expect_arg_error("eps", bad([](AdamWConfig& c) { c.eps = 0; }));
  expect_arg_error("weight_decay", bad([](AdamWConfig& c) { c.weight_decay = -1; }));
  AdamW<double> opt;
  std::vector<double> w(3), v(2), gw(3), gv(2), other(4);
  ParamTree<double> p, g, g_wrong_name, g_wrong_size, p_other;
  p.add("w", w).add("v", v);
  g.add("w", gw).add("v", gv);
  g_wrong_name.add("w", gw).add("u", gv);
  g_wrong_size.add("w", gw).add("v", other);
  expect_arg_error("lr", [&] { opt.step(p, g, std::numeric_limits<double>::infinity()); });
  expect_error([&] { opt.step(p, g_wrong_name); }, {"argument 'grads'", "'u'"});
  expect_error([&] { opt.step(p, g_wrong_size); }, {"argument 'grads'", "'v'"});
  opt.step(p, g);
  p_other.add("w", w);  // a different tree after the first step
  ParamTree<double> g_other;
  g_other.add("w", gw);
  expect_arg_error("params", [&] { opt.step(p_other, g_other); });
  EXPECT_EQ(opt.steps(), 1);  // the refused steps changed nothing
  expect_error([&] { p.add("w", other); }, "already in the tree");
}

// ---- a tiny model that trains -----------------------------------------------------------------------------------

using ssm::layers::DeltaNetConfig;
using ssm::layers::DeltaNetLayer;
// The models and stacks below are TrainableLM<double> and TrainableStack<double>, whatever mixers they hold: the
// tests further down need those types anyway, and a StackLM over fewer mixers would compile its layers once more.
using TinyLM = ssm::models::TrainableLM<double>;

/// Embedding, one pre-norm Gated DeltaNet layer, the final norm and the head (ssm::models::StackLM), vocab V, width 16.
TinyLM tiny_lm(index_t V, std::uint64_t seed, bool tied = false) {
  DeltaNetConfig c;
  c.d_model = 16, c.heads = 2, c.gated = true, c.chunk_size = 8;
  auto mixer = DeltaNetLayer<double>::init(c, seed);
  mixer.set_threads(1);
  TinyLM::Stack stack(16);
  stack.add(std::move(mixer));
  return TinyLM(V, std::move(stack), seed + 1, 1e-5, tied);
}

template <class Model>
ParamTree<double> tree_of(Model& model) {
  ParamTree<double> t;
  t.add_all("", model);
  return t;
}

/// A batch of the shifted-copy task: random tokens, each target the token before it (the first ignored). Only a
/// mixer that looks back can predict it: the loss of embedding and head alone stays at ln V.
void copy_batch(std::mt19937_64& rng, index_t b, index_t l, index_t V, Tensor& ids, Tensor& targets) {
  std::uniform_int_distribution<std::int64_t> tok(0, V - 1);
  ids = Tensor::empty({b, l}, DType::i64), targets = Tensor::empty({b * l}, DType::i64);
  for (index_t i = 0; i < b; ++i)
    for (index_t t = 0; t < l; ++t) {
      ids.data_as<std::int64_t>()[i * l + t] = tok(rng);
      targets.data_as<std::int64_t>()[i * l + t] = t == 0 ? -100 : ids.data_as<std::int64_t>()[i * l + t - 1];
    }
}

/// One training step: a batch, the gradients, clipping at 1, AdamW at the schedule's rate. Returns the loss.
template <class Model>
double train_step(Model& model, AdamW<double>& opt, std::mt19937_64& data, const ssm::train::WarmupCosine& lr) {
  Tensor ids, targets;
  copy_batch(data, 8, 12, model.vocab(), ids, targets);
  typename Model::Grads g;
  const double loss = model.step(ids, targets, g).loss;
  ParamTree<double> params = tree_of(model), grads;
  grads.add_all("", g);
  ssm::train::clip_grad_norm(grads, 1.0);
  opt.step(params, grads, lr(opt.steps()));
  return loss;
}

// add_mixer's Mamba ablations (the selective-copying table's rows) are the block with the gate and the selection as
// named: S6 has x_proj and dt_proj, S4D-Real B and C instead; the gate doubles in_proj's rows.
TEST(AddMixer, MambaAblationsAreTheNamedBlocks) {
  struct Row {
    const char* name;
    bool gated, selective;
  };
  for (const Row& r : {Row{"mamba", true, true}, Row{"mamba_s4d", true, false}, Row{"s6", false, true},
                       Row{"s4d", false, false}}) {
    SCOPED_TRACE(r.name);
    ssm::models::TrainableStack<double> stack(8);
    ssm::models::MixerOptions o;
    o.d_state = 4;
    ssm::models::add_mixer(stack, r.name, o, 1);
    std::map<std::string, std::size_t> size;
    stack.for_each([&](const char* name, std::vector<double>& v) { size[name] = v.size(); });
    EXPECT_EQ(size.count("layers.0.mixer.x_proj.weight"), r.selective ? 1u : 0u);
    EXPECT_EQ(size.count("layers.0.mixer.dt_proj.weight"), r.selective ? 1u : 0u);
    EXPECT_EQ(size.count("layers.0.mixer.B"), r.selective ? 0u : 1u);
    EXPECT_EQ(size.count("layers.0.mixer.C"), r.selective ? 0u : 1u);
    EXPECT_EQ(size["layers.0.mixer.in_proj.weight"],
              (r.gated ? 2u : 1u) * 16u * 8u);  // (2 d_inner or d_inner, d_model)
  }
}

TEST(StackLM, BadInputIsAnErrorNamingTheArgument) {
  TinyLM model = tiny_lm(5, 7);
  Tensor ids = Tensor::zeros({2, 3}, DType::i64), targets = Tensor::zeros({6}, DType::i64);
  TinyLM::Grads g;
  const Tensor f32_targets = Tensor::zeros({6}, DType::f32), short_targets = Tensor::zeros({5}, DType::i64);
  const Tensor flat_ids = Tensor::zeros({6}, DType::i64), f64_ids = Tensor::zeros({2, 3}, DType::f64);
  expect_arg_error("targets", [&] { model.step(ids, f32_targets, g); });
  expect_arg_error("targets", [&] { model.step(ids, short_targets, g); });
  expect_arg_error("ids", [&] { model.step(flat_ids, targets, g); });
  expect_arg_error("ids", [&] { model.step(f64_ids, targets, g); });
  ids.data_as<std::int64_t>()[4] = 5;  // vocab 5: out of range
  expect_arg_error("ids", [&] { model.step(ids, targets, g); });
  ids.data_as<std::int64_t>()[4] = 0, targets.data_as<std::int64_t>()[2] = 7;
  expect_arg_error("targets", [&] { model.step(ids, targets, g); });
}

/// The check every stack test below makes: x and R (b, l, d_model) drawn from N(0, 1) with `seed` (interleaved, x's
/// element, then R's), L = Σ stack(x) ⊙ R, and the stack's backward against central differences for ∂L/∂x and for
/// every parameter (up to 64 elements of each, spread over it, to keep the tests short under the sanitizers);
/// `n_params` parameters must be checked. Returns the gradients for the tests' own checks.
template <class Stack>
auto expect_stack_gradients(Stack& stack, index_t b, index_t l, std::uint64_t seed, int n_params) {
  const index_t d = stack.d_model();
  Tensor x = Tensor::empty({b, l, d}, DType::f64), R = Tensor::empty({b, l, d}, DType::f64);
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n(0, 1);
  for (index_t i = 0; i < x.numel(); ++i) x.data_as<double>()[i] = n(rng), R.data_as<double>()[i] = n(rng);
  auto loss = [&] { return ssm_test::weighted_sum(stack.forward(x), R); };
  auto g = stack.backward(x, R);
  ssm_test::expect_central_differences("x", x, ssm_test::to_tensor(g.grad_x), loss, 1e-6, 1e-7, 64);
  EXPECT_EQ(ssm_test::expect_parameter_gradients(stack, g, loss, 64), n_params);
  return g;
}

// A stack of four different mixers (Gated DeltaNet, GLA, TTT-Linear, RWKV-7): its backward against central
// differences for ∂L/∂x and every parameter, the norms' included, named as for_each names them (up to 64 elements of
// each, spread over it, to keep the test short under the sanitizers).
TEST(HybridStack, BackwardOfAMixedStackMatchesCentralDifferences) {
  using ssm::layers::LinearAttentionConfig;
  using ssm::layers::LinearAttentionLayer;
  using ssm::layers::Rwkv7Config;
  using ssm::layers::Rwkv7Layer;
  using ssm::layers::TttLinearConfig;
  using ssm::layers::TttLinearLayer;
  using Stack = ssm::models::TrainableStack<double>;
  const index_t d = 8;
  Stack stack(d);
  DeltaNetConfig dc;
  dc.d_model = d, dc.heads = 2, dc.gated = true, dc.chunk_size = 4;
  stack.add(DeltaNetLayer<double>::init(dc, 1));
  LinearAttentionConfig gla = LinearAttentionConfig::gla(d, 2);
  gla.gate_rank = 3, gla.chunk_size = 4;
  stack.add(LinearAttentionLayer<double>::init(gla, 2));
  TttLinearConfig tc;
  tc.d_model = d, tc.heads = 2, tc.mini_batch_size = 4, tc.use_gate = true;
  stack.add(TttLinearLayer<double>::init(tc, 3));
  Rwkv7Config rc;
  rc.d_model = d, rc.head_dim = 4, rc.decay_rank = 3, rc.a_rank = 2, rc.v_rank = 2, rc.gate_rank = 3;
  stack.add(Rwkv7Layer<double>::init(rc, 4));
  for (std::size_t i = 0; i < stack.size(); ++i)  // norms away from 1, so a dropped weight would show
    for (double& w : stack.norm_weight(i)) w = 0.5 + 0.1 * static_cast<double>(i);
  // TTT's initial inner weights away from their init (W1 ~ 0.02, b1 = 0): there the inner layer norm normalizes
  // outputs of spread ~1e-2 with eps 1e-6, and the loss curves so sharply in b1 that central differences of step 1e-6
  // are off by 3e-5 (they converge to the analytic gradient as the step shrinks: 1e-7 agrees).
  std::mt19937_64 init_rng(9);
  std::uniform_real_distribution<double> u(-0.3, 0.3);
  stack.for_each([&](const char* name, std::vector<double>& v) {
    if (std::string(name) == "layers.2.mixer.W1" || std::string(name) == "layers.2.mixer.b1")
      for (double& e : v) e = u(init_rng);
  });
  // four norms; Gated DeltaNet 6, GLA 6, TTT 11, RWKV-7 23
  auto g = expect_stack_gradients(stack, 2, 7, 5, 4 + 6 + 6 + 11 + 23);
  EXPECT_EQ(g.layers.size(), 4u);
  bool has_gate_up = false;  // GLA's low-rank gate named under its layer
  g.for_each(
      [&](const char* name, std::vector<double>&) { has_gate_up |= std::string(name) == "layers.1.mixer.gate_up"; });
  EXPECT_TRUE(has_gate_up);
}

// ---- Mamba and attention as trainable mixers ---------------------------------------------------------------------

using ssm::layers::MambaBlock;
using ssm::layers::MambaBlockConfig;
using ssm::layers::MultiHeadAttention;
using ssm::layers::MultiHeadAttentionConfig;
using ssm::models::MambaMixer;
using MambaAttentionStack = ssm::models::TrainableStack<double>;

/// A Mamba block (d_state 4, with the projections' biases) and a grouped-query attention layer with RoPE (4 heads
/// over 2 key-value heads, the tiled algorithm with blocks that do not divide the tests' lengths), width 16, one thread.
MambaAttentionStack mamba_attention_stack(std::uint64_t seed) {
  MambaBlockConfig mc;
  mc.d_model = 16, mc.d_state = 4, mc.bias = true;
  MambaMixer<double> mamba(MambaBlock<double>::init(mc, seed));
  mamba.set_threads(1);
  MultiHeadAttentionConfig ac;
  ac.d_model = 16, ac.n_heads = 4, ac.n_kv_heads = 2, ac.rotary = true;
  ac.attention.algorithm = ssm::AttentionAlgorithm::tiled, ac.attention.block_q = 4, ac.attention.block_k = 3;
  ac.attention.n_threads = 1;
  MambaAttentionStack stack(16);
  stack.add(std::move(mamba));
  stack.add(MultiHeadAttention<double>(ac, seed + 1));
  return stack;
}

// The stack's backward through a Mamba block and an attention layer against central differences: ∂L/∂x and every
// parameter, named as for_each names them (up to 64 elements of each).
TEST(HybridStack, BackwardThroughMambaAndAttentionMatchesCentralDifferences) {
  MambaAttentionStack stack = mamba_attention_stack(3);
  for (std::size_t i = 0; i < stack.size(); ++i)
    for (double& w : stack.norm_weight(i)) w = 0.7 + 0.2 * static_cast<double>(i);
  auto g = expect_stack_gradients(stack, 2, 9, 4, 17);
  std::vector<std::string> names;
  g.for_each([&](const char* name, std::vector<double>&) { names.emplace_back(name); });
  EXPECT_EQ(names.size(), 17u);  // two norms, the Mamba block's 11 (its biases included), the attention's 4
  EXPECT_NE(std::find(names.begin(), names.end(), "layers.0.mixer.A_log"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "layers.1.mixer.q_proj.weight"), names.end());
}

// An optimizer updates A_log in place (the block caches A = −exp(A_log)): the forward, decoding and the backward then
// use the new A, exactly as a block built from the updated parameters.
TEST(MambaMixer, UpdatedParametersTakeEffectAtOnce) {
  MambaBlockConfig mc;
  mc.d_model = 8, mc.d_state = 4;
  MambaMixer<double> trained(MambaBlock<double>::init(mc, 1));
  trained.params().for_each([](const char*, std::vector<double>& v) {
    for (double& e : v) e *= 1.25;  // every parameter, A_log included
  });
  const MambaMixer<double> rebuilt(MambaBlock<double>(mc, trained.params()));
  Tensor x = Tensor::empty({2, 5, 8}, DType::f64);
  std::mt19937_64 rng(2);
  std::normal_distribution<double> n(0, 1);
  for (index_t i = 0; i < x.numel(); ++i) x.data_as<double>()[i] = n(rng);
  EXPECT_EQ(trained.forward(x).to_vector<double>(), rebuilt.forward(x).to_vector<double>());
  auto s1 = trained.init_state(2), s2 = rebuilt.init_state(2);
  EXPECT_EQ(trained.step(x, s1).to_vector<double>(), rebuilt.step(x, s2).to_vector<double>());
  auto g1 = trained.backward(x, x), g2 = rebuilt.backward(x, x);
  EXPECT_EQ(g1.grad_x, g2.grad_x);
  EXPECT_EQ(g1.params.A_log, g2.params.A_log);
  // A parameter resized through params(), or one the config does not have, is an error at the next call.
  trained.params().D.pop_back();
  expect_error([&] { trained.forward(x); }, {"'D'", "expected shape"});
  auto p = rebuilt.params();
  p.in_proj_bias.assign(2 * mc.inner(), 0.0);  // the config has bias off
  expect_error([&] { MambaBlock<double>(mc, p); }, "the config does not have");
}

// A stack of a Mamba-2 block (add_mixer's "mamba2": 2 heads, state 4, chunks of 64) and the Mamba block: the stack's
// backward against central differences, ∂L/∂x and every parameter under its name.
TEST(HybridStack, BackwardThroughMamba2MatchesCentralDifferences) {
  ssm::models::TrainableStack<double> stack(8);
  ssm::models::MixerOptions o;
  o.d_state = 4, o.threads = 1;
  ssm::models::add_mixer(stack, "mamba2", o, 1);
  ssm::models::add_mixer(stack, "mamba", o, 2);
  for (std::size_t i = 0; i < stack.size(); ++i)
    for (double& w : stack.norm_weight(i)) w = 0.6 + 0.3 * static_cast<double>(i);
  auto g = expect_stack_gradients(stack, 2, 9, 6, 2 + 8 + 9);  // two norms, Mamba-2 8, Mamba 9
  std::vector<std::string> names;
  g.for_each([&](const char* name, std::vector<double>&) { names.emplace_back(name); });
  // the pre-norm and Mamba-2's own gated norm, apart
  EXPECT_NE(std::find(names.begin(), names.end(), "layers.0.norm.weight"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "layers.0.mixer.norm.weight"), names.end());
}

// Hyena through HyenaMixer (add_mixer's "hyena", l_max 16): the stack's backward against central differences. Each
// perturbation is written into the parameters in place, as an optimizer's update is, so this also checks that the
// mixer's filters follow the parameters without a refresh() call.
TEST(HybridStack, BackwardThroughHyenaMatchesCentralDifferences) {
  ssm::models::TrainableStack<double> stack(8);
  ssm::models::MixerOptions o;
  o.max_len = 16, o.threads = 1;
  ssm::models::add_mixer(stack, "hyena", o, 1);
  for (double& w : stack.norm_weight(0)) w = 0.8;
  expect_stack_gradients(stack, 2, 9, 7, 1 + 16);  // the norm; Hyena's 16
  // After an in-place update, the mixer's layer() has the filters of the updated parameters (for decoding).
  stack.for_each([](const char* name, std::vector<double>& v) {
    if (std::string(name) == "layers.0.mixer.filter_fn.implicit_filter.6.weight")
      for (double& w : v) w *= 1.5;
  });
  const auto& mixer = std::get<ssm::models::HyenaMixer<double>>(stack.layer(0));
  const auto rebuilt = ssm::layers::HyenaLayer<double>(mixer.layer().config(), mixer.params());
  EXPECT_EQ(mixer.layer().filters().to_vector<double>(), rebuilt.filters().to_vector<double>());
  o.max_len = 0;
  ssm_test::expect_error([&] { ssm::models::add_mixer(stack, "hyena", o, 2); }, "argument 'max_len'");
}

// A stack decoding x (b, l, d) f64 in pieces (a prefill of `prefill` tokens, then one at a time) gives its forward:
// max |decoded − forward| <= 1e-12 max |forward|.
template <class Stack>
void expect_decodes_like_forward(const Stack& stack, const Tensor& x, index_t prefill) {
  const auto y = stack.forward(x).template to_vector<double>();
  const auto got = ssm_test::decode_in_pieces(stack, x, prefill).template to_vector<double>();
  double err = 0, mx = 0;
  for (std::size_t i = 0; i < y.size(); ++i)
    err = std::max(err, std::abs(got[i] - y[i])), mx = std::max(mx, std::abs(y[i]));
  EXPECT_LE(err, 1e-12 * mx) << "prefill " << prefill;
}

// StripedHyena's gated convolution through ModalHyenaMixer (add_mixer's "striped_hyena": 2 heads, 3 poles, 16 taps)
// and an RWKV-4 block (add_mixer's "rwkv4" and "rwkv4_channel"): the stack's backward against central differences. The
// perturbations are written into the parameters in place, as an optimizer's update is: the mixer's filter follows
// them without a refresh() call. A length past the modal filter's taps is refused by its backward, naming x.
TEST(HybridStack, BackwardThroughStripedHyenaAndRwkv4MatchesCentralDifferences) {
  ssm::models::TrainableStack<double> stack(8);
  ssm::models::MixerOptions o;
  o.d_state = 3, o.max_len = 16, o.threads = 1;
  ssm::models::add_mixer(stack, "striped_hyena", o, 1);
  ssm::models::add_mixer(stack, "rwkv4", o, 2);
  ssm::models::add_mixer(stack, "rwkv4_channel", o, 3);
  for (std::size_t i = 0; i < stack.size(); ++i)
    for (double& w : stack.norm_weight(i)) w = 0.6 + 0.2 * static_cast<double>(i);
  expect_stack_gradients(stack, 2, 9, 8, 3 + 9 + 9 + 5);  // three norms; StripedHyena 9, RWKV-4's two 9 and 5
  // decoding (the modal filter refreshed for each step's tokens) equals the forward; a prefill of 20 tokens, more
  // than the 16 taps, runs in pieces
  Tensor x = Tensor::empty({2, 23, 8}, DType::f64);
  for (index_t i = 0; i < x.numel(); ++i) x.data_as<double>()[i] = std::sin(0.37 * static_cast<double>(i));
  for (index_t prefill : {1, 20}) expect_decodes_like_forward(stack, x, prefill);
  const Tensor long_x = Tensor::zeros({1, 17, 8}, DType::f64);
  ssm_test::expect_error([&] { stack.backward(long_x, long_x); }, "argument 'x'");
  o.d_state = 0;
  ssm_test::expect_error([&] { ssm::models::add_mixer(stack, "striped_hyena", o, 4); }, "argument 'd_state'");
}

// A Jamba-like stack (add_mixer's "mamba", "moe" with 3 experts, "attention" with two heads, "moe"; the load-balancing
// term off here, checked in tests/mixer_layers): decoding equals the forward, and the stack's backward matches central
// differences for x and a sample of every parameter.
TEST(HybridStack, BackwardThroughAJambaLikeStackWithExpertsMatchesCentralDifferences) {
  ssm::models::TrainableStack<double> stack(8);
  ssm::models::MixerOptions o;
  o.d_state = 4, o.experts = 3, o.aux_loss_coef = 0, o.threads = 1;
  std::uint64_t seed = 1;
  for (const char* name : {"mamba", "moe", "attention", "moe"}) ssm::models::add_mixer(stack, name, o, seed++);
  for (std::size_t i = 0; i < stack.size(); ++i)
    for (double& w : stack.norm_weight(i)) w = 0.7 + 0.1 * static_cast<double>(i);
  expect_stack_gradients(stack, 2, 5, 9, 4 + 9 + 3 + 4 + 3);  // four norms, Mamba 9, the experts' 3 twice, attention 4
  Tensor x = Tensor::empty({2, 5, 8}, DType::f64);
  for (index_t i = 0; i < x.numel(); ++i) x.data_as<double>()[i] = std::cos(0.41 * static_cast<double>(i));
  expect_decodes_like_forward(stack, x, 2);
  o.top_k = 4;  // more than the 3 experts
  ssm_test::expect_error([&] { ssm::models::add_mixer(stack, "moe", o, 9); }, "argument 'top_k'");
}

// ---- The S4 and S4D layers as trainable mixers ----------------------------------------------------------------------

// add_mixer's "s4d_layer" and "s4_layer" (state size 4, S4's l_max 12 > the length, so ∂L/∂K is zero past l): the
// stack's backward against central differences, through the layers' kernel backward and the mixers' published
// parametrization (log Δ, −exp(log Re A), the complex pairs) to every parameter under its name.
TEST(HybridStack, BackwardThroughS4AndS4DMatchesCentralDifferences) {
  ssm::models::TrainableStack<double> stack(6);
  ssm::models::MixerOptions o;
  o.d_state = 4, o.max_len = 12, o.threads = 1;
  ssm::models::add_mixer(stack, "s4d_layer", o, 1);
  ssm::models::add_mixer(stack, "s4_layer", o, 2);
  for (std::size_t i = 0; i < stack.size(); ++i)
    for (double& w : stack.norm_weight(i)) w = 0.6 + 0.3 * static_cast<double>(i);
  // S4D-Lin's Im A = π n and LegS's Λ are the same in every channel: spread them, so a gradient summed over the wrong
  // channel would show.
  std::mt19937_64 init_rng(4);
  std::uniform_real_distribution<double> u(-0.2, 0.2);
  stack.for_each([&](const char* name, std::vector<double>& v) {
    if (std::string(name).find("kernel.") != std::string::npos)
      for (double& e : v) e += u(init_rng);
  });
  auto g = expect_stack_gradients(stack, 2, 9, 8, 2 + 8 + 9);  // two norms, S4D 8, S4 9
  std::vector<std::string> names;
  g.for_each([&](const char* name, std::vector<double>&) { names.emplace_back(name); });
  for (const char* n : {"layers.0.mixer.kernel.log_A_real", "layers.0.mixer.output_linear.weight",
                        "layers.1.mixer.kernel.P", "layers.1.mixer.C"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
}

// An optimizer's in-place update takes effect at the next call (each runs on the layer written from the parameters);
// decoding t tokens at a time from a carried state gives the whole sequence's forward.
TEST(S4Mixer, UpdatedParametersTakeEffectAndDecodingMatchesTheForward) {
  ssm::models::TrainableStack<double> stack(4);
  ssm::models::MixerOptions o;
  o.d_state = 6, o.max_len = 16, o.threads = 1;
  ssm::models::add_mixer(stack, "s4d_layer", o, 3);
  ssm::models::add_mixer(stack, "s4_layer", o, 4);
  Tensor x = Tensor::empty({2, 11, 4}, DType::f64);
  std::mt19937_64 rng(5);
  std::normal_distribution<double> n(0, 1);
  for (index_t i = 0; i < x.numel(); ++i) x.data_as<double>()[i] = n(rng);
  auto check = [&](const auto& mixer) {
    const Tensor y = mixer.forward(x);
    // the layer the mixer hands out, with the updated parameters, gives the same output
    const auto layer = mixer.layer();
    Tensor y_layer = Tensor::empty({2, 11, 4}, DType::f64);
    layer.forward(x.view(), y_layer.view());
    EXPECT_EQ(y.to_vector<double>(), y_layer.to_vector<double>());
    // pieces of 4, 1 and 6 tokens from a carried state
    auto state = mixer.init_state(2);
    std::vector<double> pieces;
    for (auto [t0, t] : {std::pair<index_t, index_t>{0, 4}, {4, 1}, {5, 6}}) {
      Tensor xp = Tensor::empty({2, t, 4}, DType::f64);
      for (index_t bi = 0; bi < 2; ++bi)
        for (index_t k = 0; k < t * 4; ++k)
          xp.data_as<double>()[bi * t * 4 + k] = x.data_as<double>()[bi * 44 + t0 * 4 + k];
      const Tensor yp = mixer.step(xp, state);
      for (index_t bi = 0; bi < 2; ++bi)
        for (index_t k = 0; k < t * 4; ++k) pieces.push_back(yp.data_as<const double>()[bi * t * 4 + k]);
    }
    std::vector<double> expected;  // the forward's output in the same (piece, batch, token) order
    for (auto [t0, t] : {std::pair<index_t, index_t>{0, 4}, {4, 1}, {5, 6}})
      for (index_t bi = 0; bi < 2; ++bi)
        for (index_t k = 0; k < t * 4; ++k) expected.push_back(y.data_as<const double>()[bi * 44 + t0 * 4 + k]);
    EXPECT_EQ(pieces.size(), expected.size());
    for (std::size_t i = 0; i < std::min(pieces.size(), expected.size()); ++i)
      EXPECT_NEAR(pieces[i], expected[i], 1e-9) << i;
    return y.to_vector<double>();
  };
  auto& s4d = std::get<ssm::models::S4DMixer<double>>(stack.layer(0));
  auto& s4 = std::get<ssm::models::S4Mixer<double>>(stack.layer(1));
  const std::vector<double> before_s4d = check(s4d), before_s4 = check(s4);
  stack.for_each([](const char*, std::vector<double>& v) {
    for (double& e : v) e *= 0.9;  // every parameter, the kernels' included
  });
  EXPECT_NE(check(s4d), before_s4d);
  EXPECT_NE(check(s4), before_s4);
}

// Bad input: sizes add_mixer refuses, an unstable layer, a parameter resized through params().
TEST(S4Mixer, BadInputIsAnErrorNamingTheArgument) {
  ssm::models::TrainableStack<double> stack(4);
  ssm::models::MixerOptions o;
  o.d_state = 5, o.max_len = 8;
  expect_error([&] { ssm::models::add_mixer(stack, "s4d_layer", o, 1); }, {"argument 'd_state'", "even"});
  o.d_state = 4, o.max_len = 0;
  expect_error([&] { ssm::models::add_mixer(stack, "s4_layer", o, 1); }, "argument 'max_len'");
  ssm::S4DLayer<double>::Config cfg;
  cfg.h = 4, cfg.N = 4;
  ssm::S4DLayer<double> unstable(cfg);
  unstable.ssm.A(1, 0) = {0.1, 1.0};
  expect_error([&] { ssm::models::S4DMixer<double> m(unstable); }, {"argument 'A'", "negative real parts"});
  ssm::models::S4DMixer<double> m{ssm::S4DLayer<double>(cfg)};
  Tensor x = Tensor::zeros({1, 3, 4}, DType::f64);
  m.params().C.pop_back();
  expect_error([&] { m.forward(x); }, {"argument 'C'", "expected shape (4, 2, 2)"});
  m = ssm::models::S4DMixer<double>{ssm::S4DLayer<double>(cfg)};
  m.params().shared.log_dt[2] = std::nan("");
  expect_error([&] { m.forward(x); }, {"argument 'kernel.log_dt'", "finite"});
  m = ssm::models::S4DMixer<double>{ssm::S4DLayer<double>(cfg)};
  m.params().log_diag_real[1] = -1000;  // Re A = −exp(−1000) rounds to −0: no longer stable
  expect_error([&] { m.forward(x); }, {"argument 'kernel.log_A_real'", "[-700, 700]"});
  m = ssm::models::S4DMixer<double>{ssm::S4DLayer<double>(cfg)};
  m.params().shared.D[0] = std::numeric_limits<double>::infinity();
  expect_error([&] { m.forward(x); }, {"argument 'D'", "finite"});
  ssm::S4DLayer<double> short_D(cfg);
  short_D.D.resize(2);
  expect_error([&] { ssm::models::S4DMixer<double> bad(short_D); }, {"argument 'layer'", "D of 2"});
  ssm::S4Layer<double>::Config scfg;
  scfg.h = 4, scfg.N = 4, scfg.l_max = 8, scfg.step_form = ssm::StepForm::diagonal;
  expect_error([&] { ssm::models::S4Mixer<double> bad{ssm::S4Layer<double>(scfg)}; }, "StepForm::diagonal");
  expect_error([&] { m.forward(Tensor::zeros({1, 3, 5}, DType::f64)); }, "argument 'x'");
}

// The default weight-decay rule (example_train, the Python trainer): no decay for norms, the embedding and the S4
// kernels' own parameters; decay for the rest, C included (as the S4 code registers them).
TEST(AdamW, DefaultDecayRule) {
  using ssm::train::decays_by_default;
  for (const char* n : {"embedding", "layers.0.norm.weight", "norm_f.weight", "layers.1.mixer.kernel.log_dt",
                        "layers.1.mixer.kernel.B", "layers.2.mixer.norm.weight", "layers.3.mixer.time_decay",
                        "layers.3.mixer.time_mix_key", "layers.4.mixer.filter.poles", "layers.4.mixer.filter.residues"})
    EXPECT_FALSE(decays_by_default(n)) << n;
  for (const char* n :
       {"lm_head", "layers.1.mixer.C", "layers.0.mixer.in_proj.weight", "layers.0.mixer.A_log",
        "layers.3.mixer.key.weight", "layers.4.mixer.filter.D", "layers.4.mixer.filter.short_filter_weight",
        "layers.5.mixer.filter_fn.implicit_filter.6.weight", "layers.6.mixer.router.weight"})
    EXPECT_TRUE(decays_by_default(n)) << n;
}

// A Mamba-2 language model trains: the shifted copy, as the Mamba and attention model below.
TEST(Training, AMamba2ModelLearnsTheShiftedCopy) {
  const index_t V = 8;
  ssm::models::TrainableStack<double> stack(16);
  ssm::models::MixerOptions o;
  o.d_state = 4, o.threads = 1;
  ssm::models::add_mixer(stack, "mamba2", o, 3);
  ssm::models::TrainableLM<double> model(V, std::move(stack), 4);
  AdamW<double> opt;
  std::mt19937_64 data(12);
  const ssm::train::WarmupCosine schedule{1e-2, 1e-3, 10, 120};
  double first = 0, last = 0;
  for (int s = 0; s < 120; ++s) {
    const double loss = train_step(model, opt, data, schedule);
    if (s == 0) first = loss;
    last = loss;
  }
  EXPECT_GT(first, 0.8 * std::log(static_cast<double>(V)));
  EXPECT_LT(last, 0.05 * std::log(static_cast<double>(V)));
}

TEST(Training, AMambaAndAttentionModelLearnsTheShiftedCopy) {
  const index_t V = 8;
  ssm::models::TrainableLM<double> model(V, mamba_attention_stack(5), 6);
  AdamW<double> opt;
  std::mt19937_64 data(12);
  const ssm::train::WarmupCosine schedule{1e-2, 1e-3, 10, 120};
  double first = 0, last = 0;
  for (int s = 0; s < 120; ++s) {
    const double loss = train_step(model, opt, data, schedule);
    if (s == 0) first = loss;
    last = loss;
  }
  EXPECT_GT(first, 0.8 * std::log(static_cast<double>(V)));
  EXPECT_LT(last, 0.05 * std::log(static_cast<double>(V)));  // 5 % of chance after 120 steps (measured: 2.35, then
                                                            // 0.019 after 120)
}

const ssm::train::WarmupCosine kSchedule{3e-2, 3e-3, 10, 150};

/// The model's step() gradients on a short shifted-copy batch (2 × 5, vocab 5) against central differences of its loss,
/// for every parameter (up to max_checked elements of each; 0: all). Returns how many parameters were checked; ids
/// holds the batch.
int expect_step_gradients(TinyLM& model, ssm::index_t max_checked, Tensor& ids) {
  std::mt19937_64 data(3);
  Tensor targets;
  copy_batch(data, 2, 5, 5, ids, targets);
  TinyLM::Grads g;
  model.step(ids, targets, g);
  return ssm_test::expect_parameter_gradients(
      model, g,
      [&] {
        const Tensor logits = model.logits(ids);
        return ssm::cross_entropy({logits.view().reshape({10, 5}), targets}).loss;
      },
      max_checked);
}

// The model's step() gradients against central differences of its loss, every parameter (the embedding, the layer's
// norm and mixer, the final norm, the head) element by element on a short batch.
TEST(StackLM, StepGradientsMatchCentralDifferences) {
  TinyLM model = tiny_lm(5, 7);
  Tensor ids;
  EXPECT_EQ(expect_step_gradients(model, 64, ids), 10);  // the embedding, the layer's norm, the Gated DeltaNet's six,
                                                         // norm_f, the head
}

// With the head tied to the embedding (Mamba's checkpoints), the embedding's gradient is the lookup's plus the head's,
// and there is no lm_head parameter.
TEST(StackLM, TiedHeadGradientsMatchCentralDifferences) {
  TinyLM model = tiny_lm(5, 7, /*tied=*/true);
  EXPECT_TRUE(model.tie_embeddings());
  Tensor ids;
  EXPECT_EQ(expect_step_gradients(model, /*every element of the embedding*/ 0, ids), 9);  // no head
  bool has_head = false;
  model.for_each([&](const char* name, std::vector<double>&) { has_head |= std::string(name) == "lm_head"; });
  EXPECT_FALSE(has_head);
  // a parameter resized through for_each is an error at the next call, naming it
  model.for_each([](const char* name, std::vector<double>& v) {
    if (std::string(name) == "embedding") v.pop_back();
  });
  expect_error([&] { model.logits(ids); }, {"argument 'embedding'", "expected 80 values"});
  TinyLM other = tiny_lm(5, 7);
  other.stack().norm_weight(0).pop_back();  // the stack's pre-norm, as an optimizer holds it
  expect_error([&] { other.logits(ids); }, {"argument 'layers.0.norm.weight'", "expected shape (16)"});
}

TEST(Training, ATinyModelLearnsTheShiftedCopy) {
  const index_t V = 8;
  TinyLM model = tiny_lm(V, 3);
  AdamWConfig cfg;
  cfg.weight_decay = 0.01;
  AdamW<double> opt(cfg);
  std::mt19937_64 data(11);
  double first = 0, last = 0;
  for (int s = 0; s < 150; ++s) {
    const double loss = train_step(model, opt, data, kSchedule);
    if (s == 0) first = loss;
    last = loss;
  }
  EXPECT_GT(first, 0.8 * std::log(static_cast<double>(V)));  // starts near chance (ln 8 = 2.08)
  EXPECT_LT(last, 0.05 * std::log(static_cast<double>(V)));  // the bound: 5 % of chance after 150 steps (measured:
                                                            // 0.29 after 50 steps, 0.0036 after 150)
}

TEST(Training, AResumedRunEqualsAnUninterruptedOne) {
  const std::string path = (std::filesystem::temp_directory_path() / "ssm_test_train_state.safetensors").string();
  // Uninterrupted: 16 steps, saving the state after 8.
  TinyLM a = tiny_lm(8, 3);
  AdamW<double> opt_a;
  std::mt19937_64 data_a(11);
  std::vector<double> losses_a;
  for (int s = 0; s < 16; ++s) {
    losses_a.push_back(train_step(a, opt_a, data_a, kSchedule));
    if (s == 7) ssm::train::save_training_state(path, tree_of(a), opt_a, data_a, {{"note", "after 8 steps"}});
  }
  // Resumed: another initialization and generator, overwritten by the file, then the last 8 steps.
  TinyLM b = tiny_lm(8, 99);
  AdamW<double> opt_b;
  std::mt19937_64 data_b(12345);
  std::map<std::string, std::string> extra;
  {
    ParamTree<double> t = tree_of(b);
    ssm::train::load_training_state(path, t, opt_b, data_b, &extra);
  }
  EXPECT_EQ(extra["note"], "after 8 steps");
  EXPECT_EQ(opt_b.steps(), 8);
  for (int s = 8; s < 16; ++s) EXPECT_EQ(train_step(b, opt_b, data_b, kSchedule), losses_a[s]) << "step " << s;
  const ParamTree<double> pa = tree_of(a), pb = tree_of(b);
  for (std::size_t i = 0; i < pa.size(); ++i)
    EXPECT_EQ(*pa.entries()[i].values, *pb.entries()[i].values) << pa.entries()[i].name;
  std::filesystem::remove(path);
}

TEST(TrainingState, BadFilesAreErrorsAndChangeNothing) {
  const auto dir = std::filesystem::temp_directory_path();
  const std::string path = (dir / "ssm_test_state_bad.safetensors").string();
  TinyLM a = tiny_lm(8, 3);
  AdamW<double> opt;
  std::mt19937_64 data(11);
  train_step(a, opt, data, kSchedule);
  ssm::train::save_training_state(path, tree_of(a), opt, data);
  std::string bytes;
  {
    std::ifstream is(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(is), {});
  }
  TinyLM b = tiny_lm(8, 99);
  auto embedding_of = [](TinyLM& m) {
    std::vector<double> e;
    m.for_each([&](const char* n, std::vector<double>& v) {
      if (std::string(n) == "embedding") e = v;
    });
    return e;
  };
  const std::vector<double> E0 = embedding_of(b);
  AdamW<double> opt_b;
  std::mt19937_64 data_b(5);
  const std::mt19937_64 data_b0 = data_b;
  auto load = [&](const std::string& p) {
    ParamTree<double> t = tree_of(b);
    ssm::train::load_training_state(p, t, opt_b, data_b);
  };
  auto write = [&](const std::string& p, const std::string& content) {
    std::ofstream os(p, std::ios::binary | std::ios::trunc);
    os << content;
  };
  const std::string truncated = (dir / "ssm_test_state_truncated.safetensors").string();
  write(truncated, bytes.substr(0, bytes.size() / 2));
  expect_error([&] { load(truncated); }, "safetensors");
  // Another tree: the model without its head.
  {
    ParamTree<double> full = tree_of(b), t;
    for (const auto& e : full.entries())
      if (e.name != "lm_head") t.add(e.name, *e.values);
    expect_arg_error("params", [&] { ssm::train::load_training_state(path, t, opt_b, data_b); });
  }
  // A file that is not a training state (a plain safetensors file).
  const std::string plain = (dir / "ssm_test_state_plain.safetensors").string();
  ssm::safetensors::save(plain, {{"x", TensorView::of(E0.data(), {4})}});
  expect_arg_error("path", [&] { load(plain); });
  // A malformed random state.
  std::string rng_bad = bytes;
  const auto at = rng_bad.find("\"rng\":\"");
  ASSERT_NE(at, std::string::npos);
  rng_bad[at + 7] = 'x';
  const std::string bad_rng = (dir / "ssm_test_state_rng.safetensors").string();
  write(bad_rng, rng_bad);
  expect_arg_error("path", [&] { load(bad_rng); });
  // Well-formed safetensors written with the good file's tensors and metadata, one thing changed each: a missing
  // moment, an overflowing or negative step, another dtype under the same names.
  {
    const ssm::safetensors::File good = ssm::safetensors::File::open(path);
    std::vector<Tensor> keep;
    auto rewrite = [&](const std::string& p, auto edit_tensors, auto edit_meta) {
      std::vector<std::pair<std::string, TensorView>> tensors;
      for (const auto& e : good.entries()) {
        keep.push_back(good.tensor(e.name));
        tensors.emplace_back(e.name, keep.back().view());
      }
      std::map<std::string, std::string> meta = good.metadata();
      edit_tensors(tensors);
      edit_meta(meta);
      ssm::safetensors::save(p, tensors, meta);
    };
    const std::string edited = (dir / "ssm_test_state_edited.safetensors").string();
    auto no_tensors = [](auto&) {};
    auto no_meta = [](auto&) {};
    rewrite(edited, [](auto& t) { t.erase(t.begin()); }, no_meta);  // entries are sorted: adamw.m.embedding
    expect_arg_error("path", [&] { load(edited); });
    for (const char* step : {"99999999999999999999", "-3", "8x", ""}) {
      rewrite(edited, no_tensors, [&](auto& m) { m["adamw.step"] = step; });
      expect_arg_error("path", [&] { load(edited); });
    }
    rewrite(edited,
            [&](auto& t) {
              for (auto& [name, view] : t)
                if (name == "param.lm_head") {
                  Tensor f = Tensor::empty(view.shape(), DType::f32);
                  for (index_t i = 0; i < f.numel(); ++i) f.data_as<float>()[i] = 0;
                  keep.push_back(f);
                  view = keep.back().view();
                }
            },
            no_meta);
    expect_arg_error("params", [&] { load(edited); });
    std::filesystem::remove(edited);
  }
  EXPECT_EQ(embedding_of(b), E0);  // nothing was written by the refused loads
  EXPECT_EQ(opt_b.steps(), 0);
  EXPECT_TRUE(data_b == data_b0);
  load(path);  // and the good file loads
  EXPECT_EQ(embedding_of(b), embedding_of(a));
  for (const auto& p : {path, truncated, plain, bad_rng}) std::filesystem::remove(p);
}

}  // namespace
