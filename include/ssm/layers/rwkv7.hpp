// RWKV-7's time-mixing layer (Peng et al. 2025, "RWKV-7 'Goose' with Expressive Dynamic State Evolution"), as in the
// reference numpy and PyTorch code of BlinkDL/RWKV-LM (RWKV-v7) and fla's RWKV7Attention (docs/rwkv7.md). With
// C = d_model = h N (N = head_dim) and x_{−1} the previous token (zero at the start, the carried shift when decoding):
//
//   x_□ = x + (x_{−1} − x) ⊙ μ_□        for □ in r, w, k, v, a, g    token shift, one mix per branch
//   r = W_r x_r,  k = W_k x_k,  v = W_v x_v                             (C, C) projections, no bias
//   log w = −e^{−1/2} σ(w0 + W_w2 tanh(W_w1 x_w))                       decay w ∈ [e^{−e^{−1/2}}, 1) = [0.545, 1)
//   a = σ(a0 + W_a2 W_a1 x_a)                                           in-context learning rate, (0, 1)
//   v ← v + (v_first − v) ⊙ σ(v0 + W_v2 W_v1 x_v)                       value residual (layers after the first)
//   g = W_g2 σ(W_g1 x_g)                                                output gate
//   κ̂ = normalize_per_head(k ⊙ k_k),  k ← k ⊙ (1 + (a − 1) ⊙ k_a)
//   o = rwkv7(q = r, k, v, log w, a = −κ̂, b = κ̂ ⊙ a)                    per head: S ← (diag(w) − κ̂ (a ⊙ κ̂)ᵀ) S + k vᵀ
//   o ← GroupNorm_h(o) ⊙ ln_w + ln_b                                    per head over N, eps 64e-5
//   o ← o + (Σ_N r ⊙ k ⊙ r_k) v                                         the "bonus" of the current token, per head
//   y = W_o (o ⊙ g)
//
// Weights are PyTorch's (out, in) layout (fla's nn.Linear LoRAs; BlinkDL's checkpoints store the LoRA matrices
// transposed). Every matrix product is ssm::linear, the recurrence ssm::rwkv7 / ssm::rwkv7_step; the layer computes the
// elementwise stages. forward runs a whole sequence from a zero state; step continues a state over the next t tokens.
// The value residual needs the first layer's v: forward_with and step_with take it (v_first) and the first layer hands
// it out; a layer with value_residual = false is a first layer (also what a HybridStack holds, since the stack passes
// nothing between layers). CPU tensors of T = float or double; forward and decoding, no layer backward yet.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/scalar.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/layers/basic.hpp"
#include "ssm/layers/head_mixer.hpp"
#include "ssm/layers/layer_cache.hpp"
#include "ssm/ops/rwkv7.hpp"

namespace ssm::layers {

/// Sizes and options of one RWKV-7 time-mixing layer (fla's argument names in comments).
struct Rwkv7Config {
  index_t d_model = 0;         // hidden_size, C
  index_t head_dim = 64;       // head_dim, N; C % N == 0, h = C / N
  index_t decay_rank = 64;     // decay_low_rank_dim
  index_t a_rank = 64;         // a_low_rank_dim
  index_t v_rank = 32;         // v_low_rank_dim
  index_t gate_rank = 128;     // gate_low_rank_dim
  bool value_residual = false;  // v mixed with the first layer's (every layer but the first)
  double norm_eps = 64e-5;     // the GroupNorm's eps (RWKV-7: 1e-5 head_size_divisor², divisor 8)

  index_t heads() const { return head_dim > 0 ? d_model / head_dim : 0; }

  /// Throws ssm::Error naming the first invalid field.
  void validate(const char* op = "Rwkv7Config") const {
    Checker c(op);
    c.require(d_model >= 1, "d_model", "must be >= 1, got ", d_model);
    c.require(head_dim >= 1 && d_model % head_dim == 0, "head_dim", "must be >= 1 and divide d_model = ", d_model,
              ", got ", head_dim);
    for (const auto& [nm, r] : {std::pair<const char*, index_t>{"decay_rank", decay_rank}, {"a_rank", a_rank},
                                {"v_rank", v_rank}, {"gate_rank", gate_rank}})
      c.require(r >= 1, nm, "must be >= 1, got ", r);
    c.require(std::isfinite(norm_eps) && norm_eps > 0, "norm_eps", "must be finite and > 0, got ", norm_eps);
  }
};

/// Parameters (row-major; (out, in) for every matrix). Vectors are (C) unless noted.
template <class T>
struct Rwkv7Params {
  std::vector<T> mu_r, mu_w, mu_k, mu_v, mu_a, mu_g;  // x_r … x_g: the token-shift mixes
  std::vector<T> W_r, W_k, W_v, W_o;                  // (C, C): receptance, key, value, output
  std::vector<T> w0, W_w1, W_w2;                      // decay LoRA: w0 (C), W_w1 (decay_rank, C), W_w2 (C, decay_rank)
  std::vector<T> a0, W_a1, W_a2;                      // in-context learning rate LoRA (a_rank)
  std::vector<T> v0, W_v1, W_v2;                      // value-residual LoRA (v_rank); empty without value_residual
  std::vector<T> W_g1, W_g2;                          // gate LoRA: W_g1 (gate_rank, C), W_g2 (C, gate_rank)
  std::vector<T> k_k, k_a;                            // the removal key's scale, the key's a-dependent scale
  std::vector<T> r_k;                                 // (h, N): the bonus
  std::vector<T> ln_w, ln_b;                          // the GroupNorm's weight and bias
};

/// The decoding state: conv_state (b, 1, C) holds the last token's input (the token shift), ssm_state = S
/// (b, h, N, N) in the op's (dk, dv) orientation, of the layer's dtype, on the CPU (value semantics: ConvSsmCache).
struct Rwkv7State : ConvSsmCache {
  static Rwkv7State zeros(const Rwkv7Config& cfg, index_t b, DType dtype) {
    Rwkv7State s;
    s.set_zeros(b, {b, 1, cfg.d_model}, {b, cfg.heads(), cfg.head_dim, cfg.head_dim}, dtype, Device::cpu());
    return s;
  }
};

template <class T>
class Rwkv7Layer {
 public:
  using State = Rwkv7State;

  Rwkv7Layer(const Rwkv7Config& cfg, Rwkv7Params<T> params) : cfg_(cfg), p_(std::move(params)) {
    cfg_.validate("Rwkv7Layer");
    const index_t C = cfg_.d_model, vr = cfg_.value_residual ? cfg_.v_rank : 0;
    Checker c("Rwkv7Layer");
    auto size = [&](const char* name, const std::vector<T>& v, index_t n) {
      c.require(static_cast<index_t>(v.size()) == n, name, "expected ", n, " elements, got ", v.size());
      for (T x : v) c.require(std::isfinite(static_cast<double>(x)), name, "must be finite, got ", x);
    };
    for (const auto& [nm, v] : {std::pair<const char*, const std::vector<T>*>{"mu_r", &p_.mu_r}, {"mu_w", &p_.mu_w},
                                {"mu_k", &p_.mu_k}, {"mu_v", &p_.mu_v}, {"mu_a", &p_.mu_a}, {"mu_g", &p_.mu_g},
                                {"w0", &p_.w0}, {"a0", &p_.a0}, {"k_k", &p_.k_k}, {"k_a", &p_.k_a}, {"r_k", &p_.r_k},
                                {"ln_w", &p_.ln_w}, {"ln_b", &p_.ln_b}})
      size(nm, *v, C);
    for (const auto& [nm, v] : {std::pair<const char*, const std::vector<T>*>{"W_r", &p_.W_r}, {"W_k", &p_.W_k},
                                {"W_v", &p_.W_v}, {"W_o", &p_.W_o}})
      size(nm, *v, C * C);
    size("W_w1", p_.W_w1, cfg_.decay_rank * C), size("W_w2", p_.W_w2, C * cfg_.decay_rank);
    size("W_a1", p_.W_a1, cfg_.a_rank * C), size("W_a2", p_.W_a2, C * cfg_.a_rank);
    size("v0", p_.v0, vr ? C : 0), size("W_v1", p_.W_v1, vr * C), size("W_v2", p_.W_v2, C * vr);
    size("W_g1", p_.W_g1, cfg_.gate_rank * C), size("W_g2", p_.W_g2, C * cfg_.gate_rank);
  }

  /// A plain initialization for experiments (not RWKV-7's tuned training init): projections and LoRAs uniform in
  /// ±1/√fan_in; mixes uniform in [0, 1); w0 from −6 to −1 across channels (slow to fast decays); a0 = 0, v0 = 1;
  /// k_k = 0.85, k_a = 1; r_k uniform in ±0.1; the GroupNorm weight 1 and bias 0.
  static Rwkv7Layer init(const Rwkv7Config& cfg, std::uint64_t seed) {
    cfg.validate("Rwkv7Layer::init");
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    auto uniform = [&](index_t count, double fan_in) { return head_mixer::uniform_fan_in<T>(rng, count, fan_in); };
    auto fill = [&](index_t count, double lo, double hi) {
      std::vector<T> v(static_cast<std::size_t>(count));
      for (T& x : v) x = static_cast<T>(lo + (hi - lo) * unit(rng));
      return v;
    };
    const index_t C = cfg.d_model;
    const double c = static_cast<double>(C);
    Rwkv7Params<T> p;
    for (std::vector<T>* mu : {&p.mu_r, &p.mu_w, &p.mu_k, &p.mu_v, &p.mu_a, &p.mu_g}) *mu = fill(C, 0, 1);
    for (std::vector<T>* W : {&p.W_r, &p.W_k, &p.W_v, &p.W_o}) *W = uniform(C * C, c);
    for (index_t i = 0; i < C; ++i) p.w0.push_back(static_cast<T>(-6.0 + 5.0 * static_cast<double>(i) / std::max<double>(c - 1, 1)));
    p.W_w1 = uniform(cfg.decay_rank * C, c), p.W_w2 = uniform(C * cfg.decay_rank, static_cast<double>(cfg.decay_rank));
    p.a0.assign(static_cast<std::size_t>(C), T(0));
    p.W_a1 = uniform(cfg.a_rank * C, c), p.W_a2 = uniform(C * cfg.a_rank, static_cast<double>(cfg.a_rank));
    if (cfg.value_residual) {
      p.v0.assign(static_cast<std::size_t>(C), T(1));
      p.W_v1 = uniform(cfg.v_rank * C, c), p.W_v2 = uniform(C * cfg.v_rank, static_cast<double>(cfg.v_rank));
    }
    p.W_g1 = uniform(cfg.gate_rank * C, c), p.W_g2 = uniform(C * cfg.gate_rank, static_cast<double>(cfg.gate_rank));
    p.k_k.assign(static_cast<std::size_t>(C), T(0.85)), p.k_a.assign(static_cast<std::size_t>(C), T(1));
    p.r_k = fill(C, -0.1, 0.1);
    p.ln_w.assign(static_cast<std::size_t>(C), T(1)), p.ln_b.assign(static_cast<std::size_t>(C), T(0));
    return Rwkv7Layer(cfg, std::move(p));
  }

  index_t d_model() const { return cfg_.d_model; }
  const Rwkv7Config& config() const { return cfg_; }
  const Rwkv7Params<T>& params() const { return p_; }
  /// CPU threads for the projections and the recurrence (0: by the amount of work).
  void set_threads(int threads) { threads_ = threads; }

  /// A zero state for b sequences.
  State init_state(index_t b) const {
    Checker("Rwkv7Layer::init_state").require(b >= 1, "b", "must be >= 1, got ", b);
    return State::zeros(cfg_, b, dtype_of<T>());
  }

  /// x (b, l, C) contiguous → (b, l, C), from a zero state. A layer with value_residual needs v_first: forward_with.
  Tensor forward(const TensorView& x) const { return run("Rwkv7Layer::forward", x, nullptr, std::nullopt, nullptr); }
  /// The next t tokens x (b, t, C) → (b, t, C), continuing from `state` and updating it.
  Tensor step(const TensorView& x, State& state) const {
    return run("Rwkv7Layer::step", x, &state, std::nullopt, nullptr);
  }

  /// forward / step with the value residual: v_first (b, l, C) is the first layer's v (required with value_residual,
  /// ignored without); when v_out is given it receives this layer's v (b, l, C), what the first layer hands on.
  Tensor forward_with(const TensorView& x, const std::optional<TensorView>& v_first, Tensor* v_out) const {
    return run("Rwkv7Layer::forward_with", x, nullptr, v_first, v_out);
  }
  Tensor step_with(const TensorView& x, State& state, const std::optional<TensorView>& v_first, Tensor* v_out) const {
    return run("Rwkv7Layer::step_with", x, &state, v_first, v_out);
  }

 private:
  /// y (rows, C) = W2 act(W1 x) (+ bias) for a LoRA with W1 (r, C), W2 (C, r); act applied to the hidden in place.
  template <class Act>
  void lora(const TensorView& x, const std::vector<T>& W1, const std::vector<T>& W2, index_t r, Act act,
            const TensorView& y) const {
    const index_t rows = x.size(0), C = cfg_.d_model;
    Tensor hidden = Tensor::empty({rows, r}, dtype_of<T>());  // (rows, r)
    project(TensorView::of(W1.data(), {r, C}), x, std::nullopt, hidden, threads_);
    T* hp = hidden.data_as<T>();
    for (index_t i = 0; i < rows * r; ++i) hp[i] = act(hp[i]);
    project(TensorView::of(W2.data(), {C, r}), hidden, std::nullopt, y, threads_);
  }

  Tensor run(const char* op, const TensorView& x, State* state, const std::optional<TensorView>& v_first,
             Tensor* v_out) const {
    Checker c(op);
    head_mixer::check_input<T>(c, x, cfg_.d_model);
    const index_t b = x.size(0), l = x.size(1), C = cfg_.d_model, N = cfg_.head_dim, h = cfg_.heads(), rows = b * l;
    const DType dt = dtype_of<T>();
    if (state)
      c.require(state->b == b && state->matches({b, 1, C}, {b, h, N, N}, dt, Device::cpu()), "state",
                "expected conv_state (", b, ", 1, ", C, ") and ssm_state (", b, ", ", h, ", ", N, ", ", N, ") of dtype ",
                name(dt), " on the CPU (init_state(", b, ")), got ", state->describe());
    if (cfg_.value_residual) {
      c.require(v_first.has_value(), "v_first", "is required by a layer with value_residual (the first layer's v)");
      c.defined("v_first", *v_first).shape("v_first", *v_first, {b, l, C}).dtype("v_first", *v_first, dt);
      c.contiguous("v_first", *v_first).device("v_first", *v_first, Device::cpu());
    }
    Tensor out = Tensor::empty({b, l, C}, dt);  // (b, l, C)
    if (v_out) *v_out = Tensor::empty({b, l, C}, dt);
    if (rows == 0) return out;

    // the token-shift mixes x_r … x_g, each (rows, C)
    const T* xs = x.data_as<T>();
    Tensor mixed = Tensor::empty({6, rows, C}, dt);  // (6, rows, C): x_r, x_w, x_k, x_v, x_a, x_g
    const std::vector<T>* mus[6] = {&p_.mu_r, &p_.mu_w, &p_.mu_k, &p_.mu_v, &p_.mu_a, &p_.mu_g};
    T* shift = state ? state->conv_state.data_as<T>() : nullptr;  // (b, C)
    for (index_t bi = 0; bi < b; ++bi)
      for (index_t t = 0; t < l; ++t) {
        const T* xt = xs + (bi * l + t) * C;
        const T* prev = t > 0 ? xt - C : (shift ? shift + bi * C : nullptr);
        for (int m = 0; m < 6; ++m) {
          T* dst = mixed.data_as<T>() + (m * rows + bi * l + t) * C;
          const T* mu = mus[m]->data();
          for (index_t i = 0; i < C; ++i) dst[i] = xt[i] + ((prev ? prev[i] : T(0)) - xt[i]) * mu[i];
        }
      }
    if (shift)
      for (index_t bi = 0; bi < b; ++bi) std::copy_n(xs + (bi * l + l - 1) * C, C, shift + bi * C);
    auto branch = [&](int m) { return mixed.view().select(0, m); };  // (rows, C)

    Tensor r = Tensor::empty({rows, C}, dt), k = Tensor::empty({rows, C}, dt), v = Tensor::empty({rows, C}, dt);
    project(TensorView::of(p_.W_r.data(), {C, C}), branch(0), std::nullopt, r, threads_);
    project(TensorView::of(p_.W_k.data(), {C, C}), branch(2), std::nullopt, k, threads_);
    project(TensorView::of(p_.W_v.data(), {C, C}), branch(3), std::nullopt, v, threads_);
    Tensor log_w = Tensor::empty({rows, C}, dt), a = Tensor::empty({rows, C}, dt), g = Tensor::empty({rows, C}, dt);
    const T half_e = static_cast<T>(std::exp(-0.5));
    lora(branch(1), p_.W_w1, p_.W_w2, cfg_.decay_rank, [](T z) { return std::tanh(z); }, log_w);
    lora(branch(4), p_.W_a1, p_.W_a2, cfg_.a_rank, [](T z) { return z; }, a);
    lora(branch(5), p_.W_g1, p_.W_g2, cfg_.gate_rank, [](T z) { return scalar::sigmoid(z); }, g);
    T* lw = log_w.data_as<T>();
    T* ap = a.data_as<T>();
    T* vp = v.data_as<T>();
    for (index_t row = 0; row < rows; ++row)
      for (index_t i = 0; i < C; ++i) {
        T& w = lw[row * C + i];
        w = -half_e * scalar::sigmoid(p_.w0[static_cast<std::size_t>(i)] + w);
        T& ai = ap[row * C + i];
        ai = scalar::sigmoid(p_.a0[static_cast<std::size_t>(i)] + ai);
      }
    if (cfg_.value_residual) {  // v ← v + (v_first − v) σ(v0 + W_v2 W_v1 x_v)
      Tensor mix = Tensor::empty({rows, C}, dt);
      lora(branch(3), p_.W_v1, p_.W_v2, cfg_.v_rank, [](T z) { return z; }, mix);
      const T* vf = v_first->data_as<T>();
      const T* mp = mix.data_as<T>();
      for (index_t row = 0; row < rows; ++row)
        for (index_t i = 0; i < C; ++i) {
          const index_t e = row * C + i;
          vp[e] += (vf[e] - vp[e]) * scalar::sigmoid(p_.v0[static_cast<std::size_t>(i)] + mp[e]);
        }
    }
    if (v_out) copy(v_out->view().reshape({rows, C}), v.view());
    // κ̂ = normalize_per_head(k ⊙ k_k) (F.normalize: x / max(|x|, 1e-12)); the op's a = −κ̂, b = κ̂ ⊙ a;
    // k ← k ⊙ (1 + (a − 1) ⊙ k_a)
    Tensor a_op = Tensor::empty({rows, C}, dt), b_op = Tensor::empty({rows, C}, dt);
    T* kp = k.data_as<T>();
    for (index_t row = 0; row < rows; ++row)
      for (index_t hh = 0; hh < h; ++hh) {
        const index_t o = row * C + hh * N;
        T n2 = 0;
        for (index_t i = 0; i < N; ++i) {
          const T kk = kp[o + i] * p_.k_k[static_cast<std::size_t>(hh * N + i)];
          n2 += kk * kk;
        }
        const T inv = T(1) / std::max(std::sqrt(n2), T(1e-12));
        for (index_t i = 0; i < N; ++i) {
          const std::size_t ch = static_cast<std::size_t>(hh * N + i);
          const T kh = kp[o + i] * p_.k_k[ch] * inv, ai = ap[o + i];
          a_op.data_as<T>()[o + i] = -kh;
          b_op.data_as<T>()[o + i] = kh * ai;
          kp[o + i] *= T(1) + (ai - T(1)) * p_.k_a[ch];
        }
      }
    // the recurrence over (b, l, h, N)
    Tensor o = Tensor::empty({b, l, h, N}, dt);  // (b, l, h, N)
    {
      auto heads = [&](const Tensor& t) { return t.view().reshape({b, l, h, N}); };
      Rwkv7Options opt;
      opt.threads = threads_;
      if (state && l == 1) {  // one token: the decode step updates S in place
        auto one = [&](const Tensor& t) { return t.view().reshape({b, h, N}); };
        rwkv7_step(one(r), one(k), one(v), one(log_w), one(a_op), one(b_op), state->ssm_state.view(), one(o), opt);
      } else {
        Rwkv7Inputs in;
        in.q = heads(r), in.k = heads(k), in.v = heads(v), in.log_w = heads(log_w), in.a = heads(a_op);
        in.b = heads(b_op);
        Tensor last;  // (b, h, N, N): the final state, copied over the initial one afterwards
        if (state) {
          in.initial_state = state->ssm_state.view();
          last = Tensor::empty({b, h, N, N}, dt);
        }
        rwkv7_into(in, o, optional_view(last), opt);
        if (state) copy(state->ssm_state, last);
      }
    }
    // GroupNorm per head, the bonus (Σ_N r ⊙ k ⊙ r_k) v, the gate
    T* os = o.data_as<T>();
    const T* rp = r.data_as<T>();
    const T* gp = g.data_as<T>();
    const T eps = static_cast<T>(cfg_.norm_eps);
    for (index_t row = 0; row < rows; ++row)
      for (index_t hh = 0; hh < h; ++hh) {
        const index_t base = row * C + hh * N;
        T mean = 0, var = 0, bonus = 0;
        for (index_t i = 0; i < N; ++i) mean += os[base + i];
        mean /= static_cast<T>(N);
        for (index_t i = 0; i < N; ++i) var += (os[base + i] - mean) * (os[base + i] - mean);
        const T inv = T(1) / std::sqrt(var / static_cast<T>(N) + eps);
        for (index_t i = 0; i < N; ++i) bonus += rp[base + i] * kp[base + i] * p_.r_k[static_cast<std::size_t>(hh * N + i)];
        for (index_t i = 0; i < N; ++i) {
          const std::size_t ch = static_cast<std::size_t>(hh * N + i);
          const T y = (os[base + i] - mean) * inv * p_.ln_w[ch] + p_.ln_b[ch] + bonus * vp[base + i];
          os[base + i] = y * gp[base + i];
        }
      }
    project(TensorView::of(p_.W_o.data(), {C, C}), o.view().reshape({rows, C}), std::nullopt,
            out.view().reshape({rows, C}), threads_);
    return out;
  }

  Rwkv7Config cfg_;
  Rwkv7Params<T> p_;
  int threads_ = 0;
};

}  // namespace ssm::layers
