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
// nothing between layers). backward / backward_with give the input's, v_first's and every parameter's gradient (the
// forward recomputed, ssm::rwkv7_backward for the recurrence). CPU tensors of T = float or double.
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
#include "ssm/layers/token_shift.hpp"
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

  /// f(name, vector) for each parameter, in the order above (an optimizer's walk over parameters and gradients).
  template <class F>
  void for_each(F&& f) {
    visit(*this, f);
  }
  template <class F>
  void for_each(F&& f) const {
    visit(*this, f);
  }

 private:
  template <class Self, class F>
  static void visit(Self& p, F& f) {
    f("mu_r", p.mu_r), f("mu_w", p.mu_w), f("mu_k", p.mu_k), f("mu_v", p.mu_v), f("mu_a", p.mu_a), f("mu_g", p.mu_g);
    f("W_r", p.W_r), f("W_k", p.W_k), f("W_v", p.W_v), f("W_o", p.W_o);
    f("w0", p.w0), f("W_w1", p.W_w1), f("W_w2", p.W_w2), f("a0", p.a0), f("W_a1", p.W_a1), f("W_a2", p.W_a2);
    f("v0", p.v0), f("W_v1", p.W_v1), f("W_v2", p.W_v2), f("W_g1", p.W_g1), f("W_g2", p.W_g2);
    f("k_k", p.k_k), f("k_a", p.k_a), f("r_k", p.r_k), f("ln_w", p.ln_w), f("ln_b", p.ln_b);
  }
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
    check_sizes("Rwkv7Layer");
    const Checker c("Rwkv7Layer");
    p_.for_each([&](const char* name, const std::vector<T>& v) {
      for (T x : v) c.require(std::isfinite(static_cast<double>(x)), name, "must be finite, got ", x);
    });
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
  /// The parameters, to update in place (an optimizer's step: train::ParamTree::add_all(prefix, layer.params())).
  Rwkv7Params<T>& params() { return p_; }
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

  /// What backward returns: ∂L/∂x, ∂L/∂(every parameter), and with value_residual ∂L/∂v_first (b l C).
  struct Grads : head_mixer::MixerGrads<T, Rwkv7Params<T>> {
    std::vector<T> grad_v_first;  // (b, l, C), value_residual only
  };

  /// ∂L/∂x and ∂L/∂(every parameter) for grad_out = ∂L/∂y (b, l, C) contiguous, y = forward(x) (from a zero state;
  /// a layer without value_residual).
  Grads backward(const TensorView& x, const TensorView& grad_out) const {
    return backward_with(x, std::nullopt, grad_out, std::nullopt);
  }

  /// The backward of forward_with(x, v_first, &v): grad_out = ∂L/∂y and, when given, grad_v_out = ∂L/∂v (b, l, C),
  /// the gradient of the v this layer handed on (the first layer's, from the layers that read it). The forward is
  /// recomputed; the stages then run in reverse: W_o, the gate, the GroupNorm and the bonus, the recurrence
  /// (ssm::rwkv7_backward), the key's scalings and the removal key's normalization, the value residual, the LoRAs, the
  /// projections and the token shift.
  Grads backward_with(const TensorView& x, const std::optional<TensorView>& v_first, const TensorView& grad_out,
                      const std::optional<TensorView>& grad_v_out) const {
    Checker c("Rwkv7Layer::backward");
    head_mixer::check_input<T>(c, x, cfg_.d_model);
    head_mixer::check_grad_out<T>(c, grad_out, x);
    if (grad_v_out) head_mixer::check_grad_out<T>(c, *grad_v_out, x, "grad_v_out");
    const index_t b = x.size(0), l = x.size(1), C = cfg_.d_model, N = cfg_.head_dim, h = cfg_.heads(), rows = b * l;
    Grads gr;
    gr.params = head_mixer::zeros_like(p_);
    Rwkv7Params<T>& gp = gr.params;
    gr.grad_x.assign(static_cast<std::size_t>(rows * C), T(0));
    if (cfg_.value_residual) gr.grad_v_first.assign(static_cast<std::size_t>(rows * C), T(0));
    Tape tp;
    Tensor out_pre = Tensor::empty({rows, C}, dtype_of<T>());  // (rows, C): W_o's input, y_pre ⊙ g
    Tensor y_pre = Tensor::empty({rows, C}, dtype_of<T>());    // (rows, C): before the gate
    forward_tape("Rwkv7Layer::backward", x, nullptr, v_first, tp);
    if (rows == 0) return gr;
    output_stage(tp, y_pre.data_as<T>(), out_pre.data_as<T>());
    const DType dt = dtype_of<T>();
    auto zeros = [&] { return std::vector<T>(static_cast<std::size_t>(rows * C), T(0)); };
    // ---- W_o, the gate ----
    std::vector<T> g_pre(static_cast<std::size_t>(rows * C));  // ∂L/∂(y_pre ⊙ g)
    linear_backward(out_pre.data_as<const T>(), p_.W_o.data(), grad_out.data_as<const T>(), g_pre.data(), gp.W_o.data(),
                    static_cast<T*>(nullptr), rows, C, C);
    std::vector<T> grad_g = zeros(), grad_ypre = zeros();
    const T* G = tp.g.template data_as<T>();
    const T* Y = y_pre.data_as<T>();
    for (index_t e = 0; e < rows * C; ++e) grad_g[e] = g_pre[e] * Y[e], grad_ypre[e] = g_pre[e] * G[e];
    // ---- the GroupNorm per head and the bonus (Σ_N r ⊙ k ⊙ r_k) v ----
    Tensor grad_o = Tensor::empty({b, l, h, N}, dt);  // (b, l, h, N)
    std::vector<T> grad_r = zeros(), grad_k = zeros(), grad_v = zeros();
    const T *O = tp.o.template data_as<T>(), *R = tp.r.template data_as<T>(), *K = tp.k.template data_as<T>();
    const T* V = tp.v.template data_as<T>();
    const T eps = static_cast<T>(cfg_.norm_eps);
    for (index_t row = 0; row < rows; ++row)
      for (index_t hh = 0; hh < h; ++hh) {
        const index_t base = row * C + hh * N;
        T mean = 0, var = 0, bonus = 0, grad_bonus = 0;
        for (index_t i = 0; i < N; ++i) mean += O[base + i];
        mean /= static_cast<T>(N);
        for (index_t i = 0; i < N; ++i) var += (O[base + i] - mean) * (O[base + i] - mean);
        const T inv = T(1) / std::sqrt(var / static_cast<T>(N) + eps);
        T mean_gx = 0, mean_gx_xhat = 0;  // means over the head of ∂L/∂x̂ and ∂L/∂x̂ ⊙ x̂
        for (index_t i = 0; i < N; ++i) {
          const std::size_t ch = static_cast<std::size_t>(hh * N + i);
          const T xhat = (O[base + i] - mean) * inv, gy = grad_ypre[base + i];
          bonus += R[base + i] * K[base + i] * p_.r_k[ch];
          grad_bonus += gy * V[base + i];
          gp.ln_w[ch] += gy * xhat;
          gp.ln_b[ch] += gy;
          mean_gx += gy * p_.ln_w[ch];
          mean_gx_xhat += gy * p_.ln_w[ch] * xhat;
        }
        mean_gx /= static_cast<T>(N), mean_gx_xhat /= static_cast<T>(N);
        for (index_t i = 0; i < N; ++i) {
          const std::size_t ch = static_cast<std::size_t>(hh * N + i);
          const T xhat = (O[base + i] - mean) * inv, gy = grad_ypre[base + i];
          grad_o.data_as<T>()[base + i] = inv * (gy * p_.ln_w[ch] - mean_gx - xhat * mean_gx_xhat);
          grad_v[base + i] += gy * bonus;
          grad_r[base + i] += grad_bonus * K[base + i] * p_.r_k[ch];
          grad_k[base + i] += grad_bonus * R[base + i] * p_.r_k[ch];
          gp.r_k[ch] += grad_bonus * R[base + i] * K[base + i];
        }
      }
    // ---- the recurrence ----
    const Rwkv7Grads rg = rwkv7_backward(tp.op_inputs(b, l, h, N), grad_o.view(), std::nullopt, tp.options);
    for (index_t e = 0; e < rows * C; ++e) {
      grad_r[e] += rg.grad_q.data_as<T>()[e];
      grad_k[e] += rg.grad_k.data_as<T>()[e];
      grad_v[e] += rg.grad_v.data_as<T>()[e];
    }
    if (grad_v_out)  // the v handed on is the v after the residual, which the recurrence read
      for (index_t e = 0; e < rows * C; ++e) grad_v[e] += grad_v_out->data_as<T>()[e];
    // ---- k = k_raw ⊙ (1 + (a − 1) ⊙ k_a); a_op = −κ̂, b_op = κ̂ ⊙ a; κ̂ = κ / max(|κ|, 1e-12), κ = k_raw ⊙ k_k ----
    std::vector<T> grad_kraw = zeros(), grad_a = zeros();
    const T *KR = tp.k_raw.template data_as<T>(), *A = tp.a.template data_as<T>();
    const T* KH = tp.kappa_hat.template data_as<T>();
    for (index_t row = 0; row < rows; ++row)
      for (index_t hh = 0; hh < h; ++hh) {
        const index_t base = row * C + hh * N;
        T n2 = 0, dot = 0;  // |κ|², κ̂ · ∂L/∂κ̂
        std::vector<T> grad_kh(static_cast<std::size_t>(N));
        for (index_t i = 0; i < N; ++i) {
          const std::size_t ch = static_cast<std::size_t>(hh * N + i);
          const index_t e = base + i;
          const T kappa = KR[e] * p_.k_k[ch];
          n2 += kappa * kappa;
          grad_kraw[e] = grad_k[e] * (T(1) + (A[e] - T(1)) * p_.k_a[ch]);
          grad_a[e] = grad_k[e] * KR[e] * p_.k_a[ch] + rg.grad_b.data_as<T>()[e] * KH[e];
          gp.k_a[ch] += grad_k[e] * KR[e] * (A[e] - T(1));
          grad_kh[i] = -rg.grad_a.data_as<T>()[e] + rg.grad_b.data_as<T>()[e] * A[e];
          dot += KH[e] * grad_kh[i];
        }
        const T norm = std::sqrt(n2);
        const bool clamped = !(norm > T(1e-12));  // F.normalize divides by max(|κ|, 1e-12)
        const T inv = T(1) / (clamped ? T(1e-12) : norm);
        for (index_t i = 0; i < N; ++i) {
          const std::size_t ch = static_cast<std::size_t>(hh * N + i);
          const index_t e = base + i;
          const T grad_kappa = clamped ? grad_kh[i] * inv : (grad_kh[i] - KH[e] * dot) * inv;
          grad_kraw[e] += grad_kappa * p_.k_k[ch];
          gp.k_k[ch] += grad_kappa * KR[e];
        }
      }
    // ---- the value residual: v = v_raw + (v_first − v_raw) s, s = σ(v0 + W_v2 W_v1 x_v) ----
    std::vector<T> grad_mixed(static_cast<std::size_t>(6 * rows * C), T(0));  // (6, rows, C)
    auto gmix = [&](int m) { return grad_mixed.data() + m * rows * C; };
    auto mix = [&](int m) { return tp.mixed.template data_as<T>() + m * rows * C; };
    std::vector<T> grad_vraw = grad_v;
    if (cfg_.value_residual) {
      const T *S = tp.s_v.template data_as<T>(), *VR = tp.v_raw.template data_as<T>();
      const T* VF = v_first->data_as<T>();
      std::vector<T> grad_z = zeros();  // ∂L/∂(v0 + W_v2 W_v1 x_v)
      for (index_t e = 0; e < rows * C; ++e) {
        grad_vraw[e] = grad_v[e] * (T(1) - S[e]);
        gr.grad_v_first[e] = grad_v[e] * S[e];
        grad_z[e] = grad_v[e] * (VF[e] - VR[e]) * S[e] * (T(1) - S[e]);
        gp.v0[e % C] += grad_z[e];
      }
      lora_backward(mix(3), tp.hid_v, p_.W_v1, p_.W_v2, cfg_.v_rank, grad_z, Act::identity, gmix(3), gp.W_v1, gp.W_v2);
    }
    // ---- a = σ(a0 + W_a2 W_a1 x_a); log w = −e^{−1/2} σ(w0 + W_w2 tanh(W_w1 x_w)); g = W_g2 σ(W_g1 x_g) ----
    {
      std::vector<T> grad_za = zeros(), grad_zw = zeros();
      const T* LW = tp.log_w.template data_as<T>();
      const T half_e = static_cast<T>(std::exp(-0.5));
      for (index_t e = 0; e < rows * C; ++e) {
        grad_za[e] = grad_a[e] * A[e] * (T(1) - A[e]);
        gp.a0[e % C] += grad_za[e];
        const T sw = -LW[e] / half_e;  // σ(w0 + z)
        grad_zw[e] = rg.grad_log_w.data_as<T>()[e] * -half_e * sw * (T(1) - sw);
        gp.w0[e % C] += grad_zw[e];
      }
      lora_backward(mix(4), tp.hid_a, p_.W_a1, p_.W_a2, cfg_.a_rank, grad_za, Act::identity, gmix(4), gp.W_a1, gp.W_a2);
      lora_backward(mix(1), tp.hid_w, p_.W_w1, p_.W_w2, cfg_.decay_rank, grad_zw, Act::tanh, gmix(1), gp.W_w1, gp.W_w2);
      lora_backward(mix(5), tp.hid_g, p_.W_g1, p_.W_g2, cfg_.gate_rank, grad_g, Act::sigmoid, gmix(5), gp.W_g1,
                    gp.W_g2);
    }
    // ---- r = W_r x_r, k_raw = W_k x_k, v_raw = W_v x_v ----
    std::vector<T> tmp(static_cast<std::size_t>(rows * C));
    struct Projection {
      int branch;                  // of mixed
      const std::vector<T>* W;     // (C, C)
      std::vector<T>* grad_W;      // (C, C)
      const std::vector<T>* grad;  // (rows, C): ∂L/∂ the projection's output
    };
    const Projection projections[3] = {
        {0, &p_.W_r, &gp.W_r, &grad_r}, {2, &p_.W_k, &gp.W_k, &grad_kraw}, {3, &p_.W_v, &gp.W_v, &grad_vraw}};
    for (const Projection& pr : projections) {
      linear_backward(mix(pr.branch), pr.W->data(), pr.grad->data(), tmp.data(), pr.grad_W->data(),
                      static_cast<T*>(nullptr), rows, C, C);
      for (index_t e = 0; e < rows * C; ++e) gmix(pr.branch)[e] += tmp[e];
    }
    // ---- the token shift: x_□ = x (1 − μ_□) + x_{−1} μ_□ ----
    const T* mus[6] = {p_.mu_r.data(), p_.mu_w.data(), p_.mu_k.data(), p_.mu_v.data(), p_.mu_a.data(), p_.mu_g.data()};
    T* gmus[6] = {gp.mu_r.data(), gp.mu_w.data(), gp.mu_k.data(), gp.mu_v.data(), gp.mu_a.data(), gp.mu_g.data()};
    token_shift_backward<T>(TokenShift::rwkv7, x.data_as<T>(), b, l, C, mus, gmix(0), gr.grad_x.data(), gmus);
    return gr;
  }

 private:
  /// Every parameter vector of the config's size (checked again by each call: params() may have been edited).
  void check_sizes(const char* op) const {
    const index_t C = cfg_.d_model, vr = cfg_.value_residual ? cfg_.v_rank : 0;
    const Checker c(op);
    auto size = [&](const char* name, const std::vector<T>& v, index_t n) {
      c.require(static_cast<index_t>(v.size()) == n, name, "expected ", n, " elements, got ", v.size());
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

  enum class Act { identity, tanh, sigmoid };

  static T activate(Act act, T z) {
    return act == Act::tanh ? std::tanh(z) : (act == Act::sigmoid ? scalar::sigmoid(z) : z);
  }

  /// y (rows, C) = W2 act(W1 x) for a LoRA with W1 (r, C), W2 (C, r); the hidden act(W1 x) (rows, r) into *hidden.
  void lora(const TensorView& x, const std::vector<T>& W1, const std::vector<T>& W2, index_t r, Act act,
            const TensorView& y, Tensor* hidden) const {
    const index_t rows = x.size(0), C = cfg_.d_model;
    *hidden = Tensor::empty({rows, r}, dtype_of<T>());  // (rows, r)
    project(TensorView::of(W1.data(), {r, C}), x, std::nullopt, *hidden, threads_);
    T* hp = hidden->data_as<T>();
    for (index_t i = 0; i < rows * r; ++i) hp[i] = activate(act, hp[i]);
    project(TensorView::of(W2.data(), {C, r}), *hidden, std::nullopt, y, threads_);
  }

  /// Backward of lora for ∂L/∂y = grad_y (rows, C): accumulates gW1, gW2 and adds ∂L/∂x into grad_x (rows, C); hidden
  /// holds act(W1 x), from which act's derivative is taken (tanh: 1 − h², σ: h (1 − h)).
  void lora_backward(const T* x, const Tensor& hidden, const std::vector<T>& W1, const std::vector<T>& W2, index_t r,
                     const std::vector<T>& grad_y, Act act, T* grad_x, std::vector<T>& gW1, std::vector<T>& gW2) const {
    const index_t rows = hidden.size(0), C = cfg_.d_model;
    std::vector<T> grad_h(static_cast<std::size_t>(rows * r)), gx(static_cast<std::size_t>(rows * C));
    linear_backward(hidden.data_as<const T>(), W2.data(), grad_y.data(), grad_h.data(), gW2.data(),
                    static_cast<T*>(nullptr), rows, r, C);
    const T* hp = hidden.data_as<T>();
    for (index_t i = 0; i < rows * r; ++i)
      grad_h[i] *= act == Act::tanh ? T(1) - hp[i] * hp[i] : (act == Act::sigmoid ? hp[i] * (T(1) - hp[i]) : T(1));
    linear_backward(x, W1.data(), grad_h.data(), gx.data(), gW1.data(), static_cast<T*>(nullptr), rows, C, r);
    for (index_t i = 0; i < rows * C; ++i) grad_x[i] += gx[i];
  }

  /// The forward's intermediates up to the recurrence's output, as backward needs them.
  struct Tape {
    Tensor mixed;                       // (6, rows, C): the token-shift mixes x_r, x_w, x_k, x_v, x_a, x_g
    Tensor r, k_raw, k, v_raw, v;       // (rows, C): W_r x_r, W_k x_k, the key after its a-scaling, W_v x_v, v after
                                        // the value residual
    Tensor hid_w, hid_a, hid_v, hid_g;  // the LoRAs' hiddens after their activation (tanh, identity, identity, σ)
    Tensor log_w, a, s_v, g;            // (rows, C): log w, a, σ of the value-residual mix (with it), the gate
    Tensor kappa_hat, a_op, b_op;       // (rows, C): κ̂, −κ̂, κ̂ ⊙ a
    Tensor o;                           // (b, l, h, N): the recurrence's output
    Rwkv7Options options;

    Rwkv7Inputs op_inputs(index_t b, index_t l, index_t h, index_t N) const {
      auto heads = [&](const Tensor& t) { return t.view().reshape({b, l, h, N}); };
      Rwkv7Inputs in;
      in.q = heads(r), in.k = heads(k), in.v = heads(v), in.log_w = heads(log_w), in.a = heads(a_op);
      in.b = heads(b_op);
      return in;
    }
  };

  /// Everything up to and including the recurrence into tp (the checks of x, the state and v_first first); the state's
  /// token shift and S are updated when given.
  void forward_tape(const char* op, const TensorView& x, State* state, const std::optional<TensorView>& v_first,
                    Tape& tp) const {
    Checker c(op);
    check_sizes(op);
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
    tp.o = Tensor::empty({b, l, h, N}, dt);
    if (rows == 0) return;

    // the token-shift mixes x_r … x_g, each (rows, C)
    const T* xs = x.data_as<T>();
    tp.mixed = Tensor::empty({6, rows, C}, dt);
    const T* mus[6] = {p_.mu_r.data(), p_.mu_w.data(), p_.mu_k.data(), p_.mu_v.data(), p_.mu_a.data(), p_.mu_g.data()};
    T* shift = state ? state->conv_state.data_as<T>() : nullptr;  // (b, C)
    token_shift<T>(TokenShift::rwkv7, xs, shift, b, l, C, mus, tp.mixed.template data_as<T>());
    if (shift)
      for (index_t bi = 0; bi < b; ++bi) std::copy_n(xs + (bi * l + l - 1) * C, C, shift + bi * C);
    auto branch = [&](int m) { return tp.mixed.view().select(0, m); };  // (rows, C)
    auto rc = [&] { return Tensor::empty({rows, C}, dt); };

    tp.r = rc(), tp.k_raw = rc(), tp.v_raw = rc();
    project(TensorView::of(p_.W_r.data(), {C, C}), branch(0), std::nullopt, tp.r, threads_);
    project(TensorView::of(p_.W_k.data(), {C, C}), branch(2), std::nullopt, tp.k_raw, threads_);
    project(TensorView::of(p_.W_v.data(), {C, C}), branch(3), std::nullopt, tp.v_raw, threads_);
    tp.log_w = rc(), tp.a = rc(), tp.g = rc();
    const T half_e = static_cast<T>(std::exp(-0.5));
    lora(branch(1), p_.W_w1, p_.W_w2, cfg_.decay_rank, Act::tanh, tp.log_w, &tp.hid_w);
    lora(branch(4), p_.W_a1, p_.W_a2, cfg_.a_rank, Act::identity, tp.a, &tp.hid_a);
    lora(branch(5), p_.W_g1, p_.W_g2, cfg_.gate_rank, Act::sigmoid, tp.g, &tp.hid_g);
    T* lw = tp.log_w.template data_as<T>();
    T* ap = tp.a.template data_as<T>();
    for (index_t row = 0; row < rows; ++row)
      for (index_t i = 0; i < C; ++i) {
        T& w = lw[row * C + i];
        w = -half_e * scalar::sigmoid(p_.w0[static_cast<std::size_t>(i)] + w);
        T& ai = ap[row * C + i];
        ai = scalar::sigmoid(p_.a0[static_cast<std::size_t>(i)] + ai);
      }
    tp.v = rc();
    copy(tp.v, tp.v_raw);
    T* vp = tp.v.template data_as<T>();
    if (cfg_.value_residual) {  // v ← v + (v_first − v) σ(v0 + W_v2 W_v1 x_v)
      tp.s_v = rc();
      lora(branch(3), p_.W_v1, p_.W_v2, cfg_.v_rank, Act::identity, tp.s_v, &tp.hid_v);
      const T* vf = v_first->data_as<T>();
      T* sp = tp.s_v.template data_as<T>();
      for (index_t row = 0; row < rows; ++row)
        for (index_t i = 0; i < C; ++i) {
          const index_t e = row * C + i;
          sp[e] = scalar::sigmoid(p_.v0[static_cast<std::size_t>(i)] + sp[e]);
          vp[e] += (vf[e] - vp[e]) * sp[e];
        }
    }
    // κ̂ = normalize_per_head(k ⊙ k_k) (F.normalize: x / max(|x|, 1e-12)); the op's a = −κ̂, b = κ̂ ⊙ a;
    // k ← k ⊙ (1 + (a − 1) ⊙ k_a)
    tp.kappa_hat = rc(), tp.a_op = rc(), tp.b_op = rc(), tp.k = rc();
    const T* kr = tp.k_raw.template data_as<T>();
    for (index_t row = 0; row < rows; ++row)
      for (index_t hh = 0; hh < h; ++hh) {
        const index_t o = row * C + hh * N;
        T n2 = 0;
        for (index_t i = 0; i < N; ++i) {
          const T kk = kr[o + i] * p_.k_k[static_cast<std::size_t>(hh * N + i)];
          n2 += kk * kk;
        }
        const T inv = T(1) / std::max(std::sqrt(n2), T(1e-12));
        for (index_t i = 0; i < N; ++i) {
          const std::size_t ch = static_cast<std::size_t>(hh * N + i);
          const T kh = kr[o + i] * p_.k_k[ch] * inv, ai = ap[o + i];
          tp.kappa_hat.template data_as<T>()[o + i] = kh;
          tp.a_op.template data_as<T>()[o + i] = -kh;
          tp.b_op.template data_as<T>()[o + i] = kh * ai;
          tp.k.template data_as<T>()[o + i] = kr[o + i] * (T(1) + (ai - T(1)) * p_.k_a[ch]);
        }
      }
    // the recurrence over (b, l, h, N)
    tp.options.threads = threads_;
    if (state && l == 1) {  // one token: the decode step updates S in place
      auto one = [&](const Tensor& t) { return t.view().reshape({b, h, N}); };
      rwkv7_step(one(tp.r), one(tp.k), one(tp.v), one(tp.log_w), one(tp.a_op), one(tp.b_op), state->ssm_state.view(),
                 one(tp.o), tp.options);
    } else {
      Rwkv7Inputs in = tp.op_inputs(b, l, h, N);
      Tensor last;  // (b, h, N, N): the final state, copied over the initial one afterwards
      if (state) {
        in.initial_state = state->ssm_state.view();
        last = Tensor::empty({b, h, N, N}, dt);
      }
      rwkv7_into(in, tp.o, optional_view(last), tp.options);
      if (state) copy(state->ssm_state, last);
    }
  }

  /// After the recurrence: y_pre = GroupNorm_h(o) ⊙ ln_w + ln_b + (Σ_N r ⊙ k ⊙ r_k) v per head, and W_o's input
  /// y_pre ⊙ g, each (rows, C); y_pre may be null, out_pre may be tp.o's data (in place).
  void output_stage(const Tape& tp, T* y_pre, T* out_pre) const {
    const index_t rows = tp.r.size(0), C = cfg_.d_model, N = cfg_.head_dim, h = cfg_.heads();
    const T *os = tp.o.template data_as<T>(), *rp = tp.r.template data_as<T>(), *kp = tp.k.template data_as<T>();
    const T *vp = tp.v.template data_as<T>(), *gp = tp.g.template data_as<T>();
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
          if (y_pre) y_pre[base + i] = y;
          out_pre[base + i] = y * gp[base + i];
        }
      }
  }

  Tensor run(const char* op, const TensorView& x, State* state, const std::optional<TensorView>& v_first,
             Tensor* v_out) const {
    Tape tp;
    forward_tape(op, x, state, v_first, tp);
    const index_t b = x.size(0), l = x.size(1), C = cfg_.d_model, rows = b * l;
    Tensor out = Tensor::empty({b, l, C}, dtype_of<T>());  // (b, l, C)
    if (v_out) *v_out = Tensor::empty({b, l, C}, dtype_of<T>());
    if (rows == 0) return out;
    if (v_out) copy(v_out->view().reshape({rows, C}), tp.v.view());
    output_stage(tp, nullptr, tp.o.template data_as<T>());  // in place over o
    project(TensorView::of(p_.W_o.data(), {C, C}), tp.o.view().reshape({rows, C}), std::nullopt,
            out.view().reshape({rows, C}), threads_);
    return out;
  }

  Rwkv7Config cfg_;
  Rwkv7Params<T> p_;
  int threads_ = 0;
};

}  // namespace ssm::layers
