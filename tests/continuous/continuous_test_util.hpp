// Helpers shared by the continuous-time tests (test_discretize.cpp, test_lssl_views.cpp, test_lssl_continuous.cpp):
// random systems, a relative error, a damped oscillator with its closed-form exponential, and an error matcher.
#pragma once
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 AVX-512 false positive (ssm/core/macros.hpp)
#endif
#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <cstdio>
#include <random>
#include <string>

#include <Eigen/Dense>

#include "ssm/core/error.hpp"
#include "support/expect_error.hpp"

namespace ssm_test {

using Eigen::MatrixXd;

inline double rel(const MatrixXd& x, const MatrixXd& ref) { return (x - ref).norm() / ref.norm(); }

inline std::string sci(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3e", v);
  return buf;
}

inline MatrixXd random_stable(int n, std::mt19937& rng) {
  std::normal_distribution<double> N01;
  MatrixXd A(n, n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) A(i, j) = N01(rng);
  Eigen::EigenSolver<MatrixXd> es(A);
  const double shift = es.eigenvalues().real().maxCoeff() + 0.3;
  return A - shift * MatrixXd::Identity(n, n);  // spectrum in Re <= -0.3
}

inline MatrixXd random_matrix(int r, int c, std::mt19937& rng) {
  std::normal_distribution<double> N01;
  MatrixXd M(r, c);
  for (int i = 0; i < r; ++i)
    for (int j = 0; j < c; ++j) M(i, j) = N01(rng);
  return M;
}

// Damped oscillator x'' + 2 ζ ω0 x' + ω0² x = u as h = (x, x'): closed-form matrix exponential.
struct Oscillator {
  double omega0 = 2.3, zeta = 0.15;
  MatrixXd A() const { return MatrixXd{{0, 1}, {-omega0 * omega0, -2 * zeta * omega0}}; }
  MatrixXd B() const { return MatrixXd{{0}, {1}}; }
  MatrixXd exp_At(double t) const {  // (2, 2)
    const double sigma = zeta * omega0, omega_d = omega0 * std::sqrt(1 - zeta * zeta);
    const double e = std::exp(-sigma * t), c = std::cos(omega_d * t), s = std::sin(omega_d * t);
    return e * MatrixXd{{c + sigma / omega_d * s, s / omega_d}, {-omega0 * omega0 / omega_d * s, c - sigma / omega_d * s}};
  }
  MatrixXd A_inv() const {
    return MatrixXd{{-2 * zeta / omega0, -1 / (omega0 * omega0)}, {1, 0}};
  }
};


}  // namespace ssm_test
