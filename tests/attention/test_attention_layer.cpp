// Tests of the multi-head attention layer (layers/attention.hpp) and the hybrid stack (models/hybrid.hpp):
// the layer against a naive double computation (projections, rotary, reference attention), its KV-cache
// decoding against its forward, the rotary embedding's relative-position property, and an interleaved
// stack of attention and a simple recurrent mixer decoding token by token like its forward.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "ssm/attention.hpp"  // the module header: layer, hybrid stacks, op, reference
#include "support/central_differences.hpp"
#include "support/decode.hpp"
#include "support/expect_error.hpp"

namespace {

using ssm::DType;
using ssm::Tensor;
using ssm::index_t;

template <class T>
Tensor random_tensor(const ssm::Dims& shape, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(0.0, 1.0);
  std::vector<T> x(static_cast<std::size_t>(shape.product()));
  for (auto& e : x) e = static_cast<T>(dist(gen));
  return Tensor::from_vector<T>(shape, x);
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = a.size() == b.size() ? 0 : INFINITY;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

template <class T>
std::vector<double> as_double(const Tensor& t) {
  const auto v = t.to_vector<T>();
  return {v.begin(), v.end()};
}

/// The layer computed naively in double: y = attention(rope(x W_qᵀ), rope(x W_kᵀ), x W_vᵀ) W_oᵀ.
std::vector<double> naive_layer(const ssm::layers::MultiHeadAttention<double>& m, const std::vector<double>& x, index_t b,
                                index_t l) {
  const auto& cfg = m.config();
  const index_t d = cfg.d_model, h = cfg.n_heads, hk = cfg.n_kv_heads, p = cfg.head_dim;
  auto project = [&](const auto& W, index_t heads, bool rotate) {
    std::vector<double> out(static_cast<std::size_t>(b * l * heads * p));  // (b, l, heads, p)
    for (index_t r = 0; r < b * l; ++r)
      for (index_t o = 0; o < heads * p; ++o) {
        double s = 0;
        for (index_t c = 0; c < d; ++c) s += W[static_cast<std::size_t>(o * d + c)] * x[static_cast<std::size_t>(r * d + c)];
        out[static_cast<std::size_t>(r * heads * p + o)] = s;
      }
    if (rotate)  // pairs (e, e + p/2) rotated by pos · base^(−2e/p)
      for (index_t r = 0; r < b * l; ++r)
        for (index_t hi = 0; hi < heads; ++hi)
          for (index_t e = 0; e < p / 2; ++e) {
            const double th = static_cast<double>(r % l) * std::pow(cfg.rotary_base, -2.0 * e / static_cast<double>(p));
            double& x1 = out[static_cast<std::size_t>((r * heads + hi) * p + e)];
            double& x2 = out[static_cast<std::size_t>((r * heads + hi) * p + e + p / 2)];
            const double a = x1, c = x2;
            x1 = a * std::cos(th) - c * std::sin(th);
            x2 = c * std::cos(th) + a * std::sin(th);
          }
    return out;
  };
  const auto& P = m.params();
  const auto q = project(P.W_q, h, cfg.rotary), k = project(P.W_k, hk, cfg.rotary), v = project(P.W_v, hk, false);
  ssm::reference::AttentionDims dims;
  dims.b = b, dims.l_q = l, dims.l_k = l, dims.h = h, dims.h_kv = hk, dims.p = p;
  std::vector<double> o, lse;
  ssm::reference::attention_forward(dims, q, k, v, o, lse);
  std::vector<double> y(static_cast<std::size_t>(b * l * d));  // (b, l, d)
  for (index_t r = 0; r < b * l; ++r)
    for (index_t c = 0; c < d; ++c) {
      double s = 0;
      for (index_t e = 0; e < h * p; ++e) s += P.W_o[static_cast<std::size_t>(c * h * p + e)] * o[static_cast<std::size_t>(r * h * p + e)];
      y[static_cast<std::size_t>(r * d + c)] = s;
    }
  return y;
}

ssm::layers::MultiHeadAttentionConfig small_config(bool rotary, ssm::AttentionAlgorithm alg) {
  ssm::layers::MultiHeadAttentionConfig cfg;
  cfg.d_model = 24, cfg.n_heads = 6, cfg.n_kv_heads = 2, cfg.head_dim = 8, cfg.rotary = rotary;
  cfg.attention.algorithm = alg;
  cfg.attention.block_q = 8, cfg.attention.block_k = 4;
  return cfg;
}

// f64 layer vs the naive double computation: only summation order differs (1e-12 ≈ 5000 ulps of values ~1).
TEST(MultiHeadAttention, ForwardMatchesNaiveComputation) {
  const index_t b = 2, l = 13;
  for (bool rotary : {false, true})
    for (auto alg : {ssm::AttentionAlgorithm::materialized, ssm::AttentionAlgorithm::tiled}) {
      const ssm::layers::MultiHeadAttention<double> layer(small_config(rotary, alg), 3);
      const Tensor x = random_tensor<double>({b, l, 24}, 4);
      EXPECT_LE(max_abs_diff(as_double<double>(layer.forward(x)), naive_layer(layer, as_double<double>(x), b, l)), 1e-12)
          << "rotary " << rotary << " " << ssm::name(alg);
    }
}

// Token-by-token decoding (positions continue from the cache length, so rotary is exercised) equals the
// forward; f32 rounding differs only in the softmax blocking: 1e-5 ≈ 100 ulps of values ~1.
TEST(MultiHeadAttention, StepByStepEqualsForward) {
  const index_t b = 2, l = 11;
  const ssm::layers::MultiHeadAttention<float> layer(small_config(true, ssm::AttentionAlgorithm::tiled), 5);
  const Tensor x = random_tensor<float>({b, l, 24}, 6);
  const auto full = as_double<float>(layer.forward(x));
  auto cache = layer.init_state(b);
  Tensor y = Tensor::empty({b, l, 24}, DType::f32);
  for (index_t t = 0; t < l; ++t) {
    Tensor xt = Tensor::empty({b, 1, 24}, DType::f32);
    ssm::copy(xt, x.view().narrow(1, t, 1));
    ssm::copy(y.view().narrow(1, t, 1), layer.step(xt, cache));
  }
  EXPECT_EQ(cache.length(), l);
  EXPECT_LE(max_abs_diff(as_double<float>(y), full), 1e-5);
}

// Rotary: the score of a query at m and a key at n depends on m − n only; shifting both positions by 5
// leaves q·k unchanged, while the unrotated score differs (so the test sees the rotation).
TEST(MultiHeadAttention, RotaryScoresDependOnRelativePosition) {
  const Tensor q0 = random_tensor<double>({1, 1, 1, 8}, 7), k0 = random_tensor<double>({1, 1, 1, 8}, 8);
  auto score = [&](index_t m, index_t n) {
    Tensor q = Tensor::empty(q0.shape(), DType::f64), k = Tensor::empty(k0.shape(), DType::f64);
    ssm::copy(q, q0), ssm::copy(k, k0);
    ssm::layers::apply_rotary<double>(q, m, 10000.0);
    ssm::layers::apply_rotary<double>(k, n, 10000.0);
    double s = 0;
    for (index_t e = 0; e < 8; ++e) s += q.data_as<double>()[e] * k.data_as<double>()[e];
    return s;
  };
  EXPECT_NEAR(score(9, 4), score(14, 9), 1e-12);
  EXPECT_GT(std::abs(score(9, 4) - score(0, 0)), 1e-3);
}

// The backward against central differences in double, ∂L/∂x and every projection, for L = Σ y ⊙ R: both attention
// algorithms (the tiled one with blocks that do not divide the length), grouped-query heads, with and without RoPE,
// and lengths 2 and 13 (at length 1 the output is v's projection alone: W_q and W_k have no gradient to check).
TEST(MultiHeadAttention, BackwardMatchesCentralDifferences) {
  for (bool rotary : {false, true})
    for (auto alg : {ssm::AttentionAlgorithm::materialized, ssm::AttentionAlgorithm::tiled})
      for (index_t l : {2, 13}) {
        SCOPED_TRACE(std::string("rotary ") + (rotary ? "on " : "off ") + ssm::name(alg) + " l " + std::to_string(l));
        ssm::layers::MultiHeadAttention<double> layer(small_config(rotary, alg), 11);
        Tensor x = random_tensor<double>({2, l, 24}, 12);
        const Tensor R = random_tensor<double>({2, l, 24}, 13);
        auto loss = [&] { return ssm_test::weighted_sum(layer.forward(x), R); };
        auto g = layer.backward(x, R);
        ssm_test::expect_central_differences("x", x, ssm_test::to_tensor(g.grad_x), loss, 1e-6, 1e-7, 64);
        EXPECT_EQ(ssm_test::expect_parameter_gradients(layer.params(), g.params, loss, 64), 4);
      }
}

// The backward's arguments are checked like the forward's, and so are projections resized through params().
TEST(MultiHeadAttention, BackwardBadInputIsAnErrorNamingTheArgument) {
  ssm::layers::MultiHeadAttention<float> layer(small_config(true, ssm::AttentionAlgorithm::tiled), 1);
  const Tensor x = Tensor::zeros({1, 3, 24}, DType::f32);
  ssm_test::expect_arg_error("grad_out", [&] { layer.backward(x, Tensor::zeros({1, 4, 24}, DType::f32)); });
  ssm_test::expect_arg_error("grad_out", [&] { layer.backward(x, Tensor::zeros({1, 3, 24}, DType::f64)); });
  ssm_test::expect_arg_error("x", [&] { layer.backward(Tensor::zeros({1, 3, 23}, DType::f32), x); });
  layer.params().W_k.pop_back();
  ssm_test::expect_error([&] { layer.forward(x); }, {"'k_proj.weight'", "expected shape"});
  ssm_test::expect_error([&] { layer.backward(x, x); }, {"'k_proj.weight'", "expected shape"});
}

TEST(MultiHeadAttention, BadConfigAndInputThrow) {
  auto cfg = small_config(false, ssm::AttentionAlgorithm::tiled);
  cfg.n_kv_heads = 4;
  EXPECT_THROW(ssm::layers::MultiHeadAttention<float>{cfg}, ssm::Error);
  cfg = small_config(true, ssm::AttentionAlgorithm::tiled);
  cfg.head_dim = 7;
  EXPECT_THROW(ssm::layers::MultiHeadAttention<float>{cfg}, ssm::Error);
  const ssm::layers::MultiHeadAttention<float> layer(small_config(false, ssm::AttentionAlgorithm::tiled));
  try {
    layer.forward(Tensor::zeros({1, 3, 23}, DType::f32));
    FAIL() << "expected ssm::Error";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'x'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(layer.forward(Tensor::zeros({1, 3, 24}, DType::f64)), ssm::Error);
  // A CUDA view into a layer on the CPU: refused naming x and the remedy, before its memory is read (the view points
  // at host memory only to have an address)
  std::vector<float> host(3 * 24);
  const ssm::TensorView gpu(host.data(), DType::f32, ssm::Device::cuda(0), {1, 3, 24}, {72, 24, 1});
  try {
    layer.forward(gpu);
    FAIL() << "expected ssm::Error";
  } catch (const ssm::Error& e) {
    for (const char* word : {"'x'", "cuda:0", "the layer is on cpu", "Tensor::to", "to()"})
      EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
  }
}

/// A minimal recurrent mixer for the stack test: per channel h_t = a h_{t−1} + (1 − a) x_t, y_t = h_t
/// (a diagonal linear state space with fixed decay a_c; state (b, d)).
struct DecayMixer {
  using State = std::vector<float>;  // (b, d)
  index_t d;
  std::vector<float> a;  // (d)
  index_t d_model() const { return d; }
  State init_state(index_t b) const { return State(static_cast<std::size_t>(b * d), 0.0f); }
  Tensor step(const ssm::TensorView& x, State& s) const {
    Tensor y = Tensor::empty(x.shape(), DType::f32);
    const float* in = x.data_as<const float>();
    float* out = y.data_as<float>();
    for (index_t bi = 0; bi < x.size(0); ++bi)
      for (index_t t = 0; t < x.size(1); ++t)
        for (index_t c = 0; c < d; ++c) {
          float& h = s[static_cast<std::size_t>(bi * d + c)];
          const float ac = a[static_cast<std::size_t>(c)];
          h = ac * h + (1 - ac) * in[(bi * x.size(1) + t) * d + c];
          out[(bi * x.size(1) + t) * d + c] = h;
        }
    return y;
  }
  Tensor forward(const ssm::TensorView& x) const {
    State s = init_state(x.size(0));
    return step(x, s);
  }
};

// A Jamba-style stack (attention every 3rd layer) of 6 layers: the pattern is right, and decoding token by
// token through every layer's state (KV caches and recurrent states) reproduces the parallel forward.
TEST(HybridStack, InterleavedStackDecodesLikeItsForward) {
  const index_t d = 24, b = 2, l = 9;
  auto stack = ssm::models::make_interleaved_stack<float, DecayMixer, ssm::layers::MultiHeadAttention<float>>(
      d, 6, 3,
      [&](index_t i) {
        DecayMixer m{d, std::vector<float>(static_cast<std::size_t>(d))};
        for (index_t c = 0; c < d; ++c) m.a[static_cast<std::size_t>(c)] = 0.5f + 0.4f * std::sin(float(c + i));
        return m;
      },
      [&](index_t i) {
        return ssm::layers::MultiHeadAttention<float>(small_config(true, ssm::AttentionAlgorithm::tiled), 100 + i);
      });
  EXPECT_EQ(stack.pattern(), "aabaab");
  const Tensor x = random_tensor<float>({b, l, d}, 9);
  const auto full = as_double<float>(stack.forward(x));
  const Tensor y = ssm_test::decode_in_pieces(stack, x);
  // Six residual layers of f32 rounding on values of a few units: 5e-5.
  EXPECT_LE(max_abs_diff(as_double<float>(y), full), 5e-5);
  auto state = stack.init_state(b);
  // A stack whose layers did nothing would also "agree"; check that the layers changed the input.
  EXPECT_GT(max_abs_diff(full, as_double<float>(x)), 0.1);
  EXPECT_THROW(stack.forward(Tensor::zeros({1, 2, d + 1}, DType::f32)), ssm::Error);
  auto short_state = state;
  short_state.pop_back();
  EXPECT_THROW(stack.step(Tensor::zeros({b, 1, d}, DType::f32), short_state), ssm::Error);
}

// Jamba from the library's parts: Mamba blocks (merged branch `mamba`) with attention every 3rd layer.
// Decoding token by token (Mamba caches and KV caches) reproduces the parallel forward; a prefill of 4
// tokens followed by steps does too. f32, 6 residual layers of values of a few units: 1e-4.
TEST(HybridStack, JambaStackOfMambaAndAttentionDecodesLikeItsForward) {
  const index_t d = 24, b = 2, l = 9;
  ssm::layers::MambaBlockConfig mamba;
  mamba.d_model = d, mamba.d_state = 4;
  auto attention = small_config(true, ssm::AttentionAlgorithm::tiled);
  const auto stack = ssm::models::make_jamba_stack<float>(mamba, attention, 6, 3, 11);
  EXPECT_EQ(stack.pattern(), "aabaab");
  const Tensor x = random_tensor<float>({b, l, d}, 12);
  const auto full = as_double<float>(stack.forward(x));
  for (index_t prefill : {1, 4})
    EXPECT_LE(max_abs_diff(as_double<float>(ssm_test::decode_in_pieces(stack, x, prefill)), full), 1e-4)
        << "prefill " << prefill;
  EXPECT_GT(max_abs_diff(full, as_double<float>(x)), 0.1);
  mamba.d_model = d + 2;
  EXPECT_THROW(ssm::models::make_jamba_stack<float>(mamba, attention, 2, 2), ssm::Error);
}

}  // namespace
