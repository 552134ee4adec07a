// The S4 and S4D layers (layers/s4.hpp) as trainable mixers of a models::HybridStack. The layers keep their SSM in
// complex Eigen matrices; an optimizer updates real vectors in place. So the mixer's parameters are real vectors in
// the published parametrization, and every call runs on a copy of the layer written from them:
//
//   S4D (Gu et al. 2022, s4d.py):  Δ = exp(log_dt)  A = −exp(log_A_real) + i A_imag  B, C complex
//   S4  (Gu et al. 2022, §3.3):    Δ = exp(log_dt)  Λ = −exp(log_Lambda_real) + i Lambda_imag  P, B, C̃ complex
//
// so Δ stays positive and Re A (Re Λ) negative whatever the update: the SSM stays stable. Complex parameters are
// stored as (…, 2) pairs [Re, Im] (PyTorch's view_as_real). The SSM's own parameters other than C are named
// "kernel.<name>": S4 trains them without weight decay (train::decays_by_default follows it). The
// output mixing's Linear is "output_linear.weight" (rows, h) row-major and "output_linear.bias" (rows).
#pragma once

#include <cmath>
#include <complex>
#include <cstddef>
#include <type_traits>
#include <utility>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/layers/head_mixer.hpp"
#include "ssm/layers/s4.hpp"

namespace ssm::models {

namespace s4_params {

/// v (h, n2, 2) = [Re, Im] of M (h, n2).
template <class T>
std::vector<T> pack(const Eigen::MatrixXcd& M) {
  std::vector<T> v(static_cast<std::size_t>(2 * M.size()));
  for (Eigen::Index c = 0; c < M.rows(); ++c)
    for (Eigen::Index n = 0; n < M.cols(); ++n) {
      const std::size_t i = static_cast<std::size_t>(2 * (c * M.cols() + n));
      v[i] = static_cast<T>(M(c, n).real()), v[i + 1] = static_cast<T>(M(c, n).imag());
    }
  return v;
}

/// M (h, n2) from v (h, n2, 2).
template <class T>
Eigen::MatrixXcd unpack(const std::vector<T>& v, Eigen::Index h, Eigen::Index n2) {
  Eigen::MatrixXcd M(h, n2);
  for (Eigen::Index c = 0; c < h; ++c)
    for (Eigen::Index n = 0; n < n2; ++n) {
      const std::size_t i = static_cast<std::size_t>(2 * (c * n2 + n));
      M(c, n) = {static_cast<double>(v[i]), static_cast<double>(v[i + 1])};
    }
  return M;
}

/// The diagonal's log-parametrization of (h, n2) complex values with negative real parts: log(−Re) and Im.
template <class T>
void split_stable(const Checker& c, const char* name, const Eigen::MatrixXcd& M, std::vector<T>& log_neg_re,
                  std::vector<T>& im) {
  log_neg_re.resize(static_cast<std::size_t>(M.size())), im.resize(log_neg_re.size());
  for (Eigen::Index r = 0; r < M.rows(); ++r)
    for (Eigen::Index n = 0; n < M.cols(); ++n) {
      const std::complex<double> z = M(r, n);
      c.require(z.real() < 0, name, "must have negative real parts (a stable SSM), got ", z.real(), " at (", r, ", ", n,
                ")");
      const std::size_t i = static_cast<std::size_t>(r * M.cols() + n);
      log_neg_re[i] = static_cast<T>(std::log(-z.real())), im[i] = static_cast<T>(z.imag());
    }
}

/// M (h, n2) = −exp(log_neg_re) + i im.
template <class T>
Eigen::MatrixXcd join_stable(const std::vector<T>& log_neg_re, const std::vector<T>& im, Eigen::Index h,
                             Eigen::Index n2) {
  Eigen::MatrixXcd M(h, n2);
  for (Eigen::Index c = 0; c < h; ++c)
    for (Eigen::Index n = 0; n < n2; ++n) {
      const std::size_t i = static_cast<std::size_t>(c * n2 + n);
      M(c, n) = {-std::exp(static_cast<double>(log_neg_re[i])), static_cast<double>(im[i])};
    }
  return M;
}

/// The gradients of log_neg_re and im given G = ∂L/∂Re M + i ∂L/∂Im M (∂ Re M / ∂ log_neg_re = Re M).
template <class T>
void split_stable_grad(const Eigen::MatrixXcd& G, const std::vector<T>& log_neg_re, std::vector<T>& g_log,
                       std::vector<T>& g_im) {
  g_log.resize(log_neg_re.size()), g_im.resize(log_neg_re.size());
  for (Eigen::Index c = 0; c < G.rows(); ++c)
    for (Eigen::Index n = 0; n < G.cols(); ++n) {
      const std::size_t i = static_cast<std::size_t>(c * G.cols() + n);
      g_log[i] = static_cast<T>(-G(c, n).real() * std::exp(static_cast<double>(log_neg_re[i])));
      g_im[i] = static_cast<T>(G(c, n).imag());
    }
}

/// The number of rows of a layer's output Linear (0 without output mixing).
inline long mix_rows(OutputMix mix, long h) {
  return mix == OutputMix::none ? 0 : mix == OutputMix::gelu_glu ? 2 * h : h;
}

/// Every value of v finite, else an ssm::Error naming it and the first bad index.
template <class T>
void check_finite(const Checker& c, const char* name, const std::vector<T>& v) {
  for (std::size_t i = 0; i < v.size(); ++i)
    c.require(std::isfinite(static_cast<double>(v[i])), name, "must be finite, got ", v[i], " at ", i);
}

/// A log-parametrized positive quantity (Δ, −Re A, −Re Λ): finite, and within [−700, 700] so that its exp is a
/// positive finite double (below about −745 it would round to 0: Re A = −0, no longer stable).
template <class T>
void check_log(const Checker& c, const char* name, const std::vector<T>& v) {
  for (std::size_t i = 0; i < v.size(); ++i) {
    const double x = static_cast<double>(v[i]);
    c.require(std::isfinite(x) && x >= -700 && x <= 700, name, "must be finite and in [-700, 700] (its exp positive ",
              "and finite), got ", x, " at ", i);
  }
}

/// The layer-level real parameters shared by S4 and S4D: log Δ, the skip D and the output mixing's Linear.
template <class T>
struct Shared {
  std::vector<T> log_dt;                // (h)       Δ = exp(log_dt)
  std::vector<T> D;                     // (h)
  std::vector<T> out_weight, out_bias;  // (rows, h) row-major, (rows); empty without output mixing

  template <class Layer>
  void read(const Checker& c, const Layer& layer, const Eigen::VectorXd& Delta) {
    const long h = layer.channels(), rows = mix_rows(layer.mix(), h);
    c.require(Delta.size() == h && layer.D.size() == h, "layer", "has Delta of ", Delta.size(), " and D of ",
              layer.D.size(), " channels, expected ", h);
    c.require(layer.W_out.rows() == rows && layer.W_out.cols() == (rows ? h : 0) && layer.b_out.size() == rows, "layer",
              "has an output Linear of (", layer.W_out.rows(), ", ", layer.W_out.cols(), ") and a bias of ",
              layer.b_out.size(), ", expected (", rows, ", ", rows ? h : 0, ") and ", rows);
    log_dt.resize(static_cast<std::size_t>(h)), D.resize(log_dt.size());
    for (long i = 0; i < h; ++i) {
      c.require(Delta(i) > 0, "Delta", "must be > 0, got ", Delta(i), " at channel ", i);
      log_dt[i] = static_cast<T>(std::log(Delta(i))), D[i] = static_cast<T>(layer.D(i));
    }
    read_linear(layer.W_out, layer.b_out, out_weight, out_bias);
  }

  template <class Layer>
  void write(Layer& layer, Eigen::VectorXd& Delta) const {
    const Eigen::Index h = static_cast<Eigen::Index>(log_dt.size());
    Delta.resize(h), layer.D.resize(h);
    for (Eigen::Index i = 0; i < h; ++i)
      Delta(i) = std::exp(static_cast<double>(log_dt[i])), layer.D(i) = static_cast<double>(D[i]);
    for (Eigen::Index r = 0; r < layer.W_out.rows(); ++r) {
      for (Eigen::Index j = 0; j < layer.W_out.cols(); ++j)
        layer.W_out(r, j) = static_cast<double>(out_weight[static_cast<std::size_t>(r * layer.W_out.cols() + j)]);
      layer.b_out(r) = static_cast<double>(out_bias[static_cast<std::size_t>(r)]);
    }
  }

  /// The gradients of these parameters from the layer's (∂L/∂Δ, ∂L/∂D, ∂L/∂W_out, ∂L/∂b_out), at these values.
  Shared gradient(const Eigen::VectorXd& g_Delta, const Eigen::VectorXd& g_D, const Eigen::MatrixXd& g_W,
                  const Eigen::VectorXd& g_b) const {
    Shared g;
    g.log_dt.resize(log_dt.size()), g.D.resize(D.size());
    for (std::size_t i = 0; i < log_dt.size(); ++i) {
      const auto e = static_cast<Eigen::Index>(i);
      g.log_dt[i] = static_cast<T>(g_Delta(e) * std::exp(static_cast<double>(log_dt[i])));
      g.D[i] = static_cast<T>(g_D(e));
    }
    read_linear(g_W, g_b, g.out_weight, g.out_bias);
    return g;
  }

  /// Each vector's size for h channels and `rows` output rows (0: no output mixing), and its values (finite; log_dt
  /// in the log range); the first wrong one is an ssm::Error naming it.
  void check(const Checker& c, long h, long rows) const {
    c.require(log_dt.size() == static_cast<std::size_t>(h), "kernel.log_dt", "expected shape (", h, "), got (",
              log_dt.size(), ")");
    c.require(D.size() == static_cast<std::size_t>(h), "D", "expected shape (", h, "), got (", D.size(), ")");
    c.require(out_weight.size() == static_cast<std::size_t>(rows * h), "output_linear.weight", "expected ", rows * h,
              " values (", rows, ", ", h, "), got ", out_weight.size());
    c.require(out_bias.size() == static_cast<std::size_t>(rows), "output_linear.bias", "expected shape (", rows,
              "), got (", out_bias.size(), ")");
    check_log(c, "kernel.log_dt", log_dt);
    check_finite(c, "D", D);
    check_finite(c, "output_linear.weight", out_weight);
    check_finite(c, "output_linear.bias", out_bias);
  }

 private:
  static void read_linear(const Eigen::MatrixXd& W, const Eigen::VectorXd& b, std::vector<T>& w, std::vector<T>& bv) {
    w.resize(static_cast<std::size_t>(W.size())), bv.resize(static_cast<std::size_t>(b.size()));
    for (Eigen::Index r = 0; r < W.rows(); ++r) {
      for (Eigen::Index j = 0; j < W.cols(); ++j)
        w[static_cast<std::size_t>(r * W.cols() + j)] = static_cast<T>(W(r, j));
      bv[static_cast<std::size_t>(r)] = static_cast<T>(b(r));
    }
  }
};

/// A complex (h, n2, 2) vector's size, else an ssm::Error naming it.
template <class T>
void check_pairs(const Checker& c, const char* name, const std::vector<T>& v, long h, long n2) {
  c.require(v.size() == static_cast<std::size_t>(2 * h * n2), name, "expected shape (", h, ", ", n2, ", 2), got ",
            v.size(), " values");
  check_finite(c, name, v);
}
/// A (h, n2) vector's size and values (log: a log-parametrized real part, check_log; else finite).
template <class T>
void check_modes(const Checker& c, const char* name, const std::vector<T>& v, long h, long n2, bool log = false) {
  c.require(v.size() == static_cast<std::size_t>(h * n2), name, "expected shape (", h, ", ", n2, "), got ", v.size(),
            " values");
  if (log)
    check_log(c, name, v);
  else
    check_finite(c, name, v);
}

}  // namespace s4_params

/// The trainable parameters of an S4D layer (Layer = S4DLayer<T>: the diagonal A) or an S4 layer (S4Layer<T>: the
/// diagonal Λ of its DPLR form, and P; C holds C̃ for the layer's l_max); h channels, n2 = N/2 modes.
template <class T, class LayerT>
struct S4MixerParamsOf {
  using Layer = LayerT;
  static constexpr bool kDPLR = std::is_same_v<Layer, S4Layer<T>>;  // S4 (Λ, P), else S4D (A)
  using LayerGrads = S4LayerGrads<T, std::conditional_t<kDPLR, s4::DPLRSSM, s4::DiagonalSSM>>;

  s4_params::Shared<T> shared;  // kernel.log_dt (h), D (h), output_linear.*
  std::vector<T> log_diag_real;  // (h, n2)      Re A (Re Λ) = −exp(log_diag_real): kernel.log_A_real (log_Lambda_real)
  std::vector<T> diag_imag;      // (h, n2)      Im A (Im Λ): kernel.A_imag (Lambda_imag)
  std::vector<T> P;              // (h, n2, 2)   S4 only (empty for S4D)
  std::vector<T> B, C;           // (h, n2, 2)

  template <class F>
  void for_each(F&& f) {
    f("kernel.log_dt", shared.log_dt);
    f(kDPLR ? "kernel.log_Lambda_real" : "kernel.log_A_real", log_diag_real);
    f(kDPLR ? "kernel.Lambda_imag" : "kernel.A_imag", diag_imag);
    if constexpr (kDPLR) f("kernel.P", P);
    f("kernel.B", B);
    f("C", C);
    f("D", shared.D);
    if (!shared.out_weight.empty() || !shared.out_bias.empty()) {
      f("output_linear.weight", shared.out_weight);
      f("output_linear.bias", shared.out_bias);
    }
  }

  static S4MixerParamsOf read(const Layer& layer) {
    const char* op = kDPLR ? "S4Mixer" : "S4DMixer";
    const Checker c(op);
    if constexpr (kDPLR)
      c.require(layer.step_form() != StepForm::diagonal, "layer",
                "has StepForm::diagonal, whose state cannot be carried by a forward; a mixer decodes from a carried ",
                "state: use StepForm::linear (or dense)");
    s4::check_ssm(op, layer.ssm);  // A (Λ, P), B, C (h, n2) and Delta (h), finite
    S4MixerParamsOf p;
    p.shared.read(c, layer, layer.ssm.Delta);
    s4_params::split_stable(c, kDPLR ? "Lambda" : "A", diag(layer.ssm), p.log_diag_real, p.diag_imag);
    if constexpr (kDPLR) p.P = s4_params::pack<T>(layer.ssm.P);
    p.B = s4_params::pack<T>(layer.ssm.B), p.C = s4_params::pack<T>(layer.ssm.C);
    p.check(c, layer);
    return p;
  }

  void check(const Checker& c, const Layer& layer) const {
    const long h = layer.channels(), n2 = diag(layer.ssm).cols();
    shared.check(c, h, s4_params::mix_rows(layer.mix(), h));
    s4_params::check_modes(c, kDPLR ? "kernel.log_Lambda_real" : "kernel.log_A_real", log_diag_real, h, n2,
                           /*log=*/true);
    s4_params::check_modes(c, kDPLR ? "kernel.Lambda_imag" : "kernel.A_imag", diag_imag, h, n2);
    if constexpr (kDPLR) s4_params::check_pairs(c, "kernel.P", P, h, n2);
    s4_params::check_pairs(c, "kernel.B", B, h, n2);
    s4_params::check_pairs(c, "C", C, h, n2);
  }

  void write(Layer& layer) const {
    const Eigen::Index h = layer.channels(), n2 = diag(layer.ssm).cols();
    shared.write(layer, layer.ssm.Delta);
    diag(layer.ssm) = s4_params::join_stable(log_diag_real, diag_imag, h, n2);
    if constexpr (kDPLR) layer.ssm.P = s4_params::unpack(P, h, n2);
    layer.ssm.B = s4_params::unpack(B, h, n2), layer.ssm.C = s4_params::unpack(C, h, n2);
  }

  S4MixerParamsOf gradient(const LayerGrads& g) const {
    S4MixerParamsOf d;
    d.shared = shared.gradient(g.ssm.Delta, g.D, g.W_out, g.b_out);
    s4_params::split_stable_grad(diag(g.ssm), log_diag_real, d.log_diag_real, d.diag_imag);
    if constexpr (kDPLR) d.P = s4_params::pack<T>(g.ssm.P);
    d.B = s4_params::pack<T>(g.ssm.B), d.C = s4_params::pack<T>(g.ssm.C);
    return d;
  }

 private:
  /// The SSM's diagonal: A (S4D) or Λ (S4).
  template <class SSM>
  static auto& diag(SSM& ssm) {
    if constexpr (kDPLR)
      return ssm.Lambda;
    else
      return ssm.A;
  }
};

template <class T>
using S4DMixerParams = S4MixerParamsOf<T, S4DLayer<T>>;
template <class T>
using S4MixerParams = S4MixerParamsOf<T, S4Layer<T>>;

/// A SequenceMixer and TrainableMixer over an S4 or S4D layer (Params: S4MixerParams or S4DMixerParams): x (b, l, h)
/// → (b, l, h) in conv mode; step() continues from a carried state (the layer's conv mode with a state, so t tokens
/// at once); backward through the kernel to every parameter. Each call writes the parameters into a copy of the
/// layer and computes its kernel afresh (S4: for l_max, then truncated); step() also recomputes the recurrence (for S4,
/// C from C̃: O(h N³)). So a call costs the same for 1 token as for a prompt: to decode token by token, take layer()
/// once and use the layer's own step (O(N) per channel and token).
template <class T, class Params>
class S4MixerOf {
 public:
  using Layer = typename Params::Layer;
  using State = S4State<T>;
  using Grads = layers::head_mixer::MixerGrads<T, Params>;

  /// The mixer over `layer`'s current parameters; an SSM that is not stable (Re A ≥ 0, or Δ ≤ 0) is an ssm::Error.
  explicit S4MixerOf(Layer layer) : layer_(std::move(layer)), p_(Params::read(layer_)) {}

  index_t d_model() const { return layer_.channels(); }
  /// The layer with the current parameters (a copy, with its step recurrence set up).
  Layer layer() const { return fresh(true); }

  /// x (b, l, h) contiguous CPU → y (b, l, h).
  Tensor forward(const TensorView& x) const {
    layers::head_mixer::check_input<T>(Checker("S4 mixer: forward"), x, d_model());
    Tensor y = Tensor::empty(x.shape(), dtype_of<T>());
    fresh(false).forward(x, y.view());
    return y;
  }
  State init_state(index_t b) const {
    Checker("S4 mixer: init_state").require(b >= 1, "b", "must be >= 1, got ", b);
    return layer_.initial_state(b);
  }
  /// x (b, t, h) → (b, t, h), continuing from and advancing state (made by init_state(b)).
  Tensor step(const TensorView& x, State& state) const {
    layers::head_mixer::check_input<T>(Checker("S4 mixer: step"), x, d_model());
    Tensor y = Tensor::empty(x.shape(), dtype_of<T>());
    fresh(true).forward(x.data_as<const T>(), y.data_as<T>(), x.size(0), x.size(1), state);
    return y;
  }
  Grads backward(const TensorView& x, const TensorView& grad_out) const {
    const Checker c("S4 mixer: backward");
    layers::head_mixer::check_input<T>(c, x, d_model());
    layers::head_mixer::check_grad_out<T>(c, grad_out, x);
    auto g = fresh(false).backward(x, grad_out);
    return {std::move(g.grad_x), p_.gradient(g)};
  }
  const Params& params() const { return p_; }
  Params& params() { return p_; }
  void set_threads(int n) { layer_.set_threads(n); }

 private:
  /// A copy of the layer with the current parameters (their sizes and values checked first, by name), and its step
  /// recurrence when `with_step`.
  Layer fresh(bool with_step) const {
    p_.check(Checker("S4 mixer"), layer_);
    Layer l = layer_;
    p_.write(l);
    if (with_step) l.setup_step();
    return l;
  }

  Layer layer_;
  Params p_;
};

template <class T>
using S4DMixer = S4MixerOf<T, S4DMixerParams<T>>;
template <class T>
using S4Mixer = S4MixerOf<T, S4MixerParams<T>>;

}  // namespace ssm::models
