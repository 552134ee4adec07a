// The DeltaNet layer (Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule over Sequence
// Length") and the Gated DeltaNet layer (Yang, Kautz & Hatamizadeh 2025, "Gated Delta Networks"), as in
// flash-linear-attention's DeltaNet / GatedDeltaNet modules (docs/delta_rule.md):
//
//   [q k v | β | a | o_gate] = in_proj(x)                 one projection, columns in that order
//   q, k, v  = silu(short causal conv1d(q, k, v))          depthwise, width d_conv, no bias (one conv over q k v)
//   β        = sigmoid(β logits)                           (b, l, h)
//   g        = −exp(A_log) · softplus(a + dt_bias)         (b, l, h), Gated DeltaNet only: α_t = exp(g_t)
//   o        = delta_rule(q, k, v, β, g)                   L2-normalized q and k, scale dk^(−1/2); S (b, h, dk, dv)
//   o        = RMSNorm_dv(o) · w ⊙ silu(o_gate)            per head over dv (fla's FusedRMSNormGated)
//   y        = out_proj(o)
//
// Every stage is an op (ssm::linear, ssm::causal_conv1d channel-last, ssm::delta_rule / ssm::delta_rule_step,
// ssm::rms_norm through head_mixer.hpp); the layer computes only the elementwise β and g. forward runs a whole sequence (the
// chunked delta rule); step continues a state over the next t tokens (t = 1: the one-token update); backward gives
// the input's and every parameter's gradient (the forward recomputed, ssm::delta_rule_backward for the recurrence).
// CPU tensors of T = float or double.
//
// Glossary, with h = heads, dk = head_dim, dv = head_v_dim, C = h (2 dk + dv):
//   proj   in_proj(x): q (h dk), k (h dk), v (h dv), β logits (h), [a (h)], o_gate (h dv)   (b, l, proj_dim)
//   qkv    silu(conv(proj[:, :, :C]))                                                     (b, l, C)
//   o      the delta rule's output, then normalized and gated                             (b, l, h, dv)
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
#include "ssm/layers/conv1d.hpp"
#include "ssm/layers/head_mixer.hpp"
#include "ssm/layers/layer_cache.hpp"
#include "ssm/ops/causal_conv1d.hpp"
#include "ssm/ops/delta_rule.hpp"

namespace ssm::layers {

/// Sizes and options of one DeltaNet / Gated DeltaNet layer (fla's argument names in comments).
struct DeltaNetConfig {
  index_t d_model = 0;      // hidden_size
  index_t heads = 4;        // num_heads, h
  index_t head_dim = 0;     // dk; 0: d_model / heads
  index_t head_v_dim = 0;   // dv; 0: dk (GatedDeltaNet's expand_v = 2 is head_v_dim = 2 dk)
  index_t d_conv = 4;       // conv_size (>= 2)
  bool gated = false;       // Gated DeltaNet: a decay α_t = exp(g_t) per head and step
  double norm_eps = 1e-5;   // norm_eps of the output RMSNorm
  index_t chunk_size = 64;  // the delta rule's chunk in forward

  index_t dk() const { return head_dim > 0 ? head_dim : (heads > 0 ? d_model / heads : 0); }
  index_t dv() const { return head_v_dim > 0 ? head_v_dim : dk(); }
  index_t conv_dim() const { return heads * (2 * dk() + dv()); }  // C: the q, k, v channels
  index_t beta_col() const { return conv_dim(); }                  // where the β logits start in proj
  index_t a_col() const { return conv_dim() + heads; }             // the gate's a (gated only)
  index_t gate_col() const { return conv_dim() + heads * (gated ? 2 : 1); }  // o_gate
  index_t proj_dim() const { return gate_col() + heads * dv(); }

  /// Throws ssm::Error naming the first invalid field.
  void validate(const char* op = "DeltaNetConfig") const {
    Checker c(op);
    c.require(d_model >= 1, "d_model", "must be >= 1, got ", d_model);
    c.require(heads >= 1, "heads", "must be >= 1, got ", heads);
    c.require(head_dim >= 0 && dk() >= 1, "head_dim", "must be >= 1 (0: d_model / heads = ", d_model / heads,
              "), got ", head_dim);
    c.require(head_v_dim >= 0, "head_v_dim", "must be >= 0 (0: head_dim), got ", head_v_dim);
    c.require(d_conv >= 2, "d_conv", "must be >= 2, got ", d_conv);
    c.require(std::isfinite(norm_eps) && norm_eps > 0, "norm_eps", "must be finite and > 0, got ", norm_eps);
    c.require(chunk_size >= 1, "chunk_size", "must be >= 1, got ", chunk_size);
  }
};

/// Parameters (row-major; PyTorch's (out, in) layout for the projections).
template <class T>
struct DeltaNetParams {
  std::vector<T> in_proj;      // (proj_dim, d_model): q_proj, k_proj, v_proj, b_proj, [a_proj], g_proj stacked
  std::vector<T> conv_weight;  // (C, d_conv): q_conv1d, k_conv1d, v_conv1d stacked
  std::vector<T> A_log;        // (h), gated only
  std::vector<T> dt_bias;      // (h), gated only
  std::vector<T> norm_weight;  // (dv): o_norm
  std::vector<T> out_proj;     // (d_model, h dv): o_proj

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
    f("in_proj", p.in_proj), f("conv_weight", p.conv_weight), f("A_log", p.A_log), f("dt_bias", p.dt_bias);
    f("norm_weight", p.norm_weight), f("out_proj", p.out_proj);
  }
};

/// The decoding state: conv_state (b, d_conv − 1, C) (the last inputs of the short conv, oldest first) and
/// ssm_state = S (b, h, dk, dv), of the layer's dtype, on the CPU (the value semantics: ConvSsmCache).
struct DeltaNetState : ConvSsmCache {
  static DeltaNetState zeros(const DeltaNetConfig& cfg, index_t b, DType dtype) {
    DeltaNetState s;
    s.set_zeros(b, {b, cfg.d_conv - 1, cfg.conv_dim()}, {b, cfg.heads, cfg.dk(), cfg.dv()}, dtype, Device::cpu());
    return s;
  }
};

template <class T>
class DeltaNetLayer {
 public:
  using State = DeltaNetState;

  DeltaNetLayer(const DeltaNetConfig& cfg, DeltaNetParams<T> params) : cfg_(cfg), p_(std::move(params)) {
    cfg_.validate("DeltaNetLayer");
    check_sizes("DeltaNetLayer");
    for (T a : p_.A_log) Checker("DeltaNetLayer").require(std::isfinite(static_cast<double>(a)), "A_log", "must be finite, got ", a);
    for (T a : p_.dt_bias) Checker("DeltaNetLayer").require(std::isfinite(static_cast<double>(a)), "dt_bias", "must be finite, got ", a);
  }

  /// fla's initialization: projections and conv uniform in ±1/√fan_in; A = exp(A_log) uniform in [1, 16];
  /// dt_bias the inverse softplus of Δ log-uniform in [0.001, 0.1]; the norm weight 1.
  static DeltaNetLayer init(const DeltaNetConfig& cfg, std::uint64_t seed) {
    cfg.validate("DeltaNetLayer::init");
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    auto uniform = [&](index_t count, double fan_in) { return head_mixer::uniform_fan_in<T>(rng, count, fan_in); };
    const index_t dm = cfg.d_model, h = cfg.heads;
    DeltaNetParams<T> p;
    p.in_proj = uniform(cfg.proj_dim() * dm, static_cast<double>(dm));
    p.conv_weight = uniform(cfg.conv_dim() * cfg.d_conv, static_cast<double>(cfg.d_conv));
    if (cfg.gated)
      for (index_t i = 0; i < h; ++i) {
        p.A_log.push_back(static_cast<T>(std::log(1 + 15 * unit(rng))));
        const double Delta = std::exp(std::log(0.001) + unit(rng) * (std::log(0.1) - std::log(0.001)));
        p.dt_bias.push_back(static_cast<T>(Delta + std::log(-std::expm1(-Delta))));  // softplus⁻¹(Δ)
      }
    p.norm_weight.assign(static_cast<std::size_t>(cfg.dv()), T(1));
    p.out_proj = uniform(dm * h * cfg.dv(), static_cast<double>(h * cfg.dv()));
    return DeltaNetLayer(cfg, std::move(p));
  }

  index_t d_model() const { return cfg_.d_model; }
  const DeltaNetConfig& config() const { return cfg_; }
  const DeltaNetParams<T>& params() const { return p_; }
  /// The parameters, to update in place (an optimizer's step: train::ParamTree::add_all(prefix, layer.params())).
  DeltaNetParams<T>& params() { return p_; }
  /// CPU threads for the projections and the delta rule (0: by the amount of work).
  void set_threads(int threads) { threads_ = threads; }

  /// A zero state for b sequences.
  State init_state(index_t b) const {
    Checker("DeltaNetLayer::init_state").require(b >= 1, "b", "must be >= 1, got ", b);
    return State::zeros(cfg_, b, dtype_of<T>());
  }

  /// x (b, l, d_model) contiguous → (b, l, d_model), from a zero state.
  Tensor forward(const TensorView& x) const { return run("DeltaNetLayer::forward", x, nullptr); }

  /// The next t tokens x (b, t, d_model) → (b, t, d_model), continuing from `state` and updating it.
  Tensor step(const TensorView& x, State& state) const { return run("DeltaNetLayer::step", x, &state); }

  using Grads = head_mixer::MixerGrads<T, DeltaNetParams<T>>;

  /// ∂L/∂x and ∂L/∂(every parameter) for grad_out = ∂L/∂y (b, l, d_model) contiguous, y = forward(x) (from a zero
  /// state). The forward is recomputed; the stages then run in reverse: out_proj, the gate and the RMSNorm
  /// (head_mixer::normalize_gate_project_backward), the delta rule's chunked backward (its L2 normalization and
  /// scale included), β's sigmoid and the gate g, the short convolution with its SiLU, in_proj.
  Grads backward(const TensorView& x, const TensorView& grad_out) const {
    Checker c("DeltaNetLayer::backward");
    check_sizes(c.op().c_str());
    head_mixer::check_input<T>(c, x, cfg_.d_model);
    head_mixer::check_grad_out<T>(c, grad_out, x);
    const index_t b = x.size(0), l = x.size(1), h = cfg_.heads, dk = cfg_.dk(), dv = cfg_.dv();
    const index_t C = cfg_.conv_dim(), P = cfg_.proj_dim(), dm = cfg_.d_model, rows = b * l;
    Grads gr;
    gr.params = head_mixer::zeros_like(p_);
    DeltaNetParams<T>& gp = gr.params;
    gr.grad_x.assign(static_cast<std::size_t>(rows * dm), T(0));
    if (rows == 0) return gr;
    // ---- the forward again ----
    const Tensor proj = in_projection(x);                   // (b, l, P)
    const Tensor qkv = short_conv(proj, nullptr);           // (b, l, C)
    const Tensor beta = betas(proj), g = log_decays(proj);  // (b, l, h)
    const DeltaRuleInputs in = rule_inputs(qkv, beta, g, b, l);
    const DeltaRuleOptions opt = rule_options();
    Tensor o = Tensor::empty({b, l, h, dv}, dtype_of<T>());  // (b, l, h, dv) the delta rule's output
    delta_rule_into(in, o, std::nullopt, opt);
    // ---- output path: ∂L/∂o, and o_gate's columns of ∂L/∂proj ----
    std::vector<T> grad_proj(static_cast<std::size_t>(rows * P), T(0));  // (b, l, P)
    Tensor grad_o = Tensor::empty({b, l, h, dv}, dtype_of<T>());          // (b, l, h, dv)
    head_mixer::normalize_gate_project_backward<T>(
        o.data_as<const T>(), p_.norm_weight, cfg_.norm_eps, part(proj, cfg_.gate_col(), {rows, h * dv}, {P, 1}),
        p_.out_proj, grad_out.data_as<const T>(), rows, h, dv, dm, grad_o.data_as<T>(),
        grad_proj.data() + cfg_.gate_col(), P, gp.norm_weight, gp.out_proj);
    // ---- the delta rule ----
    const DeltaRuleGrads rg = delta_rule_backward(in, grad_o.view(), std::nullopt, opt);
    std::vector<T> grad_qkv(static_cast<std::size_t>(rows * C));  // (b, l, C) ∂L/∂ silu(conv(·))
    for (index_t r = 0; r < rows; ++r) {
      std::copy_n(rg.grad_q.data_as<T>() + r * h * dk, h * dk, grad_qkv.data() + r * C);
      std::copy_n(rg.grad_k.data_as<T>() + r * h * dk, h * dk, grad_qkv.data() + r * C + h * dk);
      std::copy_n(rg.grad_v.data_as<T>() + r * h * dv, h * dv, grad_qkv.data() + r * C + 2 * h * dk);
    }
    // ---- β = sigmoid(logits): dβ = β (1 − β); g = −exp(A_log) softplus(a + dt_bias) ----
    const T* pr = proj.data_as<T>();
    for (index_t r = 0; r < rows; ++r)
      for (index_t i = 0; i < h; ++i) {
        const T bt = beta.data_as<T>()[r * h + i];
        grad_proj[r * P + cfg_.beta_col() + i] = rg.grad_beta.data_as<T>()[r * h + i] * bt * (1 - bt);
        if (!cfg_.gated) continue;
        const T dg = rg.grad_g.data_as<T>()[r * h + i];
        const T da = -dg * std::exp(p_.A_log[i]) * scalar::softplus_grad(pr[r * P + cfg_.a_col() + i] + p_.dt_bias[i]);
        grad_proj[r * P + cfg_.a_col() + i] = da;
        gp.dt_bias[i] += da;
        gp.A_log[i] += dg * g.data_as<T>()[r * h + i];  // ∂g/∂A_log = g
      }
    // ---- the short convolution and its SiLU, per sequence (time-major, layers/conv1d.hpp) ----
    const Conv1dArgs<T> conv{l, C, cfg_.d_conv, p_.conv_weight.data(), static_cast<const T*>(nullptr), true};
    std::vector<T> conv_in(static_cast<std::size_t>(l * C)), grad_conv_in(static_cast<std::size_t>(l * C));  // (l, C)
    for (index_t bi = 0; bi < b; ++bi) {
      for (index_t t = 0; t < l; ++t) std::copy_n(pr + (bi * l + t) * P, C, conv_in.data() + t * C);
      conv1d_backward(conv, conv_in.data(), static_cast<const T*>(nullptr), grad_qkv.data() + bi * l * C,
                      static_cast<const T*>(nullptr), grad_conv_in.data(), static_cast<T*>(nullptr),
                      gp.conv_weight.data(), static_cast<T*>(nullptr));
      for (index_t t = 0; t < l; ++t) std::copy_n(grad_conv_in.data() + t * C, C, grad_proj.data() + (bi * l + t) * P);
    }
    // ---- in_proj ----
    linear_backward(x.data_as<const T>(), p_.in_proj.data(), grad_proj.data(), gr.grad_x.data(), gp.in_proj.data(),
                    static_cast<T*>(nullptr), rows, dm, P);
    return gr;
  }

 private:
  /// Every parameter vector of the config's size (checked again by each call: params() may have been edited).
  void check_sizes(const char* op) const {
    const index_t h = cfg_.heads;
    auto size = [&](const char* name, const std::vector<T>& v, index_t n) {
      Checker(op).require(static_cast<index_t>(v.size()) == n, name, "expected ", n, " elements, got ", v.size());
    };
    size("in_proj", p_.in_proj, cfg_.proj_dim() * cfg_.d_model);
    size("conv_weight", p_.conv_weight, cfg_.conv_dim() * cfg_.d_conv);
    size("A_log", p_.A_log, cfg_.gated ? h : 0);
    size("dt_bias", p_.dt_bias, cfg_.gated ? h : 0);
    size("norm_weight", p_.norm_weight, cfg_.dv());
    size("out_proj", p_.out_proj, cfg_.d_model * h * cfg_.dv());
  }

  // The forward's stages, shared by run() and backward().

  /// proj (b, l, P) = in_proj(x).
  Tensor in_projection(const TensorView& x) const {
    const index_t b = x.size(0), l = x.size(1), P = cfg_.proj_dim(), dm = cfg_.d_model;
    Tensor proj = Tensor::empty({b, l, P}, dtype_of<T>());
    project(TensorView::of(p_.in_proj.data(), {P, dm}), x.reshape({b * l, dm}), std::nullopt,
            proj.view().reshape({b * l, P}), threads_);
    return proj;
  }

  /// qkv (b, l, C) = silu(conv(proj[:, :, :C])), continuing (and updating) the state's conv_state when given.
  Tensor short_conv(const Tensor& proj, State* state) const {
    const index_t b = proj.size(0), l = proj.size(1), C = cfg_.conv_dim(), P = cfg_.proj_dim(), w = cfg_.d_conv;
    Tensor qkv = Tensor::empty({b, l, C}, dtype_of<T>());
    CausalConv1dInputs ci;
    ci.x = part(proj, 0, {b, l, C}, {l * P, P, 1});
    ci.weight = TensorView::of(p_.conv_weight.data(), {C, w});
    ci.silu = true;
    ci.channel_last = true;
    ci.num_threads = threads_;
    Tensor unused;  // (b, w − 1, C): the final conv state when no state is carried
    if (state) {
      ci.initial_state = state->conv_state.view();
    } else {
      unused = Tensor::empty({b, w - 1, C}, dtype_of<T>());
    }
    causal_conv1d_into(ci, qkv, state ? state->conv_state.view() : unused.view());
    return qkv;
  }

  /// β (b, l, h) = sigmoid(proj's β logits).
  Tensor betas(const Tensor& proj) const {
    const index_t rows = proj.size(0) * proj.size(1), h = cfg_.heads, P = cfg_.proj_dim();
    Tensor beta = Tensor::empty({proj.size(0), proj.size(1), h}, dtype_of<T>());
    const T* pr = proj.data_as<T>();
    for (index_t r = 0; r < rows; ++r)
      for (index_t i = 0; i < h; ++i) beta.data_as<T>()[r * h + i] = scalar::sigmoid(pr[r * P + cfg_.beta_col() + i]);
    return beta;
  }

  /// Gated DeltaNet: g (b, l, h) = −exp(A_log) softplus(a + dt_bias) <= 0; undefined for DeltaNet.
  Tensor log_decays(const Tensor& proj) const {
    if (!cfg_.gated) return Tensor();
    const index_t rows = proj.size(0) * proj.size(1), h = cfg_.heads, P = cfg_.proj_dim();
    Tensor g = Tensor::empty({proj.size(0), proj.size(1), h}, dtype_of<T>());
    const T* pr = proj.data_as<T>();
    for (index_t r = 0; r < rows; ++r)
      for (index_t i = 0; i < h; ++i)
        g.data_as<T>()[r * h + i] = -std::exp(p_.A_log[i]) * scalar::softplus(pr[r * P + cfg_.a_col() + i] + p_.dt_bias[i]);
    return g;
  }

  DeltaRuleOptions rule_options() const {
    DeltaRuleOptions opt;
    opt.l2_normalize = true;
    opt.scale = 1.0 / std::sqrt(static_cast<double>(cfg_.dk()));
    opt.chunk_size = cfg_.chunk_size;
    opt.threads = threads_;
    return opt;
  }

  /// q, k, v: views of qkv (b, l, C); β and g as given (g undefined: DeltaNet).
  DeltaRuleInputs rule_inputs(const Tensor& qkv, const Tensor& beta, const Tensor& g, index_t b, index_t l) const {
    const index_t h = cfg_.heads, dk = cfg_.dk(), dv = cfg_.dv(), C = cfg_.conv_dim();
    DeltaRuleInputs in;
    in.q = part(qkv, 0, {b, l, h, dk}, {l * C, C, dk, 1});
    in.k = part(qkv, h * dk, {b, l, h, dk}, {l * C, C, dk, 1});
    in.v = part(qkv, 2 * h * dk, {b, l, h, dv}, {l * C, C, dv, 1});
    in.beta = beta.view();
    if (g.defined()) in.g = g.view();
    return in;
  }

  Tensor run(const char* op, const TensorView& x, State* state) const {
    Checker c(op);
    check_sizes(op);
    head_mixer::check_input<T>(c, x, cfg_.d_model);
    const index_t b = x.size(0), l = x.size(1), h = cfg_.heads, dk = cfg_.dk(), dv = cfg_.dv();
    const index_t C = cfg_.conv_dim(), P = cfg_.proj_dim(), dm = cfg_.d_model, rows = b * l, w = cfg_.d_conv;
    if (state)
      c.require(state->b == b && state->matches({b, w - 1, C}, {b, h, dk, dv}, dtype_of<T>(), Device::cpu()), "state",
                "expected conv_state (", b, ", ", w - 1, ", ", C, ") and ssm_state (", b, ", ", h, ", ", dk, ", ", dv,
                ") of dtype ", name(dtype_of<T>()), " on the CPU (init_state(", b, ")), got ", state->describe());
    const DType dt = dtype_of<T>();
    Tensor out = Tensor::empty({b, l, dm}, dt);  // (b, l, d_model)
    if (rows == 0) return out;

    const Tensor proj = in_projection(x);         // (b, l, P)
    const Tensor qkv = short_conv(proj, state);   // (b, l, C): silu(conv(q k v))
    const Tensor beta = betas(proj), g = log_decays(proj);  // (b, l, h)
    Tensor o = Tensor::empty({b, l, h, dv}, dt);  // (b, l, h, dv)
    const DeltaRuleOptions opt = rule_options();
    if (state && l == 1) {  // one token: the decode step updates S in place
      std::optional<TensorView> g1;
      if (cfg_.gated) g1 = g.view().reshape({b, h});
      delta_rule_step(part(qkv, 0, {b, h, dk}, {C, dk, 1}), part(qkv, h * dk, {b, h, dk}, {C, dk, 1}),
                      part(qkv, 2 * h * dk, {b, h, dv}, {C, dv, 1}), beta.view().reshape({b, h}), g1,
                      state->ssm_state.view(), o.view().reshape({b, h, dv}), opt);
    } else {
      DeltaRuleInputs in = rule_inputs(qkv, beta, g, b, l);
      Tensor last;  // (b, h, dk, dv): the final state, copied over the initial one afterwards
      if (state) {
        in.initial_state = state->ssm_state.view();
        last = Tensor::empty({b, h, dk, dv}, dt);
      }
      delta_rule_into(in, o, optional_view(last), opt);
      if (state) copy(state->ssm_state, last);
    }
    // o = RMSNorm over dv per head (weight o_norm) ⊙ silu(o_gate), then out_proj
    head_mixer::normalize_gate_project<T>(o.view().reshape({rows, h, dv}), p_.norm_weight, cfg_.norm_eps,
                                          part(proj, cfg_.gate_col(), {rows, h * dv}, {P, 1}), p_.out_proj,
                                          out.view().reshape({rows, dm}), threads_);
    return out;
  }

  DeltaNetConfig cfg_;
  DeltaNetParams<T> p_;
  int threads_ = 0;
};

}  // namespace ssm::layers
