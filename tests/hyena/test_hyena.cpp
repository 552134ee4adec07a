// The Hyena op (ops/hyena.hpp): the reference equals the operator written out with the library's direct causal
// convolution (orders 2 and 3); the FFT path equals the reference for orders 2 to 4, gates sliced out of one
// projection (strided rows), filters longer than the sequence, 1 and 2 threads; the reference backward equals central
// differences for v, every gate, the filters and their skip terms; the FFT backward equals it; bad input is an
// ssm::Error naming the argument.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "ssm/math/causal_conv.hpp"
#include "ssm/ops/hyena.hpp"
#include "support/central_differences.hpp"
#include "support/device_views.hpp"
#include "support/expect_error.hpp"

namespace {

using ssm::DType;
using ssm::index_t;
using ssm::Tensor;
using ssm::TensorView;
using ssm_test::expect_arg_error;

Tensor random(std::mt19937_64& rng, const ssm::Dims& shape, DType dt, double lo = -1, double hi = 1) {
  std::uniform_real_distribution<double> U(lo, hi);
  Tensor t = Tensor::empty(shape, dt);
  for (index_t i = 0; i < t.numel(); ++i) {
    if (dt == DType::f64) t.data_as<double>()[i] = U(rng);
    else t.data_as<float>()[i] = static_cast<float>(U(rng));
  }
  return t;
}

double at(const Tensor& t, index_t i) { return t.dtype() == DType::f64 ? t.data_as<double>()[i] : t.data_as<float>()[i]; }

/// A problem of order N: the projection z (b, l, (N + 1) d) whose column blocks are x_0 … x_{N−1}, v (as a layer
/// slices them), decaying filters h (N − 1, d, L) and skips D (N − 1, d).
struct Problem {
  index_t b, l, d, N, L;
  Tensor z, h, D;
  Problem(index_t b_, index_t l_, index_t d_, index_t N_, index_t L_, DType dt, unsigned seed)
      : b(b_), l(l_), d(d_), N(N_), L(L_) {
    std::mt19937_64 rng(seed);
    z = random(rng, {b, l, (N + 1) * d}, dt);
    h = random(rng, {N - 1, d, L}, dt);
    for (index_t i = 0; i < h.numel(); ++i) {  // taps decaying like an implicit filter's window
      const double w = std::exp(-0.1 * static_cast<double>(i % L));
      if (dt == DType::f64) h.data_as<double>()[i] *= w;
      else h.data_as<float>()[i] *= static_cast<float>(w);
    }
    D = random(rng, {N - 1, d}, dt);
  }
  TensorView block(index_t i) const { return z.view().narrow(2, i * d, d); }  // (b, l, d), row stride (N + 1) d
  ssm::HyenaInputs inputs() const {
    ssm::HyenaInputs in;
    for (index_t i = 0; i < N; ++i) in.x.push_back(block(i));
    in.v = block(N), in.h = h.view(), in.bias = D.view();
    return in;
  }
};

TEST(Hyena, ReferenceEqualsTheOperatorWrittenOut) {
  for (index_t N : {2, 3}) {
    const Problem p(2, 9, 3, N, 12, DType::f64, static_cast<unsigned>(N));
    ssm::HyenaOptions o;
    o.path = ssm::HyenaPath::reference;
    const Tensor y = ssm::hyena(p.inputs(), o);
    const index_t W = (N + 1) * p.d;
    for (index_t bi = 0; bi < p.b; ++bi)
      for (index_t c = 0; c < p.d; ++c) {
        auto series = [&](index_t blk) {
          std::vector<double> s(static_cast<std::size_t>(p.l));
          for (index_t t = 0; t < p.l; ++t) s[t] = p.z.data_as<double>()[(bi * p.l + t) * W + blk * p.d + c];
          return s;
        };
        std::vector<double> w = series(N), conv(static_cast<std::size_t>(p.l));
        for (index_t o2 = 0; o2 + 1 < N; ++o2) {
          const std::vector<double> g = series(N - 1 - o2);
          for (index_t t = 0; t < p.l; ++t) w[t] *= g[t];
          ssm::causal_conv_direct(w.data(), p.h.data_as<double>() + (o2 * p.d + c) * p.L, conv.data(), p.l);
          for (index_t t = 0; t < p.l; ++t) w[t] = conv[t] + p.D.data_as<double>()[o2 * p.d + c] * w[t];
        }
        const std::vector<double> x0 = series(0);
        for (index_t t = 0; t < p.l; ++t)
          EXPECT_NEAR(y.data_as<double>()[(bi * p.l + t) * p.d + c], w[t] * x0[t], 1e-13) << "N " << N;
      }
  }
}

double max_rel(const Tensor& got, const Tensor& want) {
  double num = 0, den = 0;
  for (index_t i = 0; i < want.numel(); ++i)
    num = std::max(num, std::abs(at(got, i) - at(want, i))), den = std::max(den, std::abs(at(want, i)));
  return num / std::max(den, 1e-300);
}

TEST(Hyena, FftEqualsTheReference) {
  for (DType dt : {DType::f64, DType::f32})
    for (index_t N : {2, 3, 4})
      for (index_t l : {1, 7, 130, 300})
        for (int threads : {1, 2}) {
          const Problem p(2, l, 5, N, l + 3, dt, static_cast<unsigned>(l * 10 + N));
          ssm::HyenaOptions o;
          o.threads = threads;
          Tensor got = Tensor::empty({2, l, 5}, dt);
          EXPECT_EQ(ssm::hyena_into(p.inputs(), got.view(), o), "cpu-fft");
          o.path = ssm::HyenaPath::reference;
          const Tensor ref = ssm::hyena(p.inputs(), o);
          EXPECT_LE(max_rel(got, ref), dt == DType::f64 ? 1e-12 : 2e-5)
              << ssm::name(dt) << " N " << N << " l " << l << " threads " << threads;
        }
}

// Central differences perturb the projection z (every gate and v at once) and the filters in place.
TEST(Hyena, ReferenceBackwardEqualsCentralDifferences) {
  for (index_t N : {2, 3}) {
    SCOPED_TRACE("N " + std::to_string(N));
    Problem p(2, 6, 3, N, 8, DType::f64, static_cast<unsigned>(20 + N));
    std::mt19937_64 rng(N);
    const Tensor gy = random(rng, {2, 6, 3}, DType::f64);
    ssm::HyenaOptions o;
    o.path = ssm::HyenaPath::reference;
    const ssm::HyenaGrads g = ssm::hyena_backward(p.inputs(), gy.view(), o);
    EXPECT_EQ(g.path, "reference");
    auto loss = [&] {
      const Tensor y = ssm::hyena(p.inputs(), o);
      double s = 0;
      for (index_t i = 0; i < y.numel(); ++i) s += y.data_as<double>()[i] * gy.data_as<double>()[i];
      return s;
    };
    // the projection's gradient: block i < N is gate x_i, block N is v
    Tensor gz = Tensor::empty(p.z.shape(), DType::f64);
    const index_t W = (N + 1) * p.d;
    for (index_t r = 0; r < p.b * p.l; ++r)
      for (index_t blk = 0; blk <= N; ++blk)
        for (index_t c = 0; c < p.d; ++c)
          gz.data_as<double>()[r * W + blk * p.d + c] =
              blk < N ? g.grad_x.data_as<double>()[(blk * p.b * p.l + r) * p.d + c] : g.grad_v.data_as<double>()[r * p.d + c];
    ssm_test::expect_central_differences("z (gates and v)", p.z, gz, loss, 1e-6, 1e-7);
    ssm_test::expect_central_differences("h", p.h, g.grad_h, loss, 1e-6, 1e-7);
    ssm_test::expect_central_differences("bias", p.D, g.grad_bias, loss, 1e-6, 1e-7);
    for (index_t o2 = 0; o2 + 1 < N; ++o2)
      for (index_t c = 0; c < p.d; ++c)
        for (index_t tau = p.l; tau < p.L; ++tau) EXPECT_EQ(g.grad_h.data_as<double>()[(o2 * p.d + c) * p.L + tau], 0.0);
  }
}

TEST(Hyena, FftBackwardEqualsTheReference) {
  for (DType dt : {DType::f64, DType::f32})
    for (index_t N : {2, 4})
      for (index_t l : {1, 33, 200})
        for (int threads : {1, 2}) {
          const Problem p(3, l, 4, N, l + 5, dt, static_cast<unsigned>(l + N));
          std::mt19937_64 rng(l);
          const Tensor gy = random(rng, {3, l, 4}, dt);
          ssm::HyenaOptions o;
          o.threads = threads;
          const ssm::HyenaGrads fast = ssm::hyena_backward(p.inputs(), gy.view(), o);
          o.path = ssm::HyenaPath::reference;
          const ssm::HyenaGrads ref = ssm::hyena_backward(p.inputs(), gy.view(), o);
          EXPECT_EQ(fast.path, "cpu-fft");
          const double tol = dt == DType::f64 ? 1e-11 : 5e-5;
          const std::string what = std::string(ssm::name(dt)) + " N " + std::to_string(N) + " l " + std::to_string(l);
          EXPECT_LE(max_rel(fast.grad_v, ref.grad_v), tol) << what;
          EXPECT_LE(max_rel(fast.grad_x, ref.grad_x), tol) << what;
          EXPECT_LE(max_rel(fast.grad_h, ref.grad_h), tol) << what;
          EXPECT_LE(max_rel(fast.grad_bias, ref.grad_bias), tol) << what;
        }
}

TEST(Hyena, BadInputIsNamed) {
  const Problem p(1, 8, 4, 2, 8, DType::f32, 1);
  ssm::HyenaInputs in = p.inputs();
  in.x.pop_back();
  expect_arg_error("x", [&] { ssm::hyena(in); });  // one gate: no convolution
  const Problem short_h(1, 8, 4, 2, 6, DType::f32, 1);
  expect_arg_error("h", [&] { ssm::hyena(short_h.inputs()); });  // 6 taps for 8 steps
  const Problem p64(1, 8, 4, 2, 8, DType::f64, 1);
  in = p.inputs(), in.bias = p64.D.view();
  expect_arg_error("bias", [&] { ssm::hyena(in); });
  in = p.inputs(), in.x[1] = p.z.view().narrow(2, 0, 3);
  expect_arg_error("x[1]", [&] { ssm::hyena(in); });
  ssm::HyenaOptions o;
  o.threads = -2;
  expect_arg_error("threads", [&] { ssm::hyena(p.inputs(), o); });
  const Tensor wrong = Tensor::zeros({1, 8, 5}, DType::f32);
  expect_arg_error("grad_out", [&] { ssm::hyena_backward(p.inputs(), wrong.view()); });
  // CUDA tensors (views of host memory labelled cuda:0, never read here): all on one device; the forward's output
  // disjoint from v and the gates; the backward refused.
  using ssm_test::on_cuda;
  ssm::HyenaInputs dev = p.inputs();
  dev.v = on_cuda(dev.v), dev.h = on_cuda(dev.h), dev.bias = on_cuda(dev.bias);
  for (ssm::TensorView& x : dev.x) x = on_cuda(x);
  const Tensor out = Tensor::zeros({1, 8, 4}, DType::f32);
  expect_arg_error("out", [&] { ssm::hyena_into(dev, out.view()); });  // on the CPU
  in = dev, in.x[1] = p.inputs().x[1];
  expect_arg_error("x[1]", [&] { ssm::hyena_into(in, on_cuda(out.view())); });
  ssm_test::expect_error([&] { ssm::hyena_into(dev, dev.x[0]); }, {"argument 'out'", "must not overlap"});
  ssm_test::expect_error([&] { (void)ssm::hyena_backward(dev, on_cuda(out.view())); },
                         {"argument 'v'", "the Hyena backward runs on the CPU"});
}

}  // namespace

#include "ssm/layers/hyena.hpp"

namespace {

using ssm::layers::HyenaConfig;
using ssm::layers::HyenaLayer;

HyenaConfig small_config(index_t order) {
  HyenaConfig cfg;
  cfg.d_model = 6, cfg.order = order, cfg.l_max = 40, cfg.filter_order = 8, cfg.emb_dim = 5, cfg.sin_freq = 3.0;
  return cfg;
}

// The implicit filter follows safari's HyenaFilter: the positional embedding, the FFN with its shared Sin, the
// exponential window, in the op's (N − 1, D, l_max) layout (filter channel c (N − 1) + o → order o, channel c).
TEST(HyenaLayer, ImplicitFiltersFollowTheFormulas) {
  const HyenaConfig cfg = small_config(3);
  const auto layer = HyenaLayer<double>::init(cfg, 4);
  const auto& p = layer.params();
  const index_t L = cfg.l_max, E = cfg.emb_dim, F = cfg.filter_order, N = cfg.order, D = cfg.d_model;
  // PE at t = 7: [t / (L − 1), cos(f ω), cos, −sin(f ω), −sin], f = 1e-4 and 1, ω = 2π t / L
  const double t = 7, w = 2 * std::numbers::pi * t / static_cast<double>(L);
  EXPECT_NEAR(p.pos_emb_z[7 * E + 0], t / (L - 1), 1e-15);
  EXPECT_NEAR(p.pos_emb_z[7 * E + 1], std::cos(1e-4 * w), 1e-15);
  EXPECT_NEAR(p.pos_emb_z[7 * E + 2], std::cos(1.0 * w), 1e-15);
  EXPECT_NEAR(p.pos_emb_z[7 * E + 4], -std::sin(1.0 * w), 1e-15);
  // the decay rates from ln(0.01) / 1.5 to ln(0.01) / 0.3
  EXPECT_NEAR(p.deltas.front(), std::log(0.01) / 1.5, 1e-15);
  EXPECT_NEAR(p.deltas.back(), std::log(0.01) / 0.3, 1e-15);
  for (index_t tt : {0, 13, 39})
    for (index_t f : {0, 5, 11}) {
      std::vector<double> a(F), b(F);
      for (index_t j = 0; j < F; ++j) {
        double s = p.b0[j];
        for (index_t k = 0; k < E; ++k) s += p.W0[j * E + k] * p.pos_emb_z[tt * E + k];
        a[j] = std::sin(p.freq[j] * s);
      }
      for (const auto* layer_w : {&p.W1, &p.W2}) {
        const auto& bias = layer_w == &p.W1 ? p.b1 : p.b2;
        for (index_t j = 0; j < F; ++j) {
          double s = bias[j];
          for (index_t k = 0; k < F; ++k) s += (*layer_w)[j * F + k] * a[k];
          b[j] = std::sin(p.freq[j] * s);
        }
        a = b;
      }
      double hf = 0;
      for (index_t k = 0; k < F; ++k) hf += p.W3[f * F + k] * a[k];
      hf *= std::exp(-(double(tt) / (L - 1)) * std::abs(p.deltas[f]));
      const index_t c = f / (N - 1), o = f % (N - 1);
      EXPECT_NEAR(layer.filters().data_as<double>()[(o * D + c) * L + tt], hf, 1e-13) << "t " << tt << " f " << f;
      EXPECT_EQ(layer.skips().data_as<double>()[o * D + c], p.filter_bias[f]);
    }
}

// Decoding (direct sums over the history) equals the forward (FFT convolutions), token by token and in pieces of 3;
// a copied state forks.
TEST(HyenaLayer, StepsEqualTheForward) {
  for (index_t order : {2, 3}) {
    SCOPED_TRACE("order " + std::to_string(order));
    const auto layer = HyenaLayer<double>::init(small_config(order), 9);
    std::mt19937_64 rng(order);
    const index_t b = 2, l = 17, D = 6;
    const Tensor x = random(rng, {b, l, D}, DType::f64);
    const Tensor y = layer.forward(x.view());
    for (index_t piece : {1, 3}) {
      auto state = layer.init_state(b);
      Tensor got = Tensor::empty({b, l, D}, DType::f64);
      for (index_t t0 = 0; t0 < l; t0 += piece) {
        const index_t n = std::min(piece, l - t0);
        Tensor xt = Tensor::empty({b, n, D}, DType::f64);
        ssm::copy(xt.view(), x.view().narrow(1, t0, n));
        const Tensor yt = layer.step(xt.view(), state);
        ssm::copy(got.view().narrow(1, t0, n), yt.view());
        if (t0 == 6) {  // a fork continues like the original
          auto fork = state;
          Tensor xn = Tensor::empty({b, 1, D}, DType::f64);
          ssm::copy(xn.view(), x.view().narrow(1, t0 + n, 1));
          const Tensor a = layer.step(xn.view(), fork);
          for (index_t bi = 0; bi < b; ++bi)
            for (index_t c = 0; c < D; ++c)
              EXPECT_NEAR(a.data_as<double>()[bi * D + c], y.data_as<double>()[(bi * l + t0 + n) * D + c], 1e-11);
        }
      }
      EXPECT_LE(max_rel(got, y), 1e-12) << "pieces of " << piece;
      EXPECT_EQ(state.t, l);
    }
  }
  // f32 as well
  const auto layer = HyenaLayer<float>::init(small_config(2), 9);
  std::mt19937_64 rng(1);
  const Tensor x = random(rng, {1, 9, 6}, DType::f32);
  auto state = layer.init_state(1);
  EXPECT_LE(max_rel(layer.step(x.view(), state), layer.forward(x.view())), 1e-5);
}

TEST(HyenaLayer, BadInputIsNamed) {
  HyenaConfig cfg = small_config(2);
  const auto layer = HyenaLayer<float>::init(cfg, 1);
  const Tensor long_x = Tensor::zeros({1, 41, 6}, DType::f32);
  expect_arg_error("x", [&] { layer.forward(long_x.view()); });  // past l_max
  auto state = layer.init_state(2);
  const Tensor one = Tensor::zeros({1, 1, 6}, DType::f32);
  expect_arg_error("state", [&] { layer.step(one.view(), state); });  // a state of 2 sequences
  const Tensor x64 = Tensor::zeros({1, 4, 6}, DType::f64);
  expect_arg_error("x", [&] { layer.forward(x64.view()); });
  for (auto bad : {&HyenaConfig::order, &HyenaConfig::emb_dim, &HyenaConfig::short_filter_order}) {
    HyenaConfig b2 = cfg;
    b2.*bad = bad == &HyenaConfig::emb_dim ? 4 : 1;
    EXPECT_THROW(HyenaLayer<float>::init(b2, 1), ssm::Error);
  }
  cfg.target = 2.0;
  ssm_test::expect_error([&] { HyenaLayer<float>::init(cfg, 1); }, "argument 'target'");
}

// The layer's backward against central differences in double, orders 2 and 3: ∂L/∂x and every trainable parameter
// (the projections, the short conv, the skips, and through the filters the FFN, its Sin frequencies and the positional
// embedding), L = Σ forward(x) ⊙ R, the filters refreshed after each perturbation.
TEST(HyenaLayer, BackwardMatchesCentralDifferences) {
  for (index_t order : {2, 3}) {
    SCOPED_TRACE("order " + std::to_string(order));
    HyenaConfig cfg = small_config(order);
    cfg.shift = 0.05;  // a window that does not vanish, so a dropped shift would show
    auto layer = HyenaLayer<double>::init(cfg, 2);
    layer.set_threads(1);
    const index_t b = 2, l = 9, D = cfg.d_model;
    Tensor x = Tensor::empty({b, l, D}, DType::f64), R = Tensor::empty({b, l, D}, DType::f64);
    std::mt19937_64 rng(3);
    std::normal_distribution<double> n(0, 1);
    for (index_t i = 0; i < x.numel(); ++i) x.data_as<double>()[i] = n(rng), R.data_as<double>()[i] = n(rng);
    auto loss = [&] {
      layer.refresh();
      return ssm_test::weighted_sum(layer.forward(x.view()), R);
    };
    auto g = layer.backward(x.view(), R.view());
    EXPECT_TRUE(g.params.deltas.empty());  // the window's rates are not trained
    ssm_test::expect_central_differences("x", x, ssm_test::to_tensor(g.grad_x), loss);
    EXPECT_EQ(ssm_test::expect_parameter_gradients(layer.params(), g.params, loss, 64), 16);
  }
}

// refresh(n_taps) computes the first n_taps positions' filters exactly as a full refresh() does; the forward and the
// backward over a sequence that fits them are the same; a longer one is an error naming x.
TEST(HyenaLayer, FiltersForTheFirstTapsEqualTheFullOnes) {
  const HyenaConfig cfg = small_config(3);
  const auto full = HyenaLayer<double>::init(cfg, 4);
  const auto part = full.refreshed(9);
  ASSERT_EQ(part.taps(), 9);
  EXPECT_EQ(full.taps(), cfg.l_max);
  const index_t D = cfg.d_model, N = cfg.order;
  for (index_t o = 0; o + 1 < N; ++o)
    for (index_t ch = 0; ch < D; ++ch)
      for (index_t t = 0; t < 9; ++t)
        ASSERT_EQ(part.filters().data_as<double>()[(o * D + ch) * 9 + t],
                  full.filters().data_as<double>()[(o * D + ch) * cfg.l_max + t]);
  Tensor x = Tensor::empty({2, 9, D}, DType::f64);
  for (index_t i = 0; i < x.numel(); ++i) x.data_as<double>()[i] = std::sin(0.3 * double(i));
  EXPECT_EQ(part.forward(x.view()).to_vector<double>(), full.forward(x.view()).to_vector<double>());
  const auto gp = part.backward(x.view(), x.view()), gf = full.backward(x.view(), x.view());
  EXPECT_EQ(gp.grad_x, gf.grad_x);
  EXPECT_EQ(gp.params.W3, gf.params.W3);
  EXPECT_EQ(gp.params.pos_emb_z, gf.params.pos_emb_z);
  const Tensor ten = Tensor::zeros({1, 10, D}, DType::f64);
  expect_arg_error("x", [&] { part.forward(ten.view()); });
  auto state = part.init_state(1);
  expect_arg_error("x", [&] { part.step(ten.view(), state); });
  ssm_test::expect_error([&] { full.refreshed(cfg.l_max + 1); }, "n_taps must be in [0, l_max = 40]");
}

TEST(HyenaLayer, BackwardBadInputIsNamed) {
  const auto layer = HyenaLayer<float>::init(small_config(2), 1);
  const Tensor x = Tensor::zeros({1, 4, 6}, DType::f32), short_g = Tensor::zeros({1, 3, 6}, DType::f32);
  expect_arg_error("grad_out", [&] { layer.backward(x.view(), short_g.view()); });
  const Tensor long_x = Tensor::zeros({1, 41, 6}, DType::f32);
  expect_arg_error("x", [&] { layer.backward(long_x.view(), long_x.view()); });  // past l_max
  const Tensor x64 = Tensor::zeros({1, 4, 6}, DType::f64);
  expect_arg_error("x", [&] { layer.backward(x64.view(), x.view()); });
}

}  // namespace

namespace {

using ssm::layers::ModalHyenaConfig;
using ssm::layers::ModalHyenaLayer;

// StripedHyena's gated convolution written out in double: projections, the FIR (causal, width K, bias), the column
// split per head ([x2 | x1 | v] within each head's 3 hd columns), h[c, t] = Re Σ_s R p^t by std::pow, the gated
// convolution with D, out_filter_dense.
std::vector<double> modal_reference(const ModalHyenaLayer<double>& layer, const Tensor& x) {
  const auto& cfg = layer.config();
  const auto& p = layer.params();
  const index_t b = x.size(0), l = x.size(1), H = cfg.d_model, S = cfg.state_size, K = cfg.short_filter_length;
  const index_t hd = H / cfg.heads;
  const double* xs = x.data_as<double>();
  std::vector<double> out(static_cast<std::size_t>(b * l * H));
  for (index_t bi = 0; bi < b; ++bi) {
    std::vector<double> z(static_cast<std::size_t>(l * 3 * H)), zf(z.size());
    for (index_t t = 0; t < l; ++t)
      for (index_t r = 0; r < 3 * H; ++r) {
        double s = p.projections_bias[r];
        for (index_t k = 0; k < H; ++k) s += p.projections_weight[r * H + k] * xs[(bi * l + t) * H + k];
        z[t * 3 * H + r] = s;
      }
    for (index_t t = 0; t < l; ++t)
      for (index_t r = 0; r < 3 * H; ++r) {
        double s = p.short_filter_bias[r];
        for (index_t j = 0; j < K; ++j)
          if (t - (K - 1) + j >= 0) s += p.short_filter_weight[r * K + j] * z[(t - (K - 1) + j) * 3 * H + r];
        zf[t * 3 * H + r] = s;
      }
    std::vector<double> y(static_cast<std::size_t>(l * H));
    for (index_t c = 0; c < H; ++c) {
      const index_t g = c / hd, i = c % hd;
      auto col = [&](index_t part, index_t t) { return zf[t * 3 * H + g * 3 * hd + part * hd + i]; };
      for (index_t t = 0; t < l; ++t) {
        double conv = 0;
        for (index_t tau = 0; tau <= t; ++tau) {
          double h = 0;
          for (index_t s = 0; s < S; ++s) {
            const std::complex<double> pole(p.poles[2 * (c * S + s)], p.poles[2 * (c * S + s) + 1]);
            const std::complex<double> res(p.residues[2 * (c * S + s)], p.residues[2 * (c * S + s) + 1]);
            h += (res * std::pow(pole, static_cast<double>(tau))).real();
          }
          conv += h * col(1, t - tau) * col(2, t - tau);
        }
        y[t * H + c] = col(0, t) * (conv + p.D[c] * col(1, t) * col(2, t));
      }
    }
    for (index_t t = 0; t < l; ++t)
      for (index_t r = 0; r < H; ++r) {
        double s = p.out_bias[r];
        for (index_t k = 0; k < H; ++k) s += p.out_weight[r * H + k] * y[t * H + k];
        out[(bi * l + t) * H + r] = s;
      }
  }
  return out;
}

TEST(ModalHyenaLayer, ForwardEqualsStripedHyenasBlockWrittenOut) {
  for (index_t heads : {1, 2}) {
    ModalHyenaConfig cfg;
    cfg.d_model = 8, cfg.heads = heads, cfg.state_size = 3, cfg.l_max = 64;
    const auto layer = ModalHyenaLayer<double>::init(cfg, 5);
    std::mt19937_64 rng(heads);
    const Tensor x = random(rng, {2, 23, 8}, DType::f64);
    const Tensor y = layer.forward(x.view());
    const std::vector<double> want = modal_reference(layer, x);
    double err = 0, mx = 0;
    for (std::size_t i = 0; i < want.size(); ++i)
      err = std::max(err, std::abs(y.data_as<double>()[i] - want[i])), mx = std::max(mx, std::abs(want[i]));
    EXPECT_LE(err / mx, 1e-12) << "heads " << heads;
  }
}

// Decoding with the constant-size modal state equals the forward, token by token and in pieces; its size does not
// depend on the length.
TEST(ModalHyenaLayer, ConstantStateDecodingEqualsTheForward) {
  ModalHyenaConfig cfg;
  cfg.d_model = 6, cfg.heads = 3, cfg.state_size = 2, cfg.l_max = 32;
  const auto layer = ModalHyenaLayer<double>::init(cfg, 8);
  std::mt19937_64 rng(3);
  const index_t b = 2, l = 29, H = 6;
  const Tensor x = random(rng, {b, l, H}, DType::f64);
  const Tensor y = layer.forward(x.view());
  for (index_t piece : {1, 4, 29}) {
    auto state = layer.init_state(b);
    const std::size_t bytes = state.nbytes();
    Tensor got = Tensor::empty({b, l, H}, DType::f64);
    for (index_t t0 = 0; t0 < l; t0 += piece) {
      const index_t n = std::min(piece, l - t0);
      Tensor xt = Tensor::empty({b, n, H}, DType::f64);
      ssm::copy(xt.view(), x.view().narrow(1, t0, n));
      const Tensor yt = layer.step(xt.view(), state);
      ssm::copy(got.view().narrow(1, t0, n), yt.view());
    }
    EXPECT_LE(max_rel(got, y), 1e-12) << "pieces of " << piece;
    EXPECT_EQ(state.nbytes(), bytes);
  }
  auto wrong = layer.init_state(3);
  const Tensor one = Tensor::zeros({2, 1, H}, DType::f64);
  expect_arg_error("state", [&] { layer.step(one.view(), wrong); });
  // longer than l_max = 32: the forward runs in pieces that continue the modal sums
  const Tensor long_x = random(rng, {2, 70, H}, DType::f64);
  auto s2 = layer.init_state(2);
  EXPECT_LE(max_rel(layer.forward(long_x.view()), layer.step(long_x.view(), s2)), 1e-12);
  Tensor head = Tensor::empty({2, 5, H}, DType::f64);
  ssm::copy(head.view(), long_x.view().narrow(1, 0, 5));
  auto s3 = layer.init_state(2);
  const Tensor y5 = layer.step(head.view(), s3);
  const Tensor yl = layer.forward(long_x.view());
  for (index_t bi = 0; bi < 2; ++bi)
    for (index_t i = 0; i < 5 * H; ++i)
      EXPECT_NEAR(y5.data_as<double>()[bi * 5 * H + i], yl.data_as<double>()[bi * 70 * H + i], 1e-12);
  cfg.heads = 4;  // does not divide 6
  expect_arg_error("heads", [&] { ModalHyenaLayer<double>::init(cfg, 1); });
}

// The layer's backward against central differences in double (two heads of the column split, 3 poles per channel):
// ∂L/∂x and every parameter (projections and the FIR through the split, D, the residues and poles through the modal
// filter, out_filter_dense), L = Σ forward(x) ⊙ R, the filter refreshed after each perturbation. Then a layer refreshed
// for exactly l taps gives the same gradients, and a sequence longer than its taps is refused naming x.
TEST(ModalHyenaLayer, BackwardMatchesCentralDifferences) {
  ModalHyenaConfig cfg;
  cfg.d_model = 6, cfg.heads = 2, cfg.state_size = 3, cfg.l_max = 16;
  auto layer = ModalHyenaLayer<double>::init(cfg, 6);
  layer.set_threads(1);
  std::mt19937_64 rng(7);
  const index_t b = 2, l = 11;
  Tensor x = random(rng, {b, l, 6}, DType::f64);
  const Tensor R = random(rng, {b, l, 6}, DType::f64);
  auto loss = [&] {
    layer.refresh();
    return ssm_test::weighted_sum(layer.forward(x.view()), R);
  };
  const auto g = layer.backward(x.view(), R.view());
  ssm_test::expect_central_differences("x", x, ssm_test::to_tensor(g.grad_x), loss);
  auto grads = g.params;
  EXPECT_EQ(ssm_test::expect_parameter_gradients(layer.params(), grads, loss, 64), 9);
  const auto part = layer.refreshed(l);
  ASSERT_EQ(part.taps(), l);
  const auto gp = part.backward(x.view(), R.view());
  EXPECT_EQ(gp.grad_x, g.grad_x);
  EXPECT_EQ(gp.params.poles, g.params.poles);
  EXPECT_EQ(gp.params.projections_weight, g.params.projections_weight);
  const auto short_layer = layer.refreshed(l - 1);
  expect_arg_error("x", [&] { short_layer.backward(x.view(), R.view()); });
  // forward with fewer taps than the length runs in pieces: the same output
  EXPECT_LE(max_rel(short_layer.forward(x.view()), layer.forward(x.view())), 1e-12);
  const Tensor short_g = Tensor::zeros({b, l - 1, 6}, DType::f64);
  expect_arg_error("grad_out", [&] { layer.backward(x.view(), short_g.view()); });
}

}  // namespace
