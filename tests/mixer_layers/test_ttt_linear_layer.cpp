// The TTT-Linear layer (layers/ttt_linear.hpp): its forward equals the layer written out here in double — the
// projections, the interleaved RoPE at positions t mod m, η = base_lr σ(·) / d, τ_i = max(1 / (i + 1) + offset_i, 0),
// the inner model trained by mini-batch gradient descent with gradients by central differences (tests/support/
// ttt_inner.hpp), the post-norm, the gelu gate and out_proj — with and without the gate, on mini-batches that do not
// divide l; the token-by-token step and prefills that end inside a mini-batch reproduce the forward; f32 agrees with
// f64; the layer decodes inside a HybridStack beside a DeltaNet layer; bad input is an ssm::Error naming the argument.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "mixer_test_util.hpp"
#include "ssm/layers/delta_net.hpp"
#include "ssm/layers/ttt_linear.hpp"
#include "ssm/models/hybrid.hpp"
#include "support/decode.hpp"
#include "support/expect_error.hpp"
#include "support/ttt_inner.hpp"

namespace {

using ssm::DType;
using ssm::index_t;
using ssm::Tensor;
using ssm::layers::TttLinearConfig;
using ssm::layers::TttLinearLayer;
using ssm::layers::TttLinearLayerParams;
using ssm_test::decode_in_pieces;
using ssm_test::expect_arg_error;
using mixer_test::doubles;
using mixer_test::random_input;
using mixer_test::rel_diff;

TttLinearConfig small(index_t C, index_t h, index_t m, bool gate) {
  TttLinearConfig c;
  c.d_model = C, c.heads = h, c.mini_batch_size = m, c.use_gate = gate, c.base_lr = 2.0;
  return c;
}

/// Every parameter random (no term hides behind a 0 or a 1 of the authors' init), at scales that keep activations O(1).
TttLinearLayerParams<double> random_params(const TttLinearConfig& cfg, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  auto fill = [&](index_t n, double lo, double hi) {
    std::vector<double> v(static_cast<std::size_t>(n));
    for (double& x : v) x = lo + (hi - lo) * u(rng);
    return v;
  };
  const index_t C = cfg.d_model, h = cfg.heads, d = cfg.head_dim();
  const double s = 1 / std::sqrt(static_cast<double>(C));
  TttLinearLayerParams<double> p;
  p.in_proj = fill(cfg.proj_dim() * C, -s, s);
  p.lr_weight = fill(h * C, -s, s), p.lr_bias = fill(h, -1, 1);
  p.token_idx_offset = fill(cfg.mini_batch_size, -0.2, 0.2);
  p.ttt_norm_weight = fill(h * d, 0.5, 1.5), p.ttt_norm_bias = fill(h * d, -0.5, 0.5);
  p.W1 = fill(h * d * d, -0.3, 0.3), p.b1 = fill(h * d, -0.3, 0.3);
  p.post_norm_weight = fill(C, 0.5, 1.5), p.post_norm_bias = fill(C, -0.2, 0.2);
  p.out_proj = fill(C * C, -s, s);
  return p;
}

/// The layer written out in double over x (b, l, C).
std::vector<double> written_out(const TttLinearConfig& cfg, const TttLinearLayerParams<double>& p, const Tensor& x) {
  const index_t b = x.size(0), l = x.size(1), C = cfg.d_model, h = cfg.heads, d = cfg.head_dim();
  const index_t m = cfg.mini_batch_size, P = cfg.proj_dim();
  const std::vector<double> xs = doubles(x);
  auto at = [](const std::vector<double>& v, index_t i) { return v[static_cast<std::size_t>(i)]; };
  std::vector<double> tau(static_cast<std::size_t>(m));
  for (index_t i = 0; i < m; ++i) tau[static_cast<std::size_t>(i)] = std::max(1.0 / (i + 1) + at(p.token_idx_offset, i), 0.0);
  std::vector<double> y(static_cast<std::size_t>(b * l * C));
  for (index_t bi = 0; bi < b; ++bi) {
    std::vector<std::vector<double>> proj(static_cast<std::size_t>(l), std::vector<double>(static_cast<std::size_t>(P)));
    for (index_t t = 0; t < l; ++t)
      for (index_t r = 0; r < P; ++r) {
        double acc = 0;
        for (index_t c = 0; c < C; ++c) acc += at(p.in_proj, r * C + c) * at(xs, (bi * l + t) * C + c);
        proj[static_cast<std::size_t>(t)][static_cast<std::size_t>(r)] = acc;
      }
    std::vector<std::vector<double>> o(static_cast<std::size_t>(l), std::vector<double>(static_cast<std::size_t>(C)));
    for (index_t hh = 0; hh < h; ++hh) {
      ttt_inner::Inner f;
      f.d = d, f.eps = cfg.ln_eps;
      f.gamma.assign(p.ttt_norm_weight.begin() + hh * d, p.ttt_norm_weight.begin() + (hh + 1) * d);
      f.beta.assign(p.ttt_norm_bias.begin() + hh * d, p.ttt_norm_bias.begin() + (hh + 1) * d);
      std::vector<ttt_inner::Token> toks(static_cast<std::size_t>(l));
      for (index_t t = 0; t < l; ++t) {
        const std::vector<double>& pr = proj[static_cast<std::size_t>(t)];
        ttt_inner::Token& tk = toks[static_cast<std::size_t>(t)];
        tk.q.assign(pr.begin() + hh * d, pr.begin() + (hh + 1) * d);
        tk.k.assign(pr.begin() + C + hh * d, pr.begin() + C + (hh + 1) * d);
        tk.v.assign(pr.begin() + 2 * C + hh * d, pr.begin() + 2 * C + (hh + 1) * d);
        const double pos = static_cast<double>(t % m);
        for (auto* vec : {&tk.q, &tk.k})
          for (index_t i = 0; i < d / 2; ++i) {  // RoPE on the pair (2i, 2i + 1)
            const double ang = pos * std::pow(cfg.rope_base, -2.0 * static_cast<double>(i) / static_cast<double>(d));
            const double a = at(*vec, 2 * i), c2 = at(*vec, 2 * i + 1);
            (*vec)[static_cast<std::size_t>(2 * i)] = a * std::cos(ang) - c2 * std::sin(ang);
            (*vec)[static_cast<std::size_t>(2 * i + 1)] = a * std::sin(ang) + c2 * std::cos(ang);
          }
        double z = at(p.lr_bias, hh);
        for (index_t c = 0; c < C; ++c) z += at(p.lr_weight, hh * C + c) * at(xs, (bi * l + t) * C + c);
        tk.eta = cfg.base_lr / (1 + std::exp(-z)) / static_cast<double>(d);
      }
      std::vector<double> W(p.W1.begin() + hh * d * d, p.W1.begin() + (hh + 1) * d * d);
      W.insert(W.end(), p.b1.begin() + hh * d, p.b1.begin() + (hh + 1) * d);
      const std::vector<double> oh = f.run(W, toks, m, tau);
      for (index_t t = 0; t < l; ++t)
        for (index_t j = 0; j < d; ++j) o[static_cast<std::size_t>(t)][static_cast<std::size_t>(hh * d + j)] = at(oh, t * d + j);
    }
    for (index_t t = 0; t < l; ++t) {
      std::vector<double>& ot = o[static_cast<std::size_t>(t)];
      double mean = 0, var = 0;
      for (double e : ot) mean += e / static_cast<double>(C);
      for (double e : ot) var += (e - mean) * (e - mean) / static_cast<double>(C);
      for (index_t j = 0; j < C; ++j) {
        double& e = ot[static_cast<std::size_t>(j)];
        e = (e - mean) / std::sqrt(var + cfg.ln_eps) * at(p.post_norm_weight, j) + at(p.post_norm_bias, j);
        if (cfg.use_gate) {
          const double g = proj[static_cast<std::size_t>(t)][static_cast<std::size_t>(3 * C + j)];
          e *= 0.5 * g * (1 + std::tanh(std::sqrt(2 / M_PI) * (g + 0.044715 * g * g * g)));
        }
      }
      for (index_t r = 0; r < C; ++r) {
        double acc = 0;
        for (index_t j = 0; j < C; ++j) acc += at(p.out_proj, r * C + j) * at(ot, j);
        y[static_cast<std::size_t>((bi * l + t) * C + r)] = acc;
      }
    }
  }
  return y;
}

TEST(TttLinearLayer, ForwardEqualsTheLayerWrittenOut) {
  struct Shape {
    index_t C, h, m, b, l;
    bool gate;
  };
  for (const Shape& s : {Shape{8, 2, 3, 2, 10, false}, Shape{12, 3, 4, 1, 9, true}, Shape{8, 1, 16, 2, 5, true}}) {
    const TttLinearConfig cfg = small(s.C, s.h, s.m, s.gate);
    const TttLinearLayerParams<double> p = random_params(cfg, 3);
    const TttLinearLayer<double> layer(cfg, p);
    const Tensor x = random_input<double>({s.b, s.l, s.C}, 4);
    const std::vector<double> got = doubles(layer.forward(x)), want = written_out(cfg, p, x);
    EXPECT_LT(rel_diff(got, want), 1e-7) << "C " << s.C << " h " << s.h << " m " << s.m << " gate " << s.gate;
    EXPECT_GT(rel_diff(got, doubles(x)), 0.01);
  }
}

// The backward (∂L/∂x and every parameter's gradient: the projections, η's weights, τ's offsets, the inner layer norm,
// the initial weights W1 and b1, the post-norm, with and without the gate) against central differences in double, on
// lengths that end inside a mini-batch.
TEST(TttLinearLayer, BackwardMatchesCentralDifferences) {
  struct Shape {
    index_t C, h, m, b, l;
    bool gate;
  };
  unsigned seed = 50;
  for (const Shape& s : {Shape{8, 2, 3, 2, 10, false}, Shape{12, 3, 4, 1, 9, true}}) {
    SCOPED_TRACE("C=" + std::to_string(s.C) + " m=" + std::to_string(s.m) + " gate=" + std::to_string(s.gate));
    const TttLinearConfig cfg = small(s.C, s.h, s.m, s.gate);
    const Tensor x = random_input<double>({s.b, s.l, s.C}, seed);
    const int checked =
        mixer_test::expect_backward_matches_central_differences<TttLinearLayer>(cfg, random_params(cfg, seed++), x);
    EXPECT_EQ(checked, 11);
  }
}

TEST(TttLinearLayer, StepAndPrefillInPiecesReproduceTheForward) {
  for (bool gate : {false, true}) {
    const TttLinearConfig cfg = small(12, 3, 4, gate);
    const TttLinearLayer<double> layer(cfg, random_params(cfg, 7));
    const Tensor x = random_input<double>({2, 17, 12}, 8);
    const std::vector<double> full = doubles(layer.forward(x));
    for (index_t prefill : {1, 4, 6, 17})  // 6: the prefill ends inside a mini-batch
      EXPECT_LT(rel_diff(doubles(decode_in_pieces(layer, x, prefill)), full), 1e-12) << "prefill " << prefill;
  }
}

TEST(TttLinearLayer, F32AgreesWithF64) {
  const TttLinearConfig cfg = small(16, 2, 16, true);
  const TttLinearLayerParams<double> pd = random_params(cfg, 11);
  auto to_f32 = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
  TttLinearLayerParams<float> pf;
  pf.in_proj = to_f32(pd.in_proj), pf.lr_weight = to_f32(pd.lr_weight), pf.lr_bias = to_f32(pd.lr_bias);
  pf.token_idx_offset = to_f32(pd.token_idx_offset), pf.ttt_norm_weight = to_f32(pd.ttt_norm_weight);
  pf.ttt_norm_bias = to_f32(pd.ttt_norm_bias), pf.W1 = to_f32(pd.W1), pf.b1 = to_f32(pd.b1);
  pf.post_norm_weight = to_f32(pd.post_norm_weight), pf.post_norm_bias = to_f32(pd.post_norm_bias);
  pf.out_proj = to_f32(pd.out_proj);
  const Tensor xd = random_input<double>({2, 40, 16}, 12);
  Tensor xf = Tensor::empty(xd.shape(), DType::f32);
  for (index_t i = 0; i < xd.numel(); ++i) xf.data_as<float>()[i] = static_cast<float>(xd.data_as<double>()[i]);
  EXPECT_LT(rel_diff(doubles(TttLinearLayer<float>(cfg, pf).forward(xf)),
                     doubles(TttLinearLayer<double>(cfg, pd).forward(xd))),
            1e-4);
}

// TTT-Linear and DeltaNet layers in one HybridStack, pattern "abab": decoding token by token and after a prefill
// reproduces the parallel forward.
TEST(TttLinearLayer, DecodesInAHybridStackBesideDeltaNet) {
  using ssm::layers::DeltaNetLayer;
  const index_t d = 16, b = 2, l = 11;
  ssm::layers::DeltaNetConfig dc;
  dc.d_model = d, dc.heads = 2, dc.chunk_size = 4;
  const TttLinearConfig tc = small(d, 2, 4, true);
  ssm::models::HybridStack<float, TttLinearLayer<float>, DeltaNetLayer<float>> stack(d);
  stack.add(TttLinearLayer<float>::init(tc, 1));
  stack.add(DeltaNetLayer<float>::init(dc, 2));
  stack.add(TttLinearLayer<float>::init(tc, 3));
  stack.add(DeltaNetLayer<float>::init(dc, 4));
  EXPECT_EQ(stack.pattern(), "abab");
  const Tensor x = random_input<float>({b, l, d}, 5);
  const std::vector<double> full = doubles(stack.forward(x));
  for (index_t prefill : {1, 6})
    EXPECT_LT(rel_diff(doubles(decode_in_pieces(stack, x, prefill)), full), 1e-4) << "prefill " << prefill;
  EXPECT_GT(rel_diff(full, doubles(x)), 0.01);  // the layers did something
}

TEST(TttLinearLayer, BadInputIsAnErrorNamingTheArgument) {
  const TttLinearConfig cfg = small(8, 2, 4, false);
  auto with = [&](auto edit) {
    TttLinearConfig c = cfg;
    edit(c);
    return [c] { TttLinearLayer<float>::init(c, 1); };
  };
  expect_arg_error("d_model", with([](TttLinearConfig& c) { c.d_model = 0; }));
  expect_arg_error("heads", with([](TttLinearConfig& c) { c.heads = 3; }));  // does not divide 8
  expect_arg_error("heads", with([](TttLinearConfig& c) { c.heads = 8; }));  // head width 1: no RoPE pair
  expect_arg_error("mini_batch_size", with([](TttLinearConfig& c) { c.mini_batch_size = 0; }));
  expect_arg_error("base_lr", with([](TttLinearConfig& c) { c.base_lr = std::numeric_limits<double>::quiet_NaN(); }));
  expect_arg_error("rope_base", with([](TttLinearConfig& c) { c.rope_base = 1; }));
  expect_arg_error("ln_eps", with([](TttLinearConfig& c) { c.ln_eps = 0; }));

  const auto layer = TttLinearLayer<float>::init(cfg, 1);
  expect_arg_error("x", [&] { layer.forward(random_input<float>({1, 3, 9}, 1)); });   // d_model 9
  expect_arg_error("x", [&] { layer.forward(random_input<double>({1, 3, 8}, 1)); });  // f64 into an f32 layer
  auto state = layer.init_state(2);
  expect_arg_error("state", [&] { layer.step(random_input<float>({1, 1, 8}, 1), state); });  // state for b = 2
  expect_arg_error("b", [&] { layer.init_state(0); });
  const Tensor xb = random_input<float>({1, 3, 8}, 1);
  expect_arg_error("grad_out", [&] { layer.backward(xb, random_input<float>({1, 3, 4}, 2)); });  // d_model 4
  expect_arg_error("x", [&] { layer.backward(random_input<float>({3, 8}, 1), xb); });            // rank 2

  TttLinearLayerParams<float> p = layer.params();
  p.W1.pop_back();
  expect_arg_error("W1", [&] { TttLinearLayer<float>(cfg, p); });
  p = layer.params();
  p.token_idx_offset[1] = std::numeric_limits<float>::infinity();
  expect_arg_error("token_idx_offset", [&] { TttLinearLayer<float>(cfg, p); });
}

}  // namespace
