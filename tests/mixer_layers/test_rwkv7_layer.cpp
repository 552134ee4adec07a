// RWKV-7's time-mixing layer (layers/rwkv7.hpp): its forward equals the layer written out here as plain loops in
// double, one token at a time with the state in RWKV's own orientation (S (N_v, N_k), S ← S diag(w) − (S κ̂)(a ⊙ κ̂)ᵀ
// + v kᵀ, y = S r, as in BlinkDL's numpy reference) on awkward shapes, with and without the value residual; the
// token-by-token step and a prefill in pieces reproduce the forward; f32 agrees with f64; the layer decodes inside a
// HybridStack beside a DeltaNet layer; bad input is an ssm::Error naming the argument.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <map>
#include <limits>
#include <optional>
#include <random>
#include <vector>

#include "mixer_test_util.hpp"
#include "support/central_differences.hpp"
#include "ssm/layers/delta_net.hpp"
#include "ssm/layers/rwkv7.hpp"
#include "ssm/models/hybrid.hpp"
#include "support/decode.hpp"
#include "support/expect_error.hpp"

namespace {

using ssm::DType;
using ssm::index_t;
using ssm::Tensor;
using ssm::layers::Rwkv7Config;
using ssm::layers::Rwkv7Layer;
using ssm::layers::Rwkv7Params;
using ssm_test::decode_in_pieces;
using ssm_test::expect_arg_error;
using mixer_test::doubles;
using mixer_test::random_input;
using mixer_test::rel_diff;

/// Every parameter random (so that no term hides behind a 0 or a 1 of the plain init), at scales that keep the
/// activations O(1): mixes in [0, 1), matrices ±1/√fan_in, biases and scales around their usual values.
Rwkv7Params<double> random_params(const Rwkv7Config& cfg, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  const index_t C = cfg.d_model;
  auto fill = [&](index_t n, double lo, double hi) {
    std::vector<double> v(static_cast<std::size_t>(n));
    for (double& x : v) x = lo + (hi - lo) * u(rng);
    return v;
  };
  auto mat = [&](index_t out, index_t in) {
    const double s = 1 / std::sqrt(static_cast<double>(in));
    return fill(out * in, -s, s);
  };
  Rwkv7Params<double> p;
  for (auto* mu : {&p.mu_r, &p.mu_w, &p.mu_k, &p.mu_v, &p.mu_a, &p.mu_g}) *mu = fill(C, 0, 1);
  for (auto* W : {&p.W_r, &p.W_k, &p.W_v, &p.W_o}) *W = mat(C, C);
  p.w0 = fill(C, -3, 1), p.W_w1 = mat(cfg.decay_rank, C), p.W_w2 = mat(C, cfg.decay_rank);
  p.a0 = fill(C, -1, 1), p.W_a1 = mat(cfg.a_rank, C), p.W_a2 = mat(C, cfg.a_rank);
  if (cfg.value_residual) p.v0 = fill(C, -1, 1), p.W_v1 = mat(cfg.v_rank, C), p.W_v2 = mat(C, cfg.v_rank);
  p.W_g1 = mat(cfg.gate_rank, C), p.W_g2 = mat(C, cfg.gate_rank);
  p.k_k = fill(C, 0.5, 1.2), p.k_a = fill(C, 0.5, 1.5), p.r_k = fill(C, -0.5, 0.5);
  p.ln_w = fill(C, 0.5, 1.5), p.ln_b = fill(C, -0.2, 0.2);
  return p;
}

/// The layer written out as loops in double for x (b, l, C), v_first (b, l, C) with the value residual; the layer's v
/// goes to v_out.
std::vector<double> written_out(const Rwkv7Config& cfg, const Rwkv7Params<double>& p, const Tensor& x,
                                const Tensor* v_first, std::vector<double>* v_out) {
  const index_t b = x.size(0), l = x.size(1), C = cfg.d_model, N = cfg.head_dim, H = C / N;
  const double* X = x.data_as<double>();
  auto sigmoid = [](double z) { return 1 / (1 + std::exp(-z)); };
  // y (out) = W (out, in) x
  auto matvec = [](const std::vector<double>& W, const std::vector<double>& v, index_t out) {
    const index_t in = static_cast<index_t>(v.size());
    std::vector<double> y(static_cast<std::size_t>(out), 0.0);
    for (index_t o = 0; o < out; ++o)
      for (index_t i = 0; i < in; ++i) y[static_cast<std::size_t>(o)] += W[static_cast<std::size_t>(o * in + i)] * v[static_cast<std::size_t>(i)];
    return y;
  };
  auto at = [](const std::vector<double>& v, index_t i) { return v[static_cast<std::size_t>(i)]; };
  std::vector<double> y(static_cast<std::size_t>(b * l * C));
  if (v_out) v_out->assign(static_cast<std::size_t>(b * l * C), 0.0);
  for (index_t bi = 0; bi < b; ++bi) {
    std::vector<double> last(static_cast<std::size_t>(C), 0.0);
    std::vector<std::vector<double>> S(static_cast<std::size_t>(H), std::vector<double>(static_cast<std::size_t>(N * N), 0.0));
    for (index_t t = 0; t < l; ++t) {
      std::vector<double> xt(X + (bi * l + t) * C, X + (bi * l + t + 1) * C);
      auto mix = [&](const std::vector<double>& mu) {
        std::vector<double> m(static_cast<std::size_t>(C));
        for (index_t i = 0; i < C; ++i) m[static_cast<std::size_t>(i)] = at(xt, i) + at(mu, i) * (at(last, i) - at(xt, i));
        return m;
      };
      const auto xr = mix(p.mu_r), xw = mix(p.mu_w), xk = mix(p.mu_k), xv = mix(p.mu_v), xa = mix(p.mu_a), xg = mix(p.mu_g);
      last = xt;
      const auto r = matvec(p.W_r, xr, C);
      auto k = matvec(p.W_k, xk, C);
      auto v = matvec(p.W_v, xv, C);
      auto hw = matvec(p.W_w1, xw, cfg.decay_rank);
      for (double& z : hw) z = std::tanh(z);
      const auto zw = matvec(p.W_w2, hw, C);
      const auto za = matvec(p.W_a2, matvec(p.W_a1, xa, cfg.a_rank), C);
      auto hg = matvec(p.W_g1, xg, cfg.gate_rank);
      for (double& z : hg) z = sigmoid(z);
      const auto g = matvec(p.W_g2, hg, C);
      std::vector<double> w(static_cast<std::size_t>(C)), a(w.size()), kk(w.size());
      for (index_t i = 0; i < C; ++i) {
        w[static_cast<std::size_t>(i)] = std::exp(-sigmoid(at(zw, i) + at(p.w0, i)) / std::sqrt(std::exp(1.0)));
        a[static_cast<std::size_t>(i)] = sigmoid(at(za, i) + at(p.a0, i));
      }
      if (cfg.value_residual) {
        const auto zv = matvec(p.W_v2, matvec(p.W_v1, xv, cfg.v_rank), C);
        for (index_t i = 0; i < C; ++i) {
          const double vf = v_first->data_as<double>()[(bi * l + t) * C + i];
          v[static_cast<std::size_t>(i)] += (vf - at(v, i)) * sigmoid(at(p.v0, i) + at(zv, i));
        }
      }
      if (v_out) std::copy(v.begin(), v.end(), v_out->begin() + (bi * l + t) * C);
      for (index_t i = 0; i < C; ++i) kk[static_cast<std::size_t>(i)] = at(k, i) * at(p.k_k, i);
      for (index_t i = 0; i < C; ++i) k[static_cast<std::size_t>(i)] += at(k, i) * (at(a, i) - 1) * at(p.k_a, i);
      std::vector<double> out(static_cast<std::size_t>(C));
      for (index_t hh = 0; hh < H; ++hh) {
        double n2 = 0;
        for (index_t i = 0; i < N; ++i) n2 += at(kk, hh * N + i) * at(kk, hh * N + i);
        const double nrm = std::max(std::sqrt(n2), 1e-12);
        std::vector<double> kh(static_cast<std::size_t>(N));
        for (index_t i = 0; i < N; ++i) kh[static_cast<std::size_t>(i)] = at(kk, hh * N + i) / nrm;
        // S (N_v rows, N_k columns): S ← S diag(w) − (S κ̂)(κ̂ ⊙ a)ᵀ + v kᵀ
        std::vector<double>& Sh = S[static_cast<std::size_t>(hh)];
        for (index_t row = 0; row < N; ++row) {
          double sk = 0;
          for (index_t col = 0; col < N; ++col) sk += Sh[static_cast<std::size_t>(row * N + col)] * at(kh, col);
          for (index_t col = 0; col < N; ++col) {
            double& s = Sh[static_cast<std::size_t>(row * N + col)];
            s = s * at(w, hh * N + col) - sk * at(kh, col) * at(a, hh * N + col) + at(v, hh * N + row) * at(k, hh * N + col);
          }
        }
        std::vector<double> yh(static_cast<std::size_t>(N), 0.0);
        for (index_t row = 0; row < N; ++row)
          for (index_t col = 0; col < N; ++col) yh[static_cast<std::size_t>(row)] += Sh[static_cast<std::size_t>(row * N + col)] * at(r, hh * N + col);
        double mean = 0, var = 0, bonus = 0;
        for (double z : yh) mean += z;
        mean /= static_cast<double>(N);
        for (double z : yh) var += (z - mean) * (z - mean);
        var /= static_cast<double>(N);
        for (index_t i = 0; i < N; ++i) bonus += at(r, hh * N + i) * at(k, hh * N + i) * at(p.r_k, hh * N + i);
        for (index_t i = 0; i < N; ++i) {
          const index_t c = hh * N + i;
          const double gn = (at(yh, i) - mean) / std::sqrt(var + cfg.norm_eps) * at(p.ln_w, c) + at(p.ln_b, c);
          out[static_cast<std::size_t>(c)] = (gn + bonus * at(v, c)) * at(g, c);
        }
      }
      const auto yt = matvec(p.W_o, out, C);
      std::copy(yt.begin(), yt.end(), y.begin() + (bi * l + t) * C);
    }
  }
  return y;
}

Rwkv7Config small(index_t d_model, index_t head_dim, bool value_residual) {
  Rwkv7Config c;
  c.d_model = d_model, c.head_dim = head_dim, c.decay_rank = 5, c.a_rank = 3, c.v_rank = 2, c.gate_rank = 7;
  c.value_residual = value_residual;
  return c;
}

TEST(Rwkv7Layer, ForwardEqualsTheLayerWrittenOut) {
  struct Shape { index_t b, l, C, N; bool vres; };
  for (const Shape s : {Shape{1, 1, 4, 4, false}, Shape{2, 13, 12, 4, false}, Shape{1, 29, 16, 8, true},
                        Shape{3, 7, 6, 3, true}}) {
    const Rwkv7Config cfg = small(s.C, s.N, s.vres);
    const Rwkv7Params<double> p = random_params(cfg, 3);
    const Rwkv7Layer<double> layer(cfg, p);
    const Tensor x = random_input<double>({s.b, s.l, s.C}, 4);
    const Tensor vf = random_input<double>({s.b, s.l, s.C}, 5);
    std::vector<double> v_ref;
    const std::vector<double> ref = written_out(cfg, p, x, &vf, &v_ref);
    Tensor v_got;
    const Tensor got = layer.forward_with(x, s.vres ? std::optional<ssm::TensorView>(vf.view()) : std::nullopt, &v_got);
    SCOPED_TRACE("b=" + std::to_string(s.b) + " l=" + std::to_string(s.l) + " C=" + std::to_string(s.C) +
                 " N=" + std::to_string(s.N) + (s.vres ? " value residual" : ""));
    EXPECT_LT(rel_diff(doubles(got), ref), 1e-12);
    EXPECT_LT(rel_diff(doubles(v_got), v_ref), 1e-12);
    if (!s.vres) { EXPECT_LT(rel_diff(doubles(layer.forward(x)), ref), 1e-12); }
  }
}

TEST(Rwkv7Layer, StepAndPrefillInPiecesReproduceTheForward) {
  const Rwkv7Config cfg = small(12, 4, false);
  const Rwkv7Layer<double> layer(cfg, random_params(cfg, 7));
  const Tensor x = random_input<double>({2, 17, 12}, 8);
  const std::vector<double> full = doubles(layer.forward(x));
  for (index_t prefill : {1, 5, 17})
    EXPECT_LT(rel_diff(doubles(decode_in_pieces(layer, x, prefill)), full), 1e-12) << "prefill " << prefill;
  // with the value residual, step_with over pieces of v_first
  const Rwkv7Config vc = small(12, 4, true);
  const Rwkv7Layer<double> second(vc, random_params(vc, 9));
  const Tensor vf = random_input<double>({2, 17, 12}, 10);
  const std::vector<double> whole = doubles(second.forward_with(x, vf.view(), nullptr));
  auto state = second.init_state(2);
  Tensor y = Tensor::empty({2, 17, 12}, DType::f64);
  for (index_t t0 = 0; t0 < 17;) {
    const index_t t = t0 == 0 ? 6 : 1;
    Tensor xt = Tensor::empty({2, t, 12}, DType::f64), vt = Tensor::empty({2, t, 12}, DType::f64);
    ssm::copy(xt, x.view().narrow(1, t0, t)), ssm::copy(vt, vf.view().narrow(1, t0, t));
    ssm::copy(y.view().narrow(1, t0, t), second.step_with(xt, state, vt.view(), nullptr));
    t0 += t;
  }
  EXPECT_LT(rel_diff(doubles(y), whole), 1e-12);
}

// The backward (∂L/∂x and every parameter's gradient) against central differences, in double: l = 2 (at l = 1 from a
// zero state the decay and the removal key act on nothing, so their gradients are exactly zero), several heads,
// N = 3, b = 3.
TEST(Rwkv7Layer, BackwardMatchesCentralDifferences) {
  struct Shape { index_t b, l, C, N; };
  unsigned seed = 30;
  for (const Shape s : {Shape{1, 2, 4, 4}, Shape{2, 13, 12, 4}, Shape{3, 7, 6, 3}}) {
    SCOPED_TRACE("b=" + std::to_string(s.b) + " l=" + std::to_string(s.l) + " C=" + std::to_string(s.C));
    const Rwkv7Config cfg = small(s.C, s.N, false);
    const Tensor x = random_input<double>({s.b, s.l, s.C}, seed);
    const int checked =
        mixer_test::expect_backward_matches_central_differences<Rwkv7Layer>(cfg, random_params(cfg, seed++), x);
    EXPECT_EQ(checked, 23);  // every parameter but the value residual's three
  }
}

// With the value residual: L = Σ y ⊙ R + Σ v ⊙ R_v (v the layer's own v, as the first layer hands it on); ∂L/∂x,
// ∂L/∂v_first and every parameter's gradient against central differences.
TEST(Rwkv7Layer, BackwardWithTheValueResidualMatchesCentralDifferences) {
  const Rwkv7Config cfg = small(8, 4, true);
  const Rwkv7Params<double> params = random_params(cfg, 41);
  const index_t b = 2, l = 9, C = 8;
  Tensor x = random_input<double>({b, l, C}, 42), vf = random_input<double>({b, l, C}, 43);
  const Tensor R = random_input<double>({b, l, C}, 44), Rv = random_input<double>({b, l, C}, 45);
  auto loss_of = [&](const Rwkv7Params<double>& p) {
    Tensor v;
    const Tensor y = Rwkv7Layer<double>(cfg, p).forward_with(x, vf.view(), &v);
    double sum = 0;
    for (index_t i = 0; i < y.numel(); ++i)
      sum += y.data_as<double>()[i] * R.data_as<double>()[i] + v.data_as<double>()[i] * Rv.data_as<double>()[i];
    return sum;
  };
  auto g = Rwkv7Layer<double>(cfg, params).backward_with(x, vf.view(), R, Rv.view());
  const index_t cap = mixer_test::kMaxChecked;
  using ssm_test::to_tensor;
  ssm_test::expect_central_differences("x", x, to_tensor(g.grad_x), [&] { return loss_of(params); }, 1e-6, 1e-7, cap);
  ssm_test::expect_central_differences("v_first", vf, to_tensor(g.grad_v_first), [&] { return loss_of(params); }, 1e-6,
                                       1e-7, cap);
  Rwkv7Params<double> p = params;  // perturbed in place
  const int checked = ssm_test::expect_parameter_gradients(p, g.params, [&] { return loss_of(p); }, cap);
  EXPECT_EQ(checked, 26);
}

TEST(Rwkv7Layer, F32AgreesWithF64) {
  const Rwkv7Config cfg = small(16, 8, false);
  const Rwkv7Params<double> pd = random_params(cfg, 11);
  auto to_f32 = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
  Rwkv7Params<float> pf;
  pf.mu_r = to_f32(pd.mu_r), pf.mu_w = to_f32(pd.mu_w), pf.mu_k = to_f32(pd.mu_k), pf.mu_v = to_f32(pd.mu_v);
  pf.mu_a = to_f32(pd.mu_a), pf.mu_g = to_f32(pd.mu_g), pf.W_r = to_f32(pd.W_r), pf.W_k = to_f32(pd.W_k);
  pf.W_v = to_f32(pd.W_v), pf.W_o = to_f32(pd.W_o), pf.w0 = to_f32(pd.w0), pf.W_w1 = to_f32(pd.W_w1);
  pf.W_w2 = to_f32(pd.W_w2), pf.a0 = to_f32(pd.a0), pf.W_a1 = to_f32(pd.W_a1), pf.W_a2 = to_f32(pd.W_a2);
  pf.W_g1 = to_f32(pd.W_g1), pf.W_g2 = to_f32(pd.W_g2), pf.k_k = to_f32(pd.k_k), pf.k_a = to_f32(pd.k_a);
  pf.r_k = to_f32(pd.r_k), pf.ln_w = to_f32(pd.ln_w), pf.ln_b = to_f32(pd.ln_b);
  const Tensor xd = random_input<double>({2, 40, 16}, 12);
  Tensor xf = Tensor::empty(xd.shape(), DType::f32);
  for (index_t i = 0; i < xd.numel(); ++i) xf.data_as<float>()[i] = static_cast<float>(xd.data_as<double>()[i]);
  EXPECT_LT(rel_diff(doubles(Rwkv7Layer<float>(cfg, pf).forward(xf)), doubles(Rwkv7Layer<double>(cfg, pd).forward(xd))),
            1e-4);
}

// RWKV-7 and DeltaNet layers in one HybridStack, pattern "abab": decoding token by token and after a prefill reproduces
// the parallel forward.
TEST(Rwkv7Layer, DecodesInAHybridStackBesideDeltaNet) {
  using ssm::layers::DeltaNetLayer;
  const index_t d = 16, b = 2, l = 11;
  ssm::layers::DeltaNetConfig dc;
  dc.d_model = d, dc.heads = 2, dc.chunk_size = 4;
  Rwkv7Config rc = small(d, 8, false);
  ssm::models::HybridStack<float, Rwkv7Layer<float>, DeltaNetLayer<float>> stack(d);
  stack.add(Rwkv7Layer<float>::init(rc, 1));
  stack.add(DeltaNetLayer<float>::init(dc, 2));
  stack.add(Rwkv7Layer<float>::init(rc, 3));
  stack.add(DeltaNetLayer<float>::init(dc, 4));
  EXPECT_EQ(stack.pattern(), "abab");
  const Tensor x = random_input<float>({b, l, d}, 5);
  const std::vector<double> full = doubles(stack.forward(x));
  for (index_t prefill : {1, 4})
    EXPECT_LT(rel_diff(doubles(decode_in_pieces(stack, x, prefill)), full), 1e-4) << "prefill " << prefill;
  EXPECT_GT(rel_diff(full, doubles(x)), 0.01);  // the layers did something
}

TEST(Rwkv7Layer, BadInputIsAnErrorNamingTheArgument) {
  const Rwkv7Config cfg = small(8, 4, false);
  auto with = [&](auto edit) {
    Rwkv7Config c = cfg;
    edit(c);
    return [c] { Rwkv7Layer<float>::init(c, 1); };
  };
  expect_arg_error("d_model", with([](Rwkv7Config& c) { c.d_model = 0; }));
  expect_arg_error("head_dim", with([](Rwkv7Config& c) { c.head_dim = 3; }));  // does not divide 8
  expect_arg_error("decay_rank", with([](Rwkv7Config& c) { c.decay_rank = 0; }));
  expect_arg_error("gate_rank", with([](Rwkv7Config& c) { c.gate_rank = -1; }));
  expect_arg_error("norm_eps", with([](Rwkv7Config& c) { c.norm_eps = std::numeric_limits<double>::quiet_NaN(); }));

  const auto layer = Rwkv7Layer<float>::init(cfg, 1);
  expect_arg_error("x", [&] { layer.forward(random_input<float>({1, 3, 9}, 1)); });   // d_model 9
  expect_arg_error("x", [&] { layer.forward(random_input<double>({1, 3, 8}, 1)); });  // f64 into an f32 layer
  auto state = layer.init_state(2);
  expect_arg_error("state", [&] { layer.step(random_input<float>({1, 1, 8}, 1), state); });  // state for b = 2
  expect_arg_error("b", [&] { layer.init_state(0); });

  Rwkv7Config vc = cfg;
  vc.value_residual = true;
  const auto second = Rwkv7Layer<float>::init(vc, 2);
  expect_arg_error("v_first", [&] { second.forward(random_input<float>({1, 3, 8}, 1)); });
  const Tensor xb = random_input<float>({1, 3, 8}, 1);
  expect_arg_error("v_first", [&] { second.backward(xb, xb); });  // the value residual needs v_first
  const Tensor v_short = random_input<float>({1, 2, 8}, 2);
  expect_arg_error("v_first", [&] { second.forward_with(random_input<float>({1, 3, 8}, 1), v_short.view(), nullptr); });

  Rwkv7Params<float> p = layer.params();
  p.W_w1.pop_back();
  expect_arg_error("W_w1", [&] { Rwkv7Layer<float>(cfg, p); });
  p = layer.params();
  p.w0[1] = std::numeric_limits<float>::infinity();
  expect_arg_error("w0", [&] { Rwkv7Layer<float>(cfg, p); });
  p = layer.params();
  p.v0.assign(8, 1.0f);  // a value-residual LoRA on a first layer
  expect_arg_error("v0", [&] { Rwkv7Layer<float>(cfg, p); });
}

}  // namespace
