// Tests of the S4 facility (docs/math.md §4): real FFT, causal FFT convolution vs direct, Vandermonde and Cauchy +
// Woodbury kernels vs powers of A_bar, C <-> C̃, S4 / S4D layers in conv mode vs step mode, carried state in
// pieces, state save / restore, output mixing, and the error paths.
// GCC 12 + AVX-512: false-positive -Wmaybe-uninitialized inside Eigen's vectorized kernels (ssm/core/macros.hpp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "ssm/cpu/threads.hpp"
#include "ssm/ops/glu.hpp"
#include "ssm/ops/long_conv.hpp"
#include "ssm/s4.hpp"
#include "support/device_views.hpp"
#include "support/expect_error.hpp"

namespace {

using ssm_test::expect_error;

using ssm::Discretization;
using ssm::s4::cd;

/// max |a - b| / max |b|: the normalized error every comparison below uses.
template <class A, class B>
double rel_err(const A& a, const B& b) {
  double e = 0, m = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    e = std::max(e, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    m = std::max(m, std::abs(static_cast<double>(b[i])));
  }
  return m > 0 ? e / m : e;
}

template <class T>
std::vector<T> randn(size_t n, std::uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> nd;
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(nd(g));
  return v;
}

/// h channels of the LegS DPLR parameters with a random untruncated C and Δ spread over [1e-3, 1e-1].
ssm::s4::DPLRSSM legs_dplr(int N, int h, std::uint64_t seed) {
  const auto d = ssm::hippo::dplr_legs(N);
  std::mt19937_64 g(seed);
  std::normal_distribution<double> nd;
  ssm::s4::DPLRSSM p;
  p.Lambda.resize(h, N / 2);
  p.P = p.B = p.C = p.Lambda;
  p.Delta.resize(h);
  for (int c = 0; c < h; ++c) {
    p.Lambda.row(c) = d.Lambda.transpose();
    p.P.row(c) = d.P.transpose();
    p.B.row(c) = d.B.transpose();
    for (int n = 0; n < N / 2; ++n) p.C(c, n) = cd(nd(g), nd(g));
    p.Delta(c) = h == 1 ? 1e-2 : std::exp(std::log(1e-3) + (std::log(1e-1) - std::log(1e-3)) * c / (h - 1));
  }
  return p;
}

// Tolerances per dtype.  Double: the kernels are sums of N terms of size O(1) and an FFT of length L; rounding
// gives ~1e-14 relative (measured 9e-15 Cauchy, 5e-14 / 3e-13 Vandermonde ZOH / bilinear on the LegS Λ for
// N = 64, L = 4096), the issue asks for <= 1e-9.  Float: eps = 6e-8 times N-term sums and log2(L) FFT stages
// (measured 6e-7 Cauchy, 1e-7 / 1.5e-7 Vandermonde); the issue asks for <= 1e-4.
template <class T>
constexpr double kernel_tol() {
  return std::is_same_v<T, double> ? 1e-9 : 1e-4;
}

template <class T>
class S4Typed : public ::testing::Test {};
using Reals = ::testing::Types<float, double>;
TYPED_TEST_SUITE(S4Typed, Reals);

// ---- FFT and convolution -----------------------------------------------------------------------------------

TYPED_TEST(S4Typed, RfftMatchesNaiveDftAndInverts) {
  using T = TypeParam;
  const double dft_tol = std::is_same_v<T, double> ? 1e-12 : 1e-4, inv_tol = std::is_same_v<T, double> ? 1e-14 : 1e-6;
  for (int n : {1, 2, 7, 12, 97}) {
    const auto x = randn<T>(n, 10 + n);
    const auto X = ssm::fft::rfft(x);
    ASSERT_EQ(static_cast<int>(X.size()), n / 2 + 1);
    for (int k = 0; k <= n / 2; ++k) {
      cd ref = 0;
      for (int j = 0; j < n; ++j) ref += static_cast<double>(x[j]) * std::exp(cd(0, -2 * M_PI * j * k / n));
      EXPECT_NEAR(std::abs(cd(X[k]) - ref), 0.0, dft_tol) << "n=" << n << " k=" << k;
    }
    EXPECT_LT(rel_err(ssm::fft::irfft(X, n), x), inv_tol) << "n=" << n;
  }
}

TYPED_TEST(S4Typed, FftConvolutionEqualsDirect) {
  using T = TypeParam;
  // Lengths around the direct/FFT switch, odd, prime (4099: the padded size must stay smooth) and a power of 2.
  for (long l : {1L, 2L, 5L, 127L, 128L, 129L, 257L, 1000L, 4096L, 4099L}) {
    const auto x = randn<T>(l, 1 + l), K = randn<T>(l, 2 + l);
    std::vector<T> y_direct(l), y_fft(l), y_auto(x);
    ssm::causal_conv_direct(x.data(), K.data(), y_direct.data(), l);
    ssm::causal_conv_fft(x.data(), K.data(), y_fft.data(), l);
    ssm::causal_conv(y_auto.data(), K.data(), y_auto.data(), l);  // in place
    // Double: FFT rounding ~ eps log2(n) ‖x‖‖K‖ relative to the largest output (~sqrt(l) ‖x‖_∞‖K‖_∞).
    // Float: eps = 6e-8 times the same factors; 1e-4 leaves > 10x margin at l = 4099 (measured ~1e-6).
    const double tol = std::is_same_v<T, double> ? 1e-12 : 1e-4;
    EXPECT_LT(rel_err(y_fft, y_direct), tol) << "l=" << l;
    EXPECT_LT(rel_err(y_auto, y_direct), tol) << "l=" << l;
  }
  EXPECT_EQ(ssm::smooth_fft_size(8197), 8640);  // 8640 = 2^6 3^3 5, the next 5-smooth number
  EXPECT_EQ(ssm::smooth_fft_size(4096), 4096);
}

// ---- kernels ---------------------------------------------------------------------------------------------------

TYPED_TEST(S4Typed, CauchyWoodburyEqualsPowersLegS64) {
  using T = TypeParam;
  const long L = 4096;
  const auto p = legs_dplr(64, 2, 7);  // Δ = 1e-3 and 1e-1
  const auto K_ref = ssm::s4::s4_kernel_powers(p, L);
  auto pt = p;
  pt.C = ssm::s4::s4_truncate_C(p, L);
  const auto K = ssm::s4::s4_kernel_cauchy<T>(pt, L);
  EXPECT_LT(rel_err(K, K_ref), kernel_tol<T>());
  // Each channel separately (the small-Δ channel has the larger kernel and could hide the other).
  for (long c = 0; c < 2; ++c) {
    std::vector<double> a(K.begin() + c * L, K.begin() + (c + 1) * L), b(K_ref.begin() + c * L, K_ref.begin() + (c + 1) * L);
    EXPECT_LT(rel_err(a, b), kernel_tol<T>()) << "channel " << c;
  }
}

TYPED_TEST(S4Typed, CauchyAwkwardLengths) {
  using T = TypeParam;
  const auto p = legs_dplr(8, 3, 3);
  for (long L : {1L, 2L, 3L, 17L, 1001L}) {  // odd L has no ω = −1 node; L = 1 is a single node
    auto pt = p;
    pt.C = ssm::s4::s4_truncate_C(p, L);
    EXPECT_LT(rel_err(ssm::s4::s4_kernel_cauchy<T>(pt, L), ssm::s4::s4_kernel_powers(p, L)), kernel_tol<T>())
        << "L=" << L;
  }
}

TYPED_TEST(S4Typed, VandermondeEqualsPowers) {
  using T = TypeParam;
  const long L = 4096;
  for (auto init : {0, 1}) {
    ssm::s4::DiagonalSSM q;
    const auto p = legs_dplr(64, 2, 11 + init);
    q.A = p.Lambda;
    if (init == 1)
      for (long c = 0; c < 2; ++c) q.A.row(c) = ssm::hippo::s4d_lin(64).transpose();
    q.B = p.B;
    q.C = p.C;
    q.Delta = p.Delta;
    for (auto method : {Discretization::zoh, Discretization::bilinear}) {
      EXPECT_LT(rel_err(ssm::s4::s4d_kernel_vandermonde<T>(q, L, method), ssm::s4::s4d_kernel_powers(q, L, method)),
                kernel_tol<T>())
          << "init " << init << " method " << ssm::name(method);
    }
  }
}

TEST(S4Kernel, TruncateThenRecoverIsIdentity) {
  const auto p = legs_dplr(16, 2, 5);
  auto pt = p;
  pt.C = ssm::s4::s4_truncate_C(p, 300);
  EXPECT_GT((pt.C - p.C).norm(), 1e-3 * p.C.norm());  // truncation changes C at these Δ, L
  EXPECT_LT((ssm::s4::s4_recover_C(pt, 300) - p.C).norm(), 1e-10 * p.C.norm());
}

TEST(S4Kernel, ZohVandermondeHandlesZeroEigenvalue) {
  ssm::s4::DiagonalSSM q;
  q.A = Eigen::MatrixXcd::Zero(1, 2);
  q.A(0, 1) = cd(-0.5, 3.0);
  q.B = Eigen::MatrixXcd::Ones(1, 2);
  q.C = Eigen::MatrixXcd::Ones(1, 2);
  q.Delta = Eigen::VectorXd::Constant(1, 0.1);
  const auto K = ssm::s4::s4d_kernel_vandermonde<double>(q, 50, Discretization::zoh);
  EXPECT_LT(rel_err(K, ssm::s4::s4d_kernel_powers(q, 50, Discretization::zoh)), 1e-12);
}

// ---- layers ----------------------------------------------------------------------------------------------------

// Conv mode vs step mode over 4096 steps.  Double: both are exact algorithms; the recurrence accumulates rounding
// over its memory (~1/(ΔRe Λ) ≤ 2000 steps) → ~1e-12.  Float: the recurrence carries up to eps·(memory) ~ 1e-4
// of the state magnitude (an estimate; example_s4_streaming measures 1.2e-5 for S4D, N = 64, 20000 steps), and
// the float Cauchy kernel 1e-6; 2e-3 relative to the largest output leaves margin for the worst channel.
template <class T>
constexpr double step_tol() {
  return std::is_same_v<T, double> ? 1e-9 : 2e-3;
}

template <class T, class Layer>
std::vector<T> run_steps(const Layer& layer, const std::vector<T>& x, long b, long l, long h) {
  auto state = layer.initial_state(b);
  std::vector<T> y(b * l * h), xt(b * h), yt(b * h);
  for (long t = 0; t < l; ++t) {
    for (long bi = 0; bi < b; ++bi)
      for (long c = 0; c < h; ++c) xt[bi * h + c] = x[(bi * l + t) * h + c];
    layer.step(xt.data(), yt.data(), state);
    for (long bi = 0; bi < b; ++bi)
      for (long c = 0; c < h; ++c) y[(bi * l + t) * h + c] = yt[bi * h + c];
  }
  return y;
}

TYPED_TEST(S4Typed, S4DConvEqualsStep4096) {
  using T = TypeParam;
  for (auto method : {Discretization::zoh, Discretization::bilinear}) {
    typename ssm::S4DLayer<T>::Config cfg;
    cfg.h = 3;
    cfg.N = 64;
    cfg.init = method == Discretization::zoh ? ssm::S4DInit::lin : ssm::S4DInit::legs;
    cfg.method = method;
    cfg.mix = ssm::OutputMix::gelu_glu;
    ssm::S4DLayer<T> layer(cfg);
    const long b = 2, l = 4096;
    const auto x = randn<T>(b * l * cfg.h, 21);
    std::vector<T> y(x.size());
    layer.forward(x.data(), y.data(), b, l);
    EXPECT_LT(rel_err(run_steps(layer, x, b, l, cfg.h), y), step_tol<T>()) << ssm::name(method);
  }
}

TYPED_TEST(S4Typed, S4ConvEqualsStep4096DenseAndLinear) {
  using T = TypeParam;
  for (auto form : {ssm::StepForm::linear, ssm::StepForm::dense}) {
    typename ssm::S4Layer<T>::Config cfg;
    cfg.h = form == ssm::StepForm::dense ? 1 : 2;  // the O(N²) dense step is slow under sanitizers
    cfg.N = 64;
    cfg.l_max = 4096;
    cfg.step_form = form;
    cfg.mix = ssm::OutputMix::gelu_linear;
    ssm::S4Layer<T> layer(cfg);
    const long b = 1, l = 4096;
    const auto x = randn<T>(b * l * cfg.h, 22);
    std::vector<T> y(x.size());
    layer.forward(x.data(), y.data(), b, l);
    EXPECT_LT(rel_err(run_steps(layer, x, b, l, cfg.h), y), step_tol<T>())
        << (form == ssm::StepForm::dense ? "dense" : "linear");
  }
}

TYPED_TEST(S4Typed, S4DiagonalizedStepSmallNAndRefusalForLargeN) {
  using T = TypeParam;
  // The eigenvectors of LegS's A_bar are exponentially ill-conditioned in N (S4 Lemma 3.2): the diagonalized
  // step works for small N and is refused (not silently wrong) for N = 64.
  typename ssm::S4Layer<T>::Config cfg;
  cfg.h = 2;
  cfg.N = 4;
  cfg.l_max = 1000;
  cfg.step_form = ssm::StepForm::diagonal;
  ssm::S4Layer<T> layer(cfg);
  const auto x = randn<T>(1000 * cfg.h, 24);
  std::vector<T> y(x.size());
  layer.forward(x.data(), y.data(), 1, 1000);
  EXPECT_LT(rel_err(run_steps(layer, x, 1, 1000, cfg.h), y), step_tol<T>());
  cfg.N = 64;
  cfg.h = 1;
  EXPECT_THROW(ssm::S4Layer<T> big(cfg), ssm::Error);
}

TYPED_TEST(S4Typed, PiecesWithCarriedStateEqualOneCall) {
  using T = TypeParam;
  typename ssm::S4DLayer<T>::Config cd_cfg;
  cd_cfg.h = 3;
  cd_cfg.N = 16;
  cd_cfg.init = ssm::S4DInit::inv;
  ssm::S4DLayer<T> s4d(cd_cfg);
  typename ssm::S4Layer<T>::Config s_cfg;
  s_cfg.h = 2;
  s_cfg.N = 16;
  s_cfg.l_max = 2000;
  ssm::S4Layer<T> s4(s_cfg);
  const long b = 2, l = 2000;
  const std::vector<long> pieces = {700, 1, 128, 129, 1042};  // direct and FFT convolutions, a length-1 piece
  auto check = [&](const auto& layer, long h, const char* what) {
    const auto x = randn<T>(b * l * h, 23);
    std::vector<T> y_one(x.size()), y_pieces(x.size());
    layer.forward(x.data(), y_one.data(), b, l);
    auto state = layer.initial_state(b);
    // Each piece is a contiguous (b, piece, h) block gathered from the (b, l, h) signal.
    long t0 = 0;
    for (long lp : pieces) {
      std::vector<T> xp(b * lp * h), yp(b * lp * h);
      for (long bi = 0; bi < b; ++bi)
        for (long t = 0; t < lp; ++t)
          for (long c = 0; c < h; ++c) xp[(bi * lp + t) * h + c] = x[(bi * l + t0 + t) * h + c];
      layer.forward(xp.data(), yp.data(), b, lp, state);
      for (long bi = 0; bi < b; ++bi)
        for (long t = 0; t < lp; ++t)
          for (long c = 0; c < h; ++c) y_pieces[(bi * l + t0 + t) * h + c] = yp[(bi * lp + t) * h + c];
      t0 += lp;
    }
    ASSERT_EQ(t0, l);
    EXPECT_LT(rel_err(y_pieces, y_one), step_tol<T>()) << what;
  };
  check(s4d, cd_cfg.h, "S4D");
  check(s4, s_cfg.h, "S4");
}

TYPED_TEST(S4Typed, StateSaveRestoreContinuesExactly) {
  using T = TypeParam;
  typename ssm::S4Layer<T>::Config cfg;
  cfg.h = 2;
  cfg.N = 8;
  cfg.l_max = 128;
  cfg.step_form = ssm::StepForm::dense;
  ssm::S4Layer<T> layer(cfg);
  auto state = layer.initial_state(1);
  const auto x = randn<T>(2 * 40, 5);
  std::vector<T> y(2), y_a(2 * 20), y_b(2 * 20);
  for (long t = 0; t < 20; ++t) layer.step(x.data() + 2 * t, y.data(), state);
  std::stringstream ss;
  state.save(ss);
  auto restored = ssm::S4State<T>::load(ss);
  EXPECT_EQ(restored.state, state.state);
  for (long t = 20; t < 40; ++t) {
    layer.step(x.data() + 2 * t, y_a.data() + 2 * (t - 20), state);
    layer.step(x.data() + 2 * t, y_b.data() + 2 * (t - 20), restored);
  }
  EXPECT_EQ(restored.state, state.state);  // the restored state is a byte copy ...
  // ... (the outputs agree to rounding: vectorized loops may sum in an alignment-dependent order)
  const double tol = std::is_same_v<T, double> ? 1e-13 : 1e-5;
  EXPECT_LT(rel_err(y_b, y_a), tol);
  // A truncated stream and a stream of the other precision are errors.
  std::stringstream full;
  state.save(full);
  const std::string bytes = full.str();
  std::stringstream cut(bytes.substr(0, bytes.size() - 3));
  EXPECT_THROW(ssm::S4State<T>::load(cut), ssm::Error);
  std::stringstream other(bytes);
  using Other = std::conditional_t<std::is_same_v<T, float>, double, float>;
  EXPECT_THROW(ssm::S4State<Other>::load(other), ssm::Error);
}

TEST(S4Layer, OutputMixMatchesHandComputation) {
  // y = GLU(W gelu(K * x + D x) + b), computed here from the layer's parameters with the powers kernel and the
  // direct convolution (independent of the layer's FFT path).
  ssm::S4DLayer<double>::Config cfg;
  cfg.h = 2;
  cfg.N = 4;
  cfg.mix = ssm::OutputMix::gelu_glu;
  cfg.seed = 9;
  ssm::S4DLayer<double> layer(cfg);
  const long l = 100, h = 2;
  const auto x = randn<double>(l * h, 3);
  std::vector<double> y(l * h);
  layer.forward(x.data(), y.data(), 1, l);
  const auto K = ssm::s4::s4d_kernel_powers(layer.ssm, l, Discretization::zoh);
  std::vector<double> u(l * h), ref(l * h);
  for (long c = 0; c < h; ++c) {
    std::vector<double> xc(l), yc(l);
    for (long t = 0; t < l; ++t) xc[t] = x[t * h + c];
    ssm::causal_conv_direct(xc.data(), K.data() + c * l, yc.data(), l);
    for (long t = 0; t < l; ++t) u[t * h + c] = yc[t] + layer.D(c) * xc[t];
  }
  for (long t = 0; t < l; ++t) {
    Eigen::VectorXd g(h);
    for (long c = 0; c < h; ++c) g(c) = 0.5 * u[t * h + c] * (1 + std::erf(u[t * h + c] / std::sqrt(2.0)));
    const Eigen::VectorXd z = layer.W_out * g + layer.b_out;
    for (long c = 0; c < h; ++c) ref[t * h + c] = z(c) / (1 + std::exp(-z(h + c)));
  }
  EXPECT_LT(rel_err(y, ref), 1e-12);
}

// ---- gradients -------------------------------------------------------------------------------------------

/// (loss at v + e − loss at v − e) / 2e, v perturbed in place and restored.
template <class Loss>
double central_difference(double& v, Loss&& loss, double e) {
  const double v0 = v;
  v = v0 + e;
  const double up = loss();
  v = v0 - e;
  const double down = loss();
  v = v0;
  return (up - down) / (2 * e);
}

/// Tracks max |fd − analytic| and max |analytic| of one parameter; passes when the error is within tol of
/// max(1, max |analytic|) and the gradient is not all zero.
struct GradCheck {
  const char* name;
  double err = 0, mag = 0;
  void add(double fd, double an) { err = std::max(err, std::abs(fd - an)), mag = std::max(mag, std::abs(an)); }
  void expect(double tol) const {
    SCOPED_TRACE(name);
    EXPECT_GT(mag, 0.0);
    EXPECT_LE(err, tol * std::max(1.0, mag));
  }
};

/// layer.backward against central differences of L = Σ y ⊙ R in double, for x (every 7th element when l > 100) and
/// every parameter: the real and the imaginary part of each entry of the layer's complex matrices `complex_params`
/// (named; grad_of(grads, j) is the gradient of the j-th), Δ, D, W_out and b_out.
template <class Layer, class GradOf>
void expect_layer_gradients(Layer& layer, long b, long l,
                            const std::vector<std::pair<const char*, Eigen::MatrixXcd*>>& complex_params,
                            GradOf&& grad_of) {
  const long h = layer.channels();
  auto x = randn<double>(b * l * h, 21);
  const auto R = randn<double>(b * l * h, 22);
  std::vector<double> y(b * l * h);
  auto loss = [&] {
    layer.forward(x.data(), y.data(), b, l);
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += y[i] * R[i];
    return s;
  };
  const auto grads = layer.backward(x.data(), R.data(), b, l);
  const double e = 1e-6, tol = 2e-6;
  GradCheck gx{"x"};
  for (size_t i = 0; i < x.size(); i += l > 100 ? 7 : 1) gx.add(central_difference(x[i], loss, e), grads.grad_x[i]);
  gx.expect(tol);
  for (size_t j = 0; j < complex_params.size(); ++j) {
    Eigen::MatrixXcd& param = *complex_params[j].second;
    const Eigen::MatrixXcd& grad = grad_of(grads, j);
    ASSERT_EQ(grad.rows(), param.rows());
    ASSERT_EQ(grad.cols(), param.cols());
    const std::string re_name = std::string(complex_params[j].first) + ", real part";
    const std::string im_name = std::string(complex_params[j].first) + ", imaginary part";
    GradCheck re{re_name.c_str()}, im{im_name.c_str()};
    for (Eigen::Index i = 0; i < param.size(); ++i) {
      cd& v = param.data()[i];
      double parts[2] = {v.real(), v.imag()};
      for (int k = 0; k < 2; ++k) {
        auto set_loss = [&] {
          v = cd(parts[0], parts[1]);
          return loss();
        };
        const double fd = central_difference(parts[k], set_loss, e);
        v = cd(parts[0], parts[1]);
        (k == 0 ? re : im).add(fd, k == 0 ? grad.data()[i].real() : grad.data()[i].imag());
      }
    }
    re.expect(tol), im.expect(tol);
  }
  GradCheck gd{"Delta"}, gD{"D"}, gW{"W_out"}, gb{"b_out"};
  for (long c = 0; c < h; ++c) {
    gd.add(central_difference(layer.ssm.Delta(c), loss, 1e-7), grads.ssm.Delta(c));
    gD.add(central_difference(layer.D(c), loss, e), grads.D(c));
  }
  gd.expect(tol), gD.expect(tol);
  ASSERT_EQ(grads.W_out.rows(), layer.W_out.rows());
  ASSERT_EQ(grads.b_out.size(), layer.b_out.size());
  if (layer.mix() == ssm::OutputMix::none) return;
  for (Eigen::Index i = 0; i < layer.W_out.size(); ++i)
    gW.add(central_difference(layer.W_out.data()[i], loss, e), grads.W_out.data()[i]);
  for (Eigen::Index i = 0; i < layer.b_out.size(); ++i)
    gb.add(central_difference(layer.b_out.data()[i], loss, e), grads.b_out.data()[i]);
  gW.expect(tol), gb.expect(tol);
}

// S4DLayer::backward: A, B and C through the Vandermonde kernel, for ZOH and bilinear, each output mixing, and l = 1,
// 7 (the direct convolution) and 150 (the FFT). Δ in [0.01, 0.5] puts ΔA on both sides of the ZOH derivative's series
// cut (|ΔA| = 0.1; asserted); B is moved off its initial ones.
TEST(S4DLayer, BackwardMatchesCentralDifferences) {
  for (auto method : {Discretization::zoh, Discretization::bilinear})
    for (auto mix : {ssm::OutputMix::none, ssm::OutputMix::gelu_linear, ssm::OutputMix::gelu_glu})
      for (long l : {1L, 7L, 150L}) {
        SCOPED_TRACE(::testing::Message() << ssm::name(method) << ", mix " << static_cast<int>(mix) << ", l " << l);
        ssm::S4DLayer<double>::Config cfg;
        cfg.h = 3, cfg.N = 6, cfg.method = method, cfg.mix = mix, cfg.dt_min = 0.01, cfg.dt_max = 0.5, cfg.seed = 4;
        ssm::S4DLayer<double> layer(cfg);
        double lo = 1e300, hi = 0;  // min and max |ΔA| over the modes
        for (long c = 0; c < cfg.h; ++c)
          for (long n = 0; n < cfg.N / 2; ++n) {
            const double z = std::abs(layer.ssm.Delta(c) * layer.ssm.A(c, n));
            lo = std::min(lo, z), hi = std::max(hi, z);
          }
        ASSERT_LT(lo, 0.1);
        ASSERT_GT(hi, 0.1);
        std::mt19937_64 rng(8);
        std::normal_distribution<double> N(0.0, 0.3);
        for (long c = 0; c < cfg.h; ++c)
          for (long n = 0; n < cfg.N / 2; ++n) layer.ssm.B(c, n) += cd(N(rng), N(rng));
        expect_layer_gradients(layer, 2, l, {{"A", &layer.ssm.A}, {"B", &layer.ssm.B}, {"C", &layer.ssm.C}},
                               [](const auto& g, size_t j) -> const Eigen::MatrixXcd& {
                                 return j == 0 ? g.ssm.A : j == 1 ? g.ssm.B : g.ssm.C;
                               });
      }
}

// S4Layer::backward: Λ, P, B and C̃ through the Cauchy + Woodbury kernel and its inverse FFT, at l = l_max (even: the
// ω = −1 bin; and odd) and at l < l_max (the kernel truncated), with and without output mixing. Λ, P and B are moved
// off HiPPO-LegS's values so that no structure hides a missing term.
TEST(S4Layer, BackwardMatchesCentralDifferences) {
  struct Case {
    long l_max, l;
    ssm::OutputMix mix;
  };
  for (const Case& k : {Case{16, 16, ssm::OutputMix::none}, Case{15, 15, ssm::OutputMix::gelu_glu},
                        Case{24, 9, ssm::OutputMix::gelu_linear}}) {
    SCOPED_TRACE(::testing::Message() << "l_max " << k.l_max << ", l " << k.l);
    ssm::S4Layer<double>::Config cfg;
    cfg.h = 2, cfg.N = 6, cfg.l_max = k.l_max, cfg.mix = k.mix, cfg.dt_min = 0.05, cfg.dt_max = 0.5, cfg.seed = 6;
    ssm::S4Layer<double> layer(cfg);
    std::mt19937_64 rng(9);
    std::normal_distribution<double> N(0.0, 0.2);
    for (auto* M : {&layer.ssm.Lambda, &layer.ssm.P, &layer.ssm.B})
      for (Eigen::Index i = 0; i < M->size(); ++i) M->data()[i] += cd(N(rng), N(rng));
    expect_layer_gradients(layer, 2, k.l,
                           {{"Lambda", &layer.ssm.Lambda}, {"P", &layer.ssm.P}, {"B", &layer.ssm.B},
                            {"C~", &layer.ssm.C}},
                           [](const auto& g, size_t j) -> const Eigen::MatrixXcd& {
                             return j == 0 ? g.ssm.Lambda : j == 1 ? g.ssm.P : j == 2 ? g.ssm.B : g.ssm.C;
                           });
  }
  // Past l_max the kernel re-truncates C̃, which has no backward: refused, naming l and l_max.
  ssm::S4Layer<double>::Config cfg;
  cfg.h = 2, cfg.N = 4, cfg.l_max = 8;
  const ssm::S4Layer<double> layer(cfg);
  std::vector<double> x(2 * 9), gy(2 * 9);
  expect_error([&] { layer.backward(x.data(), gy.data(), 1, 9); }, "l_max");
}

TEST(S4Layer, ThreadedForwardEqualsOneThread) {
  // set_threads splits (batch row, 16-channel group) tasks and output-mix rows over the threads; each channel
  // is computed by the same code whatever the split, so the results are identical, with and without a carried
  // state (40 channels: two full groups and a ragged one).
  ssm::S4DLayer<double>::Config cfg;
  cfg.h = 40;
  cfg.N = 8;
  cfg.mix = ssm::OutputMix::gelu_glu;
  cfg.seed = 4;
  ssm::S4DLayer<double> one(cfg), three(cfg);
  one.set_threads(1);
  three.set_threads(3);
  const long b = 2, l = 150, h = cfg.h;
  const auto x = randn<double>(b * l * h, 8);
  std::vector<double> y1(b * l * h), y3(b * l * h);
  // Equal results cannot tell whether a second thread ran: the pool's count of threads it ran besides the caller's
  // must stay put for 1 thread and grow for 3.
  const std::int64_t before = ssm::cpu::worker_threads_run();
  one.forward(x.data(), y1.data(), b, l);
  EXPECT_EQ(ssm::cpu::worker_threads_run(), before) << "1 thread set, a second one ran";
  three.forward(x.data(), y3.data(), b, l);
  EXPECT_GT(ssm::cpu::worker_threads_run(), before) << "3 threads set, all the work ran on the caller's";
  EXPECT_EQ(y1, y3);
  auto s1 = one.initial_state(b), s3 = three.initial_state(b);
  for (int piece = 0; piece < 2; ++piece) {
    one.forward(x.data(), y1.data(), b, l, s1);
    three.forward(x.data(), y3.data(), b, l, s3);
    EXPECT_EQ(y1, y3) << "piece " << piece;
  }
  EXPECT_EQ(s1.state, s3.state);
  EXPECT_THROW(one.set_threads(-1), ssm::Error);
}

TEST(S4DLayer, ThreadedBackwardEqualsOneThread) {
  // backward splits 16-channel groups (the convolutions' adjoints, ∂L/∂K), row blocks (the output mixing's backward,
  // summed in block order) and channels (the kernel's backward) over the threads: the same numbers whatever the split
  // (40 channels: two full groups and a ragged one).
  ssm::S4DLayer<double>::Config cfg;
  cfg.h = 40, cfg.N = 8, cfg.mix = ssm::OutputMix::gelu_glu, cfg.seed = 4;
  ssm::S4DLayer<double> one(cfg), three(cfg);
  one.set_threads(1);
  three.set_threads(3);
  const long b = 2, l = 150, h = cfg.h;
  const auto x = randn<double>(b * l * h, 8), gy = randn<double>(b * l * h, 9);
  const std::int64_t before = ssm::cpu::worker_threads_run();
  const auto g1 = one.backward(x.data(), gy.data(), b, l);
  EXPECT_EQ(ssm::cpu::worker_threads_run(), before) << "1 thread set, a second one ran";
  const auto g3 = three.backward(x.data(), gy.data(), b, l);
  EXPECT_GT(ssm::cpu::worker_threads_run(), before) << "3 threads set, all the work ran on the caller's";
  EXPECT_EQ(g1.grad_x, g3.grad_x);
  EXPECT_EQ(g1.ssm.A, g3.ssm.A);
  EXPECT_EQ(g1.ssm.B, g3.ssm.B);
  EXPECT_EQ(g1.ssm.C, g3.ssm.C);
  EXPECT_EQ(g1.ssm.Delta, g3.ssm.Delta);
  EXPECT_EQ(g1.D, g3.D);
  EXPECT_EQ(g1.W_out, g3.W_out);
  EXPECT_EQ(g1.b_out, g3.b_out);
}

TEST(S4Layer, LongerThanLmaxRetruncates) {
  ssm::S4Layer<double>::Config cfg;
  cfg.h = 2;
  cfg.N = 16;
  cfg.l_max = 256;
  ssm::S4Layer<double> layer(cfg);
  auto p = layer.ssm;
  p.C = ssm::s4::s4_recover_C(layer.ssm, 256);
  EXPECT_LT(rel_err(layer.kernel(700), ssm::s4::s4_kernel_powers(p, 700)), 1e-9);
  const auto K100 = layer.kernel(100);
  const auto K_ref = ssm::s4::s4_kernel_powers(p, 256);
  for (long c = 0; c < 2; ++c)
    for (long t = 0; t < 100; ++t) EXPECT_NEAR(K100[c * 100 + t], K_ref[c * 256 + t], 1e-9);
}

TEST(S4Layer, InitIsPublishedInit) {
  ssm::S4DLayer<float>::Config cfg;
  cfg.h = 200;
  cfg.N = 8;
  ssm::S4DLayer<float> layer(cfg);
  double lo = 1, hi = 0;
  for (long c = 0; c < cfg.h; ++c) {
    lo = std::min(lo, layer.ssm.Delta(c));
    hi = std::max(hi, layer.ssm.Delta(c));
    EXPECT_EQ(layer.ssm.A(c, 3), cd(-0.5, 3 * M_PI));  // S4D-Lin
  }
  EXPECT_GE(lo, 1e-3);
  EXPECT_LE(hi, 1e-1);
  EXPECT_LT(lo, 2e-3);  // log-uniform over two decades: 200 draws reach both ends
  EXPECT_GT(hi, 5e-2);
}

TEST(S4Layer, TensorViewForwardEqualsPointerForward) {
  ssm::S4DLayer<float>::Config cfg;
  cfg.h = 4;
  cfg.N = 8;
  ssm::S4DLayer<float> layer(cfg);
  auto x = randn<float>(2 * 30 * 4, 4);
  std::vector<float> y1(x.size()), y2(x.size());
  layer.forward(x.data(), y1.data(), 2, 30);
  layer.forward(ssm::TensorView::of(x.data(), {2, 30, 4}), ssm::TensorView::of(y2.data(), {2, 30, 4}));
  EXPECT_EQ(y1, y2);
  std::vector<double> xd(x.begin(), x.end());
  EXPECT_THROW(layer.forward(ssm::TensorView::of(x.data(), {2, 30, 3}), ssm::TensorView::of(y2.data(), {2, 30, 3})),
               ssm::Error);
  EXPECT_THROW(layer.forward(ssm::TensorView::of(xd.data(), {2, 30, 4}), ssm::TensorView::of(y2.data(), {2, 30, 4})),
               ssm::Error);
  EXPECT_THROW(layer.forward(ssm::TensorView::of(x.data(), {2, 30, 4}), ssm::TensorView::of(y2.data(), {2, 29, 4})),
               ssm::Error);
}

// ---- errors ----------------------------------------------------------------------------------------------------


TEST(S4Errors, DeviceViewsAreRefusedBeforeTheirMemoryIsRead) {
  // A layer on the CPU (not moved by to()) takes CPU views: a CUDA view is an error naming the argument and saying
  // what to do, raised before any read (the views below point at host memory only to have an address; nothing may
  // dereference them). The backward takes CPU views only.
  ssm::S4DLayer<float>::Config cfg;
  cfg.h = 4;
  cfg.N = 8;
  const ssm::S4DLayer<float> s4d(cfg);
  ssm::S4Layer<float>::Config scfg;
  scfg.h = 4;
  scfg.N = 8;
  const ssm::S4Layer<float> s4(scfg);
  std::vector<float> host(2 * 3 * 4);
  const ssm::TensorView cpu = ssm::TensorView::of(host.data(), {2, 3, 4});
  const ssm::TensorView gpu(host.data(), ssm::DType::f32, ssm::Device::cuda(0), {2, 3, 4}, cpu.strides());
  for (const char* word : {"'x'", "is on cuda:0 but must be on cpu", "to()"}) {
    expect_error([&] { s4d.forward(gpu, cpu); }, word);
    expect_error([&] { s4.forward(gpu, cpu); }, word);
  }
  expect_error([&] { s4d.forward(cpu, gpu); }, "'y'");
  expect_error([&] { s4.forward(cpu, gpu); }, "'y'");
  for (const char* word : {"'grad_y'", "is on cuda:0", "the backward runs on the CPU"}) {
    expect_error([&] { (void)s4d.backward(cpu, gpu); }, word);
    expect_error([&] { (void)s4.backward(cpu, gpu); }, word);
  }
}

TEST(S4Errors, BadInput) {
  ssm::S4DLayer<float>::Config cfg;
  cfg.N = 7;
  expect_error([&] { ssm::S4DLayer<float> l(cfg); }, "'N'");
  ssm::S4Layer<double>::Config scfg;
  scfg.N = 9;
  expect_error([&] { ssm::S4Layer<double> l(scfg); }, "'N'");
  scfg.N = 8;
  scfg.dt_min = std::nan("");
  expect_error([&] { ssm::S4Layer<double> l(scfg); }, "dt_min");
  cfg.N = 8;
  cfg.method = Discretization::mamba;
  expect_error([&] { ssm::S4DLayer<float> l(cfg); }, "method");

  const auto p = legs_dplr(8, 2, 1);
  expect_error([&] { ssm::s4::s4_kernel_cauchy<double>(p, 0); }, "'L'");
  auto bad = p;
  bad.B = Eigen::MatrixXcd::Ones(2, 3);
  expect_error([&] { ssm::s4::s4_kernel_cauchy<double>(bad, 16); }, "'B'");
  bad = p;
  bad.Delta = Eigen::VectorXd::Ones(3);
  expect_error([&] { ssm::s4::s4_kernel_powers(bad, 16); }, "'Delta'");
  bad = p;
  bad.Delta(1) = -1;
  expect_error([&] { ssm::s4::s4_truncate_C(bad, 16); }, "'Delta'");
  bad = p;
  bad.C(0, 0) = cd(std::nan(""), 0);
  expect_error([&] { ssm::s4::s4_kernel_cauchy<float>(bad, 16); }, "'C'");

  ssm::s4::DiagonalSSM q{p.Lambda, p.B, p.C, p.Delta};
  expect_error([&] { ssm::s4::s4d_kernel_vandermonde<double>(q, 0, Discretization::zoh); }, "'L'");
  expect_error([&] { ssm::s4::s4d_kernel_vandermonde<double>(q, 8, Discretization::mamba); }, "method");
  q.C = Eigen::MatrixXcd::Ones(1, 4);
  expect_error([&] { ssm::s4::s4d_kernel_vandermonde<double>(q, 8, Discretization::zoh); }, "'C'");

  ssm::S4DLayer<float>::Config ok;
  ok.h = 2;
  ok.N = 4;
  ssm::S4DLayer<float> layer(ok);
  std::vector<float> x(8), y(8);
  expect_error([&] { layer.forward(x.data(), y.data(), 1, 0); }, "'l'");
  auto state = layer.initial_state(2);
  expect_error([&] { layer.forward(x.data(), y.data(), 1, 4, state); }, "batch");
  ssm::S4Layer<float>::Config dcfg;
  dcfg.N = 4;
  dcfg.h = 2;
  dcfg.l_max = 8;
  dcfg.step_form = ssm::StepForm::dense;
  ssm::S4Layer<float> dense(dcfg);
  auto dense_state = dense.initial_state(1);
  expect_error([&] { layer.step(x.data(), y.data(), dense_state); }, "'state'");
  dcfg.step_form = ssm::StepForm::diagonal;
  ssm::S4Layer<float> diag(dcfg);
  auto diag_state = diag.initial_state(1);
  expect_error([&] { diag.forward(x.data(), y.data(), 1, 4, diag_state); }, "linear");
  expect_error([&] { dense.step(x.data(), y.data(), diag_state); }, "'state'");
  std::stringstream junk("not a state at all");
  expect_error([&] { ssm::S4State<float>::load(junk); }, "magic");
  std::vector<float> z(3);
  expect_error([&] { ssm::causal_conv_fft(z.data(), z.data(), z.data(), 0); }, "'l'");
}

// ---- the ops under the layers: long_conv and glu (their paths against their references: the conformance registry) --

TEST(LongConvOp, BadArgumentsAreNamed) {
  using ssm::TensorView;
  const long b = 2, l = 5, h = 3;
  std::vector<float> x(b * l * h), K(h * (l + 1)), D(h), y(b * l * h);
  std::vector<double> Kd(h * l);
  const TensorView xv = TensorView::of(x.data(), {b, l, h}), yv = TensorView::of(y.data(), {b, l, h});
  const TensorView Kv = TensorView::of(K.data(), {h, l}), Dv = TensorView::of(D.data(), {h});
  EXPECT_EQ(ssm::long_conv_into({xv, Kv, Dv}, yv), "cpu");
  EXPECT_EQ(ssm::long_conv_into({xv, TensorView::of(K.data(), {h, l + 1}), Dv}, yv), "cpu");  // a longer filter
  expect_error([&] { ssm::long_conv_into({TensorView::of(x.data(), {b * l, h}), Kv, Dv}, yv); }, "argument 'x'");
  expect_error([&] { ssm::long_conv_into({xv, TensorView::of(K.data(), {h - 1, l}), Dv}, yv); }, "argument 'K'");
  expect_error([&] { ssm::long_conv_into({xv, TensorView::of(K.data(), {h, l - 1}), Dv}, yv); },
               {"argument 'K'", "at least l = 5 taps"});
  expect_error([&] { ssm::long_conv_into({xv, TensorView::of(Kd.data(), {h, l}), Dv}, yv); }, "argument 'K'");
  expect_error([&] { ssm::long_conv_into({xv, Kv, TensorView::of(D.data(), {h - 1})}, yv); }, "argument 'D'");
  expect_error([&] { ssm::long_conv_into({xv, Kv, Dv}, TensorView::of(y.data(), {b, l - 1, h})); }, "argument 'y'");
  // y over x (or over K, D) would read inputs already overwritten.
  expect_error([&] { ssm::long_conv_into({xv, Kv, Dv}, xv); }, {"argument 'y'", "must not overlap 'x'"});
  std::vector<float> buf(h * l + b * l * h);  // K (h, l), then y starting on K's last tap
  const TensorView K_in = TensorView::of(buf.data(), {h, l});
  const TensorView y_on_K = TensorView::of(buf.data() + h * l - 1, {b, l, h});
  expect_error([&] { ssm::long_conv_into({xv, K_in, Dv}, y_on_K); }, {"argument 'y'", "must not overlap 'K'"});
  EXPECT_EQ(ssm::long_conv_into({xv, K_in, Dv}, TensorView::of(buf.data() + h * l, {b, l, h})), "cpu");  // adjacent
  ssm::LongConvOptions bad;
  bad.activation = static_cast<ssm::LongConvActivation>(7);
  expect_error([&] { ssm::long_conv_into({xv, Kv, Dv}, yv, bad); }, "argument 'activation'");
  bad = {};
  bad.threads = -1;
  expect_error([&] { ssm::long_conv_into({xv, Kv, Dv}, yv, bad); }, "argument 'threads'");
  // An output with elements sharing memory (a zero stride) would be written twice at once.
  expect_error([&] { ssm::long_conv_into({xv, Kv, Dv}, TensorView(y.data(), ssm::DType::f32, ssm::Device::cpu(),
                                                                  {b, l, h}, {l * h, 0, 1})); },
               {"argument 'y'", "elements sharing memory"});
  // A CUDA view among CPU ones is refused by its device; all on CUDA with no CUDA backend linked (this program links
  // none), the error says what to link. Neither reads the memory.
  using ssm_test::on_cuda;
  expect_error([&] { ssm::long_conv_into({on_cuda(xv), Kv, Dv}, yv); }, {"argument 'K'", "is on cpu"});
  expect_error([&] { ssm::long_conv_into({on_cuda(xv), on_cuda(Kv), on_cuda(Dv)}, on_cuda(yv)); },
               "link the CMake target ssm::cuda");
}

TEST(GluOp, InPlaceEqualsASeparateOutputAndBadArgumentsAreNamed) {
  using ssm::TensorView;
  const long rows = 4, h = 3;
  std::vector<double> z(rows * 2 * h), y(rows * h);
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> dist(-3, 3);
  for (double& v : z) v = dist(rng);
  const TensorView zv = TensorView::of(z.data(), {rows, 2 * h});
  EXPECT_EQ(ssm::glu_into(zv, TensorView::of(y.data(), {rows, h})), "cpu");
  for (long r = 0; r < rows; ++r)
    for (long c = 0; c < h; ++c)
      EXPECT_DOUBLE_EQ(y[r * h + c], z[r * 2 * h + c] / (1 + std::exp(-z[r * 2 * h + h + c])));
  // In place: y is z's first half (the same data and row stride).
  const TensorView first_half(z.data(), ssm::DType::f64, ssm::Device::cpu(), {rows, h}, {2 * h, 1});
  EXPECT_EQ(ssm::glu_into(zv, first_half), "cpu");
  for (long r = 0; r < rows; ++r)
    for (long c = 0; c < h; ++c) EXPECT_EQ(z[r * 2 * h + c], y[r * h + c]);
  expect_error([&] { ssm::glu_into(TensorView::of(z.data(), {rows, 2 * h - 1}), TensorView::of(y.data(), {rows, h})); },
               {"argument 'z'", "even last dimension"});
  expect_error([&] { ssm::glu_into(zv, TensorView::of(y.data(), {rows, h + 1})); }, "argument 'y'");
  // In place over z rows that overlap (a row stride under 2h) would gate one row's outputs with another's values.
  const TensorView tight_z(z.data(), ssm::DType::f64, ssm::Device::cpu(), {rows, 2 * h}, {h, 1});
  const TensorView tight_y(z.data(), ssm::DType::f64, ssm::Device::cpu(), {rows, h}, {h, 1});
  expect_error([&] { ssm::glu_into(tight_z, tight_y); }, {"argument 'y'", "in place needs z's rows apart"});
  // Any other overlap with z is refused.
  const TensorView shifted(z.data() + 1, ssm::DType::f64, ssm::Device::cpu(), {rows, h}, {2 * h, 1});
  expect_error([&] { ssm::glu_into(zv, shifted); }, {"argument 'y'", "must not overlap 'z'"});
  std::vector<float> yf(rows * h);
  expect_error([&] { ssm::glu_into(zv, TensorView::of(yf.data(), {rows, h})); }, "argument 'y'");
}

}  // namespace
