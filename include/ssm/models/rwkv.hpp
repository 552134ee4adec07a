// The RWKV-4 language model (Peng et al. 2023; transformers' RwkvForCausalLM; docs/rwkv4.md): RwkvLM is the one causal
// LM body (models/causal_lm.hpp) over RWKV-4's sublayers: embedding → LayerNorm (pre_ln) → n_layer × (LayerNorm →
// time mixing, residual add; LayerNorm → channel mixing, residual add) → LayerNorm (ln_out) → head. This header holds
// what is RWKV's own: the config (RwkvConfig, read from config.json of model_type `rwkv`) and the checkpoint's layout
// (RwkvSpec: rwkv.embeddings.weight, rwkv.blocks.i.{pre_ln, ln1, ln2, attention.*, feed_forward.*}, rwkv.ln_out,
// head.weight).
//
// transformers' rescale_every: in inference transformers halves the hidden state after every rescale_every blocks and
// divides each block's attention.output and feed_forward.value by 2^(i / rescale_every), so that f16 activations do
// not overflow. Halving is exact in floating point, and LayerNorm(x / 2^k, eps) = LayerNorm(x, 4^k eps): this model
// keeps the stream unscaled and the weights as stored, and gives block i's norms eps · 4^(i / rescale_every) and ln_out
// 1e-5 · 4^(n_layer / rescale_every) (ln_out is built with PyTorch's default eps, whatever layer_norm_epsilon says).
// The logits are transformers' eval-mode logits.
#pragma once

#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/layers/rwkv4.hpp"
#include "ssm/layers/weight.hpp"
#include "ssm/models/causal_lm.hpp"
#include "ssm/models/checkpoint.hpp"

namespace ssm::models {

/// Hyperparameters of an RWKV-4 language model, under transformers' RwkvConfig names (in comments where ours differ).
struct RwkvConfig {
  index_t d_model = 4096;  // hidden_size
  index_t n_layer = 32;    // num_hidden_layers
  index_t vocab_size = 50277;
  index_t d_att = 0;          // attention_hidden_size (0 or null: hidden_size)
  index_t d_ffn = 0;          // intermediate_size (0 or null: 4 hidden_size)
  index_t rescale_every = 6;  // 0: no rescaling
  double norm_epsilon = 1e-5;   // layer_norm_epsilon: pre_ln, ln1, ln2
  bool tie_embeddings = false;  // tie_word_embeddings
  std::vector<std::int64_t> eos_token_ids;

  index_t att() const { return d_att > 0 ? d_att : d_model; }
  index_t ffn() const { return d_ffn > 0 ? d_ffn : 4 * d_model; }
  /// The embedding's row count: vocab_size.
  index_t padded_vocab() const { return vocab_size; }
  /// Sublayer j's block: time mixing of block j / 2 when j is even, its channel mixing when odd.
  layers::Rwkv4BlockConfig block(index_t j) const {
    layers::Rwkv4BlockConfig c;
    c.kind = j % 2 == 0 ? layers::Rwkv4Kind::time_mix : layers::Rwkv4Kind::channel_mix;
    c.d_model = d_model, c.d_att = att(), c.d_ffn = ffn();
    return c;
  }
  /// The eps of the norm in front of sublayer j (j = 2 n_layer: ln_out; −1: pre_ln), transformers' rescaling folded in.
  double norm_eps(index_t j) const {
    auto scaled = [&](double eps, index_t blocks_before) {
      return rescale_every > 0 ? eps * std::pow(4.0, static_cast<double>(blocks_before / rescale_every)) : eps;
    };
    if (j < 0) return norm_epsilon;
    if (j >= 2 * n_layer) return scaled(1e-5, n_layer);
    return scaled(norm_epsilon, j / 2);
  }

  /// Throws ssm::Error naming the first invalid field.
  void validate() const {
    const char* op = "RwkvConfig";
    SSM_CHECK(d_model >= 1, op, ": d_model (hidden_size) must be >= 1, got ", d_model);
    SSM_CHECK(n_layer >= 1, op, ": n_layer (num_hidden_layers) must be >= 1, got ", n_layer);
    SSM_CHECK(vocab_size >= 1, op, ": vocab_size must be >= 1, got ", vocab_size);
    SSM_CHECK(d_att >= 0, op, ": d_att (attention_hidden_size) must be >= 0 (0: hidden_size), got ", d_att);
    SSM_CHECK(d_ffn >= 0, op, ": d_ffn (intermediate_size) must be >= 0 (0: 4 hidden_size), got ", d_ffn);
    SSM_CHECK(rescale_every >= 0, op, ": rescale_every must be >= 0 (0: none), got ", rescale_every);
    check_positive(op, "norm_epsilon (layer_norm_epsilon)", norm_epsilon);
    for (auto id : eos_token_ids) SSM_CHECK(id >= 0, op, ": eos_token_id must be >= 0, got ", id);
  }

  /// Reads transformers' config.json of an RwkvForCausalLM (model_type `rwkv`). Another model type or architecture is
  /// rejected by name; a missing or mistyped field by its key.
  static RwkvConfig from_json(const nlohmann::json& j) {
    const char* op = "RwkvConfig";
    SSM_CHECK(j.is_object(), op, ": config.json must be a JSON object");
    SSM_CHECK(j.contains("model_type") && j["model_type"].is_string(), op,
              ": config.json lacks a string 'model_type' (expected \"rwkv\")");
    const std::string type = j["model_type"].get<std::string>();
    SSM_CHECK(type == "rwkv", "RwkvLM::load: model_type '", type,
              "' is not an RWKV-4 model (supported: rwkv; mamba and falcon_mamba load with MambaLM, mamba2 with "
              "Mamba2LM)");
    if (j.contains("architectures") && j["architectures"].is_array())
      for (const auto& a : j["architectures"])
        SSM_CHECK(a.is_string() && a.get<std::string>() == "RwkvForCausalLM", "RwkvLM::load: architecture ", a.dump(),
                  " is not implemented by this library (supported: RwkvForCausalLM)");
    RwkvConfig c;
    const ConfigFields F(j, op);
    F.get_int({"hidden_size"}, c.d_model, true);
    F.get_int({"num_hidden_layers"}, c.n_layer, true);
    F.get_int({"vocab_size"}, c.vocab_size, true);
    for (const auto& [key, field] : {std::pair<const char*, index_t*>{"attention_hidden_size", &c.d_att},
                                     {"intermediate_size", &c.d_ffn}})
      if (j.contains(key) && !j[key].is_null()) F.get_int({key}, *field);  // null: the default size
    F.get_int({"rescale_every"}, c.rescale_every);
    F.get_number("layer_norm_epsilon", c.norm_epsilon);
    F.get_bool("tie_word_embeddings", c.tie_embeddings);
    c.eos_token_ids = F.eos_token_ids();
    c.validate();
    return c;
  }

  /// transformers' config.json of this config.
  nlohmann::json to_json() const {
    nlohmann::json j = {{"architectures", {"RwkvForCausalLM"}},
                        {"model_type", "rwkv"},
                        {"hidden_size", d_model},
                        {"num_hidden_layers", n_layer},
                        {"vocab_size", vocab_size},
                        {"attention_hidden_size", att()},
                        {"intermediate_size", ffn()},
                        {"rescale_every", rescale_every},
                        {"layer_norm_epsilon", norm_epsilon},
                        {"tie_word_embeddings", tie_embeddings}};
    if (eos_token_ids.size() == 1) j["eos_token_id"] = eos_token_ids[0];
    if (eos_token_ids.size() > 1) j["eos_token_id"] = eos_token_ids;
    return j;
  }
};

/// How RwkvLM's body (CausalLM) reads and writes RWKV-4: two LayerNorm → block sublayers per layer (time mixing, then
/// channel mixing) under transformers' names.
struct RwkvSpec {
  static constexpr const char* name = "RwkvLM";
  static constexpr const char* model = "RWKV";
  using Config = RwkvConfig;
  using Block = layers::Rwkv4Block;
  using LayerCache = layers::Rwkv4LayerCache;

  static constexpr bool layer_norm = true;
  static constexpr const char* embedding = "rwkv.embeddings.weight";
  static constexpr const char* embedding_alias = nullptr;
  static constexpr const char* embedding_norm = "rwkv.blocks.0.pre_ln";
  static constexpr const char* final_norm = "rwkv.ln_out";
  static constexpr const char* head = "head.weight";

  static index_t sublayers(const Config& cfg) { return 2 * cfg.n_layer; }
  static std::string norm_name(index_t j) {
    return "rwkv.blocks." + std::to_string(j / 2) + (j % 2 == 0 ? ".ln1" : ".ln2");
  }
  static std::string block_prefix(index_t j) {
    return "rwkv.blocks." + std::to_string(j / 2) + (j % 2 == 0 ? ".attention." : ".feed_forward.");
  }
  static double norm_eps(const Config& cfg, index_t j) { return cfg.norm_eps(j); }

  static Block init_block(const Config& cfg, index_t j, std::uint64_t seed) { return Block::init(cfg.block(j), seed); }

  static Block load_block(CheckpointReader& r, const Config& cfg, index_t j) {
    const std::string prefix = block_prefix(j);
    const auto bc = cfg.block(j);
    layers::Rwkv4BlockParams p;
    p.for_each(
        bc, [&](const char* name, std::vector<float>& v, const Dims& s) { r.take(prefix + name, s, v); },
        [&](const char* name, layers::WeightMatrix& w, const Dims& s) { w = r.take_matrix(prefix + name, s); });
    return Block(bc, std::move(p));
  }

  template <class F>
  static void save_block(const Block& blk, const Config&, F&& add) {
    layers::Rwkv4BlockParams p = blk.params();
    p.for_each(
        blk.config(), [&](const char* name, std::vector<float>& v, const Dims& s) { add(name, v, s); },
        [&](const char* name, layers::WeightMatrix& w, const Dims& s) { add(name, w.to_f32(), s); });
  }
};

/// The RWKV-4 language model: CausalLM over layers::Rwkv4Block (models/causal_lm.hpp).
using RwkvLM = CausalLM<RwkvSpec>;
/// The decoding state of b sequences of an RwkvLM: one Rwkv4LayerCache per sublayer plus the number of tokens seen.
using RwkvCache = RwkvLM::Cache;

}  // namespace ssm::models
