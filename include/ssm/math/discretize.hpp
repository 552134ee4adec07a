// Discretization of a continuous state-space model h' = A h + B x with step Delta (docs/math.md §2; LSSL §2, S4 §2.3,
// Mamba §2): zero-order hold (Van Loan's block exponential, no inverse of A: works for singular A), the
// generalized bilinear transform GBT(alpha) with bilinear (1/2), forward Euler (0) and backward Euler (1) as
// cases, and Mamba's simplification (exp(Delta A), Delta B). Dense and diagonal (elementwise, expm1) forms;
// both batched over many Delta.
#pragma once

#include "ssm/core/eigen.hpp"
#include "ssm/core/macros.hpp"
SSM_EXTERNAL_INCLUDE_BEGIN
#include <Eigen/Dense>
#include <unsupported/Eigen/MatrixFunctions>
SSM_EXTERNAL_INCLUDE_END

#include <cmath>
#include <complex>
#include <limits>
#include <span>
#include <type_traits>
#include <vector>

#include "ssm/core/error.hpp"

namespace ssm {

/// The discretization rules of docs/math.md §2.1 (and §2.2 for diagonal A).
enum class Discretization { zoh, bilinear, gbt, forward_euler, backward_euler, mamba };

inline const char* name(Discretization method) {
  switch (method) {
    case Discretization::zoh: return "zoh";
    case Discretization::bilinear: return "bilinear";
    case Discretization::gbt: return "gbt";
    case Discretization::forward_euler: return "forward_euler";
    case Discretization::backward_euler: return "backward_euler";
    case Discretization::mamba: return "mamba";
  }
  return "?";
}

/// A discretized pair: h_k = A_bar h_{k-1} + B_bar x_k.
template <class S>
struct DiscreteSystem {
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> A_bar;  // (n, n)
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> B_bar;  // (n, m)
};

namespace detail {

template <class S>
using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;

template <class Derived>
bool all_finite(const Eigen::MatrixBase<Derived>& M) {
  for (Eigen::Index j = 0; j < M.cols(); ++j)
    for (Eigen::Index i = 0; i < M.rows(); ++i)
      if (!std::isfinite(std::abs(M(i, j)))) return false;
  return true;
}

template <class S>
void check_system(const char* op, const Mat<S>& A, const Mat<S>& B) {
  SSM_CHECK(A.rows() == A.cols() && A.rows() >= 1, op, ": argument 'A': expected a square (n, n) matrix with n >= 1, got (",
            A.rows(), ", ", A.cols(), ")");
  SSM_CHECK(B.rows() == A.rows(), op, ": argument 'B': expected shape (", A.rows(), ", m) (n = rows of 'A'), got (",
            B.rows(), ", ", B.cols(), ")");
  SSM_CHECK(all_finite(A), op, ": argument 'A' must be finite (it contains NaN or Inf)");
  SSM_CHECK(all_finite(B), op, ": argument 'B' must be finite (it contains NaN or Inf)");
}

/// exp(z) - 1 without cancellation, for real or complex z.
template <class S>
S expm1(S z) {
  if constexpr (std::is_floating_point_v<S>) {
    return std::expm1(z);
  } else {
    using R = typename S::value_type;
    const R x = z.real(), y = z.imag();
    const R s = std::sin(y / 2);
    // Re: e^x cos y - 1 = expm1(x) cos y - 2 sin^2(y/2);  Im: e^x sin y
    return S(std::expm1(x) * std::cos(y) - 2 * s * s, std::exp(x) * std::sin(y));
  }
}

/// (exp(z) - 1) / z with the limit 1 at z = 0.
template <class S>
S expm1_over(S z) {
  if (z == S(0)) return S(1);
  return expm1(z) / z;
}

}  // namespace detail

/// Zero-order hold through Van Loan's block exponential: exp(Delta [[A, B], [0, 0]]) = [[A_bar, B_bar], [0, I]].
/// Never inverts A, so singular A (integrators) are fine.
/// A: (n, n), B: (n, m), Delta > 0 finite.  Returns A_bar (n, n), B_bar (n, m).
template <class S>
DiscreteSystem<S> discretize_zoh(const detail::Mat<S>& A, const detail::Mat<S>& B, double Delta) {
  detail::check_system<S>("discretize_zoh", A, B);
  check_positive("discretize_zoh", "Delta", Delta);
  const Eigen::Index n = A.rows(), m = B.cols();
  detail::Mat<S> M = detail::Mat<S>::Zero(n + m, n + m);  // (n + m, n + m)
  M.topLeftCorner(n, n) = A * S(Delta);
  M.topRightCorner(n, m) = B * S(Delta);
  const detail::Mat<S> E = M.exp();  // (n + m, n + m)
  return {E.topLeftCorner(n, n), E.topRightCorner(n, m)};
}

/// Generalized bilinear transform: A_bar = (I - alpha Delta A)^{-1} (I + (1 - alpha) Delta A),
/// B_bar = (I - alpha Delta A)^{-1} Delta B.  alpha = 0: forward Euler, 1/2: bilinear (Tustin), 1: backward Euler.
/// A: (n, n), B: (n, m), Delta > 0 finite, alpha in [0, 1].  Throws when I - alpha Delta A is singular.
template <class S>
DiscreteSystem<S> discretize_gbt(const detail::Mat<S>& A, const detail::Mat<S>& B, double Delta, double alpha) {
  detail::check_system<S>("discretize_gbt", A, B);
  check_positive("discretize_gbt", "Delta", Delta);
  check_in_range("discretize_gbt", "alpha", alpha, 0.0, 1.0);
  const Eigen::Index n = A.rows();
  const detail::Mat<S> I = detail::Mat<S>::Identity(n, n);  // (n, n)
  if (alpha == 0.0) return {I + S(Delta) * A, S(Delta) * B};  // forward Euler: nothing to solve
  const detail::Mat<S> lhs = I - S(alpha * Delta) * A;  // (n, n)
  Eigen::PartialPivLU<detail::Mat<S>> lu(lhs);
  // rcond() is an estimate (and Eigen reports 1 for any 1x1 matrix), so the pivots are also compared with the
  // size of the terms that cancelled in I - alpha Delta A.
  const double eps = static_cast<double>(std::numeric_limits<typename Eigen::NumTraits<S>::Real>::epsilon());
  const double scale = 1.0 + alpha * Delta * static_cast<double>(A.cwiseAbs().colwise().sum().maxCoeff());
  const double pivot = static_cast<double>(lu.matrixLU().diagonal().cwiseAbs().minCoeff());
  const double rcond = pivot <= 64 * eps * scale ? 0.0 : static_cast<double>(lu.rcond());
  SSM_CHECK(rcond > 1e3 * eps,
            "discretize_gbt: I - alpha * Delta * A is singular (reciprocal condition ", rcond, ") for alpha = ", alpha,
            ", Delta = ", Delta);
  return {lu.solve(I + S((1.0 - alpha) * Delta) * A), lu.solve(S(Delta) * B)};
}

/// Bilinear (Tustin) = GBT(1/2).
template <class S>
DiscreteSystem<S> discretize_bilinear(const detail::Mat<S>& A, const detail::Mat<S>& B, double Delta) {
  return discretize_gbt<S>(A, B, Delta, 0.5);
}

/// Forward Euler: A_bar = I + Delta A, B_bar = Delta B (GBT(0)).
template <class S>
DiscreteSystem<S> discretize_forward_euler(const detail::Mat<S>& A, const detail::Mat<S>& B, double Delta) {
  return discretize_gbt<S>(A, B, Delta, 0.0);
}

/// Backward Euler: A_bar = (I - Delta A)^{-1}, B_bar = (I - Delta A)^{-1} Delta B (GBT(1)).
template <class S>
DiscreteSystem<S> discretize_backward_euler(const detail::Mat<S>& A, const detail::Mat<S>& B, double Delta) {
  return discretize_gbt<S>(A, B, Delta, 1.0);
}

/// Mamba's simplification: A_bar = exp(Delta A) (exact), B_bar = Delta B (Euler for the input).
template <class S>
DiscreteSystem<S> discretize_mamba(const detail::Mat<S>& A, const detail::Mat<S>& B, double Delta) {
  detail::check_system<S>("discretize_mamba", A, B);
  check_positive("discretize_mamba", "Delta", Delta);
  return {(S(Delta) * A).exp(), S(Delta) * B};
}

/// Any rule by name; alpha is used by Discretization::gbt only (and must then be in [0, 1]).
template <class S>
DiscreteSystem<S> discretize(Discretization method, const detail::Mat<S>& A, const detail::Mat<S>& B, double Delta,
                             double alpha = 0.5) {
  switch (method) {
    case Discretization::zoh: return discretize_zoh<S>(A, B, Delta);
    case Discretization::bilinear: return discretize_bilinear<S>(A, B, Delta);
    case Discretization::gbt: return discretize_gbt<S>(A, B, Delta, alpha);
    case Discretization::forward_euler: return discretize_forward_euler<S>(A, B, Delta);
    case Discretization::backward_euler: return discretize_backward_euler<S>(A, B, Delta);
    case Discretization::mamba: return discretize_mamba<S>(A, B, Delta);
  }
  fail("discretize: unknown method");
}

/// Batched over many steps: one DiscreteSystem per Delta[k] (each Delta checked).  Delta: (l).
template <class S>
std::vector<DiscreteSystem<S>> discretize_many(Discretization method, const detail::Mat<S>& A,
                                               const detail::Mat<S>& B, std::span<const double> Delta,
                                               double alpha = 0.5) {
  std::vector<DiscreteSystem<S>> out;
  out.reserve(Delta.size());
  for (double Delta_k : Delta) out.push_back(discretize<S>(method, A, B, Delta_k, alpha));
  return out;
}

/// Diagonal A (S4D, Mamba), elementwise, one channel:  for every step k and state n
///   zoh:   A_bar = exp(Delta_k A_n),  B_bar = (exp(Delta_k A_n) - 1) / A_n * B_n   (expm1; Delta_k B_n as A_n -> 0)
///   gbt:   A_bar = (1 + (1 - alpha) Delta_k A_n) / (1 - alpha Delta_k A_n),  B_bar = Delta_k B_n / (1 - alpha Delta_k A_n)
///   mamba: A_bar = exp(Delta_k A_n),  B_bar = Delta_k B_n
/// A: (n) real or complex (S), B: (n), Delta: (l) each > 0.  Returns A_bar (l, n), B_bar (l, n).
template <class S>
DiscreteSystem<S> discretize_diagonal(Discretization method, const Eigen::Matrix<S, Eigen::Dynamic, 1>& A,
                                      const Eigen::Matrix<S, Eigen::Dynamic, 1>& B, std::span<const double> Delta,
                                      double alpha = 0.5) {
  const char* op = "discretize_diagonal";
  SSM_CHECK(A.size() >= 1, op, ": argument 'A': expected the diagonal (n) with n >= 1, got n = ", A.size());
  SSM_CHECK(B.size() == A.size(), op, ": argument 'B': expected shape (", A.size(), ") (the size of 'A'), got (",
            B.size(), ")");
  SSM_CHECK(detail::all_finite(A), op, ": argument 'A' must be finite (it contains NaN or Inf)");
  SSM_CHECK(detail::all_finite(B), op, ": argument 'B' must be finite (it contains NaN or Inf)");
  for (double Delta_k : Delta) check_positive(op, "Delta", Delta_k);
  switch (method) {
    case Discretization::bilinear: alpha = 0.5; break;
    case Discretization::forward_euler: alpha = 0.0; break;
    case Discretization::backward_euler: alpha = 1.0; break;
    case Discretization::gbt: check_in_range(op, "alpha", alpha, 0.0, 1.0); break;
    default: break;
  }
  const Eigen::Index l = static_cast<Eigen::Index>(Delta.size()), n = A.size();
  DiscreteSystem<S> out{detail::Mat<S>(l, n), detail::Mat<S>(l, n)};  // (l, n), (l, n)
  for (Eigen::Index k = 0; k < l; ++k) {
    const double Delta_k = Delta[static_cast<size_t>(k)];
    for (Eigen::Index i = 0; i < n; ++i) {
      const S z = S(Delta_k) * A(i);
      switch (method) {
        case Discretization::zoh:
          out.A_bar(k, i) = std::exp(z);
          out.B_bar(k, i) = S(Delta_k) * detail::expm1_over(z) * B(i);
          break;
        case Discretization::mamba:
          out.A_bar(k, i) = std::exp(z);
          out.B_bar(k, i) = S(Delta_k) * B(i);
          break;
        default: {
          const S den = S(1) - S(alpha) * z;
          SSM_CHECK(den != S(0), op, ": 1 - alpha * Delta * A is zero for state ", i, " (alpha = ", alpha,
                    ", Delta = ", Delta_k, ")");
          out.A_bar(k, i) = (S(1) + S(1.0 - alpha) * z) / den;
          out.B_bar(k, i) = S(Delta_k) * B(i) / den;
        }
      }
    }
  }
  return out;
}

/// Diagonal discretization batched over channels and steps (S4D / Mamba layout): channel c has its own
/// diagonal A.row(c), B.row(c) and steps Delta.row(c).
/// A: (d, n), B: (d, n), Delta: (d, l).  Returns d systems, each A_bar (l, n), B_bar (l, n).
template <class S>
std::vector<DiscreteSystem<S>> discretize_diagonal(Discretization method, const detail::Mat<S>& A,
                                                   const detail::Mat<S>& B, const Eigen::MatrixXd& Delta,
                                                   double alpha = 0.5) {
  const char* op = "discretize_diagonal";
  SSM_CHECK(B.rows() == A.rows() && B.cols() == A.cols(), op, ": argument 'B': expected shape (", A.rows(), ", ",
            A.cols(), ") (the shape of 'A'), got (", B.rows(), ", ", B.cols(), ")");
  SSM_CHECK(Delta.rows() == A.rows(), op, ": argument 'Delta': expected shape (", A.rows(),
            ", l) (d = rows of 'A'), got (", Delta.rows(), ", ", Delta.cols(), ")");
  std::vector<DiscreteSystem<S>> out;
  out.reserve(static_cast<size_t>(A.rows()));
  std::vector<double> Delta_c(static_cast<size_t>(Delta.cols()));  // (l)
  for (Eigen::Index c = 0; c < A.rows(); ++c) {
    for (Eigen::Index k = 0; k < Delta.cols(); ++k) Delta_c[static_cast<size_t>(k)] = Delta(c, k);
    const Eigen::Matrix<S, Eigen::Dynamic, 1> A_c = A.row(c).transpose(), B_c = B.row(c).transpose();  // (n)
    out.push_back(discretize_diagonal<S>(method, A_c, B_c, std::span<const double>(Delta_c), alpha));
  }
  return out;
}

}  // namespace ssm
