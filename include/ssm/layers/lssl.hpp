// The linear state-space layer (LSSL; Gu et al. 2021, "Combining Recurrent, Convolutional, and Continuous-time
// Models with Linear State-Space Layers", §2-3; docs/math.md §1): one continuous model, three views that must agree:
// continuous (exact simulation for piecewise-constant input, each interval its own Delta_k), recurrent
// (step / sequence) and convolutional (kernel K_bar and causal convolution).
//
// Glossary (code -> paper):  A, B, C, D -> h'(t) = A h(t) + B x(t), y(t) = C h(t) + D x(t);
// A_bar, B_bar -> the discretized pair (DiscreteSystem);  K_bar -> (C B_bar, C A_bar B_bar, ..., C A_bar^{l-1} B_bar).
// Multi-input multi-output: x has m channels, y has p channels, the state n.
#pragma once

#include "ssm/core/eigen.hpp"
#include "ssm/core/macros.hpp"
SSM_EXTERNAL_INCLUDE_BEGIN
#include <Eigen/Dense>
SSM_EXTERNAL_INCLUDE_END

#include <complex>
#include <map>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/math/discretize.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 + AVX-512 false positive in Eigen (discretize.hpp)
#endif

namespace ssm {

/// LSSL over scalar T (float, double, std::complex<float>, std::complex<double>).  Discretization is computed in
/// double precision (double or complex<double>) and rounded to T once.
template <class T>
class LSSL {
 public:
  using Scalar = T;
  using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
  using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;
  /// The precision discretization and the continuous simulation run in.
  using Work = std::conditional_t<Eigen::NumTraits<T>::IsComplex, std::complex<double>, double>;
  using WorkMatrix = Eigen::Matrix<Work, Eigen::Dynamic, Eigen::Dynamic>;

  /// A: (n, n), B: (n, m), C: (p, n), D: (p, m); all finite.  Throws ssm::Error naming the mismatched argument.
  LSSL(Matrix A, Matrix B, Matrix C, Matrix D)
      : A_(std::move(A)), B_(std::move(B)), C_(std::move(C)), D_(std::move(D)) {
    const char* op = "LSSL";
    detail::check_system<T>(op, A_, B_);
    const Eigen::Index n = A_.rows(), m = B_.cols();
    SSM_CHECK(m >= 1, op, ": argument 'B': expected shape (", n, ", m) with m >= 1, got (", B_.rows(), ", ",
              B_.cols(), ")");
    SSM_CHECK(C_.cols() == n && C_.rows() >= 1, op, ": argument 'C': expected shape (p, ", n,
              ") with p >= 1 (n = rows of 'A'), got (", C_.rows(), ", ", C_.cols(), ")");
    SSM_CHECK(D_.rows() == C_.rows() && D_.cols() == m, op, ": argument 'D': expected shape (", C_.rows(), ", ", m,
              ") (p = rows of 'C', m = columns of 'B'), got (", D_.rows(), ", ", D_.cols(), ")");
    SSM_CHECK(detail::all_finite(C_), op, ": argument 'C' must be finite (it contains NaN or Inf)");
    SSM_CHECK(detail::all_finite(D_), op, ": argument 'D' must be finite (it contains NaN or Inf)");
  }

  Eigen::Index state_size() const { return A_.rows(); }   // n
  Eigen::Index input_size() const { return B_.cols(); }   // m
  Eigen::Index output_size() const { return C_.rows(); }  // p
  const Matrix& A() const { return A_; }  // (n, n)
  const Matrix& B() const { return B_; }  // (n, m)
  const Matrix& C() const { return C_; }  // (p, n)
  const Matrix& D() const { return D_; }  // (p, m)

  /// The discretized pair for step Delta (> 0) with the given rule (alpha for Discretization::gbt).
  DiscreteSystem<T> discretize(double Delta, Discretization method = Discretization::zoh, double alpha = 0.5) const {
    const DiscreteSystem<Work> d =
        ssm::discretize<Work>(method, A_.template cast<Work>(), B_.template cast<Work>(), Delta, alpha);
    return {d.A_bar.template cast<T>(), d.B_bar.template cast<T>()};
  }

  // ---- recurrent view -------------------------------------------------------------------------------------

  /// One step: h <- A_bar h + B_bar x, y = C h + D x.  h: (n) in/out, x: (m), returns y: (p).
  Vector step(const DiscreteSystem<T>& sys, Vector& h, const Vector& x) const {
    check_discrete("LSSL::step", sys);
    SSM_CHECK(h.size() == state_size(), "LSSL::step: argument 'h': expected shape (", state_size(), "), got (",
              h.size(), ")");
    SSM_CHECK(x.size() == input_size(), "LSSL::step: argument 'x': expected shape (", input_size(), "), got (",
              x.size(), ")");
    h = (sys.A_bar * h + sys.B_bar * x).eval();
    return C_ * h + D_ * x;
  }

  /// The recurrence over a sequence, h_{-1} = *h (zero when h is null): x: (l, m) -> y: (l, p).
  /// When h is given it holds the initial state on entry and the last state h_{l-1} on return.
  Matrix recurrence(const DiscreteSystem<T>& sys, const Matrix& x, Vector* h = nullptr) const {
    const char* op = "LSSL::recurrence";
    check_discrete(op, sys);
    check_input(op, x);
    Vector state = h ? *h : Vector::Zero(state_size());  // (n)
    SSM_CHECK(state.size() == state_size(), op, ": argument 'h': expected shape (", state_size(), "), got (",
              state.size(), ")");
    Matrix y(x.rows(), output_size());  // (l, p)
    for (Eigen::Index k = 0; k < x.rows(); ++k) {
      state = (sys.A_bar * state + sys.B_bar * x.row(k).transpose()).eval();
      y.row(k) = (C_ * state + D_ * x.row(k).transpose()).transpose();
    }
    if (h) *h = state;
    return y;
  }

  /// Gradients of recurrence() (zero initial state) over the pair discretize(Delta, method, alpha), for real T.
  struct RecurrenceGrads {
    Matrix grad_x;          // (l, m)
    Matrix grad_C;          // (p, n)
    Matrix grad_D;          // (p, m)
    double grad_Delta = 0;  // through A_bar and B_bar (A and B fixed: the LSSL with a trainable Δ)
  };

  /// The backward of recurrence(discretize(Delta, method, alpha), x): given x (l, m) and grad_y = ∂L/∂y (l, p),
  /// ∂L/∂x, ∂L/∂C, ∂L/∂D and ∂L/∂Δ. Backpropagation through time over the stored states, then
  /// ∂L/∂Δ = ⟨∂L/∂A_bar, dA_bar/dΔ⟩ + ⟨∂L/∂B_bar, dB_bar/dΔ⟩ with the exact derivatives of each rule:
  ///   zoh: dA_bar = A A_bar, dB_bar = A_bar B (d/dΔ exp(Δ [[A, B], [0, 0]]) = M exp(ΔM));
  ///   mamba: dA_bar = A A_bar, dB_bar = B;
  ///   gbt(α) (bilinear 1/2, forward Euler 0, backward Euler 1), E = I − αΔA: dA_bar = E⁻¹(α A A_bar + (1 − α) A),
  ///   dB_bar = E⁻¹(B + α A B_bar).
  RecurrenceGrads recurrence_backward(double Delta, Discretization method, const Matrix& x, const Matrix& grad_y,
                                      double alpha = 0.5) const
    requires(!Eigen::NumTraits<T>::IsComplex)
  {
    const char* op = "LSSL::recurrence_backward";
    check_input(op, x);
    SSM_CHECK(grad_y.rows() == x.rows() && grad_y.cols() == output_size(), op, ": argument 'grad_y': expected shape (",
              x.rows(), ", ", output_size(), "), got (", grad_y.rows(), ", ", grad_y.cols(), ")");
    SSM_CHECK(detail::all_finite(grad_y), op, ": argument 'grad_y' must be finite (it contains NaN or Inf)");
    const DiscreteSystem<T> sys = discretize(Delta, method, alpha);  // checks Delta and alpha
    const Eigen::Index l = x.rows(), n = state_size();
    Matrix h(l + 1, n);  // (l + 1, n): row k + 1 holds h_k, row 0 the zero initial state
    h.row(0).setZero();
    for (Eigen::Index k = 0; k < l; ++k)
      h.row(k + 1) = (sys.A_bar * h.row(k).transpose() + sys.B_bar * x.row(k).transpose()).transpose();
    RecurrenceGrads g;
    g.grad_x.resize(l, input_size());
    g.grad_C = grad_y.transpose() * h.bottomRows(l);  // Σ_k gy_k h_kᵀ
    g.grad_D = grad_y.transpose() * x;
    Matrix grad_A_bar = Matrix::Zero(n, n), grad_B_bar = Matrix::Zero(n, input_size());
    Vector gh = Vector::Zero(n);  // ∂L/∂h_k
    for (Eigen::Index k = l - 1; k >= 0; --k) {
      gh += C_.transpose() * grad_y.row(k).transpose();
      g.grad_x.row(k) = (sys.B_bar.transpose() * gh + D_.transpose() * grad_y.row(k).transpose()).transpose();
      grad_A_bar.noalias() += gh * h.row(k);
      grad_B_bar.noalias() += gh * x.row(k);
      gh = (sys.A_bar.transpose() * gh).eval();
    }
    const WorkMatrix A = A_.template cast<Work>(), B = B_.template cast<Work>();
    const WorkMatrix A_bar = sys.A_bar.template cast<Work>(), B_bar = sys.B_bar.template cast<Work>();
    WorkMatrix dA_bar, dB_bar;  // d/dΔ
    if (method == Discretization::zoh || method == Discretization::mamba) {
      dA_bar = A * A_bar;
      dB_bar = method == Discretization::zoh ? WorkMatrix(A_bar * B) : B;
    } else {
      const double a = method == Discretization::bilinear        ? 0.5
                       : method == Discretization::forward_euler ? 0.0
                       : method == Discretization::backward_euler ? 1.0
                                                                  : alpha;
      const WorkMatrix E = WorkMatrix::Identity(n, n) - Work(a * Delta) * A;
      Eigen::PartialPivLU<WorkMatrix> lu(E);
      dA_bar = lu.solve(Work(a) * A * A_bar + Work(1 - a) * A);
      dB_bar = lu.solve(B + Work(a) * A * B_bar);
    }
    g.grad_Delta = static_cast<double>((grad_A_bar.template cast<Work>().cwiseProduct(dA_bar)).sum() +
                                       (grad_B_bar.template cast<Work>().cwiseProduct(dB_bar)).sum());
    return g;
  }

  // ---- convolutional view ---------------------------------------------------------------------------------

  /// K_bar_j = C A_bar^j B_bar for j = 0..l-1: l matrices of shape (p, m).
  std::vector<Matrix> kernel(const DiscreteSystem<T>& sys, Eigen::Index l) const {
    check_discrete("LSSL::kernel", sys);
    SSM_CHECK(l >= 0, "LSSL::kernel: argument 'l' (kernel length) must be >= 0, got ", l);
    std::vector<Matrix> K_bar;
    K_bar.reserve(static_cast<size_t>(l));
    Matrix AjB = sys.B_bar;  // (n, m)  A_bar^j B_bar
    for (Eigen::Index j = 0; j < l; ++j) {
      K_bar.push_back(C_ * AjB);
      AjB = (sys.A_bar * AjB).eval();
    }
    return K_bar;
  }

  /// The causal convolution y_k = sum_{j <= k} K_bar_j x_{k-j} + D x_k (direct, O(l^2 p m): the reference).
  /// K_bar: at least l matrices (p, m); x: (l, m) -> y: (l, p).
  Matrix convolution(const std::vector<Matrix>& K_bar, const Matrix& x) const {
    const char* op = "LSSL::convolution";
    check_input(op, x);
    SSM_CHECK(static_cast<Eigen::Index>(K_bar.size()) >= x.rows(), op, ": argument 'K_bar': expected at least ",
              x.rows(), " matrices (the length of 'x'), got ", K_bar.size());
    for (const Matrix& K : K_bar)
      SSM_CHECK(K.rows() == output_size() && K.cols() == input_size(), op, ": argument 'K_bar': expected (",
                output_size(), ", ", input_size(), ") matrices, got (", K.rows(), ", ", K.cols(), ")");
    const Eigen::Index l = x.rows();
    Matrix y = x * D_.transpose();  // (l, p)
    // Lag by lag: y[j:] += x[:l-j] K_bar_j^T (one matrix product per lag instead of one per (k, j) pair).
    for (Eigen::Index j = 0; j < l; ++j)
      y.bottomRows(l - j).noalias() += x.topRows(l - j) * K_bar[static_cast<size_t>(j)].transpose();
    return y;
  }

  // ---- continuous view ------------------------------------------------------------------------------------

  /// Exact solution of the ODE for piecewise-constant input sampled at irregular times t_k = t_{k-1} + Delta_k:
  /// x_k is held on (t_{k-1}, t_k] (a missing sample is a longer interval), and y_k = C h(t_k) + D x_k.
  /// Each interval is integrated exactly with the block exponential exp(Delta_k [[A, B], [0, 0]]) applied to
  /// the augmented state (h, x_k), in double precision (one exponential per distinct Delta_k).
  /// x: (l, m), Delta: (l) each > 0 and finite -> y: (l, p).  h as in recurrence().
  Matrix simulate(const Matrix& x, std::span<const double> Delta, Vector* h = nullptr) const {
    const char* op = "LSSL::simulate";
    check_input(op, x);
    SSM_CHECK(static_cast<Eigen::Index>(Delta.size()) == x.rows(), op, ": argument 'Delta': expected shape (",
              x.rows(), ") (the length of 'x'), got (", Delta.size(), ")");
    for (double Delta_k : Delta) check_positive(op, "Delta", Delta_k);
    const Eigen::Index n = state_size(), m = input_size();
    Eigen::Matrix<Work, Eigen::Dynamic, 1> z(n + m);  // (n + m)  augmented state (h, x_k)
    if (h) {
      SSM_CHECK(h->size() == n, op, ": argument 'h': expected shape (", n, "), got (", h->size(), ")");
      z.head(n) = h->template cast<Work>();
    } else {
      z.head(n).setZero();
    }
    WorkMatrix M = WorkMatrix::Zero(n + m, n + m);  // (n + m, n + m)
    M.topLeftCorner(n, n) = A_.template cast<Work>();
    M.topRightCorner(n, m) = B_.template cast<Work>();
    const WorkMatrix Cw = C_.template cast<Work>(), Dw = D_.template cast<Work>();  // (p, n), (p, m)
    std::map<double, WorkMatrix> flow;  // Delta_k -> top n rows of exp(Delta_k M): (n, n + m)
    Matrix y(x.rows(), output_size());  // (l, p)
    for (Eigen::Index k = 0; k < x.rows(); ++k) {
      const double Delta_k = Delta[static_cast<size_t>(k)];
      auto it = flow.find(Delta_k);
      if (it == flow.end()) it = flow.emplace(Delta_k, (Work(Delta_k) * M).exp().topRows(n)).first;
      z.tail(m) = x.row(k).transpose().template cast<Work>();
      z.head(n) = (it->second * z).eval();
      y.row(k) = (Cw * z.head(n) + Dw * z.tail(m)).transpose().template cast<T>();
    }
    if (h) *h = z.head(n).template cast<T>();
    return y;
  }

 private:
  void check_discrete(const char* op, const DiscreteSystem<T>& sys) const {
    SSM_CHECK(sys.A_bar.rows() == state_size() && sys.A_bar.cols() == state_size(), op,
              ": argument 'A_bar': expected shape (", state_size(), ", ", state_size(), "), got (", sys.A_bar.rows(),
              ", ", sys.A_bar.cols(), ")");
    SSM_CHECK(sys.B_bar.rows() == state_size() && sys.B_bar.cols() == input_size(), op,
              ": argument 'B_bar': expected shape (", state_size(), ", ", input_size(), "), got (", sys.B_bar.rows(),
              ", ", sys.B_bar.cols(), ")");
  }
  void check_input(const char* op, const Matrix& x) const {
    SSM_CHECK(x.cols() == input_size(), op, ": argument 'x': expected shape (l, ", input_size(),
              ") (m = columns of 'B'), got (", x.rows(), ", ", x.cols(), ")");
  }

  Matrix A_;  // (n, n)
  Matrix B_;  // (n, m)
  Matrix C_;  // (p, n)
  Matrix D_;  // (p, m)
};

}  // namespace ssm

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
