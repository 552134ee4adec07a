// The Hyena operator layer (Poli et al. 2023, "Hyena Hierarchy: Towards Larger Convolutional Language Models"; the
// authors' HyenaOperator in HazyResearch/safari; docs/hyena.md). For x (b, l, D) and order N:
//   z = in_proj(x)                               (b, l, (N + 1) D)   with bias
//   z ← short_filter(z)                          a causal depthwise conv of width K (3) with bias, per channel
//   x_0 … x_{N−1}, v = the N + 1 column blocks of z
//   h_o[c, t] = window(t̂) · FFN(PE(t̂))[c (N − 1) + o]      the implicit long filters, t̂ = t / (l_max − 1)
//   y = ssm::hyena(v, x, h, D)                   x_0 ⊙ (h_{N−2} ∗ (x_1 ⊙ … (h_0 ∗ (x_{N−1} ⊙ v) + D_0 ⊙ …)) …)
//   out = out_proj(y)                            with bias
// The implicit filter (safari's HyenaFilter): PE(t̂) = [t̂, cos(f_k ω_t), −sin(f_k ω_t)] (emb_dim values; f_k evenly
// spaced in [1e-4, bands − 1], ω_t = 2π t / l_max), then Linear(emb_dim, F) → Sin → (Linear(F, F) → Sin) × 2 →
// Linear(F, D (N − 1), no bias), Sin(u) = sin(freq ⊙ u) with one freq vector shared by the three; window(t̂) =
// exp(−t̂ |δ_c|) + shift with δ evenly spaced from ln(target) / slow_decay_pct to ln(target) / fast_decay_pct across
// the D (N − 1) filter channels. The filters depend on the position only, so they are computed once for all l_max
// positions (refresh()) and sequences may be up to l_max long.
//
// Decoding has no constant-size state: step() keeps the history of every order's convolution input w'_o (N − 1
// vectors of D per token) and the short conv's last K − 1 inputs, and computes token t's long convolutions as direct
// sums over the t + 1 tokens so far: O(t · D · (N − 1)) work and memory per token (the cost the README states).
// Forward, decoding, and backward (HyenaLayer::backward: through out_proj, the op's backward, the short conv and
// in_proj, and from the filters' gradients back through the window and the FFN to its weights, biases and frequencies
// and the positional embedding). f32 or f64, on the CPU.
#pragma once

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdint>
#include <iterator>
#include <numbers>
#include <optional>
#include <random>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/layers/basic.hpp"
#include "ssm/layers/conv1d.hpp"
#include "ssm/layers/head_mixer.hpp"
#include "ssm/layers/layer_cache.hpp"
#include "ssm/ops/causal_conv1d.hpp"
#include "ssm/ops/hyena.hpp"

namespace ssm::layers {

/// Sizes and hyperparameters of one Hyena operator (safari's names in comments where ours differ).
struct HyenaConfig {
  index_t d_model = 0;           // D
  index_t order = 2;             // N: N gates, N − 1 long convolutions
  index_t l_max = 1024;          // the longest sequence (the positional embedding's length)
  index_t filter_order = 64;     // F: the implicit filter's FFN width
  index_t emb_dim = 3;           // the positional embedding's size: odd, >= 3
  index_t short_filter_order = 3;  // K
  double sin_freq = 1.0;         // w: the initial frequency of the FFN's Sin (safari's HyenaFilter default; its LM
                                 // configs use 14)
  bool modulate = true;          // the exponential window
  double fast_decay_pct = 0.3, slow_decay_pct = 1.5, target = 1e-2, shift = 0.0;

  index_t filter_channels() const { return d_model * (order - 1); }

  void validate(const char* op = "HyenaConfig") const {
    Checker c(op);
    c.require(d_model >= 1, "d_model", "must be >= 1, got ", d_model);
    c.require(order >= 2 && order <= kHyenaMaxOrder, "order", "must be in [2, ", kHyenaMaxOrder, "], got ", order);
    c.require(l_max >= 2 && l_max <= (index_t(1) << 24), "l_max", "must be in [2, 2^24] (t̂ = t / (l_max − 1)), got ",
              l_max);
    c.require(filter_order >= 1, "filter_order", "must be >= 1, got ", filter_order);
    c.require(emb_dim >= 3 && emb_dim % 2 == 1, "emb_dim", "must be odd and >= 3 (t̂, then cos / sin pairs), got ",
              emb_dim);
    c.require(short_filter_order >= 2, "short_filter_order", "must be >= 2 (the causal conv's width), got ",
              short_filter_order);
    c.finite("sin_freq", sin_freq).positive("fast_decay_pct", fast_decay_pct).positive("slow_decay_pct", slow_decay_pct);
    c.require(std::isfinite(target) && target > 0 && target < 1, "target", "must be in (0, 1), got ", target);
    c.finite("shift", shift);
  }
};

/// The parameters under safari's names (relative to the operator). The positional embedding's z is a parameter in
/// safari (lr_pos_emb); it starts as the formula and is kept here as given.
template <class T>
struct HyenaLayerParams {
  std::vector<T> in_proj_weight, in_proj_bias;            // ((N + 1) D, D), ((N + 1) D)
  std::vector<T> out_proj_weight, out_proj_bias;          // (D, D), (D)
  std::vector<T> short_filter_weight, short_filter_bias;  // ((N + 1) D, 1, K), ((N + 1) D)
  std::vector<T> filter_bias;                             // (D (N − 1)): D_o of channel c at c (N − 1) + o
  std::vector<T> pos_emb_z;                               // (1, l_max, emb_dim)
  std::vector<T> W0, b0, W1, b1, W2, b2, W3;              // (F, emb), (F), (F, F), (F), (F, F), (F), (D (N − 1), F)
  std::vector<T> freq;                                    // (1, F): the Sin's frequencies
  std::vector<T> deltas;                                  // (1, 1, D (N − 1)): the window's decay rates

  /// f(name, vector, shape) for every parameter, the decay rates included (a const one gets const vectors).
  template <class F>
  void for_each(const HyenaConfig& cfg, F&& f) {
    visit_all(*this, cfg, f);
  }
  template <class F>
  void for_each(const HyenaConfig& cfg, F&& f) const {
    visit_all(*this, cfg, f);
  }

  /// Calls f(name, vector) for every trainable parameter: all but the window's decay rates, which safari registers
  /// with lr 0 (a buffer; HyenaLayer::backward gives no gradient for them). What an optimizer walks.
  template <class F>
  void for_each(F&& f) {
    for_each_trainable(*this, f);
  }

 private:
  template <class Self, class F>
  static void visit_all(Self& p, const HyenaConfig& cfg, F& f) {
    const index_t D = cfg.d_model, P = (cfg.order + 1) * D, Df = cfg.filter_channels(), Fw = cfg.filter_order;
    f("in_proj.weight", p.in_proj_weight, Dims{P, D});
    f("in_proj.bias", p.in_proj_bias, Dims{P});
    f("out_proj.weight", p.out_proj_weight, Dims{D, D});
    f("out_proj.bias", p.out_proj_bias, Dims{D});
    f("short_filter.weight", p.short_filter_weight, Dims{P, 1, cfg.short_filter_order});
    f("short_filter.bias", p.short_filter_bias, Dims{P});
    f("filter_fn.bias", p.filter_bias, Dims{Df});
    f("filter_fn.pos_emb.z", p.pos_emb_z, Dims{1, cfg.l_max, cfg.emb_dim});
    f("filter_fn.implicit_filter.0.weight", p.W0, Dims{Fw, cfg.emb_dim});
    f("filter_fn.implicit_filter.0.bias", p.b0, Dims{Fw});
    f("filter_fn.implicit_filter.1.freq", p.freq, Dims{1, Fw});
    f("filter_fn.implicit_filter.2.weight", p.W1, Dims{Fw, Fw});
    f("filter_fn.implicit_filter.2.bias", p.b1, Dims{Fw});
    f("filter_fn.implicit_filter.4.weight", p.W2, Dims{Fw, Fw});
    f("filter_fn.implicit_filter.4.bias", p.b2, Dims{Fw});
    f("filter_fn.implicit_filter.6.weight", p.W3, Dims{Df, Fw});
    f("filter_fn.modulation.deltas", p.deltas, Dims{1, 1, Df});
  }
  template <class F>
  static void for_each_trainable(HyenaLayerParams& p, F& f) {
    std::vector<T>* all[] = {&p.in_proj_weight,
                             &p.in_proj_bias,
                             &p.out_proj_weight,
                             &p.out_proj_bias,
                             &p.short_filter_weight,
                             &p.short_filter_bias,
                             &p.filter_bias,
                             &p.pos_emb_z,
                             &p.W0,
                             &p.b0,
                             &p.freq,
                             &p.W1,
                             &p.b1,
                             &p.W2,
                             &p.b2,
                             &p.W3};
    const char* names[] = {"in_proj.weight",
                           "in_proj.bias",
                           "out_proj.weight",
                           "out_proj.bias",
                           "short_filter.weight",
                           "short_filter.bias",
                           "filter_fn.bias",
                           "filter_fn.pos_emb.z",
                           "filter_fn.implicit_filter.0.weight",
                           "filter_fn.implicit_filter.0.bias",
                           "filter_fn.implicit_filter.1.freq",
                           "filter_fn.implicit_filter.2.weight",
                           "filter_fn.implicit_filter.2.bias",
                           "filter_fn.implicit_filter.4.weight",
                           "filter_fn.implicit_filter.4.bias",
                           "filter_fn.implicit_filter.6.weight"};
    for (std::size_t i = 0; i < std::size(all); ++i)
      if (!all[i]->empty()) f(names[i], *all[i]);
  }
};

/// The decoding state of b sequences: the short conv's last K − 1 inputs (b, K − 1, (N + 1) D) and the history of
/// every order's convolution input, (b, t, N − 1, D) for the t tokens so far (it grows by one row per token).
/// A value: copying it copies the tensors (forking the sequences).
template <class T>
struct HyenaLayerState {
  index_t b = 0, t = 0;
  Tensor conv_state;       // (b, K − 1, (N + 1) D)
  std::vector<T> history;  // (b, capacity, N − 1, D), the first t rows of each sequence used
  index_t capacity = 0;

  HyenaLayerState() = default;
  HyenaLayerState(const HyenaLayerState& o) : b(o.b), t(o.t), history(o.history), capacity(o.capacity) {
    if (o.conv_state.defined()) {
      conv_state = Tensor::empty(o.conv_state.shape(), o.conv_state.dtype());
      copy(conv_state.view(), o.conv_state.view());
    }
  }
  HyenaLayerState& operator=(const HyenaLayerState& o) {
    if (this != &o) *this = HyenaLayerState(o);
    return *this;
  }
  HyenaLayerState(HyenaLayerState&&) noexcept = default;
  HyenaLayerState& operator=(HyenaLayerState&&) noexcept = default;
  ~HyenaLayerState() = default;

  std::size_t nbytes() const { return (conv_state.defined() ? conv_state.nbytes() : 0) + history.size() * sizeof(T); }
};

namespace hyena_detail {

/// zc (b, l, P) = the short causal depthwise conv (width K, bias, no activation) of z = x Wᵀ + bias: the operator's
/// N + 1 projections. With conv_state (b, K − 1, P) the conv continues from it and leaves the last K − 1 inputs there.
/// z_out, when given, receives z (the conv's input: what a backward needs).
template <class T>
Tensor project_and_filter(const TensorView& x, const std::vector<T>& W, const std::vector<T>& bias,
                          const std::vector<T>& short_w, const std::vector<T>& short_b, index_t K,
                          const std::optional<TensorView>& conv_state, int threads, Tensor* z_out = nullptr) {
  const index_t b = x.size(0), l = x.size(1), D = x.size(2), P = static_cast<index_t>(bias.size());
  Tensor z = Tensor::empty({b, l, P}, dtype_of<T>()), zc = Tensor::empty({b, l, P}, dtype_of<T>());
  project(TensorView::of(W.data(), {P, D}), x.reshape({b * l, D}), TensorView::of(bias.data(), {P}),
          z.view().reshape({b * l, P}), threads);
  CausalConv1dInputs ci;
  ci.x = z.view(), ci.weight = TensorView::of(short_w.data(), {P, K}), ci.bias = TensorView::of(short_b.data(), {P});
  ci.silu = false, ci.channel_last = true, ci.num_threads = threads;
  if (conv_state) ci.initial_state = *conv_state;
  Tensor unused;
  if (!conv_state) unused = Tensor::empty({b, K - 1, P}, dtype_of<T>());
  causal_conv1d_into(ci, zc, conv_state ? *conv_state : unused.view());
  if (z_out != nullptr) *z_out = std::move(z);
  return zc;
}

/// The backward of project_and_filter from the empty conv state: z (b, l, P) the conv's input (its z_out) and grad_zc
/// (b, l, P) = ∂L/∂zc. The short conv sequence by sequence, then the projection: writes ∂L/∂x into grad_x (b, l, D) and
/// adds the parameters' gradients into grad_W (P, D), grad_bias (P), grad_short_w (P, K) and grad_short_b (P).
template <class T>
void project_and_filter_backward(const TensorView& x, const std::vector<T>& W, const std::vector<T>& short_w,
                                 const std::vector<T>& short_b, index_t K, const Tensor& z, const T* grad_zc, T* grad_x,
                                 T* grad_W, T* grad_bias, T* grad_short_w, T* grad_short_b) {
  const index_t b = x.size(0), l = x.size(1), D = x.size(2), P = static_cast<index_t>(short_b.size());
  const Conv1dArgs<T> conv{l, P, K, short_w.data(), short_b.data(), false};
  std::vector<T> grad_z(static_cast<std::size_t>(b * l * P));
  for (index_t bi = 0; bi < b; ++bi)
    conv1d_backward(conv, z.data_as<const T>() + bi * l * P, static_cast<const T*>(nullptr), grad_zc + bi * l * P,
                    static_cast<const T*>(nullptr), grad_z.data() + bi * l * P, static_cast<T*>(nullptr), grad_short_w,
                    grad_short_b);
  linear_backward(x.data_as<const T>(), W.data(), grad_z.data(), grad_x, grad_W, grad_bias, b * l, D, P);
}

}  // namespace hyena_detail

/// One Hyena operator: x (b, l, D) → (b, l, D), l ≤ l_max. T = float or double.
template <class T = float>
class HyenaLayer {
 public:
  using State = HyenaLayerState<T>;

  HyenaLayer(const HyenaConfig& cfg, HyenaLayerParams<T> p) : cfg_(cfg), p_(std::move(p)) {
    cfg_.validate("HyenaLayer");
    refresh();  // checks every parameter's size
  }

  /// safari's initialization: in / out projections and the short filter PyTorch-default uniform (±1/√fan_in), the FFN
  /// likewise with freq = sin_freq, filter_fn.bias standard normal, the positional embedding and the decay rates by
  /// their formulas.
  static HyenaLayer init(const HyenaConfig& cfg, std::uint64_t seed) {
    cfg.validate("HyenaLayer::init");
    std::mt19937_64 rng(seed);
    using head_mixer::uniform_fan_in;
    const index_t D = cfg.d_model, P = (cfg.order + 1) * D, Df = cfg.filter_channels(), Fw = cfg.filter_order;
    const index_t E = cfg.emb_dim, K = cfg.short_filter_order;
    HyenaLayerParams<T> p;
    p.in_proj_weight = uniform_fan_in<T>(rng, P * D, double(D)), p.in_proj_bias = uniform_fan_in<T>(rng, P, double(D));
    p.out_proj_weight = uniform_fan_in<T>(rng, D * D, double(D)), p.out_proj_bias = uniform_fan_in<T>(rng, D, double(D));
    p.short_filter_weight = uniform_fan_in<T>(rng, P * K, double(K));
    p.short_filter_bias = uniform_fan_in<T>(rng, P, double(K));
    std::normal_distribution<double> normal(0.0, 1.0);
    p.filter_bias.resize(static_cast<std::size_t>(Df));
    for (T& v : p.filter_bias) v = static_cast<T>(normal(rng));
    p.W0 = uniform_fan_in<T>(rng, Fw * E, double(E)), p.b0 = uniform_fan_in<T>(rng, Fw, double(E));
    p.W1 = uniform_fan_in<T>(rng, Fw * Fw, double(Fw)), p.b1 = uniform_fan_in<T>(rng, Fw, double(Fw));
    p.W2 = uniform_fan_in<T>(rng, Fw * Fw, double(Fw)), p.b2 = uniform_fan_in<T>(rng, Fw, double(Fw));
    p.W3 = uniform_fan_in<T>(rng, Df * Fw, double(Fw));
    p.freq.assign(static_cast<std::size_t>(Fw), static_cast<T>(cfg.sin_freq));
    p.pos_emb_z = positional_embedding(cfg);
    p.deltas = decay_rates(cfg);
    return HyenaLayer(cfg, std::move(p));
  }

  /// safari's PositionalEmbedding: row t = [t̂, cos(f_1 ω_t) … cos(f_B ω_t), −sin(f_1 ω_t) … −sin(f_B ω_t)], t̂ = t /
  /// (l_max − 1), ω_t = 2π t / l_max, B = (emb_dim − 1) / 2 bands, f_k = 1e-4 + (k − 1) (B − 1 − 1e-4) / (B − 1).
  static std::vector<T> positional_embedding(const HyenaConfig& cfg) {
    const index_t L = cfg.l_max, E = cfg.emb_dim, B = (E - 1) / 2;
    std::vector<T> z(static_cast<std::size_t>(L * E));
    for (index_t t = 0; t < L; ++t) {
      const double th = static_cast<double>(t) / static_cast<double>(L - 1);
      const double w = 2 * std::numbers::pi * static_cast<double>(t) / static_cast<double>(L);
      z[t * E] = static_cast<T>(th);
      for (index_t k = 0; k < B; ++k) {
        const double f = B == 1 ? 1e-4 : 1e-4 + static_cast<double>(k) * (static_cast<double>(B - 1) - 1e-4) / static_cast<double>(B - 1);
        z[t * E + 1 + k] = static_cast<T>(std::cos(f * w));
        z[t * E + 1 + B + k] = static_cast<T>(-std::sin(f * w));
      }
    }
    return z;
  }

  /// safari's ExponentialModulation deltas: evenly spaced from ln(target) / slow_decay_pct to ln(target) /
  /// fast_decay_pct over the D (N − 1) filter channels.
  static std::vector<T> decay_rates(const HyenaConfig& cfg) {
    const index_t Df = cfg.filter_channels();
    const double lo = std::log(cfg.target) / cfg.slow_decay_pct, hi = std::log(cfg.target) / cfg.fast_decay_pct;
    std::vector<T> d(static_cast<std::size_t>(Df));
    for (index_t i = 0; i < Df; ++i)
      d[i] = static_cast<T>(Df == 1 ? lo : lo + (hi - lo) * static_cast<double>(i) / static_cast<double>(Df - 1));
    return d;
  }

  const HyenaConfig& config() const { return cfg_; }
  index_t d_model() const { return cfg_.d_model; }
  const HyenaLayerParams<T>& params() const { return p_; }
  /// Mutable parameters; call refresh() after changing them.
  HyenaLayerParams<T>& params() { return p_; }
  void set_threads(int n) {
    SSM_CHECK(n >= 0, "HyenaLayer::set_threads: n must be >= 0 (0 = automatic), got ", n);
    threads_ = n;
  }

  /// The long filters h (N − 1, D, taps()) and skips D (N − 1, D) in the op's layout, from the parameters.
  const Tensor& filters() const { return h_; }
  const Tensor& skips() const { return skip_; }
  /// How many positions the filters were computed for (refresh(n_taps)): l_max unless asked for fewer; forward, step
  /// and backward take sequences up to this long.
  index_t taps() const { return h_.defined() ? h_.size(2) : 0; }

  /// A copy of this layer with its filters recomputed from the current parameters for the first n_taps positions (0:
  /// all l_max), refresh(n_taps) on a copy: what a caller that cannot call refresh() after every update uses
  /// (models::HyenaMixer, in training, with taps = the sequence's length).
  HyenaLayer refreshed(index_t n_taps = 0) const {
    HyenaLayer c = *this;
    c.refresh(n_taps);
    return c;
  }

  /// Recomputes the implicit filters (after the parameters changed) for positions t < n_taps (0: every one of l_max;
  /// otherwise 1 ≤ n_taps ≤ l_max). t̂ = t / (l_max − 1) whatever n_taps is: the filters' first taps are the same.
  void refresh(index_t n_taps = 0) {
    SSM_CHECK(n_taps >= 0 && n_taps <= cfg_.l_max, "HyenaLayer::refresh: n_taps must be in [0, l_max = ", cfg_.l_max,
              "] (0: all), got ", n_taps);
    check_sizes("HyenaLayer::refresh");
    const index_t N = cfg_.order, D = cfg_.d_model, L = cfg_.l_max, E = cfg_.emb_dim, Fw = cfg_.filter_order;
    const index_t Df = cfg_.filter_channels(), Lh = n_taps > 0 ? n_taps : L;
    h_ = Tensor::empty({N - 1, D, Lh}, dtype_of<T>());
    h_by_tap_.assign(static_cast<std::size_t>(Lh * (N - 1) * D), T(0));
    skip_ = Tensor::empty({N - 1, D}, dtype_of<T>());
    std::vector<double> a(static_cast<std::size_t>(Fw)), b(a.size());
    auto linear_sin = [&](const std::vector<T>& W, const std::vector<T>& bias, const std::vector<double>& in, index_t n_in,
                          std::vector<double>& out) {
      for (index_t j = 0; j < Fw; ++j) {
        double s = static_cast<double>(bias[j]);
        for (index_t k = 0; k < n_in; ++k) s += static_cast<double>(W[j * n_in + k]) * in[k];
        out[j] = std::sin(static_cast<double>(p_.freq[j]) * s);
      }
    };
    std::vector<double> e(static_cast<std::size_t>(E));
    T* h = h_.data_as<T>();
    for (index_t t = 0; t < Lh; ++t) {
      for (index_t k = 0; k < E; ++k) e[k] = static_cast<double>(p_.pos_emb_z[t * E + k]);
      linear_sin(p_.W0, p_.b0, e, E, a);
      linear_sin(p_.W1, p_.b1, a, Fw, b);
      linear_sin(p_.W2, p_.b2, b, Fw, a);
      const double th = static_cast<double>(t) / static_cast<double>(L - 1);
      for (index_t f = 0; f < Df; ++f) {
        double s = 0;
        for (index_t k = 0; k < Fw; ++k) s += static_cast<double>(p_.W3[f * Fw + k]) * a[k];
        if (cfg_.modulate) s *= std::exp(-th * std::abs(static_cast<double>(p_.deltas[f]))) + cfg_.shift;
        const index_t c = f / (N - 1), o = f % (N - 1);  // channel-major, order-minor
        h[(o * D + c) * Lh + t] = static_cast<T>(s);
        h_by_tap_[static_cast<std::size_t>((t * (N - 1) + o) * D + c)] = static_cast<T>(s);
      }
    }
    for (index_t f = 0; f < Df; ++f) skip_.data_as<T>()[(f % (N - 1)) * D + f / (N - 1)] = p_.filter_bias[f];
  }

  /// x (b, l, D) contiguous, l ≤ l_max → (b, l, D).
  Tensor forward(const TensorView& x) const {
    Checker c("HyenaLayer::forward");
    check_sizes("HyenaLayer::forward");
    head_mixer::check_input<T>(c, x, cfg_.d_model);
    check_length(c, x.size(1));
    const index_t b = x.size(0), l = x.size(1), D = cfg_.d_model, rows = b * l;
    Tensor out = Tensor::empty({b, l, D}, dtype_of<T>());
    if (rows == 0) return out;
    const Tensor y = mix(x, nullptr);
    project(TensorView::of(p_.out_proj_weight.data(), {D, D}), y.view().reshape({rows, D}),
            TensorView::of(p_.out_proj_bias.data(), {D}), out.view().reshape({rows, D}), threads_);
    return out;
  }

  /// The decoding state of b sequences before their first token.
  State init_state(index_t b) const {
    SSM_CHECK(b >= 1, "HyenaLayer::init_state: b must be >= 1, got ", b);
    State s;
    s.b = b;
    s.conv_state = Tensor::zeros({b, cfg_.short_filter_order - 1, (cfg_.order + 1) * cfg_.d_model}, dtype_of<T>());
    return s;
  }

  /// The filter taps a step of t tokens from `state` reads: every position so far (the direct sums over the history).
  index_t taps_to_step(const State& state, index_t t) const { return state.t + t; }

  /// The next t tokens x (b, t, D) of the sequences in `state` (advanced): equal to rows of forward() over the whole
  /// sequence. Token n's long convolutions are direct sums over the n + 1 tokens so far: per order and tap τ, one row
  /// of the filters (l_max, N − 1, D) times one row of the history (n − τ), both contiguous over the D channels (a
  /// streaming read of 2 (n + 1) (N − 1) D values a token).
  Tensor step(const TensorView& x, State& state) const {
    Checker c("HyenaLayer::step");
    check_sizes("HyenaLayer::step");
    head_mixer::check_input<T>(c, x, cfg_.d_model);
    const index_t b = x.size(0), l = x.size(1), D = cfg_.d_model, N = cfg_.order, P = (N + 1) * D, K = cfg_.short_filter_order;
    c.require(state.b == b && state.conv_state.defined() && state.conv_state.shape() == Dims{b, K - 1, P}, "state",
              "expected the state of ", b, " sequences (init_state(", b, "))");
    c.require(state.t + l <= cfg_.l_max, "x", "would take the sequences to ", state.t + l, " tokens, more than l_max = ",
              cfg_.l_max);
    check_length(c, state.t + l);
    Tensor out = Tensor::empty({b, l, D}, dtype_of<T>());
    if (b * l == 0) return out;
    // the projection and the short conv from the carried inputs
    const Tensor zc = hyena_detail::project_and_filter(x, p_.in_proj_weight, p_.in_proj_bias, p_.short_filter_weight,
                                                       p_.short_filter_bias, K, state.conv_state.view(), threads_);
    // grow the history to hold the new tokens
    const index_t need = state.t + l;
    if (need > state.capacity) {
      const index_t cap = std::max(need, 2 * state.capacity);
      std::vector<T> grown(static_cast<std::size_t>(b * cap * (N - 1) * D));
      for (index_t bi = 0; bi < b; ++bi)
        std::copy_n(state.history.data() + bi * state.capacity * (N - 1) * D, state.t * (N - 1) * D,
                    grown.data() + bi * cap * (N - 1) * D);
      state.history.swap(grown);
      state.capacity = cap;
    }
    const T* zs = zc.data_as<T>();
    const T* skip = skip_.data_as<T>();  // (N − 1, D)
    Tensor y = Tensor::empty({b, l, D}, dtype_of<T>());
    T* ys = y.data_as<T>();
    std::vector<T> w(static_cast<std::size_t>(D)), acc(w.size());  // (D): the current order's input, output
    for (index_t bi = 0; bi < b; ++bi) {
      T* hist = state.history.data() + bi * state.capacity * (N - 1) * D;  // (capacity, N − 1, D)
      for (index_t j = 0; j < l; ++j) {
        const index_t n = state.t + j;  // the token's position
        const T* zr = zs + (bi * l + j) * P;  // (N + 1, D): x_0 … x_{N−1}, v
        std::copy_n(zr + N * D, D, w.data());
        for (index_t o = 0; o + 1 < N; ++o) {
          T* now = hist + (n * (N - 1) + o) * D;  // (D) this order's convolution input at token n
          const T* gate = zr + (N - 1 - o) * D;
          for (index_t c2 = 0; c2 < D; ++c2) {
            now[c2] = w[c2] * gate[c2];
            acc[c2] = skip[o * D + c2] * now[c2];
          }
          for (index_t tau = 0; tau <= n; ++tau) {
            const T* f = h_by_tap_.data() + (tau * (N - 1) + o) * D;  // (D) the filters' tap τ
            const T* past = hist + ((n - tau) * (N - 1) + o) * D;     // (D) the input τ tokens back
            for (index_t c2 = 0; c2 < D; ++c2) acc[c2] += f[c2] * past[c2];
          }
          w.swap(acc);
        }
        for (index_t c2 = 0; c2 < D; ++c2) ys[(bi * l + j) * D + c2] = w[c2] * zr[c2];
      }
    }
    state.t += l;
    project(TensorView::of(p_.out_proj_weight.data(), {D, D}), y.view().reshape({b * l, D}),
            TensorView::of(p_.out_proj_bias.data(), {D}), out.view().reshape({b * l, D}), threads_);
    return out;
  }

  /// The gradients of backward(): ∂L/∂x (b, l, D) and one of every parameter (the decay rates' stays empty).
  using Grads = head_mixer::MixerGrads<T, HyenaLayerParams<T>>;

  /// Backward of forward(): x and grad_out = ∂L/∂out, both (b, l, D) contiguous CPU tensors of T, l ≤ l_max. Returns
  /// ∂L/∂x and the gradient of every trainable parameter, summed over the batch: out_proj, then ssm::hyena_backward
  /// (v, the gates, the filters' taps and the skips D_o = filter_fn.bias), the short conv and in_proj; the taps'
  /// gradients go back through the window and the FFN (in double, every position t < l) to W0 … W3, b0 … b2, the Sin
  /// frequencies and the positional embedding. The filters are the ones refresh() made: call refresh() after changing
  /// the parameters, as for forward().
  Grads backward(const TensorView& x, const TensorView& grad_out) const {
    Checker c("HyenaLayer::backward");
    check_sizes("HyenaLayer::backward");
    head_mixer::check_input<T>(c, x, cfg_.d_model);
    head_mixer::check_grad_out<T>(c, grad_out, x);
    check_length(c, x.size(1));
    const index_t b = x.size(0), l = x.size(1), D = cfg_.d_model, N = cfg_.order, rows = b * l, P = (N + 1) * D;
    const index_t K = cfg_.short_filter_order;
    Grads g;
    g.params = p_;
    g.params.for_each(cfg_, [](const char*, std::vector<T>& v, const Dims&) { std::fill(v.begin(), v.end(), T(0)); });
    g.params.deltas.clear();  // not trained (safari: lr 0)
    g.grad_x.assign(static_cast<std::size_t>(rows * D), T(0));
    if (rows == 0) return g;
    // ---- the forward again, to out_proj's input y (b, l, D), keeping the conv's input and the op's inputs ----
    Mixed s;
    const Tensor y = mix(x, &s);
    // ---- out_proj ----
    HyenaLayerParams<T>& gp = g.params;
    Tensor grad_y = Tensor::empty({b, l, D}, dtype_of<T>());
    linear_backward(y.data_as<const T>(), p_.out_proj_weight.data(), grad_out.data_as<const T>(), grad_y.data_as<T>(),
                    gp.out_proj_weight.data(), gp.out_proj_bias.data(), rows, D, D);
    // ---- the gated long convolutions (ssm::hyena_backward) ----
    const HyenaGrads hg = hyena_backward(s.in, grad_y, op_options());
    std::vector<T> grad_zc(static_cast<std::size_t>(rows * P));  // (b, l, P) = [x_0 … x_{N−1}, v]
    const T* gx = hg.grad_x.data_as<const T>();                  // (N, b, l, D)
    for (index_t r = 0; r < rows; ++r) {
      for (index_t i = 0; i < N; ++i) std::copy_n(gx + (i * rows + r) * D, D, grad_zc.data() + r * P + i * D);
      std::copy_n(hg.grad_v.data_as<const T>() + r * D, D, grad_zc.data() + r * P + N * D);
    }
    const T* gskip = hg.grad_bias.data_as<const T>();  // (N − 1, D)
    for (index_t f = 0; f < cfg_.filter_channels(); ++f) gp.filter_bias[f] = gskip[(f % (N - 1)) * D + f / (N - 1)];
    // ---- the short conv (no activation), sequence by sequence, then in_proj ----
    hyena_detail::project_and_filter_backward(
        x, p_.in_proj_weight, p_.short_filter_weight, p_.short_filter_bias, K, s.z, grad_zc.data(), g.grad_x.data(),
        gp.in_proj_weight.data(), gp.in_proj_bias.data(), gp.short_filter_weight.data(), gp.short_filter_bias.data());
    filter_backward(hg.grad_h.data_as<const T>(), l, gp);
    return g;
  }

 private:
  // What backward keeps of mix(): z (b, l, P), the short conv's input; zc, its output, which `in` (the op's inputs)
  // views.
  struct Mixed {
    Tensor z, zc;
    HyenaInputs in;
  };

  HyenaOptions op_options() const {
    HyenaOptions opt;
    opt.threads = threads_;
    return opt;
  }

  // forward() up to out_proj: the projections and the short conv, then the gated long convolutions (ssm::hyena) into
  // y (b, l, D), out_proj's input. `saved`, when given, keeps what backward needs.
  Tensor mix(const TensorView& x, Mixed* saved) const {
    const index_t b = x.size(0), l = x.size(1), D = cfg_.d_model, N = cfg_.order;
    Mixed local;
    Mixed& s = saved != nullptr ? *saved : local;
    s.zc = hyena_detail::project_and_filter(x, p_.in_proj_weight, p_.in_proj_bias, p_.short_filter_weight,
                                            p_.short_filter_bias, cfg_.short_filter_order, std::nullopt, threads_,
                                            saved != nullptr ? &s.z : nullptr);
    s.in = HyenaInputs{};
    for (index_t i = 0; i < N; ++i) s.in.x.push_back(s.zc.view().narrow(2, i * D, D));
    s.in.v = s.zc.view().narrow(2, N * D, D), s.in.h = h_.view(), s.in.bias = skip_.view();
    Tensor y = Tensor::empty({b, l, D}, dtype_of<T>());
    hyena_into(s.in, y, op_options());
    return y;
  }

  // A sequence of l tokens must fit l_max and the filters refresh() computed (taps()).
  void check_length(const Checker& c, index_t l) const {
    c.require(l <= cfg_.l_max, "x", "has ", l, " tokens, more than l_max = ", cfg_.l_max,
              " (the implicit filters' length)");
    c.require(l <= taps(), "x", "has ", l, " tokens, more than the ", taps(),
              " positions the filters were computed for (refresh(n_taps))");
  }

  // The implicit filter's backward: grad_h (N − 1, D, taps()), of which the first l taps are used, back through
  // h[f](t) = window_f(t̂) · (W3 a2(t))[f], a_k = sin(freq ⊙ (W_k a_{k−1} + b_k)) (a_{−1} = PE(t̂)), into gp's FFN
  // weights, biases and frequencies and the positional embedding's rows t < l. Every position at once, in double
  // (rows t, Eigen products).
  void filter_backward(const T* grad_h, index_t l, HyenaLayerParams<T>& gp) const {
    using M = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using Row = Eigen::Matrix<double, 1, Eigen::Dynamic>;
    const index_t N = cfg_.order, D = cfg_.d_model, L = cfg_.l_max, E = cfg_.emb_dim, Fw = cfg_.filter_order;
    const index_t Df = cfg_.filter_channels(), Lh = taps();  // grad_h is (N − 1, D, Lh)
    auto mat = [](const std::vector<T>& v, index_t r, index_t c) {
      return Eigen::Map<const RowMatrix<T>>(v.data(), r, c).template cast<double>().eval();
    };
    auto row = [](const std::vector<T>& v) {
      return Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(v.data(), static_cast<index_t>(v.size()))
          .template cast<double>()
          .eval();
    };
    const M W0 = mat(p_.W0, Fw, E), W1 = mat(p_.W1, Fw, Fw), W2 = mat(p_.W2, Fw, Fw), W3 = mat(p_.W3, Df, Fw);
    const Row b0 = row(p_.b0), b1 = row(p_.b1), b2 = row(p_.b2), freq = row(p_.freq);
    // forward, rows t < l: S_k = A_{k−1} W_kᵀ + b_k (l, Fw), A_k = sin(freq ⊙ S_k)
    const M PE = mat(p_.pos_emb_z, L, E).topRows(l);
    auto sin_layer = [&](const M& S) { return M((S.array().rowwise() * freq.array()).sin()); };
    const M S0 = (PE * W0.transpose()).rowwise() + b0, A0 = sin_layer(S0);
    const M S1 = (A0 * W1.transpose()).rowwise() + b1, A1 = sin_layer(S1);
    const M S2 = (A1 * W2.transpose()).rowwise() + b2, A2 = sin_layer(S2);
    // ∂L/∂(W3 a2) = grad_h ⊙ window, gathered to (t, f) with f = c (N − 1) + o
    M G(l, Df);
    for (index_t f = 0; f < Df; ++f) {
      const index_t ch = f / (N - 1), o = f % (N - 1);
      const double delta = std::abs(static_cast<double>(p_.deltas[f]));
      for (index_t t = 0; t < l; ++t) {
        const double th = static_cast<double>(t) / static_cast<double>(L - 1);
        const double window = cfg_.modulate ? std::exp(-th * delta) + cfg_.shift : 1.0;
        G(t, f) = static_cast<double>(grad_h[(o * D + ch) * Lh + t]) * window;
      }
    }
    M dW3 = G.transpose() * A2;  // (Df, Fw)
    M GA = G * W3;               // (l, Fw): ∂L/∂A2
    Row dfreq = Row::Zero(Fw);
    // back through one sin layer: GA = ∂L/∂A_k → ∂L/∂S_k (returned), accumulating ∂L/∂freq
    auto sin_back = [&](const M& S, const M& GA_k) {
      const M cosine = (S.array().rowwise() * freq.array()).cos();
      dfreq += (GA_k.array() * cosine.array() * S.array()).colwise().sum().matrix();
      return M((GA_k.array() * cosine.array()).rowwise() * freq.array());
    };
    const M GS2 = sin_back(S2, GA);
    const M dW2 = GS2.transpose() * A1;
    const Row db2 = GS2.colwise().sum();
    const M GS1 = sin_back(S1, GS2 * W2);
    const M dW1 = GS1.transpose() * A0;
    const Row db1 = GS1.colwise().sum();
    const M GS0 = sin_back(S0, GS1 * W1);
    const M dW0 = GS0.transpose() * PE;
    const Row db0 = GS0.colwise().sum();
    const M dPE = GS0 * W0;  // (l, E)
    auto store = [](const auto& m, std::vector<T>& out) {
      const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> r = m;
      for (index_t i = 0; i < r.size(); ++i) out[static_cast<std::size_t>(i)] = static_cast<T>(r.data()[i]);
    };
    store(dW0, gp.W0), store(db0, gp.b0), store(dW1, gp.W1), store(db1, gp.b1), store(dW2, gp.W2), store(db2, gp.b2);
    store(dW3, gp.W3), store(dfreq, gp.freq);
    for (index_t t = 0; t < l; ++t)
      for (index_t k = 0; k < E; ++k) gp.pos_emb_z[t * E + k] = static_cast<T>(dPE(t, k));
  }

 private:
  // Every parameter's size (params() hands them out: a resized one is an error, not a read past its end).
  void check_sizes(const char* op) const {
    p_.for_each(cfg_,
                [&](const char* nm, const std::vector<T>& v, const Dims& s) { check_parameter_size(op, nm, v, s); });
  }

  HyenaConfig cfg_;
  HyenaLayerParams<T> p_;
  Tensor h_, skip_;          // (N − 1, D, taps), (N − 1, D)
  std::vector<T> h_by_tap_;  // (taps, N − 1, D): h_ by tap, for step()
  int threads_ = 0;
};

/// StripedHyena's gated convolution (Poli et al. 2023, togethercomputer/stripedhyena: ParallelGatedConvBlock's mixer
/// with ParallelHyenaFilter, hyena_filter_groups = 1): the order-2 Hyena operator with a modal long filter,
///   h[c, t] = Re Σ_s R[c, s] p[c, s]^t          S = state_size poles p and residues R per channel (complex)
///   z = short_filter(projections(x))            (b, l, 3 H), the FIR with its bias
///   x2, x1, v = column split of z               per head g of H / heads channels: [x2 | x1 | v] (column_split_hyena)
///   y = x2 ⊙ (h ∗ (x1 ⊙ v) + D ⊙ (x1 ⊙ v))       ssm::hyena of order 2 (x_0 = x2, x_1 = x1)
///   out = out_filter_dense(y)
/// Because h is a sum of S exponentials, decoding has a constant-size state: per channel the S complex sums
/// state_s = p_s state_s + (x1 ⊙ v)_t, and y_t = x2_t ⊙ (Re Σ_s R_s state_s + D (x1 ⊙ v)_t) (with the FIR's last K − 1
/// inputs). A forward with a state continues it exactly: the carried sums add x2_t ⊙ Re Σ_s R_s p_s^{t+1} state_s.
struct ModalHyenaConfig {
  index_t d_model = 0;              // H
  index_t heads = 1;                // the column split's groups (num_attention_heads with column_split_hyena)
  index_t state_size = 2;           // S: poles per channel
  index_t short_filter_length = 3;  // K
  index_t l_max = 2048;             // the filter is precomputed for l_max taps; longer sequences run in pieces

  void validate(const char* op = "ModalHyenaConfig") const {
    Checker c(op);
    c.require(d_model >= 1, "d_model", "must be >= 1, got ", d_model);
    c.require(heads >= 1 && d_model % heads == 0, "heads", "must divide d_model (", d_model, "), got ", heads);
    c.require(state_size >= 1, "state_size", "must be >= 1, got ", state_size);
    c.require(short_filter_length >= 2, "short_filter_length", "must be >= 2 (the causal conv's width), got ",
              short_filter_length);
    c.require(l_max >= 1, "l_max", "must be >= 1, got ", l_max);
  }
};

/// The parameters under StripedHyena's names (relative to the block: projections.*, filter.*, out_filter_dense.*).
template <class T>
struct ModalHyenaParams {
  std::vector<T> projections_weight, projections_bias;    // (3 H, H), (3 H)
  std::vector<T> short_filter_weight, short_filter_bias;  // (3 H, 1, K), (3 H)
  std::vector<T> poles, residues;                         // (H, S, 1, 2) each: (re, im)
  std::vector<T> D;                                       // (H)
  std::vector<T> out_weight, out_bias;                    // (H, H), (H)

  /// f(name, vector, shape) for each parameter (a const one gets const vectors).
  template <class F>
  void for_each(const ModalHyenaConfig& cfg, F&& f) {
    visit(*this, cfg, f);
  }
  template <class F>
  void for_each(const ModalHyenaConfig& cfg, F&& f) const {
    visit(*this, cfg, f);
  }
  /// f(name, vector) for each parameter (an optimizer's walk over parameters and gradients).
  template <class F>
  void for_each(F&& f) {
    visit(*this, ModalHyenaConfig{}, [&](const char* n, std::vector<T>& v, const Dims&) { f(n, v); });
  }
  template <class F>
  void for_each(F&& f) const {
    visit(*this, ModalHyenaConfig{}, [&](const char* n, const std::vector<T>& v, const Dims&) { f(n, v); });
  }

 private:
  template <class Self, class F>
  static void visit(Self& p, const ModalHyenaConfig& cfg, F&& f) {
    const index_t H = cfg.d_model, S = cfg.state_size;
    f("projections.weight", p.projections_weight, Dims{3 * H, H});
    f("projections.bias", p.projections_bias, Dims{3 * H});
    f("filter.short_filter_weight", p.short_filter_weight, Dims{3 * H, 1, cfg.short_filter_length});
    f("filter.short_filter_bias", p.short_filter_bias, Dims{3 * H});
    f("filter.poles", p.poles, Dims{H, S, 1, 2});
    f("filter.residues", p.residues, Dims{H, S, 1, 2});
    f("filter.D", p.D, Dims{H});
    f("out_filter_dense.weight", p.out_weight, Dims{H, H});
    f("out_filter_dense.bias", p.out_bias, Dims{H});
  }
};

template <class T = float>
class ModalHyenaLayer {
 public:
  /// The decoding state: conv_state (b, K − 1, 3 H) the FIR's last inputs (in the layer's plain [x2 | x1 | v] order)
  /// and ssm_state (b, H, S, 2) the modal sums (re, im).
  using State = ConvSsmCache;

  ModalHyenaLayer() = default;
  ModalHyenaLayer(const ModalHyenaConfig& cfg, ModalHyenaParams<T> p) : cfg_(cfg), p_(std::move(p)) {
    cfg_.validate("ModalHyenaLayer");
    refresh();  // checks every parameter's size
  }

  /// Random parameters: projections and out_filter_dense ±1/√H, the FIR ±1/√K, poles of modulus in [0.5, 0.99) at
  /// angles in [0, π), residues and D standard normal / √S.
  static ModalHyenaLayer init(const ModalHyenaConfig& cfg, std::uint64_t seed) {
    cfg.validate("ModalHyenaLayer::init");
    std::mt19937_64 rng(seed);
    using head_mixer::uniform_fan_in;
    const index_t H = cfg.d_model, S = cfg.state_size, K = cfg.short_filter_length;
    ModalHyenaParams<T> p;
    p.projections_weight = uniform_fan_in<T>(rng, 3 * H * H, double(H));
    p.projections_bias = uniform_fan_in<T>(rng, 3 * H, double(H));
    p.short_filter_weight = uniform_fan_in<T>(rng, 3 * H * K, double(K));
    p.short_filter_bias = uniform_fan_in<T>(rng, 3 * H, double(K));
    std::uniform_real_distribution<double> U(0.0, 1.0);
    std::normal_distribution<double> normal(0.0, 1.0 / std::sqrt(double(S)));
    p.poles.resize(static_cast<std::size_t>(H * S * 2)), p.residues.resize(p.poles.size());
    for (index_t i = 0; i < H * S; ++i) {
      const double r = 0.5 + 0.49 * U(rng), a = std::numbers::pi * U(rng);
      p.poles[2 * i] = static_cast<T>(r * std::cos(a)), p.poles[2 * i + 1] = static_cast<T>(r * std::sin(a));
      p.residues[2 * i] = static_cast<T>(normal(rng)), p.residues[2 * i + 1] = static_cast<T>(normal(rng));
    }
    p.D.resize(static_cast<std::size_t>(H));
    for (T& v : p.D) v = static_cast<T>(normal(rng));
    p.out_weight = uniform_fan_in<T>(rng, H * H, double(H)), p.out_bias = uniform_fan_in<T>(rng, H, double(H));
    return ModalHyenaLayer(cfg, std::move(p));
  }

  const ModalHyenaConfig& config() const { return cfg_; }
  index_t d_model() const { return cfg_.d_model; }
  const ModalHyenaParams<T>& params() const { return p_; }
  ModalHyenaParams<T>& params() { return p_; }
  void set_threads(int n) {
    SSM_CHECK(n >= 0, "ModalHyenaLayer::set_threads: n must be >= 0 (0 = automatic), got ", n);
    threads_ = n;
  }
  std::size_t nbytes() const {
    std::size_t n = 0;
    p_.for_each(cfg_, [&](const char*, const std::vector<T>& v, const Dims&) { n += v.size() * sizeof(T); });
    return n;
  }
  /// The long filter h (1, H, taps()) = Re Σ_s R p^t, in double rounded to T.
  const Tensor& filter() const { return h_; }
  /// How many taps refresh(n_taps) computed (l_max unless asked for fewer): forward and step run longer sequences in
  /// pieces of this many tokens (exactly: the modal sums carry what came before), backward takes up to this many.
  index_t taps() const { return h_.defined() ? h_.size(2) : 0; }

  /// A copy of this layer refreshed for n_taps taps (0: l_max): what a caller that cannot call refresh() after every
  /// parameter update uses (models::FilterMixer, in training, with taps = the sequence's length).
  ModalHyenaLayer refreshed(index_t n_taps = 0) const {
    ModalHyenaLayer c = *this;
    c.refresh(n_taps);
    return c;
  }

  /// Recomputes the filter for taps t < n_taps (0: all of l_max; otherwise 1 ≤ n_taps ≤ l_max) and the plain-order
  /// projections, after the parameters changed.
  void refresh(index_t n_taps = 0) {
    SSM_CHECK(n_taps >= 0 && n_taps <= cfg_.l_max,
              "ModalHyenaLayer::refresh: n_taps must be in [0, l_max = ", cfg_.l_max, "] (0: all), got ", n_taps);
    check_sizes("ModalHyenaLayer::refresh");
    const index_t H = cfg_.d_model, S = cfg_.state_size, L = n_taps > 0 ? n_taps : cfg_.l_max;
    const index_t K = cfg_.short_filter_length;
    h_ = Tensor::empty({1, H, L}, dtype_of<T>());
    std::vector<double> row(static_cast<std::size_t>(L));
    for (index_t c = 0; c < H; ++c) {
      std::fill(row.begin(), row.end(), 0.0);
      for (index_t s = 0; s < S; ++s) {
        const std::complex<double> pole(p_.poles[2 * (c * S + s)], p_.poles[2 * (c * S + s) + 1]);
        const std::complex<double> res(p_.residues[2 * (c * S + s)], p_.residues[2 * (c * S + s) + 1]);
        std::complex<double> pt(1.0, 0.0);
        for (index_t t = 0; t < L; ++t, pt *= pole) row[t] += (res * pt).real();
      }
      for (index_t t = 0; t < L; ++t) h_.data_as<T>()[c * L + t] = static_cast<T>(row[t]);
    }
    W_.assign(p_.projections_weight.size(), T(0)), bias_.assign(3 * H, T(0));
    fir_w_.assign(p_.short_filter_weight.size(), T(0)), fir_b_.assign(3 * H, T(0));
    for_each_split_row([&](index_t src, index_t dst) {
      std::copy_n(p_.projections_weight.data() + src * H, H, W_.data() + dst * H);
      std::copy_n(p_.short_filter_weight.data() + src * K, K, fir_w_.data() + dst * K);
      bias_[dst] = p_.projections_bias[src], fir_b_[dst] = p_.short_filter_bias[src];
    });
  }

  State init_state(index_t b) const {
    SSM_CHECK(b >= 1, "ModalHyenaLayer::init_state: b must be >= 1, got ", b);
    State s;
    s.b = b;
    s.conv_state = Tensor::zeros({b, cfg_.short_filter_length - 1, 3 * cfg_.d_model}, dtype_of<T>());
    s.ssm_state = Tensor::zeros({b, cfg_.d_model, cfg_.state_size, 2}, dtype_of<T>());
    return s;
  }

  /// Whole sequences: x (b, l, H) contiguous → (b, l, H).
  Tensor forward(const TensorView& x) const {
    Checker c("ModalHyenaLayer::forward");
    check_sizes("ModalHyenaLayer::forward");
    head_mixer::check_input<T>(c, x, cfg_.d_model);
    Tensor out = Tensor::empty(x.shape(), dtype_of<T>());
    forward_into(x, out, nullptr, false);
    return out;
  }

  /// The filter taps a step of t tokens reads: t (the modal sums carry the tokens before it).
  index_t taps_to_step(const State&, index_t t) const { return t; }

  /// The next t tokens x (b, t, H) of the sequences in `state` (advanced): the FFT forward over them plus the carried
  /// modal sums' decayed contribution; t = 1 is a decoding step.
  Tensor step(const TensorView& x, State& state) const {
    Checker c("ModalHyenaLayer::step");
    check_sizes("ModalHyenaLayer::step");
    head_mixer::check_input<T>(c, x, cfg_.d_model);
    check_state(c, state, x.size(0));
    Tensor out = Tensor::empty(x.shape(), dtype_of<T>());
    forward_into(x, out, &state, true);
    return out;
  }

  void check_state(const Checker& c, const State& state, index_t b) const {
    const index_t H = cfg_.d_model;
    c.require(state.matches({b, cfg_.short_filter_length - 1, 3 * H}, {b, H, cfg_.state_size, 2}, dtype_of<T>(),
                            Device::cpu()),
              "state", "expected conv_state (", b, ", ", cfg_.short_filter_length - 1, ", ", 3 * H, ") and ssm_state (",
              b, ", ", H, ", ", cfg_.state_size, ", 2) of dtype ", name(dtype_of<T>()), " (init_state(", b, ")), got ",
              state.describe());
  }

  /// x, out (b, l, H) contiguous; with a state: filled from (resume: continued from) its contents. A sequence longer
  /// than taps() runs in pieces of taps() tokens, each continuing the previous one's state (exact: the modal sums carry
  /// everything before a piece).
  void forward_into(const TensorView& x, const TensorView& out, State* state, bool resume) const {
    const index_t b = x.size(0), l = x.size(1), H = cfg_.d_model, S = cfg_.state_size;
    if (b * l == 0) return;
    SSM_CHECK(taps() > 0, "ModalHyenaLayer: a default-constructed layer has no filter");
    if (state != nullptr && !resume) *state = init_state(b);
    if (state != nullptr && resume) check_state(Checker("ModalHyenaLayer"), *state, b);
    if (l > taps()) {
      State local;
      State& st = state != nullptr ? *state : (local = init_state(b));
      for (index_t t0 = 0; t0 < l; t0 += taps()) {
        const index_t n = std::min(taps(), l - t0);
        Tensor xp = Tensor::empty({b, n, H}, dtype_of<T>()), yp = Tensor::empty({b, n, H}, dtype_of<T>());
        copy(xp.view(), x.narrow(1, t0, n));
        forward_into(xp.view(), yp.view(), &st, state != nullptr ? (resume || t0 > 0) : t0 > 0);
        copy(out.narrow(1, t0, n), yp.view());
      }
      return;
    }
    const std::optional<TensorView> cs = state ? std::optional<TensorView>(state->conv_state.view()) : std::nullopt;
    const Tensor zc = hyena_detail::project_and_filter(x, W_, bias_, fir_w_, fir_b_, cfg_.short_filter_length, cs,
                                                       threads_);
    Tensor y = Tensor::empty({b, l, H}, dtype_of<T>());
    hyena_into(op_inputs(zc), y, op_options());
    if (state != nullptr) {
      // the carried sums' part of y, then the sums advanced over the l tokens: state ← p^l state + Σ_τ p^{l−1−τ} u_τ
      T* ys = y.data_as<T>();
      const T* z = zc.data_as<T>();
      T* st = state->ssm_state.data_as<T>();
      for (index_t bi = 0; bi < b; ++bi)
        for (index_t ch = 0; ch < H; ++ch)
          for (index_t s = 0; s < S; ++s) {
            const std::size_t k = static_cast<std::size_t>(2 * (ch * S + s));
            const std::complex<double> pole(p_.poles[k], p_.poles[k + 1]), res(p_.residues[k], p_.residues[k + 1]);
            T* sv = st + 2 * ((bi * H + ch) * S + s);
            std::complex<double> acc(sv[0], sv[1]), carry = resume ? acc : std::complex<double>(0.0, 0.0);
            for (index_t t = 0; t < l; ++t) {
              const T* zt = z + (bi * l + t) * 3 * H;
              carry *= pole;  // p^{t+1} state_0: the tokens before this call, seen from token t
              if (resume) ys[(bi * l + t) * H + ch] += static_cast<T>(static_cast<double>(zt[ch]) * (res * carry).real());
              acc = pole * acc + static_cast<double>(zt[H + ch]) * static_cast<double>(zt[2 * H + ch]);
            }
            sv[0] = static_cast<T>(acc.real()), sv[1] = static_cast<T>(acc.imag());
          }
    }
    project(TensorView::of(p_.out_weight.data(), {H, H}), y.view().reshape({b * l, H}),
            TensorView::of(p_.out_bias.data(), {H}), out.reshape({b * l, H}), threads_);
  }

  /// The gradients of backward(): ∂L/∂x (b, l, H) and one of every parameter.
  using Grads = head_mixer::MixerGrads<T, ModalHyenaParams<T>>;

  /// Backward of forward() (from the empty state): x and grad_out = ∂L/∂out, both (b, l, H) contiguous CPU tensors of
  /// T, l ≤ taps() (one piece). ∂L/∂x and every parameter's gradient, summed over the batch: out_filter_dense, then
  /// ssm::hyena_backward (x2, x1, v, the filter's taps and D), the short filter and the projections (back through the
  /// column split to the stored rows), and the taps through h[c, t] = Re Σ_s R p^t to the residues and poles (in
  /// double: ∂h_t/∂R = conj(p^t), ∂h_t/∂p = conj(R t p^{t−1}) as (re, im) pairs). The filter is the one refresh() made.
  Grads backward(const TensorView& x, const TensorView& grad_out) const {
    Checker c("ModalHyenaLayer::backward");
    check_sizes("ModalHyenaLayer::backward");
    head_mixer::check_input<T>(c, x, cfg_.d_model);
    head_mixer::check_grad_out<T>(c, grad_out, x);
    const index_t b = x.size(0), l = x.size(1), H = cfg_.d_model, S = cfg_.state_size, K = cfg_.short_filter_length;
    const index_t rows = b * l, P = 3 * H;
    c.require(l <= taps(), "x", "has ", l, " tokens, more than the filter's ", taps(),
              " taps (the backward runs one piece: refresh(n_taps) with n_taps >= l, at most l_max = ", cfg_.l_max,
              ")");
    Grads g;
    g.params = head_mixer::zeros_like(p_);
    g.grad_x.assign(static_cast<std::size_t>(rows * H), T(0));
    if (rows == 0) return g;
    ModalHyenaParams<T>& gp = g.params;
    // ---- the forward again, keeping the short filter's input z ----
    Tensor z;
    const Tensor zc = hyena_detail::project_and_filter(x, W_, bias_, fir_w_, fir_b_, K, std::nullopt, threads_, &z);
    const HyenaInputs in = op_inputs(zc);
    Tensor y = Tensor::empty({b, l, H}, dtype_of<T>());
    hyena_into(in, y, op_options());
    // ---- out_filter_dense, then the gated convolution ----
    Tensor grad_y = Tensor::empty({b, l, H}, dtype_of<T>());
    linear_backward(y.data_as<const T>(), p_.out_weight.data(), grad_out.data_as<const T>(), grad_y.data_as<T>(),
                    gp.out_weight.data(), gp.out_bias.data(), rows, H, H);
    const HyenaGrads hg = hyena_backward(in, grad_y, op_options());
    std::vector<T> grad_zc(static_cast<std::size_t>(rows * P));  // (b, l, 3 H) = [x2 | x1 | v]
    const T* gx = hg.grad_x.data_as<const T>();                  // (2, b, l, H)
    for (index_t r = 0; r < rows; ++r) {
      std::copy_n(gx + r * H, H, grad_zc.data() + r * P);
      std::copy_n(gx + (rows + r) * H, H, grad_zc.data() + r * P + H);
      std::copy_n(hg.grad_v.data_as<const T>() + r * H, H, grad_zc.data() + r * P + 2 * H);
    }
    std::copy_n(hg.grad_bias.data_as<const T>(), H, gp.D.data());
    // ---- the short filter and the projections in the plain order, then back to the stored rows ----
    std::vector<T> gW(W_.size(), T(0)), gb(bias_.size(), T(0)), gfw(fir_w_.size(), T(0)), gfb(fir_b_.size(), T(0));
    hyena_detail::project_and_filter_backward(x, W_, fir_w_, fir_b_, K, z, grad_zc.data(), g.grad_x.data(), gW.data(),
                                              gb.data(), gfw.data(), gfb.data());
    for_each_split_row([&](index_t src, index_t dst) {
      std::copy_n(gW.data() + dst * H, H, gp.projections_weight.data() + src * H);
      std::copy_n(gfw.data() + dst * K, K, gp.short_filter_weight.data() + src * K);
      gp.projections_bias[src] = gb[dst], gp.short_filter_bias[src] = gfb[dst];
    });
    // ---- the taps, back to the residues and poles ----
    const T* gh = hg.grad_h.data_as<const T>();  // (1, H, taps())
    const index_t Lh = taps();
    for (index_t ch = 0; ch < H; ++ch)
      for (index_t s = 0; s < S; ++s) {
        const std::size_t k = static_cast<std::size_t>(2 * (ch * S + s));
        const std::complex<double> pole(p_.poles[k], p_.poles[k + 1]), res(p_.residues[k], p_.residues[k + 1]);
        std::complex<double> g_res(0.0, 0.0), g_pole(0.0, 0.0), pt(1.0, 0.0), pt_prev(0.0, 0.0);  // p^t, p^{t−1}
        for (index_t t = 0; t < l; ++t) {
          const double ght = static_cast<double>(gh[ch * Lh + t]);
          g_res += ght * std::conj(pt);
          g_pole += ght * std::conj(res * static_cast<double>(t) * pt_prev);
          pt_prev = pt, pt *= pole;
        }
        gp.residues[k] = static_cast<T>(g_res.real()), gp.residues[k + 1] = static_cast<T>(g_res.imag());
        gp.poles[k] = static_cast<T>(g_pole.real()), gp.poles[k + 1] = static_cast<T>(g_pole.imag());
      }
    return g;
  }

 private:
  HyenaOptions op_options() const {
    HyenaOptions opt;
    opt.threads = threads_;
    return opt;
  }
  // The order-2 operator's inputs over zc (b, l, 3 H) = [x2 | x1 | v]: x_0 = x2, x_1 = x1, the filter and D.
  HyenaInputs op_inputs(const Tensor& zc) const {
    const index_t H = cfg_.d_model;
    HyenaInputs in;
    in.x = {zc.view().narrow(2, 0, H), zc.view().narrow(2, H, H)};
    in.v = zc.view().narrow(2, 2 * H, H);
    in.h = h_.view(), in.bias = TensorView::of(p_.D.data(), {1, H});
    return in;
  }
  // f(src, dst) for every row of the projections and the FIR: the plain order [x2 | x1 | v] row dst = j H + c of part
  // j, channel c = g hd + i (head g), comes from the stored row src = g 3 hd + j hd + i (the column split).
  template <class F>
  void for_each_split_row(F&& f) const {
    const index_t H = cfg_.d_model, hd = H / cfg_.heads;
    for (index_t j = 0; j < 3; ++j)
      for (index_t c = 0; c < H; ++c) f(c / hd * 3 * hd + j * hd + c % hd, j * H + c);
  }
  // Every parameter's size (params() hands them out: a resized one is an error, not a read past its end).
  void check_sizes(const char* op) const {
    p_.for_each(cfg_,
                [&](const char* nm, const std::vector<T>& v, const Dims& s) { check_parameter_size(op, nm, v, s); });
  }

  ModalHyenaConfig cfg_;
  ModalHyenaParams<T> p_;
  Tensor h_;                                 // (1, H, taps())
  std::vector<T> W_, bias_, fir_w_, fir_b_;  // the projections and the FIR in the plain order
  int threads_ = 0;
};

}  // namespace ssm::layers
