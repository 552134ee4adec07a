// HiPPO transition matrices (Gu et al. 2020, "HiPPO", §2-3 and appendix D), the normal-plus-low-rank
// (NPLR) form of LegS and the DPLR parameters S4 uses (Gu et al. 2022, "S4", §3.3 and Theorem 1), and the
// S4D diagonal initializations (Gu et al. 2022, "S4D", §4). Everything is computed in double precision.
#pragma once

#include "ssm/core/eigen.hpp"
#include "ssm/core/macros.hpp"
SSM_EXTERNAL_INCLUDE_BEGIN
#include <Eigen/Dense>
SSM_EXTERNAL_INCLUDE_END

#include <algorithm>
#include <cmath>
#include <complex>
#include <numbers>
#include <vector>

#include "ssm/core/error.hpp"

// GCC 12 with AVX-512 reports -Wmaybe-uninitialized inside Eigen's complex matrix-vector kernels
// (_mm512_undefined_pd in avx512fintrin.h): a known false positive, silenced for this header only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// The functions here that build matrices with Eigen (the transition matrices, and the NPLR form through Eigen's
// Hermitian eigensolver on complex matrices) are templates with an unused, defaulted parameter (`template <class =
// void>`), called as plain functions. A plain inline function instantiates every template its body names in every
// file that includes the header, whether or not the file calls it; a template is instantiated only in the files that
// call it. With this header and math/s4_kernel.hpp so, including all of ssm/ssm.hpp took 15 s of g++ 12's
// -fsyntax-only instead of 26 s.

namespace ssm::hippo {

/// The HiPPO measures: scaled Legendre (LegS), translated Legendre (LegT), translated Laguerre (LagT) and
/// translated Fourier (FouT).
enum class Measure { legs, legt, lagt, fout };

inline const char* name(Measure measure) {
  switch (measure) {
    case Measure::legs: return "legs";
    case Measure::legt: return "legt";
    case Measure::lagt: return "lagt";
    case Measure::fout: return "fout";
  }
  return "?";
}

/// The continuous-time HiPPO operator: c'(t) = A c(t) + B f(t).
struct Transition {
  Eigen::MatrixXd A;  // (n, n)
  Eigen::VectorXd B;  // (n)
};

namespace detail {
inline void check_state_size(const char* op, int N, bool even) {
  SSM_CHECK(N >= 1, op, ": argument 'N' (state size) must be >= 1, got ", N);
  if (even) SSM_CHECK(N % 2 == 0, op, ": argument 'N' (state size) must be even (conjugate pairs), got ", N);
}
}  // namespace detail

/// The HiPPO transition (A, B) for `measure` with state size N, as `transition()` in state-spaces/s4
/// (src/models/hippo/hippo.py) defines it, n, k = 0..N-1:
///  - legs: A_nk = -sqrt(2n+1) sqrt(2k+1) (n > k), -(n+1) (n = k), 0 (n < k);  B_n = sqrt(2n+1).
///    Timescale-free: the state at time t holds the Legendre coefficients of f on [0, t] (h' = A h / t + B f / t;
///    the LSSL uses A, B as they are, with the 1/t folded into Δ).
///  - legt: A_nk = -(1/2) sqrt(2n+1) sqrt(2k+1) * (1 if k <= n else (-1)^(n-k));  B_n = (1/2) sqrt(2n+1).
///    The HiPPO paper's LegT formula (A / θ, B / θ) with window θ = 2 (s4's "halve for timescale" factor).
///  - lagt: A = I/2 - tril(ones), B_n = 1  (Laguerre with the exp(-t/2) weight, β = 1).
///  - fout: index 0 is the constant, indices (2k, 2k+1) for k >= 1 are the cos/sin pair of frequency k
///    (index 1 is the zero-frequency sine, identically 0):  A = π(-diag(d, 1) + diag(d, -1)) - B Bᵀ with
///    d = (0, 0, 1, 0, 2, 0, 3, ...), B_0 = 1, B_{2k} = sqrt(2), B_{odd} = 0.  N must be even.
/// Throws ssm::Error when N < 1 (or N odd for fout).
template <class = void>  // (deferred: see the note at the top)
Transition transition(Measure measure, int N) {
  detail::check_state_size("hippo::transition", N, measure == Measure::fout);
  Transition t{Eigen::MatrixXd::Zero(N, N), Eigen::VectorXd::Zero(N)};
  Eigen::MatrixXd& A = t.A;  // (n, n)
  Eigen::VectorXd& B = t.B;  // (n)
  switch (measure) {
    case Measure::legs:
      for (int n = 0; n < N; ++n) {
        for (int k = 0; k < n; ++k) A(n, k) = -std::sqrt(2.0 * n + 1) * std::sqrt(2.0 * k + 1);
        A(n, n) = -(n + 1.0);
        B(n) = std::sqrt(2.0 * n + 1);
      }
      break;
    case Measure::legt:
      for (int n = 0; n < N; ++n) {
        for (int k = 0; k < N; ++k) {
          const double sign = (k <= n || (k - n) % 2 == 0) ? 1.0 : -1.0;
          A(n, k) = -0.5 * sign * std::sqrt(2.0 * n + 1) * std::sqrt(2.0 * k + 1);
        }
        B(n) = 0.5 * std::sqrt(2.0 * n + 1);
      }
      break;
    case Measure::lagt:
      for (int n = 0; n < N; ++n) {
        for (int k = 0; k <= n; ++k) A(n, k) = -1.0;
        A(n, n) += 0.5;
        B(n) = 1.0;
      }
      break;
    case Measure::fout: {
      for (int n = 0; n < N; n += 2) B(n) = std::numbers::sqrt2;
      B(0) = 1.0;
      for (int k = 1; 2 * k + 1 < N; ++k) {  // the pair (2k, 2k+1) rotates at frequency k
        A(2 * k, 2 * k + 1) = -std::numbers::pi * k;
        A(2 * k + 1, 2 * k) = std::numbers::pi * k;
      }
      A -= B * B.transpose();  // the rank-one correction for the window's other endpoint f(t - 1)
      break;
    }
  }
  return t;
}

/// The normal-plus-low-rank form of HiPPO-LegS with all N eigenvalues.
///
///   A = V (diag(Lambda) - P P^*) V^*,   V unitary,   P = V^* p,   B = V^* b,
///
/// where p_n = sqrt(n + 1/2) is the rank-one correction (A + p pᵀ = -I/2 + S, S real skew-symmetric),
/// b the HiPPO B, and Lambda = -1/2 + i·(eigenvalues of S / i) the eigenvalues of the normal part
/// A + p pᵀ = V diag(Lambda) V^*.  Equivalently A = V diag(Lambda) V^* - p pᵀ.
///
/// Conjugate-pair layout (the real input makes the spectrum closed under conjugation):
///   entries 0 .. N/2-1        : Im Lambda > 0, in increasing Im Lambda;
///   entries N/2 .. 2(N/2)-1   : their conjugates in the same order: Lambda[j + N/2] = conj(Lambda[j]),
///                               V.col(j + N/2) = conj(V.col(j)), P[j + N/2] = conj(P[j]), B likewise;
///   entry N-1 (N odd only)    : the one eigenvalue with Im Lambda = 0.
/// Each eigenvector's phase is fixed by making P_j = v_j^* p real and >= 0 (then B_j = sqrt(2) P_j too).
struct NPLR {
  Eigen::VectorXcd Lambda;  // (n)
  Eigen::VectorXcd P;       // (n)  V^* p
  Eigen::VectorXcd B;       // (n)  V^* b
  Eigen::MatrixXcd V;       // (n, n) unitary
};

/// NPLR form of HiPPO-LegS for state size N >= 1 (see NPLR for the conventions).
template <class = void>  // (deferred: see the note at the top)
NPLR nplr_legs(int N) {
  detail::check_state_size("hippo::nplr_legs", N, false);
  const Transition t = transition(Measure::legs, N);
  Eigen::VectorXd p(N);  // (n)
  for (int n = 0; n < N; ++n) p(n) = std::sqrt(n + 0.5);
  const Eigen::MatrixXd AP = t.A + p * p.transpose();  // (n, n)  -I/2 + S
  // The real part is the mean of the diagonal (exactly -1/2 in exact arithmetic); the skew part S is
  // diagonalized through the Hermitian matrix -i S, which gives a unitary V and real eigenvalues.
  const double Lambda_re = AP.diagonal().mean();
  const Eigen::MatrixXd S = 0.5 * (AP - AP.transpose());  // (n, n)
  const Eigen::MatrixXcd H = std::complex<double>(0, -1) * S.cast<std::complex<double>>();
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXcd> eig(H);
  SSM_CHECK(eig.info() == Eigen::Success, "hippo::nplr_legs: eigendecomposition failed for N = ", N);
  const Eigen::VectorXd& mu = eig.eigenvalues();  // (n) ascending, closed under negation
  const Eigen::MatrixXcd& U = eig.eigenvectors();  // (n, n)

  // Eigenvalues come as ±mu pairs. Ascending order puts the negatives first: the j-th largest positive
  // is paired with the j-th smallest negative. Build the layout described at NPLR.
  const int half = N / 2;
  std::vector<int> order(N);
  for (int j = 0; j < half; ++j) {
    order[j] = N - half + j;  // positives, increasing
    order[j + half] = half - 1 - j;  // the matching negatives
  }
  if (N % 2 == 1) order[N - 1] = half;  // the zero eigenvalue sits in the middle
  NPLR r;
  r.Lambda.resize(N);
  r.V.resize(N, N);
  const Eigen::VectorXcd pc = p.cast<std::complex<double>>();
  for (int j = 0; j < N; ++j) {
    Eigen::VectorXcd v = U.col(order[j]);  // (n)
    const std::complex<double> vp = v.dot(pc);  // v^* p
    if (std::abs(vp) > 0) v *= vp / std::abs(vp);  // now v^* p = |v^* p|
    r.V.col(j) = v;
    r.Lambda(j) = std::complex<double>(Lambda_re, mu(order[j]));
  }
  // Make the pairs exact conjugates (they agree to rounding already) so that sums over the kept half
  // plus conjugates reproduce the full sums bit for bit in structure.
  for (int j = 0; j < half; ++j) {
    r.V.col(j + half) = r.V.col(j).conjugate();
    r.Lambda(j + half) = std::conj(r.Lambda(j));
  }
  if (N % 2 == 1) r.Lambda(N - 1) = std::complex<double>(Lambda_re, 0.0);
  r.P = r.V.adjoint() * pc;
  r.B = r.V.adjoint() * t.B.cast<std::complex<double>>();
  return r;
}

/// The diagonal-plus-low-rank parameters of S4 for HiPPO-LegS: the first N/2 entries of nplr_legs(N), one
/// of each conjugate pair, the one with Im Lambda > 0, in increasing Im Lambda.  N must be even.
///
/// The dropped half is the elementwise conjugate of the kept half (Lambda, P, B and the columns of V), so a
/// sum over all N modes of a term f(Lambda_n, P_n, B_n, ...) that is conjugation-equivariant (e.g. the
/// Cauchy sums Σ_n a_n^* b_n / (g - Lambda_n) at real-input-symmetric g) is Σ_kept [f + conj-pair term];
/// for real outputs this is the S4 convention K = 2 Re(Σ_kept ...).  With V_h (n, n/2):
///   A = 2 Re(V_h diag(Lambda) V_h^*) - p pᵀ,   p = 2 Re(V_h P),   b = 2 Re(V_h B).
struct DPLR {
  Eigen::VectorXcd Lambda;  // (n/2)
  Eigen::VectorXcd P;       // (n/2)  V_h^* p
  Eigen::VectorXcd B;       // (n/2)  V_h^* b
  Eigen::MatrixXcd V;       // (n, n/2)
};

/// DPLR (S4) parameters of HiPPO-LegS for even N >= 2 (see DPLR for the conventions).
template <class = void>  // (deferred: see the note at the top)
DPLR dplr_legs(int N) {
  detail::check_state_size("hippo::dplr_legs", N, true);
  const NPLR full = nplr_legs(N);
  const int half = N / 2;
  return DPLR{full.Lambda.head(half), full.P.head(half), full.B.head(half), full.V.leftCols(half)};
}

/// S4D-Lin: Lambda_n = -1/2 + i π n, n = 0..N/2-1 (conjugates implied).  N even.
inline Eigen::VectorXcd s4d_lin(int N) {
  detail::check_state_size("hippo::s4d_lin", N, true);
  Eigen::VectorXcd Lambda(N / 2);  // (n/2)
  for (int n = 0; n < N / 2; ++n) Lambda(n) = {-0.5, std::numbers::pi * n};
  return Lambda;
}

/// S4D-Inv: Lambda_n = -1/2 + i (N/π)(N/(2n+1) - 1), n = 0..N/2-1 (conjugates implied).  N even.
inline Eigen::VectorXcd s4d_inv(int N) {
  detail::check_state_size("hippo::s4d_inv", N, true);
  Eigen::VectorXcd Lambda(N / 2);  // (n/2)
  for (int n = 0; n < N / 2; ++n)
    Lambda(n) = {-0.5, (N / std::numbers::pi) * (static_cast<double>(N) / (2.0 * n + 1) - 1.0)};
  return Lambda;
}

/// S4D-LegS: the diagonal part Lambda of dplr_legs(N) (N/2 entries, Im > 0).  N even.
template <class = void>  // (deferred: see the note at the top)
Eigen::VectorXcd s4d_legs(int N) {
  detail::check_state_size("hippo::s4d_legs", N, true);
  return dplr_legs(N).Lambda;
}

/// S4D-Real (Mamba's A init): A_n = -(n+1), n = 0..N-1, real.
inline Eigen::VectorXd s4d_real(int N) {
  detail::check_state_size("hippo::s4d_real", N, false);
  Eigen::VectorXd A(N);  // (n)
  for (int n = 0; n < N; ++n) A(n) = -(n + 1.0);
  return A;
}

}  // namespace ssm::hippo

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
