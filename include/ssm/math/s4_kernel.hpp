// S4 / S4D convolution kernels K_bar_l = C A_bar^l B_bar, l = 0..L-1, for h channels with per-channel Delta
// (docs/math.md §4; Gu, Goel, Ré 2022, "Efficiently Modeling Long Sequences with Structured State Spaces", Algorithm 1;
// Gu et al. 2022, "On the Parameterization and Initialization of Diagonal State Space Models").
// Variants: S4D by Vandermonde (ZOH, bilinear); S4 DPLR by truncated generating function + Cauchy kernel + Woodbury
// at the roots of unity + inverse FFT (bilinear); references by powers of a dense A_bar; C <-> C̃ conversion.
//
// Glossary (code name → paper):  Lambda = Λ (diagonal part), P = P = Q (rank-one part: A = Λ − P P^*),
// Ctilde = C̃ = (I − A_bar^L)^T C,  Delta = Δ,  omega = ω_k = exp(−2πi k/L),  K = K_bar.
//
// Conjugate pairs: every parameter stores n2 = N/2 entries, one of each conjugate pair; the full N-dimensional
// complex system is [x; conj(x)] for Lambda, P, B, C.  The output is the bilinear form C^T h (no conjugation), so
// for a real system y = C_full^T h_full = 2 Re Σ_{kept} C_n h_n.
#pragma once

#include <algorithm>
#include <cmath>
#include <complex>
#include <numbers>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/cpu/threads.hpp"
#include "ssm/math/discretize.hpp"
#include "ssm/math/fft.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// The functions here that run Eigen's complex LU and matrix products (the DPLR discretization, the C̃ conversions,
// the dense powers) are templates with an unused, defaulted parameter (`template <class = void>`), called as plain
// functions: a plain inline function instantiates every template its body names in every file that includes the
// header, whether or not the file calls it; a template only in the files that call it (see math/hippo.hpp).

namespace ssm::s4 {

using cd = std::complex<double>;

/// Diagonal SSM (S4D) for h channels, n2 = N/2 kept modes per channel (conjugates implied).
struct DiagonalSSM {
  Eigen::MatrixXcd A;     // (h, n2)  diagonal A = Λ
  Eigen::MatrixXcd B;     // (h, n2)
  Eigen::MatrixXcd C;     // (h, n2)
  Eigen::VectorXd Delta;  // (h)
};

/// DPLR SSM (S4): A = diag(Λ_full) − P_full P_full^* in the full N = 2 n2 complex basis, per channel.
/// `C` holds either the untruncated C or the truncated C̃; each function says which it expects.
struct DPLRSSM {
  Eigen::MatrixXcd Lambda;  // (h, n2)
  Eigen::MatrixXcd P;       // (h, n2)
  Eigen::MatrixXcd B;       // (h, n2)
  Eigen::MatrixXcd C;       // (h, n2)  C or C̃
  Eigen::VectorXd Delta;    // (h)
};

/// One channel of a DPLR SSM as a dense system in the full N-dimensional complex basis (double).
struct DenseSSM {
  Eigen::MatrixXcd A;  // (n, n)
  Eigen::VectorXcd B;  // (n)
  Eigen::VectorXcd C;  // (n)
};

namespace detail {

template <class M>
bool all_finite(const M& X) {
  for (Eigen::Index j = 0; j < X.cols(); ++j)
    for (Eigen::Index i = 0; i < X.rows(); ++i)
      if (!std::isfinite(std::abs(X(i, j)))) return false;
  return true;
}

inline void check_param(const char* op, const char* name, const Eigen::MatrixXcd& X, Eigen::Index h,
                        Eigen::Index n2) {
  SSM_CHECK(X.rows() == h && X.cols() == n2, op, ": argument '", name, "': expected shape (", h, ", ", n2,
            ") (h, n2) like the first parameter, got (", X.rows(), ", ", X.cols(), ")");
  SSM_CHECK(all_finite(X), op, ": argument '", name, "' must be finite (it contains NaN or Inf)");
}

inline void check_delta(const char* op, const Eigen::VectorXd& Delta, Eigen::Index h) {
  SSM_CHECK(Delta.size() == h, op, ": argument 'Delta': expected shape (", h, ") (one step per channel), got (",
            Delta.size(), ")");
  for (Eigen::Index c = 0; c < h; ++c)
    SSM_CHECK(std::isfinite(Delta(c)) && Delta(c) > 0, op, ": argument 'Delta' must be finite and > 0, got ",
              Delta(c), " at channel ", c);
}

inline void check_length(const char* op, long L) {
  SSM_CHECK(L >= 1, op, ": argument 'L' (kernel length) must be >= 1, got ", L);
}

/// The full N = 2 n2 vector [x; conj(x)] of one channel's row.
inline Eigen::VectorXcd full(const Eigen::MatrixXcd& X, Eigen::Index c) {
  const Eigen::Index n2 = X.cols();
  Eigen::VectorXcd f(2 * n2);  // (n)
  f.head(n2) = X.row(c).transpose();
  f.tail(n2) = X.row(c).transpose().conjugate();
  return f;
}

/// M^k by repeated squaring (log2 k products).
template <class = void>  // (deferred: see the note at the top)
Eigen::MatrixXcd matrix_power(const Eigen::MatrixXcd& M, long k) {
  Eigen::MatrixXcd result = Eigen::MatrixXcd::Identity(M.rows(), M.cols());  // (n, n)
  Eigen::MatrixXcd base = M;                                                 // (n, n)
  while (k > 0) {
    if (k & 1) result = result * base;
    base = base * base;
    k >>= 1;
  }
  return result;
}

/// exp(l w) for a power table, with the phase l·Im(w) range-reduced in double: for l ~ 1e4 the phase reaches
/// ~1e4 rad, and rounding it in float would cost ~1e-3 absolute.
inline cd exp_scaled(cd w, long l) {
  const double re = static_cast<double>(l) * w.real();
  const double im = std::remainder(static_cast<double>(l) * w.imag(), 2 * std::numbers::pi);
  return std::exp(re) * cd(std::cos(im), std::sin(im));
}

}  // namespace detail

/// Validates a diagonal SSM: consistent (h, n2) shapes, finite values, Delta > 0.  Throws ssm::Error.
inline void check_ssm(const char* op, const DiagonalSSM& p) {
  SSM_CHECK(p.A.rows() >= 1 && p.A.cols() >= 1, op, ": argument 'A': expected shape (h, n2) with h, n2 >= 1, got (",
            p.A.rows(), ", ", p.A.cols(), ")");
  detail::check_param(op, "A", p.A, p.A.rows(), p.A.cols());
  detail::check_param(op, "B", p.B, p.A.rows(), p.A.cols());
  detail::check_param(op, "C", p.C, p.A.rows(), p.A.cols());
  detail::check_delta(op, p.Delta, p.A.rows());
}

/// Validates a DPLR SSM (as check_ssm for the diagonal form).
inline void check_ssm(const char* op, const DPLRSSM& p) {
  SSM_CHECK(p.Lambda.rows() >= 1 && p.Lambda.cols() >= 1, op,
            ": argument 'Lambda': expected shape (h, n2) with h, n2 >= 1, got (", p.Lambda.rows(), ", ",
            p.Lambda.cols(), ")");
  const Eigen::Index h = p.Lambda.rows(), n2 = p.Lambda.cols();
  detail::check_param(op, "Lambda", p.Lambda, h, n2);
  detail::check_param(op, "P", p.P, h, n2);
  detail::check_param(op, "B", p.B, h, n2);
  detail::check_param(op, "C", p.C, h, n2);
  detail::check_delta(op, p.Delta, h);
}

// ---- S4D: Vandermonde ------------------------------------------------------------------------------------------

/// Per-mode discretization of a diagonal SSM, one channel: A_bar_n and B_bar_n (docs/math.md §2.2).
/// zoh: A_bar = exp(ΔΛ), B_bar = (exp(ΔΛ) − 1)/Λ · B (expm1; Δ B as Λ → 0);
/// bilinear: A_bar = (1 + ΔΛ/2)/(1 − ΔΛ/2), B_bar = Δ B/(1 − ΔΛ/2).
inline void discretize_diagonal(Discretization method, cd Lambda, cd B, double Delta, cd& A_bar, cd& B_bar) {
  const cd z = Delta * Lambda;
  if (method == Discretization::zoh) {
    A_bar = std::exp(z);
    B_bar = Delta * ssm::detail::expm1_over(z) * B;
  } else if (method == Discretization::bilinear) {
    A_bar = (1.0 + z / 2.0) / (1.0 - z / 2.0);
    B_bar = Delta * B / (1.0 - z / 2.0);
  } else {
    fail("s4d: argument 'method': expected zoh or bilinear, got ", ssm::name(method));
  }
}

/// S4D kernel by Vandermonde products:  K_{c,l} = 2 Re Σ_n C_n B_bar_n A_bar_n^l,  l = 0..L-1.
/// The power table A_bar^l = exp(l log A_bar) is formed in double with range-reduced phases (see
/// detail::exp_scaled) as a product of a coarse and a fine table; the sums are in T.  p: diagonal SSM (h, n2); returns K (h, L), row-major.
/// Throws ssm::Error for bad shapes, non-finite parameters, Delta <= 0, L < 1, a method other than zoh/bilinear.
/// threads: the channels are split over this many threads (0: by the amount of work, ssm::cpu::cpu_threads).
template <class T>
std::vector<T> s4d_kernel_vandermonde(const DiagonalSSM& p, long L, Discretization method, int threads = 1) {
  check_ssm("s4d_kernel_vandermonde", p);
  detail::check_length("s4d_kernel_vandermonde", L);
  SSM_CHECK(method == Discretization::zoh || method == Discretization::bilinear,
            "s4d_kernel_vandermonde: argument 'method': expected zoh or bilinear, got ", ssm::name(method));
  SSM_CHECK(threads >= 0, "s4d_kernel_vandermonde: argument 'threads' must be >= 0, got ", threads);
  using ct = std::complex<T>;
  const Eigen::Index h = p.A.rows(), n2 = p.A.cols();
  std::vector<T> K(static_cast<size_t>(h * L));  // (h, L)
  constexpr long kBlock = 64;
  // Channels are independent: split over the threads (0: by the amount of work, ssm::cpu::cpu_threads).
  const int nt = cpu::cpu_threads(threads, static_cast<std::int64_t>(h) * n2 * L);
  cpu::parallel_for(h, nt, [&](std::int64_t task) {
    const auto c = static_cast<Eigen::Index>(task);
    std::vector<cd> fine(kBlock);                          // (64)  C_n B_bar_n exp(i w), i < 64
    std::vector<ct> acc(static_cast<size_t>(L), ct(0));  // (L)
    for (Eigen::Index n = 0; n < n2; ++n) {
      cd A_bar, B_bar;
      discretize_diagonal(method, p.A(c, n), p.B(c, n), p.Delta(c), A_bar, B_bar);
      const cd w = method == Discretization::zoh ? p.Delta(c) * p.A(c, n) : std::log(A_bar);
      // exp(l w) = exp(64 j w) · exp(i w) with l = 64 j + i: L/64 + 64 transcendental evaluations instead of L,
      // each factor correctly range-reduced, so the product carries ~2 eps (no error growth with l).
      const cd k = p.C(c, n) * B_bar;
      for (long i = 0; i < kBlock; ++i) fine[i] = k * detail::exp_scaled(w, i);
      for (long l0 = 0; l0 < L; l0 += kBlock) {
        const cd coarse = detail::exp_scaled(w, l0);
        const double cr = coarse.real(), ci = coarse.imag();
        const long len = std::min(kBlock, L - l0);
        // the product written out (std::complex's operator* checks for inf / nan through a library call)
        for (long i = 0; i < len; ++i)
          acc[l0 + i] += ct(static_cast<T>(cr * fine[i].real() - ci * fine[i].imag()),
                            static_cast<T>(cr * fine[i].imag() + ci * fine[i].real()));
      }
    }
    for (long l = 0; l < L; ++l) K[c * L + l] = T(2) * acc[l].real();
  });
  return K;
}

namespace detail {

/// E'(z) for E(z) = (e^z − 1)/z: (e^z − E(z))/z, by its series Σ_{k≥1} k z^{k−1}/(k+1)! near 0 (where the difference
/// cancels); 1/2 at z = 0.
inline cd expm1_over_derivative(cd z) {
  if (std::abs(z) < 0.1) {
    cd sum = 0, zk = 1;  // z^{k−1}
    double fact = 2;     // (k+1)!
    for (int k = 1; k <= 10; ++k) {
      sum += double(k) * zk / fact;
      zk *= z;
      fact *= double(k + 2);
    }
    return sum;
  }
  return (std::exp(z) - ssm::detail::expm1_over(z)) / z;
}

}  // namespace detail

/// The gradients of the S4D kernel: given G = ∂L/∂K (h, L) row-major (K = s4d_kernel_vandermonde(p, L, method)),
/// returns ∂L/∂A, ∂L/∂B and ∂L/∂C, each as ∂L/∂Re + i ∂L/∂Im (the direction of steepest ascent in the complex plane),
/// and ∂L/∂Delta, in a DiagonalSSM laid out as p.
///
/// Per mode, with W = C B_bar and K_l = 2 Re(W A_bar^l): S0 = Σ_l G_l A_bar^l and S1 = Σ_l l G_l A_bar^{l−1} (one
/// Vandermonde pass, the forward's power table), then ∂L/∂W = 2 conj(S0) and ∂L/∂A_bar = 2 conj(W S1); each then
/// goes back through a holomorphic map Y(X) as ∂L/∂X = conj(Y'(X)) ∂L/∂Y, and to the real Δ as Re(conj(∂L/∂Y) ∂Y/∂Δ):
///   zoh:      A_bar = e^z, B_bar = Δ E(z) B, z = ΔA, E(z) = (e^z − 1)/z;
///   bilinear: A_bar = (1 + z/2) q, B_bar = Δ B q, q = 1/(1 − z/2).
/// Sums in double. Same errors as s4d_kernel_vandermonde, and G must be non-null.
template <class T>
DiagonalSSM s4d_kernel_vandermonde_backward(const DiagonalSSM& p, const T* G, long L, Discretization method,
                                            int threads = 1) {
  check_ssm("s4d_kernel_vandermonde_backward", p);
  detail::check_length("s4d_kernel_vandermonde_backward", L);
  SSM_CHECK(method == Discretization::zoh || method == Discretization::bilinear,
            "s4d_kernel_vandermonde_backward: argument 'method': expected zoh or bilinear, got ", ssm::name(method));
  SSM_CHECK(G != nullptr, "s4d_kernel_vandermonde_backward: argument 'G' is null");
  SSM_CHECK(threads >= 0, "s4d_kernel_vandermonde_backward: argument 'threads' must be >= 0, got ", threads);
  const Eigen::Index h = p.A.rows(), n2 = p.A.cols();
  DiagonalSSM g;
  g.A = Eigen::MatrixXcd::Zero(h, n2), g.B = g.A, g.C = g.A;
  g.Delta = Eigen::VectorXd::Zero(h);
  constexpr long kBlock = 64;
  const int nt = cpu::cpu_threads(threads, static_cast<std::int64_t>(h) * n2 * L);
  cpu::parallel_for(h, nt, [&](std::int64_t task) {
    const auto c = static_cast<Eigen::Index>(task);
    const double Delta = p.Delta(c);
    const T* Gc = G + c * L;
    std::vector<cd> fine(kBlock);  // (64) exp(i w), i < 64
    double grad_Delta = 0;
    for (Eigen::Index n = 0; n < n2; ++n) {
      const cd A = p.A(c, n), B = p.B(c, n), C = p.C(c, n), z = Delta * A;
      cd A_bar, B_bar;
      discretize_diagonal(method, A, B, Delta, A_bar, B_bar);
      const cd w = method == Discretization::zoh ? z : std::log(A_bar);
      for (long i = 0; i < kBlock; ++i) fine[i] = detail::exp_scaled(w, i);
      cd S0 = 0, S1 = 0, prev = 0;  // prev: A_bar^{l−1}
      for (long l0 = 0; l0 < L; l0 += kBlock) {
        const cd coarse = detail::exp_scaled(w, l0);
        const long len = std::min(kBlock, L - l0);
        for (long i = 0; i < len; ++i) {
          const long l = l0 + i;
          const cd power = coarse * fine[i];  // A_bar^l
          const double Gl = static_cast<double>(Gc[l]);
          S0 += Gl * power;
          if (l > 0) S1 += double(l) * Gl * prev;
          prev = power;
        }
      }
      const cd W = C * B_bar;
      const cd g_W = 2.0 * std::conj(S0), g_A_bar = 2.0 * std::conj(W * S1);
      const cd g_B_bar = std::conj(C) * g_W;
      g.C(c, n) = std::conj(B_bar) * g_W;
      cd dA_bar_dA, dA_bar_dDelta, dB_bar_dA, dB_bar_dB, dB_bar_dDelta;
      if (method == Discretization::zoh) {
        const cd E = ssm::detail::expm1_over(z), dE = detail::expm1_over_derivative(z);
        dA_bar_dA = Delta * A_bar, dA_bar_dDelta = A * A_bar;
        dB_bar_dB = Delta * E, dB_bar_dA = Delta * Delta * dE * B, dB_bar_dDelta = E * B + Delta * A * dE * B;
      } else {
        const cd q = 1.0 / (1.0 - z / 2.0);
        dA_bar_dA = q * q * Delta, dA_bar_dDelta = q * q * A;
        dB_bar_dB = Delta * q, dB_bar_dA = Delta * Delta * B * q * q / 2.0,
        dB_bar_dDelta = B * q + Delta * B * q * q / 2.0 * A;
      }
      g.A(c, n) = std::conj(dA_bar_dA) * g_A_bar + std::conj(dB_bar_dA) * g_B_bar;
      g.B(c, n) = std::conj(dB_bar_dB) * g_B_bar;
      grad_Delta += (std::conj(g_A_bar) * dA_bar_dDelta + std::conj(g_B_bar) * dB_bar_dDelta).real();
    }
    g.Delta(c) = grad_Delta;
  });
  return g;
}

// ---- S4: DPLR, Cauchy + Woodbury ----------------------------------------------------------------------------

/// Channel c of a DPLR SSM as a dense system: A = diag(Λ_full) − P_full P_full^*, B_full, C_full (N = 2 n2).
template <class = void>  // (deferred: see the note at the top)
DenseSSM dplr_dense(const DPLRSSM& p, Eigen::Index c) {
  const Eigen::VectorXcd Lf = detail::full(p.Lambda, c), Pf = detail::full(p.P, c);  // (n)
  DenseSSM s;
  s.A = Eigen::MatrixXcd(Lf.asDiagonal()) - Pf * Pf.adjoint();
  s.B = detail::full(p.B, c);
  s.C = detail::full(p.C, c);
  return s;
}

/// Bilinear discretization of channel c (dense, double): A_bar (n, n), B_bar (n, 1).
template <class = void>  // (deferred: see the note at the top)
DiscreteSystem<cd> dplr_discretize(const DPLRSSM& p, Eigen::Index c) {
  const DenseSSM s = dplr_dense(p, c);
  return discretize_bilinear<cd>(s.A, Eigen::MatrixXcd(s.B), p.Delta(c));
}

/// C̃ = (I − A_bar^L)^T C per channel (step 1 of Algorithm 1; truncates the generating function to length L).
/// p.C: the untruncated C.  Returns C̃ (h, n2) (the kept half; the conjugate structure is preserved).
template <class = void>  // (deferred: see the note at the top)
Eigen::MatrixXcd s4_truncate_C(const DPLRSSM& p, long L) {
  check_ssm("s4_truncate_C", p);
  detail::check_length("s4_truncate_C", L);
  const Eigen::Index h = p.Lambda.rows(), n2 = p.Lambda.cols();
  Eigen::MatrixXcd Ctilde(h, n2);  // (h, n2)
  for (Eigen::Index c = 0; c < h; ++c) {
    const auto d = dplr_discretize(p, c);
    const Eigen::MatrixXcd M = Eigen::MatrixXcd::Identity(2 * n2, 2 * n2) - detail::matrix_power(d.A_bar, L);
    Ctilde.row(c) = (M.transpose() * detail::full(p.C, c)).head(n2).transpose();
  }
  return Ctilde;
}

/// Recovers the untruncated C from C̃ by solving (I − A_bar^L)^T C = C̃ (needed by the step mode).
/// p.C: C̃ for length L.  Returns C (h, n2).  Throws when I − A_bar^L is singular (an eigenvalue of A_bar is an
/// L-th root of unity: the generating function cannot be untruncated).
template <class = void>  // (deferred: see the note at the top)
Eigen::MatrixXcd s4_recover_C(const DPLRSSM& p, long L) {
  check_ssm("s4_recover_C", p);
  detail::check_length("s4_recover_C", L);
  const Eigen::Index h = p.Lambda.rows(), n2 = p.Lambda.cols();
  Eigen::MatrixXcd C(h, n2);  // (h, n2)
  for (Eigen::Index c = 0; c < h; ++c) {
    const auto d = dplr_discretize(p, c);
    const Eigen::MatrixXcd M = Eigen::MatrixXcd::Identity(2 * n2, 2 * n2) - detail::matrix_power(d.A_bar, L);
    Eigen::PartialPivLU<Eigen::MatrixXcd> lu(M.transpose());
    SSM_CHECK(lu.rcond() > 1e-12, "s4_recover_C: I - A_bar^L is singular for channel ", c,
              " (reciprocal condition ", lu.rcond(), ")");
    C.row(c) = lu.solve(detail::full(p.C, c)).head(n2).transpose();
  }
  return C;
}

/// S4 kernel by Algorithm 1: Cauchy sums over the full N modes at g(ω_k), Woodbury for the rank-one term,
/// evaluation at the roots of unity ω_k = exp(−2πi k/L) (k = 0..L/2; the kernel is real, so the other half is
/// the conjugate), inverse real FFT.  p.C must hold C̃ for this L.  Returns K (h, L) row-major, all in T.
///
/// Stable form (a simplification of the paper's, same value): with r_n = 1/((2/Δ)(1 − ω) − (1 + ω)Λ_n)
/// = 1/((1 + ω)(g(ω) − Λ_n)) and s_ab = Σ_n a_n b_n r_n,
///   K̂(ω) = 2/(1+ω) [k00 − k01 k10/(1 + k11)] = 2 [s00 − (1 + ω) s01 s10 / (1 + (1 + ω) s11)],
/// which stays finite at ω = −1 (k = L/2, even L), where g(ω) itself is infinite.
template <class T>
std::vector<T> s4_kernel_cauchy(const DPLRSSM& p, long L) {
  check_ssm("s4_kernel_cauchy", p);
  detail::check_length("s4_kernel_cauchy", L);
  using ct = std::complex<T>;
  const Eigen::Index h = p.Lambda.rows(), n2 = p.Lambda.cols();
  const long nk = L / 2 + 1;
  std::vector<T> K(static_cast<size_t>(h * L));  // (h, L)
  std::vector<ct> omega(nk);                     // (L/2+1)
  for (long k = 0; k < nk; ++k)
    omega[k] = ct(std::exp(cd(0, -2 * std::numbers::pi * static_cast<double>(k) / static_cast<double>(L))));
  std::vector<ct> Lambda(n2), CB(n2), CP(n2), QB(n2), QP(n2), CBc(n2), CPc(n2), QBc(n2);
  std::vector<ct> Khat(nk);  // (L/2+1)
  std::vector<T> Kc;         // (L)
  fft::RealFFT<T> plan;
  for (Eigen::Index c = 0; c < h; ++c) {
    const T two_over_dt = T(2 / p.Delta(c));
    for (Eigen::Index n = 0; n < n2; ++n) {
      const ct Lam = ct(p.Lambda(c, n)), Pn = ct(p.P(c, n)), Bn = ct(p.B(c, n)), Cn = ct(p.C(c, n));
      Lambda[n] = Lam;
      // Kept mode n (a = C̃ or Q^*-row conj(P), b = B or P) and its conjugate partner conj(·).
      CB[n] = Cn * Bn;
      CP[n] = Cn * Pn;
      QB[n] = std::conj(Pn) * Bn;
      QP[n] = std::norm(Pn);
      CBc[n] = std::conj(CB[n]);
      CPc[n] = std::conj(CP[n]);
      QBc[n] = Pn * std::conj(Bn);
    }
    for (long k = 0; k < nk; ++k) {
      const ct z = omega[k];
      const ct one_minus = two_over_dt * (T(1) - z), one_plus = T(1) + z;
      ct s00(0), s01(0), s10(0), s11(0);
      for (Eigen::Index n = 0; n < n2; ++n) {
        const ct r = T(1) / (one_minus - one_plus * Lambda[n]);
        const ct rc = T(1) / (one_minus - one_plus * std::conj(Lambda[n]));
        s00 += CB[n] * r + CBc[n] * rc;
        s01 += CP[n] * r + CPc[n] * rc;
        s10 += QB[n] * r + QBc[n] * rc;
        s11 += QP[n] * (r + rc);
      }
      Khat[k] = T(2) * (s00 - one_plus * s01 * s10 / (T(1) + one_plus * s11));
    }
    if (L % 2 == 0) Khat[nk - 1] = ct(Khat[nk - 1].real(), 0);  // real at ω = −1 (by conjugate symmetry)
    Khat[0] = ct(Khat[0].real(), 0);
    plan.irfft(Khat, Kc, static_cast<int>(L));
    std::copy(Kc.begin(), Kc.end(), K.begin() + c * L);
  }
  return K;
}

/// The gradients of the S4 kernel: given G = ∂L/∂K (h, L) row-major (K = s4_kernel_cauchy(p, L), p.C holding C̃),
/// returns ∂L/∂Λ, ∂L/∂P, ∂L/∂B and ∂L/∂C̃, each as ∂L/∂Re + i ∂L/∂Im, and ∂L/∂Δ, in a DPLRSSM laid out as p.
///
/// Backwards through s4_kernel_cauchy's steps, per channel, in double:
///  - the inverse real FFT: ∂L/∂K̂_k = (c_k / L) Σ_l G_l ω_k^l (an rfft of G), c_k = 2 but 1 at k = 0 and L/2, whose
///    imaginary parts the forward drops;
///  - K̂ = 2 [s00 − u s01 s10 / (1 + u s11)], u = 1 + ω: holomorphic in the four sums, ∂L/∂s = conj(∂K̂/∂s) ∂L/∂K̂;
///  - s_ab = Σ_n (p_n r_n + conj(p_n) r̄_n), r_n = 1/(m − u Λ_n), r̄_n = 1/(m − u conj(Λ_n)), m = (2/Δ)(1 − ω), with
///    p_n = C̃B, C̃P, P̄B, |P|²: a function of X and conj(X), so ∂L/∂X = conj(∂L/∂Y) ∂Y/∂X̄ + ∂L/∂Y conj(∂Y/∂X);
///  - the products to the parameters (C̃B → C̃, B; P̄B → P through its conjugate; |P|² → 2 Re-gradient · P).
/// Same errors as s4_kernel_cauchy, and G must be non-null. O(N L) per channel, as the forward.
template <class T>
DPLRSSM s4_kernel_cauchy_backward(const DPLRSSM& p, const T* G, long L) {
  check_ssm("s4_kernel_cauchy_backward", p);
  detail::check_length("s4_kernel_cauchy_backward", L);
  SSM_CHECK(G != nullptr, "s4_kernel_cauchy_backward: argument 'G' is null");
  const Eigen::Index h = p.Lambda.rows(), n2 = p.Lambda.cols();
  const long nk = L / 2 + 1;
  DPLRSSM g;
  g.Lambda = Eigen::MatrixXcd::Zero(h, n2), g.P = g.Lambda, g.B = g.Lambda, g.C = g.Lambda;
  g.Delta = Eigen::VectorXd::Zero(h);
  std::vector<cd> omega(nk);  // (L/2+1)
  for (long k = 0; k < nk; ++k) omega[k] = std::exp(cd(0, -2 * std::numbers::pi * double(k) / double(L)));
  fft::RealFFT<double> plan;
  std::vector<double> Gc(static_cast<size_t>(L));  // (L)
  std::vector<cd> gK;                              // (L/2+1) ∂L/∂K̂
  // Per mode: the sums' gradients with respect to the products p (as independent complex variables), |P|² (real),
  // and Λ.
  std::vector<cd> gCB(n2), gCP(n2), gQB(n2), gL(n2), CB(n2), CP(n2), QB(n2);
  std::vector<cd> rs(n2), rcs(n2);  // (n2) r_n and r̄_n at the current frequency, for the sums and their gradients
  std::vector<double> gQP(n2);
  for (Eigen::Index c = 0; c < h; ++c) {
    const double Delta = p.Delta(c), two_over_dt = 2 / Delta;
    for (long l = 0; l < L; ++l) Gc[l] = static_cast<double>(G[c * L + l]);
    plan.rfft(Gc, gK);
    for (long k = 0; k < nk; ++k) gK[k] *= (k == 0 || 2 * k == L ? 1.0 : 2.0) / double(L);
    gK[0] = gK[0].real();
    if (L % 2 == 0) gK[nk - 1] = gK[nk - 1].real();
    for (Eigen::Index n = 0; n < n2; ++n) {
      CB[n] = p.C(c, n) * p.B(c, n), CP[n] = p.C(c, n) * p.P(c, n), QB[n] = std::conj(p.P(c, n)) * p.B(c, n);
      gCB[n] = gCP[n] = gQB[n] = gL[n] = 0, gQP[n] = 0;
    }
    double gDelta = 0;
    for (long k = 0; k < nk; ++k) {
      const cd z = omega[k], m = two_over_dt * (1.0 - z), u = 1.0 + z;
      cd s00 = 0, s01 = 0, s10 = 0, s11 = 0;  // the forward's sums again
      for (Eigen::Index n = 0; n < n2; ++n) {
        const cd Lam = p.Lambda(c, n), r = 1.0 / (m - u * Lam), rc = 1.0 / (m - u * std::conj(Lam));
        rs[n] = r, rcs[n] = rc;
        s00 += CB[n] * r + std::conj(CB[n]) * rc;
        s01 += CP[n] * r + std::conj(CP[n]) * rc;
        s10 += QB[n] * r + std::conj(QB[n]) * rc;
        s11 += std::norm(p.P(c, n)) * (r + rc);
      }
      const cd D = 1.0 + u * s11;
      // ∂L/∂s = conj(∂K̂/∂s) ∂L/∂K̂
      const cd g00 = 2.0 * gK[k], g01 = std::conj(-2.0 * u * s10 / D) * gK[k],
               g10 = std::conj(-2.0 * u * s01 / D) * gK[k], g11 = std::conj(2.0 * u * u * s01 * s10 / (D * D)) * gK[k];
      cd dK_dDelta_weighted = 0;  // Σ_s conj(∂L/∂s) ∂s/∂Δ
      for (Eigen::Index n = 0; n < n2; ++n) {
        const cd r = rs[n], rc = rcs[n];
        // a term p r + conj(p) r̄ of a sum with gradient gs: ∂L/∂p = conj(gs) r̄ + gs conj(r)
        auto gp = [&](const cd& gs) { return std::conj(gs) * rc + gs * std::conj(r); };
        gCB[n] += gp(g00), gCP[n] += gp(g01), gQB[n] += gp(g10);
        gQP[n] += (std::conj(g11) * (r + rc)).real();
        // through Λ: ∂(p r)/∂Λ = p u r², ∂(conj(p) r̄)/∂Λ̄ = conj(p) u r̄²
        const cd pr[4] = {CB[n], CP[n], QB[n], cd(std::norm(p.P(c, n)))};
        const cd gs[4] = {g00, g01, g10, g11};
        const cd r2 = r * r, rc2 = rc * rc;
        for (int i = 0; i < 4; ++i) {
          gL[n] += std::conj(gs[i]) * std::conj(pr[i]) * u * rc2 + gs[i] * std::conj(pr[i] * u * r2);
          // ∂r/∂Δ = r² m / Δ (m = (2/Δ)(1 − ω)), likewise r̄
          dK_dDelta_weighted += std::conj(gs[i]) * (pr[i] * r2 + std::conj(pr[i]) * rc2) * (m / Delta);
        }
      }
      gDelta += dK_dDelta_weighted.real();
    }
    for (Eigen::Index n = 0; n < n2; ++n) {
      const cd C = p.C(c, n), B = p.B(c, n), P = p.P(c, n);
      g.C(c, n) = std::conj(B) * gCB[n] + std::conj(P) * gCP[n];
      g.B(c, n) = std::conj(C) * gCB[n] + P * gQB[n];
      g.P(c, n) = std::conj(C) * gCP[n] + std::conj(gQB[n]) * B + 2.0 * gQP[n] * P;
      g.Lambda(c, n) = gL[n];
    }
    g.Delta(c) = gDelta;
  }
  return g;
}

// ---- references by powers of A_bar -----------------------------------------------------------------------------

/// K_l = Re(C^T A_bar^l B_bar), l = 0..L-1, by L dense matrix-vector products (O(N² L)): the oracle.
/// A_bar (n, n), B_bar (n), C (n).  Returns K (L).
template <class = void>  // (deferred: see the note at the top)
std::vector<double> kernel_powers(const Eigen::MatrixXcd& A_bar, const Eigen::VectorXcd& B_bar,
                                         const Eigen::VectorXcd& C, long L) {
  detail::check_length("kernel_powers", L);
  SSM_CHECK(A_bar.rows() == A_bar.cols() && B_bar.size() == A_bar.rows() && C.size() == A_bar.rows(),
            "kernel_powers: arguments 'A_bar' (n, n), 'B_bar' (n), 'C' (n) disagree: (", A_bar.rows(), ", ",
            A_bar.cols(), "), (", B_bar.size(), "), (", C.size(), ")");
  std::vector<double> K(static_cast<size_t>(L));  // (L)
  Eigen::VectorXcd v = B_bar;                     // (n)  A_bar^l B_bar
  for (long l = 0; l < L; ++l) {
    K[l] = (C.array() * v.array()).sum().real();
    v = A_bar * v;
  }
  return K;
}

/// S4 kernel by powers of the dense bilinear A_bar (the reference for s4_kernel_cauchy).  p.C: untruncated C.
/// Returns K (h, L) in double.
template <class = void>  // (deferred: see the note at the top)
std::vector<double> s4_kernel_powers(const DPLRSSM& p, long L) {
  check_ssm("s4_kernel_powers", p);
  detail::check_length("s4_kernel_powers", L);
  const Eigen::Index h = p.Lambda.rows();
  std::vector<double> K(static_cast<size_t>(h * L));  // (h, L)
  for (Eigen::Index c = 0; c < h; ++c) {
    const auto d = dplr_discretize(p, c);
    const auto Kc = kernel_powers(d.A_bar, d.B_bar.col(0), detail::full(p.C, c), L);
    std::copy(Kc.begin(), Kc.end(), K.begin() + c * L);
  }
  return K;
}

/// S4D kernel by powers of the dense diagonal A_bar, discretized by the dense rules of discretize.hpp (Van Loan
/// for ZOH: an independent path from the expm1 formula).  Returns K (h, L) in double.
template <class = void>  // (deferred: see the note at the top)
std::vector<double> s4d_kernel_powers(const DiagonalSSM& p, long L, Discretization method) {
  check_ssm("s4d_kernel_powers", p);
  detail::check_length("s4d_kernel_powers", L);
  const Eigen::Index h = p.A.rows();
  std::vector<double> K(static_cast<size_t>(h * L));  // (h, L)
  for (Eigen::Index c = 0; c < h; ++c) {
    const Eigen::VectorXcd Af = detail::full(p.A, c);  // (n)
    const auto d = discretize<cd>(method, Eigen::MatrixXcd(Af.asDiagonal()),
                                  Eigen::MatrixXcd(detail::full(p.B, c)), p.Delta(c));
    const auto Kc = kernel_powers(d.A_bar, d.B_bar.col(0), detail::full(p.C, c), L);
    std::copy(Kc.begin(), Kc.end(), K.begin() + c * L);
  }
  return K;
}

}  // namespace ssm::s4

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
