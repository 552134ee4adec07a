// The sublayers of the hybrid language models, each a pre-norm residual sublayer of its model: token mixers (a Mamba
// block, possibly with Jamba's weighted δ / B / C norms; grouped-query causal attention, with rotary position embedding
// (StripedHyena) or none at all (Jamba); StripedHyena's gated convolution with a modal long filter, layers/hyena.hpp)
// and feed-forwards (a dense SwiGLU MLP, or a sparse mixture of SwiGLU experts with top-k routing). HybridBlock is one
// of those; JambaLM (models/jamba.hpp) and StripedHyenaLM (models/striped_hyena.hpp) stack them. The dense MLP runs as
// the mixture-of-experts op with one expert (its router weight is one, exactly), so SwiGLU is written once. Glossary:
// H = d_model, I = d_ff, E experts, k per token, h query heads, h_kv key-value heads, p = H / h.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/layers/attention.hpp"
#include "ssm/layers/head_mixer.hpp"
#include "ssm/layers/hyena.hpp"
#include "ssm/layers/mamba.hpp"
#include "ssm/layers/weight.hpp"
#include "ssm/ops/moe.hpp"

namespace ssm::layers {

enum class HybridKind { mamba, attention, mlp, moe, hyena };

inline const char* name(HybridKind k) {
  switch (k) {
    case HybridKind::mamba: return "mamba";
    case HybridKind::attention: return "attention";
    case HybridKind::mlp: return "mlp";
    case HybridKind::moe: return "moe";
    case HybridKind::hyena: return "hyena";
  }
  return "?";
}

struct HybridBlockConfig {
  HybridKind kind = HybridKind::mamba;
  index_t d_model = 0;
  MambaBlockConfig mamba{};          // kind mamba (d_model, bcdt_rms_eps and bcdt_norm_weights set by the model)
  index_t n_heads = 0, n_kv_heads = 0;  // kind attention: h, h_kv (h_kv divides h; h divides d_model)
  bool rotary = false;                  // kind attention: rotate-half RoPE on q and k (StripedHyena; Jamba has none)
  double rotary_base = 10000.0;
  ModalHyenaConfig hyena{};             // kind hyena (StripedHyena's gated convolution)
  index_t d_ff = 0;                  // kinds mlp and moe: I
  index_t experts = 1, top_k = 1;    // kind moe: E, k
  bool normalize_topk = false;       // kind moe: Mixtral renormalizes the k weights, Jamba does not

  index_t head_dim() const { return n_heads > 0 ? d_model / n_heads : 0; }
  index_t n_experts() const { return kind == HybridKind::moe ? experts : 1; }
};

/// A HybridBlock's decoding state for b sequences: the conv and SSM states of a Mamba block or of a modal Hyena filter
/// (constant size), or the keys and values of every token so far (kind attention; grows with the context); empty for
/// the feed-forwards. A value: copying it copies every tensor (forking the sequences).
struct HybridLayerCache {
  MambaLayerCache<float> recurrent;  // kinds mamba and hyena
  std::optional<KVCache> kv;

  HybridLayerCache() = default;
  HybridLayerCache(const HybridLayerCache& o) : recurrent(o.recurrent) {
    if (o.kv) {
      kv.emplace(o.kv->batch(), o.kv->kv_heads(), o.kv->head_dim(), o.kv->dtype(), o.kv->length(), o.kv->device());
      if (o.kv->length() > 0) kv->append(o.kv->keys(), o.kv->values());
    }
  }
  HybridLayerCache& operator=(const HybridLayerCache& o) {
    if (this != &o) *this = HybridLayerCache(o);
    return *this;
  }
  HybridLayerCache(HybridLayerCache&&) noexcept = default;
  HybridLayerCache& operator=(HybridLayerCache&&) noexcept = default;
  ~HybridLayerCache() = default;

  std::size_t nbytes() const { return recurrent.nbytes() + (kv ? kv->bytes() : 0); }
};

/// One sublayer with its parameters: x (b, l, H) f32 → (b, l, H), on the CPU, or on a CUDA device after to() (every
/// kind but hyena).
class HybridBlock {
 public:
  HybridBlock() = default;

  /// The parameters of the block's kind (the models name them: models/jamba.hpp, models/striped_hyena.hpp).
  struct Params {
    MambaBlock<float> mamba;                          // kind mamba
    ModalHyenaLayer<float> hyena;                     // kind hyena
    WeightMatrix q_proj, k_proj, v_proj, o_proj;      // kind attention: (h p, H), (h_kv p, H) ×2, (H, h p)
    Tensor router;                                    // kinds mlp / moe: (E, H) (mlp: one zero row)
    Tensor w_gate_up, w_down;                         // (E, 2I, H), (E, H, I): f32, f16 or bf16
  };

  HybridBlock(const HybridBlockConfig& cfg, Params p) : cfg_(cfg), p_(std::move(p)) {
    Checker c("HybridBlock");
    c.require(cfg_.d_model >= 1, "d_model", "must be >= 1, got ", cfg_.d_model);
    if (cfg_.kind == HybridKind::attention) {
      c.require(cfg_.n_heads >= 1 && cfg_.d_model % cfg_.n_heads == 0, "n_heads", "must divide d_model (",
                cfg_.d_model, "), got ", cfg_.n_heads);
      c.require(cfg_.n_kv_heads >= 1 && cfg_.n_heads % cfg_.n_kv_heads == 0, "n_kv_heads", "must divide n_heads (",
                cfg_.n_heads, "), got ", cfg_.n_kv_heads);
      const index_t hp = cfg_.n_heads * cfg_.head_dim(), kvp = cfg_.n_kv_heads * cfg_.head_dim(), H = cfg_.d_model;
      auto shape = [&](const char* nm, const WeightMatrix& w, index_t rows, index_t cols) {
        c.require(w.rows() == rows && w.cols() == cols, nm, "has shape (", w.rows(), ", ", w.cols(), "), expected (",
                  rows, ", ", cols, ")");
      };
      shape("q_proj", p_.q_proj, hp, H), shape("k_proj", p_.k_proj, kvp, H), shape("v_proj", p_.v_proj, kvp, H);
      shape("o_proj", p_.o_proj, H, hp);
      c.require(!cfg_.rotary || cfg_.head_dim() % 2 == 0, "rotary", "needs an even head size, got ", cfg_.head_dim());
      if (cfg_.rotary) c.require(std::isfinite(cfg_.rotary_base) && cfg_.rotary_base > 1, "rotary_base",
                                 "must be finite and > 1, got ", cfg_.rotary_base);
    } else if (cfg_.kind == HybridKind::mamba) {
      c.require(p_.mamba.config().d_model == cfg_.d_model, "mamba", "has d_model ", p_.mamba.config().d_model,
                ", expected ", cfg_.d_model);
    } else if (cfg_.kind == HybridKind::hyena) {
      c.require(p_.hyena.d_model() == cfg_.d_model, "hyena", "has d_model ", p_.hyena.d_model(), ", expected ",
                cfg_.d_model);
    } else {
      const index_t E = cfg_.n_experts(), H = cfg_.d_model, I = cfg_.d_ff;
      c.require(I >= 1, "d_ff", "must be >= 1, got ", I);
      c.require(cfg_.kind == HybridKind::mlp || (cfg_.top_k >= 1 && cfg_.top_k <= E), "top_k", "must be in [1, ", E,
                "], got ", cfg_.top_k);
      c.defined("router", p_.router).shape("router", p_.router, {E, H});
      c.defined("w_gate_up", p_.w_gate_up).shape("w_gate_up", p_.w_gate_up, {E, 2 * I, H});
      c.defined("w_down", p_.w_down).shape("w_down", p_.w_down, {E, H, I});
    }
  }

  /// A block with random weights: uniform ±fan_in^(−1/2) projections and experts; the Mamba block as
  /// MambaBlock::init (norm weights 1); the Hyena filter as ModalHyenaLayer::init.
  static HybridBlock init(const HybridBlockConfig& cfg, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    auto random = [&](index_t n, index_t fan_in) { return head_mixer::uniform_fan_in<float>(rng, n, double(fan_in)); };
    auto matrix = [&](index_t rows, index_t cols) {
      const std::vector<float> v = random(rows * cols, cols);
      return WeightMatrix::from_f32(v.data(), rows, cols);
    };
    auto tensor = [&](const Dims& shape, index_t fan_in) {
      Tensor t = Tensor::empty(shape, DType::f32);
      const std::vector<float> v = random(t.numel(), fan_in);
      std::copy(v.begin(), v.end(), t.data_as<float>());
      return t;
    };
    Params p;
    const index_t H = cfg.d_model, I = cfg.d_ff, E = cfg.n_experts();
    switch (cfg.kind) {
      case HybridKind::mamba: p.mamba = MambaBlock<float>::init(cfg.mamba, rng()); break;
      case HybridKind::hyena: p.hyena = ModalHyenaLayer<float>::init(cfg.hyena, rng()); break;
      case HybridKind::attention: {
        const index_t hp = cfg.n_heads * cfg.head_dim(), kvp = cfg.n_kv_heads * cfg.head_dim();
        p.q_proj = matrix(hp, H), p.k_proj = matrix(kvp, H), p.v_proj = matrix(kvp, H), p.o_proj = matrix(H, hp);
        break;
      }
      case HybridKind::mlp:
      case HybridKind::moe:
        p.router = cfg.kind == HybridKind::mlp ? Tensor::zeros({1, H}, DType::f32) : tensor({E, H}, H);
        p.w_gate_up = tensor({E, 2 * I, H}, H);
        p.w_down = tensor({E, H, I}, I);
        break;
    }
    return HybridBlock(cfg, std::move(p));
  }

  const HybridBlockConfig& config() const { return cfg_; }
  const Params& params() const { return p_; }

  std::size_t nbytes() const {
    switch (cfg_.kind) {
      case HybridKind::mamba: return p_.mamba.nbytes();
      case HybridKind::hyena: return p_.hyena.nbytes();
      case HybridKind::attention: return p_.q_proj.nbytes() + p_.k_proj.nbytes() + p_.v_proj.nbytes() + p_.o_proj.nbytes();
      default: return p_.router.nbytes() + p_.w_gate_up.nbytes() + p_.w_down.nbytes();
    }
  }

  void set_threads(int n) {
    SSM_CHECK(n >= 0, "HybridBlock::set_threads: n must be >= 0 (0 = automatic), got ", n);
    threads_ = n;
    if (cfg_.kind == HybridKind::mamba) p_.mamba.set_threads(n);
    if (cfg_.kind == HybridKind::hyena) p_.hyena.set_threads(n);
  }

  /// The device the block computes on: where its parameters are (to()); the CPU unless moved.
  Device device() const { return dev_ ? dev_->device : Device::cpu(); }

  /// This block with its parameters copied to `device` (the same block for the CPU): forward_into and step_into then
  /// take tensors and caches there and run the same ops (a Mamba block: MambaBlock::to). The weight matrices keep
  /// their dtype; params() stays on the CPU; copies of the moved block share the device copy. A Hyena block is
  /// refused (ModalHyenaLayer computes on the CPU: its projections, short convolution and decoding state; the Hyena
  /// op's forward alone runs on CUDA), as is an attention block the CUDA kernels cannot take (head size over 128).
  HybridBlock to(Device device) const {
    HybridBlock m = *this;
    m.dev_.reset();
    if (cfg_.kind == HybridKind::mamba) m.p_.mamba = p_.mamba.to(device);
    if (device.is_cpu()) return m;
    Checker c("HybridBlock::to");
    c.require(cfg_.kind != HybridKind::hyena, "device", "a hyena block runs on the CPU only (ModalHyenaLayer has no ",
              "device path; StripedHyena stays on the CPU), asked for ", device.str());
    if (cfg_.kind == HybridKind::attention && device.is_cuda())
      c.require(cfg_.head_dim() <= kAttentionMaxHeadDim, "n_heads", "the CUDA attention kernels take head sizes up ",
                "to ", kAttentionMaxHeadDim, ", got d_model / n_heads = ", cfg_.head_dim());
    auto d = std::make_shared<DeviceParams>();
    d->device = device;
    auto up = [&](const Tensor& t) { return t.defined() ? upload(t.view(), device) : Tensor(); };
    if (cfg_.kind == HybridKind::attention) {
      d->q_proj = up(p_.q_proj.tensor()), d->k_proj = up(p_.k_proj.tensor());
      d->v_proj = up(p_.v_proj.tensor()), d->o_proj = up(p_.o_proj.tensor());
    }
    d->router = up(p_.router), d->w_gate_up = up(p_.w_gate_up), d->w_down = up(p_.w_down);
    m.dev_ = std::move(d);
    return m;
  }

  /// A fresh cache for b sequences on the block's device.
  HybridLayerCache make_cache(index_t b) const {
    HybridLayerCache c;
    if (cfg_.kind == HybridKind::mamba) c.recurrent = p_.mamba.make_cache(b);
    if (cfg_.kind == HybridKind::hyena) static_cast<ConvSsmCache&>(c.recurrent) = p_.hyena.init_state(b);
    if (cfg_.kind == HybridKind::attention) c.kv.emplace(b, cfg_.n_kv_heads, cfg_.head_dim(), DType::f32, 0, device());
    c.recurrent.b = b;
    return c;
  }

  void check_cache(const HybridLayerCache& c) const {
    if (cfg_.kind == HybridKind::mamba) p_.mamba.check_cache(c.recurrent);
    if (cfg_.kind == HybridKind::hyena) p_.hyena.check_state(Checker("HybridBlock"), c.recurrent, c.recurrent.b);
    if (cfg_.kind == HybridKind::attention)
      SSM_CHECK(c.kv && c.kv->batch() == c.recurrent.b && c.kv->kv_heads() == cfg_.n_kv_heads &&
                    c.kv->head_dim() == cfg_.head_dim() && c.kv->dtype() == DType::f32 && c.kv->device() == device(),
                "HybridBlock: the cache of an attention layer must hold an f32 KV cache of ", cfg_.n_kv_heads,
                " heads of ", cfg_.head_dim(), " on ", device().str(), " (make_cache)");
  }

  index_t workspace_size(index_t b) const { return cfg_.kind == HybridKind::mamba ? p_.mamba.workspace_size(b) : 0; }

  /// x, y (b, l, H) contiguous f32. With a cache: the cache is filled (or, with resume, continued: exactly, the conv
  /// state included, unlike transformers' second multi-token forward).
  void forward_into(const TensorView& x, const TensorView& y, HybridLayerCache* cache, bool resume) const {
    const index_t b = x.size(0), l = x.size(1), H = cfg_.d_model;
    Checker("HybridBlock").device("x", x, device()).device("y", y, device());
    // not resumed: a new cache (the Hyena layer makes its own state below)
    if (cache != nullptr && !resume) *cache = cfg_.kind == HybridKind::hyena ? HybridLayerCache{} : make_cache(b);
    if (cache != nullptr && resume) {
      check_cache(*cache);
      SSM_CHECK(cache->recurrent.b == b, "HybridBlock: a cache of ", cache->recurrent.b, " sequences for ", b);
    }
    switch (cfg_.kind) {
      case HybridKind::mamba: {
        std::optional<TensorView> conv, ssm;
        if (cache != nullptr) conv = cache->recurrent.conv_state.view(), ssm = cache->recurrent.ssm_state.view();
        p_.mamba.forward_into(x, y, conv, ssm, resume);
        return;
      }
      case HybridKind::hyena:
        p_.hyena.forward_into(x, y, cache != nullptr ? &cache->recurrent : nullptr, resume);
        return;
      case HybridKind::attention: {  // with a cache, positions continue after the cached tokens
        AttentionOptions opt;
        opt.n_threads = threads_;
        const attention_sublayer::Heads heads{cfg_.n_heads, cfg_.n_kv_heads, cfg_.head_dim(), cfg_.rotary,
                                              cfg_.rotary_base};
        attention_sublayer::forward_into(x, y, attention_weights(), heads, cache != nullptr ? &*cache->kv : nullptr,
                                         opt, threads_);
        return;
      }
      default: {
        MoeOptions opt;
        opt.top_k = cfg_.kind == HybridKind::moe ? cfg_.top_k : 1;
        opt.normalize_topk = cfg_.normalize_topk;
        opt.threads = threads_;
        const Tensor& router = dev_ ? dev_->router : p_.router;  // (E, H)
        const Tensor& w_gate_up = dev_ ? dev_->w_gate_up : p_.w_gate_up;  // (E, 2I, H)
        const Tensor& w_down = dev_ ? dev_->w_down : p_.w_down;  // (E, H, I)
        moe_into({x.reshape({b * l, H}), router, w_gate_up, w_down}, y.reshape({b * l, H}), std::nullopt, opt);
      }
    }
  }

  /// One token: x, y (b, H); the cache advanced by it. work: workspace_size(b) f32 elements.
  void step_into(const TensorView& x, const TensorView& y, HybridLayerCache& cache, const TensorView& work) const {
    const index_t b = x.size(0), H = cfg_.d_model;
    if (cfg_.kind == HybridKind::mamba) {
      p_.mamba.step_into(x, y, cache.recurrent.conv_state, cache.recurrent.ssm_state, work);
      return;
    }
    forward_into(x.reshape({b, 1, H}), y.reshape({b, 1, H}), &cache, true);
  }

  /// The router logits (t, E) of x (t, H) (kind moe), on the block's device: what the load-balancing loss reads.
  Tensor router_logits(const TensorView& x) const {
    SSM_CHECK(cfg_.kind == HybridKind::moe, "HybridBlock::router_logits: a ", name(cfg_.kind), " block has no router");
    const index_t t = x.size(0), E = cfg_.experts;
    Tensor out = Tensor::empty({t, E}, DType::f32, device());
    linear_into({x, dev_ ? dev_->router : p_.router, std::nullopt}, out);
    return out;
  }

 private:
  // The parameters on a device other than the CPU (to()), but the Mamba block's (it holds its own).
  struct DeviceParams {
    Device device;
    Tensor q_proj, k_proj, v_proj, o_proj;  // kind attention, in the matrices' dtype
    Tensor router, w_gate_up, w_down;       // kinds mlp / moe
  };

  attention_sublayer::Weights attention_weights() const {
    if (dev_) return {dev_->q_proj, dev_->k_proj, dev_->v_proj, dev_->o_proj};
    return {p_.q_proj.tensor(), p_.k_proj.tensor(), p_.v_proj.tensor(), p_.o_proj.tensor()};
  }

  HybridBlockConfig cfg_;
  Params p_;
  int threads_ = 0;
  std::shared_ptr<const DeviceParams> dev_;  // on device() when not the CPU (to())
};

}  // namespace ssm::layers
