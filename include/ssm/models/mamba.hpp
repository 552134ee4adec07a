// The Mamba language model (Gu & Dao 2023; docs/math.md §6.2): MambaLM is the one causal LM body (models/causal_lm.hpp:
// embedding → n_layer × (RMSNorm → block, residual add in f32) → final RMSNorm → lm_head, tied to the embedding by
// default; logits, prefill, steps, generation, to(Device), checkpoints) over layers::MambaBlock. This header holds
// what is Mamba's own: the config (MambaConfig, read from transformers' `mamba` and `falcon_mamba` config.json and
// mamba_ssm's configs, docs/checkpoints.md) and how the block's tensors are named in a checkpoint (MambaSpec). The big
// matrices (embedding, lm_head, in_proj, x_proj, dt_proj, out_proj) keep the checkpoint's dtype by default (f16 /
// bf16 weights are read in place from the memory-mapped file and converted to f32 inside the products;
// LoadOptions); activations, states, sums and the small parameters are f32.
#pragma once

#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/layers/mamba.hpp"
#include "ssm/layers/weight.hpp"
#include "ssm/models/causal_lm.hpp"
#include "ssm/models/checkpoint.hpp"

namespace ssm::models {

/// Hyperparameters of a Mamba language model. Field names follow mamba_ssm's MambaConfig; from_json
/// also reads the Hugging Face names (hidden_size, num_hidden_layers, state_size, conv_kernel, ...).
struct MambaConfig {
  index_t d_model = 768;
  index_t n_layer = 24;
  index_t vocab_size = 50277;
  index_t pad_vocab_size_multiple = 8;  // the embedding has vocab_size rounded up to this multiple (1 for HF configs)
  index_t d_state = 16;
  index_t d_conv = 4;
  index_t expand = 2;
  index_t d_inner = 0;  // 0: expand · d_model
  index_t dt_rank = 0;  // 0 ("auto"): ceil(d_model / 16)
  bool bias = false;
  bool conv_bias = true;
  bool tie_embeddings = true;
  bool residual_in_fp32 = true;  // the residual stream is always f32 here; kept for the file format
  double norm_epsilon = 1e-5;
  /// FalconMamba (model_type falcon_mamba, key mixer_rms_eps): the epsilon of the RMS normalization without
  /// weight of δ, B and C in every block (layers::MambaBlockConfig::bcdt_rms_eps). Unset: Mamba.
  std::optional<double> mixer_rms_eps;
  /// End-of-sequence ids (config.json's eos_token_id, an int or a list): where generate() stops by default.
  std::vector<std::int64_t> eos_token_ids;

  /// The embedding's row count: vocab_size rounded up to pad_vocab_size_multiple.
  index_t padded_vocab() const {
    const index_t m = std::max<index_t>(1, pad_vocab_size_multiple);
    return (vocab_size + m - 1) / m * m;
  }
  layers::MambaBlockConfig block() const {
    layers::MambaBlockConfig c;
    c.d_model = d_model;
    c.d_state = d_state;
    c.d_conv = d_conv;
    c.expand = expand;
    c.d_inner = d_inner;
    c.dt_rank = dt_rank;
    c.bias = bias;
    c.conv_bias = conv_bias;
    c.bcdt_rms_eps = mixer_rms_eps;
    return c;
  }
  void validate() const {
    const char* op = "MambaConfig";
    SSM_CHECK(n_layer >= 1, op, ": n_layer must be >= 1, got ", n_layer);
    SSM_CHECK(vocab_size >= 1, op, ": vocab_size must be >= 1, got ", vocab_size);
    SSM_CHECK(pad_vocab_size_multiple >= 1, op, ": pad_vocab_size_multiple must be >= 1, got ",
              pad_vocab_size_multiple);
    check_positive(op, "norm_epsilon", norm_epsilon);
    if (mixer_rms_eps) check_positive(op, "mixer_rms_eps", *mixer_rms_eps);
    for (auto id : eos_token_ids) SSM_CHECK(id >= 0, op, ": eos_token_id must be >= 0, got ", id);
    block().validate(op);
  }

  /// Reads a config.json object: transformers' (model_type `mamba` or `falcon_mamba`, or the matching
  /// `architectures`) or mamba_ssm's (MambaLMHeadModel: neither key; d_model, n_layer, ssm_cfg). Any other
  /// model type or architecture is rejected by name. transformers builds the embedding with exactly
  /// vocab_size rows (pad_vocab_size_multiple, which converted and resized checkpoints keep, is ignored);
  /// mamba_ssm pads vocab_size up to pad_vocab_size_multiple (default 8). Throws ssm::Error naming the key
  /// on a missing, mistyped or unsupported field.
  static MambaConfig from_json(const nlohmann::json& j) {
    const char* op = "MambaConfig";
    SSM_CHECK(j.is_object(), op, ": config.json must be a JSON object");
    MambaConfig c;
    const ConfigFields F(j, op);
    // An int, or "auto" (0).
    auto get_rank = [&](const nlohmann::json& v, const char* k) -> index_t {
      if (v.is_string()) {
        SSM_CHECK(v.get<std::string>() == "auto", op, ": ", k, " must be an integer or \"auto\", got ", v.dump());
        return 0;
      }
      SSM_CHECK(v.is_number_integer(), op, ": ", k, " must be an integer or \"auto\", got ", v.dump());
      return v.get<index_t>();
    };
    const std::string type = model_type_of(j);
    const bool hf = !type.empty();
    if (hf) {
      c.pad_vocab_size_multiple = 1;  // transformers: nn.Embedding(vocab_size, ...) whatever the config says
    } else {
      SSM_CHECK(j.contains("d_model") && j.contains("n_layer"), op,
                ": config.json has neither 'model_type' nor 'architectures', and is not a mamba_ssm config (d_model, "
                "n_layer, vocab_size, ssm_cfg): cannot tell which model it describes");
      check_mamba_ssm(j);
      c.pad_vocab_size_multiple = 8;  // mamba_ssm's MambaConfig default
      F.get_int({"pad_vocab_size_multiple"}, c.pad_vocab_size_multiple);
    }
    F.get_int({"hidden_size", "d_model"}, c.d_model, true);
    F.get_int({"num_hidden_layers", "n_layer"}, c.n_layer, true);
    F.get_int({"vocab_size"}, c.vocab_size, true);
    F.get_int({"state_size", "d_state"}, c.d_state);
    F.get_int({"conv_kernel", "d_conv"}, c.d_conv);
    F.get_int({"expand"}, c.expand);
    F.get_int({"intermediate_size"}, c.d_inner);
    if (!hf && j.contains("ssm_cfg")) {  // mamba_ssm: keyword arguments of mamba_simple.Mamba
      const auto& s = j["ssm_cfg"];
      SSM_CHECK(s.is_object(), op, ": ssm_cfg must be an object, got ", s.dump());
      const ConfigFields S(s, op, "ssm_cfg field");
      S.get_int({"d_state"}, c.d_state);
      S.get_int({"d_conv"}, c.d_conv);
      S.get_int({"expand"}, c.expand);
      if (s.contains("dt_rank")) c.dt_rank = get_rank(s["dt_rank"], "ssm_cfg field 'dt_rank'");
      S.get_bool("bias", c.bias);
      S.get_bool("conv_bias", c.conv_bias);
    }
    if (j.contains("time_step_rank")) c.dt_rank = get_rank(j["time_step_rank"], "time_step_rank");
    F.get_bool("use_bias", c.bias);
    F.get_bool("use_conv_bias", c.conv_bias);
    F.get_bool("tie_word_embeddings", c.tie_embeddings);
    F.get_bool("tie_embeddings", c.tie_embeddings);
    F.get_bool("residual_in_fp32", c.residual_in_fp32);
    for (const char* k : {"layer_norm_epsilon", "norm_epsilon"}) F.get_number(k, c.norm_epsilon);
    if (type == "falcon_mamba") {
      double eps = 1e-6;  // transformers' FalconMambaConfig default
      F.get_number("mixer_rms_eps", eps);
      c.mixer_rms_eps = eps;
    }
    F.require_silu();
    c.eos_token_ids = F.eos_token_ids();
    c.validate();
    return c;
  }

  /// The Hugging Face form of this config (vocab_size written already padded).
  nlohmann::json to_json() const {
    const bool falcon = mixer_rms_eps.has_value();
    nlohmann::json j = {{"architectures", {falcon ? "FalconMambaForCausalLM" : "MambaForCausalLM"}},
                        {"model_type", falcon ? "falcon_mamba" : "mamba"},
                        {"hidden_size", d_model},
                        {"num_hidden_layers", n_layer},
                        {"vocab_size", padded_vocab()},
                        {"state_size", d_state},
                        {"conv_kernel", d_conv},
                        {"expand", expand},
                        {"intermediate_size", block().inner()},
                        {"time_step_rank", block().rank()},
                        {"use_bias", bias},
                        {"use_conv_bias", conv_bias},
                        {"tie_word_embeddings", tie_embeddings},
                        {"residual_in_fp32", residual_in_fp32},
                        {"layer_norm_epsilon", norm_epsilon},
                        {"hidden_act", "silu"}};
    if (falcon) j["mixer_rms_eps"] = *mixer_rms_eps;
    if (eos_token_ids.size() == 1) j["eos_token_id"] = eos_token_ids[0];
    if (eos_token_ids.size() > 1) j["eos_token_id"] = eos_token_ids;
    return j;
  }

 private:
  // transformers' model type from model_type and/or architectures (they must agree); "" when neither key is
  // there (a mamba_ssm config). Every other model is rejected by name.
  static std::string model_type_of(const nlohmann::json& j) {
    const char* op = "MambaConfig";
    std::string type;
    if (j.contains("model_type") && !j["model_type"].is_null()) {
      SSM_CHECK(j["model_type"].is_string(), op, ": model_type must be a string, got ", j["model_type"].dump());
      type = j["model_type"].get<std::string>();
      SSM_CHECK(type != "mamba2", "MambaLM::load: model_type 'mamba2' is a Mamba-2 model: load it with "
                "ssm::models::Mamba2LM::load (ssm/models/mamba2.hpp)");
      SSM_CHECK(type == "mamba" || type == "falcon_mamba", "MambaLM::load: model_type '", type,
                "' is not a Mamba model (supported: mamba, falcon_mamba; mamba2 loads with Mamba2LM, rwkv with RwkvLM, "
                "jamba with JambaLM, stripedhyena with StripedHyenaLM)");
    }
    if (j.contains("architectures") && !j["architectures"].is_null()) {
      const auto& a = j["architectures"];
      SSM_CHECK(a.is_array(), op, ": architectures must be an array of strings, got ", a.dump());
      for (const auto& v : a) {
        SSM_CHECK(v.is_string(), op, ": architectures must be an array of strings, got ", a.dump());
        const std::string arch = v.get<std::string>();
        const std::string t = arch == "MambaForCausalLM" ? "mamba" : arch == "FalconMambaForCausalLM" ? "falcon_mamba" : "";
        SSM_CHECK(!t.empty(), "MambaLM::load: architecture '", arch,
                  "' is not implemented by this library (supported: MambaForCausalLM, FalconMambaForCausalLM)");
        SSM_CHECK(type.empty() || type == t, op, ": model_type '", type, "' contradicts architectures entry '", arch,
                  "'");
        type = t;
      }
    }
    return type;
  }

  // mamba_ssm's MambaLMHeadModel options that make a model other than Mamba-1 with RMSNorm.
  static void check_mamba_ssm(const nlohmann::json& j) {
    const char* op = "MambaLM::load";
    if (j.contains("ssm_cfg")) {
      const auto& s = j["ssm_cfg"];
      SSM_CHECK(s.is_object(), op, ": ssm_cfg must be an object, got ", s.dump());
      if (s.contains("layer")) {
        const auto& layer = s["layer"];
        const std::string name = layer.is_string() ? layer.get<std::string>() : layer.dump();
        SSM_CHECK(layer.is_string() && name == "Mamba1", op, ": ssm_cfg layer '", name,
                  "' is not implemented by this library (supported: Mamba1)");
      }
      // mamba_simple.Mamba's arguments; those after conv_bias only shape the initialization or the kernel used.
      static const std::set<std::string> known = {"d_state", "d_conv", "expand", "dt_rank", "bias", "conv_bias", "layer",
                                                  "dt_min", "dt_max", "dt_init", "dt_scale", "dt_init_floor",
                                                  "use_fast_path"};
      for (auto it = s.begin(); it != s.end(); ++it)
        SSM_CHECK(known.count(it.key()) != 0, op, ": ssm_cfg key '", it.key(),
                  "' is not an option of mamba_ssm's Mamba (Mamba-1) block: not implemented by this library");
    }
    if (j.contains("attn_layer_idx"))
      SSM_CHECK(j["attn_layer_idx"].is_array() && j["attn_layer_idx"].empty(), op, ": attn_layer_idx ",
                j["attn_layer_idx"].dump(), " makes a hybrid with attention layers, not implemented by this library");
    if (j.contains("d_intermediate"))
      SSM_CHECK(j["d_intermediate"] == 0, op, ": d_intermediate ", j["d_intermediate"].dump(),
                " adds MLP layers, not implemented by this library (supported: 0)");
    if (j.contains("rms_norm"))
      SSM_CHECK(j["rms_norm"] == true, op, ": rms_norm ", j["rms_norm"].dump(),
                " (LayerNorm) is not implemented by this library (supported: true)");
  }
};

/// How MambaLM's body (CausalLM) reads and writes the Mamba block: the config and the block's tensors under the
/// Hugging Face names (backbone.layers.i.mixer.*). The projections are held as weight matrices unless they are f32.
struct MambaSpec : BackboneLayout {
  static constexpr const char* name = "MambaLM";
  static constexpr const char* model = "Mamba";
  using Config = MambaConfig;
  using Block = layers::MambaBlock<float>;
  using LayerCache = layers::MambaLayerCache<float>;

  static Block init_block(const Config& cfg, index_t, std::uint64_t seed) { return Block::init(cfg.block(), seed); }

  static Block load_block(CheckpointReader& r, const Config& cfg, index_t j) {
    const std::string prefix = block_prefix(j);
    const auto bc = cfg.block();
    layers::MambaBlockParams<float> p;
    layers::MambaBlockMatrices mats;
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

/// The Mamba language model: CausalLM over layers::MambaBlock (models/causal_lm.hpp).
using MambaLM = CausalLM<MambaSpec>;
/// The decoding state of b sequences of a MambaLM: one MambaLayerCache per layer plus the number of tokens seen.
using MambaCache = MambaLM::Cache;

}  // namespace ssm::models
