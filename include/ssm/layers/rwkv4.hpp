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
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/scalar.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/layers/basic.hpp"
#include "ssm/layers/layer_cache.hpp"
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

/// The decoding cache of one sublayer: conv_state (b, 1, H) the last input; ssm_state (b, 3, A) the WKV state (time
/// mixing; the empty state num = den = 0, max = −1e38 at the start) or (b, 0) (channel mixing). f32, on the CPU.
struct Rwkv4LayerCache : ConvSsmCache {
  static Rwkv4LayerCache empty(const Rwkv4BlockConfig& cfg, index_t b) {
    Rwkv4LayerCache c;
    c.b = b;
    c.conv_state = Tensor::zeros({b, 1, cfg.d_model}, DType::f32);
    c.ssm_state = cfg.kind == Rwkv4Kind::time_mix ? rwkv4_empty_state(b, cfg.d_att) : Tensor::zeros({b, 0}, DType::f32);
    return c;
  }
};

class Rwkv4Block {
 public:
  Rwkv4Block(const Rwkv4BlockConfig& cfg, Rwkv4BlockParams params) : cfg_(cfg), p_(std::move(params)) {
    cfg_.validate("Rwkv4Block");
    const index_t H = cfg_.d_model;
    Checker c("Rwkv4Block");
    auto vec = [&](const char* nm, const std::vector<float>& v, index_t n) {
      c.require(static_cast<index_t>(v.size()) == n, nm, "expected ", n, " elements, got ", v.size());
      for (float x : v) c.require(std::isfinite(x), nm, "must be finite, got ", x);
    };
    auto mat = [&](const char* nm, const WeightMatrix& w, index_t rows, index_t cols) {
      c.require(w.rows() == rows && w.cols() == cols, nm, "expected a (", rows, ", ", cols, ") matrix, got (", w.rows(),
                ", ", w.cols(), ")");
    };
    vec("time_mix_key", p_.time_mix_key, H), vec("time_mix_receptance", p_.time_mix_receptance, H);
    if (time_mix()) {
      const index_t A = cfg_.d_att;
      vec("time_decay", p_.time_decay, A), vec("time_first", p_.time_first, A), vec("time_mix_value", p_.time_mix_value, H);
      mat("key", p_.key, A, H), mat("value", p_.value, A, H), mat("receptance", p_.receptance, A, H);
      mat("output", p_.output, H, A);
    } else {
      const index_t F = cfg_.d_ffn;
      mat("key", p_.key, F, H), mat("receptance", p_.receptance, H, H), mat("value", p_.value, H, F);
    }
  }

  /// A plain initialization for experiments (not RWKV-4's tuned training init): projections uniform in ±1/√fan_in,
  /// mixes in [0, 1), time_decay from −5 to 1 across channels (slow to fast decays), time_first 0.5.
  static Rwkv4Block init(const Rwkv4BlockConfig& cfg, std::uint64_t seed) {
    cfg.validate("Rwkv4Block::init");
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    auto matrix = [&](index_t rows, index_t cols) {
      std::vector<float> v(static_cast<std::size_t>(rows * cols));
      const double s = 1.0 / std::sqrt(static_cast<double>(cols));
      for (float& x : v) x = static_cast<float>(s * (2 * unit(rng) - 1));
      return WeightMatrix::from_f32(v.data(), rows, cols);
    };
    auto mix = [&] {
      std::vector<float> v(static_cast<std::size_t>(cfg.d_model));
      for (float& x : v) x = static_cast<float>(unit(rng));
      return v;
    };
    const index_t H = cfg.d_model;
    Rwkv4BlockParams p;
    p.time_mix_key = mix(), p.time_mix_receptance = mix();
    if (cfg.kind == Rwkv4Kind::time_mix) {
      const index_t A = cfg.d_att;
      p.time_mix_value = mix();
      for (index_t i = 0; i < A; ++i)
        p.time_decay.push_back(static_cast<float>(-5.0 + 6.0 * static_cast<double>(i) / std::max<double>(A - 1, 1)));
      p.time_first.assign(static_cast<std::size_t>(A), 0.5f);
      p.key = matrix(A, H), p.value = matrix(A, H), p.receptance = matrix(A, H), p.output = matrix(H, A);
    } else {
      const index_t F = cfg.d_ffn;
      p.key = matrix(F, H), p.receptance = matrix(H, H), p.value = matrix(H, F);
    }
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
    const index_t b = cache.b;
    const Dims ssm_shape = time_mix() ? Dims{b, 3, cfg_.d_att} : Dims{b, 0};
    SSM_CHECK(cache.matches({b, 1, cfg_.d_model}, ssm_shape, DType::f32, Device::cpu()),
              "Rwkv4Block: cache does not match the block (b = ", b, ", ", cache.describe(),
              "; expected contiguous f32 conv_state (b, 1, ", cfg_.d_model, ") and ssm_state ", ssm_shape.str(),
              " on the CPU)");
  }

  /// Scratch step_into needs (none: the block allocates its own).
  index_t workspace_size(index_t) const { return 0; }

  /// The parallel forward over views: x, y (b, l, d_model) contiguous f32. With conv_state (b, 1, H) and ssm_state
  /// given they receive the state after the last token; with `resume` the sequences start from them.
  void forward_into(const TensorView& x, const TensorView& y, const std::optional<TensorView>& conv_state,
                    const std::optional<TensorView>& ssm_state, bool resume) const {
    const index_t b = x.size(0), l = x.size(1), H = cfg_.d_model, rows = b * l;
    if (!conv_state || !ssm_state) resume = false;
    if (rows == 0) return;
    const float* xs = x.data_as<float>();
    const float* shift = resume ? conv_state->data_as<float>() : nullptr;  // (b, H)
    // the token-shift mixes, each (rows, H)
    const std::vector<const std::vector<float>*> mus =
        time_mix() ? std::vector<const std::vector<float>*>{&p_.time_mix_key, &p_.time_mix_value, &p_.time_mix_receptance}
                   : std::vector<const std::vector<float>*>{&p_.time_mix_key, &p_.time_mix_receptance};
    const index_t n_mix = static_cast<index_t>(mus.size());
    Tensor mixed = Tensor::empty({n_mix, rows, H}, DType::f32);  // (mixes, rows, H)
    for (index_t bi = 0; bi < b; ++bi)
      for (index_t t = 0; t < l; ++t) {
        const float* xt = xs + (bi * l + t) * H;
        const float* prev = t > 0 ? xt - H : (shift ? shift + bi * H : nullptr);
        for (index_t m = 0; m < n_mix; ++m) {
          float* dst = mixed.data_as<float>() + (m * rows + bi * l + t) * H;
          const float* mu = mus[static_cast<std::size_t>(m)]->data();
          for (index_t i = 0; i < H; ++i) dst[i] = xt[i] * mu[i] + (prev ? prev[i] : 0.0f) * (1.0f - mu[i]);
        }
      }
    if (conv_state)
      for (index_t bi = 0; bi < b; ++bi) std::copy_n(xs + (bi * l + l - 1) * H, H, conv_state->data_as<float>() + bi * H);
    auto branch = [&](index_t m) { return mixed.view().select(0, m); };  // (rows, H)
    const TensorView out = y.reshape({rows, H});
    if (time_mix()) {
      const index_t A = cfg_.d_att;
      Tensor k = Tensor::empty({b, l, A}, DType::f32), v = Tensor::empty({b, l, A}, DType::f32);
      Tensor r = Tensor::empty({rows, A}, DType::f32), wkv = Tensor::empty({b, l, A}, DType::f32);
      project(p_.key.tensor(), branch(0), std::nullopt, k.view().reshape({rows, A}), threads_);
      project(p_.value.tensor(), branch(1), std::nullopt, v.view().reshape({rows, A}), threads_);
      project(p_.receptance.tensor(), branch(2), std::nullopt, r, threads_);
      Rwkv4Inputs in;
      in.k = k, in.v = v;
      in.time_decay = TensorView::of(p_.time_decay.data(), {A}), in.time_first = TensorView::of(p_.time_first.data(), {A});
      if (resume) in.initial_state = *ssm_state;
      Rwkv4Options opt;
      opt.threads = threads_;
      rwkv4_into(in, wkv, ssm_state, opt);  // the final state over the initial one (each read before it is written)
      float* rp = r.data_as<float>();
      const float* wp = wkv.data_as<float>();
      for (index_t i = 0; i < rows * A; ++i) rp[i] = scalar::sigmoid(rp[i]) * wp[i];
      project(p_.output.tensor(), r, std::nullopt, out, threads_);
    } else {
      const index_t F = cfg_.d_ffn;
      Tensor hidden = Tensor::empty({rows, F}, DType::f32), r = Tensor::empty({rows, H}, DType::f32);
      project(p_.key.tensor(), branch(0), std::nullopt, hidden, threads_);
      float* hp = hidden.data_as<float>();
      for (index_t i = 0; i < rows * F; ++i) hp[i] = hp[i] > 0 ? hp[i] * hp[i] : 0.0f;
      project(p_.receptance.tensor(), branch(1), std::nullopt, r, threads_);
      project(p_.value.tensor(), hidden, std::nullopt, out, threads_);
      const float* rp = r.data_as<float>();
      float* yp = out.data_as<float>();
      for (index_t i = 0; i < rows * H; ++i) yp[i] *= scalar::sigmoid(rp[i]);
    }
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

  Rwkv4BlockConfig cfg_;
  Rwkv4BlockParams p_;
  int threads_ = 0;
};

}  // namespace ssm::layers
