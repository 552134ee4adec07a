// One causal language model body over recurrent blocks (docs/math.md §6.2): token embedding (→ an embedding norm) →
// n sublayers × (pre-norm → block, residual add in f32) → final norm → lm_head (the embedding when tied); the norms
// are RMSNorm (Mamba, Jamba) or LayerNorm with a bias (RWKV). Logits of a sequence, prefill then token-by-token
// generation (greedy, temperature, top-k, top-p, seeded; streamed) with a copyable cache (of constant size, but for
// attention layers' keys and values), the CPU or a device (to()), set_threads, and the model's Hugging Face checkpoint
// layout. MambaLM (models/mamba.hpp), Mamba2LM (models/mamba2.hpp), RwkvLM (models/rwkv.hpp) and JambaLM
// (models/jamba.hpp) are this body over their blocks; what differs between them (the config, the norms, the blocks and
// the tensor names) is the Spec:
//
//   struct Spec {
//     static constexpr const char* name;   // "MambaLM": prefixes errors ("MambaLM::load: ...")
//     static constexpr const char* model;  // "Mamba": in "not part of a Mamba model with this config"
//     using Config;      // d_model, vocab_size, padded_vocab(), tie_embeddings, eos_token_ids, validate(),
//                        // static from_json(json), to_json()
//     using Block;       // make_cache(b), check_cache, forward_into, step_into, workspace_size(b), set_threads,
//                        // to(Device), nbytes()
//     using LayerCache;  // the block's per-layer cache (conv_state, ssm_state), or one the block takes whole
//                        // (forward_into(x, y, LayerCache*, resume), step_into(x, y, LayerCache&, work)); such a
//                        // block makes the whole layer cache itself, from a default one, when not resumed
//     static constexpr bool layer_norm;            // LayerNorm (weight and bias) norms, else RMSNorm (weight)
//     static constexpr const char* embedding;      // tensor names: "backbone.embeddings.weight"
//     static constexpr const char* embedding_alias;  // another name of the embedding, or nullptr
//     static constexpr const char* embedding_norm;   // the norm applied to the embedding ("….pre_ln"), or nullptr
//     static constexpr const char* final_norm;     // "backbone.norm_f" (norms without ".weight" / ".bias")
//     static constexpr const char* head;           // "lm_head.weight"
//     static index_t sublayers(const Config&);     // how many (norm → block) sublayers
//     static std::string norm_name(index_t j);     // sublayer j's pre-norm: "backbone.layers.j.norm"
//     static std::string block_prefix(index_t j);  // sublayer j's block: "backbone.layers.j.mixer."
//     static double norm_eps(const Config&, index_t j);  // j in [0, sublayers): the pre-norms; sublayers: the final
//                                                        // norm; −1: the embedding norm
//     static Block init_block(const Config&, index_t j, std::uint64_t seed);
//     static Block load_block(CheckpointReader&, const Config&, index_t j);
//     static void save_block(const Block&, const Config&, F&& add);  // add(name suffix, f32 values, shape)
//   };
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/layers/basic.hpp"
#include "ssm/layers/weight.hpp"
#include "ssm/models/checkpoint.hpp"
#include "ssm/models/generation.hpp"
#include "ssm/models/safetensors.hpp"
#include "ssm/ops/embedding.hpp"
#include "ssm/ops/layer_norm.hpp"
#include "ssm/ops/linear.hpp"
#include "ssm/ops/rms_norm.hpp"

namespace ssm::models {

/// The decoding state of b sequences: one layer cache per layer plus the number of tokens seen. A plain value:
/// copying it forks the sequences. Its size is independent of the context length, except for attention layers'
/// keys and values (Jamba).
template <class LayerCache>
struct LMCache {
  index_t b = 0;
  index_t seqlen = 0;
  std::vector<LayerCache> layers;

  std::size_t nbytes() const {
    std::size_t s = 0;
    for (const auto& l : layers) s += l.nbytes();
    return s;
  }
};

/// The layout of the Mamba language models' checkpoints (transformers' MambaForCausalLM and Mamba2ForCausalLM) that
/// their Specs share: backbone.embeddings.weight (mamba_ssm: backbone.embedding.weight), backbone.layers.i.{norm,
/// mixer.*}, backbone.norm_f, lm_head.weight; one RMSNorm → block sublayer per layer, every norm with
/// Config::norm_epsilon.
struct BackboneLayout {
  static constexpr bool layer_norm = false;
  static constexpr const char* embedding = "backbone.embeddings.weight";
  static constexpr const char* embedding_alias = "backbone.embedding.weight";
  static constexpr const char* embedding_norm = nullptr;
  static constexpr const char* final_norm = "backbone.norm_f";
  static constexpr const char* head = "lm_head.weight";
  static std::string norm_name(index_t j) { return "backbone.layers." + std::to_string(j) + ".norm"; }
  static std::string block_prefix(index_t j) { return "backbone.layers." + std::to_string(j) + ".mixer."; }
  template <class Config>
  static index_t sublayers(const Config& cfg) {
    return cfg.n_layer;
  }
  template <class Config>
  static double norm_eps(const Config& cfg, index_t) {
    return cfg.norm_epsilon;
  }
};

/// The language model over Spec's block: f32 activations and arithmetic; the embedding, lm_head and the blocks'
/// big matrices in f32, f16 or bf16 (LoadOptions::weight_dtype).
template <class Spec>
class CausalLM {
 public:
  using Config = typename Spec::Config;
  using Block = typename Spec::Block;
  using Cache = LMCache<typename Spec::LayerCache>;

  /// A randomly initialized model: embedding (and untied lm_head) N(0, 0.02), norms 1 (biases 0), blocks as
  /// Spec::init_block makes them.
  static CausalLM init(const Config& cfg, std::uint64_t seed) {
    cfg.validate();
    CausalLM m;
    m.cfg_ = cfg;
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> N(0.0f, 0.02f);
    std::vector<float> table(static_cast<std::size_t>(cfg.padded_vocab() * cfg.d_model));
    for (auto& x : table) x = N(rng);
    m.embedding_ = layers::WeightMatrix::from_f32(table.data(), cfg.padded_vocab(), cfg.d_model);
    if (!cfg.tie_embeddings) {
      for (auto& x : table) x = N(rng);
      m.lm_head_ = layers::WeightMatrix::from_f32(table.data(), cfg.padded_vocab(), cfg.d_model);
    }
    for (index_t j = 0; j < Spec::sublayers(cfg); ++j) {
      m.blocks_.push_back(Spec::init_block(cfg, j, rng()));
      m.norms_.push_back(Norm::ones(cfg.d_model));
    }
    m.norm_f_ = Norm::ones(cfg.d_model);
    if (Spec::embedding_norm != nullptr) m.embedding_norm_ = Norm::ones(cfg.d_model);
    return m;
  }

  /// Loads a checkpoint directory: `config.json` (Config::from_json) and the weights, either `model.safetensors` or
  /// the shards named by `model.safetensors.index.json` (F32, F16, BF16, F64; every file memory-mapped; the big
  /// matrices kept in their dtype or converted as `opt` says, the rest converted to f32). Throws ssm::Error for a
  /// missing file, an unsupported model type, a bad config, a malformed file or index, a missing, extra or wrongly
  /// shaped tensor, a non-floating dtype, or a weight_dtype other than f32, f16, bf16; a PyTorch pickle checkpoint
  /// (pytorch_model.bin) is named with the command that converts it.
  static CausalLM load(const std::string& dir, const LoadOptions& opt = {}) {
    const std::string op = std::string(Spec::name) + "::load";
    // The config first: a model this library does not implement is named before its tensors are looked at.
    const Config cfg = Config::from_json(read_config_json(dir, op));
    return from_checkpoint(cfg, models::open_weights(dir, op), opt);
  }

  /// The weights of a checkpoint directory (models::open_weights).
  static safetensors::Checkpoint open_weights(const std::string& dir) {
    return models::open_weights(dir, std::string(Spec::name) + "::load");
  }

  /// Builds the model from one parsed safetensors file under the Hugging Face tensor names (Spec's; for Mamba,
  /// mamba_ssm's `backbone.embedding.weight` is accepted too).
  static CausalLM from_safetensors(const Config& cfg, const safetensors::File& f, const LoadOptions& opt = {}) {
    return from_checkpoint(cfg, safetensors::Checkpoint(f), opt);
  }

  /// from_safetensors over a checkpoint of one or more files (a sharded checkpoint).
  static CausalLM from_checkpoint(const Config& cfg, const safetensors::Checkpoint& f, const LoadOptions& opt = {}) {
    cfg.validate();
    CheckpointReader r(f, std::string(Spec::name) + "::load", opt);
    CausalLM m;
    m.cfg_ = cfg;
    const Dims emb_shape{cfg.padded_vocab(), cfg.d_model};
    const bool alias = Spec::embedding_alias != nullptr && r.contains(Spec::embedding_alias);
    m.embedding_ = r.take_matrix(alias ? Spec::embedding_alias : Spec::embedding, emb_shape);
    auto norm = [&](const std::string& prefix, Norm& n) {
      r.take(prefix + ".weight", Dims{cfg.d_model}, n.weight);
      if (Spec::layer_norm) r.take(prefix + ".bias", Dims{cfg.d_model}, n.bias);
    };
    if (Spec::embedding_norm != nullptr) norm(Spec::embedding_norm, m.embedding_norm_);
    for (index_t j = 0; j < Spec::sublayers(cfg); ++j) {
      m.blocks_.push_back(Spec::load_block(r, cfg, j));
      m.norms_.emplace_back();
      norm(Spec::norm_name(j), m.norms_.back());
    }
    norm(Spec::final_norm, m.norm_f_);
    if (!cfg.tie_embeddings) {
      m.lm_head_ = r.take_matrix(Spec::head, emb_shape);
    } else if (r.contains(Spec::head)) {
      // Some writers store the tied head as well: accept it when it is the embedding.
      const layers::WeightMatrix head = r.take_matrix(Spec::head, emb_shape);
      SSM_CHECK(head.same_values(m.embedding_), Spec::name, "::load: tie_word_embeddings is set but '", Spec::head,
                "' differs from the embedding");
    }
    r.finish(Spec::model);
    return m;
  }

  /// Writes config.json and model.safetensors (in `dtype`: f32, f16 or bf16) into `dir` (created).
  void save(const std::string& dir, DType dtype = DType::f32) const {
    namespace fs = std::filesystem;
    SSM_CHECK(dtype == DType::f32 || dtype == DType::f16 || dtype == DType::bf16, Spec::name, "::save: dtype ",
              name(dtype), " is not one of f32, f16, bf16");
    fs::create_directories(dir);
    {
      std::ofstream os(fs::path(dir) / "config.json");
      os << cfg_.to_json().dump(2) << "\n";
      SSM_CHECK(os.good(), Spec::name, "::save: cannot write config.json in '", dir, "'");
    }
    std::vector<Tensor> keep;
    std::vector<std::pair<std::string, TensorView>> named;
    for_each_weight([&](const std::string& name, const std::vector<float>& v, const Dims& shape) {
      // A matrix already in `dtype` could be written as it is; through f32 the bytes are the same (f16 and bf16
      // round-trip exactly through f32).
      Tensor t = Tensor::empty(shape, dtype);  // shape as in the checkpoint
      for (std::size_t i = 0; i < v.size(); ++i) {
        if (dtype == DType::f32) t.data_as<float>()[i] = v[i];
        if (dtype == DType::f16) t.data_as<half>()[i] = half(v[i]);
        if (dtype == DType::bf16) t.data_as<bfloat16>()[i] = bfloat16(v[i]);
      }
      keep.push_back(t);
      named.emplace_back(name, t.view());
    });
    safetensors::save((fs::path(dir) / "model.safetensors").string(), named, {{"format", "pt"}});
  }

  /// f(name, values, shape) for every weight under its checkpoint name, in f32 (a 16-bit matrix converted), in the
  /// order save() writes them: what save() writes and models::to_trainable reads.
  template <class F>
  void for_each_weight(F&& f) const {
    auto norm = [&](const std::string& prefix, const Norm& n) {
      f(prefix + ".weight", n.weight, Dims{cfg_.d_model});
      if (Spec::layer_norm) f(prefix + ".bias", n.bias, Dims{cfg_.d_model});
    };
    f(std::string(Spec::embedding), embedding_.to_f32(), Dims{cfg_.padded_vocab(), cfg_.d_model});
    if (Spec::embedding_norm != nullptr) norm(Spec::embedding_norm, embedding_norm_);
    for (std::size_t j = 0; j < blocks_.size(); ++j) {
      const std::string pre = Spec::block_prefix(static_cast<index_t>(j));
      Spec::save_block(blocks_[j], cfg_,
                       [&](const char* name, const std::vector<float>& v, const Dims& s) { f(pre + name, v, s); });
      norm(Spec::norm_name(static_cast<index_t>(j)), norms_[j]);
    }
    norm(Spec::final_norm, norm_f_);
    if (!cfg_.tie_embeddings) f(std::string(Spec::head), lm_head_.to_f32(), Dims{cfg_.padded_vocab(), cfg_.d_model});
  }

  const Config& config() const { return cfg_; }
  const std::vector<Block>& blocks() const { return blocks_; }

  /// The dtype of the embedding (the big matrices' dtype for a model loaded with one LoadOptions::weight_dtype
  /// or from a checkpoint of one dtype).
  DType weight_dtype() const { return embedding_.dtype(); }
  /// Bytes of all parameters as held (matrices in their dtype, the rest f32); a matrix viewing the mapped
  /// checkpoint counts as the file pages it reads.
  std::size_t weight_bytes() const {
    std::size_t n = embedding_.nbytes() + lm_head_.nbytes() + norm_f_.nbytes() + embedding_norm_.nbytes();
    for (std::size_t i = 0; i < blocks_.size(); ++i) n += blocks_[i].nbytes() + norms_[i].nbytes();
    return n;
  }

  /// Threads the CPU forward, prefill, step and the logits GEMM may use: every block's and the lm_head's. 0 (the
  /// default): automatic, the hardware threads, fewer for a small problem (ssm::cpu::cpu_threads). Results depend
  /// on it only by rounding (the GEMMs block their sums by each thread's share of the features).
  void set_threads(int n) {
    SSM_CHECK(n >= 0, Spec::name, "::set_threads: n must be >= 0 (0 = automatic), got ", n);
    threads_ = n;
    for (auto& b : blocks_) b.set_threads(n);
  }
  /// The thread count set by set_threads (0: automatic).
  int threads() const { return threads_; }

  /// The device the model computes on: the CPU unless moved with to().
  Device device() const { return dev_ ? dev_->device : Device::cpu(); }

  /// This model on `device` (the same model for the CPU): every weight copied there (the big matrices in the dtype
  /// they are held in), the CPU weights kept. logits, prefill, step and generate then run the same code (the ops of
  /// every block and of the head) on that device, with caches (make_cache) and logits there; token ids may be CPU
  /// tensors or on the device. An op without an entry for that device is an ssm::Error naming it when it runs.
  CausalLM to(Device device) const {
    CausalLM m = *this;
    m.dev_.reset();
    m.blocks_.clear();
    for (const auto& blk : blocks_) m.blocks_.push_back(blk.to(device));
    if (device.is_cpu()) return m;
    auto d = std::make_shared<DeviceWeights>();
    d->device = device;
    d->embedding = layers::upload(embedding_.tensor().view(), device);
    if (!cfg_.tie_embeddings) d->lm_head = layers::upload(lm_head_.tensor().view(), device);
    d->norm_f = norm_f_.upload(device);
    d->embedding_norm = embedding_norm_.upload(device);
    for (const auto& n : norms_) d->norms.push_back(n.upload(device));
    m.dev_ = std::move(d);
    return m;
  }

  /// A zero cache for b sequences on the model's device.
  Cache make_cache(index_t b) const {
    SSM_CHECK(b >= 1, Spec::name, "::make_cache: b must be >= 1, got ", b);
    Cache c;
    c.b = b;
    for (const auto& blk : blocks_) c.layers.push_back(blk.make_cache(b));
    return c;
  }

  /// Logits for every position: ids (b, l) i32 or i64, on the CPU or the model's device → (b, l, padded_vocab) f32 on
  /// the model's device (device(); a model moved with to() runs there). Ids on another device (e.g. CUDA ids given
  /// to a CPU model) are an ssm::Error that says to move the model: the model never moves by itself.
  Tensor logits(const TensorView& ids) const { return logits(ids, nullptr); }

  /// Called with each sublayer's index j and its input x (b, l, d_model) (after the pre-norm) before the block runs.
  using BlockObserver = std::function<void(index_t j, const TensorView& x)>;

  /// logits() that hands every block's input to `observe` (for example to read the routers of a mixture of experts,
  /// models/jamba.hpp's jamba_router_logits). The views are valid during the call only.
  Tensor logits(const TensorView& ids, const BlockObserver& observe) const {
    Checker c(std::string(Spec::name) + "::logits");
    check_ids(c, ids);
    const index_t b = ids.size(0), l = ids.size(1), dm = cfg_.d_model;
    Tensor keep;
    Stream h = hidden(on_device(ids, keep), nullptr, false, observe ? &observe : nullptr);  // (b, l, d_model) twice
    Tensor out = Tensor::empty({b, l, cfg_.padded_vocab()}, DType::f32, device());  // (b, l, V)
    head(h.y.view().reshape({b * l, dm}), h.res.view().reshape({b * l, dm}), out);
    return out;
  }

  /// Runs the prompts ids (b, l) through the model in parallel, fills `cache` and returns the logits of the last
  /// position (b, padded_vocab). The cache is reset first, unless `resume` is set: then the tokens continue the
  /// sequences in `cache` (a long prompt can be prefilled in chunks). The ids (shape, dtype, device, range) and a
  /// resumed cache are checked before anything is written, and a prefill that is not resumed fills a new cache that
  /// replaces `cache` only once it is complete: a refused or failing call leaves the caller's cache as it was (a
  /// resumed one is updated in place, layer by layer, so an op failing after the checks leaves it part-way).
  Tensor prefill(const TensorView& ids, Cache& cache, bool resume = false) const {
    Checker c(std::string(Spec::name) + "::prefill");
    check_ids(c, ids);
    c.require(ids.size(0) >= 1, "ids", "expected at least one sequence");
    c.require(ids.size(1) >= 1, "ids", "the prompt must hold at least one token");
    const index_t b = ids.size(0), l = ids.size(1), dm = cfg_.d_model;
    if (resume) {
      c.require(cache.b == b && cache.layers.size() == blocks_.size(), "cache", "resume needs a cache made for ", b,
                " sequences and ", blocks_.size(), " layers");
      for (std::size_t i = 0; i < blocks_.size(); ++i) blocks_[i].check_cache(cache.layers[i]);
    }
    Cache fresh;  // the new cache of a prefill that is not resumed
    if (!resume) {
      if constexpr (kTakesCache) {  // each block makes its own layer cache when not resumed: none is allocated twice
        fresh.b = b;
        fresh.layers.resize(blocks_.size());
      } else {
        fresh = make_cache(b);
      }
    }
    Cache& target = resume ? cache : fresh;
    Tensor keep;
    Stream h = hidden(on_device(ids, keep), &target, resume);  // (b, l, d_model) twice
    // The last position of every sequence: rows l - 1, 2l - 1, ... (row stride l · d_model).
    Tensor out = Tensor::empty({b, cfg_.padded_vocab()}, DType::f32, device());  // (b, V)
    head(h.y.view().reshape({b, l, dm}).select(1, l - 1), h.res.view().reshape({b, l, dm}).select(1, l - 1), out);
    target.seqlen = resume ? target.seqlen + l : l;
    if (!resume) cache = std::move(fresh);
    return out;
  }

  /// One token per sequence: ids (b) → logits (b, padded_vocab); advances the cache by one token. The ids and the
  /// cache are checked before the cache is written.
  Tensor step(std::span<const std::int64_t> ids, Cache& cache) const {
    SSM_CHECK(static_cast<index_t>(ids.size()) == cache.b && cache.b >= 1, Spec::name, "::step: ", ids.size(),
              " token ids for a cache of ", cache.b, " sequences");
    SSM_CHECK(cache.layers.size() == blocks_.size(), Spec::name, "::step: cache has ", cache.layers.size(),
              " layers, the model ", blocks_.size());
    for (std::size_t i = 0; i < blocks_.size(); ++i) blocks_[i].check_cache(cache.layers[i]);
    const index_t b = cache.b, dm = cfg_.d_model;
    check_range(Checker(std::string(Spec::name) + "::step"), TensorView::of(ids.data(), {b}));
    Stream h(b, dm, device());                                 // (b, d_model) twice
    Tensor x = Tensor::empty({b, dm}, DType::f32, device());  // (b, d_model)
    index_t work_size = 0;
    for (const auto& blk : blocks_) work_size = std::max(work_size, blk.workspace_size(b));
    Tensor work = Tensor::empty({work_size}, DType::f32, device());
    Tensor keep;
    embed(on_device(TensorView::of(ids.data(), {b}), keep), h.res);
    for (std::size_t i = 0; i < blocks_.size(); ++i) {
      pre_norm(i, h, x);
      if constexpr (kTakesCache) blocks_[i].step_into(x, h.y, cache.layers[i], work);
      else blocks_[i].step_into(x, h.y, cache.layers[i].conv_state, cache.layers[i].ssm_state, work);
    }
    Tensor out = Tensor::empty({b, cfg_.padded_vocab()}, DType::f32, device());  // (b, V)
    head(h.y, h.res, out);
    ++cache.seqlen;
    return out;
  }

  /// Prefills `prompt` (one sequence) and generates up to max_new_tokens tokens; returns only the new ones.
  /// Stops after a stop token (opt.stop_ids, by default the config's eos_token_ids), which is returned as the
  /// last token, as transformers' generate() does. Sampling is over the first vocab_size logits (padding rows
  /// are never produced). When `cache` is given it holds the state after the last generated token has been
  /// fed (ready to continue).
  std::vector<std::int64_t> generate(const std::vector<std::int64_t>& prompt, index_t max_new_tokens,
                                     const GenerationOptions& opt = {}, Cache* cache = nullptr) const {
    std::vector<std::int64_t> out;
    generate_stream(prompt, max_new_tokens, opt, [&](std::int64_t id) {
      out.push_back(id);
      return true;
    }, cache);
    return out;
  }

  /// Greedy continuation of one prompt (argmax, lowest id on ties): generate() with temperature 0, stopping after
  /// an end-of-sequence id of the config when stop_at_eos.
  std::vector<std::int64_t> generate_greedy(std::span<const std::int64_t> prompt, index_t max_new_tokens,
                                            bool stop_at_eos = true) const {
    GenerationOptions opt;
    if (!stop_at_eos) opt.stop_ids.emplace();
    return generate(std::vector<std::int64_t>(prompt.begin(), prompt.end()), max_new_tokens, opt);
  }

  /// generate() that hands each new token to `on_token` as soon as it is sampled, before the model computes the
  /// next one (for printing text as it is generated); on_token returning false ends the generation after that
  /// token. The tokens are those generate() returns. Without `cache` the last token is not fed back (nothing
  /// would read the state it makes). The prompt is prefilled in chunks of opt.prefill_chunk tokens when that is
  /// set. Returns the number of tokens generated.
  index_t generate_stream(const std::vector<std::int64_t>& prompt, index_t max_new_tokens, const GenerationOptions& opt,
                          const std::function<bool(std::int64_t)>& on_token, Cache* cache = nullptr) const {
    opt.validate();
    SSM_CHECK(max_new_tokens >= 0, Spec::name, "::generate: max_new_tokens must be >= 0, got ", max_new_tokens);
    SSM_CHECK(!prompt.empty(), Spec::name, "::generate: the prompt must hold at least one token");
    for (std::size_t i = 0; i < prompt.size(); ++i)
      SSM_CHECK(prompt[i] >= 0 && prompt[i] < cfg_.vocab_size, Spec::name, "::generate: prompt token ", prompt[i],
                " at position ", i, " is outside the model's vocabulary [0, ", cfg_.vocab_size, ")");
    const std::vector<std::int64_t>& stop = opt.stop_ids ? *opt.stop_ids : cfg_.eos_token_ids;
    Cache local;
    Cache& c = cache != nullptr ? *cache : local;
    std::mt19937_64 rng(opt.seed);
    const index_t n = static_cast<index_t>(prompt.size());
    const index_t chunk = opt.prefill_chunk > 0 ? opt.prefill_chunk : n;
    Tensor lg;
    for (index_t start = 0; start < n; start += chunk) {
      const index_t len = std::min(chunk, n - start);
      lg = prefill(TensorView::of(prompt.data() + start, {1, len}), c, /*resume=*/start > 0);
    }
    index_t produced = 0;
    for (index_t t = 0; t < max_new_tokens; ++t) {
      if (!lg.device().is_cpu()) lg = lg.to(Device::cpu());  // sampled on the host
      const std::int64_t id = sample_token(
          std::span<const float>(lg.data_as<float>(), static_cast<std::size_t>(cfg_.vocab_size)), opt, rng);
      ++produced;
      const bool more = on_token(id) && t + 1 < max_new_tokens && std::find(stop.begin(), stop.end(), id) == stop.end();
      if (more || cache != nullptr) lg = step(std::span<const std::int64_t>(&id, 1), c);
      if (!more) break;
    }
    return produced;
  }

 private:
  // Whether the block reads and writes its layer cache as a whole (forward_into(x, y, LayerCache*, resume),
  // step_into(x, y, LayerCache&, work): Jamba, whose attention layers' caches grow) rather than as the two tensors
  // conv_state and ssm_state of a constant-size cache.
  static constexpr bool kTakesCache = requires(const Block& blk, const TensorView& v, typename Spec::LayerCache* c) {
    blk.forward_into(v, v, c, true);
  };

  // ids (b, l): i32 or i64, contiguous, on the CPU or the model's device, every id a row of the embedding.
  void check_ids(const Checker& c, const TensorView& ids) const {
    c.defined("ids", ids).rank("ids", ids, 2);
    c.require(ids.dtype() == DType::i64 || ids.dtype() == DType::i32, "ids", "expected dtype i32 or i64, got ",
              name(ids.dtype()));
    c.require(ids.is_contiguous(), "ids", "expected a contiguous tensor, got strides ", ids.strides().str());
    c.require(ids.device().is_cpu() || ids.device() == device(), "ids", "expected a cpu tensor or one on the model's device ",
              device().str(), ", got ", ids.device().str(), ": run a model on that device (model.to(Device::",
              ids.device().is_cuda() ? "cuda(" + std::to_string(ids.device().index) + ")" : ids.device().str(),
              "), which copies the weights there once)");
    check_range(c, ids);
  }

  // Every id in [0, padded_vocab): read on the host (ids on a device are copied back, a few bytes a token).
  void check_range(const Checker& c, const TensorView& ids) const {
    Tensor host;
    const TensorView h = ids.device().is_cpu() ? ids : (host = Tensor::empty(ids.shape(), ids.dtype())).view();
    if (!ids.device().is_cpu()) copy(h, ids);
    const index_t n = ids.numel(), V = cfg_.padded_vocab();
    for (index_t i = 0; i < n; ++i) {
      const std::int64_t id = h.dtype() == DType::i64 ? static_cast<const std::int64_t*>(h.data())[i]
                                                      : static_cast<const std::int32_t*>(h.data())[i];
      c.require(id >= 0 && id < V, "ids", "token id ", id, " at position ", i, " is outside [0, ", V,
                ") (the embedding's rows)");
    }
  }

  // ids on the model's device: ids itself, or a copy of CPU ids held by `keep`.
  TensorView on_device(const TensorView& ids, Tensor& keep) const {
    if (ids.device() == device()) return ids;
    keep = Tensor::empty(ids.shape(), ids.dtype(), device());
    copy(keep.view(), ids);
    return keep.view();
  }

  // A norm's parameters: weight (d_model), and bias (d_model) for a LayerNorm (empty for an RMSNorm, or a norm the
  // model does not have).
  struct Norm {
    std::vector<float> weight, bias;

    static Norm ones(index_t d) {
      Norm n;
      n.weight.assign(static_cast<std::size_t>(d), 1.0f);
      if (Spec::layer_norm) n.bias.assign(static_cast<std::size_t>(d), 0.0f);
      return n;
    }
    std::size_t nbytes() const { return (weight.size() + bias.size()) * sizeof(float); }
    struct OnDevice {
      Tensor weight, bias;  // (d_model) each; bias undefined without one
    };
    OnDevice upload(Device device) const {
      OnDevice d;
      if (!weight.empty()) d.weight = layers::upload(TensorView::of(weight.data(), {static_cast<index_t>(weight.size())}), device);
      if (!bias.empty()) d.bias = layers::upload(TensorView::of(bias.data(), {static_cast<index_t>(bias.size())}), device);
      return d;
    }
  };
  // A norm's views on the model's device.
  struct NormView {
    TensorView weight;
    std::optional<TensorView> bias;
  };

  // The embedding, lm_head (the embedding when tied), norms on the model's device.
  TensorView embedding_view() const { return dev_ ? dev_->embedding.view() : embedding_.tensor().view(); }
  TensorView head_view() const {
    if (cfg_.tie_embeddings) return embedding_view();
    return dev_ ? dev_->lm_head.view() : lm_head_.tensor().view();
  }
  NormView norm_view(const Norm& n, const typename Norm::OnDevice* d) const {
    if (d != nullptr) return {d->weight.view(), layers::optional_view(d->bias)};
    return {TensorView::of(n.weight.data(), {cfg_.d_model}), layers::optional_view(n.bias)};
  }
  NormView norm_view(std::size_t i) const { return norm_view(norms_[i], dev_ ? &dev_->norms[i] : nullptr); }
  NormView norm_f_view() const { return norm_view(norm_f_, dev_ ? &dev_->norm_f : nullptr); }

  // y (rows, d_model) = the norm `n` (with eps) of x, or of residual += x when a residual is given.
  static void norm_into(const NormView& n, double eps, const TensorView& x, const std::optional<TensorView>& residual,
                        const TensorView& y) {
    if constexpr (Spec::layer_norm) {
      LayerNormInputs in;
      in.x = x, in.weight = n.weight, in.bias = n.bias, in.eps = eps, in.residual = residual;
      layer_norm_into(in, y);
    } else {
      rms_norm_into({x, n.weight, residual, eps}, y);
    }
  }

  // The embedding rows of ids into res (rows, d_model), then the embedding norm in place when the model has one.
  void embed(const TensorView& ids, const TensorView& res) const {
    embedding_into(ids, embedding_view(), res);
    if (Spec::embedding_norm != nullptr)
      norm_into(norm_view(embedding_norm_, dev_ ? &dev_->embedding_norm : nullptr), Spec::norm_eps(cfg_, -1), res,
                std::nullopt, res);
  }

  // The residual stream before the last block's output is added (res) and that output (y), each (rows, d_model):
  // the add is fused into the next RMSNorm (ssm::rms_norm with a residual), as in mamba_ssm.
  struct Stream {
    Tensor res, y;  // (rows, d_model) each
    Stream(index_t rows, index_t dm, Device device)
        : res(Tensor::empty({rows, dm}, DType::f32, device)), y(Tensor::empty({rows, dm}, DType::f32, device)) {}
  };

  // x (rows, d_model) = pre-norm i of the residual stream: block 0 normalizes the embedding; block i > 0 first adds
  // block i - 1's output y into res.
  void pre_norm(std::size_t i, Stream& h, const TensorView& x) const {
    const double eps = Spec::norm_eps(cfg_, static_cast<index_t>(i));
    if (i == 0) norm_into(norm_view(i), eps, h.res, std::nullopt, x);
    else norm_into(norm_view(i), eps, h.y, h.res.view(), x);
  }

  // Runs the blocks over ids (b, l); fills the cache when given.
  Stream hidden(const TensorView& ids, Cache* cache, bool resume = false, const BlockObserver* observe = nullptr) const {
    const index_t b = ids.size(0), l = ids.size(1), dm = cfg_.d_model, rows = b * l;
    Stream h(rows, dm, device());                               // (b · l, d_model) twice
    Tensor x = Tensor::empty({rows, dm}, DType::f32, device());  // (b · l, d_model)
    embed(ids.reshape({rows}), h.res);
    for (std::size_t i = 0; i < blocks_.size(); ++i) {
      pre_norm(i, h, x);
      const TensorView xi = x.view().reshape({b, l, dm}), yi = h.y.view().reshape({b, l, dm});
      if (observe != nullptr) (*observe)(static_cast<index_t>(i), xi);
      if constexpr (kTakesCache) {
        blocks_[i].forward_into(xi, yi, cache != nullptr ? &cache->layers[i] : nullptr, resume);
      } else {
        std::optional<TensorView> conv_state, ssm_state;
        if (cache != nullptr) conv_state = cache->layers[i].conv_state.view(), ssm_state = cache->layers[i].ssm_state.view();
        blocks_[i].forward_into(xi, yi, conv_state, ssm_state, resume);
      }
    }
    return h;
  }

  // logits (rows, V) = norm_f(res + y) · head^T, head = the embedding when tied; y and res (rows, d_model) with unit
  // stride along d_model (res is updated in place by the fused add).
  void head(const TensorView& y, const TensorView& res, const TensorView& logits) const {
    const index_t rows = y.size(0), dm = cfg_.d_model;
    Tensor x = Tensor::empty({rows, dm}, DType::f32, device());  // (rows, d_model)
    norm_into(norm_f_view(), Spec::norm_eps(cfg_, static_cast<index_t>(blocks_.size())), y, res, x);
    LinearOptions opt;
    opt.num_threads = threads_;  // 0: by the size of the product
    linear_into({x, head_view(), std::nullopt}, logits.reshape({rows, cfg_.padded_vocab()}), opt);
  }

  Config cfg_;
  layers::WeightMatrix embedding_;         // (padded_vocab, d_model)
  layers::WeightMatrix lm_head_;           // (padded_vocab, d_model), empty when tied
  std::vector<Block> blocks_;              // Spec::sublayers
  std::vector<Norm> norms_;                // Spec::sublayers: their pre-norms
  Norm norm_f_;                            // the final norm
  Norm embedding_norm_;                    // the embedding norm (empty when Spec has none)
  int threads_ = 0;                        // set_threads
  // The embedding, lm_head and norms on device() when not the CPU (to()); the blocks hold their own parameters.
  struct DeviceWeights {
    Device device;
    Tensor embedding, lm_head;                       // (padded_vocab, d_model) twice (lm_head empty when tied)
    typename Norm::OnDevice norm_f, embedding_norm;  // (d_model) each
    std::vector<typename Norm::OnDevice> norms;      // Spec::sublayers
  };
  std::shared_ptr<const DeviceWeights> dev_;
};

}  // namespace ssm::models
