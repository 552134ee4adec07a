// The Mamba-2 language model (transformers' Mamba2ForCausalLM; docs/mamba2.md): Mamba2LM is the one causal LM body
// (models/causal_lm.hpp: embedding → n_layer × (RMSNorm → block, residual add in f32) → final RMSNorm → lm_head, tied
// or not; logits, prefill, steps, generation with sampling and streaming, to(Device), checkpoints) over
// layers::Mamba2Block. This header holds what is Mamba-2's own: the config (Mamba2Config, read from config.json of
// model_type `mamba2`) and how the block's tensors are named in a checkpoint (Mamba2Spec). The embedding, lm_head,
// in_proj and out_proj keep the checkpoint's dtype (16-bit ones are converted inside the products); everything else
// is f32, and so is the arithmetic.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/layers/mamba2.hpp"
#include "ssm/layers/weight.hpp"
#include "ssm/models/causal_lm.hpp"
#include "ssm/models/checkpoint.hpp"

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

  /// The embedding's row count: vocab_size (transformers' Mamba2 embedding is not padded).
  index_t padded_vocab() const { return vocab_size; }
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
    const ConfigFields F(j, op);
    F.get_int({"hidden_size"}, c.d_model, true);
    F.get_int({"num_hidden_layers"}, c.n_layer, true);
    F.get_int({"vocab_size"}, c.vocab_size, true);
    F.get_int({"state_size"}, c.d_state);
    F.get_int({"conv_kernel"}, c.d_conv);
    F.get_int({"expand"}, c.expand);
    F.get_int({"num_heads"}, c.n_heads);
    F.get_int({"head_dim"}, c.head_dim);
    F.get_int({"n_groups"}, c.n_groups);
    F.get_int({"chunk_size"}, c.chunk_size);
    F.get_bool("use_bias", c.bias);
    F.get_bool("use_conv_bias", c.conv_bias);
    F.get_bool("tie_word_embeddings", c.tie_embeddings);
    F.get_number("layer_norm_epsilon", c.norm_epsilon);
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
    F.require_silu();
    if (j.contains("rms_norm"))
      SSM_CHECK(j["rms_norm"] == true, op, ": rms_norm ", j["rms_norm"].dump(),
                " (no gated norm) is not implemented by this library (supported: true)");
    c.eos_token_ids = F.eos_token_ids();
    c.validate();
    return c;
  }

  /// transformers' config.json of this config (an infinite time-step limit written as transformers 5 writes it).
  nlohmann::json to_json() const {
    auto limit = [](double v) -> nlohmann::json {
      if (std::isinf(v)) return {{"__float__", v > 0 ? "Infinity" : "-Infinity"}};
      return v;
    };
    nlohmann::json j = {{"architectures", {"Mamba2ForCausalLM"}},
                        {"model_type", "mamba2"},
                        {"hidden_size", d_model},
                        {"num_hidden_layers", n_layer},
                        {"vocab_size", vocab_size},
                        {"state_size", d_state},
                        {"conv_kernel", d_conv},
                        {"expand", expand},
                        {"num_heads", n_heads},
                        {"head_dim", head_dim},
                        {"n_groups", n_groups},
                        {"chunk_size", chunk_size},
                        {"use_bias", bias},
                        {"use_conv_bias", conv_bias},
                        {"tie_word_embeddings", tie_embeddings},
                        {"layer_norm_epsilon", norm_epsilon},
                        {"time_step_limit", {limit(dt_limit.first), limit(dt_limit.second)}},
                        {"hidden_act", "silu"},
                        {"rms_norm", true}};
    if (eos_token_ids.size() == 1) j["eos_token_id"] = eos_token_ids[0];
    if (eos_token_ids.size() > 1) j["eos_token_id"] = eos_token_ids;
    return j;
  }
};

/// How Mamba2LM's body (CausalLM) reads and writes the Mamba-2 block: the config and the block's tensors under
/// transformers' names (backbone.layers.i.mixer.*); in_proj and out_proj are weight matrices.
struct Mamba2Spec : BackboneLayout {
  static constexpr const char* name = "Mamba2LM";
  static constexpr const char* model = "Mamba-2";
  using Config = Mamba2Config;
  using Block = layers::Mamba2Block<float>;
  using LayerCache = layers::Mamba2LayerCache<float>;

  static Block init_block(const Config& cfg, index_t, std::uint64_t seed) { return Block::init(cfg.block(), seed); }

  static Block load_block(CheckpointReader& r, const Config& cfg, index_t j) {
    const std::string prefix = block_prefix(j);
    const auto bc = cfg.block();
    layers::Mamba2BlockParams<float> p;
    layers::Mamba2BlockMatrices mats;
    p.for_each(bc, [&](const char* name, std::vector<float>& v, const Dims& s) {
      r.take_vector_or_matrix(prefix + name, s, v, mats.find(name));
    });
    return Block(bc, std::move(p), std::move(mats));
  }

  template <class F>
  static void save_block(const Block& blk, const Config& cfg, F&& add) {
    auto p = blk.full_params();
    p.for_each(cfg.block(), [&](const char* name, std::vector<float>& v, const Dims& s) { add(name, v, s); });
  }
};

/// The Mamba-2 language model: CausalLM over layers::Mamba2Block (models/causal_lm.hpp).
using Mamba2LM = CausalLM<Mamba2Spec>;
/// The decoding state of b sequences of a Mamba2LM: one Mamba2LayerCache per layer plus the number of tokens seen.
using Mamba2Cache = Mamba2LM::Cache;

}  // namespace ssm::models
