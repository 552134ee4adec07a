// RWKV-4's sublayers for training (layers::Rwkv4Layer<T>, layers/rwkv4.hpp): the forward equals the checkpoint block's
// (Rwkv4Block) on the same weights, and equals the sublayer written out as loops; decoding reproduces the forward; the
// backward (time mixing through ssm::rwkv4_backward, channel mixing through the squared ReLU, both through the token
// shift) against central differences in double, ∂L/∂x and every parameter; in a trainable stack; bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "mixer_test_util.hpp"
#include "ssm/layers/rwkv4.hpp"
#include "ssm/models/hybrid.hpp"
#include "support/decode.hpp"
#include "support/expect_error.hpp"

namespace {

using mixer_test::doubles;
using mixer_test::random_input;
using mixer_test::rel_diff;
using ssm::index_t;
using ssm::Tensor;
using ssm::layers::Rwkv4BlockConfig;
using ssm::layers::Rwkv4Kind;
using ssm::layers::Rwkv4Layer;
using ssm::layers::Rwkv4LayerParams;

Rwkv4BlockConfig config(Rwkv4Kind kind) {
  Rwkv4BlockConfig cfg;
  cfg.kind = kind, cfg.d_model = 6, cfg.d_att = 5, cfg.d_ffn = 7;
  return cfg;
}

// init's parameters with time_first spread around 0 (init sets 0.5 everywhere), so a bonus summed into the wrong
// channel shows.
Rwkv4LayerParams<double> random_params(const Rwkv4BlockConfig& cfg, std::uint64_t seed) {
  auto p = Rwkv4LayerParams<double>::init(cfg, seed);
  std::mt19937_64 rng(seed + 100);
  std::uniform_real_distribution<double> u(-1, 1);
  for (double& v : p.time_first) v = u(rng);
  return p;
}

// The sublayer as plain loops in double, from the empty state (x (b, l, H)).
std::vector<double> written_out(const Rwkv4BlockConfig& cfg, const Rwkv4LayerParams<double>& p, const Tensor& x) {
  const index_t b = x.size(0), l = x.size(1), H = cfg.d_model;
  const bool time = cfg.kind == Rwkv4Kind::time_mix;
  const index_t A = time ? cfg.d_att : cfg.d_ffn;  // the inner width
  const double* xs = x.data_as<double>();
  std::vector<double> y(static_cast<std::size_t>(b * l * H));
  auto matvec = [](const std::vector<double>& W, const std::vector<double>& v, index_t rows) {
    std::vector<double> out(static_cast<std::size_t>(rows), 0.0);
    const index_t cols = static_cast<index_t>(v.size());
    for (index_t r = 0; r < rows; ++r)
      for (index_t c = 0; c < cols; ++c) out[r] += W[r * cols + c] * v[c];
    return out;
  };
  auto sigmoid = [](double z) { return 1 / (1 + std::exp(-z)); };
  for (index_t bi = 0; bi < b; ++bi) {
    std::vector<double> num(A, 0.0), den(A, 0.0);  // Σ e^{(t−1−i) w + k_i} v_i and Σ e^{(t−1−i) w + k_i}
    for (index_t t = 0; t < l; ++t) {
      const double* xt = xs + (bi * l + t) * H;
      auto mixed = [&](const std::vector<double>& mu) {
        std::vector<double> m(H);
        for (index_t i = 0; i < H; ++i) m[i] = mu[i] * xt[i] + (1 - mu[i]) * (t > 0 ? xt[i - H] : 0.0);
        return m;
      };
      double* yt = y.data() + (bi * l + t) * H;
      if (time) {
        const auto k = matvec(p.key, mixed(p.time_mix_key), A), v = matvec(p.value, mixed(p.time_mix_value), A);
        const auto r = matvec(p.receptance, mixed(p.time_mix_receptance), A);
        std::vector<double> g(A);
        for (index_t c = 0; c < A; ++c) {
          const double bonus = std::exp(p.time_first[c] + k[c]);
          g[c] = sigmoid(r[c]) * (num[c] + bonus * v[c]) / (den[c] + bonus);
          const double decay = std::exp(-std::exp(p.time_decay[c]));
          num[c] = decay * num[c] + std::exp(k[c]) * v[c], den[c] = decay * den[c] + std::exp(k[c]);
        }
        const auto o = matvec(p.output, g, H);
        std::copy(o.begin(), o.end(), yt);
      } else {
        auto h = matvec(p.key, mixed(p.time_mix_key), A);
        for (double& e : h) e = e > 0 ? e * e : 0.0;
        const auto kv = matvec(p.value, h, H), r = matvec(p.receptance, mixed(p.time_mix_receptance), H);
        for (index_t i = 0; i < H; ++i) yt[i] = sigmoid(r[i]) * kv[i];
      }
    }
  }
  return y;
}

TEST(Rwkv4Layer, ForwardEqualsTheSublayerWrittenOut) {
  for (Rwkv4Kind kind : {Rwkv4Kind::time_mix, Rwkv4Kind::channel_mix}) {
    const auto cfg = config(kind);
    const auto p = random_params(cfg, 3);
    for (index_t l : {1, 2, 9}) {
      const Tensor x = random_input<double>({2, l, cfg.d_model}, 7);
      EXPECT_LE(rel_diff(doubles(Rwkv4Layer<double>(cfg, p).forward(x)), written_out(cfg, p, x)), 1e-12) << l;
    }
  }
}

// from_block copies every parameter of a checkpoint block (bf16 matrices read in f32) to its place: the two run one
// forward, so on the same weights their outputs are bit-identical.
TEST(Rwkv4Layer, FromBlockCopiesTheCheckpointBlock) {
  for (Rwkv4Kind kind : {Rwkv4Kind::time_mix, Rwkv4Kind::channel_mix}) {
    const auto cfg = config(kind);
    auto bp = ssm::layers::Rwkv4Block::init(cfg, 11).params();
    for (auto* m : {&bp.key, &bp.value, &bp.receptance})
      *m = ssm::layers::WeightMatrix::from_f32(m->to_f32().data(), m->rows(), m->cols(), ssm::DType::bf16);
    const ssm::layers::Rwkv4Block block(cfg, bp);
    const auto layer = Rwkv4Layer<float>::from_block(block);
    const Tensor x = random_input<float>({2, 5, cfg.d_model}, 1);
    EXPECT_EQ(layer.forward(x).to_vector<float>(), block.forward(x).to_vector<float>());
  }
}

TEST(Rwkv4Layer, StepAndPrefillInPiecesReproduceTheForward) {
  for (Rwkv4Kind kind : {Rwkv4Kind::time_mix, Rwkv4Kind::channel_mix}) {
    const auto cfg = config(kind);
    const Rwkv4Layer<double> layer(cfg, random_params(cfg, 5));
    const Tensor x = random_input<double>({2, 7, cfg.d_model}, 2);
    const auto full = doubles(layer.forward(x));
    for (index_t prefill : {1, 4})
      EXPECT_LE(rel_diff(doubles(ssm_test::decode_in_pieces(layer, x, prefill)), full), 1e-12) << prefill;
  }
}

// ∂L/∂x and every parameter against central differences: both kinds over two sequences. Channel mixing also at l = 1
// (no history: the shift's backward adds nothing to x's earlier token); time mixing from l = 3, the first length at
// which time_decay reaches the output (at l = 1 wkv = v, so the key and the bonus have no gradient either).
TEST(Rwkv4Layer, BackwardMatchesCentralDifferences) {
  std::uint64_t seed = 1;
  for (Rwkv4Kind kind : {Rwkv4Kind::time_mix, Rwkv4Kind::channel_mix})
    for (index_t l : {kind == Rwkv4Kind::time_mix ? index_t(3) : index_t(1), index_t(6)}) {
      SCOPED_TRACE(testing::Message() << (kind == Rwkv4Kind::time_mix ? "time" : "channel") << " l = " << l);
      const auto cfg = config(kind);
      const Tensor x = random_input<double>({2, l, cfg.d_model}, static_cast<unsigned>(seed + 40));
      const int checked =
          mixer_test::expect_backward_matches_central_differences<Rwkv4Layer>(cfg, random_params(cfg, seed++), x);
      EXPECT_EQ(checked, kind == Rwkv4Kind::time_mix ? 9 : 5);
    }
}

// The two sublayers in a stack (one RWKV-4 block; add_mixer's "rwkv4" and "rwkv4_channel" are in tests/train),
// decoding like its forward, its parameters under the checkpoint's names.
TEST(Rwkv4Layer, DecodesInAStackAsOneBlock) {
  ssm::models::HybridStack<double, Rwkv4Layer<double>> stack(8);
  for (Rwkv4Kind kind : {Rwkv4Kind::time_mix, Rwkv4Kind::channel_mix}) {
    Rwkv4BlockConfig cfg;
    cfg.kind = kind, cfg.d_model = 8, cfg.d_att = 8, cfg.d_ffn = 32;
    stack.add(Rwkv4Layer<double>::init(cfg, kind == Rwkv4Kind::time_mix ? 1 : 2));
  }
  const Tensor x = random_input<double>({2, 6, 8}, 4);
  EXPECT_LE(rel_diff(doubles(ssm_test::decode_in_pieces(stack, x, 2)), doubles(stack.forward(x))), 1e-12);
  std::vector<std::string> names;
  stack.for_each([&](const char* n, std::vector<double>&) { names.emplace_back(n); });
  EXPECT_EQ(names.size(), 2u + 9 + 5);
  EXPECT_EQ(names[1], "layers.0.mixer.time_decay");
  EXPECT_EQ(names.back(), "layers.1.mixer.receptance.weight");
}

TEST(Rwkv4Layer, BadInputIsAnErrorNamingTheArgument) {
  using ssm_test::expect_error;
  const auto cfg = config(Rwkv4Kind::time_mix);
  auto p = random_params(cfg, 1);
  auto bad = p;
  bad.time_first.pop_back();
  expect_error([&] { Rwkv4Layer<double>(cfg, bad); }, {"argument 'time_first'", "expected 5"});
  bad = p;
  bad.time_decay[2] = std::nan("");
  expect_error([&] { Rwkv4Layer<double>(cfg, bad); }, {"argument 'time_decay'", "finite"});
  bad = p;
  bad.output.clear();
  expect_error([&] { Rwkv4Layer<double>(cfg, bad); }, "argument 'output.weight'");
  auto channel = config(Rwkv4Kind::channel_mix);
  expect_error([&] { Rwkv4Layer<double>(channel, p); }, "argument 'time_decay'");  // a time-mixing set

  Rwkv4Layer<double> layer(cfg, p);
  const Tensor x = random_input<double>({1, 3, 6}, 1);
  expect_error([&] { layer.forward(random_input<double>({1, 3, 5}, 1)); }, "argument 'x'");
  expect_error([&] { layer.forward(random_input<float>({1, 3, 6}, 1)); }, "argument 'x'");
  expect_error([&] { layer.backward(x, random_input<double>({1, 2, 6}, 1)); }, "argument 'grad_out'");
  auto state = layer.init_state(2);
  expect_error([&] { layer.step(x, state); }, "argument 'state'");
  auto wrong_dtype = Rwkv4Layer<float>::init(cfg, 1).init_state(1);
  expect_error([&] { layer.step(x, wrong_dtype); }, {"argument 'state'", "f64"});
  // a parameter resized in place is caught at the next call
  layer.params().key.pop_back();
  expect_error([&] { layer.forward(x); }, "argument 'key.weight'");
}

}  // namespace
