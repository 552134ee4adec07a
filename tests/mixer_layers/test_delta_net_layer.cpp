// The DeltaNet / Gated DeltaNet layer (layers/delta_net.hpp): its forward equals the layer written out here as
// plain loops in double (projection, short conv + SiLU, sigmoid β, the gate, L2 normalization, the delta rule token
// by token, RMSNorm per head, SiLU output gate, output projection) on awkward shapes; the token-by-token step and a
// prefill in pieces reproduce the forward; f32 agrees with f64; the layer decodes inside a HybridStack beside Mamba
// blocks; bad input is an ssm::Error naming the argument.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "ssm/layers/delta_net.hpp"
#include "ssm/models/jamba.hpp"
#include "support/decode.hpp"
#include "mixer_test_util.hpp"
#include "support/expect_error.hpp"

namespace {

using ssm::DType;
using ssm::index_t;
using ssm::Tensor;
using ssm::layers::DeltaNetConfig;
using ssm::layers::DeltaNetLayer;
using ssm::layers::DeltaNetParams;
using ssm_test::decode_in_pieces;
using ssm_test::expect_arg_error;
using mixer_test::doubles;
using mixer_test::random_input;
using mixer_test::rel_diff;

/// The layer written out as loops in double, for x (b, l, d_model).
std::vector<double> written_out(const DeltaNetConfig& cfg, const DeltaNetParams<double>& p, const Tensor& x) {
  const index_t b = x.size(0), l = x.size(1), dm = cfg.d_model, h = cfg.heads, dk = cfg.dk(), dv = cfg.dv();
  const index_t C = cfg.conv_dim(), P = cfg.proj_dim(), w = cfg.d_conv;
  const double* X = x.data_as<double>();
  auto silu = [](double z) { return z / (1 + std::exp(-z)); };
  std::vector<double> y(static_cast<std::size_t>(b * l * dm), 0.0);
  for (index_t bi = 0; bi < b; ++bi) {
    // proj[t][c] = Σ_j in_proj[c][j] x[t][j]
    std::vector<std::vector<double>> proj(l, std::vector<double>(P, 0.0));
    for (index_t t = 0; t < l; ++t)
      for (index_t c = 0; c < P; ++c)
        for (index_t j = 0; j < dm; ++j) proj[t][c] += p.in_proj[c * dm + j] * X[(bi * l + t) * dm + j];
    // qkv[t][c] = silu(Σ_s conv[c][s] proj[t − (w − 1) + s][c])
    std::vector<std::vector<double>> qkv(l, std::vector<double>(C, 0.0));
    for (index_t t = 0; t < l; ++t)
      for (index_t c = 0; c < C; ++c) {
        double acc = 0;
        for (index_t s = 0; s < w; ++s) {
          const index_t src = t - (w - 1) + s;
          if (src >= 0) acc += p.conv_weight[c * w + s] * proj[src][c];
        }
        qkv[t][c] = silu(acc);
      }
    // the delta rule per head: S ← α (S − β k̂ (k̂ᵀ S)) + β k̂ vᵀ, o = Sᵀ q̂ / √dk
    std::vector<std::vector<double>> o(l, std::vector<double>(h * dv, 0.0));
    for (index_t hi = 0; hi < h; ++hi) {
      std::vector<double> S(dk * dv, 0.0);
      for (index_t t = 0; t < l; ++t) {
        std::vector<double> q(dk), k(dk), v(dv);
        double nq = 0, nk = 0;
        for (index_t i = 0; i < dk; ++i) {
          q[i] = qkv[t][hi * dk + i], k[i] = qkv[t][h * dk + hi * dk + i];
          nq += q[i] * q[i], nk += k[i] * k[i];
        }
        for (index_t i = 0; i < dk; ++i) q[i] /= std::sqrt(nq + 1e-6), k[i] /= std::sqrt(nk + 1e-6);
        for (index_t j = 0; j < dv; ++j) v[j] = qkv[t][2 * h * dk + hi * dv + j];
        const double beta = 1 / (1 + std::exp(-proj[t][C + hi]));
        double alpha = 1;
        if (cfg.gated) {
          const double a = proj[t][C + h + hi] + p.dt_bias[hi];
          const double softplus = a > 20 ? a : std::log1p(std::exp(a));
          alpha = std::exp(-std::exp(p.A_log[hi]) * softplus);
        }
        for (index_t j = 0; j < dv; ++j) {
          double kS = 0;  // (k̂ᵀ S)_j
          for (index_t i = 0; i < dk; ++i) kS += k[i] * S[i * dv + j];
          for (index_t i = 0; i < dk; ++i) S[i * dv + j] = alpha * (S[i * dv + j] - beta * k[i] * kS) + beta * k[i] * v[j];
        }
        for (index_t j = 0; j < dv; ++j) {
          double acc = 0;
          for (index_t i = 0; i < dk; ++i) acc += S[i * dv + j] * q[i];
          o[t][hi * dv + j] = acc / std::sqrt(static_cast<double>(dk));
        }
      }
    }
    // RMSNorm per head over dv, ⊙ silu(o_gate), then out_proj
    for (index_t t = 0; t < l; ++t) {
      for (index_t hi = 0; hi < h; ++hi) {
        double ms = 0;
        for (index_t j = 0; j < dv; ++j) ms += o[t][hi * dv + j] * o[t][hi * dv + j];
        const double r = 1 / std::sqrt(ms / static_cast<double>(dv) + cfg.norm_eps);
        for (index_t j = 0; j < dv; ++j)
          o[t][hi * dv + j] *= r * p.norm_weight[j] * silu(proj[t][cfg.gate_col() + hi * dv + j]);
      }
      for (index_t c = 0; c < dm; ++c)
        for (index_t j = 0; j < h * dv; ++j) y[(bi * l + t) * dm + c] += p.out_proj[c * h * dv + j] * o[t][j];
    }
  }
  return y;
}

struct Shape {
  index_t b, l, d, h, dk, dv, chunk;
  bool gated;
};

const std::vector<Shape>& shapes() {
  static const std::vector<Shape> list = {
      {1, 1, 6, 1, 3, 0, 64, false},   // l = 1, dv = dk
      {2, 7, 10, 2, 3, 5, 4, false},   // DeltaNet, odd head dims, l not a multiple of the chunk
      {2, 19, 12, 3, 4, 4, 8, true},   // Gated DeltaNet
      {1, 33, 8, 2, 5, 7, 16, true},   // gated, dv > dk, two chunks and a tail
  };
  return list;
}

DeltaNetConfig config_of(const Shape& s) {
  DeltaNetConfig cfg;
  cfg.d_model = s.d, cfg.heads = s.h, cfg.head_dim = s.dk, cfg.head_v_dim = s.dv, cfg.chunk_size = s.chunk;
  cfg.gated = s.gated;
  return cfg;
}

TEST(DeltaNetLayer, ForwardEqualsTheLayerWrittenOut) {
  unsigned seed = 1;
  for (const Shape& s : shapes()) {
    const DeltaNetConfig cfg = config_of(s);
    const auto layer = DeltaNetLayer<double>::init(cfg, seed);
    const Tensor x = random_input<double>({s.b, s.l, s.d}, seed++);
    const double err = rel_diff(doubles(layer.forward(x)), written_out(cfg, layer.params(), x));
    EXPECT_LT(err, 1e-12) << "b=" << s.b << " l=" << s.l << " h=" << s.h << " gated=" << s.gated;
  }
}

template <class T>
void expect_steps_reproduce_forward(double tol) {
  unsigned seed = 20;
  for (const Shape& s : shapes()) {
    const auto layer = DeltaNetLayer<T>::init(config_of(s), seed);
    const Tensor x = random_input<T>({s.b, s.l, s.d}, seed++);
    const std::vector<double> full = doubles(layer.forward(x));
    for (index_t prefill : {1, 5})  // one token at a time; 5 tokens (or all), then steps
      EXPECT_LT(rel_diff(doubles(decode_in_pieces(layer, x, prefill)), full), tol)
          << "l=" << s.l << " gated=" << s.gated << " prefill=" << prefill;
  }
}

TEST(DeltaNetLayer, StepsReproduceTheForward) {
  expect_steps_reproduce_forward<double>(1e-12);
  expect_steps_reproduce_forward<float>(2e-5);
}

TEST(DeltaNetLayer, FloatAgreesWithDouble) {
  for (const Shape& s : shapes()) {
    const DeltaNetConfig cfg = config_of(s);
    const auto ld = DeltaNetLayer<double>::init(cfg, 5);
    const auto& pd = ld.params();
    auto to_f = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
    const DeltaNetLayer<float> lf(cfg, DeltaNetParams<float>{to_f(pd.in_proj), to_f(pd.conv_weight), to_f(pd.A_log),
                                                             to_f(pd.dt_bias), to_f(pd.norm_weight), to_f(pd.out_proj)});
    const Tensor xd = random_input<double>({s.b, s.l, s.d}, 9);
    Tensor xf = Tensor::empty(xd.shape(), DType::f32);
    for (index_t i = 0; i < xd.numel(); ++i) xf.data_as<float>()[i] = static_cast<float>(xd.data_as<double>()[i]);
    EXPECT_LT(rel_diff(doubles(lf.forward(xf)), doubles(ld.forward(xd))), 2e-5) << "l=" << s.l << " gated=" << s.gated;
  }
}

// The backward (∂L/∂x and every parameter's gradient) against central differences, in double, on every shape: l = 1,
// lengths the chunk does not divide, both kinds.
TEST(DeltaNetLayer, BackwardMatchesCentralDifferences) {
  unsigned seed = 40;
  for (const Shape& s : shapes()) {
    SCOPED_TRACE("l=" + std::to_string(s.l) + " gated=" + std::to_string(s.gated));
    const DeltaNetConfig cfg = config_of(s);
    const auto layer = DeltaNetLayer<double>::init(cfg, seed);
    const Tensor x = random_input<double>({s.b, s.l, s.d}, seed++);
    const int checked = mixer_test::expect_backward_matches_central_differences<DeltaNetLayer>(cfg, layer.params(), x);
    EXPECT_EQ(checked, s.gated ? 6 : 4);  // A_log and dt_bias only when gated
  }
}

// f32's backward agrees with f64's on the same (rounded) parameters and input.
TEST(DeltaNetLayer, FloatBackwardAgreesWithDouble) {
  const Shape s = shapes()[3];
  const DeltaNetConfig cfg = config_of(s);
  const auto ld = DeltaNetLayer<double>::init(cfg, 8);
  const auto lf = DeltaNetLayer<float>::init(cfg, 8);  // the same draws, rounded
  const Tensor xd = random_input<double>({s.b, s.l, s.d}, 3), gd = random_input<double>({s.b, s.l, s.d}, 4);
  const Tensor xf = random_input<float>({s.b, s.l, s.d}, 3), gf = random_input<float>({s.b, s.l, s.d}, 4);
  const auto rd = ld.backward(xd, gd);
  const auto rf = lf.backward(xf, gf);
  auto to_d = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
  EXPECT_LT(rel_diff(to_d(rf.grad_x), rd.grad_x), 1e-4);
  EXPECT_LT(rel_diff(to_d(rf.params.in_proj), rd.params.in_proj), 1e-4);
  EXPECT_LT(rel_diff(to_d(rf.params.A_log), rd.params.A_log), 1e-4);
  EXPECT_LT(rel_diff(to_d(rf.params.out_proj), rd.params.out_proj), 1e-4);
}

// A hybrid of Mamba blocks and (Gated) DeltaNet layers, pattern "abab": decoding token by token and after a prefill
// reproduces the parallel forward.
TEST(DeltaNetLayer, DecodesInAHybridStackBesideMamba) {
  using Mamba = ssm::models::MambaMixer<float>;
  const index_t d = 16, b = 2, l = 11;
  ssm::layers::MambaBlockConfig mc;
  mc.d_model = d, mc.d_state = 4;
  DeltaNetConfig dc;
  dc.d_model = d, dc.heads = 2, dc.chunk_size = 4;
  ssm::models::HybridStack<float, Mamba, DeltaNetLayer<float>> stack(d);
  stack.add(Mamba(ssm::layers::MambaBlock<float>::init(mc, 1)));
  stack.add(DeltaNetLayer<float>::init(dc, 2));
  stack.add(Mamba(ssm::layers::MambaBlock<float>::init(mc, 3)));
  dc.gated = true;
  stack.add(DeltaNetLayer<float>::init(dc, 4));
  EXPECT_EQ(stack.pattern(), "abab");
  const Tensor x = random_input<float>({b, l, d}, 5);
  const std::vector<double> full = doubles(stack.forward(x));
  for (index_t prefill : {1, 4})
    EXPECT_LT(rel_diff(doubles(decode_in_pieces(stack, x, prefill)), full), 1e-4) << "prefill " << prefill;
  EXPECT_GT(rel_diff(full, doubles(x)), 0.01);  // the layers did something
}

TEST(DeltaNetLayer, BadInputIsAnErrorNamingTheArgument) {
  DeltaNetConfig cfg;
  cfg.d_model = 8, cfg.heads = 2;
  auto with = [&](auto edit) {
    DeltaNetConfig c = cfg;
    edit(c);
    return [c] { DeltaNetLayer<float>::init(c, 1); };
  };
  expect_arg_error("heads", with([](DeltaNetConfig& c) { c.heads = 0; }));
  expect_arg_error("d_model", with([](DeltaNetConfig& c) { c.d_model = 0; }));
  expect_arg_error("head_dim", with([](DeltaNetConfig& c) { c.heads = 9; }));  // d_model / heads = 0
  expect_arg_error("d_conv", with([](DeltaNetConfig& c) { c.d_conv = 1; }));
  expect_arg_error("norm_eps", with([](DeltaNetConfig& c) { c.norm_eps = std::numeric_limits<double>::quiet_NaN(); }));
  expect_arg_error("chunk_size", with([](DeltaNetConfig& c) { c.chunk_size = 0; }));

  const auto layer = DeltaNetLayer<float>::init(cfg, 1);
  expect_arg_error("x", [&] { layer.forward(random_input<float>({1, 3, 9}, 1)); });     // d_model 9
  expect_arg_error("x", [&] { layer.forward(random_input<double>({1, 3, 8}, 1)); });    // f64 into an f32 layer
  expect_arg_error("x", [&] { layer.forward(random_input<float>({3, 8}, 1)); });        // rank 2
  auto state = layer.init_state(2);
  expect_arg_error("state", [&] { layer.step(random_input<float>({1, 1, 8}, 1), state); });  // state for b = 2
  expect_arg_error("b", [&] { layer.init_state(0); });
  const Tensor x = random_input<float>({1, 3, 8}, 1);
  expect_arg_error("grad_out", [&] { layer.backward(x, random_input<float>({1, 4, 8}, 2)); });   // l 4
  expect_arg_error("grad_out", [&] { layer.backward(x, random_input<double>({1, 3, 8}, 2)); });  // f64
  expect_arg_error("x", [&] { layer.backward(random_input<float>({1, 3, 9}, 1), x); });           // d_model 9

  DeltaNetParams<float> p = layer.params();
  p.in_proj.pop_back();
  expect_arg_error("in_proj", [&] { DeltaNetLayer<float>(cfg, p); });
  cfg.gated = true;
  p = DeltaNetLayer<float>::init(cfg, 1).params();
  p.A_log[0] = std::numeric_limits<float>::infinity();
  expect_arg_error("A_log", [&] { DeltaNetLayer<float>(cfg, p); });
}

}  // namespace
