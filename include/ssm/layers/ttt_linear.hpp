// The TTT-Linear layer (Sun et al. 2024, "Learning to (Learn at Test Time)", §2.7 and Appendix; as in the authors'
// PyTorch code, test-time-training/ttt-lm-pytorch, TTTLinear) over the ssm::ttt_linear op (docs/ttt_linear.md). With
// C = d_model = h d (d = head_dim) and m the mini-batch size, per token x (C):
//
//   [q k v | g] = in_proj(x)                          q_proj, k_proj, v_proj (C, C) stacked, [g_proj (C, C)]
//   q, k ← RoPE(q), RoPE(k)                           pairs (2i, 2i + 1), position t mod m, base 10000 (ssm::rotary)
//   η_t,h = base_lr σ(lr_weight_h · x + lr_bias_h) / d      the learnable, token-dependent learning rate
//   τ_i = max(1 / (i + 1) + token_idx_offset_i, 0)    the weight of position i in the mini-batch (the mean gradient)
//   o = ttt_linear(q, k, v, η, τ, LN γ β, Ŵ_0 = [W1; b1ᵀ])   the inner model x + LN(x W + b), trained on v − k
//   o = LayerNorm_C(o) ⊙ post_norm_weight + post_norm_bias   (ssm::layer_norm, eps 1e-6)
//   o = o ⊙ gelu_tanh(g)                              (use_gate)
//   y = out_proj(o)
//
// Every matrix product is ssm::linear, the rotation ssm::rotary, the recurrence ssm::ttt_linear / ttt_linear_step,
// the norm ssm::layer_norm; the layer computes the elementwise η and the gate. forward runs a sequence from the
// learned initial weights; step continues a state (the weights at the start of the unfinished mini-batch, the pending
// gradient sum and the position) over the next t tokens, and a sequence cut anywhere continues exactly. CPU tensors
// of T = float or double. backward gives the input's and every parameter's gradient (the forward recomputed,
// ssm::ttt_linear_backward for the recurrence, the inverse rotation for RoPE). The paper's share_qk variant (a causal
// convolution producing q and k from one projection) is not built.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
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
#include "ssm/ops/layer_norm.hpp"
#include "ssm/ops/rotary.hpp"
#include "ssm/ops/ttt_linear.hpp"

namespace ssm::layers {

/// Sizes and options of one TTT-Linear layer (the authors' TTTConfig names in comments).
struct TttLinearConfig {
  index_t d_model = 0;           // hidden_size, C
  index_t heads = 4;             // num_attention_heads, h; C % h == 0, d = C / h
  index_t mini_batch_size = 16;  // mini_batch_size, m
  double base_lr = 1.0;          // ttt_base_lr
  double rope_base = 10000;      // rope_theta
  bool use_gate = false;         // use_gate: o ⊙ gelu_tanh(g_proj x)
  double ln_eps = 1e-6;          // the inner layer norm's and the post-norm's eps

  index_t head_dim() const { return heads > 0 ? d_model / heads : 0; }
  index_t proj_dim() const { return (use_gate ? 4 : 3) * d_model; }

  /// Throws ssm::Error naming the first invalid field.
  void validate(const char* op = "TttLinearConfig") const {
    Checker c(op);
    c.require(d_model >= 1, "d_model", "must be >= 1, got ", d_model);
    c.require(heads >= 1 && d_model % heads == 0 && (d_model / heads) % 2 == 0, "heads",
              "must be >= 1 and divide d_model = ", d_model, " into an even head width (RoPE pairs), got ", heads);
    c.require(mini_batch_size >= 1, "mini_batch_size", "must be >= 1, got ", mini_batch_size);
    c.require(std::isfinite(base_lr) && base_lr >= 0, "base_lr", "must be finite and >= 0, got ", base_lr);
    c.require(std::isfinite(rope_base) && rope_base > 1, "rope_base", "must be finite and > 1, got ", rope_base);
    c.require(std::isfinite(ln_eps) && ln_eps > 0, "ln_eps", "must be finite and > 0, got ", ln_eps);
  }
};

/// Parameters (row-major; (out, in) for every projection).
template <class T>
struct TttLinearLayerParams {
  std::vector<T> in_proj;           // (proj_dim, C): q_proj, k_proj, v_proj, [g_proj] stacked
  std::vector<T> lr_weight;         // (h, C): learnable_ttt_lr_weight
  std::vector<T> lr_bias;           // (h): learnable_ttt_lr_bias
  std::vector<T> token_idx_offset;  // (m): learnable_token_idx, added to 1 / (i + 1)
  std::vector<T> ttt_norm_weight;   // (h, d): the inner layer norm's γ
  std::vector<T> ttt_norm_bias;     // (h, d): its β
  std::vector<T> W1;                // (h, d, d): the inner model's initial weights, x W1 (input rows)
  std::vector<T> b1;                // (h, d): its initial bias
  std::vector<T> post_norm_weight;  // (C)
  std::vector<T> post_norm_bias;    // (C)
  std::vector<T> out_proj;          // (C, C): o_proj

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
    f("in_proj", p.in_proj), f("lr_weight", p.lr_weight), f("lr_bias", p.lr_bias);
    f("token_idx_offset", p.token_idx_offset), f("ttt_norm_weight", p.ttt_norm_weight);
    f("ttt_norm_bias", p.ttt_norm_bias), f("W1", p.W1), f("b1", p.b1), f("post_norm_weight", p.post_norm_weight);
    f("post_norm_bias", p.post_norm_bias), f("out_proj", p.out_proj);
  }
};

/// The decoding state of b sequences, of the layer's dtype: the inner weights Ŵ′ = [W; bᵀ] at the start of the
/// unfinished mini-batch and the gradient sum A pending in it (b, h, d + 1, d), and how many tokens were read.
struct TttLinearState {
  index_t b = 0;
  Tensor W, pending;
  index_t position = 0;

  std::size_t nbytes() const { return (W.defined() ? W.nbytes() : 0) + (pending.defined() ? pending.nbytes() : 0); }
};

template <class T>
class TttLinearLayer {
 public:
  using State = TttLinearState;

  TttLinearLayer(const TttLinearConfig& cfg, TttLinearLayerParams<T> params) : cfg_(cfg), p_(std::move(params)) {
    cfg_.validate("TttLinearLayer");
    check_sizes("TttLinearLayer");
    p_.for_each([](const char* nm, const std::vector<T>& v) {
      Checker("TttLinearLayer").require(std::all_of(v.begin(), v.end(), [](T e) { return std::isfinite(e); }), nm,
                                        "every value must be finite");
    });
  }

  /// The authors' initialization: projections and lr_weight normal with std 0.02 (lr_weight as h stacked Linear(C, 1)),
  /// W1 normal with std 0.02, every bias and offset zero, the norms' weights 1.
  static TttLinearLayer init(const TttLinearConfig& cfg, std::uint64_t seed) {
    cfg.validate("TttLinearLayer::init");
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 0.02);
    auto normals = [&](index_t n) {
      std::vector<T> v(static_cast<std::size_t>(n));
      for (T& x : v) x = static_cast<T>(normal(rng));
      return v;
    };
    const index_t C = cfg.d_model, h = cfg.heads, d = cfg.head_dim();
    TttLinearLayerParams<T> p;
    p.in_proj = normals(cfg.proj_dim() * C);
    p.lr_weight = normals(h * C);
    p.lr_bias.assign(static_cast<std::size_t>(h), T(0));
    p.token_idx_offset.assign(static_cast<std::size_t>(cfg.mini_batch_size), T(0));
    p.ttt_norm_weight.assign(static_cast<std::size_t>(h * d), T(1));
    p.ttt_norm_bias.assign(static_cast<std::size_t>(h * d), T(0));
    p.W1 = normals(h * d * d);
    p.b1.assign(static_cast<std::size_t>(h * d), T(0));
    p.post_norm_weight.assign(static_cast<std::size_t>(C), T(1));
    p.post_norm_bias.assign(static_cast<std::size_t>(C), T(0));
    p.out_proj = normals(C * C);
    return TttLinearLayer(cfg, std::move(p));
  }

  index_t d_model() const { return cfg_.d_model; }
  const TttLinearConfig& config() const { return cfg_; }
  const TttLinearLayerParams<T>& params() const { return p_; }
  /// The parameters, to update in place (an optimizer's step: train::ParamTree::add_all(prefix, layer.params())); τ and
  /// Ŵ_0 are derived from them at every call, so nothing is left stale.
  TttLinearLayerParams<T>& params() { return p_; }
  void set_threads(int threads) { threads_ = threads; }

  /// The state of b sequences before their first token: Ŵ′ = Ŵ_0 for each, nothing pending.
  State init_state(index_t b) const {
    Checker("TttLinearLayer::init_state").require(b >= 1, "b", "must be >= 1, got ", b);
    check_sizes("TttLinearLayer::init_state");
    const index_t h = cfg_.heads, d = cfg_.head_dim(), size = h * (d + 1) * d;
    State s;
    s.b = b;
    s.W = Tensor::empty({b, h, d + 1, d}, dtype_of<T>());
    const std::vector<T> W0 = initial_weights();
    for (index_t bi = 0; bi < b; ++bi) std::copy(W0.begin(), W0.end(), s.W.data_as<T>() + bi * size);
    s.pending = Tensor::zeros({b, h, d + 1, d}, dtype_of<T>());
    return s;
  }

  /// x (b, l, d_model) contiguous → (b, l, d_model), from the learned initial weights.
  Tensor forward(const TensorView& x) const { return run("TttLinearLayer::forward", x, nullptr); }

  /// The next t tokens x (b, t, d_model) → (b, t, d_model), continuing from `state` and updating it.
  Tensor step(const TensorView& x, State& state) const { return run("TttLinearLayer::step", x, &state); }

  using Grads = head_mixer::MixerGrads<T, TttLinearLayerParams<T>>;

  /// ∂L/∂x and ∂L/∂(every parameter) for grad_out = ∂L/∂y (b, l, d_model) contiguous, y = forward(x) (from the learned
  /// initial weights). The forward is recomputed; the stages then run in reverse: out_proj, the gate, the post-norm,
  /// the recurrence (ssm::ttt_linear_backward: q, k, v, η, the inner layer norm, τ and the initial weights Ŵ_0), τ's
  /// clamp at 0, RoPE (the inverse rotation), η's sigmoid, and in_proj.
  Grads backward(const TensorView& x, const TensorView& grad_out) const {
    Checker c("TttLinearLayer::backward");
    check_sizes(c.op().c_str());
    head_mixer::check_input<T>(c, x, cfg_.d_model);
    head_mixer::check_grad_out<T>(c, grad_out, x);
    const index_t b = x.size(0), l = x.size(1), h = cfg_.heads, d = cfg_.head_dim(), C = cfg_.d_model;
    const index_t P = cfg_.proj_dim(), rows = b * l, m = cfg_.mini_batch_size;
    const DType dt = dtype_of<T>();
    Grads gr;
    gr.params = head_mixer::zeros_like(p_);
    TttLinearLayerParams<T>& gp = gr.params;
    gr.grad_x.assign(static_cast<std::size_t>(rows * C), T(0));
    if (rows == 0) return gr;
    // ---- the forward again ----
    const Tensor proj = rotated_projection(x, 0);  // (b, l, P): RoPE'd q, k, then v, [g]
    Tensor eta_pre;                                // (b l, h): lr_weight x + lr_bias
    const Tensor eta = learning_rates(x, &eta_pre);
    const std::vector<T> tau = position_weights();
    const Tensor W0 = init_state(b).W;  // (b, h, d + 1, d)
    TttLinearInputs in = op_inputs(proj, eta, tau, b, l);
    in.initial_state = W0.view();
    const TttLinearOptions opt = op_options();
    Tensor o = Tensor::empty({b, l, h, d}, dt);  // (b, l, h, d) the recurrence's output
    ttt_linear_into(in, o, std::nullopt, std::nullopt, opt);
    Tensor o_n = Tensor::empty({rows, C}, dt);  // (b l, C): the post-norm's output
    layer_norm_into(post_norm(o.view().reshape({rows, C})), o_n);
    std::vector<T> o_g(o_n.data_as<T>(), o_n.data_as<T>() + rows * C);  // (b l, C): out_proj's input
    const T* pr = proj.data_as<T>();
    if (cfg_.use_gate)
      for (index_t r = 0; r < rows; ++r)
        for (index_t j = 0; j < C; ++j) o_g[r * C + j] *= scalar::gelu_tanh(pr[r * P + 3 * C + j]);
    // ---- out_proj, the gate, the post-norm ----
    std::vector<T> grad_proj(static_cast<std::size_t>(rows * P), T(0));  // (b, l, P)
    std::vector<T> grad_og(static_cast<std::size_t>(rows * C));          // (b l, C)
    linear_backward(o_g.data(), p_.out_proj.data(), grad_out.data_as<const T>(), grad_og.data(), gp.out_proj.data(),
                    static_cast<T*>(nullptr), rows, C, C);
    if (cfg_.use_gate)
      for (index_t r = 0; r < rows; ++r)
        for (index_t j = 0; j < C; ++j) {
          const T g = pr[r * P + 3 * C + j], dy = grad_og[r * C + j];
          grad_proj[r * P + 3 * C + j] = dy * o_n.data_as<T>()[r * C + j] * scalar::gelu_tanh_grad(g);
          grad_og[r * C + j] = dy * scalar::gelu_tanh(g);  // now ∂L/∂o_n
        }
    Tensor grad_o = Tensor::empty({b, l, h, d}, dt);  // (b, l, h, d)
    layernorm_backward(o.data_as<const T>(), p_.post_norm_weight.data(), grad_og.data(), grad_o.data_as<T>(),
                       gp.post_norm_weight.data(), gp.post_norm_bias.data(), rows, C, cfg_.ln_eps);
    // ---- the recurrence ----
    const TttLinearGrads tg = ttt_linear_backward(in, grad_o.view(), std::nullopt, std::nullopt, opt);
    std::copy_n(tg.grad_ln_weight.data_as<T>(), h * d, gp.ttt_norm_weight.data());
    std::copy_n(tg.grad_ln_bias.data_as<T>(), h * d, gp.ttt_norm_bias.data());
    for (index_t i = 0; i < m; ++i)  // τ_i = max(1 / (i + 1) + offset_i, 0)
      if (T(1) / static_cast<T>(i + 1) + p_.token_idx_offset[i] > T(0))
        gp.token_idx_offset[i] = tg.grad_position_weights.data_as<T>()[i];
    const T* gW0 = tg.grad_initial_state.data_as<T>();  // (b, h, d + 1, d): Ŵ_0 = [W1; b1ᵀ] for every sequence
    for (index_t bi = 0; bi < b; ++bi)
      for (index_t hh = 0; hh < h; ++hh) {
        const T* g = gW0 + (bi * h + hh) * (d + 1) * d;
        for (index_t e = 0; e < d * d; ++e) gp.W1[hh * d * d + e] += g[e];
        for (index_t e = 0; e < d; ++e) gp.b1[hh * d + e] += g[d * d + e];
      }
    // ---- q, k through RoPE's inverse; v ----
    Tensor grad_qk = Tensor::empty({b, l, 2 * h, d}, dt);  // (b, l, 2h, d): ∂L/∂ q, k before the rotation
    for (index_t r = 0; r < rows; ++r) {
      std::copy_n(tg.grad_q.data_as<T>() + r * C, C, grad_qk.data_as<T>() + r * 2 * C);
      std::copy_n(tg.grad_k.data_as<T>() + r * C, C, grad_qk.data_as<T>() + r * 2 * C + C);
    }
    RotaryOptions inverse = rope_options(0);
    inverse.inverse = true;
    rotary_into(grad_qk, grad_qk, inverse);
    for (index_t r = 0; r < rows; ++r) {
      std::copy_n(grad_qk.data_as<T>() + r * 2 * C, 2 * C, grad_proj.data() + r * P);
      std::copy_n(tg.grad_v.data_as<T>() + r * C, C, grad_proj.data() + r * P + 2 * C);
    }
    // ---- η = lr σ(pre): dη/dpre = lr σ (1 − σ); in_proj ----
    const T lr = static_cast<T>(cfg_.base_lr / static_cast<double>(d));
    std::vector<T> grad_pre(static_cast<std::size_t>(rows * h));  // (b l, h)
    for (index_t i = 0; i < rows * h; ++i) {
      const T s = scalar::sigmoid(eta_pre.data_as<T>()[i]);
      grad_pre[i] = tg.grad_eta.data_as<T>()[i] * lr * s * (T(1) - s);
    }
    std::vector<T> grad_x_eta(static_cast<std::size_t>(rows * C));
    linear_backward(x.data_as<const T>(), p_.lr_weight.data(), grad_pre.data(), grad_x_eta.data(), gp.lr_weight.data(),
                    gp.lr_bias.data(), rows, C, h);
    linear_backward(x.data_as<const T>(), p_.in_proj.data(), grad_proj.data(), gr.grad_x.data(), gp.in_proj.data(),
                    static_cast<T*>(nullptr), rows, C, P);
    for (std::size_t i = 0; i < grad_x_eta.size(); ++i) gr.grad_x[i] += grad_x_eta[i];
    return gr;
  }

 private:
  /// Every parameter vector of the config's size (checked again by each call: params() may have been edited).
  void check_sizes(const char* op) const {
    const index_t C = cfg_.d_model, h = cfg_.heads, d = cfg_.head_dim();
    auto size = [&](const char* name, const std::vector<T>& v, index_t n) {
      Checker(op).require(static_cast<index_t>(v.size()) == n, name, "expected ", n, " elements, got ", v.size());
    };
    size("in_proj", p_.in_proj, cfg_.proj_dim() * C);
    size("lr_weight", p_.lr_weight, h * C), size("lr_bias", p_.lr_bias, h);
    size("token_idx_offset", p_.token_idx_offset, cfg_.mini_batch_size);
    size("ttt_norm_weight", p_.ttt_norm_weight, h * d), size("ttt_norm_bias", p_.ttt_norm_bias, h * d);
    size("W1", p_.W1, h * d * d), size("b1", p_.b1, h * d);
    size("post_norm_weight", p_.post_norm_weight, C), size("post_norm_bias", p_.post_norm_bias, C);
    size("out_proj", p_.out_proj, C * C);
  }

  // The forward's stages, shared by run() and backward().

  /// τ (m): τ_i = max(1 / (i + 1) + token_idx_offset_i, 0).
  std::vector<T> position_weights() const {
    std::vector<T> tau(static_cast<std::size_t>(cfg_.mini_batch_size));
    for (std::size_t i = 0; i < tau.size(); ++i)
      tau[i] = std::max(T(1) / static_cast<T>(i + 1) + p_.token_idx_offset[i], T(0));
    return tau;
  }

  /// Ŵ_0 (h, d + 1, d): W1 over b1.
  std::vector<T> initial_weights() const {
    const index_t h = cfg_.heads, d = cfg_.head_dim();
    std::vector<T> W0(static_cast<std::size_t>(h * (d + 1) * d));
    for (index_t hh = 0; hh < h; ++hh) {
      std::copy_n(p_.W1.begin() + hh * d * d, d * d, W0.begin() + hh * (d + 1) * d);
      std::copy_n(p_.b1.begin() + hh * d, d, W0.begin() + hh * (d + 1) * d + d * d);
    }
    return W0;
  }

  RotaryOptions rope_options(index_t position) const {
    RotaryOptions rope;
    rope.base = cfg_.rope_base, rope.position_offset = position % cfg_.mini_batch_size;
    rope.period = cfg_.mini_batch_size;
    return rope;
  }

  /// proj (b, l, P) = in_proj(x), q and k rotated in place (adjacent column blocks: 2h heads of d), positions from
  /// `position` mod m.
  Tensor rotated_projection(const TensorView& x, index_t position) const {
    const index_t b = x.size(0), l = x.size(1), h = cfg_.heads, d = cfg_.head_dim(), C = cfg_.d_model;
    const index_t P = cfg_.proj_dim();
    Tensor proj = Tensor::empty({b, l, P}, dtype_of<T>());
    project(TensorView::of(p_.in_proj.data(), {P, C}), x.reshape({b * l, C}), std::nullopt,
            proj.view().reshape({b * l, P}), threads_);
    const TensorView qk = part(proj, 0, {b, l, 2 * h, d}, {l * P, P, d, 1});
    rotary_into(qk, qk, rope_options(position));
    return proj;
  }

  /// η (b, l, h) = base_lr σ(lr_weight x + lr_bias) / d; the pre-activation (b l, h) into *pre when asked for.
  Tensor learning_rates(const TensorView& x, Tensor* pre = nullptr) const {
    const index_t b = x.size(0), l = x.size(1), h = cfg_.heads, C = cfg_.d_model;
    Tensor eta = Tensor::empty({b, l, h}, dtype_of<T>());
    project(TensorView::of(p_.lr_weight.data(), {h, C}), x.reshape({b * l, C}), TensorView::of(p_.lr_bias.data(), {h}),
            eta.view().reshape({b * l, h}), threads_);
    if (pre) {
      *pre = Tensor::empty({b * l, h}, dtype_of<T>());
      copy(pre->view(), eta.view().reshape({b * l, h}));
    }
    const T lr = static_cast<T>(cfg_.base_lr / static_cast<double>(cfg_.head_dim()));
    for (index_t i = 0; i < eta.numel(); ++i) eta.data_as<T>()[i] = lr * scalar::sigmoid(eta.data_as<T>()[i]);
    return eta;
  }

  /// The op's inputs: q, k, v views of proj, η, the inner layer norm, τ (which must outlive them).
  TttLinearInputs op_inputs(const Tensor& proj, const Tensor& eta, const std::vector<T>& tau, index_t b,
                            index_t l) const {
    const index_t h = cfg_.heads, d = cfg_.head_dim(), C = cfg_.d_model, P = cfg_.proj_dim();
    TttLinearInputs in;
    in.q = part(proj, 0, {b, l, h, d}, {l * P, P, d, 1});
    in.k = part(proj, C, {b, l, h, d}, {l * P, P, d, 1});
    in.v = part(proj, 2 * C, {b, l, h, d}, {l * P, P, d, 1});
    in.eta = eta.view();
    in.ln_weight = TensorView::of(p_.ttt_norm_weight.data(), {h, d});
    in.ln_bias = TensorView::of(p_.ttt_norm_bias.data(), {h, d});
    in.position_weights = TensorView::of(tau.data(), {cfg_.mini_batch_size});
    return in;
  }

  TttLinearOptions op_options() const {
    TttLinearOptions opt;
    opt.mini_batch_size = cfg_.mini_batch_size, opt.ln_eps = cfg_.ln_eps, opt.threads = threads_;
    return opt;
  }

  /// The post-norm over C of rows (b l, C).
  LayerNormInputs post_norm(const TensorView& rows) const {
    const index_t C = cfg_.d_model;
    return LayerNormInputs{rows, TensorView::of(p_.post_norm_weight.data(), {C}),
                           TensorView::of(p_.post_norm_bias.data(), {C}), cfg_.ln_eps};
  }

  Tensor run(const char* op, const TensorView& x, State* state) const {
    Checker c(op);
    check_sizes(op);
    head_mixer::check_input<T>(c, x, cfg_.d_model);
    const index_t b = x.size(0), l = x.size(1), h = cfg_.heads, d = cfg_.head_dim(), C = cfg_.d_model;
    const index_t P = cfg_.proj_dim(), rows = b * l, m = cfg_.mini_batch_size;
    const DType dt = dtype_of<T>();
    if (state) {
      auto fits = [&](const Tensor& t) {
        return t.defined() && t.shape() == Dims{b, h, d + 1, d} && t.dtype() == dt && t.view().is_contiguous() &&
               t.device().is_cpu();
      };
      c.require(state->b == b && fits(state->W) && fits(state->pending) && state->position >= 0, "state",
                "expected W and pending (", b, ", ", h, ", ", d + 1, ", ", d, ") of dtype ", name(dt),
                " on the CPU and a position >= 0 (init_state(", b, ")), got one for b = ", state->b);
    }
    Tensor out = Tensor::empty({b, l, C}, dt);  // (b, l, C)
    if (rows == 0) return out;
    const index_t position = state ? state->position : 0;

    const Tensor proj = rotated_projection(x, position);  // (b, l, P): q, k (rotated), v, [g]
    const Tensor eta = learning_rates(x);                 // (b, l, h)
    const std::vector<T> tau = position_weights();         // (m)
    TttLinearInputs in = op_inputs(proj, eta, tau, b, l);
    TttLinearOptions opt = op_options();
    Tensor o = Tensor::empty({b, l, h, d}, dt);  // (b, l, h, d)
    if (state && l == 1) {  // one token: the decode step updates the state in place
      TttLinearInputs one = in;
      one.q = in.q.select(1, 0), one.k = in.k.select(1, 0), one.v = in.v.select(1, 0), one.eta = eta.view().select(1, 0);
      ttt_linear_step(one, state->W.view(), state->pending.view(), position, o.view().select(1, 0), opt);
    } else {
      Tensor W0;  // without a state: Ŵ_0 for every row
      if (state) {
        in.initial_state = state->W.view(), in.initial_pending = state->pending.view();
        opt.start = position % m;
      } else {
        W0 = init_state(b).W;
        in.initial_state = W0.view();
      }
      Tensor last_W, last_pending;  // the final state, copied over the initial one afterwards
      if (state) last_W = Tensor::empty(state->W.shape(), dt), last_pending = Tensor::empty(state->W.shape(), dt);
      ttt_linear_into(in, o, optional_view(last_W), optional_view(last_pending), opt);
      if (state) copy(state->W, last_W), copy(state->pending, last_pending);
    }
    if (state) state->position += l;
    // post-norm over C, then the gate, then out_proj
    const TensorView o_rows = o.view().reshape({rows, C});
    layer_norm_into(post_norm(o_rows), o_rows);
    if (cfg_.use_gate) {
      T* os = o.data_as<T>();
      const T* g = proj.data_as<T>() + 3 * C;
      for (index_t r = 0; r < rows; ++r)
        for (index_t j = 0; j < C; ++j) os[r * C + j] *= scalar::gelu_tanh(g[r * P + j]);
    }
    project(TensorView::of(p_.out_proj.data(), {C, C}), o_rows, std::nullopt, out.view().reshape({rows, C}), threads_);
    return out;
  }

  TttLinearConfig cfg_;
  TttLinearLayerParams<T> p_;
  int threads_ = 0;
};

}  // namespace ssm::layers
