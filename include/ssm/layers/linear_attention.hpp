// The linear-attention layer (Katharopoulos et al. 2020, "Transformers are RNNs"), RetNet's multi-scale retention
// layer (Sun et al. 2023, "Retentive Network", §2.2) and the gated linear attention layer, GLA (Yang et al. 2024,
// "Gated Linear Attention Transformers with Hardware-Efficient Training", §4.4) as one sequence mixer over
// ssm::linear_attention (docs/linear_attention.md):
//
//   [q k v | o_gate] = in_proj(x)                    one projection, columns in that order (o_gate with output_gate)
//   g = logsigmoid(gate_up(gate_down(x)) + b) / τ    (b, l, h, dk), GLA only: α_t = exp(g_t) per key channel
//   o = linear_attention(q, k, v, g)                 φ, the normalizer, the scale and a fixed decay γ_h per head
//   o = RMSNorm_dv(o) · w  (output_norm)             per head over dv (RetNet's GroupNorm, as RMSNorm: no mean)
//   o = o ⊙ silu(o_gate)   (output_gate)             RetNet's swish gate
//   y = out_proj(o)
//
// LinearAttentionConfig::retnet(d_model, heads) is RetNet's layer: γ_h = 1 − 2^(−5−h), dv = 2 dk, scale dk^(−1/2),
// the norm and the gate, no normalizer (RetNet's xPos rotation of q and k is not applied). ::katharopoulos(d_model,
// heads) is the original: φ = elu + 1, the normalizer, no decay, no norm, no gate. ::gla(d_model, heads) is GLA's
// layer: dk = d_model / (2 h), dv = d_model / h, the low-rank gate (rank 16, τ = 16), the norm and the swish gate, no
// normalizer, no short convolution. Every stage is an op
// (ssm::linear, ssm::linear_attention / linear_attention_step, ssm::rms_norm), the output path in head_mixer.hpp.
// CPU tensors of T = float or double; forward, decoding steps, and backward (the input's and every parameter's
// gradient: the forward recomputed, ssm::linear_attention_backward for the recurrence).
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
#include "ssm/ops/linear_attention.hpp"

namespace ssm::layers {

struct LinearAttentionConfig {
  index_t d_model = 0;
  index_t heads = 4;          // h
  index_t head_dim = 0;       // dk; 0: d_model / heads
  index_t head_v_dim = 0;     // dv; 0: dk
  FeatureMap feature_map = FeatureMap::identity;
  bool normalize = false;     // divide by z_tᵀ q̃_t + eps (Katharopoulos)
  bool retention = false;     // the decay γ_h = 1 − 2^(−5−h) per head (RetNet)
  bool output_norm = false;   // RMSNorm over dv per head, weight (dv)
  bool output_gate = false;   // o ⊙ silu(o_gate)
  bool gated = false;         // GLA's data-dependent log gate per key channel
  index_t gate_rank = 16;     // GLA: gate_down (gate_rank, d_model), gate_up (h dk, gate_rank)
  double gate_normalizer = 16;  // GLA's τ: g = logsigmoid(·) / τ
  double norm_eps = 1e-5;
  index_t chunk_size = 64;    // the op's chunk in forward

  index_t dk() const { return head_dim > 0 ? head_dim : (heads > 0 ? d_model / heads : 0); }
  index_t dv() const { return head_v_dim > 0 ? head_v_dim : dk(); }
  index_t gate_col() const { return heads * (2 * dk() + dv()); }
  index_t proj_dim() const { return gate_col() + (output_gate ? heads * dv() : 0); }

  /// RetNet's multi-scale retention layer (no xPos).
  static LinearAttentionConfig retnet(index_t d_model, index_t heads) {
    LinearAttentionConfig c;
    c.d_model = d_model, c.heads = heads;
    c.head_v_dim = heads > 0 ? 2 * (d_model / heads) : 0;
    c.retention = c.output_norm = c.output_gate = true;
    return c;
  }
  /// GLA's layer (fla's defaults: expand_k 0.5, expand_v 1, low-rank gate 16, τ = 16, RMSNorm and swish gate).
  static LinearAttentionConfig gla(index_t d_model, index_t heads) {
    LinearAttentionConfig c;
    c.d_model = d_model, c.heads = heads;
    c.head_dim = heads > 0 ? d_model / 2 / heads : 0;
    c.head_v_dim = heads > 0 ? d_model / heads : 0;
    c.gated = c.output_norm = c.output_gate = true;
    return c;
  }
  /// Katharopoulos et al.'s linear attention: φ = elu + 1 and the normalizer.
  static LinearAttentionConfig katharopoulos(index_t d_model, index_t heads) {
    LinearAttentionConfig c;
    c.d_model = d_model, c.heads = heads;
    c.feature_map = FeatureMap::elu_plus_one, c.normalize = true;
    return c;
  }

  /// Throws ssm::Error naming the first invalid field.
  void validate(const char* op = "LinearAttentionConfig") const {
    Checker c(op);
    c.require(d_model >= 1, "d_model", "must be >= 1, got ", d_model);
    c.require(heads >= 1, "heads", "must be >= 1, got ", heads);
    c.require(head_dim >= 0 && dk() >= 1, "head_dim", "must be >= 1 (0: d_model / heads = ", d_model / heads,
              "), got ", head_dim);
    c.require(head_v_dim >= 0, "head_v_dim", "must be >= 0 (0: head_dim), got ", head_v_dim);
    c.require(std::isfinite(norm_eps) && norm_eps > 0, "norm_eps", "must be finite and > 0, got ", norm_eps);
    c.require(chunk_size >= 1, "chunk_size", "must be >= 1, got ", chunk_size);
    c.require(!gated || gate_rank >= 1, "gate_rank", "must be >= 1 with gated, got ", gate_rank);
    c.require(std::isfinite(gate_normalizer) && gate_normalizer > 0, "gate_normalizer", "must be finite and > 0, got ",
              gate_normalizer);
  }
};

/// Parameters (row-major; PyTorch's (out, in) layout).
template <class T>
struct LinearAttentionLayerParams {
  std::vector<T> in_proj;      // (proj_dim, d_model): q_proj, k_proj, v_proj, [g_proj] stacked
  std::vector<T> norm_weight;  // (dv) with output_norm, else empty
  std::vector<T> out_proj;     // (d_model, h dv)
  std::vector<T> gate_down;    // (gate_rank, d_model) with gated, else empty
  std::vector<T> gate_up;      // (h dk, gate_rank) with gated
  std::vector<T> gate_bias;    // (h dk) with gated

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
    f("in_proj", p.in_proj), f("norm_weight", p.norm_weight), f("out_proj", p.out_proj);
    f("gate_down", p.gate_down), f("gate_up", p.gate_up), f("gate_bias", p.gate_bias);
  }
};

/// The decoding state: S (b, h, dk, dv) and, with the normalizer, z (b, h, dk), of the layer's dtype.
struct LinearAttentionState {
  index_t b = 0;
  Tensor S, z;
};

template <class T>
class LinearAttentionLayer {
 public:
  using State = LinearAttentionState;

  LinearAttentionLayer(const LinearAttentionConfig& cfg, LinearAttentionLayerParams<T> params)
      : cfg_(cfg), p_(std::move(params)) {
    cfg_.validate("LinearAttentionLayer");
    check_sizes("LinearAttentionLayer");
  }

  /// Projections uniform in ±1/√fan_in (PyTorch's default bound), the norm weight 1.
  static LinearAttentionLayer init(const LinearAttentionConfig& cfg, std::uint64_t seed) {
    cfg.validate("LinearAttentionLayer::init");
    std::mt19937_64 rng(seed);
    auto uniform = [&](index_t count, double fan_in) { return head_mixer::uniform_fan_in<T>(rng, count, fan_in); };
    LinearAttentionLayerParams<T> p;
    p.in_proj = uniform(cfg.proj_dim() * cfg.d_model, static_cast<double>(cfg.d_model));
    if (cfg.output_norm) p.norm_weight.assign(static_cast<std::size_t>(cfg.dv()), T(1));
    p.out_proj = uniform(cfg.d_model * cfg.heads * cfg.dv(), static_cast<double>(cfg.heads * cfg.dv()));
    if (cfg.gated) {
      const index_t r = cfg.gate_rank, hk = cfg.heads * cfg.dk();
      p.gate_down = uniform(r * cfg.d_model, static_cast<double>(cfg.d_model));
      p.gate_up = uniform(hk * r, static_cast<double>(r));
      p.gate_bias = uniform(hk, static_cast<double>(r));
    }
    return LinearAttentionLayer(cfg, std::move(p));
  }

  index_t d_model() const { return cfg_.d_model; }
  const LinearAttentionConfig& config() const { return cfg_; }
  const LinearAttentionLayerParams<T>& params() const { return p_; }
  /// The parameters, to update in place (an optimizer's step: train::ParamTree::add_all(prefix, layer.params())).
  LinearAttentionLayerParams<T>& params() { return p_; }
  void set_threads(int threads) { threads_ = threads; }

  /// A zero state for b sequences.
  State init_state(index_t b) const {
    Checker("LinearAttentionLayer::init_state").require(b >= 1, "b", "must be >= 1, got ", b);
    State s;
    s.b = b;
    s.S = Tensor::zeros({b, cfg_.heads, cfg_.dk(), cfg_.dv()}, dtype_of<T>());
    if (cfg_.normalize) s.z = Tensor::zeros({b, cfg_.heads, cfg_.dk()}, dtype_of<T>());
    return s;
  }

  /// x (b, l, d_model) contiguous → (b, l, d_model), from a zero state.
  Tensor forward(const TensorView& x) const { return run("LinearAttentionLayer::forward", x, nullptr); }

  /// The next t tokens x (b, t, d_model) → (b, t, d_model), continuing from `state` and updating it.
  Tensor step(const TensorView& x, State& state) const { return run("LinearAttentionLayer::step", x, &state); }

  using Grads = head_mixer::MixerGrads<T, LinearAttentionLayerParams<T>>;

  /// ∂L/∂x and ∂L/∂(every parameter) for grad_out = ∂L/∂y (b, l, d_model) contiguous, y = forward(x) (from a zero
  /// state). The forward is recomputed; the stages then run in reverse: out_proj, the gate and the norm
  /// (head_mixer::normalize_gate_project_backward), the recurrence's chunked backward (feature map, normalizer,
  /// decays and GLA's gate included), GLA's low-rank gate, in_proj.
  Grads backward(const TensorView& x, const TensorView& grad_out) const {
    Checker c("LinearAttentionLayer::backward");
    check_sizes(c.op().c_str());
    head_mixer::check_input<T>(c, x, cfg_.d_model);
    head_mixer::check_grad_out<T>(c, grad_out, x);
    const index_t b = x.size(0), l = x.size(1), h = cfg_.heads, dk = cfg_.dk(), dv = cfg_.dv();
    const index_t P = cfg_.proj_dim(), dm = cfg_.d_model, rows = b * l, hk = h * dk;
    Grads gr;
    gr.params = head_mixer::zeros_like(p_);
    LinearAttentionLayerParams<T>& gp = gr.params;
    gr.grad_x.assign(static_cast<std::size_t>(rows * dm), T(0));
    if (rows == 0) return gr;
    // ---- the forward again ----
    const Tensor proj = in_projection(x);  // (b, l, P)
    Tensor low, pre;                       // GLA: (b l, r) and (b l, h dk), the gate's hidden and pre-activation
    const Tensor g = log_gate(x, &low, &pre);
    const LinearAttentionInputs in = op_inputs(proj, g, b, l);
    const LinearAttentionOptions opt = op_options();
    Tensor o = Tensor::empty({b, l, h, dv}, dtype_of<T>());  // (b, l, h, dv) the recurrence's output
    linear_attention_into(in, o, std::nullopt, std::nullopt, opt);
    // ---- output path: ∂L/∂o, and o_gate's columns of ∂L/∂proj ----
    std::vector<T> grad_proj(static_cast<std::size_t>(rows * P), T(0));  // (b, l, P)
    Tensor grad_o = Tensor::empty({b, l, h, dv}, dtype_of<T>());          // (b, l, h, dv)
    std::optional<TensorView> gate;                                       // (rows, h dv) columns of proj
    if (cfg_.output_gate) gate = part(proj, cfg_.gate_col(), {rows, h * dv}, {P, 1});
    head_mixer::normalize_gate_project_backward<T>(o.data_as<const T>(), p_.norm_weight, cfg_.norm_eps, gate,
                                                   p_.out_proj, grad_out.data_as<const T>(), rows, h, dv, dm,
                                                   grad_o.data_as<T>(), grad_proj.data() + cfg_.gate_col(), P,
                                                   gp.norm_weight, gp.out_proj);
    // ---- the recurrence ----
    const LinearAttentionGrads rg = linear_attention_backward(in, grad_o.view(), std::nullopt, std::nullopt, opt);
    for (index_t r = 0; r < rows; ++r) {
      std::copy_n(rg.grad_q.data_as<T>() + r * hk, hk, grad_proj.data() + r * P);
      std::copy_n(rg.grad_k.data_as<T>() + r * hk, hk, grad_proj.data() + r * P + hk);
      std::copy_n(rg.grad_v.data_as<T>() + r * h * dv, h * dv, grad_proj.data() + r * P + 2 * hk);
    }
    // ---- in_proj ----
    linear_backward(x.data_as<const T>(), p_.in_proj.data(), grad_proj.data(), gr.grad_x.data(), gp.in_proj.data(),
                    static_cast<T*>(nullptr), rows, dm, P);
    // ---- GLA's gate: g = −softplus(−pre) / τ, dg/dpre = sigmoid(−pre) / τ; pre = gate_up(gate_down(x)) + bias ----
    if (cfg_.gated) {
      const index_t r = cfg_.gate_rank;
      const T inv_tau = static_cast<T>(1.0 / cfg_.gate_normalizer);
      std::vector<T> grad_pre(static_cast<std::size_t>(rows * hk));  // (b l, h dk)
      for (index_t i = 0; i < rows * hk; ++i)
        grad_pre[i] = rg.grad_log_gate.data_as<T>()[i] * scalar::sigmoid(-pre.data_as<T>()[i]) * inv_tau;
      std::vector<T> grad_low(static_cast<std::size_t>(rows * r)), grad_x_gate(static_cast<std::size_t>(rows * dm));
      linear_backward(low.data_as<const T>(), p_.gate_up.data(), grad_pre.data(), grad_low.data(), gp.gate_up.data(),
                      gp.gate_bias.data(), rows, r, hk);
      linear_backward(x.data_as<const T>(), p_.gate_down.data(), grad_low.data(), grad_x_gate.data(),
                      gp.gate_down.data(), static_cast<T*>(nullptr), rows, dm, r);
      for (std::size_t i = 0; i < grad_x_gate.size(); ++i) gr.grad_x[i] += grad_x_gate[i];
    }
    return gr;
  }

 private:
  /// Every parameter vector of the config's size (checked again by each call: params() may have been edited).
  void check_sizes(const char* op) const {
    auto size = [&](const char* name, const std::vector<T>& v, index_t n) {
      Checker(op).require(static_cast<index_t>(v.size()) == n, name, "expected ", n, " elements, got ", v.size());
    };
    size("in_proj", p_.in_proj, cfg_.proj_dim() * cfg_.d_model);
    size("norm_weight", p_.norm_weight, cfg_.output_norm ? cfg_.dv() : 0);
    size("out_proj", p_.out_proj, cfg_.d_model * cfg_.heads * cfg_.dv());
    const index_t r = cfg_.gated ? cfg_.gate_rank : 0, hk = cfg_.heads * cfg_.dk();
    size("gate_down", p_.gate_down, r * cfg_.d_model);
    size("gate_up", p_.gate_up, hk * r);
    size("gate_bias", p_.gate_bias, cfg_.gated ? hk : 0);
  }

  // The forward's stages, shared by run() and backward().

  LinearAttentionOptions op_options() const {
    LinearAttentionOptions o;
    o.feature_map = cfg_.feature_map, o.normalize = cfg_.normalize;
    o.scale = 1.0 / std::sqrt(static_cast<double>(cfg_.dk()));
    if (cfg_.retention) o.gamma = retention_gammas(cfg_.heads);
    o.chunk_size = cfg_.chunk_size, o.threads = threads_;
    return o;
  }

  /// proj (b, l, P) = in_proj(x).
  Tensor in_projection(const TensorView& x) const {
    const index_t b = x.size(0), l = x.size(1), P = cfg_.proj_dim(), dm = cfg_.d_model;
    Tensor proj = Tensor::empty({b, l, P}, dtype_of<T>());
    project(TensorView::of(p_.in_proj.data(), {P, dm}), x.reshape({b * l, dm}), std::nullopt,
            proj.view().reshape({b * l, P}), threads_);
    return proj;
  }

  /// GLA: g (b, l, h, dk) = logsigmoid(gate_up(gate_down(x)) + gate_bias) / τ = −softplus(−·) / τ <= 0 (undefined
  /// without the gate); low (b l, r) and pre (b l, h dk), the hidden and the pre-activation, when asked for.
  Tensor log_gate(const TensorView& x, Tensor* low_out = nullptr, Tensor* pre_out = nullptr) const {
    if (!cfg_.gated) return Tensor();
    const index_t b = x.size(0), l = x.size(1), rows = b * l, r = cfg_.gate_rank, dm = cfg_.d_model;
    const index_t hk = cfg_.heads * cfg_.dk();
    const DType dt = dtype_of<T>();
    Tensor low = Tensor::empty({rows, r}, dt);  // (b l, r)
    project(TensorView::of(p_.gate_down.data(), {r, dm}), x.reshape({rows, dm}), std::nullopt, low, threads_);
    Tensor g = Tensor::empty({b, l, cfg_.heads, cfg_.dk()}, dt);
    project(TensorView::of(p_.gate_up.data(), {hk, r}), low, TensorView::of(p_.gate_bias.data(), {hk}),
            g.view().reshape({rows, hk}), threads_);
    if (pre_out) {
      *pre_out = Tensor::empty(g.shape(), dt);
      copy(*pre_out, g);
    }
    if (low_out) *low_out = std::move(low);
    const T inv_tau = static_cast<T>(1.0 / cfg_.gate_normalizer);
    T* gv = g.data_as<T>();
    for (index_t i = 0; i < g.numel(); ++i) gv[i] = -scalar::softplus(-gv[i]) * inv_tau;
    return g;
  }

  /// q, k, v: views of proj (b, l, P); GLA's gate g when defined.
  LinearAttentionInputs op_inputs(const Tensor& proj, const Tensor& g, index_t b, index_t l) const {
    const index_t h = cfg_.heads, dk = cfg_.dk(), dv = cfg_.dv(), P = cfg_.proj_dim();
    LinearAttentionInputs in;
    if (g.defined()) in.log_gate = g.view();
    in.q = part(proj, 0, {b, l, h, dk}, {l * P, P, dk, 1});
    in.k = part(proj, h * dk, {b, l, h, dk}, {l * P, P, dk, 1});
    in.v = part(proj, 2 * h * dk, {b, l, h, dv}, {l * P, P, dv, 1});
    return in;
  }

  Tensor run(const char* op, const TensorView& x, State* state) const {
    Checker c(op);
    check_sizes(op);
    head_mixer::check_input<T>(c, x, cfg_.d_model);
    const index_t b = x.size(0), l = x.size(1), h = cfg_.heads, dk = cfg_.dk(), dv = cfg_.dv();
    const index_t P = cfg_.proj_dim(), dm = cfg_.d_model, rows = b * l;
    const DType dt = dtype_of<T>();
    if (state) {
      auto fits = [&](const Tensor& t, const Dims& shape) {
        return t.defined() && t.shape() == shape && t.dtype() == dt && t.view().is_contiguous() && t.device().is_cpu();
      };
      c.require(state->b == b && fits(state->S, {b, h, dk, dv}) && (!cfg_.normalize || fits(state->z, {b, h, dk})),
                "state", "expected S (", b, ", ", h, ", ", dk, ", ", dv, ")", cfg_.normalize ? " and z" : "",
                " of dtype ", name(dt), " on the CPU (init_state(", b, ")), got one for b = ", state->b);
    }
    Tensor out = Tensor::empty({b, l, dm}, dt);  // (b, l, d_model)
    if (rows == 0) return out;

    const Tensor proj = in_projection(x);  // (b, l, P)
    const Tensor g = log_gate(x);          // GLA: (b, l, h, dk)
    Tensor o = Tensor::empty({b, l, h, dv}, dt);  // (b, l, h, dv)
    const LinearAttentionOptions opt = op_options();
    if (state && l == 1) {  // one token: the decode step updates S (and z) in place
      linear_attention_step(part(proj, 0, {b, h, dk}, {P, dk, 1}), part(proj, h * dk, {b, h, dk}, {P, dk, 1}),
                            part(proj, 2 * h * dk, {b, h, dv}, {P, dv, 1}), state->S.view(), optional_view(state->z),
                            o.view().reshape({b, h, dv}), opt,
                            cfg_.gated ? std::optional<TensorView>(g.view().reshape({b, h, dk})) : std::nullopt);
    } else {
      LinearAttentionInputs in = op_inputs(proj, g, b, l);
      Tensor last_S, last_z;  // the final state, copied over the initial one afterwards
      if (state) {
        in.initial_state = state->S.view();
        last_S = Tensor::empty(state->S.shape(), dt);
        if (cfg_.normalize) {
          in.initial_normalizer = state->z.view();
          last_z = Tensor::empty(state->z.shape(), dt);
        }
      }
      linear_attention_into(in, o, optional_view(last_S), optional_view(last_z), opt);
      if (state) {
        copy(state->S, last_S);
        if (cfg_.normalize) copy(state->z, last_z);
      }
    }
    std::optional<TensorView> gate;  // (rows, h dv) columns of proj
    if (cfg_.output_gate) gate = part(proj, cfg_.gate_col(), {rows, h * dv}, {P, 1});
    head_mixer::normalize_gate_project<T>(o.view().reshape({rows, h, dv}), p_.norm_weight, cfg_.norm_eps, gate,
                                          p_.out_proj, out.view().reshape({rows, dm}), threads_);
    return out;
  }

  LinearAttentionConfig cfg_;
  LinearAttentionLayerParams<T> p_;
  int threads_ = 0;
};

}  // namespace ssm::layers
