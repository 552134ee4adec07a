// The linear-attention layer (layers/linear_attention.hpp) in its RetNet, Katharopoulos and GLA configurations and a
// plain one: the forward equals the layer written out as loops in double (projection, φ, GLA's low-rank log gate, the
// decayed outer-product state, the normalizer, RMSNorm per head, the swish gate, output projection); decoding steps reproduce the forward;
// the layer decodes in a HybridStack beside a DeltaNet layer; bad input is an ssm::Error naming the argument.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "ssm/layers/delta_net.hpp"
#include "ssm/layers/linear_attention.hpp"
#include "ssm/models/hybrid.hpp"
#include "support/decode.hpp"
#include "mixer_test_util.hpp"
#include "support/expect_error.hpp"

namespace {

using ssm::DType;
using ssm::index_t;
using ssm::Tensor;
using ssm::layers::LinearAttentionConfig;
using ssm::layers::LinearAttentionLayer;
using ssm::layers::LinearAttentionLayerParams;
using ssm_test::decode_in_pieces;
using ssm_test::expect_arg_error;
using mixer_test::doubles;
using mixer_test::random_input;
using mixer_test::rel_diff;

/// The layer written out as loops in double, for x (b, l, d_model).
std::vector<double> written_out(const LinearAttentionConfig& cfg, const LinearAttentionLayerParams<double>& p,
                                const Tensor& x) {
  const index_t b = x.size(0), l = x.size(1), dm = cfg.d_model, h = cfg.heads, dk = cfg.dk(), dv = cfg.dv();
  const index_t P = cfg.proj_dim();
  const double* X = x.data_as<double>();
  const double scale = 1 / std::sqrt(static_cast<double>(dk));
  auto phi = [&](double z) { return cfg.feature_map == ssm::FeatureMap::identity ? z : (z > 0 ? z + 1 : std::exp(z)); };
  std::vector<double> y(static_cast<std::size_t>(b * l * dm), 0.0);
  for (index_t bi = 0; bi < b; ++bi) {
    std::vector<std::vector<double>> proj(l, std::vector<double>(P, 0.0));
    for (index_t t = 0; t < l; ++t)
      for (index_t c = 0; c < P; ++c)
        for (index_t j = 0; j < dm; ++j) proj[t][c] += p.in_proj[c * dm + j] * X[(bi * l + t) * dm + j];
    // GLA: α = exp(logsigmoid(gate_up (gate_down x) + gate_bias) / τ) = sigmoid(·)^(1/τ), (l, h dk)
    std::vector<std::vector<double>> alpha(l, std::vector<double>(h * dk, 1.0));
    if (cfg.gated)
      for (index_t t = 0; t < l; ++t)
        for (index_t c = 0; c < h * dk; ++c) {
          double a = p.gate_bias[c];
          for (index_t r = 0; r < cfg.gate_rank; ++r) {
            double low = 0;
            for (index_t j = 0; j < dm; ++j) low += p.gate_down[r * dm + j] * X[(bi * l + t) * dm + j];
            a += p.gate_up[c * cfg.gate_rank + r] * low;
          }
          alpha[t][c] = std::pow(1 / (1 + std::exp(-a)), 1 / cfg.gate_normalizer);
        }
    std::vector<std::vector<double>> o(l, std::vector<double>(h * dv, 0.0));
    for (index_t hi = 0; hi < h; ++hi) {
      const double gamma = cfg.retention ? 1 - std::pow(2.0, -5.0 - static_cast<double>(hi)) : 1.0;
      std::vector<double> S(dk * dv, 0.0), z(dk, 0.0);
      for (index_t t = 0; t < l; ++t) {
        for (index_t i = 0; i < dk; ++i) {
          const double k = phi(proj[t][h * dk + hi * dk + i]), a = gamma * alpha[t][hi * dk + i];
          z[i] = a * z[i] + k;
          for (index_t j = 0; j < dv; ++j) S[i * dv + j] = a * S[i * dv + j] + k * proj[t][2 * h * dk + hi * dv + j];
        }
        double den = 0;
        for (index_t i = 0; i < dk; ++i) den += z[i] * scale * phi(proj[t][hi * dk + i]);
        for (index_t j = 0; j < dv; ++j) {
          double acc = 0;
          for (index_t i = 0; i < dk; ++i) acc += S[i * dv + j] * scale * phi(proj[t][hi * dk + i]);
          o[t][hi * dv + j] = cfg.normalize ? acc / (den + 1e-6) : acc;
        }
      }
    }
    for (index_t t = 0; t < l; ++t) {
      for (index_t hi = 0; hi < h; ++hi) {
        double ms = 0;
        for (index_t j = 0; j < dv; ++j) ms += o[t][hi * dv + j] * o[t][hi * dv + j];
        const double r = cfg.output_norm ? 1 / std::sqrt(ms / static_cast<double>(dv) + cfg.norm_eps) : 1.0;
        for (index_t j = 0; j < dv; ++j) {
          o[t][hi * dv + j] *= r * (cfg.output_norm ? p.norm_weight[j] : 1.0);
          if (cfg.output_gate) {
            const double g = proj[t][cfg.gate_col() + hi * dv + j];
            o[t][hi * dv + j] *= g / (1 + std::exp(-g));
          }
        }
      }
      for (index_t c = 0; c < dm; ++c)
        for (index_t j = 0; j < h * dv; ++j) y[(bi * l + t) * dm + c] += p.out_proj[c * h * dv + j] * o[t][j];
    }
  }
  return y;
}

struct Case {
  LinearAttentionConfig cfg;
  index_t b, l;
};

std::vector<Case> cases() {
  std::vector<Case> v;
  v.push_back({LinearAttentionConfig::retnet(12, 3), 2, 19});         // retention, dv = 2 dk, l > chunk 8
  v.back().cfg.chunk_size = 8;
  v.push_back({LinearAttentionConfig::katharopoulos(10, 2), 1, 23});  // elu + 1, the normalizer
  v.back().cfg.chunk_size = 16;
  LinearAttentionConfig plain;                                         // identity φ, odd sizes, l = 1
  plain.d_model = 7, plain.heads = 1, plain.head_dim = 3, plain.head_v_dim = 5;
  v.push_back({plain, 2, 1});
  LinearAttentionConfig mixed = LinearAttentionConfig::retnet(8, 2);  // retention with the normalizer, no gate
  mixed.normalize = true, mixed.feature_map = ssm::FeatureMap::elu_plus_one, mixed.output_gate = false;
  mixed.chunk_size = 4;
  v.push_back({mixed, 1, 9});
  v.push_back({LinearAttentionConfig::gla(16, 2), 2, 21});  // GLA: dk 4, dv 8, the low-rank gate, l > chunk 8
  v.back().cfg.chunk_size = 8;
  LinearAttentionConfig gla_odd = LinearAttentionConfig::gla(12, 3);  // GLA with γ, elu + 1, the normalizer, rank 3
  gla_odd.retention = gla_odd.normalize = true, gla_odd.feature_map = ssm::FeatureMap::elu_plus_one;
  gla_odd.gate_rank = 3, gla_odd.gate_normalizer = 2, gla_odd.chunk_size = 5;
  v.push_back({gla_odd, 1, 17});
  return v;
}

TEST(LinearAttentionLayer, ForwardEqualsTheLayerWrittenOut) {
  unsigned seed = 1;
  for (const Case& c : cases()) {
    const auto layer = LinearAttentionLayer<double>::init(c.cfg, seed);
    const Tensor x = random_input<double>({c.b, c.l, c.cfg.d_model}, seed++);
    EXPECT_LT(rel_diff(doubles(layer.forward(x)), written_out(c.cfg, layer.params(), x)), 1e-12)
        << "d=" << c.cfg.d_model << " l=" << c.l << " retention=" << c.cfg.retention;
  }
}

// The backward (∂L/∂x and every parameter's gradient) against central differences, in double, on every case:
// retention, elu + 1 with the normalizer, the identity map at l = 1, GLA's low-rank gate, lengths the chunk does not
// divide.
TEST(LinearAttentionLayer, BackwardMatchesCentralDifferences) {
  unsigned seed = 40;
  for (const Case& c : cases()) {
    SCOPED_TRACE("d=" + std::to_string(c.cfg.d_model) + " l=" + std::to_string(c.l) +
                 " gated=" + std::to_string(c.cfg.gated));
    const auto layer = LinearAttentionLayer<double>::init(c.cfg, seed);
    const Tensor x = random_input<double>({c.b, c.l, c.cfg.d_model}, seed++);
    const int checked =
        mixer_test::expect_backward_matches_central_differences<LinearAttentionLayer>(c.cfg, layer.params(), x);
    EXPECT_EQ(checked, 2 + (c.cfg.output_norm ? 1 : 0) + (c.cfg.gated ? 3 : 0));
  }
}

TEST(LinearAttentionLayer, StepsReproduceTheForward) {
  unsigned seed = 30;
  for (const Case& c : cases()) {
    const auto ld = LinearAttentionLayer<double>::init(c.cfg, seed);
    const auto lf = LinearAttentionLayer<float>::init(c.cfg, seed);
    const Tensor xd = random_input<double>({c.b, c.l, c.cfg.d_model}, seed);
    const Tensor xf = random_input<float>({c.b, c.l, c.cfg.d_model}, seed++);
    for (index_t prefill : {1, 5}) {
      EXPECT_LT(rel_diff(doubles(decode_in_pieces(ld, xd, prefill)), doubles(ld.forward(xd))), 1e-12);
      EXPECT_LT(rel_diff(doubles(decode_in_pieces(lf, xf, prefill)), doubles(lf.forward(xf))), 2e-5);
    }
  }
}

TEST(LinearAttentionLayer, DecodesInAHybridStackBesideDeltaNet) {
  using ssm::layers::DeltaNetLayer;
  const index_t d = 12, b = 2, l = 10;
  ssm::models::HybridStack<float, LinearAttentionLayer<float>, DeltaNetLayer<float>> stack(d);
  auto retnet = LinearAttentionLayer<float>::init(LinearAttentionConfig::retnet(d, 2), 1);
  ssm::layers::DeltaNetConfig dc;
  dc.d_model = d, dc.heads = 3, dc.gated = true;
  stack.add(retnet);
  stack.add(DeltaNetLayer<float>::init(dc, 2));
  stack.add(LinearAttentionLayer<float>::init(LinearAttentionConfig::katharopoulos(d, 3), 3));
  stack.add(LinearAttentionLayer<float>::init(LinearAttentionConfig::gla(d, 2), 4));
  EXPECT_EQ(stack.pattern(), "abaa");
  const Tensor x = random_input<float>({b, l, d}, 4);
  const std::vector<double> full = doubles(stack.forward(x));
  for (index_t prefill : {1, 3}) EXPECT_LT(rel_diff(doubles(decode_in_pieces(stack, x, prefill)), full), 1e-4);
  EXPECT_GT(rel_diff(full, doubles(x)), 0.01);
}

TEST(LinearAttentionLayer, BadInputIsAnErrorNamingTheArgument) {
  auto bad = [](auto edit) {
    LinearAttentionConfig c = LinearAttentionConfig::retnet(8, 2);
    edit(c);
    return [c] { LinearAttentionLayer<float>::init(c, 1); };
  };
  expect_arg_error("heads", bad([](LinearAttentionConfig& c) { c.heads = 0; }));
  expect_arg_error("d_model", bad([](LinearAttentionConfig& c) { c.d_model = -1; }));
  expect_arg_error("head_dim", bad([](LinearAttentionConfig& c) { c.heads = 9; }));
  expect_arg_error("norm_eps", bad([](LinearAttentionConfig& c) { c.norm_eps = std::numeric_limits<double>::quiet_NaN(); }));
  expect_arg_error("chunk_size", bad([](LinearAttentionConfig& c) { c.chunk_size = 0; }));
  expect_arg_error("gate_rank", bad([](LinearAttentionConfig& c) { c.gated = true, c.gate_rank = 0; }));
  expect_arg_error("gate_normalizer", bad([](LinearAttentionConfig& c) { c.gated = true, c.gate_normalizer = 0; }));
  expect_arg_error("gate_normalizer", bad([](LinearAttentionConfig& c) {
    c.gated = true, c.gate_normalizer = std::numeric_limits<double>::infinity();
  }));
  const auto layer = LinearAttentionLayer<float>::init(LinearAttentionConfig::katharopoulos(8, 2), 1);
  expect_arg_error("x", [&] { layer.forward(random_input<float>({1, 2, 6}, 1)); });
  expect_arg_error("x", [&] { layer.forward(random_input<double>({1, 2, 8}, 1)); });
  auto state = layer.init_state(3);
  expect_arg_error("state", [&] { layer.step(random_input<float>({2, 1, 8}, 1), state); });
  state = layer.init_state(2);
  state.z = Tensor();  // the normalizer's state dropped
  expect_arg_error("state", [&] { layer.step(random_input<float>({2, 1, 8}, 1), state); });
  const Tensor x = random_input<float>({2, 3, 8}, 1);
  expect_arg_error("grad_out", [&] { layer.backward(x, random_input<float>({2, 3, 7}, 2)); });   // d_model 7
  expect_arg_error("grad_out", [&] { layer.backward(x, Tensor()); });                            // undefined
  expect_arg_error("x", [&] { layer.backward(random_input<double>({2, 3, 8}, 1), x); });          // f64 x
  LinearAttentionLayerParams<float> p = layer.params();
  p.out_proj.push_back(0);
  expect_arg_error("out_proj", [&] { LinearAttentionLayer<float>(layer.config(), p); });
  const auto gla = LinearAttentionLayer<float>::init(LinearAttentionConfig::gla(8, 2), 1);
  LinearAttentionLayerParams<float> gp = gla.params();
  gp.gate_up.pop_back();
  expect_arg_error("gate_up", [&] { LinearAttentionLayer<float>(gla.config(), gp); });
}

}  // namespace
