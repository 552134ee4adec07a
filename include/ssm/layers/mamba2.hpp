// The Mamba-2 block (Dao & Gu 2024, "Transformers are SSMs"; mamba_ssm's modules/mamba2.py and transformers'
// Mamba2Mixer; docs/mamba2.md): in_proj → [z, xBC, dt] → causal depthwise conv1d over xBC → SiLU → split x, B, C →
// SSD (Δ = softplus(dt + dt_bias) clamped to the time-step limit, A = −exp(A_log) one per head, D skip) → gated
// RMSNorm within each of the n_groups groups (rmsnorm(y ⊙ silu(z)) · w, transformers' MambaRMSNormGated with
// norm_before_gate = False) → out_proj. Parallel forward over a sequence (the chunked SSD op), and step for one token
// with a per-layer cache (conv state, SSM state (b, h, p, n)) through the head form of ssm::selective_state_update.
//
// Every stage is an op on views of the block's time-major buffers (like MambaBlock): ssm::linear, ssm::causal_conv1d
// (channel-last), ssm::ssd / ssm::selective_state_update (whose z gate is the y ⊙ silu(z) of the gated norm),
// ssm::rms_norm once per group. Mamba2Block<T>: activations, arithmetic and parameters in T (float or double); with
// T = float, in_proj and out_proj may instead be held as f16 / bf16 weight matrices (Mamba2BlockMatrices, read by the
// linear op: how Mamba2LM keeps a 16-bit checkpoint). backward (CPU, parameters as T vectors) recomputes the forward
// and goes back through the same ops' backwards: out_proj, the gated norm per group, ssm::ssd_backward, the conv and
// SiLU, in_proj.
//
// Glossary (code name → paper / mamba2.py), with di = d_inner, h = heads, p = head_dim, g = n_groups, n = d_state:
//   zxbcdt   in_proj(u): z (di), xBC (di + 2 g n), dt (h)                         (b, l, 2 di + 2 g n + h)
//   xBC      silu(conv1d(xBC)): x (h, p), B (g, n), C (g, n)                      (b, l, di + 2 g n)
//   y        SSD output with D, gated by silu(z), then normalized per group       (b, l, di)
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/threads.hpp"
#include "ssm/layers/basic.hpp"
#include "ssm/layers/conv1d.hpp"
#include "ssm/layers/layer_cache.hpp"
#include "ssm/layers/weight.hpp"
#include "ssm/ops/causal_conv1d.hpp"
#include "ssm/ops/linear.hpp"
#include "ssm/ops/rms_norm.hpp"
#include "ssm/ops/selective_state_update.hpp"
#include "ssm/ops/ssd.hpp"

namespace ssm::layers {

/// Sizes and options of one Mamba-2 block (transformers' Mamba2Config names in comments).
struct Mamba2BlockConfig {
  index_t d_model = 0;    // hidden_size
  index_t d_state = 128;  // state_size, n
  index_t d_conv = 4;     // conv_kernel (>= 2)
  index_t expand = 2;
  index_t d_inner = 0;       // 0: expand · d_model
  index_t head_dim = 64;     // p; it must divide d_inner (heads h = d_inner / p)
  index_t n_groups = 1;      // g; it must divide h
  index_t chunk_size = 256;  // the SSD op's chunk in the parallel forward
  bool bias = false;         // use_bias: in_proj and out_proj biases
  bool conv_bias = true;     // use_conv_bias
  double norm_eps = 1e-5;    // layer_norm_epsilon of the gated RMSNorm
  std::pair<double, double> dt_limit{0.0, std::numeric_limits<double>::infinity()};  // time_step_limit

  index_t inner() const { return d_inner > 0 ? d_inner : expand * d_model; }
  bool operator==(const Mamba2BlockConfig&) const = default;
  index_t heads() const { return head_dim > 0 ? inner() / head_dim : 0; }
  index_t conv_dim() const { return inner() + 2 * n_groups * d_state; }                // xBC's width
  index_t proj_dim() const { return 2 * inner() + 2 * n_groups * d_state + heads(); }  // in_proj's output width
  /// Whether the limit can clamp (transformers' default (0, inf) cannot: softplus is > 0).
  bool has_dt_limit() const { return dt_limit.first > 0.0 || std::isfinite(dt_limit.second); }

  /// Throws ssm::Error naming the first invalid field.
  void validate(const char* op = "Mamba2BlockConfig") const {
    SSM_CHECK(d_model >= 1, op, ": d_model must be >= 1, got ", d_model);
    SSM_CHECK(d_state >= 1, op, ": d_state must be >= 1, got ", d_state);
    SSM_CHECK(d_conv >= 2, op, ": d_conv (the conv1d width) must be >= 2, got ", d_conv);
    SSM_CHECK(d_inner > 0 || expand >= 1, op, ": expand must be >= 1, got ", expand);
    SSM_CHECK(d_inner >= 0, op, ": d_inner must be >= 0 (0 = expand · d_model), got ", d_inner);
    SSM_CHECK(head_dim >= 1 && inner() % head_dim == 0, op, ": head_dim ", head_dim,
              " does not divide d_inner = ", inner());
    SSM_CHECK(n_groups >= 1 && heads() % n_groups == 0, op, ": n_groups ", n_groups,
              " does not divide the number of heads d_inner / head_dim = ", heads());
    SSM_CHECK(chunk_size >= 1, op, ": chunk_size must be >= 1, got ", chunk_size);
    check_positive(op, "norm_eps", norm_eps);
    SSM_CHECK(!std::isnan(dt_limit.first) && !std::isnan(dt_limit.second) && dt_limit.first <= dt_limit.second, op,
              ": dt_limit (time_step_limit) must be (min, max) with min <= max, got (", dt_limit.first, ", ",
              dt_limit.second, ")");
  }
};

/// Parameters of one block under transformers' names (Mamba2Mixer): vectors of T, the optional biases empty when the
/// config has none, and in_proj / out_proj empty when the block holds them as weight matrices (Mamba2BlockMatrices).
template <class T>
struct Mamba2BlockParams {
  std::vector<T> in_proj_weight;   // (2 di + 2 g n + h, d_model)
  std::vector<T> in_proj_bias;     // (2 di + 2 g n + h) or empty
  std::vector<T> conv_weight;      // (di + 2 g n, d_conv)   (PyTorch: (conv_dim, 1, d_conv))
  std::vector<T> conv_bias;        // (di + 2 g n) or empty
  std::vector<T> dt_bias;          // (h)
  std::vector<T> A_log;            // (h): A = −exp(A_log)
  std::vector<T> D;                // (h)
  std::vector<T> norm_weight;      // (di): the gated RMSNorm's weight ("norm.weight")
  std::vector<T> out_proj_weight;  // (d_model, di)
  std::vector<T> out_proj_bias;    // (d_model) or empty

  /// Calls f(name, vector, shape) for every parameter the config has (names: the suffixes of the Hugging Face tensor
  /// names after "mixer."), in_proj.weight and out_proj.weight included.
  template <class F>
  void for_each(const Mamba2BlockConfig& cfg, F&& f) {
    walk(*this, cfg, f);
  }
  template <class F>
  void for_each(const Mamba2BlockConfig& cfg, F&& f) const {
    walk(*this, cfg, f);
  }
  /// Calls f(name, vector) for every non-empty vector (what an optimizer walks: train::ParamTree).
  template <class F>
  void for_each(F&& f) {
    walk_nonempty(*this, f);
  }
  template <class F>
  void for_each(F&& f) const {
    walk_nonempty(*this, f);
  }
  /// Every parameter the config has, zero (the accumulators of backward).
  static Mamba2BlockParams zeros(const Mamba2BlockConfig& cfg) {
    Mamba2BlockParams p;
    p.for_each(cfg, [](const char*, std::vector<T>& v, const Dims& s) {
      v.assign(static_cast<std::size_t>(s.product()), T(0));
    });
    return p;
  }

 private:
  template <class Self, class F>
  static void walk_nonempty(Self& p, F& f) {
    using V = std::conditional_t<std::is_const_v<Self>, const std::vector<T>, std::vector<T>>;
    const std::pair<const char*, V*> all[] = {{"in_proj.weight", &p.in_proj_weight},
                                              {"in_proj.bias", &p.in_proj_bias},
                                              {"conv1d.weight", &p.conv_weight},
                                              {"conv1d.bias", &p.conv_bias},
                                              {"dt_bias", &p.dt_bias},
                                              {"A_log", &p.A_log},
                                              {"D", &p.D},
                                              {"norm.weight", &p.norm_weight},
                                              {"out_proj.weight", &p.out_proj_weight},
                                              {"out_proj.bias", &p.out_proj_bias}};
    for (const auto& [name, v] : all)
      if (!v->empty()) f(name, *v);
  }
  template <class Self, class F>
  static void walk(Self& p, const Mamba2BlockConfig& cfg, F& f) {
    const index_t di = cfg.inner(), dm = cfg.d_model, h = cfg.heads(), cd = cfg.conv_dim();
    f("in_proj.weight", p.in_proj_weight, Dims{cfg.proj_dim(), dm});
    if (cfg.bias) f("in_proj.bias", p.in_proj_bias, Dims{cfg.proj_dim()});
    f("conv1d.weight", p.conv_weight, Dims{cd, 1, cfg.d_conv});
    if (cfg.conv_bias) f("conv1d.bias", p.conv_bias, Dims{cd});
    f("dt_bias", p.dt_bias, Dims{h});
    f("A_log", p.A_log, Dims{h});
    f("D", p.D, Dims{h});
    f("norm.weight", p.norm_weight, Dims{di});
    f("out_proj.weight", p.out_proj_weight, Dims{dm, di});
    if (cfg.bias) f("out_proj.bias", p.out_proj_bias, Dims{dm});
  }
};

/// in_proj and out_proj held as WeightMatrix (f32, f16 or bf16) in place of the matching Mamba2BlockParams vectors,
/// which are then empty: how Mamba2LM keeps a checkpoint's 16-bit weights. An empty member: the params' vector is used.
struct Mamba2BlockMatrices {
  WeightMatrix in_proj, out_proj;

  /// The member for a params name ("in_proj.weight", "out_proj.weight"), or null for any other parameter.
  const WeightMatrix* find(const std::string& name) const {
    return name == "in_proj.weight" ? &in_proj : name == "out_proj.weight" ? &out_proj : nullptr;
  }
  WeightMatrix* find(const std::string& name) {
    return const_cast<WeightMatrix*>(static_cast<const Mamba2BlockMatrices*>(this)->find(name));
  }
  bool any() const { return !in_proj.empty() || !out_proj.empty(); }
  std::size_t nbytes() const { return in_proj.nbytes() + out_proj.nbytes(); }
};

/// Input and parameter gradients of Mamba2Block::backward.
template <class T>
struct Mamba2BlockGrads {
  std::vector<T> grad_u;        // (b, l, d_model)
  Mamba2BlockParams<T> params;  // ∂L/∂ each parameter, in the parameters' layout
};

/// Per-layer decoding cache of a Mamba2Block<T>: conv_state (b, d_conv - 1, di + 2 g n) T (the last inputs of the
/// conv over xBC) and ssm_state (b, h, p, n) T, on the block's device (the value semantics: ConvSsmCache).
template <class T = float>
struct Mamba2LayerCache : ConvSsmCache {
  static Mamba2LayerCache zeros(const Mamba2BlockConfig& cfg, index_t b, Device device = Device::cpu()) {
    Mamba2LayerCache c;
    c.set_zeros(b, {b, cfg.d_conv - 1, cfg.conv_dim()}, {b, cfg.heads(), cfg.head_dim, cfg.d_state}, dtype_of<T>(),
                device);
    return c;
  }
};

/// One Mamba-2 block with its parameters in T (float or double), on the CPU unless moved with to(). forward, step and
/// backward are const and may run concurrently (each call owns its scratch); params() hands the parameters out to be
/// changed (an optimizer's update) and is not.
template <class T>
class Mamba2Block {
 public:
  using value_type = T;
  using Cache = Mamba2LayerCache<T>;

  Mamba2Block() = default;
  Mamba2Block(const Mamba2BlockConfig& cfg, Mamba2BlockParams<T> params) : Mamba2Block(cfg, std::move(params), {}) {}

  /// A block whose in_proj / out_proj given in `matrices` (f32, f16 or bf16; T = float only) are held there instead of
  /// in `params`, whose vectors for them must then be empty. forward and step read them with f32 arithmetic; backward
  /// refuses such a block.
  Mamba2Block(const Mamba2BlockConfig& cfg, Mamba2BlockParams<T> params, Mamba2BlockMatrices matrices)
      : cfg_(cfg), p_(std::move(params)), m_(std::move(matrices)) {
    cfg_.validate("Mamba2Block");
    SSM_CHECK((std::is_same_v<T, float>) || !m_.any(), "Mamba2Block: weight matrices need T = float");
    check_params("Mamba2Block");
  }

  /// A block with mamba_ssm's initialization: PyTorch-default uniform projections and conv; A_log[i] = log(i + 1)
  /// (A in [1, h]); dt_bias the inverse softplus of Δ log-uniform in [0.001, 0.1]; D = 1; norm weight 1.
  static Mamba2Block init(const Mamba2BlockConfig& cfg, std::uint64_t seed) {
    cfg.validate("Mamba2Block::init");
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    auto uniform = [&](index_t count, double bound) {
      std::vector<T> v(static_cast<std::size_t>(count));
      for (auto& x : v) x = static_cast<T>((2 * unit(rng) - 1) * bound);
      return v;
    };
    const index_t di = cfg.inner(), dm = cfg.d_model, h = cfg.heads(), cd = cfg.conv_dim();
    Mamba2BlockParams<T> p;
    p.in_proj_weight = uniform(cfg.proj_dim() * dm, 1.0 / std::sqrt(double(dm)));
    if (cfg.bias) p.in_proj_bias = uniform(cfg.proj_dim(), 1.0 / std::sqrt(double(dm)));
    p.conv_weight = uniform(cd * cfg.d_conv, 1.0 / std::sqrt(double(cfg.d_conv)));
    if (cfg.conv_bias) p.conv_bias = uniform(cd, 1.0 / std::sqrt(double(cfg.d_conv)));
    for (index_t i = 0; i < h; ++i) {
      const double Delta = std::max(1e-4, std::exp(unit(rng) * (std::log(0.1) - std::log(0.001)) + std::log(0.001)));
      p.dt_bias.push_back(static_cast<T>(Delta + std::log(-std::expm1(-Delta))));  // inverse softplus
      p.A_log.push_back(static_cast<T>(std::log(double(i + 1))));
      p.D.push_back(T(1));
    }
    p.norm_weight.assign(static_cast<std::size_t>(di), T(1));
    p.out_proj_weight = uniform(dm * di, 1.0 / std::sqrt(double(di)));
    if (cfg.bias) p.out_proj_bias = uniform(dm, 1.0 / std::sqrt(double(di)));
    return Mamba2Block(cfg, std::move(p));
  }

  const Mamba2BlockConfig& config() const { return cfg_; }
  const Mamba2BlockParams<T>& params() const { return p_; }
  /// The parameters, to change in place (an optimizer's step): keep each vector's size (forward checks them; A is
  /// derived from A_log on every call). A block moved to() another device keeps its own copy there.
  Mamba2BlockParams<T>& params() { return p_; }
  /// The projections held as weight matrices (empty members: in params()).
  const Mamba2BlockMatrices& matrices() const { return m_; }
  /// The parameters with in_proj / out_proj as T vectors also when held as matrices (converted from f16 / bf16).
  Mamba2BlockParams<T> full_params() const {
    Mamba2BlockParams<T> p = p_;
    for (const char* name : {"in_proj.weight", "out_proj.weight"}) {
      const WeightMatrix& w = *m_.find(name);
      if (w.empty()) continue;
      const std::vector<float> f = w.to_f32();
      (name[0] == 'i' ? p.in_proj_weight : p.out_proj_weight).assign(f.begin(), f.end());
    }
    return p;
  }
  /// CPU threads for the ops (0: by the amount of work).
  void set_threads(int threads) { threads_ = threads; }
  /// Bytes of the parameters as held (vectors in T, matrices in their dtype).
  std::size_t nbytes() const {
    std::size_t n = 0;
    p_.for_each(cfg_, [&](const char*, const std::vector<T>& v, const Dims&) { n += v.size() * sizeof(T); });
    return n + m_.nbytes();
  }

  /// A zero cache for b sequences on the block's device.
  Cache make_cache(index_t b) const { return Cache::zeros(cfg_, b, device()); }

  /// The device the block computes on: where its parameters are (to()); the CPU unless moved.
  Device device() const { return dev_ ? dev_->device : Device::cpu(); }

  /// This block with its parameters copied to `device` (the same block for the CPU): forward and step then take
  /// tensors and caches there and call the same ops on them (an op without an entry for that device says so by an
  /// ssm::Error). in_proj and out_proj keep their dtype; copies of the moved block share the device copy.
  Mamba2Block to(Device device) const {
    Mamba2Block m = *this;
    m.dev_.reset();
    if (device.is_cpu()) return m;
    Tensor A;  // (h) on the CPU
    const Params P = m.views(A);
    auto up = [&](const auto& v) { return upload(v, device); };
    auto d = std::make_shared<DeviceParams>();
    d->device = device;
    d->in_proj = up(P.in_proj), d->out_proj = up(P.out_proj), d->conv_weight = up(P.conv_weight);
    d->dt_bias = up(P.dt_bias), d->A = up(P.A), d->D = up(P.D), d->norm_weight = up(P.norm_weight);
    d->in_proj_bias = up(P.in_proj_bias), d->conv_bias = up(P.conv_bias), d->out_proj_bias = up(P.out_proj_bias);
    m.dev_ = std::move(d);
    return m;
  }

  /// Throws ssm::Error unless `cache` fits this block (b >= 1 sequences, T's dtype, contiguous, on the block's device).
  void check_cache(const Cache& cache) const {
    const index_t b = cache.b;
    SSM_CHECK(cache.matches({b, cfg_.d_conv - 1, cfg_.conv_dim()}, {b, cfg_.heads(), cfg_.head_dim, cfg_.d_state},
                            dtype_of<T>(), device()),
              "Mamba2Block: cache does not match the block (b = ", b, ", ", cache.describe(), "; expected contiguous ",
              name(dtype_of<T>()), " conv_state (b, ", cfg_.d_conv - 1, ", ", cfg_.conv_dim(), ") and ssm_state (b, ",
              cfg_.heads(), ", ", cfg_.head_dim, ", ", cfg_.d_state, ") on ", device().str(), ")");
  }

  /// Parallel forward: u (b, l, d_model) contiguous T → (b, l, d_model). With a cache, it receives the state after
  /// the last token (a prefill); with `resume` the sequences start from the cache's state (a prefill in pieces).
  Tensor forward(const TensorView& u, Cache* cache = nullptr, bool resume = false) const {
    Checker c("Mamba2Block::forward");
    check_u(c, u);
    const index_t b = u.size(0), l = u.size(1);
    if (resume) {
      c.require(cache != nullptr && cache->b == b, "cache", "resume needs a cache for ", b, " sequences");
      check_cache(*cache);
    }
    if (cache == nullptr) resume = false;
    if (cache != nullptr && !resume) *cache = make_cache(b);
    Tensor out = Tensor::empty({b, l, cfg_.d_model}, dtype_of<T>(), device());
    std::optional<TensorView> conv_state, ssm_state;
    if (cache != nullptr) conv_state = cache->conv_state.view(), ssm_state = cache->ssm_state.view();
    forward_into(u, out, conv_state, ssm_state, resume);
    return out;
  }

  /// The forward over views: u, out (b, l, d_model) with unit stride along d_model and rows b · l apart by
  /// d_model (contiguous); conv_state (b, d_conv - 1, conv_dim) and ssm_state (b, h, p, n), contiguous, when given
  /// receive the state after the last token, and with `resume` hold the state the sequences start from.
  void forward_into(const TensorView& u, const TensorView& out, const std::optional<TensorView>& conv_state,
                    const std::optional<TensorView>& ssm_state, bool resume) const {
    Tensor A;
    run(views(A), u, &out, conv_state, ssm_state, resume, nullptr);
  }

  /// One token for b sequences: u (b, d_model) → (b, d_model); the cache advances by one token.
  Tensor step(const TensorView& u, Cache& cache) const {
    Checker c("Mamba2Block::step");
    c.defined("u", u).rank("u", u, 2).shape("u", u, {cache.b, cfg_.d_model});
    c.dtype("u", u, dtype_of<T>()).device("u", u, device()).contiguous("u", u);
    check_cache(cache);
    Tensor out = Tensor::empty({cache.b, cfg_.d_model}, dtype_of<T>(), device());
    Tensor work = Tensor::empty({workspace_size(cache.b)}, dtype_of<T>(), device());
    step_into(u, out, cache.conv_state, cache.ssm_state, work);
    return out;
  }

  /// Elements (of T) step_into needs as scratch for b sequences.
  index_t workspace_size(index_t b) const { return b * (cfg_.proj_dim() + cfg_.conv_dim() + cfg_.inner()); }

  /// The one-token step over views: u, out (b, d_model) unit stride along d_model; conv_state (b, d_conv - 1,
  /// conv_dim) and ssm_state (b, h, p, n) contiguous, advanced in place; work: workspace_size(b) contiguous
  /// elements. The same ops as forward_into with l = 1, the SSD being ssm::selective_state_update's head form.
  void step_into(const TensorView& u, const TensorView& out, const TensorView& conv_state, const TensorView& ssm_state,
                 const TensorView& work) const {
    const index_t di = cfg_.inner(), n = cfg_.d_state, h = cfg_.heads(), hd = cfg_.head_dim;
    const index_t g = cfg_.n_groups, cd = cfg_.conv_dim(), dp = cfg_.proj_dim();
    const index_t b = u.size(0);
    const TensorView zxbcdt = part(work, 0, {b, dp}, {dp, 1});         // (b, dp)
    const TensorView xBC = part(work, b * dp, {b, cd}, {cd, 1});       // (b, cd)
    const TensorView y = part(work, b * (dp + cd), {b, di}, {di, 1});  // (b, di)
    Tensor A;
    const Params P = views(A);
    project(P.in_proj, u, P.in_proj_bias, zxbcdt, 1);
    {
      CausalConv1dInputs ci;
      ci.x = part(zxbcdt, di, {b, 1, cd}, {dp, dp, 1});
      ci.weight = P.conv_weight;
      ci.bias = P.conv_bias;
      ci.silu = true;
      ci.channel_last = true;
      ci.initial_state = conv_state;
      causal_conv1d_into(ci, xBC.reshape({b, 1, cd}), conv_state);
    }
    SelectiveStateUpdateInputs su;
    su.state = ssm_state;
    su.x = part(xBC, 0, {b, h, hd}, {cd, hd, 1});
    su.B = part(xBC, di, {b, g, n}, {cd, n, 1});
    su.C = part(xBC, di + g * n, {b, g, n}, {cd, n, 1});
    su.dt = part(zxbcdt, di + cd, {b, h}, {dp, 1});
    su.z = part(zxbcdt, 0, {b, h, hd}, {dp, hd, 1});
    su.A = P.A;
    su.D = P.D;
    su.dt_bias = P.dt_bias;
    su.dt_softplus = true;
    if (cfg_.has_dt_limit()) su.dt_limit = cfg_.dt_limit;
    selective_state_update(su, y.reshape({b, h, hd}));
    gated_norm(y, P.norm_weight);
    project(P.out_proj, y, P.out_proj_bias, out, 1);
  }

  /// Backward of forward() from a zero state: given u and grad_out = ∂L/∂out, both (b, l, d_model) contiguous CPU
  /// tensors of T, returns ∂L/∂u and the gradient of every parameter (accumulated over the batch). Recomputes the
  /// forward, then out_proj, the gated RMSNorm per group, ssm::ssd_backward (x, z, Δ, A, B, C, D, dt_bias, the limit
  /// included), the conv with SiLU and in_proj. A block on another device, or holding weight matrices, is an
  /// ssm::Error.
  Mamba2BlockGrads<T> backward(const TensorView& u, const TensorView& grad_out) const {
    Checker c("Mamba2Block::backward");
    c.require(device().is_cpu(), "this", "the backward runs on the CPU; this block is on ", device().str(),
              " (use a block on the CPU)");
    check_u(c, u);
    c.defined("grad_out", grad_out).shape("grad_out", grad_out, {u.size(0), u.size(1), cfg_.d_model});
    c.dtype("grad_out", grad_out, dtype_of<T>()).device("grad_out", grad_out, Device::cpu());
    c.contiguous("grad_out", grad_out);
    c.require(!m_.any(), "this",
              "the block holds in_proj / out_proj as weight matrices (Mamba2LM keeps a checkpoint's "
              "f16 / bf16 weights unless LoadOptions::weight_dtype says f32); backward needs them as T parameters: "
              "build a block from full_params()");
    const index_t di = cfg_.inner(), dm = cfg_.d_model, h = cfg_.heads(), hd = cfg_.head_dim, g = cfg_.n_groups;
    const index_t n = cfg_.d_state, cd = cfg_.conv_dim(), dp = cfg_.proj_dim(), w = cfg_.d_conv;
    const index_t b = u.size(0), l = u.size(1), rows = b * l, gs = di / g;
    Mamba2BlockGrads<T> r;
    r.params = Mamba2BlockParams<T>::zeros(cfg_);
    Mamba2BlockParams<T>& gp = r.params;
    r.grad_u.assign(static_cast<std::size_t>(rows * dm), T(0));
    // ---- the forward again, keeping its activations ----
    Tensor A;  // (h)
    const Params P = views(A);
    Saved s;
    run(P, u, nullptr, std::nullopt, std::nullopt, false, &s);
    const T* y_n = s.y.template data_as<const T>();  // (rows, di) normalized: out_proj's input
    // ---- out_proj ----
    std::vector<T> grad_yn(static_cast<std::size_t>(rows * di));  // (rows, di)
    linear_backward(y_n, p_.out_proj_weight.data(), grad_out.data_as<const T>(), grad_yn.data(),
                    gp.out_proj_weight.data(), gp.out_proj_bias.empty() ? nullptr : gp.out_proj_bias.data(), rows, di,
                    dm);
    // ---- the gated RMSNorm, one group of di / g columns at a time ----
    Tensor grad_y = Tensor::empty({b, l, h, hd}, dtype_of<T>());  // ∂L/∂(SSD output ⊙ silu(z)), (rows, di)
    for (index_t gi = 0; gi < g; ++gi)
      rmsnorm_backward(s.y_gated.template data_as<const T>() + gi * gs, p_.norm_weight.data() + gi * gs,
                       grad_yn.data() + gi * gs, grad_y.data_as<T>() + gi * gs, gp.norm_weight.data() + gi * gs, rows,
                       gs, cfg_.norm_eps, di);
    // ---- SSD (ssm::ssd_backward: z's gate, D, dt_bias, softplus and the limit inside) ----
    const SsdGrads sg = ssd_backward(s.ssd, grad_y.view(), ssd_options(), &s.ssd_saved);
    const T* grad_A = sg.grad_A.data_as<const T>();
    const T* A_values = A.data_as<const T>();
    for (index_t i = 0; i < h; ++i) gp.A_log[i] = grad_A[i] * A_values[i];  // A = −exp(A_log)
    std::copy_n(sg.grad_D.data_as<const T>(), h, gp.D.data());
    std::copy_n(sg.grad_dt_bias.data_as<const T>(), h, gp.dt_bias.data());
    // ∂L/∂zxbcdt (rows, dp) = [z (di) | xBC before the conv (cd) | dt (h)]; ∂L/∂xBC after it (rows, cd) = [x | B | C]
    std::vector<T> grad_zxbcdt(static_cast<std::size_t>(rows * dp));
    std::vector<T> grad_xBC(static_cast<std::size_t>(rows * cd));
    for (index_t row = 0; row < rows; ++row) {
      T* gz = grad_zxbcdt.data() + row * dp;
      std::copy_n(sg.grad_z.data_as<const T>() + row * di, di, gz);
      std::copy_n(sg.grad_dt.data_as<const T>() + row * h, h, gz + di + cd);
      T* gx = grad_xBC.data() + row * cd;
      std::copy_n(sg.grad_x.data_as<const T>() + row * di, di, gx);
      std::copy_n(sg.grad_B.data_as<const T>() + row * g * n, g * n, gx + di);
      std::copy_n(sg.grad_C.data_as<const T>() + row * g * n, g * n, gx + di + g * n);
    }
    // ---- the depthwise causal conv with SiLU, sequence by sequence ----
    const Conv1dArgs<T> conv{l,   cd, w, p_.conv_weight.data(), p_.conv_bias.empty() ? nullptr : p_.conv_bias.data(),
                             true};
    std::vector<T> x_in(static_cast<std::size_t>(l * cd)), grad_x_in(x_in.size());  // (l, cd)
    const T* zxbcdt = s.zxbcdt.template data_as<const T>();
    for (index_t bi = 0; bi < b; ++bi) {
      for (index_t t = 0; t < l; ++t) std::copy_n(zxbcdt + (bi * l + t) * dp + di, cd, x_in.data() + t * cd);
      conv1d_backward(conv, x_in.data(), static_cast<const T*>(nullptr), grad_xBC.data() + bi * l * cd,
                      static_cast<const T*>(nullptr), grad_x_in.data(), static_cast<T*>(nullptr), gp.conv_weight.data(),
                      gp.conv_bias.empty() ? nullptr : gp.conv_bias.data());
      for (index_t t = 0; t < l; ++t)
        std::copy_n(grad_x_in.data() + t * cd, cd, grad_zxbcdt.data() + (bi * l + t) * dp + di);
    }
    // ---- in_proj ----
    linear_backward(u.data_as<const T>(), p_.in_proj_weight.data(), grad_zxbcdt.data(), r.grad_u.data(),
                    gp.in_proj_weight.data(), gp.in_proj_bias.empty() ? nullptr : gp.in_proj_bias.data(), rows, dm, dp);
    return r;
  }

 private:
  // The parameters as the ops read them, on the block's device.
  struct Params {
    TensorView in_proj, out_proj;                        // (dp, d_model), (d_model, di)
    TensorView conv_weight, dt_bias, A, D, norm_weight;  // (cd, w), (h), (h), (h), (di)
    std::optional<TensorView> in_proj_bias, conv_bias, out_proj_bias;
  };
  // The parameters on a device other than the CPU (to()).
  struct DeviceParams {
    Device device;
    Tensor in_proj, out_proj, conv_weight, dt_bias, A, D, norm_weight, in_proj_bias, conv_bias, out_proj_bias;
  };
  // What backward keeps of the forward: the buffers, and the SSD's inputs (views into them).
  struct Saved {
    Tensor zxbcdt, xBC, y_gated, y;  // (b, l, dp), (b, l, cd), (b, l, di) before and after the gated norm
    SsdInputs ssd;
    SsdSaved ssd_saved;  // what the SSD forward kept for ssd_backward (its chunk states, y before silu(z))
  };

  void check_u(const Checker& c, const TensorView& u) const {
    c.defined("u", u).rank("u", u, 3).shape("u", u, {kAny, kAny, cfg_.d_model}).dtype("u", u, dtype_of<T>());
    c.device("u", u, device()).contiguous("u", u);
  }

  SsdOptions ssd_options(int threads = 0) const {
    SsdOptions opt;
    opt.chunk_size = cfg_.chunk_size;
    opt.threads = threads != 0 ? threads : threads_;
    return opt;
  }

  // The forward of forward_into on the parameters P; `saved`, when given, keeps the activations (backward). Without
  // `out` it stops before out_proj (backward needs out_proj's input, saved->y, not its output).
  void run(const Params& P, const TensorView& u, const TensorView* out, const std::optional<TensorView>& conv_state,
           const std::optional<TensorView>& ssm_state, bool resume, Saved* saved) const {
    const index_t di = cfg_.inner(), dm = cfg_.d_model, n = cfg_.d_state, h = cfg_.heads(), hd = cfg_.head_dim;
    const index_t g = cfg_.n_groups, cd = cfg_.conv_dim(), dp = cfg_.proj_dim(), w = cfg_.d_conv;
    const index_t b = u.size(0), l = u.size(1), rows = b * l;
    const int nt = cpu::cpu_threads(threads_, rows * di * n);
    if (!conv_state || !ssm_state) resume = false;
    const Device dev = device();
    const DType dt = dtype_of<T>();
    Tensor zxbcdt = Tensor::empty({b, l, dp}, dt, dev);  // (b, l, 2 di + 2 g n + h)
    project(P.in_proj, u.reshape({rows, dm}), P.in_proj_bias, zxbcdt.view().reshape({rows, dp}), nt);
    Tensor xBC = Tensor::empty({b, l, cd}, dt, dev);  // (b, l, di + 2 g n) after the conv and SiLU
    {
      CausalConv1dInputs ci;
      ci.x = part(zxbcdt, di, {b, l, cd}, {l * dp, dp, 1});
      ci.weight = P.conv_weight;
      ci.bias = P.conv_bias;
      ci.silu = true;
      ci.channel_last = true;
      ci.num_threads = nt;
      if (resume) ci.initial_state = *conv_state;
      Tensor unused;  // (b, w - 1, cd) the final state when no cache is filled
      if (!conv_state) unused = Tensor::empty({b, w - 1, cd}, dt, dev);
      causal_conv1d_into(ci, xBC, conv_state ? *conv_state : unused.view());
    }
    Tensor y = Tensor::empty({b, l, di}, dt, dev);  // (b, l, h p): SSD + D x, gated by silu(z)
    SsdInputs in;
    in.x = part(xBC, 0, {b, l, h, hd}, {l * cd, cd, hd, 1});
    in.B = part(xBC, di, {b, l, g, n}, {l * cd, cd, n, 1});
    in.C = part(xBC, di + g * n, {b, l, g, n}, {l * cd, cd, n, 1});
    in.dt = part(zxbcdt, di + cd, {b, l, h}, {l * dp, dp, 1});
    in.z = part(zxbcdt, 0, {b, l, h, hd}, {l * dp, dp, hd, 1});
    in.A = P.A;
    in.D = P.D;
    in.dt_bias = P.dt_bias;
    in.dt_softplus = true;
    if (cfg_.has_dt_limit()) in.dt_limit = cfg_.dt_limit;
    {
      SsdInputs fwd = in;
      Tensor last;  // (b, h, p, n) the final state when it replaces the initial one
      std::optional<TensorView> final_state = ssm_state;
      if (resume) {
        fwd.initial_state = *ssm_state;
        last = Tensor::empty({b, h, hd, n}, dt, dev);
        final_state = last.view();
      }
      ssd_into(fwd, y.view().reshape({b, l, h, hd}), final_state, ssd_options(nt),
               saved != nullptr ? &saved->ssd_saved : nullptr);
      if (last.defined()) copy(*ssm_state, last);
    }
    if (saved != nullptr) {
      saved->y_gated = Tensor::empty({b, l, di}, dt, dev);
      copy(saved->y_gated, y);
    }
    gated_norm(y.view().reshape({rows, di}), P.norm_weight);
    if (out != nullptr)
      project(P.out_proj, y.view().reshape({rows, di}), P.out_proj_bias, out->reshape({rows, dm}), nt);
    if (saved != nullptr) {
      saved->zxbcdt = std::move(zxbcdt), saved->xBC = std::move(xBC), saved->y = std::move(y);
      saved->ssd = in;  // its views point into the moved buffers, whose storage stays where it was
    }
  }

  // The gated RMSNorm's normalization, in place on y (rows, di) = SSD output ⊙ silu(z): each group's di / g columns
  // RMS-normalized over themselves and scaled by their part of norm.weight (di) (one rms_norm call per group).
  void gated_norm(const TensorView& y, const TensorView& weight) const {
    const index_t gs = cfg_.inner() / cfg_.n_groups;
    for (index_t gi = 0; gi < cfg_.n_groups; ++gi) {
      const TensorView part = y.narrow(1, gi * gs, gs);  // (rows, di / g)
      rms_norm_into(RmsNormInputs{part, weight.narrow(0, gi * gs, gs), std::nullopt, cfg_.norm_eps}, part);
    }
  }

  // Every parameter the config has is a vector of its shape, or (in_proj, out_proj) a matrix of its shape with the
  // vector empty; no other vector is non-empty (a bias the config does not have would be read by the forward and have
  // no gradient). At construction and on every CPU call: params() hands the vectors out to be changed. No allocation:
  // the config's vectors are recognized by address.
  void check_params(const char* who) const {
    const std::vector<T>* in_config[16];
    int n = 0;
    p_.for_each(cfg_, [&](const char* name, const std::vector<T>& v, const Dims& s) {
      in_config[n++] = &v;
      const WeightMatrix* m = m_.find(name);
      if (m == nullptr || m->empty()) return check_parameter_size(who, name, v, s);
      SSM_CHECK(v.empty(), who, ": parameter '", name, "' is given both as a vector and as a matrix");
      SSM_CHECK(m->rows() == s[0] && m->cols() == s[1], who, ": matrix '", name, "' has shape (", m->rows(), ", ",
                m->cols(), "), expected ", s.str());
    });
    p_.for_each([&](const char* name, const std::vector<T>& v) {
      SSM_CHECK(std::find(in_config, in_config + n, &v) != in_config + n, who, ": parameter '", name,
                "' is given but the config does not have it (bias = false: no in_proj / out_proj biases; conv_bias = "
                "false: no conv1d.bias)");
    });
  }

  // The parameters as the ops read them; on the CPU, A (h) = −exp(A_log) computed into `A` (so an update of A_log
  // through params() is seen by the next call), after checking that no vector changed size.
  Params views(Tensor& A) const {
    Params P;
    if (dev_) {
      const DeviceParams& d = *dev_;
      P.in_proj = d.in_proj, P.out_proj = d.out_proj, P.conv_weight = d.conv_weight, P.dt_bias = d.dt_bias;
      P.A = d.A, P.D = d.D, P.norm_weight = d.norm_weight;
      P.in_proj_bias = optional_view(d.in_proj_bias), P.conv_bias = optional_view(d.conv_bias);
      P.out_proj_bias = optional_view(d.out_proj_bias);
      return P;
    }
    const index_t h = cfg_.heads(), dm = cfg_.d_model, di = cfg_.inner();
    check_params("Mamba2Block");
    auto matrix = [](const WeightMatrix& m, const std::vector<T>& v, const Dims& s) {
      return m.empty() ? TensorView::of(v.data(), s) : TensorView(m.tensor());
    };
    P.in_proj = matrix(m_.in_proj, p_.in_proj_weight, {cfg_.proj_dim(), dm});
    P.out_proj = matrix(m_.out_proj, p_.out_proj_weight, {dm, di});
    P.conv_weight = TensorView::of(p_.conv_weight.data(), {cfg_.conv_dim(), cfg_.d_conv});
    P.dt_bias = TensorView::of(p_.dt_bias.data(), {h});
    A = Tensor::empty({h}, dtype_of<T>());
    for (index_t i = 0; i < h; ++i) A.data_as<T>()[i] = -std::exp(p_.A_log[static_cast<std::size_t>(i)]);
    P.A = A.view();
    P.D = TensorView::of(p_.D.data(), {h});
    P.norm_weight = TensorView::of(p_.norm_weight.data(), {di});
    P.in_proj_bias = optional_view(p_.in_proj_bias), P.conv_bias = optional_view(p_.conv_bias);
    P.out_proj_bias = optional_view(p_.out_proj_bias);
    return P;
  }

  Mamba2BlockConfig cfg_;
  Mamba2BlockParams<T> p_;
  Mamba2BlockMatrices m_;
  int threads_ = 0;
  std::shared_ptr<const DeviceParams> dev_;  // the parameters on device() when not the CPU (to())
};

}  // namespace ssm::layers
