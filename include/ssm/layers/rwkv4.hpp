// RWKV-4's two residual sublayers (Peng et al. 2023, "RWKV: Reinventing RNNs for the Transformer Era"; transformers'
// RwkvSelfAttention and RwkvFeedForward; docs/rwkv4.md), each a block of the causal LM body (models/causal_lm.hpp runs
// LayerNorm → block → residual add around it). With x the block's input (the normalized residual stream, H = d_model
// channels) and x_{−1} the previous token's (zero at the start, the carried shift when decoding):
//
//   x_□ = μ_□ ⊙ x + (1 − μ_□) ⊙ x_{−1}      token shift, one mix per branch (time_mix_key, ...)
// time mixing (A = d_att channels):
//   k = W_k x_k,  v = W_v x_v,  r = σ(W_r x_r)                (A, H) projections, no bias
//   y = W_o (r ⊙ wkv(k, v)),  wkv = ssm::rwkv4 with w = −exp(time_decay), u = time_first     (H, A)
// channel mixing (F = d_ffn channels):
//   y = σ(W_r x_r) ⊙ W_v max(W_k x_k, 0)²                     W_k (F, H), W_r (H, H), W_v (H, F)
//
// The decoding cache per block: conv_state (b, 1, H), the last input (the token shift), and for time mixing
// ssm_state (b, 3, A), the WKV state (num, den, max) of ssm::rwkv4 (channel mixing: (b, 0)). f32 activations and
// arithmetic; the matrices keep the checkpoint's dtype (f32, f16 or bf16; read by ssm::linear). CPU only: to() a
// device is an ssm::Error (the elementwise stages have no kernels yet). Two interfaces: the views the LM body calls
// (forward_into, step_into), and forward / init_state / step on tensors, which make a block a sequence mixer of a
// HybridStack (models/hybrid.hpp).
//
// Rwkv4Layer<T> is the same sublayer for training: every parameter a T vector (f32 or f64 throughout), a backward
// (∂L/∂x and every parameter's gradient, back through the projections, ssm::rwkv4_backward and the token shift), and a
// place in the trainable stacks (models/trainable_lm.hpp). Both classes run one forward (rwkv4_detail::forward).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/scalar.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/layers/basic.hpp"
#include "ssm/layers/head_mixer.hpp"
#include "ssm/layers/layer_cache.hpp"
#include "ssm/layers/token_shift.hpp"
#include "ssm/layers/weight.hpp"
#include "ssm/ops/rwkv4.hpp"

namespace ssm::layers {

/// Which of RWKV-4's two sublayers a block is.
enum class Rwkv4Kind { time_mix, channel_mix };

/// Sizes of one RWKV-4 sublayer (transformers' RwkvConfig names in comments).
struct Rwkv4BlockConfig {
  Rwkv4Kind kind = Rwkv4Kind::time_mix;
  index_t d_model = 0;  // hidden_size, H
  index_t d_att = 0;    // attention_hidden_size, A (time mixing)
  index_t d_ffn = 0;    // intermediate_size, F (channel mixing)

  /// Throws ssm::Error naming the first invalid field.
  void validate(const char* op = "Rwkv4BlockConfig") const {
    Checker c(op);
    c.require(d_model >= 1, "d_model", "must be >= 1, got ", d_model);
    if (kind == Rwkv4Kind::time_mix) c.require(d_att >= 1, "d_att", "must be >= 1, got ", d_att);
    else c.require(d_ffn >= 1, "d_ffn", "must be >= 1, got ", d_ffn);
  }
};

/// Parameters of one sublayer under transformers' names (after "attention." or "feed_forward."): the mixes and, for
/// time mixing, time_decay and time_first are f32 vectors; the projections are weight matrices.
struct Rwkv4BlockParams {
  std::vector<float> time_decay, time_first;                         // (A) each; time mixing only
  std::vector<float> time_mix_key, time_mix_value, time_mix_receptance;  // (H) each; no value mix in channel mixing
  WeightMatrix key, value, receptance, output;  // time: (A, H) ×3, (H, A); channel: (F, H), (H, F), (H, H), none

  /// Calls f(name, vector, shape) for every vector parameter of the kind, and m(name, matrix, shape) for every
  /// matrix, with transformers' names and shapes (the mixes are stored (1, 1, H)).
  template <class Fn, class Mn>
  void for_each(const Rwkv4BlockConfig& cfg, Fn&& f, Mn&& m) {
    const index_t H = cfg.d_model;
    if (cfg.kind == Rwkv4Kind::time_mix) {
      const index_t A = cfg.d_att;
      f("time_decay", time_decay, Dims{A});
      f("time_first", time_first, Dims{A});
      f("time_mix_key", time_mix_key, Dims{1, 1, H});
      f("time_mix_value", time_mix_value, Dims{1, 1, H});
      f("time_mix_receptance", time_mix_receptance, Dims{1, 1, H});
      m("key.weight", key, Dims{A, H});
      m("value.weight", value, Dims{A, H});
      m("receptance.weight", receptance, Dims{A, H});
      m("output.weight", output, Dims{H, A});
    } else {
      const index_t F = cfg.d_ffn;
      f("time_mix_key", time_mix_key, Dims{1, 1, H});
      f("time_mix_receptance", time_mix_receptance, Dims{1, 1, H});
      m("key.weight", key, Dims{F, H});
      m("receptance.weight", receptance, Dims{H, H});
      m("value.weight", value, Dims{H, F});
    }
  }
};

/// The parameters of one sublayer as T vectors, what Rwkv4Layer<T> trains: the names of Rwkv4BlockParams, the matrices
/// row-major (out, in) ("key.weight" …). The kind's other members stay empty.
template <class T>
struct Rwkv4LayerParams {
  std::vector<T> time_decay, time_first;                             // (A) each; time mixing only
  std::vector<T> time_mix_key, time_mix_value, time_mix_receptance;  // (H) each; no value mix in channel mixing
  std::vector<T> key, value, receptance, output;  // time: (A, H) ×3, (H, A); channel: (F, H), (H, F), (H, H), none

  /// The draws of Rwkv4Block::init: projections uniform in ±1/√fan_in, mixes in [0, 1), time_decay from −5 to 1 across
  /// channels, time_first 0.5.
  static Rwkv4LayerParams init(const Rwkv4BlockConfig& cfg, std::uint64_t seed) {
    cfg.validate("Rwkv4LayerParams::init");
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    auto matrix = [&](index_t rows, index_t cols) {
      std::vector<T> v(static_cast<std::size_t>(rows * cols));
      const double s = 1.0 / std::sqrt(static_cast<double>(cols));
      for (T& x : v) x = static_cast<T>(s * (2 * unit(rng) - 1));
      return v;
    };
    auto mix = [&] {
      std::vector<T> v(static_cast<std::size_t>(cfg.d_model));
      for (T& x : v) x = static_cast<T>(unit(rng));
      return v;
    };
    const index_t H = cfg.d_model;
    Rwkv4LayerParams p;
    p.time_mix_key = mix(), p.time_mix_receptance = mix();
    if (cfg.kind == Rwkv4Kind::time_mix) {
      const index_t A = cfg.d_att;
      p.time_mix_value = mix();
      for (index_t i = 0; i < A; ++i)
        p.time_decay.push_back(static_cast<T>(-5.0 + 6.0 * static_cast<double>(i) / std::max<double>(A - 1, 1)));
      p.time_first.assign(static_cast<std::size_t>(A), T(0.5));
      p.key = matrix(A, H), p.value = matrix(A, H), p.receptance = matrix(A, H), p.output = matrix(H, A);
    } else {
      const index_t F = cfg.d_ffn;
      p.key = matrix(F, H), p.receptance = matrix(H, H), p.value = matrix(H, F);
    }
    return p;
  }

  /// f(name, vector) for every non-empty parameter, in the order above (an optimizer's walk over parameters and
  /// gradients: those the kind has).
  template <class F>
  void for_each(F&& f) {
    visit(*this, [&](const char* n, auto& v) {
      if (!v.empty()) f(n, v);
    });
  }
  template <class F>
  void for_each(F&& f) const {
    visit(*this, [&](const char* n, const auto& v) {
      if (!v.empty()) f(n, v);
    });
  }
  /// f(name, vector) for every member, empty or not.
  template <class F>
  void for_each_member(F&& f) const {
    visit(*this, f);
  }

  /// The number of values cfg's sublayer has for the member called `name` (0 for one the kind does not have): the
  /// shapes of Rwkv4BlockParams::for_each, the checkpoint's.
  static index_t expected_size(const Rwkv4BlockConfig& cfg, const std::string& name) {
    index_t n = 0;
    auto size_of = [&](const char* nm, const auto&, const Dims& s) {
      if (name == nm) n = s.product();
    };
    Rwkv4BlockParams().for_each(cfg, size_of, size_of);
    return n;
  }

 private:
  template <class Self, class F>
  static void visit(Self& p, F&& f) {
    f("time_decay", p.time_decay), f("time_first", p.time_first), f("time_mix_key", p.time_mix_key);
    f("time_mix_value", p.time_mix_value), f("time_mix_receptance", p.time_mix_receptance);
    f("key.weight", p.key), f("value.weight", p.value), f("receptance.weight", p.receptance);
    f("output.weight", p.output);
  }
};

/// The decoding cache of one sublayer: conv_state (b, 1, H) the last input; ssm_state (b, 3, A) the WKV state (time
/// mixing; the empty state num = den = 0, max = −1e38 at the start) or (b, 0) (channel mixing). f32 (Rwkv4Block) or
/// the layer's dtype (Rwkv4Layer<T>), on the CPU.
struct Rwkv4LayerCache : ConvSsmCache {
  static Rwkv4LayerCache empty(const Rwkv4BlockConfig& cfg, index_t b, DType dtype = DType::f32) {
    Rwkv4LayerCache c;
    c.b = b;
    c.conv_state = Tensor::zeros({b, 1, cfg.d_model}, dtype);
    c.ssm_state =
        cfg.kind == Rwkv4Kind::time_mix ? rwkv4_empty_state(b, cfg.d_att, dtype) : Tensor::zeros({b, 0}, dtype);
    return c;
  }
  /// The shapes of cfg's sublayer's state for b sequences: conv_state (b, 1, H), ssm_state (b, 3, A) or (b, 0).
  static std::pair<Dims, Dims> shapes(const Rwkv4BlockConfig& cfg, index_t b) {
    return {Dims{b, 1, cfg.d_model}, cfg.kind == Rwkv4Kind::time_mix ? Dims{b, 3, cfg.d_att} : Dims{b, 0}};
  }
  /// Whether this cache fits cfg's sublayer (b >= 1 sequences, `dtype`, contiguous, on the CPU).
  bool fits(const Rwkv4BlockConfig& cfg, DType dtype) const {
    const auto [conv, ssm] = shapes(cfg, b);
    return matches(conv, ssm, dtype, Device::cpu());
  }
  /// What fits(cfg, dtype) expects, for messages.
  std::string expected(const Rwkv4BlockConfig& cfg, DType dtype) const {
    const auto [conv, ssm] = shapes(cfg, b);
    return "contiguous " + std::string(name(dtype)) + " conv_state " + conv.str() + " and ssm_state " + ssm.str() +
           " on the CPU";
  }
};

namespace rwkv4_detail {

/// What the forward reads of a sublayer's parameters: the mixes (H) and time_decay / time_first (A) as T values, the
/// matrices as (out, in) views that ssm::linear reads with T activations (T, or f16 / bf16 with T = float). The
/// kind's other members stay empty.
template <class T>
struct Weights {
  const T* mix_k = nullptr;
  const T* mix_v = nullptr;
  const T* mix_r = nullptr;
  TensorView time_decay{}, time_first{};
  TensorView key{}, value{}, receptance{}, output{};
};

/// The forward's intermediates that the backward reads.
struct Tape {
  Tensor mixed;   // (branches, rows, H): the token-shift mixes x_k, [x_v,] x_r
  Tensor k, v;    // time: (b, l, A) the key and value
  Tensor sr;      // σ(W_r x_r): time (rows, A), channel (rows, H)
  Tensor wkv;     // time: (b, l, A), ssm::rwkv4's output
  Tensor hk;      // channel: (rows, F), W_k x_k before the squared ReLU
  Tensor hidden;  // channel: (rows, F), max(W_k x_k, 0)²
  Tensor kv;      // channel: (rows, H), W_v hidden before the receptance gate
};

/// The parallel forward: x, y (b, l, H) contiguous T. With conv_state (b, 1, H) and ssm_state given they receive the
/// state after the last token; with `resume` the sequences start from them. With a tape, it keeps what backward reads.
template <class T>
void forward(const Rwkv4BlockConfig& cfg, const Weights<T>& w, const TensorView& x, const TensorView& y,
             const std::optional<TensorView>& conv_state, const std::optional<TensorView>& ssm_state, bool resume,
             int threads, Tape* tape = nullptr) {
  const index_t b = x.size(0), l = x.size(1), H = cfg.d_model, rows = b * l;
  const DType dt = dtype_of<T>();
  const bool time = cfg.kind == Rwkv4Kind::time_mix;
  if (!conv_state || !ssm_state) resume = false;
  Tape local;
  Tape& tp = tape ? *tape : local;
  if (rows == 0) return;
  const T* xs = x.data_as<T>();
  const T* mus3[3] = {w.mix_k, w.mix_v, w.mix_r};
  const T* mus2[2] = {w.mix_k, w.mix_r};
  const std::span<const T* const> mus = time ? std::span<const T* const>(mus3) : std::span<const T* const>(mus2);
  tp.mixed = Tensor::empty({static_cast<index_t>(mus.size()), rows, H}, dt);
  token_shift<T>(TokenShift::rwkv4, xs, resume ? conv_state->data_as<T>() : nullptr, b, l, H, mus,
                 tp.mixed.template data_as<T>());
  if (conv_state)
    for (index_t bi = 0; bi < b; ++bi) std::copy_n(xs + (bi * l + l - 1) * H, H, conv_state->data_as<T>() + bi * H);
  auto branch = [&](index_t m) { return tp.mixed.view().select(0, m); };  // (rows, H)
  const TensorView out = y.reshape({rows, H});
  if (time) {
    const index_t A = cfg.d_att;
    tp.k = Tensor::empty({b, l, A}, dt), tp.v = Tensor::empty({b, l, A}, dt), tp.wkv = Tensor::empty({b, l, A}, dt);
    tp.sr = Tensor::empty({rows, A}, dt);
    project(w.key, branch(0), std::nullopt, tp.k.view().reshape({rows, A}), threads);
    project(w.value, branch(1), std::nullopt, tp.v.view().reshape({rows, A}), threads);
    project(w.receptance, branch(2), std::nullopt, tp.sr, threads);
    Rwkv4Inputs in;
    in.k = tp.k, in.v = tp.v, in.time_decay = w.time_decay, in.time_first = w.time_first;
    if (resume) in.initial_state = *ssm_state;
    Rwkv4Options opt;
    opt.threads = threads;
    rwkv4_into(in, tp.wkv, ssm_state, opt);  // the final state over the initial one (each read before it is written)
    // σ(W_r x_r) ⊙ wkv: in place over W_r x_r, or beside σ(W_r x_r) on a tape
    Tensor gated = tape ? Tensor::empty({rows, A}, dt) : tp.sr;
    T* sp = tp.sr.template data_as<T>();
    const T* wp = tp.wkv.template data_as<const T>();
    T* gp = gated.template data_as<T>();
    for (index_t i = 0; i < rows * A; ++i) sp[i] = scalar::sigmoid(sp[i]), gp[i] = sp[i] * wp[i];
    project(w.output, gated, std::nullopt, out, threads);
  } else {
    const index_t F = cfg.d_ffn;
    // max(W_k x_k, 0)²: in place over W_k x_k, or beside it on a tape
    tp.hk = Tensor::empty({rows, F}, dt), tp.hidden = tape ? Tensor::empty({rows, F}, dt) : tp.hk;
    tp.sr = Tensor::empty({rows, H}, dt);
    project(w.key, branch(0), std::nullopt, tp.hk, threads);
    const T* kp = tp.hk.template data_as<const T>();
    T* hp = tp.hidden.template data_as<T>();
    for (index_t i = 0; i < rows * F; ++i) hp[i] = kp[i] > 0 ? kp[i] * kp[i] : T(0);
    project(w.receptance, branch(1), std::nullopt, tp.sr, threads);
    project(w.value, tp.hidden, std::nullopt, out, threads);
    T* sp = tp.sr.template data_as<T>();
    T* yp = out.data_as<T>();
    if (tape) tp.kv = Tensor::empty({rows, H}, dt), std::copy_n(yp, rows * H, tp.kv.template data_as<T>());
    for (index_t i = 0; i < rows * H; ++i) sp[i] = scalar::sigmoid(sp[i]), yp[i] *= sp[i];
  }
}

/// ∂L/∂x (b, l, H) and ∂L/∂ each parameter (into g, sized like p and zeroed) for grad_out = ∂L/∂y (b, l, H) contiguous,
/// y = forward(x) from the empty state: the forward again (kept on a tape), then back through the output projection,
/// the gates, ssm::rwkv4_backward (time mixing) or the squared ReLU (channel mixing), the three projections and the
/// token shift.
template <class T>
std::vector<T> backward(const Rwkv4BlockConfig& cfg, const Weights<T>& w, const Rwkv4LayerParams<T>& p,
                        const TensorView& x, const TensorView& grad_out, int threads, Rwkv4LayerParams<T>& g) {
  const index_t b = x.size(0), l = x.size(1), H = cfg.d_model, rows = b * l;
  const bool time = cfg.kind == Rwkv4Kind::time_mix;
  std::vector<T> grad_x(static_cast<std::size_t>(rows * H), T(0));
  if (rows == 0) return grad_x;
  Tape tp;
  Tensor y = Tensor::empty(x.shape(), dtype_of<T>());
  forward<T>(cfg, w, x, y, std::nullopt, std::nullopt, false, threads, &tp);
  const index_t n_mix = tp.mixed.size(0);
  std::vector<T> gmixed(static_cast<std::size_t>(n_mix * rows * H));  // ∂L/∂ each token-shift mix
  auto mix = [&](index_t m) { return tp.mixed.template data_as<const T>() + m * rows * H; };
  auto gmix = [&](index_t m) { return gmixed.data() + m * rows * H; };
  const T* gy = grad_out.data_as<const T>();
  const T* sr = tp.sr.template data_as<const T>();
  if (time) {
    const index_t A = cfg.d_att;
    // y = (σ(r) ⊙ wkv) W_oᵀ
    const T* wkv = tp.wkv.template data_as<const T>();
    std::vector<T> gated(static_cast<std::size_t>(rows * A)), grad_gated(gated.size());
    for (index_t i = 0; i < rows * A; ++i) gated[i] = sr[i] * wkv[i];
    linear_backward(gated.data(), p.output.data(), gy, grad_gated.data(), g.output.data(), static_cast<T*>(nullptr),
                    rows, A, H);
    Tensor grad_wkv = Tensor::empty({b, l, A}, dtype_of<T>());
    std::vector<T> grad_r(gated.size());  // ∂L/∂(W_r x_r), before the sigmoid
    T* gw = grad_wkv.template data_as<T>();
    for (index_t i = 0; i < rows * A; ++i)
      gw[i] = grad_gated[i] * sr[i], grad_r[i] = grad_gated[i] * wkv[i] * sr[i] * (T(1) - sr[i]);
    Rwkv4Inputs in;
    in.k = tp.k, in.v = tp.v, in.time_decay = w.time_decay, in.time_first = w.time_first;
    Rwkv4Options opt;
    opt.threads = threads;
    const Rwkv4Grads og = rwkv4_backward(in, grad_wkv, std::nullopt, opt);
    std::copy_n(og.grad_time_decay.template data_as<const T>(), A, g.time_decay.data());
    std::copy_n(og.grad_time_first.template data_as<const T>(), A, g.time_first.data());
    linear_backward(mix(0), p.key.data(), og.grad_k.template data_as<const T>(), gmix(0), g.key.data(),
                    static_cast<T*>(nullptr), rows, H, A);
    linear_backward(mix(1), p.value.data(), og.grad_v.template data_as<const T>(), gmix(1), g.value.data(),
                    static_cast<T*>(nullptr), rows, H, A);
    linear_backward(mix(2), p.receptance.data(), grad_r.data(), gmix(2), g.receptance.data(), static_cast<T*>(nullptr),
                    rows, H, A);
  } else {
    const index_t F = cfg.d_ffn;
    // y = σ(r) ⊙ (hidden W_vᵀ), hidden = max(W_k x_k, 0)²
    const T* kv = tp.kv.template data_as<const T>();
    const T* hk = tp.hk.template data_as<const T>();
    std::vector<T> grad_kv(static_cast<std::size_t>(rows * H)), grad_r(grad_kv.size());
    for (index_t i = 0; i < rows * H; ++i)
      grad_kv[i] = gy[i] * sr[i], grad_r[i] = gy[i] * kv[i] * sr[i] * (T(1) - sr[i]);
    std::vector<T> grad_h(static_cast<std::size_t>(rows * F));
    linear_backward(tp.hidden.template data_as<const T>(), p.value.data(), grad_kv.data(), grad_h.data(),
                    g.value.data(), static_cast<T*>(nullptr), rows, F, H);
    for (index_t i = 0; i < rows * F; ++i) grad_h[i] *= hk[i] > 0 ? T(2) * hk[i] : T(0);
    linear_backward(mix(0), p.key.data(), grad_h.data(), gmix(0), g.key.data(), static_cast<T*>(nullptr), rows, H, F);
    linear_backward(mix(1), p.receptance.data(), grad_r.data(), gmix(1), g.receptance.data(), static_cast<T*>(nullptr),
                    rows, H, H);
  }
  const T* mus3[3] = {p.time_mix_key.data(), p.time_mix_value.data(), p.time_mix_receptance.data()};
  const T* mus2[2] = {p.time_mix_key.data(), p.time_mix_receptance.data()};
  T* gmus3[3] = {g.time_mix_key.data(), g.time_mix_value.data(), g.time_mix_receptance.data()};
  T* gmus2[2] = {g.time_mix_key.data(), g.time_mix_receptance.data()};
  token_shift_backward<T>(TokenShift::rwkv4, x.data_as<T>(), b, l, H,
                          time ? std::span<const T* const>(mus3) : std::span<const T* const>(mus2), gmixed.data(),
                          grad_x.data(), time ? std::span<T* const>(gmus3) : std::span<T* const>(gmus2));
  return grad_x;
}

}  // namespace rwkv4_detail

class Rwkv4Block {
 public:
  Rwkv4Block(const Rwkv4BlockConfig& cfg, Rwkv4BlockParams params) : cfg_(cfg), p_(std::move(params)) {
    cfg_.validate("Rwkv4Block");
    const Checker c("Rwkv4Block");
    p_.for_each(
        cfg_,
        [&](const char* nm, const std::vector<float>& v, const Dims& s) {
          head_mixer::check_parameter(c, nm, v, s.product(), /*finite=*/true);
        },
        [&](const char* nm, const WeightMatrix& w, const Dims& s) {
          c.require(w.rows() == s[0] && w.cols() == s[1], nm, "expected a ", s.str(), " matrix, got (", w.rows(), ", ",
                    w.cols(), ")");
        });
  }

  /// A plain initialization for experiments (not RWKV-4's tuned training init): Rwkv4LayerParams<float>::init's draws
  /// (projections uniform in ±1/√fan_in, mixes in [0, 1), time_decay from −5 to 1 across channels, time_first 0.5).
  static Rwkv4Block init(const Rwkv4BlockConfig& cfg, std::uint64_t seed) {
    cfg.validate("Rwkv4Block::init");
    Rwkv4LayerParams<float> v = Rwkv4LayerParams<float>::init(cfg, seed);
    Rwkv4BlockParams p;
    p.time_decay = std::move(v.time_decay), p.time_first = std::move(v.time_first);
    p.time_mix_key = std::move(v.time_mix_key), p.time_mix_value = std::move(v.time_mix_value);
    p.time_mix_receptance = std::move(v.time_mix_receptance);
    auto matrix = [](const std::vector<float>& m, index_t rows) {
      return m.empty() ? WeightMatrix() : WeightMatrix::from_f32(m.data(), rows, static_cast<index_t>(m.size()) / rows);
    };
    const bool time = cfg.kind == Rwkv4Kind::time_mix;
    p.key = matrix(v.key, time ? cfg.d_att : cfg.d_ffn), p.value = matrix(v.value, time ? cfg.d_att : cfg.d_model);
    p.receptance = matrix(v.receptance, time ? cfg.d_att : cfg.d_model), p.output = matrix(v.output, cfg.d_model);
    return Rwkv4Block(cfg, std::move(p));
  }

  const Rwkv4BlockConfig& config() const { return cfg_; }
  const Rwkv4BlockParams& params() const { return p_; }
  bool time_mix() const { return cfg_.kind == Rwkv4Kind::time_mix; }
  /// CPU threads for the projections and the recurrence (0: by the amount of work).
  void set_threads(int threads) { threads_ = threads; }
  std::size_t nbytes() const {
    std::size_t n = 0;
    for (const auto* v : {&p_.time_decay, &p_.time_first, &p_.time_mix_key, &p_.time_mix_value, &p_.time_mix_receptance})
      n += v->size() * sizeof(float);
    return n + p_.key.nbytes() + p_.value.nbytes() + p_.receptance.nbytes() + p_.output.nbytes();
  }

  /// The CPU; another device is an ssm::Error (no kernels for the elementwise stages yet).
  Rwkv4Block to(Device device) const {
    SSM_CHECK(device.is_cpu(), "Rwkv4Block::to: RWKV-4 runs on the CPU only (no ", device.str(), " path yet)");
    return *this;
  }

  /// An empty cache for b sequences.
  Rwkv4LayerCache make_cache(index_t b) const { return Rwkv4LayerCache::empty(cfg_, b); }

  // ---- the sequence-mixer interface (HybridStack) ----
  using State = Rwkv4LayerCache;
  index_t d_model() const { return cfg_.d_model; }
  /// An empty state for b sequences (make_cache).
  State init_state(index_t b) const {
    Checker("Rwkv4Block::init_state").require(b >= 1, "b", "must be >= 1, got ", b);
    return make_cache(b);
  }
  /// x (b, l, d_model) contiguous f32 on the CPU → (b, l, d_model), from the empty state.
  Tensor forward(const TensorView& x) const {
    check_input("Rwkv4Block::forward", x);
    Tensor out = Tensor::empty(x.shape(), DType::f32);
    forward_into(x, out, std::nullopt, std::nullopt, false);
    return out;
  }
  /// The next t tokens x (b, t, d_model) → (b, t, d_model), continuing from `state` and updating it.
  Tensor step(const TensorView& x, State& state) const {
    check_input("Rwkv4Block::step", x);
    Checker("Rwkv4Block::step").require(state.b == x.size(0), "state", "was made for ", state.b, " sequences, x has ",
                                        x.size(0));
    check_cache(state);
    Tensor out = Tensor::empty(x.shape(), DType::f32);
    forward_into(x, out, state.conv_state.view(), state.ssm_state.view(), /*resume=*/true);
    return out;
  }

  /// Throws ssm::Error unless `cache` fits this block (b >= 1 sequences, f32, contiguous, on the CPU).
  void check_cache(const Rwkv4LayerCache& cache) const {
    SSM_CHECK(cache.fits(cfg_, DType::f32), "Rwkv4Block: cache does not match the block (b = ", cache.b, ", ",
              cache.describe(), "; expected ", cache.expected(cfg_, DType::f32), ")");
  }

  /// Scratch step_into needs (none: the block allocates its own).
  index_t workspace_size(index_t) const { return 0; }

  /// The parallel forward over views: x, y (b, l, d_model) contiguous f32. With conv_state (b, 1, H) and ssm_state
  /// given they receive the state after the last token; with `resume` the sequences start from them.
  void forward_into(const TensorView& x, const TensorView& y, const std::optional<TensorView>& conv_state,
                    const std::optional<TensorView>& ssm_state, bool resume) const {
    rwkv4_detail::forward<float>(cfg_, weights(), x, y, conv_state, ssm_state, resume, threads_);
  }

  /// One token for b sequences over views: x, y (b, d_model) contiguous; conv_state and ssm_state advanced in place;
  /// `work` is unused (workspace_size is 0). The forward with l = 1 resumed from the cache.
  void step_into(const TensorView& x, const TensorView& y, const TensorView& conv_state, const TensorView& ssm_state,
                 const TensorView&) const {
    const index_t b = x.size(0), H = cfg_.d_model;
    forward_into(x.reshape({b, 1, H}), y.reshape({b, 1, H}), conv_state, ssm_state, /*resume=*/true);
  }

 private:
  void check_input(const char* op, const TensorView& x) const {
    Checker c(op);
    c.defined("x", x).rank("x", x, 3).shape("x", x, {kAny, kAny, cfg_.d_model}).dtype("x", x, DType::f32);
    c.device("x", x, Device::cpu()).contiguous("x", x);
  }

  rwkv4_detail::Weights<float> weights() const {
    rwkv4_detail::Weights<float> w;
    w.mix_k = p_.time_mix_key.data(), w.mix_v = p_.time_mix_value.data(), w.mix_r = p_.time_mix_receptance.data();
    if (time_mix()) {
      w.time_decay = TensorView::of(p_.time_decay.data(), {cfg_.d_att});
      w.time_first = TensorView::of(p_.time_first.data(), {cfg_.d_att});
      w.output = p_.output.tensor().view();
    }
    w.key = p_.key.tensor().view(), w.value = p_.value.tensor().view(), w.receptance = p_.receptance.tensor().view();
    return w;
  }

  Rwkv4BlockConfig cfg_;
  Rwkv4BlockParams p_;
  int threads_ = 0;
};

/// One RWKV-4 sublayer for training (element type T, f32 or f64): the forward of Rwkv4Block over parameters held as T
/// vectors, which an optimizer updates in place (params(); their sizes are checked again at every call, their values
/// at construction), and a backward. A SequenceMixer and TrainableMixer of a models::HybridStack.
template <class T>
class Rwkv4Layer {
 public:
  using State = Rwkv4LayerCache;
  using Grads = head_mixer::MixerGrads<T, Rwkv4LayerParams<T>>;

  Rwkv4Layer(const Rwkv4BlockConfig& cfg, Rwkv4LayerParams<T> params) : cfg_(cfg), p_(std::move(params)) {
    cfg_.validate("Rwkv4Layer");
    check_params("Rwkv4Layer", /*finite=*/true);
  }
  /// A layer with Rwkv4LayerParams<T>::init's parameters (Rwkv4Block::init's draws).
  static Rwkv4Layer init(const Rwkv4BlockConfig& cfg, std::uint64_t seed) {
    return Rwkv4Layer(cfg, Rwkv4LayerParams<T>::init(cfg, seed));
  }
  /// The same sublayer as `block`, its matrices read in f32 (then T): what fine-tuning a checkpoint starts from.
  static Rwkv4Layer from_block(const Rwkv4Block& block) {
    const Rwkv4BlockParams& b = block.params();
    Rwkv4LayerParams<T> p;
    auto vec = [](const std::vector<float>& v) { return std::vector<T>(v.begin(), v.end()); };
    auto mat = [&](const WeightMatrix& m) { return m.empty() ? std::vector<T>() : vec(m.to_f32()); };
    p.time_decay = vec(b.time_decay), p.time_first = vec(b.time_first), p.time_mix_key = vec(b.time_mix_key);
    p.time_mix_value = vec(b.time_mix_value), p.time_mix_receptance = vec(b.time_mix_receptance);
    p.key = mat(b.key), p.value = mat(b.value), p.receptance = mat(b.receptance), p.output = mat(b.output);
    return Rwkv4Layer(block.config(), std::move(p));
  }

  const Rwkv4BlockConfig& config() const { return cfg_; }
  index_t d_model() const { return cfg_.d_model; }
  const Rwkv4LayerParams<T>& params() const { return p_; }
  /// The parameters, to update in place (sizes are checked again at the next call).
  Rwkv4LayerParams<T>& params() { return p_; }
  /// CPU threads for the projections and the recurrence (0: by the amount of work).
  void set_threads(int threads) { threads_ = threads; }

  /// An empty state for b sequences, in T's dtype.
  State init_state(index_t b) const {
    Checker("Rwkv4Layer::init_state").require(b >= 1, "b", "must be >= 1, got ", b);
    return Rwkv4LayerCache::empty(cfg_, b, dtype_of<T>());
  }
  /// x (b, l, d_model) contiguous T on the CPU → (b, l, d_model), from the empty state.
  Tensor forward(const TensorView& x) const {
    check("Rwkv4Layer::forward", x);
    Tensor y = Tensor::empty(x.shape(), dtype_of<T>());
    rwkv4_detail::forward<T>(cfg_, weights(), x, y, std::nullopt, std::nullopt, false, threads_);
    return y;
  }
  /// The next t tokens x (b, t, d_model) → (b, t, d_model), continuing from `state` and updating it.
  Tensor step(const TensorView& x, State& state) const {
    check("Rwkv4Layer::step", x);
    const Checker c("Rwkv4Layer::step");
    c.require(state.b == x.size(0), "state", "was made for ", state.b, " sequences, x has ", x.size(0));
    c.require(state.fits(cfg_, dtype_of<T>()), "state", "expected ", state.expected(cfg_, dtype_of<T>()),
              " (init_state(", state.b, ")), got ", state.describe());
    Tensor y = Tensor::empty(x.shape(), dtype_of<T>());
    rwkv4_detail::forward<T>(cfg_, weights(), x, y, state.conv_state.view(), state.ssm_state.view(), true, threads_);
    return y;
  }
  /// ∂L/∂x (b, l, d_model) and every parameter's gradient (summed over the batch) for grad_out = ∂L/∂y, y = forward(x).
  Grads backward(const TensorView& x, const TensorView& grad_out) const {
    check("Rwkv4Layer::backward", x);
    head_mixer::check_grad_out<T>(Checker("Rwkv4Layer::backward"), grad_out, x);
    Grads g;
    g.params = head_mixer::zeros_like(p_);
    g.grad_x = rwkv4_detail::backward<T>(cfg_, weights(), p_, x, grad_out, threads_, g.params);
    return g;
  }

 private:
  // Each parameter's size (and, at construction, that every value is finite), by name.
  void check_params(const char* op, bool finite = false) const {
    const Checker c(op);
    p_.for_each_member([&](const char* name, const std::vector<T>& v) {
      head_mixer::check_parameter(c, name, v, Rwkv4LayerParams<T>::expected_size(cfg_, name), finite);
    });
  }
  void check(const char* op, const TensorView& x) const {
    check_params(op);
    head_mixer::check_input<T>(Checker(op), x, cfg_.d_model);
  }
  rwkv4_detail::Weights<T> weights() const {
    const index_t H = cfg_.d_model, A = cfg_.d_att, F = cfg_.d_ffn;
    rwkv4_detail::Weights<T> w;
    w.mix_k = p_.time_mix_key.data(), w.mix_v = p_.time_mix_value.data(), w.mix_r = p_.time_mix_receptance.data();
    if (cfg_.kind == Rwkv4Kind::time_mix) {
      w.time_decay = TensorView::of(p_.time_decay.data(), {A}),
      w.time_first = TensorView::of(p_.time_first.data(), {A});
      w.key = TensorView::of(p_.key.data(), {A, H}), w.value = TensorView::of(p_.value.data(), {A, H});
      w.receptance = TensorView::of(p_.receptance.data(), {A, H}), w.output = TensorView::of(p_.output.data(), {H, A});
    } else {
      w.key = TensorView::of(p_.key.data(), {F, H}), w.value = TensorView::of(p_.value.data(), {H, F});
      w.receptance = TensorView::of(p_.receptance.data(), {H, H});
    }
    return w;
  }

  Rwkv4BlockConfig cfg_;
  Rwkv4LayerParams<T> p_;
  int threads_ = 0;
};

}  // namespace ssm::layers
