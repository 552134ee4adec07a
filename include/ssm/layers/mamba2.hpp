// The Mamba-2 block (Dao & Gu 2024, "Transformers are SSMs"; mamba_ssm's modules/mamba2.py and transformers'
// Mamba2Mixer; docs/mamba2.md): in_proj → [z, xBC, dt] → causal depthwise conv1d over xBC → SiLU → split x, B, C →
// SSD (Δ = softplus(dt + dt_bias) clamped to the time-step limit, A = −exp(A_log) one per head, D skip) → gated
// RMSNorm within each of the n_groups groups (rmsnorm(y ⊙ silu(z)) · w, transformers' MambaRMSNormGated with
// norm_before_gate = False) → out_proj. Parallel forward over a sequence (the chunked SSD op), and step for one token
// with a per-layer cache (conv state, SSM state (b, h, p, n)) through the head form of ssm::selective_state_update.
//
// Every stage is an op on views of the block's time-major buffers (like MambaBlock): ssm::linear, ssm::causal_conv1d
// (channel-last), ssm::ssd / ssm::selective_state_update (whose z gate is the y ⊙ silu(z) of the gated norm),
// ssm::rms_norm once per group. f32 activations and arithmetic; in_proj and out_proj may be f16 / bf16 weight
// matrices (read by the linear op), the other parameters are f32.
//
// Glossary (code name → paper / mamba2.py), with di = d_inner, h = heads, p = head_dim, g = n_groups, n = d_state:
//   zxbcdt   in_proj(u): z (di), xBC (di + 2 g n), dt (h)                         (b, l, 2 di + 2 g n + h)
//   xBC      silu(conv1d(xBC)): x (h, p), B (g, n), C (g, n)                      (b, l, di + 2 g n)
//   y        SSD output with D, gated by silu(z), then normalized per group       (b, l, di)
#pragma once

#include <cmath>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/threads.hpp"
#include "ssm/layers/basic.hpp"
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

/// Parameters of one block under transformers' names (Mamba2Mixer). in_proj and out_proj are weight matrices (f32,
/// f16 or bf16); the rest f32 vectors, the optional biases empty when the config has none.
struct Mamba2BlockParams {
  WeightMatrix in_proj;              // (2 di + 2 g n + h, d_model)
  std::vector<float> in_proj_bias;   // (2 di + 2 g n + h) or empty
  std::vector<float> conv_weight;    // (di + 2 g n, d_conv)   (PyTorch: (conv_dim, 1, d_conv))
  std::vector<float> conv_bias;      // (di + 2 g n) or empty
  std::vector<float> dt_bias;        // (h)
  std::vector<float> A_log;          // (h)
  std::vector<float> D;              // (h)
  std::vector<float> norm_weight;    // (di): the gated RMSNorm's weight ("norm.weight")
  WeightMatrix out_proj;             // (d_model, di)
  std::vector<float> out_proj_bias;  // (d_model) or empty

  /// Calls f(name, vector, shape) for every vector parameter the config has (names: the suffixes of the Hugging
  /// Face tensor names after "mixer."), and m(name, matrix, shape) for in_proj and out_proj.
  template <class F, class M>
  void for_each(const Mamba2BlockConfig& cfg, F&& f, M&& m) {
    const index_t di = cfg.inner(), dm = cfg.d_model, h = cfg.heads(), cd = cfg.conv_dim();
    m("in_proj.weight", in_proj, Dims{cfg.proj_dim(), dm});
    if (cfg.bias) f("in_proj.bias", in_proj_bias, Dims{cfg.proj_dim()});
    f("conv1d.weight", conv_weight, Dims{cd, 1, cfg.d_conv});
    if (cfg.conv_bias) f("conv1d.bias", conv_bias, Dims{cd});
    f("dt_bias", dt_bias, Dims{h});
    f("A_log", A_log, Dims{h});
    f("D", D, Dims{h});
    f("norm.weight", norm_weight, Dims{di});
    m("out_proj.weight", out_proj, Dims{dm, di});
    if (cfg.bias) f("out_proj.bias", out_proj_bias, Dims{dm});
  }
};

/// Per-layer decoding cache of a Mamba2Block: conv_state (b, d_conv - 1, di + 2 g n) f32 (the last inputs of the conv
/// over xBC) and ssm_state (b, h, p, n) f32, on the block's device (the value semantics: ConvSsmCache).
struct Mamba2LayerCache : ConvSsmCache {
  static Mamba2LayerCache zeros(const Mamba2BlockConfig& cfg, index_t b, Device device = Device::cpu()) {
    Mamba2LayerCache c;
    c.set_zeros(b, {b, cfg.d_conv - 1, cfg.conv_dim()}, {b, cfg.heads(), cfg.head_dim, cfg.d_state}, DType::f32, device);
    return c;
  }
};

/// One Mamba-2 block with its parameters, on the CPU unless moved with to(). forward and step are const and may run
/// concurrently.
class Mamba2Block {
 public:
  Mamba2Block() = default;
  Mamba2Block(const Mamba2BlockConfig& cfg, Mamba2BlockParams params) : cfg_(cfg), p_(std::move(params)) {
    cfg_.validate("Mamba2Block");
    p_.for_each(
        cfg_,
        [](const char* name, std::vector<float>& v, const Dims& s) { check_parameter_size("Mamba2Block", name, v, s); },
        [&](const char* name, const WeightMatrix& m, const Dims& s) {
          SSM_CHECK(!m.empty() && m.rows() == s[0] && m.cols() == s[1], "Mamba2Block: matrix '", name, "' has shape (",
                    m.rows(), ", ", m.cols(), "), expected ", s.str());
        });
    A_.resize(p_.A_log.size());
    for (std::size_t i = 0; i < A_.size(); ++i) A_[i] = -std::exp(p_.A_log[i]);
  }

  /// A block with mamba_ssm's initialization: PyTorch-default uniform projections and conv; A_log[i] = log(i + 1)
  /// (A in [1, h]); dt_bias the inverse softplus of Δ log-uniform in [0.001, 0.1]; D = 1; norm weight 1.
  static Mamba2Block init(const Mamba2BlockConfig& cfg, std::uint64_t seed) {
    cfg.validate("Mamba2Block::init");
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    auto uniform = [&](index_t count, double bound) {
      std::vector<float> v(static_cast<std::size_t>(count));
      for (auto& x : v) x = static_cast<float>((2 * unit(rng) - 1) * bound);
      return v;
    };
    const index_t di = cfg.inner(), dm = cfg.d_model, h = cfg.heads(), cd = cfg.conv_dim();
    Mamba2BlockParams p;
    const auto w_in = uniform(cfg.proj_dim() * dm, 1.0 / std::sqrt(double(dm)));
    p.in_proj = WeightMatrix::from_f32(w_in.data(), cfg.proj_dim(), dm);
    if (cfg.bias) p.in_proj_bias = uniform(cfg.proj_dim(), 1.0 / std::sqrt(double(dm)));
    p.conv_weight = uniform(cd * cfg.d_conv, 1.0 / std::sqrt(double(cfg.d_conv)));
    if (cfg.conv_bias) p.conv_bias = uniform(cd, 1.0 / std::sqrt(double(cfg.d_conv)));
    for (index_t i = 0; i < h; ++i) {
      const double Delta = std::max(1e-4, std::exp(unit(rng) * (std::log(0.1) - std::log(0.001)) + std::log(0.001)));
      p.dt_bias.push_back(static_cast<float>(Delta + std::log(-std::expm1(-Delta))));  // inverse softplus
      p.A_log.push_back(static_cast<float>(std::log(double(i + 1))));
      p.D.push_back(1.0f);
    }
    p.norm_weight.assign(static_cast<std::size_t>(di), 1.0f);
    const auto w_out = uniform(dm * di, 1.0 / std::sqrt(double(di)));
    p.out_proj = WeightMatrix::from_f32(w_out.data(), dm, di);
    if (cfg.bias) p.out_proj_bias = uniform(dm, 1.0 / std::sqrt(double(di)));
    return Mamba2Block(cfg, std::move(p));
  }

  const Mamba2BlockConfig& config() const { return cfg_; }
  const Mamba2BlockParams& params() const { return p_; }
  /// CPU threads for the ops (0: by the amount of work).
  void set_threads(int threads) { threads_ = threads; }
  std::size_t nbytes() const {
    std::size_t n = 0;
    for (const auto* v : {&p_.in_proj_bias, &p_.conv_weight, &p_.conv_bias, &p_.dt_bias, &p_.A_log, &p_.D,
                          &p_.norm_weight, &p_.out_proj_bias})
      n += v->size() * sizeof(float);
    return n + p_.in_proj.nbytes() + p_.out_proj.nbytes();
  }

  /// A zero cache for b sequences on the block's device.
  Mamba2LayerCache make_cache(index_t b) const { return Mamba2LayerCache::zeros(cfg_, b, device()); }

  /// The device the block computes on: where its parameters are (to()); the CPU unless moved.
  Device device() const { return dev_ ? dev_->device : Device::cpu(); }

  /// This block with its parameters copied to `device` (the same block for the CPU): forward and step then take
  /// tensors and caches there and call the same ops on them (an op without an entry for that device says so by an
  /// ssm::Error). in_proj and out_proj keep their dtype; copies of the moved block share the device copy.
  Mamba2Block to(Device device) const {
    Mamba2Block m = *this;
    m.dev_.reset();
    if (device.is_cpu()) return m;
    const Params P = m.views();  // the CPU parameters
    auto up = [&](const auto& v) { return upload(v, device); };
    auto d = std::make_shared<DeviceParams>();
    d->device = device;
    d->in_proj = up(P.in_proj), d->out_proj = up(P.out_proj), d->conv_weight = up(P.conv_weight);
    d->dt_bias = up(P.dt_bias), d->A = up(P.A), d->D = up(P.D), d->norm_weight = up(P.norm_weight);
    d->in_proj_bias = up(P.in_proj_bias), d->conv_bias = up(P.conv_bias), d->out_proj_bias = up(P.out_proj_bias);
    m.dev_ = std::move(d);
    return m;
  }

  /// Throws ssm::Error unless `cache` fits this block (b >= 1 sequences, f32, contiguous, on the block's device).
  void check_cache(const Mamba2LayerCache& cache) const {
    const index_t b = cache.b;
    SSM_CHECK(cache.matches({b, cfg_.d_conv - 1, cfg_.conv_dim()}, {b, cfg_.heads(), cfg_.head_dim, cfg_.d_state},
                            DType::f32, device()),
              "Mamba2Block: cache does not match the block (b = ", b, ", ", cache.describe(),
              "; expected contiguous f32 conv_state (b, ", cfg_.d_conv - 1, ", ", cfg_.conv_dim(), ") and ssm_state (b, ",
              cfg_.heads(), ", ", cfg_.head_dim, ", ", cfg_.d_state, ") on ", device().str(), ")");
  }

  /// Parallel forward: u (b, l, d_model) contiguous f32 → (b, l, d_model). With a cache, it receives the state after
  /// the last token (a prefill); with `resume` the sequences start from the cache's state (a prefill in pieces).
  Tensor forward(const TensorView& u, Mamba2LayerCache* cache = nullptr, bool resume = false) const {
    Checker c("Mamba2Block::forward");
    c.defined("u", u).rank("u", u, 3).shape("u", u, {kAny, kAny, cfg_.d_model});
    c.require(u.dtype() == DType::f32, "u", "expected dtype f32, got ", name(u.dtype()));
    c.device("u", u, device());
    c.require(u.is_contiguous(), "u", "expected a contiguous tensor, got strides ", u.strides().str());
    const index_t b = u.size(0), l = u.size(1);
    if (resume) {
      c.require(cache != nullptr && cache->b == b, "cache", "resume needs a cache for ", b, " sequences");
      check_cache(*cache);
    }
    if (cache == nullptr) resume = false;
    if (cache != nullptr && !resume) *cache = make_cache(b);
    Tensor out = Tensor::empty({b, l, cfg_.d_model}, DType::f32, device());
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
    const index_t di = cfg_.inner(), dm = cfg_.d_model, n = cfg_.d_state, h = cfg_.heads(), hd = cfg_.head_dim;
    const index_t g = cfg_.n_groups, cd = cfg_.conv_dim(), dp = cfg_.proj_dim(), w = cfg_.d_conv;
    const index_t b = u.size(0), l = u.size(1), rows = b * l;
    const int nt = cpu::cpu_threads(threads_, rows * di * n);
    if (!conv_state || !ssm_state) resume = false;
    const Params P = views();
    const Device dev = device();
    Tensor zxbcdt = Tensor::empty({b, l, dp}, DType::f32, dev);  // (b, l, 2 di + 2 g n + h)
    project(P.in_proj, u.reshape({rows, dm}), P.in_proj_bias, zxbcdt.view().reshape({rows, dp}), nt);
    Tensor xBC = Tensor::empty({b, l, cd}, DType::f32, dev);  // (b, l, di + 2 g n) after the conv and SiLU
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
      if (!conv_state) unused = Tensor::empty({b, w - 1, cd}, DType::f32, dev);
      causal_conv1d_into(ci, xBC, conv_state ? *conv_state : unused.view());
    }
    Tensor y = Tensor::empty({b, l, di}, DType::f32, dev);  // (b, l, h p): SSD + D x, gated by silu(z)
    {
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
      Tensor last;  // (b, h, p, n) the final state when it replaces the initial one
      std::optional<TensorView> final_state = ssm_state;
      if (resume) {
        in.initial_state = *ssm_state;
        last = Tensor::empty({b, h, hd, n}, DType::f32, dev);
        final_state = last.view();
      }
      SsdOptions opt;
      opt.chunk_size = cfg_.chunk_size;
      opt.threads = nt;
      ssd_into(in, y.view().reshape({b, l, h, hd}), final_state, opt);
      if (last.defined()) copy(*ssm_state, last);
    }
    gated_norm(y.view().reshape({rows, di}), P.norm_weight);
    project(P.out_proj, y.view().reshape({rows, di}), P.out_proj_bias, out.reshape({rows, dm}), nt);
  }

  /// One token for b sequences: u (b, d_model) → (b, d_model); the cache advances by one token.
  Tensor step(const TensorView& u, Mamba2LayerCache& cache) const {
    Checker c("Mamba2Block::step");
    c.defined("u", u).rank("u", u, 2).shape("u", u, {cache.b, cfg_.d_model});
    c.require(u.dtype() == DType::f32, "u", "expected dtype f32, got ", name(u.dtype()));
    c.device("u", u, device());
    c.require(u.is_contiguous(), "u", "expected a contiguous tensor, got strides ", u.strides().str());
    check_cache(cache);
    Tensor out = Tensor::empty({cache.b, cfg_.d_model}, DType::f32, device());
    Tensor work = Tensor::empty({workspace_size(cache.b)}, DType::f32, device());
    step_into(u, out, cache.conv_state, cache.ssm_state, work);
    return out;
  }

  /// f32 elements step_into needs as scratch for b sequences.
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
    const Params P = views();
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

 private:
  // The gated RMSNorm's normalization, in place on y (rows, di) = SSD output ⊙ silu(z): each group's di / g columns
  // RMS-normalized over themselves and scaled by their part of norm.weight (di) (one rms_norm call per group).
  void gated_norm(const TensorView& y, const TensorView& weight) const {
    const index_t gs = cfg_.inner() / cfg_.n_groups;
    for (index_t gi = 0; gi < cfg_.n_groups; ++gi) {
      const TensorView part = y.narrow(1, gi * gs, gs);  // (rows, di / g)
      rms_norm_into(RmsNormInputs{part, weight.narrow(0, gi * gs, gs), std::nullopt, cfg_.norm_eps}, part);
    }
  }

  // The parameters as the ops read them, on the block's device.
  struct Params {
    TensorView in_proj, out_proj;                              // (dp, d_model), (d_model, di)
    TensorView conv_weight, dt_bias, A, D, norm_weight;        // (cd, w), (h), (h), (h), (di)
    std::optional<TensorView> in_proj_bias, conv_bias, out_proj_bias;
  };
  // The parameters on a device other than the CPU (to()).
  struct DeviceParams {
    Device device;
    Tensor in_proj, out_proj, conv_weight, dt_bias, A, D, norm_weight, in_proj_bias, conv_bias, out_proj_bias;
  };
  Params views() const {
    Params P;
    if (dev_) {
      const DeviceParams& d = *dev_;
      P.in_proj = d.in_proj, P.out_proj = d.out_proj, P.conv_weight = d.conv_weight, P.dt_bias = d.dt_bias;
      P.A = d.A, P.D = d.D, P.norm_weight = d.norm_weight;
      P.in_proj_bias = optional_view(d.in_proj_bias), P.conv_bias = optional_view(d.conv_bias);
      P.out_proj_bias = optional_view(d.out_proj_bias);
      return P;
    }
    const index_t h = cfg_.heads();
    P.in_proj = p_.in_proj.tensor(), P.out_proj = p_.out_proj.tensor();
    P.conv_weight = TensorView::of(p_.conv_weight.data(), {cfg_.conv_dim(), cfg_.d_conv});
    P.dt_bias = TensorView::of(p_.dt_bias.data(), {h});
    P.A = TensorView::of(A_.data(), {h});
    P.D = TensorView::of(p_.D.data(), {h});
    P.norm_weight = TensorView::of(p_.norm_weight.data(), {cfg_.inner()});
    P.in_proj_bias = optional_view(p_.in_proj_bias), P.conv_bias = optional_view(p_.conv_bias);
    P.out_proj_bias = optional_view(p_.out_proj_bias);
    return P;
  }

  Mamba2BlockConfig cfg_;
  Mamba2BlockParams p_;
  std::vector<float> A_;  // (h) = −exp(A_log)
  int threads_ = 0;
  std::shared_ptr<const DeviceParams> dev_;  // the parameters on device() when not the CPU (to())
};

}  // namespace ssm::layers
