// A sparse mixture of SwiGLU experts as a trainable layer of a stack (Shazeer et al. 2017; Switch Transformer, Fedus
// et al. 2022; Mixtral; Jamba's feed-forward): per token, a router picks the top k of E experts by softmax probability
// and the output is their weighted sum, the k weights renormalized over the chosen experts or not,
//   y_t = Σ_{e ∈ topk(t)} w_{t,e} W_down[e] (silu(W_gate[e] x_t) ⊙ W_up[e] x_t).
// Parameters are T vectors under transformers' fused-expert names: router.weight (E, H), experts.gate_up_proj
// (E, 2 I, H) (gate rows first), experts.down_proj (E, H, I). Forward and backward are the ssm::moe / moe_backward op
// over them; with aux_loss_coef > 0 the backward also adds the gradient of aux_loss_coef × the layer's load-balancing
// loss (Switch Transformer's, one per layer: ssm::moe_load_balancing_loss over this layer's router logits). The layer
// works token by token, so its decoding state is empty. HybridBlock (layers/hybrid_block.hpp) is the checkpoint models'
// form of the same feed-forward, over weight matrices.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/layers/head_mixer.hpp"
#include "ssm/ops/moe.hpp"

namespace ssm::layers {

struct MoeLayerConfig {
  index_t d_model = 0;          // H
  index_t d_ff = 0;             // I, each expert's hidden width
  index_t experts = 8;          // E
  index_t top_k = 2;            // k
  bool normalize_topk = false;  // Mixtral renormalizes the k weights, Jamba does not
  double aux_loss_coef = 0.0;   // the load-balancing loss's weight in the backward (Jamba: 0.001); 0: none

  void validate(const char* op = "MoeLayerConfig") const {
    Checker c(op);
    c.require(d_model >= 1, "d_model", "must be >= 1, got ", d_model);
    c.require(d_ff >= 1, "d_ff", "must be >= 1, got ", d_ff);
    c.require(experts >= 1, "experts", "must be >= 1, got ", experts);
    c.require(top_k >= 1 && top_k <= experts, "top_k", "must be in [1, experts = ", experts, "], got ", top_k);
    c.require(std::isfinite(aux_loss_coef) && aux_loss_coef >= 0, "aux_loss_coef", "must be finite and >= 0, got ",
              aux_loss_coef);
  }
};

template <class T>
struct MoeLayerParams {
  std::vector<T> router;   // (E, H)
  std::vector<T> gate_up;  // (E, 2 I, H): gate rows [0, I), up rows [I, 2 I)
  std::vector<T> down;     // (E, H, I)

  template <class F>
  void for_each(F&& f) {
    f("router.weight", router), f("experts.gate_up_proj", gate_up), f("experts.down_proj", down);
  }
  template <class F>
  void for_each(F&& f) const {
    f("router.weight", router), f("experts.gate_up_proj", gate_up), f("experts.down_proj", down);
  }
};

/// The (empty) decoding state: the layer reads only the current token.
struct MoeLayerState {
  index_t b = 0;
};

template <class T>
class MoeLayer {
 public:
  using State = MoeLayerState;
  using Grads = head_mixer::MixerGrads<T, MoeLayerParams<T>>;

  MoeLayer(const MoeLayerConfig& cfg, MoeLayerParams<T> p) : cfg_(cfg), p_(std::move(p)) {
    cfg_.validate("MoeLayer");
    check_params("MoeLayer", /*finite=*/true);
  }
  /// The router and the experts' projections uniform in ±1/√fan_in.
  static MoeLayer init(const MoeLayerConfig& cfg, std::uint64_t seed) {
    cfg.validate("MoeLayer::init");
    std::mt19937_64 rng(seed);
    const index_t H = cfg.d_model, I = cfg.d_ff, E = cfg.experts;
    MoeLayerParams<T> p;
    p.router = head_mixer::uniform_fan_in<T>(rng, E * H, double(H));
    p.gate_up = head_mixer::uniform_fan_in<T>(rng, E * 2 * I * H, double(H));
    p.down = head_mixer::uniform_fan_in<T>(rng, E * H * I, double(I));
    return MoeLayer(cfg, std::move(p));
  }

  const MoeLayerConfig& config() const { return cfg_; }
  index_t d_model() const { return cfg_.d_model; }
  const MoeLayerParams<T>& params() const { return p_; }
  /// The parameters, to update in place (sizes are checked again at every call, values at construction).
  MoeLayerParams<T>& params() { return p_; }
  void set_threads(int n) { threads_ = n; }

  State init_state(index_t b) const {
    Checker("MoeLayer::init_state").require(b >= 1, "b", "must be >= 1, got ", b);
    return State{b};
  }
  /// x (b, l, H) contiguous T on the CPU → (b, l, H).
  Tensor forward(const TensorView& x) const {
    check("MoeLayer::forward", x);
    Tensor y = Tensor::empty(x.shape(), dtype_of<T>());
    moe_into(inputs(x), y.view().reshape({rows(x), cfg_.d_model}), std::nullopt, options());
    return y;
  }
  /// The next t tokens: the forward (nothing is carried between tokens).
  Tensor step(const TensorView& x, State& state) const {
    check("MoeLayer::step", x);
    Checker("MoeLayer::step")
        .require(state.b == x.size(0), "state", "was made for ", state.b, " sequences, x has ", x.size(0));
    return forward(x);
  }
  /// ∂L/∂x and every parameter's gradient for grad_out = ∂L/∂y (b, l, H), y = forward(x), with L including
  /// aux_loss_coef × this layer's load-balancing loss when that is > 0 (its gradient through the router logits).
  Grads backward(const TensorView& x, const TensorView& grad_out) const {
    check("MoeLayer::backward", x);
    head_mixer::check_grad_out<T>(Checker("MoeLayer::backward"), grad_out, x);
    const index_t t = rows(x), H = cfg_.d_model, E = cfg_.experts;
    std::optional<TensorView> grad_logits;
    Tensor g_logits;
    if (cfg_.aux_loss_coef > 0 && t > 0) {
      const Tensor logits = router_logits(x);
      const MoeAuxLoss aux = moe_load_balancing_loss({logits.view()}, cfg_.top_k, std::nullopt, /*with_grad=*/true);
      g_logits = Tensor::empty({t, E}, dtype_of<T>());
      for (index_t i = 0; i < t * E; ++i)
        g_logits.data_as<T>()[i] = static_cast<T>(cfg_.aux_loss_coef * aux.grad.data_as<double>()[i]);
      grad_logits = g_logits.view();
    }
    const MoeGrads mg = moe_backward(inputs(x), grad_out.reshape({t, H}), grad_logits, options());
    Grads g;
    auto values = [](const Tensor& v) { return v.to_vector<T>(); };
    g.grad_x = values(mg.grad_x);
    g.params.router = values(mg.grad_router), g.params.gate_up = values(mg.grad_w_gate_up);
    g.params.down = values(mg.grad_w_down);
    return g;
  }
  /// aux_loss_coef × the load-balancing loss of the router's choices for x (what backward adds the gradient of).
  double aux_loss(const TensorView& x) const {
    check("MoeLayer::aux_loss", x);
    if (cfg_.aux_loss_coef == 0 || rows(x) == 0) return 0.0;
    const Tensor logits = router_logits(x);
    return cfg_.aux_loss_coef * moe_load_balancing_loss({logits.view()}, cfg_.top_k).loss;
  }

 private:
  // The router's logits x routerᵀ (t, E): what the load-balancing loss reads.
  Tensor router_logits(const TensorView& x) const {
    const index_t t = rows(x), H = cfg_.d_model, E = cfg_.experts;
    Tensor logits = Tensor::empty({t, E}, dtype_of<T>());
    project(TensorView::of(p_.router.data(), {E, H}), x.reshape({t, H}), std::nullopt, logits, threads_);
    return logits;
  }
  static index_t rows(const TensorView& x) { return x.size(0) * x.size(1); }
  MoeInputs inputs(const TensorView& x) const {
    const index_t H = cfg_.d_model, I = cfg_.d_ff, E = cfg_.experts;
    MoeInputs in;
    in.x = x.reshape({rows(x), H});
    in.router = TensorView::of(p_.router.data(), {E, H});
    in.w_gate_up = TensorView::of(p_.gate_up.data(), {E, 2 * I, H});
    in.w_down = TensorView::of(p_.down.data(), {E, H, I});
    return in;
  }
  MoeOptions options() const {
    MoeOptions o;
    o.top_k = cfg_.top_k, o.normalize_topk = cfg_.normalize_topk, o.threads = threads_;
    return o;
  }
  // Each parameter's size (and, at construction, that every value is finite), by name.
  void check_params(const char* op, bool finite = false) const {
    const Checker c(op);
    const index_t H = cfg_.d_model, I = cfg_.d_ff, E = cfg_.experts;
    head_mixer::check_parameter(c, "router.weight", p_.router, E * H, finite);
    head_mixer::check_parameter(c, "experts.gate_up_proj", p_.gate_up, E * 2 * I * H, finite);
    head_mixer::check_parameter(c, "experts.down_proj", p_.down, E * H * I, finite);
  }
  void check(const char* op, const TensorView& x) const {
    check_params(op);
    head_mixer::check_input<T>(Checker(op), x, cfg_.d_model);
  }

  MoeLayerConfig cfg_;
  MoeLayerParams<T> p_;
  int threads_ = 0;
};

}  // namespace ssm::layers
