// Tests of discretization (ssm/math/discretize.hpp): closed forms, scipy reference data, singular A, the GBT
// family, the diagonal fast path, and bad input.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 AVX-512 false positive (ssm/core/macros.hpp)
#endif
#include <gtest/gtest.h>

#include "continuous_eigen_extern.hpp"  // the heavy Eigen templates, compiled once in continuous_eigen_instantiations.cpp

#include <cmath>
#include <complex>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "ssm/math/discretize.hpp"
#include "ssm/math/hippo.hpp"

#include "continuous_test_util.hpp"
namespace {

using namespace ssm;
using namespace ssm_test;
using Eigen::MatrixXd;
using Eigen::VectorXd;
using cd = std::complex<double>;

// ---- discretization: closed forms ----------------------------------------------------------------------------

TEST(Discretize, ScalarDecayClosedForm) {
  // h' = -a h + b x: ZOH A_bar = e^{-aΔ}, B_bar = b (1 - e^{-aΔ}) / a; bilinear (1 - aΔ/2)/(1 + aΔ/2), Δ b/(1 + aΔ/2).
  // Tolerance 1e-14 relative, widened to 4 eps |aΔ| for ZOH's A_bar: scaling and squaring squares s ~ log2|aΔ|
  // times, which multiplies the relative error by ~|aΔ| (e^{-111} comes out with 5e-14).
  for (double a : {0.1, 1.0, 37.0})
    for (double Delta : {1e-3, 0.25, 3.0}) {
      const double b = 1.7;
      const MatrixXd A{{-a}}, B{{b}};
      const auto z = discretize_zoh<double>(A, B, Delta);
      EXPECT_NEAR(z.A_bar(0, 0), std::exp(-a * Delta), std::max(1e-14, 9e-16 * a * Delta) * std::exp(-a * Delta));
      const double B_zoh = b * -std::expm1(-a * Delta) / a;
      EXPECT_NEAR(z.B_bar(0, 0), B_zoh, 1e-14 * B_zoh) << a << " " << Delta;
      const auto t = discretize_bilinear<double>(A, B, Delta);
      EXPECT_NEAR(t.A_bar(0, 0), (1 - a * Delta / 2) / (1 + a * Delta / 2), 1e-14);
      EXPECT_NEAR(t.B_bar(0, 0), Delta * b / (1 + a * Delta / 2), 1e-14 * Delta * b);
    }
}

TEST(Discretize, DampedOscillatorClosedForm) {
  const Oscillator osc;
  const MatrixXd I = MatrixXd::Identity(2, 2);
  for (double Delta : {0.01, 0.4, 2.5}) {
    const auto z = discretize_zoh<double>(osc.A(), osc.B(), Delta);
    const MatrixXd E = osc.exp_At(Delta);
    EXPECT_LE(rel(z.A_bar, E), 1e-13) << Delta;
    EXPECT_LE(rel(z.B_bar, osc.A_inv() * (E - I) * osc.B()), 1e-12) << Delta;
    // Bilinear with the explicit 2x2 inverse (adjugate / determinant).
    const MatrixXd L = I - Delta / 2 * osc.A();
    const MatrixXd L_inv = MatrixXd{{L(1, 1), -L(0, 1)}, {-L(1, 0), L(0, 0)}} / (L(0, 0) * L(1, 1) - L(0, 1) * L(1, 0));
    const auto t = discretize_bilinear<double>(osc.A(), osc.B(), Delta);
    EXPECT_LE(rel(t.A_bar, L_inv * (I + Delta / 2 * osc.A())), 1e-14) << Delta;
    EXPECT_LE(rel(t.B_bar, L_inv * Delta * osc.B()), 1e-14) << Delta;
  }
}

TEST(Discretize, MatchesScipyCont2Discrete) {
  // tests/data/continuous/discretize_reference.json from tools/gen_discretize_reference.py (scipy 1.10
  // cont2discrete). Relative error (Frobenius) <= 1e-12: both sides are backward stable to ~1e-15 and the
  // systems are well conditioned (the bound).
  std::ifstream in(std::string(SSM_TEST_DATA_DIR) + "/continuous/discretize_reference.json");
  ASSERT_TRUE(in.good());
  const nlohmann::json ref = nlohmann::json::parse(in);
  auto to_matrix = [](const nlohmann::json& j) {
    MatrixXd M(j.size(), j[0].size());
    for (size_t r = 0; r < j.size(); ++r)
      for (size_t c = 0; c < j[r].size(); ++c) M(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c)) = j[r][c];
    return M;
  };
  int count = 0;
  double worst = 0;
  for (const auto& sys : ref.at("systems")) {
    const MatrixXd A = to_matrix(sys.at("A")), B = to_matrix(sys.at("B"));
    for (const auto& c : sys.at("cases")) {
      const std::string method = c.at("method");
      const double Delta = c.at("Delta"), alpha = c.at("alpha");
      DiscreteSystem<double> d;
      if (method == "zoh") d = discretize_zoh<double>(A, B, Delta);
      else if (method == "bilinear") d = discretize_bilinear<double>(A, B, Delta);
      else if (method == "euler") d = discretize_forward_euler<double>(A, B, Delta);
      else if (method == "backward_diff") d = discretize_backward_euler<double>(A, B, Delta);
      else if (method == "gbt") d = discretize_gbt<double>(A, B, Delta, alpha);
      else FAIL() << "unknown method " << method;
      const double e = std::max(rel(d.A_bar, to_matrix(c.at("A_bar"))), rel(d.B_bar, to_matrix(c.at("B_bar"))));
      worst = std::max(worst, e);
      EXPECT_LE(e, 1e-12) << method << " n = " << A.rows() << " Delta = " << Delta;
      ++count;
    }
  }
  EXPECT_EQ(count, 75);
  RecordProperty("worst_relative_error", sci(worst));
  std::printf("[ scipy ] %d cases, worst relative error %s\n", count, sci(worst).c_str());
}

TEST(Discretize, ZOHOnSingularAIsExact) {
  // Integrator h' = x: A_bar = 1, B_bar = Δ.  Double integrator: A_bar = [[1, Δ], [0, 1]], B_bar = (Δ²/2, Δ).
  for (double Delta : {1e-3, 0.5, 7.0}) {
    const auto i1 = discretize_zoh<double>(MatrixXd{{0.0}}, MatrixXd{{1.0}}, Delta);
    EXPECT_NEAR(i1.A_bar(0, 0), 1.0, 1e-15);
    EXPECT_NEAR(i1.B_bar(0, 0), Delta, 1e-15 * Delta);
    const auto i2 = discretize_zoh<double>(MatrixXd{{0, 1}, {0, 0}}, MatrixXd{{0}, {1}}, Delta);
    ASSERT_TRUE(i2.A_bar.allFinite() && i2.B_bar.allFinite());
    EXPECT_LE(rel(i2.A_bar, MatrixXd{{1, Delta}, {0, 1}}), 1e-15);
    EXPECT_LE(rel(i2.B_bar, MatrixXd{{Delta * Delta / 2}, {Delta}}), 1e-15);
  }
}

TEST(Discretize, GBTFamilyEndpoints) {
  // GBT(0), GBT(1/2), GBT(1) against forward Euler, bilinear and backward Euler written out with explicit
  // inverses (a different code path from the LU solve in discretize_gbt). 1e-13: condition numbers are O(10).
  std::mt19937 rng(7);
  const MatrixXd A = random_stable(5, rng), B = random_matrix(5, 2, rng);
  const MatrixXd I = MatrixXd::Identity(5, 5);
  const double Delta = 0.21;
  const auto g0 = discretize_gbt<double>(A, B, Delta, 0.0);
  EXPECT_LE(rel(g0.A_bar, I + Delta * A), 1e-15);
  EXPECT_LE(rel(g0.B_bar, Delta * B), 1e-15);
  const auto g5 = discretize_gbt<double>(A, B, Delta, 0.5);
  const MatrixXd Lh = (I - Delta / 2 * A).inverse();
  EXPECT_LE(rel(g5.A_bar, Lh * (I + Delta / 2 * A)), 1e-13);
  EXPECT_LE(rel(g5.B_bar, Lh * Delta * B), 1e-13);
  const auto g1 = discretize_gbt<double>(A, B, Delta, 1.0);
  const MatrixXd L1 = (I - Delta * A).inverse();
  EXPECT_LE(rel(g1.A_bar, L1), 1e-13);
  EXPECT_LE(rel(g1.B_bar, L1 * Delta * B), 1e-13);
  // The named rules are those members of the family.
  EXPECT_EQ(rel(discretize_forward_euler<double>(A, B, Delta).A_bar, g0.A_bar), 0.0);
  EXPECT_EQ(rel(discretize_bilinear<double>(A, B, Delta).A_bar, g5.A_bar), 0.0);
  EXPECT_EQ(rel(discretize_backward_euler<double>(A, B, Delta).A_bar, g1.A_bar), 0.0);
  // Mamba: A_bar as ZOH, B_bar = Δ B.
  const auto mb = discretize_mamba<double>(A, B, Delta);
  EXPECT_LE(rel(mb.A_bar, discretize_zoh<double>(A, B, Delta).A_bar), 1e-14);
  EXPECT_LE(rel(mb.B_bar, Delta * B), 1e-16);
  // Batched over Δ: each entry equals the single call.
  const std::vector<double> Deltas{0.01, 0.3, 2.0};
  const auto many = discretize_many<double>(Discretization::zoh, A, B, Deltas);
  ASSERT_EQ(many.size(), 3u);
  for (size_t k = 0; k < 3; ++k) EXPECT_EQ(rel(many[k].A_bar, discretize_zoh<double>(A, B, Deltas[k]).A_bar), 0.0);
}

TEST(Discretize, DiagonalMatchesDenseAndTheLimitAtZero) {
  // Real and complex diagonal A against the dense block exponential on diag(A) (1e-13), the A -> 0 limit
  // (exactly Δ B at A = 0) and expm1 accuracy for |ΔA| ~ 1e-10, where (exp(z) - 1)/z loses ~6 digits.
  const std::vector<double> Deltas{1e-3, 0.1, 1.0, 4.0};  // (l)
  Eigen::VectorXcd A(5), B(5);                             // (n)
  A << cd(-0.5, 3.0), cd(-0.5, -3.0), cd(-2.0, 0.0), cd(0.0, 0.0), cd(-1e-10, 1e-10);
  B << cd(1, 0.5), cd(1, -0.5), cd(-0.3, 0), cd(2, 0), cd(0.7, 0.1);
  for (auto method : {Discretization::zoh, Discretization::bilinear, Discretization::backward_euler,
                      Discretization::forward_euler, Discretization::mamba}) {
    const auto diag = discretize_diagonal<cd>(method, A, B, Deltas);
    ASSERT_EQ(diag.A_bar.rows(), 4);
    ASSERT_EQ(diag.A_bar.cols(), 5);
    for (size_t k = 0; k < Deltas.size(); ++k) {
      const auto dense =
          discretize<cd>(method, Eigen::MatrixXcd(A.asDiagonal()), Eigen::MatrixXcd(B), Deltas[k]);  // B as (n, 1)
      for (int i = 0; i < 5; ++i) {
        EXPECT_LE(std::abs(diag.A_bar(k, i) - dense.A_bar(i, i)), 1e-13 * std::abs(dense.A_bar(i, i))) << name(method);
        EXPECT_LE(std::abs(diag.B_bar(k, i) - dense.B_bar(i, 0)), 1e-13 * std::abs(dense.B_bar(i, 0))) << name(method);
      }
    }
  }
  const auto zoh = discretize_diagonal<cd>(Discretization::zoh, A, B, Deltas);
  for (size_t k = 0; k < Deltas.size(); ++k) {
    EXPECT_EQ(zoh.B_bar(k, 3), Deltas[k] * B(3));  // A = 0: the limit Δ B, exactly
    const cd z = Deltas[k] * A(4);
    const cd series = 1.0 + z / 2.0 + z * z / 6.0;  // (e^z - 1)/z to O(z^3) = 1e-30
    EXPECT_LE(std::abs(zoh.B_bar(k, 4) - Deltas[k] * series * B(4)), 2e-16 * std::abs(Deltas[k] * B(4)));
  }
  // Real diagonal (S4D-Real) and the (d, n) x (d, l) batched form.
  const VectorXd Ar = hippo::s4d_real(3), Br = VectorXd::Ones(3);
  const MatrixXd Arows = Ar.transpose().replicate(2, 1), Brows = Br.transpose().replicate(2, 1);  // (d, n)
  const MatrixXd Delta_dl{{0.1, 0.2, 0.3}, {1.0, 2.0, 3.0}};                                       // (d, l)
  const auto per_channel = discretize_diagonal<double>(Discretization::zoh, Arows, Brows, Delta_dl);
  ASSERT_EQ(per_channel.size(), 2u);
  for (int c = 0; c < 2; ++c)
    for (int k = 0; k < 3; ++k)
      for (int i = 0; i < 3; ++i) {
        EXPECT_NEAR(per_channel[c].A_bar(k, i), std::exp(Delta_dl(c, k) * Ar(i)), 1e-15);
        EXPECT_NEAR(per_channel[c].B_bar(k, i), std::expm1(Delta_dl(c, k) * Ar(i)) / Ar(i), 1e-15);
      }
}

// ---- bad input -----------------------------------------------------------------------------------------------

TEST(ContinuousErrors, DiscretizeBadInputThrowsNamingTheArgument) {
  const MatrixXd A = MatrixXd{{-1, 0}, {1, -2}}, B = MatrixXd::Ones(2, 1);
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  expect_error([&] { discretize_zoh<double>(MatrixXd::Ones(2, 3), MatrixXd::Ones(2, 1), 0.1); }, "'A'");
  expect_error([&] { discretize_zoh<double>(A, MatrixXd::Ones(3, 1), 0.1); }, "'B'");
  for (double bad : {0.0, -0.1, nan, inf}) {
    expect_error([&] { discretize_zoh<double>(A, B, bad); }, "'Delta'");
    expect_error([&] { discretize_bilinear<double>(A, B, bad); }, "'Delta'");
    expect_error([&] { discretize_mamba<double>(A, B, bad); }, "'Delta'");
  }
  for (double bad : {-0.01, 1.5, nan})
    expect_error([&] { discretize_gbt<double>(A, B, 0.1, bad); }, "'alpha'");
  expect_error([&] { discretize_zoh<double>(MatrixXd{{nan, 0}, {0, 1}}, B, 0.1); }, "finite");
  // I - αΔA singular: an eigenvalue of A at 1/(αΔ) (0.1 * 10 rounds to exactly 1).
  expect_error([&] { discretize_backward_euler<double>(MatrixXd{{10.0}}, MatrixXd{{1.0}}, 0.1); }, "singular");
  expect_error(
      [&] { discretize_gbt<double>(MatrixXd{{-1.0, 0.0}, {0.0, 20.0}}, MatrixXd::Ones(2, 1), 0.1, 0.5); }, "singular");
  // Diagonal
  const Eigen::VectorXcd Ad = hippo::s4d_lin(4), Bd = Eigen::VectorXcd::Ones(3);
  const std::vector<double> ok{0.1}, bad{0.1, -1.0};
  expect_error([&] { discretize_diagonal<cd>(Discretization::zoh, Ad, Bd, ok); }, "'B'");
  expect_error([&] { discretize_diagonal<cd>(Discretization::zoh, Ad, Eigen::VectorXcd(Ad), bad); }, "'Delta'");
  expect_error(
      [&] { discretize_diagonal<cd>(Discretization::gbt, Ad, Eigen::VectorXcd(Ad), ok, 2.0); }, "'alpha'");
}

}  // namespace
