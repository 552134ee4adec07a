// The S4 and S4D layers (Gu, Goel & Ré 2022, S4 §3 and Algorithm 1; Gu et al. 2022, S4D; the standalone layers of
// state-spaces/s4 `s4d.py` / `s4.py`): h independent SSM channels with state N, skip D, optional output activation
// and mixing.  Conv mode (kernel + causal FFT convolution) for whole sequences, step mode (recurrence) for
// streaming, and conv mode with a carried state so a long signal can be fed in pieces.
//
// Glossary (code → paper): A / Lambda = Λ, P = P (A = Λ − P P^*), B, C, Ctilde = C̃, D = D (skip), Delta = Δ,
// A_bar, B_bar = discretized (ZOH or bilinear), K = K_bar (the convolution kernel), state = x_k of the paper (named
// `state` here because x is the input).  Step forms: S4D diagonal (N/2 modes, y = 2 Re Σ C h); S4 dense (full N
// complex A_bar, O(N²) per step) or diagonalized (eigenvectors W of A_bar: N modes, O(N) per step).
#pragma once

#include <cmath>
#include <complex>
#include <cstdint>
#include <cstring>
#include <istream>
#include <memory>
#include <ostream>
#include <random>
#include <vector>

#include "ssm/core/eigen.hpp"
#include "ssm/core/macros.hpp"
SSM_EXTERNAL_INCLUDE_BEGIN
#include <Eigen/Eigenvalues>
SSM_EXTERNAL_INCLUDE_END

#include "ssm/core/check.hpp"
#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/params/long_conv.hpp"
#include "ssm/core/scalar.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/long_conv.hpp"
#include "ssm/cpu/threads.hpp"
#include "ssm/math/causal_conv.hpp"
#include "ssm/math/hippo.hpp"
#include "ssm/math/s4_kernel.hpp"
#include "ssm/ops/glu.hpp"
#include "ssm/ops/linear.hpp"
#include "ssm/ops/long_conv.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace ssm {

/// Output activation and mixing after y = K * x + D x (as the reference standalone layers):
/// none; GELU then a linear h → h map (W_out (h, h), b_out (h)); GELU then linear h → 2h and GLU
/// (out_i = z_i · sigmoid(z_{h+i}); W_out (2h, h), b_out (2h)).
enum class OutputMix { none, gelu_linear, gelu_glu };

/// S4D initializations of A (docs/math.md §3.3): S4D-Lin, S4D-Inv, S4D-LegS.
enum class S4DInit { lin, inv, legs };

/// S4 step forms, all in the full N-dimensional basis of the normal part:
///  - dense: A_bar materialized (O(N²) per step);
///  - linear: the DPLR structure kept, A_bar s = (I − Δ/2 A)^{-1} (I + Δ/2 A) s with the inverse by
///    Sherman–Morrison (O(N) per step; stable);
///  - diagonal: A_bar = W diag(mu) W^{-1} by a complex eigendecomposition (O(N) per step).  HiPPO-LegS is far
///    from normal: W's condition grows exponentially with N (S4 paper, Lemma 3.2), so this form is refused when
///    W is ill-conditioned (for LegS already at moderate N) — use linear.
enum class StepForm { dense, linear, diagonal };

namespace s4 {

/// A diagonal recurrence over m complex modes per channel: state_k = A_bar ⊙ state_{k-1} + B_bar x_k,
/// y_k = scale · Re Σ_m C_m state_k,m  (scale 2 when only one of each conjugate pair is kept).
template <class T>
struct DiagonalRecurrence {
  long h = 0, m = 0;
  T scale = 1;
  std::vector<std::complex<T>> A_bar, B_bar, C;  // (h, m) each
  Eigen::MatrixXcd W;                            // (n, n)  eigenvectors of channel 0 (S4 only; informational)
};

/// A dense recurrence over n complex states per channel: state_k = A_bar state_{k-1} + B_bar x_k, y = Re C^T state.
template <class T>
struct DenseRecurrence {
  long h = 0, n = 0;
  std::vector<std::complex<T>> A_bar;  // (h, n, n) row-major per channel
  std::vector<std::complex<T>> B_bar;  // (h, n)
  std::vector<std::complex<T>> C;      // (h, n)
};

/// The DPLR recurrence in O(N) per step (bilinear): with A = diag(Lambda) − P P^* (full basis),
///   u = s + Δ/2 (Lambda ⊙ s − P (P^* s)) + Δ B x            ((I + Δ/2 A) s + Δ B x)
///   s' = E^{-1} u − E^{-1} P · (Δ/2)(P^* E^{-1} u) / (1 + (Δ/2) P^* E^{-1} P),   E = I − Δ/2 diag(Lambda)
///   y = Re C^T s'.
template <class T>
struct LinearRecurrence {
  long h = 0, n = 0;
  std::vector<std::complex<T>> E_inv, P, B, C, Lambda;  // (h, n) each
  std::vector<std::complex<T>> denom;                   // (h)  1 + (Δ/2) P^* E^{-1} P
  std::vector<T> half_dt, dt;                           // (h)

  /// One step of channel c on the state s (n), input x; returns y.
  T step(long c, std::complex<T>* s, T x) const {
    const std::complex<T>* Lc = Lambda.data() + c * n;
    const std::complex<T>* Pc = P.data() + c * n;
    const std::complex<T>* Bc = B.data() + c * n;
    const std::complex<T>* Ec = E_inv.data() + c * n;
    const std::complex<T>* Cc = C.data() + c * n;
    std::complex<T> Ps(0);
    for (long i = 0; i < n; ++i) Ps += std::conj(Pc[i]) * s[i];
    std::complex<T> PEu(0);
    for (long i = 0; i < n; ++i) {
      s[i] = Ec[i] * (s[i] + half_dt[c] * (Lc[i] * s[i] - Pc[i] * Ps) + dt[c] * x * Bc[i]);  // E^{-1} u
      PEu += std::conj(Pc[i]) * s[i];
    }
    const std::complex<T> k = half_dt[c] * PEu / denom[c];
    std::complex<T> y(0);
    for (long i = 0; i < n; ++i) {
      s[i] -= Ec[i] * Pc[i] * k;
      y += Cc[i] * s[i];
    }
    return y.real();
  }
};

/// S4 linear-step parameters from C̃ (p.C) for length L (C recovered as for the dense form).
template <class T>
LinearRecurrence<T> s4_recurrence_linear(const DPLRSSM& p, long L) {
  const Eigen::MatrixXcd C = s4_recover_C(p, L);  // (h, n2)
  LinearRecurrence<T> r;
  r.h = p.Lambda.rows();
  r.n = 2 * p.Lambda.cols();
  for (auto* v : {&r.E_inv, &r.P, &r.B, &r.C, &r.Lambda}) v->resize(r.h * r.n);
  r.denom.resize(r.h);
  r.half_dt.resize(r.h);
  r.dt.resize(r.h);
  for (long c = 0; c < r.h; ++c) {
    const double dt = p.Delta(c);
    const Eigen::VectorXcd Lf = detail::full(p.Lambda, c), Pf = detail::full(p.P, c), Bf = detail::full(p.B, c),
                           Cf = detail::full(C, c);  // (n)
    cd denom = 1.0;
    for (long i = 0; i < r.n; ++i) {
      const cd E_inv = 1.0 / (1.0 - dt / 2 * Lf(i));
      denom += dt / 2 * std::norm(Pf(i)) * E_inv;
      r.E_inv[c * r.n + i] = std::complex<T>(E_inv);
      r.P[c * r.n + i] = std::complex<T>(Pf(i));
      r.B[c * r.n + i] = std::complex<T>(Bf(i));
      r.C[c * r.n + i] = std::complex<T>(Cf(i));
      r.Lambda[c * r.n + i] = std::complex<T>(Lf(i));
    }
    r.denom[c] = std::complex<T>(denom);
    r.half_dt[c] = static_cast<T>(dt / 2);
    r.dt[c] = static_cast<T>(dt);
  }
  return r;
}

/// S4D step parameters: per mode discretize_diagonal (zoh or bilinear); m = n2, scale 2.
template <class T>
DiagonalRecurrence<T> s4d_recurrence(const DiagonalSSM& p, Discretization method) {
  check_ssm("s4d_recurrence", p);
  DiagonalRecurrence<T> r;
  r.h = p.A.rows();
  r.m = p.A.cols();
  r.scale = 2;
  r.A_bar.resize(r.h * r.m);
  r.B_bar.resize(r.h * r.m);
  r.C.resize(r.h * r.m);
  for (long c = 0; c < r.h; ++c)
    for (long n = 0; n < r.m; ++n) {
      cd A_bar, B_bar;
      discretize_diagonal(method, p.A(c, n), p.B(c, n), p.Delta(c), A_bar, B_bar);
      r.A_bar[c * r.m + n] = std::complex<T>(A_bar);
      r.B_bar[c * r.m + n] = std::complex<T>(B_bar);
      r.C[c * r.m + n] = std::complex<T>(p.C(c, n));
    }
  return r;
}

/// S4 dense step parameters from C̃ (p.C) for length L: C recovered by (I − A_bar^L)^T C = C̃, full N basis.
template <class T>
DenseRecurrence<T> s4_recurrence_dense(const DPLRSSM& p, long L) {
  const Eigen::MatrixXcd C = s4_recover_C(p, L);  // (h, n2)
  DenseRecurrence<T> r;
  r.h = p.Lambda.rows();
  r.n = 2 * p.Lambda.cols();
  r.A_bar.resize(r.h * r.n * r.n);
  r.B_bar.resize(r.h * r.n);
  r.C.resize(r.h * r.n);
  for (long c = 0; c < r.h; ++c) {
    const auto d = dplr_discretize(p, c);
    const Eigen::VectorXcd Cf = detail::full(C, c);  // (n)
    for (long i = 0; i < r.n; ++i) {
      for (long j = 0; j < r.n; ++j) r.A_bar[(c * r.n + i) * r.n + j] = std::complex<T>(d.A_bar(i, j));
      r.B_bar[c * r.n + i] = std::complex<T>(d.B_bar(i, 0));
      r.C[c * r.n + i] = std::complex<T>(Cf(i));
    }
  }
  return r;
}

/// S4 diagonalized step parameters: A_bar = W diag(mu) W^{-1} (complex eigendecomposition in double),
/// B' = W^{-1} B_bar, C' = W^T C with C recovered from C̃ (p.C) for length L.  m = N modes, scale 1.
template <class T>
DiagonalRecurrence<T> s4_recurrence_diagonal(const DPLRSSM& p, long L) {
  const Eigen::MatrixXcd C = s4_recover_C(p, L);  // (h, n2)
  DiagonalRecurrence<T> r;
  r.h = p.Lambda.rows();
  r.m = 2 * p.Lambda.cols();
  r.scale = 1;
  r.A_bar.resize(r.h * r.m);
  r.B_bar.resize(r.h * r.m);
  r.C.resize(r.h * r.m);
  for (long c = 0; c < r.h; ++c) {
    const auto d = dplr_discretize(p, c);
    Eigen::ComplexEigenSolver<Eigen::MatrixXcd> eig(d.A_bar);
    SSM_CHECK(eig.info() == Eigen::Success, "s4_recurrence_diagonal: eigendecomposition of A_bar failed for channel ",
              c);
    const Eigen::MatrixXcd& W = eig.eigenvectors();  // (n, n)
    Eigen::PartialPivLU<Eigen::MatrixXcd> lu(W);
    SSM_CHECK(lu.rcond() > 1e-12, "s4_recurrence_diagonal: A_bar is not diagonalizable (eigenvector condition ",
              lu.rcond(), ") for channel ", c, "; use StepForm::dense");
    const Eigen::VectorXcd Bp = lu.solve(d.B_bar.col(0));             // (n)
    const Eigen::VectorXcd Cp = W.transpose() * detail::full(C, c);  // (n)
    for (long i = 0; i < r.m; ++i) {
      r.A_bar[c * r.m + i] = std::complex<T>(eig.eigenvalues()(i));
      r.B_bar[c * r.m + i] = std::complex<T>(Bp(i));
      r.C[c * r.m + i] = std::complex<T>(Cp(i));
    }
    if (c == 0) r.W = W;
  }
  return r;
}

}  // namespace s4

/// The recurrent state of an S4 / S4D layer for a batch: complex (b, h, m), m = modes of the step form.
/// Saveable and restorable (binary: magic, dtype size, form, b, h, m, data).
template <class T>
class S4State {
 public:
  enum class Form : std::uint32_t { diagonal = 1, dense = 2 };

  S4State() = default;
  S4State(Form form, long b, long h, long m) : form_(form), b_(b), h_(h), m_(m), state(b * h * m) {
    SSM_CHECK(b >= 1 && h >= 1 && m >= 1, "S4State: arguments 'b', 'h', 'm' must be >= 1, got ", b, ", ", h, ", ",
              m);
  }

  Form form() const { return form_; }
  long batch() const { return b_; }
  long channels() const { return h_; }
  long modes() const { return m_; }
  void reset() { std::fill(state.begin(), state.end(), std::complex<T>(0)); }

  /// Writes the state to a binary stream.
  void save(std::ostream& os) const {
    os.write(kMagic, 8);
    const std::uint32_t header[2] = {static_cast<std::uint32_t>(sizeof(T)), static_cast<std::uint32_t>(form_)};
    os.write(reinterpret_cast<const char*>(header), sizeof(header));
    const std::int64_t dims[3] = {b_, h_, m_};
    os.write(reinterpret_cast<const char*>(dims), sizeof(dims));
    os.write(reinterpret_cast<const char*>(state.data()),
             static_cast<std::streamsize>(state.size() * sizeof(std::complex<T>)));
    SSM_CHECK(os.good(), "S4State::save: writing the stream failed");
  }

  /// Reads a state written by save; throws ssm::Error on a wrong magic, dtype, form or a truncated stream.
  static S4State load(std::istream& is) {
    char magic[8] = {};
    is.read(magic, 8);
    SSM_CHECK(is.gcount() == 8 && std::memcmp(magic, kMagic, 8) == 0,
              "S4State::load: argument 'stream': not an S4 state (bad magic or truncated header)");
    std::uint32_t header[2] = {};
    is.read(reinterpret_cast<char*>(header), sizeof(header));
    SSM_CHECK(is.gcount() == static_cast<std::streamsize>(sizeof(header)),
              "S4State::load: argument 'stream': truncated header");
    SSM_CHECK(header[0] == sizeof(T), "S4State::load: argument 'stream': expected a state of ", sizeof(T),
              "-byte reals, got ", header[0]);
    SSM_CHECK(header[1] == 1 || header[1] == 2, "S4State::load: argument 'stream': unknown form ", header[1]);
    std::int64_t dims[3] = {};
    is.read(reinterpret_cast<char*>(dims), sizeof(dims));
    SSM_CHECK(is.gcount() == static_cast<std::streamsize>(sizeof(dims)),
              "S4State::load: argument 'stream': truncated header");
    for (int i = 0; i < 3; ++i)
      SSM_CHECK(dims[i] >= 1 && dims[i] <= (std::int64_t(1) << 30), "S4State::load: argument 'stream': dimension ",
                i, " out of range: ", dims[i]);
    SSM_CHECK(dims[0] * dims[1] * dims[2] <= (std::int64_t(1) << 32),
              "S4State::load: argument 'stream': state too large");
    S4State s(static_cast<Form>(header[1]), dims[0], dims[1], dims[2]);
    const auto bytes = static_cast<std::streamsize>(s.state.size() * sizeof(std::complex<T>));
    is.read(reinterpret_cast<char*>(s.state.data()), bytes);
    SSM_CHECK(is.gcount() == bytes, "S4State::load: argument 'stream': truncated data (expected ", bytes,
              " bytes, got ", is.gcount(), ")");
    return s;
  }

 private:
  static constexpr char kMagic[9] = "SSMS4ST1";
  Form form_ = Form::diagonal;
  long b_ = 0, h_ = 0, m_ = 0;

 public:
  std::vector<std::complex<T>> state;  // (b, h, m)
};

/// Gradients of an S4 / S4D layer's conv-mode forward (backward()): of the input, and of every parameter in its
/// layout. A complex parameter X gets ∂L/∂Re X + i ∂L/∂Im X; Delta's entries are real. SSM: s4::DiagonalSSM (S4D)
/// or s4::DPLRSSM (S4, whose C holds ∂L/∂C̃).
template <class T, class SSM>
struct S4LayerGrads {
  std::vector<T> grad_x;  // (b, l, h)
  SSM ssm;                // the SSM's parameters, as the layer's `ssm`
  Eigen::VectorXd D;      // (h)
  Eigen::MatrixXd W_out;  // as the layer's (empty without output mixing)
  Eigen::VectorXd b_out;
};

namespace detail {

/// Validates the common layer configuration.
inline void check_layer_config(const char* op, long h, long N, double dt_min, double dt_max) {
  SSM_CHECK(h >= 1, op, ": argument 'h' (channels) must be >= 1, got ", h);
  SSM_CHECK(N >= 2 && N % 2 == 0, op, ": argument 'N' (state size) must be even and >= 2 (conjugate pairs), got ",
            N);
  check_positive(op, "dt_min", dt_min);
  check_positive(op, "dt_max", dt_max);
  SSM_CHECK(dt_max >= dt_min, op, ": argument 'dt_max' must be >= dt_min = ", dt_min, ", got ", dt_max);
}

/// The shared part of both layers: D skip, output mixing, conv / step / carried-state forward.
template <class T>
class SSMLayerBase {
  using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

 public:
  Eigen::VectorXd D;      // (h)
  Eigen::MatrixXd W_out;  // (h, h) for gelu_linear, (2h, h) for gelu_glu, empty for none
  Eigen::VectorXd b_out;  // (h) or (2h)

  long channels() const { return h_; }
  OutputMix mix() const { return mix_; }

  /// The device that forward on views computes on: where to() copied D and the output mixing; the CPU unless moved.
  Device device() const { return dev_ ? dev_->device : Device::cpu(); }

  /// Threads the conv-mode forward may use (channels and output rows split over them); 0, the default: the
  /// hardware threads, fewer for a small problem (ssm::cpu::cpu_threads).
  void set_threads(int threads) {
    SSM_CHECK(threads >= 0, "S4 layer: set_threads: threads must be >= 0, got ", threads);
    threads_ = threads;
  }

 protected:
  SSMLayerBase(long h, OutputMix mix, std::mt19937_64& rng) : h_(h), mix_(mix) {
    std::normal_distribution<double> normal;
    D.resize(h);
    for (long c = 0; c < h; ++c) D(c) = normal(rng);  // s4d.py: D = randn(H)
    if (mix != OutputMix::none) {
      const long rows = mix == OutputMix::gelu_glu ? 2 * h : h;
      const double bound = 1.0 / std::sqrt(static_cast<double>(h));  // PyTorch's default Linear/Conv1d init
      std::uniform_real_distribution<double> uni(-bound, bound);
      W_out.resize(rows, h);
      b_out.resize(rows);
      for (long i = 0; i < rows; ++i) {
        for (long j = 0; j < h; ++j) W_out(i, j) = uni(rng);
        b_out(i) = uni(rng);
      }
    }
  }

  void check_io(const char* op, const T* x, const T* y, long b, long l, const char* y_name = "y") const {
    SSM_CHECK(b >= 1, op, ": argument 'b' (batch) must be >= 1, got ", b);
    SSM_CHECK(l >= 1, op, ": argument 'l' (sequence length) must be >= 1, got ", l);
    SSM_CHECK(x != nullptr, op, ": argument 'x' is null");
    SSM_CHECK(y != nullptr, op, ": argument '", y_name, "' is null");
    SSM_CHECK(D.size() == h_, op, ": parameter 'D': expected shape (", h_, "), got (", D.size(), ")");
  }

  /// The views' checks. The device comes first, so a tensor on the wrong device is refused before anything reads its
  /// memory: forward takes x and y on the layer's device(); the backward (Eigen and the host FFT) CPU tensors only.
  void check_views(const char* op, const TensorView& x, const TensorView& y, const char* y_name = "y",
                   bool backward = false) const {
    Checker ck(op);
    const Device on = backward ? Device::cpu() : device();
    const char* what = backward ? ": the backward runs on the CPU (CPU tensors; the layer's device copy is not used)"
                                : ": move it there (Tensor::to) or the layer to its device (to())";
    ck.require(x.device() == on, "x", "is on ", x.device().str(), " but must be on ", on.str(), what);
    ck.require(y.device() == on, y_name, "is on ", y.device().str(), " but must be on ", on.str(), what);
    ck.dtype("x", x, dtype_of<T>()).rank("x", x, 3).shape("x", x, {kAny, kAny, h_}).contiguous("x", x);
    ck.require(x.size(0) >= 1 && x.size(1) >= 1, "x", "expected b >= 1 and l >= 1, got shape ", x.shape().str());
    ck.dtype(y_name, y, dtype_of<T>()).shape(y_name, y, {x.size(0), x.size(1), h_}).contiguous(y_name, y);
  }

  /// Copies D and the output mixing (W_out, b_out) to `device` in T (none for the CPU): to().
  void move_params(Device device) {
    dev_.reset();
    if (device.is_cpu()) return;
    check_mix();
    SSM_CHECK(D.size() == h_, "S4 layer: to: parameter 'D': expected shape (", h_, "), got (", D.size(), ")");
    auto host = [](const auto& M, const Dims& shape) {  // a matrix (rows, cols) or vector (n), row-major in T
      Tensor t = Tensor::empty(shape, dtype_of<T>());
      for (Eigen::Index i = 0; i < M.rows(); ++i)
        for (Eigen::Index j = 0; j < M.cols(); ++j) t.data_as<T>()[i * M.cols() + j] = static_cast<T>(M(i, j));
      return t;
    };
    auto d = std::make_shared<DeviceParams>();
    d->device = device;
    d->D = host(D, {h_}).to(device);
    if (mix_ != OutputMix::none) {
      d->W_out = host(W_out, {W_out.rows(), h_}).to(device);
      d->b_out = host(b_out, {b_out.size()}).to(device);
    }
    dev_ = std::move(d);
  }

  /// forward on the layer's device: y (b, l, h) = mix(K * x + D x) with K (h, l) computed on the CPU and copied
  /// there; the long convolution with the skip term (and GELU, when there is mixing), then the linear map and GLU.
  void device_forward(const std::vector<T>& K, const TensorView& x, const TensorView& y) const {
    const index_t b = x.size(0), l = x.size(1);
    const Device on = dev_->device;
    const Tensor K_dev = Tensor::from_vector({h_, l}, K).to(on);  // (h, l)
    LongConvOptions conv;
    if (mix_ == OutputMix::none) {
      long_conv_into({x, K_dev.view(), dev_->D.view()}, y, conv);
      return;
    }
    conv.activation = LongConvActivation::gelu;
    const Tensor a = long_conv({x, K_dev.view(), dev_->D.view()}, conv);  // (b, l, h) GELU(K * x + D x)
    const TensorView a_rows(a.data(), dtype_of<T>(), on, {b * l, h_});    // (b·l, h)
    const TensorView y_rows(y.data(), dtype_of<T>(), on, {b * l, h_});    // (b·l, h)
    const LinearInputs mixing{a_rows, dev_->W_out.view(), dev_->b_out.view()};
    if (mix_ == OutputMix::gelu_linear) {
      linear_into(mixing, y_rows);
      return;
    }
    const Tensor z = linear(mixing);  // (b·l, 2h)
    glu_into(z, y_rows);
  }

  /// Output mixing of r time steps, in place over y (r, h): Z = GELU(y) W_outᵀ + b_out (r, rows) by one matrix
  /// product, then y = Z (gelu_linear) or Z[:, :h] ⊙ σ(Z[:, h:]) (gelu_glu).
  void apply_mix(T* y, long r = 1) const {
    if (mix_ == OutputMix::none) return;
    RowMatrix a(r, h_);  // (r, h) GELU(y)
    for (long i = 0; i < r * h_; ++i) a.data()[i] = scalar::gelu(static_cast<double>(y[i]));
    const RowMatrix z = (a * W_out.transpose()).rowwise() + b_out.transpose();  // (r, rows)
    for (long i = 0; i < r; ++i)
      for (long c = 0; c < h_; ++c)
        y[i * h_ + c] =
            static_cast<T>(mix_ == OutputMix::gelu_linear ? z(i, c) : z(i, c) / (1.0 + std::exp(-z(i, h_ + c))));
  }

  void check_mix() const {
    if (mix_ == OutputMix::none) return;
    const long rows = mix_ == OutputMix::gelu_glu ? 2 * h_ : h_;
    SSM_CHECK(W_out.rows() == rows && W_out.cols() == h_, "S4 layer: parameter 'W_out': expected shape (", rows,
              ", ", h_, "), got (", W_out.rows(), ", ", W_out.cols(), ")");
    SSM_CHECK(b_out.size() == rows, "S4 layer: parameter 'b_out': expected shape (", rows, "), got (", b_out.size(),
              ")");
  }

  /// y (b, l, h) = mix(K * x + D x [+ carried-state response]); K (h, l); x (b, l, h).
  /// `carry(bi, c, xc, yc)`, when given, adds the response of the carried state to yc (l) and advances it over
  /// the piece xc (l).
  template <class Carry>
  void conv_forward(const std::vector<T>& K, const T* x, T* y, long b, long l, Carry&& carry) const {
    check_mix();
    conv(K, x, y, b, l, carry);
    if (mix_ != OutputMix::none) {
      constexpr long kRows = 64;
      const int threads = cpu::cpu_threads(threads_, static_cast<std::int64_t>(b) * h_ * l * 16);
      cpu::parallel_for((b * l + kRows - 1) / kRows, threads, [&](std::int64_t task) {
        const long r0 = static_cast<long>(task) * kRows;
        apply_mix(y + r0 * h_, std::min(b * l, r0 + kRows) - r0);
      });
    }
  }
  void conv_forward(const std::vector<T>& K, const T* x, T* y, long b, long l) const {
    conv_forward(K, x, y, b, l, [](long, long, const std::vector<T>&, std::vector<T>&) {});
  }

  /// The backward of conv_forward without a carried state: from x and grad_y (b, l, h), grad_x (b, l, h), G = ∂L/∂K
  /// (h, l) in double, and the gradients of D, W_out and b_out. y = K * x + D x is a causal convolution, so its
  /// adjoints are correlations, each a causal convolution of reversed sequences:
  ///   ∂L/∂x = rev(rev(g) * K) + D g,   ∂L/∂K = rev(rev(g) * x) summed over the batch,   ∂L/∂D = Σ g x,
  /// with g = ∂L/∂y before the output mixing (whose backward comes first, from y recomputed). Threads split the
  /// channels (each sums its batch rows in order: no result depends on the thread count).
  void conv_backward(const std::vector<T>& K, const T* x, const T* grad_y, long b, long l, T* grad_x,
                     std::vector<double>& G, Eigen::VectorXd& grad_D, Eigen::MatrixXd& grad_W_out,
                     Eigen::VectorXd& grad_b_out) const {
    check_mix();
    std::vector<T> g_pre;  // (b, l, h) ∂L/∂y before the mixing, when there is one
    const T* g = grad_y;
    grad_W_out = Eigen::MatrixXd::Zero(W_out.rows(), W_out.cols());
    grad_b_out = Eigen::VectorXd::Zero(b_out.size());
    if (mix_ != OutputMix::none) {
      g_pre.resize(static_cast<std::size_t>(b * l * h_));
      conv(K, x, g_pre.data(), b, l, [](long, long, const std::vector<T>&, std::vector<T>&) {});  // y before mixing
      // Blocks of rows in parallel, each summing W_out's and b_out's gradients over its rows; the blocks' sums are
      // added in block order, so the result does not depend on the thread count.
      constexpr long kRows = 64;
      const long blocks = (b * l + kRows - 1) / kRows;
      std::vector<Eigen::MatrixXd> part_W(static_cast<std::size_t>(blocks));
      std::vector<Eigen::VectorXd> part_b(static_cast<std::size_t>(blocks));
      const int mix_threads = cpu::cpu_threads(threads_, static_cast<std::int64_t>(b) * l * W_out.size() * 3);
      cpu::parallel_for(blocks, mix_threads, [&](std::int64_t task) {
        Eigen::MatrixXd& gW = part_W[static_cast<std::size_t>(task)];
        Eigen::VectorXd& gb = part_b[static_cast<std::size_t>(task)];
        gW = Eigen::MatrixXd::Zero(W_out.rows(), W_out.cols());
        gb = Eigen::VectorXd::Zero(b_out.size());
        const long r0 = static_cast<long>(task) * kRows;
        mix_backward(g_pre.data() + r0 * h_, grad_y + r0 * h_, std::min(b * l, r0 + kRows) - r0, gW, gb);
      });
      for (long k = 0; k < blocks; ++k)
        grad_W_out += part_W[static_cast<std::size_t>(k)], grad_b_out += part_b[static_cast<std::size_t>(k)];
      g = g_pre.data();
    }
    G.assign(static_cast<std::size_t>(h_ * l), 0.0);
    grad_D = Eigen::VectorXd::Zero(h_);
    constexpr long kPer = 16;
    const long groups = (h_ + kPer - 1) / kPer;
    const int threads = cpu::cpu_threads(threads_, static_cast<std::int64_t>(b) * h_ * l * 48);
    cpu::parallel_for(groups, threads, [&](std::int64_t task) {
      const long c0 = static_cast<long>(task) * kPer;
      std::vector<T> xc(l), gr(l), out(l);  // (l) the input, the reversed gradient, a convolution
      fft::RealFFT<T> plan;
      for (long c = c0; c < std::min(h_, c0 + kPer); ++c) {
        double* Gc = G.data() + c * l;
        const T Dc = static_cast<T>(D(c));
        double gD = 0;
        for (long bi = 0; bi < b; ++bi) {
          for (long t = 0; t < l; ++t) {
            xc[t] = x[(bi * l + t) * h_ + c];
            gr[l - 1 - t] = g[(bi * l + t) * h_ + c];
            gD += static_cast<double>(gr[l - 1 - t]) * static_cast<double>(xc[t]);
          }
          causal_conv(gr.data(), K.data() + c * l, out.data(), l, &plan);
          for (long t = 0; t < l; ++t) grad_x[(bi * l + t) * h_ + c] = out[l - 1 - t] + Dc * gr[l - 1 - t];
          causal_conv(gr.data(), xc.data(), out.data(), l, &plan);
          for (long k = 0; k < l; ++k) Gc[k] += static_cast<double>(out[l - 1 - k]);
        }
        grad_D(c) = gD;
      }
    });
  }

  /// y (b, l, h) = K * x + D x [+ the carried state's response]: conv_forward before the output mixing. The long
  /// convolution op's CPU loop (cpu/long_conv.hpp), whose per-channel hook runs the carried state: the channels (and
  /// the states the callback advances) of its tasks are disjoint.
  template <class Carry>
  void conv(const std::vector<T>& K, const T* x, T* y, long b, long l, Carry&& carry) const {
    std::vector<T> D_t(static_cast<std::size_t>(h_));  // (h)
    for (long c = 0; c < h_; ++c) D_t[c] = static_cast<T>(D(c));
    LongConvParams p;
    p.batch = b, p.seqlen = l, p.channels = h_, p.filter_len = l, p.dtype = dtype_of<T>();
    p.x = x, p.x_strides[0] = l * h_, p.x_strides[1] = h_, p.K = K.data(), p.D = D_t.data();
    p.y = y, p.y_strides[0] = l * h_, p.y_strides[1] = h_;
    cpu::long_conv_channels<T>(p, threads_, [&](std::int64_t bi, std::int64_t c, const std::vector<T>& xc,
                                                 std::vector<T>& yc) { carry(bi, c, xc, yc); });
  }

  /// The backward of apply_mix over r time steps: y (r, h) holds the steps before the mixing; on return it holds
  /// ∂L/∂y, given grad_out (r, h) = ∂L/∂(mixed y); the gradients of W_out and b_out are accumulated (matrix products
  /// over the r rows). Thread-safe for distinct y and accumulators.
  void mix_backward(T* y, const T* grad_out, long r, Eigen::MatrixXd& grad_W_out, Eigen::VectorXd& grad_b_out) const {
    const long rows = W_out.rows();
    RowMatrix a(r, h_), gz(r, rows);  // GELU(y) (r, h), ∂L/∂Z (r, rows)
    for (long i = 0; i < r * h_; ++i) a.data()[i] = scalar::gelu(static_cast<double>(y[i]));
    if (mix_ == OutputMix::gelu_linear) {
      for (long i = 0; i < r * rows; ++i) gz.data()[i] = static_cast<double>(grad_out[i]);
    } else {                                                                      // out_c = z_c σ(z_{h+c})
      const RowMatrix z = (a * W_out.transpose()).rowwise() + b_out.transpose();  // (r, 2h)
      for (long i = 0; i < r; ++i)
        for (long c = 0; c < h_; ++c) {
          const double sg = 1.0 / (1.0 + std::exp(-z(i, h_ + c))), go = static_cast<double>(grad_out[i * h_ + c]);
          gz(i, c) = go * sg;
          gz(i, h_ + c) = go * z(i, c) * sg * (1.0 - sg);
        }
    }
    grad_W_out.noalias() += gz.transpose() * a;
    grad_b_out += gz.colwise().sum().transpose();
    const RowMatrix ga = gz * W_out;  // (r, h) ∂L/∂GELU(y)
    for (long i = 0; i < r * h_; ++i)
      y[i] = static_cast<T>(ga.data()[i] * scalar::gelu_grad(static_cast<double>(y[i])));
  }

  /// Carried state for a diagonal recurrence: y_t += scale Re Σ_m C_m A_bar_m^{t+1} s_m; s advanced over xc.
  static void carry_diagonal(const s4::DiagonalRecurrence<T>& rec, std::complex<T>* s, const std::vector<T>& xc,
                             std::vector<T>& yc, long c) {
    const long m = rec.m, l = static_cast<long>(xc.size());
    const std::complex<T>* A_bar = rec.A_bar.data() + c * m;
    const std::complex<T>* B_bar = rec.B_bar.data() + c * m;
    const std::complex<T>* C = rec.C.data() + c * m;
    for (long i = 0; i < m; ++i) {
      std::complex<T> v = C[i] * s[i];
      std::complex<T> si = s[i];
      for (long t = 0; t < l; ++t) {
        v *= A_bar[i];
        yc[t] += rec.scale * v.real();
        si = A_bar[i] * si + B_bar[i] * xc[t];
      }
      s[i] = si;
    }
  }

  /// Carried state for the DPLR linear recurrence: the zero-input response of s is run by the O(N) step (it is
  /// C A_bar^{t+1} s), then s is advanced over the piece; O(l N) per channel.
  static void carry_linear(const s4::LinearRecurrence<T>& rec, std::complex<T>* s, const std::vector<T>& xc,
                           std::vector<T>& yc, long c) {
    const long l = static_cast<long>(xc.size());
    std::vector<std::complex<T>> z(s, s + rec.n);  // (n)
    for (long t = 0; t < l; ++t) yc[t] += rec.step(c, z.data(), T(0));
    for (long t = 0; t < l; ++t) rec.step(c, s, xc[t]);
  }

  /// One step of a diagonal recurrence: x (b, h) → y (b, h).
  void step_diagonal(const s4::DiagonalRecurrence<T>& rec, const T* x, T* y, S4State<T>& state) const {
    check_mix();
    const long b = state.batch(), m = rec.m;
    for (long bi = 0; bi < b; ++bi) {
      for (long c = 0; c < h_; ++c) {
        std::complex<T>* s = state.state.data() + (bi * h_ + c) * m;  // (m)
        const T xv = x[bi * h_ + c];
        std::complex<T> acc(0);
        for (long i = 0; i < m; ++i) {
          s[i] = rec.A_bar[c * m + i] * s[i] + rec.B_bar[c * m + i] * xv;
          acc += rec.C[c * m + i] * s[i];
        }
        y[bi * h_ + c] = rec.scale * acc.real() + static_cast<T>(D(c)) * xv;
      }
    }
    apply_mix(y, b);  // the batch's rows in one product
  }

  /// One step of a dense recurrence: x (b, h) → y (b, h).
  void step_dense(const s4::DenseRecurrence<T>& rec, const T* x, T* y, S4State<T>& state) const {
    check_mix();
    const long b = state.batch(), n = rec.n;
    std::vector<std::complex<T>> next(n);  // (n)
    for (long bi = 0; bi < b; ++bi) {
      for (long c = 0; c < h_; ++c) {
        std::complex<T>* s = state.state.data() + (bi * h_ + c) * n;  // (n)
        const T xv = x[bi * h_ + c];
        const std::complex<T>* A_bar = rec.A_bar.data() + c * n * n;
        std::complex<T> acc(0);
        for (long i = 0; i < n; ++i) {
          std::complex<T> v = rec.B_bar[c * n + i] * xv;
          for (long j = 0; j < n; ++j) v += A_bar[i * n + j] * s[j];
          next[i] = v;
        }
        for (long i = 0; i < n; ++i) {
          s[i] = next[i];
          acc += rec.C[c * n + i] * s[i];
        }
        y[bi * h_ + c] = acc.real() + static_cast<T>(D(c)) * xv;
      }
    }
    apply_mix(y, b);
  }

  void check_state(const char* op, const S4State<T>& state, typename S4State<T>::Form form, long m) const {
    SSM_CHECK(state.form() == form && state.channels() == h_ && state.modes() == m, op,
              ": argument 'state': expected form ", static_cast<int>(form), " with (h, m) = (", h_, ", ", m,
              "), got form ", static_cast<int>(state.form()), " with (", state.channels(), ", ", state.modes(),
              ")");
  }

  // D and the output mixing on a device other than the CPU (to()), in T.
  struct DeviceParams {
    Device device;
    Tensor D;             // (h)
    Tensor W_out, b_out;  // (rows, h), (rows); undefined without mixing
  };

  long h_;
  OutputMix mix_;
  int threads_ = 0;                          // see set_threads
  std::shared_ptr<const DeviceParams> dev_;  // set by to() for a device other than the CPU
};

}  // namespace detail

/// S4D layer: diagonal A (S4D-Lin / Inv / LegS), kernel by Vandermonde (ZOH or bilinear).
/// Data layout: x, y (b, l, h) row-major.
template <class T>
class S4DLayer : public detail::SSMLayerBase<T> {
  using Base = detail::SSMLayerBase<T>;

 public:
  struct Config {
    long h = 1;                                   // channels
    long N = 64;                                  // state size (N/2 complex modes kept)
    S4DInit init = S4DInit::lin;                  // A initialization
    Discretization method = Discretization::zoh;  // zoh or bilinear
    OutputMix mix = OutputMix::none;
    double dt_min = 1e-3, dt_max = 1e-1;  // Δ log-uniform in [dt_min, dt_max]
    std::uint64_t seed = 0;
  };

  s4::DiagonalSSM ssm;  // A, B, C (h, N/2), Delta (h)

  /// Published init: Δ log-uniform in [dt_min, dt_max]; A from S4D-Lin/Inv/LegS; B = 1 (Lin, Inv) or the HiPPO
  /// B of the DPLR form (LegS); C complex normal (Re, Im ~ N(0, 1/2)); D ~ N(0, 1).
  explicit S4DLayer(const Config& cfg) : S4DLayer(cfg, make_rng(cfg)) {}

  Discretization method() const { return method_; }

  /// Recomputes the step parameters; call after changing `ssm` (forward recomputes the kernel itself).
  void setup_step() { rec_ = s4::s4d_recurrence<T>(ssm, method_); }

  /// The kernel K (h, l) by Vandermonde.
  std::vector<T> kernel(long l) const { return s4::s4d_kernel_vandermonde<T>(ssm, l, method_, this->threads_); }

  /// Conv mode: y = mix(K * x + D x).  x, y: (b, l, h) row-major.
  void forward(const T* x, T* y, long b, long l) const {
    this->check_io("S4DLayer::forward", x, y, b, l);
    this->conv_forward(kernel(l), x, y, b, l);
  }
  /// Conv mode on views: x, y (b, l, h) contiguous tensors of dtype T on the layer's device() (see to()).
  void forward(const TensorView& x, const TensorView& y) const {
    this->check_views("S4DLayer::forward", x, y);
    if (this->dev_) return this->device_forward(kernel(x.size(1)), x, y);
    forward(x.data_as<const T>(), y.data_as<T>(), x.size(0), x.size(1));
  }

  /// This layer with D and the output mixing copied to `device` (the same layer for the CPU; f32 or f64): forward on
  /// views then takes x and y there and runs the ops on them (the long convolution with the skip term and GELU, the
  /// output linear map, GLU); the kernel K is computed on the CPU from `ssm` at each call and copied over. The step
  /// mode, the carried-state forward (host pointers) and the backward (CPU tensors) run on the CPU as before. Changes
  /// to D, W_out or b_out after to() reach the device through another to().
  S4DLayer to(Device device) const {
    S4DLayer m = *this;
    m.move_params(device);
    return m;
  }
  /// Conv mode continuing from `state` (the state after the previous piece), which is advanced: feeding a signal
  /// in pieces gives the same output as one call.
  void forward(const T* x, T* y, long b, long l, S4State<T>& state) const {
    this->check_io("S4DLayer::forward", x, y, b, l);
    this->check_state("S4DLayer::forward", state, S4State<T>::Form::diagonal, rec_.m);
    SSM_CHECK(state.batch() == b, "S4DLayer::forward: argument 'state': expected batch ", b, ", got ", state.batch());
    const long m = rec_.m, h = this->h_;
    this->conv_forward(kernel(l), x, y, b, l, [&](long bi, long c, const std::vector<T>& xc, std::vector<T>& yc) {
      Base::carry_diagonal(rec_, state.state.data() + (bi * h + c) * m, xc, yc, c);
    });
  }

  /// Gradients of the conv-mode forward (from a zero state): given x and grad_y = ∂L/∂y (b, l, h), ∂L/∂x and the
  /// gradient of every parameter (of A, B, C through the Vandermonde kernel: s4::s4d_kernel_vandermonde_backward).
  S4LayerGrads<T, s4::DiagonalSSM> backward(const T* x, const T* grad_y, long b, long l) const {
    this->check_io("S4DLayer::backward", x, grad_y, b, l, "grad_y");
    S4LayerGrads<T, s4::DiagonalSSM> g;
    g.grad_x.resize(static_cast<std::size_t>(b * l * this->h_));
    std::vector<double> G;  // (h, l) ∂L/∂K
    this->conv_backward(kernel(l), x, grad_y, b, l, g.grad_x.data(), G, g.D, g.W_out, g.b_out);
    g.ssm = s4::s4d_kernel_vandermonde_backward(ssm, G.data(), l, method_, this->threads_);
    return g;
  }
  /// backward on views: x, grad_y (b, l, h) contiguous CPU tensors of dtype T (also for a layer moved by to()).
  S4LayerGrads<T, s4::DiagonalSSM> backward(const TensorView& x, const TensorView& grad_y) const {
    this->check_views("S4DLayer::backward", x, grad_y, "grad_y", true);
    return backward(x.data_as<const T>(), grad_y.data_as<const T>(), x.size(0), x.size(1));
  }

  /// A zero state for batch b.
  S4State<T> initial_state(long b) const { return S4State<T>(S4State<T>::Form::diagonal, b, this->h_, rec_.m); }

  /// Step mode: one sample per channel, x (b, h) → y (b, h), O(N) per channel.
  void step(const T* x, T* y, S4State<T>& state) const {
    SSM_CHECK(x != nullptr && y != nullptr, "S4DLayer::step: arguments 'x' and 'y' must not be null");
    this->check_state("S4DLayer::step", state, S4State<T>::Form::diagonal, rec_.m);
    this->step_diagonal(rec_, x, y, state);
  }

 private:
  static std::mt19937_64 make_rng(const Config& cfg) {
    detail::check_layer_config("S4DLayer", cfg.h, cfg.N, cfg.dt_min, cfg.dt_max);
    SSM_CHECK(cfg.method == Discretization::zoh || cfg.method == Discretization::bilinear,
              "S4DLayer: argument 'method': expected zoh or bilinear, got ", ssm::name(cfg.method));
    return std::mt19937_64(cfg.seed);
  }
  S4DLayer(const Config& cfg, std::mt19937_64 rng) : Base(cfg.h, cfg.mix, rng), method_(cfg.method) {
    const long h = cfg.h, n2 = cfg.N / 2;
    Eigen::VectorXcd A0(n2), B0 = Eigen::VectorXcd::Ones(n2);  // (n2)
    switch (cfg.init) {
      case S4DInit::lin: A0 = hippo::s4d_lin(static_cast<int>(cfg.N)); break;
      case S4DInit::inv: A0 = hippo::s4d_inv(static_cast<int>(cfg.N)); break;
      case S4DInit::legs: {
        const auto d = hippo::dplr_legs(static_cast<int>(cfg.N));
        A0 = d.Lambda;
        B0 = d.B;
        break;
      }
    }
    std::normal_distribution<double> normal(0.0, std::sqrt(0.5));
    std::uniform_real_distribution<double> uni(std::log(cfg.dt_min), std::log(cfg.dt_max));
    ssm.A.resize(h, n2);
    ssm.B.resize(h, n2);
    ssm.C.resize(h, n2);
    ssm.Delta.resize(h);
    for (long c = 0; c < h; ++c) {
      ssm.A.row(c) = A0.transpose();
      ssm.B.row(c) = B0.transpose();
      for (long n = 0; n < n2; ++n) ssm.C(c, n) = s4::cd(normal(rng), normal(rng));
      ssm.Delta(c) = std::exp(uni(rng));
    }
    setup_step();
  }

  Discretization method_;
  s4::DiagonalRecurrence<T> rec_;
};

/// S4 layer: DPLR A (HiPPO-LegS), kernel by Cauchy + Woodbury (bilinear).  The trained parameter is C̃ for the
/// length l_max (as in S4); step mode recovers C.  Data layout: x, y (b, l, h) row-major.
template <class T>
class S4Layer : public detail::SSMLayerBase<T> {
  using Base = detail::SSMLayerBase<T>;

 public:
  struct Config {
    long h = 1;
    long N = 64;
    long l_max = 1024;  // the length C̃ is truncated to
    StepForm step_form = StepForm::linear;
    OutputMix mix = OutputMix::none;
    double dt_min = 1e-3, dt_max = 1e-1;
    std::uint64_t seed = 0;
  };

  s4::DPLRSSM ssm;  // Lambda, P, B (h, N/2) from HiPPO-LegS; C holds C̃ for l_max; Delta (h)

  /// Published init: Λ, P, B of the DPLR form of HiPPO-LegS (all channels); C̃ complex normal (S4 initializes
  /// C̃ directly: a random C̃ is as random as a random C); Δ log-uniform; D ~ N(0, 1).
  explicit S4Layer(const Config& cfg) : S4Layer(cfg, make_rng(cfg)) {}

  long l_max() const { return l_max_; }
  StepForm step_form() const { return form_; }

  /// Recomputes the step parameters (C from C̃, A_bar, its eigendecomposition); call after changing `ssm`.
  void setup_step() {
    linear_ = s4::s4_recurrence_linear<T>(ssm, l_max_);  // also used by forward with a carried state
    if (form_ == StepForm::dense) dense_ = s4::s4_recurrence_dense<T>(ssm, l_max_);
    if (form_ == StepForm::diagonal) rec_ = s4::s4_recurrence_diagonal<T>(ssm, l_max_);
  }

  /// The kernel K (h, l): Cauchy + Woodbury for l_max, truncated to l when l <= l_max; for l > l_max C̃ is
  /// re-truncated to l first (C recovered, then C̃ for l).
  std::vector<T> kernel(long l) const {
    SSM_CHECK(l >= 1, "S4Layer::kernel: argument 'l' must be >= 1, got ", l);
    if (l > l_max_) {
      s4::DPLRSSM p = ssm;
      p.C = s4::s4_recover_C(ssm, l_max_);
      p.C = s4::s4_truncate_C(p, l);
      return s4::s4_kernel_cauchy<T>(p, l);
    }
    const std::vector<T> K = s4::s4_kernel_cauchy<T>(ssm, l_max_);  // (h, l_max)
    if (l == l_max_) return K;
    std::vector<T> Kl(this->h_ * l);  // (h, l)
    for (long c = 0; c < this->h_; ++c) std::copy(K.begin() + c * l_max_, K.begin() + c * l_max_ + l, Kl.begin() + c * l);
    return Kl;
  }

  /// Conv mode: y = mix(K * x + D x).  x, y: (b, l, h) row-major.
  void forward(const T* x, T* y, long b, long l) const {
    this->check_io("S4Layer::forward", x, y, b, l);
    this->conv_forward(kernel(l), x, y, b, l);
  }
  /// Conv mode on views: x, y (b, l, h) contiguous tensors of dtype T on the layer's device() (see to()).
  void forward(const TensorView& x, const TensorView& y) const {
    this->check_views("S4Layer::forward", x, y);
    if (this->dev_) return this->device_forward(kernel(x.size(1)), x, y);
    forward(x.data_as<const T>(), y.data_as<T>(), x.size(0), x.size(1));
  }

  /// This layer with D and the output mixing copied to `device`: as S4DLayer::to (the kernel by Cauchy + Woodbury on
  /// the CPU at each call, the ops on the device; step, carried-state forward and backward on the CPU).
  S4Layer to(Device device) const {
    S4Layer m = *this;
    m.move_params(device);
    return m;
  }
  /// Conv mode continuing from a carried state, which is advanced (the state of StepForm::dense / linear: both
  /// live in the full N basis; the response of the state is run by the O(N) linear step).
  void forward(const T* x, T* y, long b, long l, S4State<T>& state) const {
    this->check_io("S4Layer::forward", x, y, b, l);
    SSM_CHECK(form_ != StepForm::diagonal,
              "S4Layer::forward: a carried state needs StepForm::dense or linear (the diagonal state is in the "
              "eigenvector basis)");
    this->check_state("S4Layer::forward", state, S4State<T>::Form::dense, linear_.n);
    SSM_CHECK(state.batch() == b, "S4Layer::forward: argument 'state': expected batch ", b, ", got ", state.batch());
    const long n = linear_.n, h = this->h_;
    this->conv_forward(kernel(l), x, y, b, l, [&](long bi, long c, const std::vector<T>& xc, std::vector<T>& yc) {
      Base::carry_linear(linear_, state.state.data() + (bi * h + c) * n, xc, yc, c);
    });
  }

  /// Gradients of the conv-mode forward (from a zero state) for l <= l_max: given x and grad_y = ∂L/∂y (b, l, h),
  /// ∂L/∂x and the gradient of every parameter: of Λ, P, B, C̃ and Δ through the Cauchy + Woodbury kernel
  /// (s4::s4_kernel_cauchy_backward; the kernel is computed for l_max and truncated, so ∂L/∂K is zero past l).
  /// l > l_max is an ssm::Error: that kernel re-truncates C̃ through the recovered C, which has no backward here.
  S4LayerGrads<T, s4::DPLRSSM> backward(const T* x, const T* grad_y, long b, long l) const {
    this->check_io("S4Layer::backward", x, grad_y, b, l, "grad_y");
    SSM_CHECK(l <= l_max_, "S4Layer::backward: argument 'l' (", l, ") exceeds l_max (", l_max_,
              "): the kernel past l_max re-truncates C̃, which has no backward; build the layer with l_max >= the "
              "training length");
    S4LayerGrads<T, s4::DPLRSSM> g;
    g.grad_x.resize(static_cast<std::size_t>(b * l * this->h_));
    std::vector<double> G;  // (h, l) ∂L/∂K
    this->conv_backward(kernel(l), x, grad_y, b, l, g.grad_x.data(), G, g.D, g.W_out, g.b_out);
    std::vector<double> G_max(static_cast<std::size_t>(this->h_ * l_max_), 0.0);  // (h, l_max)
    for (long c = 0; c < this->h_; ++c) std::copy_n(G.begin() + c * l, l, G_max.begin() + c * l_max_);
    g.ssm = s4::s4_kernel_cauchy_backward(ssm, G_max.data(), l_max_);
    return g;
  }
  /// backward on views: x, grad_y (b, l, h) contiguous CPU tensors of dtype T (also for a layer moved by to()).
  S4LayerGrads<T, s4::DPLRSSM> backward(const TensorView& x, const TensorView& grad_y) const {
    this->check_views("S4Layer::backward", x, grad_y, "grad_y", true);
    return backward(x.data_as<const T>(), grad_y.data_as<const T>(), x.size(0), x.size(1));
  }

  /// A zero state for batch b in this layer's step form.
  S4State<T> initial_state(long b) const {
    return form_ == StepForm::diagonal ? S4State<T>(S4State<T>::Form::diagonal, b, this->h_, rec_.m)
                                       : S4State<T>(S4State<T>::Form::dense, b, this->h_, linear_.n);
  }

  /// Step mode: x (b, h) → y (b, h); O(N²) (dense) or O(N) (linear, diagonal) per channel.
  void step(const T* x, T* y, S4State<T>& state) const {
    SSM_CHECK(x != nullptr && y != nullptr, "S4Layer::step: arguments 'x' and 'y' must not be null");
    if (form_ == StepForm::diagonal) {
      this->check_state("S4Layer::step", state, S4State<T>::Form::diagonal, rec_.m);
      this->step_diagonal(rec_, x, y, state);
      return;
    }
    this->check_state("S4Layer::step", state, S4State<T>::Form::dense, linear_.n);
    if (form_ == StepForm::dense) {
      this->step_dense(dense_, x, y, state);
      return;
    }
    this->check_mix();
    const long h = this->h_, n = linear_.n;
    for (long bi = 0; bi < state.batch(); ++bi) {
      for (long c = 0; c < h; ++c) {
        const T xv = x[bi * h + c];
        y[bi * h + c] = linear_.step(c, state.state.data() + (bi * h + c) * n, xv) + static_cast<T>(this->D(c)) * xv;
      }
    }
    this->apply_mix(y, state.batch());
  }

 private:
  static std::mt19937_64 make_rng(const Config& cfg) {
    detail::check_layer_config("S4Layer", cfg.h, cfg.N, cfg.dt_min, cfg.dt_max);
    SSM_CHECK(cfg.l_max >= 1, "S4Layer: argument 'l_max' must be >= 1, got ", cfg.l_max);
    return std::mt19937_64(cfg.seed);
  }
  S4Layer(const Config& cfg, std::mt19937_64 rng)
      : Base(cfg.h, cfg.mix, rng), l_max_(cfg.l_max), form_(cfg.step_form) {
    const long h = cfg.h, n2 = cfg.N / 2;
    const auto d = hippo::dplr_legs(static_cast<int>(cfg.N));
    std::normal_distribution<double> normal(0.0, std::sqrt(0.5));
    std::uniform_real_distribution<double> uni(std::log(cfg.dt_min), std::log(cfg.dt_max));
    ssm.Lambda.resize(h, n2);
    ssm.P.resize(h, n2);
    ssm.B.resize(h, n2);
    ssm.C.resize(h, n2);
    ssm.Delta.resize(h);
    for (long c = 0; c < h; ++c) {
      ssm.Lambda.row(c) = d.Lambda.transpose();
      ssm.P.row(c) = d.P.transpose();
      ssm.B.row(c) = d.B.transpose();
      for (long n = 0; n < n2; ++n) ssm.C(c, n) = s4::cd(normal(rng), normal(rng));
      ssm.Delta(c) = std::exp(uni(rng));
    }
    setup_step();
  }

  long l_max_;
  StepForm form_;
  s4::DiagonalRecurrence<T> rec_;
  s4::DenseRecurrence<T> dense_;
  s4::LinearRecurrence<T> linear_;
};

}  // namespace ssm

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
