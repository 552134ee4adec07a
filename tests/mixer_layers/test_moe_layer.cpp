// The mixture of SwiGLU experts as a trainable layer (layers::MoeLayer<T>, layers/moe.hpp): the forward equals the
// routing and the experts written out; the backward against central differences in double, with and without the
// load-balancing loss; the layer in a trainable stack beside Mamba and attention (a Jamba-like stack), decoding like
// its forward and its backward against central differences; bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "mixer_test_util.hpp"
#include "ssm/layers/moe.hpp"
#include "support/expect_error.hpp"

namespace {

using mixer_test::doubles;
using mixer_test::random_input;
using mixer_test::rel_diff;
using ssm::index_t;
using ssm::Tensor;
using ssm::layers::MoeLayer;
using ssm::layers::MoeLayerConfig;
using ssm::layers::MoeLayerParams;

MoeLayerConfig config(bool normalize, double aux) {
  MoeLayerConfig cfg;
  cfg.d_model = 6, cfg.d_ff = 5, cfg.experts = 4, cfg.top_k = 2, cfg.normalize_topk = normalize;
  cfg.aux_loss_coef = aux;
  return cfg;
}

// The layer written out in double: softmax over the router's logits, the top k (ties to the lower expert), their
// weights (renormalized or not), each chosen expert's SwiGLU.
std::vector<double> written_out(const MoeLayerConfig& cfg, const MoeLayerParams<double>& p, const Tensor& x) {
  const index_t t = x.size(0) * x.size(1), H = cfg.d_model, I = cfg.d_ff, E = cfg.experts;
  std::vector<double> y(static_cast<std::size_t>(t * H), 0.0);
  for (index_t r = 0; r < t; ++r) {
    const double* xr = x.data_as<double>() + r * H;
    std::vector<double> prob(E);
    for (index_t e = 0; e < E; ++e) prob[e] = std::inner_product(xr, xr + H, p.router.begin() + e * H, 0.0);
    const double mx = *std::max_element(prob.begin(), prob.end());
    double z = 0;
    for (double& v : prob) z += (v = std::exp(v - mx));
    for (double& v : prob) v /= z;
    std::vector<index_t> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) { return prob[a] > prob[b]; });
    double wsum = 0;
    for (index_t j = 0; j < cfg.top_k; ++j) wsum += prob[order[j]];
    for (index_t j = 0; j < cfg.top_k; ++j) {
      const index_t e = order[j];
      const double w = cfg.normalize_topk ? prob[e] / wsum : prob[e];
      std::vector<double> h(I);
      for (index_t i = 0; i < I; ++i) {
        const double g = std::inner_product(xr, xr + H, p.gate_up.begin() + (e * 2 * I + i) * H, 0.0);
        const double u = std::inner_product(xr, xr + H, p.gate_up.begin() + (e * 2 * I + I + i) * H, 0.0);
        h[i] = g / (1 + std::exp(-g)) * u;
      }
      for (index_t o = 0; o < H; ++o)
        y[r * H + o] += w * std::inner_product(h.begin(), h.end(), p.down.begin() + (e * H + o) * I, 0.0);
    }
  }
  return y;
}

TEST(MoeLayer, ForwardEqualsTheExpertsWrittenOut) {
  for (bool normalize : {false, true}) {
    const auto cfg = config(normalize, 0.0);
    const auto layer = MoeLayer<double>::init(cfg, 3);
    const Tensor x = random_input<double>({2, 5, 6}, 4);
    EXPECT_LE(rel_diff(doubles(layer.forward(x)), written_out(cfg, layer.params(), x)), 1e-12) << normalize;
  }
}

// ∂L/∂x and every parameter against central differences, L = Σ y ⊙ R (+ aux_loss_coef × the load-balancing loss,
// when on: the backward adds its gradient through the router's logits).
TEST(MoeLayer, BackwardMatchesCentralDifferences) {
  for (double aux : {0.0, 0.5}) {
    SCOPED_TRACE(testing::Message() << "aux_loss_coef " << aux);
    const auto cfg = config(/*normalize=*/aux > 0, aux);
    MoeLayerParams<double> p = MoeLayer<double>::init(cfg, 5).params();
    Tensor x = random_input<double>({2, 4, 6}, 6);
    const Tensor R = random_input<double>({2, 4, 6}, 7);
    auto loss = [&] {
      const MoeLayer<double> layer(cfg, p);
      return ssm_test::weighted_sum(layer.forward(x), R) + layer.aux_loss(x);
    };
    const auto g = MoeLayer<double>(cfg, p).backward(x, R);
    ssm_test::expect_central_differences("x", x, ssm_test::to_tensor(g.grad_x), loss);
    auto grads = g.params;
    EXPECT_EQ(ssm_test::expect_parameter_gradients(p, grads, loss), 3);
    EXPECT_EQ(MoeLayer<double>(cfg, p).aux_loss(x) > 0, aux > 0);
  }
}

TEST(MoeLayer, BadInputIsAnErrorNamingTheArgument) {
  using ssm_test::expect_error;
  auto cfg = config(false, 0.0);
  auto p = MoeLayer<double>::init(cfg, 1).params();
  auto bad = p;
  bad.down.pop_back();
  expect_error([&] { MoeLayer<double>(cfg, bad); }, "argument 'experts.down_proj'");
  bad = p;
  bad.router[3] = std::nan("");
  expect_error([&] { MoeLayer<double>(cfg, bad); }, {"argument 'router.weight'", "finite"});
  for (auto [field, value] : {std::pair{&MoeLayerConfig::top_k, index_t(5)},
                              {&MoeLayerConfig::experts, index_t(0)},
                              {&MoeLayerConfig::d_ff, index_t(0)}}) {
    MoeLayerConfig c2 = cfg;
    c2.*field = value;
    EXPECT_THROW(MoeLayer<double>::init(c2, 1), ssm::Error);
  }
  cfg.aux_loss_coef = -1;
  expect_error([&] { MoeLayer<double>::init(cfg, 1); }, "argument 'aux_loss_coef'");
  cfg.aux_loss_coef = 0;
  MoeLayer<double> layer(cfg, p);
  const Tensor x = random_input<double>({1, 3, 6}, 1);
  expect_error([&] { layer.forward(random_input<double>({1, 3, 5}, 1)); }, "argument 'x'");
  expect_error([&] { layer.forward(random_input<float>({1, 3, 6}, 1)); }, "argument 'x'");
  expect_error([&] { layer.backward(x, random_input<double>({1, 2, 6}, 1)); }, "argument 'grad_out'");
  auto state = layer.init_state(2);
  expect_error([&] { layer.step(x, state); }, "argument 'state'");
  layer.params().gate_up.pop_back();  // resized in place: caught at the next call
  expect_error([&] { layer.forward(x); }, "argument 'experts.gate_up_proj'");
}

}  // namespace
