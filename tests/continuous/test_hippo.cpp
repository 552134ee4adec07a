// Tests of ssm::hippo: the HiPPO transitions (structure of each measure), the NPLR form of LegS
// (reconstruction, unitarity, eigenvalues checked against a general eigensolver), the DPLR half with its
// conjugate-pair convention, the S4D initializations, and the bad-input errors.
// GCC 12 + AVX-512: false-positive -Wmaybe-uninitialized inside Eigen's vectorized kernels (ssm/core/macros.hpp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <gtest/gtest.h>

#include "continuous_eigen_extern.hpp"  // the heavy Eigen templates, compiled once in continuous_eigen_instantiations.cpp

#include <Eigen/Eigenvalues>
#include <algorithm>
#include <cmath>
#include <numbers>

#include "ssm/math/hippo.hpp"

namespace {

using namespace ssm;
using cd = std::complex<double>;

Eigen::VectorXd rank_correction(int N) {
  Eigen::VectorXd p(N);  // (n)
  for (int n = 0; n < N; ++n) p(n) = std::sqrt(n + 0.5);
  return p;
}

TEST(Hippo, LegSMatchesTheS4Construction) {
  // s4 builds LegS as T M T^{-1} with M_nk = -(2k+1) (n > k), -(n+1) (n = k), T = diag(sqrt(2n+1)): an
  // independent route to the same matrix as the closed form in transition().
  for (int N : {1, 2, 5, 16}) {
    Eigen::MatrixXd M = Eigen::MatrixXd::Zero(N, N);  // (n, n)
    Eigen::VectorXd t(N);                             // (n)
    for (int n = 0; n < N; ++n) {
      for (int k = 0; k < n; ++k) M(n, k) = -(2.0 * k + 1);
      M(n, n) = -(n + 1.0);
      t(n) = std::sqrt(2.0 * n + 1);
    }
    const Eigen::MatrixXd A_ref = t.asDiagonal() * M * t.cwiseInverse().asDiagonal();  // (n, n)
    const hippo::Transition tr = hippo::transition(hippo::Measure::legs, N);
    EXPECT_LE((tr.A - A_ref).norm(), 1e-13 * A_ref.norm()) << "N = " << N;
    EXPECT_LE((tr.B - t).norm(), 1e-15 * t.norm()) << "N = " << N;
  }
}

TEST(Hippo, LegSPlusRankOneIsHalfIdentityPlusSkew) {
  const int N = 33;
  const hippo::Transition tr = hippo::transition(hippo::Measure::legs, N);
  const Eigen::VectorXd p = rank_correction(N);
  const Eigen::MatrixXd AP = tr.A + p * p.transpose();  // (n, n)
  const Eigen::MatrixXd sym = AP + AP.transpose();      // (n, n)  must be -I
  EXPECT_LE((sym + Eigen::MatrixXd::Identity(N, N)).norm(), 1e-12 * tr.A.norm());
  // B is sqrt(2) p for LegS
  EXPECT_LE((tr.B - std::numbers::sqrt2 * p).norm(), 1e-13 * tr.B.norm());
}

TEST(Hippo, LegTLagTFouTStructure) {
  const int N = 10;
  // LegT: lower triangle (k <= n) all -R_n R_k / 2, upper alternates in sign with n - k.
  const hippo::Transition legt = hippo::transition(hippo::Measure::legt, N);
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < N; ++k) {
      const double mag = 0.5 * std::sqrt((2.0 * n + 1) * (2.0 * k + 1));
      const double expected = (k <= n) ? -mag : ((k - n) % 2 == 1 ? mag : -mag);
      EXPECT_NEAR(legt.A(n, k), expected, 1e-13) << n << "," << k;
    }
  EXPECT_NEAR(legt.B(3), 0.5 * std::sqrt(7.0), 1e-15);
  // LagT: A = I/2 - tril(ones), B = 1.
  const hippo::Transition lagt = hippo::transition(hippo::Measure::lagt, N);
  const Eigen::MatrixXd lagt_ref =
      0.5 * Eigen::MatrixXd::Identity(N, N) -
      Eigen::MatrixXd::Ones(N, N).triangularView<Eigen::Lower>().toDenseMatrix();  // (n, n)
  EXPECT_EQ((lagt.A - lagt_ref).norm(), 0.0);
  EXPECT_EQ((lagt.B - Eigen::VectorXd::Ones(N)).norm(), 0.0);
  // FouT: A + B Bᵀ is skew-symmetric with eigenvalues ±iπk (k = 1..N/2-1) and a double zero (the constant
  // and the zero-frequency sine).
  const hippo::Transition fout = hippo::transition(hippo::Measure::fout, N);
  const Eigen::MatrixXd R = fout.A + fout.B * fout.B.transpose();  // (n, n)
  EXPECT_LE((R + R.transpose()).norm(), 1e-14);
  Eigen::EigenSolver<Eigen::MatrixXd> es(R);
  std::vector<double> im;
  for (int n = 0; n < N; ++n) {
    EXPECT_NEAR(es.eigenvalues()(n).real(), 0.0, 1e-12);
    im.push_back(std::abs(es.eigenvalues()(n).imag()));
  }
  std::sort(im.begin(), im.end());
  EXPECT_NEAR(im[0], 0.0, 1e-12);
  EXPECT_NEAR(im[1], 0.0, 1e-12);
  for (int k = 1; k < N / 2; ++k) {
    EXPECT_NEAR(im[2 * k], std::numbers::pi * k, 1e-11) << k;
    EXPECT_NEAR(im[2 * k + 1], std::numbers::pi * k, 1e-11) << k;
  }
  EXPECT_DOUBLE_EQ(fout.B(0), 1.0);
  EXPECT_DOUBLE_EQ(fout.B(1), 0.0);
  EXPECT_DOUBLE_EQ(fout.B(2), std::numbers::sqrt2);
}

TEST(Hippo, NPLRReconstructsLegS) {
  // ‖V(Λ − PP*)V* − A‖ / ‖A‖ ≤ 1e-10 up to N = 256 (the bound); odd N have one real eigenvalue.
  for (int N : {1, 2, 3, 7, 8, 16, 64, 256}) {
    const hippo::Transition tr = hippo::transition(hippo::Measure::legs, N);
    const hippo::NPLR f = hippo::nplr_legs(N);
    ASSERT_EQ(f.Lambda.size(), N);
    ASSERT_EQ(f.V.rows(), N);
    ASSERT_EQ(f.V.cols(), N);
    const Eigen::MatrixXcd Ac = tr.A.cast<cd>();  // (n, n)
    const Eigen::MatrixXcd rec =
        f.V * (Eigen::MatrixXcd(f.Lambda.asDiagonal()) - f.P * f.P.adjoint()) * f.V.adjoint();  // (n, n)
    EXPECT_LE((rec - Ac).norm() / Ac.norm(), 1e-10) << "N = " << N;
    // V unitary, P and B in the eigenbasis.
    EXPECT_LE((f.V.adjoint() * f.V - Eigen::MatrixXcd::Identity(N, N)).norm(), 1e-11 * N) << "N = " << N;
    EXPECT_LE((f.V * f.B - tr.B.cast<cd>()).norm(), 1e-11 * tr.B.norm()) << "N = " << N;
    EXPECT_LE((f.V * f.P - rank_correction(N).cast<cd>()).norm(), 1e-11 * tr.B.norm()) << "N = " << N;
    for (int j = 0; j < N; ++j) {
      EXPECT_NEAR(f.Lambda(j).real(), -0.5, 1e-12) << "N = " << N << " j = " << j;
      EXPECT_NEAR(f.P(j).imag(), 0.0, 1e-12) << "phase convention: P_j real >= 0";
      EXPECT_GE(f.P(j).real(), -1e-12);
    }
    // Layout: kept half with Im > 0 increasing, then the conjugates in the same order.
    const int half = N / 2;
    for (int j = 0; j < half; ++j) {
      EXPECT_GT(f.Lambda(j).imag(), 0.0);
      if (j > 0) {
        EXPECT_GT(f.Lambda(j).imag(), f.Lambda(j - 1).imag());
      }
      EXPECT_EQ(f.Lambda(j + half), std::conj(f.Lambda(j)));
      EXPECT_NEAR(std::abs(f.P(j + half) - std::conj(f.P(j))), 0.0, 1e-12);
    }
    if (N % 2 == 1) {
      EXPECT_EQ(f.Lambda(N - 1).imag(), 0.0);
    }
  }
}

TEST(Hippo, NPLREigenvaluesMatchAGeneralEigensolver) {
  // The Λ of the NPLR form are the eigenvalues of A + p pᵀ: compare with Eigen's general (non-symmetric)
  // eigensolver, a different algorithm. Real parts must be −½.
  const int N = 24;
  const hippo::Transition tr = hippo::transition(hippo::Measure::legs, N);
  const Eigen::VectorXd p = rank_correction(N);
  const Eigen::MatrixXd AP = tr.A + p * p.transpose();  // (n, n)
  Eigen::EigenSolver<Eigen::MatrixXd> es(AP);
  std::vector<double> im_general, im_nplr;
  for (int n = 0; n < N; ++n) {
    EXPECT_NEAR(es.eigenvalues()(n).real(), -0.5, 1e-9);
    im_general.push_back(es.eigenvalues()(n).imag());
  }
  const hippo::NPLR f = hippo::nplr_legs(N);
  for (int n = 0; n < N; ++n) im_nplr.push_back(f.Lambda(n).imag());
  std::sort(im_general.begin(), im_general.end());
  std::sort(im_nplr.begin(), im_nplr.end());
  for (int n = 0; n < N; ++n) EXPECT_NEAR(im_general[n], im_nplr[n], 1e-9 * (1 + std::abs(im_nplr[n])));
}

TEST(Hippo, DPLRHalfReconstructsLegSWithTheConjugateConvention) {
  for (int N : {2, 4, 16, 64, 256}) {
    const hippo::Transition tr = hippo::transition(hippo::Measure::legs, N);
    const hippo::DPLR h = hippo::dplr_legs(N);
    ASSERT_EQ(h.Lambda.size(), N / 2);
    ASSERT_EQ(h.V.rows(), N);
    ASSERT_EQ(h.V.cols(), N / 2);
    // A = 2 Re(V_h diag(Λ) V_h^*) − p pᵀ with p = 2 Re(V_h P); b = 2 Re(V_h B).
    const Eigen::VectorXd p = 2.0 * (h.V * h.P).real();  // (n)
    const Eigen::MatrixXd rec =
        2.0 * (h.V * h.Lambda.asDiagonal() * h.V.adjoint()).real() - p * p.transpose();  // (n, n)
    EXPECT_LE((rec - tr.A).norm() / tr.A.norm(), 1e-10) << "N = " << N;
    EXPECT_LE((p - rank_correction(N)).norm(), 1e-10 * p.norm()) << "N = " << N;
    EXPECT_LE((2.0 * (h.V * h.B).real() - tr.B).norm(), 1e-10 * tr.B.norm()) << "N = " << N;
    for (int j = 0; j < N / 2; ++j) EXPECT_GT(h.Lambda(j).imag(), 0.0);
    // S4D-LegS is exactly this Λ.
    EXPECT_EQ((hippo::s4d_legs(N) - h.Lambda).norm(), 0.0);
  }
}

TEST(Hippo, S4DInitializations) {
  const int N = 64;
  const Eigen::VectorXcd lin = hippo::s4d_lin(N);  // (n/2)
  const Eigen::VectorXcd inv = hippo::s4d_inv(N);  // (n/2)
  const Eigen::VectorXd real = hippo::s4d_real(N);  // (n)
  ASSERT_EQ(lin.size(), N / 2);
  ASSERT_EQ(inv.size(), N / 2);
  ASSERT_EQ(real.size(), N);
  for (int n = 0; n < N / 2; ++n) {
    EXPECT_EQ(lin(n).real(), -0.5);
    EXPECT_NEAR(lin(n).imag(), std::numbers::pi * n, 1e-13);
    EXPECT_EQ(inv(n).real(), -0.5);
  }
  // S4D-Inv: Im(n = 0) = (N/π)(N − 1), decreasing in n, and the last (n = N/2−1) is (N/π)(N/(N−1) − 1).
  EXPECT_NEAR(inv(0).imag(), N * (N - 1.0) / std::numbers::pi, 1e-10);
  EXPECT_NEAR(inv(N / 2 - 1).imag(), (N / std::numbers::pi) * (N / (N - 1.0) - 1.0), 1e-12);
  for (int n = 1; n < N / 2; ++n) EXPECT_LT(inv(n).imag(), inv(n - 1).imag());
  for (int n = 0; n < N; ++n) EXPECT_EQ(real(n), -(n + 1.0));
  // S4D-LegS: the imaginary parts grow roughly linearly (LegS is close to S4D-Lin up to scale, S4D §4);
  // all real parts −½.
  const Eigen::VectorXcd legs = hippo::s4d_legs(N);  // (n/2)
  for (int n = 0; n < N / 2; ++n) EXPECT_NEAR(legs(n).real(), -0.5, 1e-12);
}

TEST(Hippo, BadStateSizeThrows) {
  EXPECT_THROW(hippo::transition(hippo::Measure::legs, 0), Error);
  EXPECT_THROW(hippo::transition(hippo::Measure::legt, -3), Error);
  EXPECT_THROW(hippo::transition(hippo::Measure::fout, 5), Error);  // cos/sin pairs need even N
  EXPECT_THROW(hippo::nplr_legs(0), Error);
  EXPECT_THROW(hippo::dplr_legs(7), Error);
  EXPECT_THROW(hippo::s4d_lin(3), Error);
  EXPECT_THROW(hippo::s4d_inv(0), Error);
  EXPECT_THROW(hippo::s4d_legs(9), Error);
  EXPECT_THROW(hippo::s4d_real(0), Error);
  try {
    hippo::dplr_legs(7);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'N'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("even"), std::string::npos) << e.what();
  }
}

}  // namespace
