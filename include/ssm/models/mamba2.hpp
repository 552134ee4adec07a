// The Mamba-2 language model (transformers' Mamba2ForCausalLM; docs/mamba2.md): token embedding → n_layer × (RMSNorm
// → Mamba-2 block, residual add in f32) → final RMSNorm → lm_head (tied to the embedding or not). Logits of a
// sequence, prefill and one-token steps with a cache of constant size, greedy generation, and Hugging Face
// checkpoints of model_type `mamba2` (config.json + model.safetensors or a sharded index; F32 / F16 / BF16 / F64).
// The embedding, lm_head, in_proj and out_proj keep the checkpoint's dtype (16-bit ones are converted inside the
// products); everything else is f32, and so is the arithmetic. CPU only for now.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/layers/mamba2.hpp"
#include "ssm/layers/weight.hpp"
#include "ssm/models/mamba.hpp"
#include "ssm/models/safetensors.hpp"
#include "ssm/ops/embedding.hpp"
#include "ssm/ops/linear.hpp"
#include "ssm/ops/rms_norm.hpp"

namespace ssm::models {

/// Hyperparameters of a Mamba-2 language model, under transformers' Mamba2Config names (in comments where ours
/// differ).
struct Mamba2Config {
  index_t d_model = 768;  // hidden_size
  index_t n_layer = 24;   // num_hidden_layers
  index_t vocab_size = 50288;
  index_t d_state = 128;  // state_size
  index_t d_conv = 4;     // conv_kernel
  index_t expand = 2;
  index_t n_heads = 24;  // num_heads: n_heads · head_dim must be expand · d_model
  index_t head_dim = 64;
  index_t n_groups = 1;
  index_t chunk_size = 256;
  bool bias = false;            // use_bias
  bool conv_bias = true;        // use_conv_bias
  bool tie_embeddings = false;  // tie_word_embeddings (transformers' Mamba2Config default: false)
  double norm_epsilon = 1e-5;   // layer_norm_epsilon (the pre-norms, norm_f and the gated norm)
  std::pair<double, double> dt_limit{0.0, std::numeric_limits<double>::infinity()};  // time_step_limit
  std::vector<std::int64_t> eos_token_ids;

  layers::Mamba2BlockConfig block() const {
    layers::Mamba2BlockConfig c;
    c.d_model = d_model, c.d_state = d_state, c.d_conv = d_conv, c.expand = expand;
    c.head_dim = head_dim, c.n_groups = n_groups, c.chunk_size = chunk_size;
    c.bias = bias, c.conv_bias = conv_bias, c.norm_eps = norm_epsilon, c.dt_limit = dt_limit;
    return c;
  }

  /// Throws ssm::Error naming the first invalid field.
  void validate() const {
    const char* op = "Mamba2Config";
    SSM_CHECK(n_layer >= 1, op, ": n_layer must be >= 1, got ", n_layer);
    SSM_CHECK(vocab_size >= 1, op, ": vocab_size must be >= 1, got ", vocab_size);
    check_positive(op, "norm_epsilon", norm_epsilon);
    block().validate(op);
    SSM_CHECK(n_heads * head_dim == block().inner(), op, ": num_heads ", n_heads, " × head_dim ", head_dim,
              " must equal expand · hidden_size = ", block().inner());
    for (auto id : eos_token_ids) SSM_CHECK(id >= 0, op, ": eos_token_id must be >= 0, got ", id);
  }

  /// Reads transformers' config.json of a Mamba2ForCausalLM (model_type `mamba2`). Another model type or
  /// architecture is rejected by name; a missing, mistyped or unsupported field by its key.
  static Mamba2Config from_json(const nlohmann::json& j) {
    const char* op = "Mamba2Config";
    SSM_CHECK(j.is_object(), op, ": config.json must be a JSON object");
    SSM_CHECK(j.contains("model_type") && j["model_type"].is_string(), op,
              ": config.json lacks a string 'model_type' (expected \"mamba2\")");
    const std::string type = j["model_type"].get<std::string>();
    SSM_CHECK(type == "mamba2", "Mamba2LM::load: model_type '", type,
              "' is not a Mamba-2 model (supported: mamba2; mamba and falcon_mamba load with MambaLM)");
    if (j.contains("architectures") && j["architectures"].is_array())
      for (const auto& a : j["architectures"])
        SSM_CHECK(a.is_string() && a.get<std::string>() == "Mamba2ForCausalLM", "Mamba2LM::load: architecture ",
                  a.dump(), " is not implemented by this library (supported: Mamba2ForCausalLM)");
    Mamba2Config c;
    auto get_int = [&](const char* k, index_t& out, bool required) {
      if (!j.contains(k)) {
        SSM_CHECK(!required, op, ": config.json lacks '", k, "'");
        return;
      }
      SSM_CHECK(j[k].is_number_integer(), op, ": field '", k, "' must be an integer, got ", j[k].dump());
      out = j[k].get<index_t>();
    };
    auto get_bool = [&](const char* k, bool& out) {
      if (!j.contains(k)) return;
      SSM_CHECK(j[k].is_boolean(), op, ": field '", k, "' must be a boolean, got ", j[k].dump());
      out = j[k].get<bool>();
    };
    auto get_number = [&](const char* k, double& out) {
      if (!j.contains(k)) return;
      SSM_CHECK(j[k].is_number(), op, ": field '", k, "' must be a number, got ", j[k].dump());
      out = j[k].get<double>();
    };
    get_int("hidden_size", c.d_model, true);
    get_int("num_hidden_layers", c.n_layer, true);
    get_int("vocab_size", c.vocab_size, true);
    get_int("state_size", c.d_state, false);
    get_int("conv_kernel", c.d_conv, false);
    get_int("expand", c.expand, false);
    get_int("num_heads", c.n_heads, false);
    get_int("head_dim", c.head_dim, false);
    get_int("n_groups", c.n_groups, false);
    get_int("chunk_size", c.chunk_size, false);
    get_bool("use_bias", c.bias);
    get_bool("use_conv_bias", c.conv_bias);
    get_bool("tie_word_embeddings", c.tie_embeddings);
    get_number("layer_norm_epsilon", c.norm_epsilon);
    if (j.contains("time_step_limit")) {
      // JSON has no infinity: transformers 5 writes {"__float__": "Infinity"}, Python's json Infinity (which is not
      // JSON), other writers null or a large number.
      auto number = [&](const nlohmann::json& v, double& out) {
        if (v.is_number()) return out = v.get<double>(), true;
        if (v.is_null()) return out = std::numeric_limits<double>::infinity(), true;
        if (v.is_object() && v.size() == 1 && v.contains("__float__") && v["__float__"].is_string()) {
          const std::string f = v["__float__"].get<std::string>();
          if (f == "Infinity" || f == "inf") return out = std::numeric_limits<double>::infinity(), true;
          if (f == "-Infinity" || f == "-inf") return out = -std::numeric_limits<double>::infinity(), true;
        }
        return false;
      };
      const auto& v = j["time_step_limit"];
      SSM_CHECK(v.is_array() && v.size() == 2 && number(v[0], c.dt_limit.first) && number(v[1], c.dt_limit.second), op,
                ": field 'time_step_limit' must be [min, max], got ", v.dump());
    }
    if (j.contains("hidden_act"))
      SSM_CHECK(j["hidden_act"] == "silu", op, ": only hidden_act \"silu\" is supported, got ", j["hidden_act"].dump());
    if (j.contains("rms_norm"))
      SSM_CHECK(j["rms_norm"] == true, op, ": rms_norm ", j["rms_norm"].dump(),
                " (no gated norm) is not implemented by this library (supported: true)");
    if (j.contains("eos_token_id") && !j["eos_token_id"].is_null()) {
      const auto& e = j["eos_token_id"];
      auto add = [&](const nlohmann::json& v) {
        SSM_CHECK(v.is_number_integer(), op, ": eos_token_id must be an integer or a list of integers, got ", e.dump());
        c.eos_token_ids.push_back(v.get<std::int64_t>());
      };
      if (e.is_array())
        for (const auto& v : e) add(v);
      else
        add(e);
    }
    c.validate();
    return c;
  }
};

/// The decoding state of b sequences: one Mamba2LayerCache per layer and the number of tokens seen. A value.
struct Mamba2Cache {
  index_t b = 0;
  index_t seqlen = 0;
  std::vector<layers::Mamba2LayerCache> layers;
  std::size_t nbytes() const {
    std::size_t s = 0;
    for (const auto& l : layers) s += l.nbytes();
    return s;
  }
};

/// The Mamba-2 language model on the CPU: f32 activations and arithmetic; embedding, lm_head, in_proj and out_proj in
/// f32, f16 or bf16 (LoadOptions::weight_dtype, as MambaLM).
class Mamba2LM {
 public:
  using Block = layers::Mamba2Block;

  /// A randomly initialized model: embedding N(0, 0.02), norms 1, blocks as mamba_ssm initializes them.
  static Mamba2LM init(const Mamba2Config& cfg, std::uint64_t seed) {
    cfg.validate();
    Mamba2LM m;
    m.cfg_ = cfg;
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> N(0.0f, 0.02f);
    std::vector<float> table(static_cast<std::size_t>(cfg.vocab_size * cfg.d_model));
    for (auto& x : table) x = N(rng);
    m.embedding_ = layers::WeightMatrix::from_f32(table.data(), cfg.vocab_size, cfg.d_model);
    if (!cfg.tie_embeddings) {
      for (auto& x : table) x = N(rng);
      m.lm_head_ = layers::WeightMatrix::from_f32(table.data(), cfg.vocab_size, cfg.d_model);
    }
    for (index_t i = 0; i < cfg.n_layer; ++i) {
      m.blocks_.push_back(Block::init(cfg.block(), rng()));
      m.norms_.emplace_back(static_cast<std::size_t>(cfg.d_model), 1.0f);
    }
    m.norm_f_.assign(static_cast<std::size_t>(cfg.d_model), 1.0f);
    return m;
  }

  /// Loads a checkpoint directory: config.json (Mamba2Config::from_json: model_type mamba2) and model.safetensors or
  /// the shards of model.safetensors.index.json (MambaLM::open_weights). ssm::Error for a missing file, another model
  /// type, a bad config (head_dim not dividing d_inner, n_groups not dividing the heads, ...), a missing, extra or
  /// wrongly shaped tensor.
  static Mamba2LM load(const std::string& dir, const LoadOptions& opt = {}) {
    namespace fs = std::filesystem;
    const fs::path cfg_path = fs::path(dir) / "config.json";
    SSM_CHECK(fs::is_regular_file(cfg_path), "Mamba2LM::load: '", cfg_path.string(), "' not found");
    std::ifstream is(cfg_path);
    const nlohmann::json j = nlohmann::json::parse(is, nullptr, /*allow_exceptions=*/false);
    SSM_CHECK(!j.is_discarded(), "Mamba2LM::load: '", cfg_path.string(), "' is not valid JSON");
    const Mamba2Config cfg = Mamba2Config::from_json(j);
    return from_checkpoint(cfg, MambaLM::open_weights(dir), opt);
  }

  /// Builds the model from a checkpoint under transformers' tensor names (backbone.embeddings.weight,
  /// backbone.layers.i.{norm.weight, mixer.*}, backbone.norm_f.weight, lm_head.weight).
  static Mamba2LM from_checkpoint(const Mamba2Config& cfg, const safetensors::Checkpoint& f,
                                  const LoadOptions& opt = {}) {
    cfg.validate();
    if (opt.weight_dtype)
      layers::WeightMatrix::check_dtype("Mamba2LM::load: LoadOptions::weight_dtype", *opt.weight_dtype);
    Mamba2LM m;
    m.cfg_ = cfg;
    std::set<std::string> used;
    auto check = [&](const std::string& name, const Dims& shape) {
      SSM_CHECK(f.contains(name), "Mamba2LM::load: '", f.source(), "' lacks tensor '", name, "'");
      const auto& e = f.entry(name);
      SSM_CHECK(e.shape == shape, "Mamba2LM::load: tensor '", name, "' has shape ", e.shape.str(),
                ", the config needs ", shape.str());
      SSM_CHECK(e.dtype == DType::f32 || e.dtype == DType::f16 || e.dtype == DType::bf16 || e.dtype == DType::f64,
                "Mamba2LM::load: tensor '", name, "' has dtype ", e.dtype_str, ", expected F32, F16, BF16 or F64");
      used.insert(name);
    };
    auto take = [&](const std::string& name, const Dims& shape, std::vector<float>& dst) {
      check(name, shape);
      dst = f.tensor_f32(name).to_vector<float>();
    };
    // A matrix kept in opt.weight_dtype, else in its stored dtype (F64: f32).
    auto take_matrix = [&](const std::string& name, const Dims& shape) {
      check(name, shape);
      const auto stored = f.entry(name).dtype;
      const DType dtype = opt.weight_dtype                                ? *opt.weight_dtype
                          : stored == DType::f16 || stored == DType::bf16 ? *stored
                                                                          : DType::f32;
      if (stored == dtype) return layers::WeightMatrix(f.file_of(name).tensor(name));
      Tensor t = f.tensor_f32(name);
      if (dtype == DType::f32) return layers::WeightMatrix(std::move(t));
      return layers::WeightMatrix::from_f32(t.data_as<float>(), shape[0], shape[1], dtype);
    };
    const Dims emb_shape{cfg.vocab_size, cfg.d_model};
    const std::string emb_name =
        f.contains("backbone.embedding.weight") ? "backbone.embedding.weight" : "backbone.embeddings.weight";
    m.embedding_ = take_matrix(emb_name, emb_shape);
    const auto bc = cfg.block();
    for (index_t i = 0; i < cfg.n_layer; ++i) {
      const std::string pre = "backbone.layers." + std::to_string(i) + ".";
      layers::Mamba2BlockParams p;
      p.for_each(
          bc, [&](const char* name, std::vector<float>& v, const Dims& s) { take(pre + "mixer." + name, s, v); },
          [&](const char* name, layers::WeightMatrix& w, const Dims& s) { w = take_matrix(pre + "mixer." + name, s); });
      m.blocks_.emplace_back(bc, std::move(p));
      m.norms_.emplace_back();
      take(pre + "norm.weight", Dims{cfg.d_model}, m.norms_.back());
    }
    take("backbone.norm_f.weight", Dims{cfg.d_model}, m.norm_f_);
    if (!cfg.tie_embeddings) {
      m.lm_head_ = take_matrix("lm_head.weight", emb_shape);
    } else if (f.contains("lm_head.weight")) {
      const layers::WeightMatrix head = take_matrix("lm_head.weight", emb_shape);
      SSM_CHECK(head.same_values(m.embedding_),
                "Mamba2LM::load: tie_word_embeddings is set but 'lm_head.weight' differs from the embedding");
    }
    for (const auto& name : f.names())
      SSM_CHECK(used.count(name) != 0, "Mamba2LM::load: '", f.file_of(name).source(), "' has unexpected tensor '", name,
                "' (not part of a Mamba-2 model with this config)");
    return m;
  }

  const Mamba2Config& config() const { return cfg_; }
  const std::vector<Block>& blocks() const { return blocks_; }
  /// CPU threads for the ops (0: by the amount of work).
  void set_threads(int n) {
    threads_ = n;
    for (auto& b : blocks_) b.set_threads(n);
  }

  Mamba2Cache make_cache(index_t b) const {
    SSM_CHECK(b >= 1, "Mamba2LM::make_cache: b must be >= 1, got ", b);
    Mamba2Cache c;
    c.b = b;
    for (const auto& blk : blocks_) c.layers.push_back(blk.make_cache(b));
    return c;
  }

  /// Logits for every position: ids (b, l) i32 | i64, contiguous, CPU → (b, l, vocab_size) f32.
  Tensor logits(const TensorView& ids) const {
    Checker c("Mamba2LM::logits");
    check_ids(c, ids);
    const index_t b = ids.size(0), l = ids.size(1), dm = cfg_.d_model;
    Stream h = hidden(ids, nullptr, false);
    Tensor out = Tensor::empty({b, l, cfg_.vocab_size}, DType::f32);
    head(h.y.view().reshape({b * l, dm}), h.res.view().reshape({b * l, dm}),
         out.view().reshape({b * l, cfg_.vocab_size}));
    return out;
  }

  /// Runs the prompts ids (b, l) in parallel, fills `cache` (reset first unless `resume`: then the tokens continue
  /// the cached sequences) and returns the logits of the last position (b, vocab_size).
  Tensor prefill(const TensorView& ids, Mamba2Cache& cache, bool resume = false) const {
    Checker c("Mamba2LM::prefill");
    check_ids(c, ids);
    c.require(ids.size(1) >= 1, "ids", "the prompt must hold at least one token");
    const index_t b = ids.size(0), l = ids.size(1), dm = cfg_.d_model;
    if (resume) {
      c.require(cache.b == b && cache.layers.size() == blocks_.size(), "cache", "resume needs a cache made for ", b,
                " sequences and ", blocks_.size(), " layers");
      for (std::size_t i = 0; i < blocks_.size(); ++i) blocks_[i].check_cache(cache.layers[i]);
    } else {
      cache = make_cache(b);
    }
    Stream h = hidden(ids, &cache, resume);
    Tensor out = Tensor::empty({b, cfg_.vocab_size}, DType::f32);
    head(h.y.view().reshape({b, l, dm}).select(1, l - 1), h.res.view().reshape({b, l, dm}).select(1, l - 1), out);
    cache.seqlen = resume ? cache.seqlen + l : l;
    return out;
  }

  /// One token per sequence: ids (b) → logits (b, vocab_size); the cache advances by one token.
  Tensor step(std::span<const std::int64_t> ids, Mamba2Cache& cache) const {
    SSM_CHECK(static_cast<index_t>(ids.size()) == cache.b && cache.b >= 1, "Mamba2LM::step: ", ids.size(),
              " token ids for a cache of ", cache.b, " sequences");
    SSM_CHECK(cache.layers.size() == blocks_.size(), "Mamba2LM::step: cache has ", cache.layers.size(),
              " layers, the model ", blocks_.size());
    for (std::size_t i = 0; i < blocks_.size(); ++i) blocks_[i].check_cache(cache.layers[i]);
    const index_t b = cache.b, dm = cfg_.d_model;
    Stream h(b, dm);
    Tensor x = Tensor::empty({b, dm}, DType::f32);
    Tensor work = Tensor::empty({blocks_[0].workspace_size(b)}, DType::f32);
    embedding_into(TensorView::of(ids.data(), {b}), embedding_.tensor().view(), h.res);
    for (std::size_t i = 0; i < blocks_.size(); ++i) {
      pre_norm(i, h, x);
      blocks_[i].step_into(x, h.y, cache.layers[i].conv_state, cache.layers[i].ssm_state, work);
    }
    Tensor out = Tensor::empty({b, cfg_.vocab_size}, DType::f32);
    head(h.y, h.res, out);
    ++cache.seqlen;
    return out;
  }

  /// Greedy continuation of one prompt: prefill, then max_new_tokens steps (argmax, lowest id on ties), stopping
  /// after an end-of-sequence id when stop_at_eos. Returns the new tokens.
  std::vector<std::int64_t> generate_greedy(std::span<const std::int64_t> prompt, index_t max_new_tokens,
                                            bool stop_at_eos = true) const {
    SSM_CHECK(!prompt.empty(), "Mamba2LM::generate_greedy: the prompt must hold at least one token");
    SSM_CHECK(max_new_tokens >= 0, "Mamba2LM::generate_greedy: max_new_tokens must be >= 0, got ", max_new_tokens);
    Mamba2Cache cache;
    Tensor logits = prefill(TensorView::of(prompt.data(), {1, static_cast<index_t>(prompt.size())}), cache);
    std::vector<std::int64_t> out;
    for (index_t t = 0; t < max_new_tokens; ++t) {
      const float* row = logits.data_as<float>();
      const std::int64_t id = std::max_element(row, row + cfg_.vocab_size) - row;
      out.push_back(id);
      if (stop_at_eos &&
          std::find(cfg_.eos_token_ids.begin(), cfg_.eos_token_ids.end(), id) != cfg_.eos_token_ids.end())
        break;
      if (t + 1 < max_new_tokens) logits = step(std::span<const std::int64_t>(&out.back(), 1), cache);
    }
    return out;
  }

 private:
  void check_ids(const Checker& c, const TensorView& ids) const {
    c.defined("ids", ids).rank("ids", ids, 2);
    c.require(ids.dtype() == DType::i64 || ids.dtype() == DType::i32, "ids", "expected dtype i32 or i64, got ",
              name(ids.dtype()));
    c.require(ids.is_contiguous() && ids.device().is_cpu(), "ids", "expected a contiguous cpu tensor");
  }

  // The residual stream (res) and the last block's output (y), each (rows, d_model); the add is fused into the next
  // RMSNorm (ssm::rms_norm with a residual).
  struct Stream {
    Tensor res, y;
    Stream(index_t rows, index_t dm)
        : res(Tensor::empty({rows, dm}, DType::f32)), y(Tensor::empty({rows, dm}, DType::f32)) {}
  };

  void pre_norm(std::size_t i, Stream& h, const TensorView& x) const {
    RmsNormInputs in;
    in.weight = TensorView::of(norms_[i].data(), {cfg_.d_model});
    in.eps = cfg_.norm_epsilon;
    if (i == 0) {
      in.x = h.res;
    } else {
      in.x = h.y;
      in.residual = h.res.view();
    }
    rms_norm_into(in, x);
  }

  Stream hidden(const TensorView& ids, Mamba2Cache* cache, bool resume) const {
    const index_t b = ids.size(0), l = ids.size(1), dm = cfg_.d_model, rows = b * l;
    Stream h(rows, dm);
    Tensor x = Tensor::empty({rows, dm}, DType::f32);
    embedding_into(ids.reshape({rows}), embedding_.tensor().view(), h.res);
    for (std::size_t i = 0; i < blocks_.size(); ++i) {
      pre_norm(i, h, x);
      std::optional<TensorView> conv_state, ssm_state;
      if (cache != nullptr)
        conv_state = cache->layers[i].conv_state.view(), ssm_state = cache->layers[i].ssm_state.view();
      blocks_[i].forward_into(x.view().reshape({b, l, dm}), h.y.view().reshape({b, l, dm}), conv_state, ssm_state,
                              resume);
    }
    return h;
  }

  // logits (rows, V) = rmsnorm(res + y, norm_f) · headᵀ (head = the embedding when tied).
  void head(const TensorView& y, const TensorView& res, const TensorView& logits) const {
    const index_t rows = y.size(0), dm = cfg_.d_model;
    Tensor x = Tensor::empty({rows, dm}, DType::f32);
    rms_norm_into({y, TensorView::of(norm_f_.data(), {dm}), res, cfg_.norm_epsilon}, x);
    LinearOptions opt;
    opt.num_threads = threads_;
    const TensorView W = cfg_.tie_embeddings ? embedding_.tensor().view() : lm_head_.tensor().view();
    linear_into({x, W, std::nullopt}, logits.reshape({rows, cfg_.vocab_size}), opt);
  }

  Mamba2Config cfg_;
  layers::WeightMatrix embedding_;         // (vocab, d_model)
  layers::WeightMatrix lm_head_;           // (vocab, d_model), empty when tied
  std::vector<Block> blocks_;              // n_layer
  std::vector<std::vector<float>> norms_;  // n_layer × (d_model)
  std::vector<float> norm_f_;              // (d_model)
  int threads_ = 0;
};

}  // namespace ssm::models
