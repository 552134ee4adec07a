// Tests of the LSSL's recurrent and convolutional views (ssm/layers/lssl.hpp) against each other and against the
// continuous view, for float, double and complex<double> (the S4D-Lin diagonal, also against the diagonal path).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 AVX-512 false positive (ssm/core/macros.hpp)
#endif
#include <gtest/gtest.h>

#include "continuous_eigen_extern.hpp"  // the heavy Eigen templates, compiled once in continuous_eigen_instantiations.cpp

#include <cmath>
#include <complex>
#include <cstdio>
#include <random>
#include <vector>

#include "ssm/layers/lssl.hpp"
#include "ssm/math/discretize.hpp"
#include "ssm/math/hippo.hpp"

#include "continuous_test_util.hpp"
namespace {

using namespace ssm;
using namespace ssm_test;
using Eigen::MatrixXd;
using Eigen::VectorXd;
using cd = std::complex<double>;

// ---- the LSSL's three views ----------------------------------------------------------------------------------

template <class T>
struct Tol;
// double: the views differ only in rounding order; measured 1.8e-15 (convolution) and 2.1e-16 (continuous)
// over 3000 steps; the bound is the 1e-9.
template <>
struct Tol<double> {
  static constexpr double views = 1e-9;
};
// float: eps = 6e-8, A_bar / B_bar rounded once to float and up to 3000 accumulated kernel terms; measured
// 1.0e-6 (convolution) and 1.3e-6 (continuous, computed in double) relative; bound 2e-5.
template <>
struct Tol<float> {
  static constexpr double views = 2e-5;
};

template <class T>
class LSSLViews : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(LSSLViews, Scalars);

TYPED_TEST(LSSLViews, RecurrenceConvolutionAndContinuousAgree) {
  using T = TypeParam;
  using M = typename LSSL<T>::Matrix;
  std::mt19937 rng(11);
  const int n = 6, m = 2, p = 3, l = 3000;
  const MatrixXd A = random_stable(n, rng);
  const LSSL<T> lssl(A.cast<T>(), random_matrix(n, m, rng).cast<T>(), random_matrix(p, n, rng).cast<T>(),
                     random_matrix(p, m, rng).cast<T>());
  const M x = random_matrix(l, m, rng).cast<T>();  // (l, m)
  const double Delta = 0.01;
  const auto sys = lssl.discretize(Delta);
  const M y_rec = lssl.recurrence(sys, x);                    // (l, p)
  const M y_conv = lssl.convolution(lssl.kernel(sys, l), x);  // (l, p)
  const std::vector<double> Deltas(l, Delta);
  const M y_cont = lssl.simulate(x, Deltas);  // (l, p)
  const double tol = Tol<T>::views;
  const double e_conv = rel(y_conv.template cast<double>(), y_rec.template cast<double>());
  const double e_cont = rel(y_cont.template cast<double>(), y_rec.template cast<double>());
  EXPECT_LE(e_conv, tol);
  EXPECT_LE(e_cont, tol);
  std::printf("[ views ] %s: convolution vs recurrence %s, continuous vs recurrence %s\n",
              sizeof(T) == 4 ? "float" : "double", sci(e_conv).c_str(), sci(e_cont).c_str());
  // step() one at a time equals the sequence recurrence.
  typename LSSL<T>::Vector h = LSSL<T>::Vector::Zero(n);
  M y_step(l, p);
  for (int k = 0; k < l; ++k) y_step.row(k) = lssl.step(sys, h, x.row(k).transpose()).transpose();
  EXPECT_LE(rel(y_step.template cast<double>(), y_rec.template cast<double>()), tol);
  // Bilinear: recurrence vs convolution (the continuous view is exact ZOH, so it is not compared here).
  const auto sys_b = lssl.discretize(Delta, Discretization::bilinear);
  EXPECT_LE(rel(lssl.convolution(lssl.kernel(sys_b, l), x).template cast<double>(),
                lssl.recurrence(sys_b, x).template cast<double>()),
            tol);
  // A plausible bug (off-by-one kernel) must be caught: shift the kernel and the agreement breaks.
  auto K_shift = lssl.kernel(sys, l + 1);
  K_shift.erase(K_shift.begin());
  EXPECT_GT(rel(lssl.convolution(K_shift, x).template cast<double>(), y_rec.template cast<double>()), 1e-3);
}

TEST(LSSL, ComplexDiagonalViewsAgreeAndMatchTheDiagonalPath) {
  // LSSL<complex<double>> with the S4D-Lin diagonal: the three views agree (1e-9 relative, as for double), and
  // the dense ZOH of diag(Λ) equals the elementwise diagonal path (1e-13).
  using ML = LSSL<cd>::Matrix;
  const int n = 4, l = 2000;
  const Eigen::VectorXcd Lambda = hippo::s4d_lin(2 * n);  // (n)
  std::mt19937 rng(13);
  const ML B = random_matrix(n, 1, rng).cast<cd>() + cd(0, 1) * random_matrix(n, 1, rng).cast<cd>();  // (n, 1)
  const ML C = random_matrix(2, n, rng).cast<cd>() + cd(0, 1) * random_matrix(2, n, rng).cast<cd>();  // (2, n)
  const LSSL<cd> lssl(ML(Lambda.asDiagonal()), B, C, ML::Zero(2, 1));
  const ML x = random_matrix(l, 1, rng).cast<cd>();  // (l, 1)
  const double Delta = 0.02;
  const auto sys = lssl.discretize(Delta);
  const ML y_rec = lssl.recurrence(sys, x);
  const auto crel = [](const ML& a, const ML& b) { return (a - b).norm() / b.norm(); };
  EXPECT_LE(crel(lssl.convolution(lssl.kernel(sys, l), x), y_rec), 1e-9);
  EXPECT_LE(crel(lssl.simulate(x, std::vector<double>(l, Delta)), y_rec), 1e-9);
  const std::vector<double> one{Delta};
  const auto diag = discretize_diagonal<cd>(Discretization::zoh, Lambda, Eigen::VectorXcd(B), one);
  for (int i = 0; i < n; ++i) {
    EXPECT_LE(std::abs(sys.A_bar(i, i) - diag.A_bar(0, i)), 1e-13);
    EXPECT_LE(std::abs(sys.B_bar(i, 0) - diag.B_bar(0, i)), 1e-13 * std::abs(diag.B_bar(0, i)));
  }
}

}  // namespace

// ---- gradients ------------------------------------------------------------------------------------------------

namespace {

// LSSL::recurrence_backward against central differences of L = Σ y ⊙ R (double): x, C, D and the trainable Δ, for
// every discretization rule (HiPPO-LegS A, n = 4; m = 2 inputs, p = 3 outputs, l = 9).
TEST(LSSL, RecurrenceBackwardMatchesCentralDifferences) {
  std::mt19937 rng(31);
  const int n = 4, m = 2, p = 3, l = 9;
  const MatrixXd A = hippo::transition(hippo::Measure::legs, n).A;
  MatrixXd C = random_matrix(p, n, rng), D = random_matrix(p, m, rng), x = random_matrix(l, m, rng);
  const MatrixXd B = random_matrix(n, m, rng), R = random_matrix(l, p, rng);
  struct Rule {
    Discretization method;
    double alpha;
  };
  for (const Rule& r : {Rule{Discretization::zoh, 0.5}, Rule{Discretization::bilinear, 0.5},
                        Rule{Discretization::gbt, 0.3}, Rule{Discretization::forward_euler, 0.5},
                        Rule{Discretization::backward_euler, 0.5}, Rule{Discretization::mamba, 0.5}}) {
    SCOPED_TRACE(name(r.method));
    double Delta = 0.3;
    auto loss = [&] {
      const LSSL<double> lssl(A, B, C, D);
      return lssl.recurrence(lssl.discretize(Delta, r.method, r.alpha), x).cwiseProduct(R).sum();
    };
    const LSSL<double> lssl(A, B, C, D);
    const auto g = lssl.recurrence_backward(Delta, r.method, x, R, r.alpha);
    auto check = [&](const char* what, MatrixXd& M, const MatrixXd& grad) {
      SCOPED_TRACE(what);
      ASSERT_EQ(grad.rows(), M.rows());
      ASSERT_EQ(grad.cols(), M.cols());
      double err = 0;
      for (Eigen::Index i = 0; i < M.size(); ++i) {
        const double v = M.data()[i];
        M.data()[i] = v + 1e-6;
        const double up = loss();
        M.data()[i] = v - 1e-6;
        const double down = loss();
        M.data()[i] = v;
        err = std::max(err, std::abs((up - down) / 2e-6 - grad.data()[i]));
      }
      EXPECT_GT(grad.cwiseAbs().maxCoeff(), 0.0);
      EXPECT_LE(err, 1e-7 * std::max(1.0, grad.cwiseAbs().maxCoeff()));
    };
    check("x", x, g.grad_x);
    check("C", C, g.grad_C);
    check("D", D, g.grad_D);
    Delta = 0.3 + 1e-6;
    const double up = loss();
    Delta = 0.3 - 1e-6;
    const double down = loss();
    Delta = 0.3;
    EXPECT_NE(g.grad_Delta, 0.0);
    EXPECT_NEAR((up - down) / 2e-6, g.grad_Delta, 1e-7 * std::max(1.0, std::abs(g.grad_Delta)));
  }
  // Bad input: grad_y's shape, a Δ that is not positive.
  const LSSL<double> lssl(A, B, C, D);
  EXPECT_THROW(lssl.recurrence_backward(0.3, Discretization::zoh, x, MatrixXd::Zero(l, p + 1)), ssm::Error);
  EXPECT_THROW(lssl.recurrence_backward(-1.0, Discretization::zoh, x, R), ssm::Error);
}

}  // namespace
