// The Mamba language model (Gu & Dao 2023; docs/math.md §6.2): token embedding → n_layer × (RMSNorm → Mamba
// block, residual add in fp32) → final RMSNorm → lm_head (tied to the embedding by default). Logits for
// a sequence, prefill then token-by-token generation (greedy, temperature, top-k, top-p, seeded) with a
// copyable cache of constant size, and the Hugging Face checkpoint format (config.json +
// model.safetensors or a sharded model.safetensors.index.json, F32/F16/BF16). The big matrices (embedding,
// lm_head, in_proj, x_proj, dt_proj, out_proj) keep the checkpoint's dtype by default (f16 / bf16 weights are
// read in place from the memory-mapped file and converted to f32 inside the products, so the resident memory is
// about the file's size; LoadOptions); activations, states, sums and the small parameters are f32. Loads
// transformers' `mamba` and `falcon_mamba` model types and mamba_ssm's configs (docs/checkpoints.md).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "ssm/core/backend.hpp"
#include "ssm/core/check.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/layers/basic.hpp"
#include "ssm/layers/mamba.hpp"
#include "ssm/layers/weight.hpp"
#include "ssm/models/safetensors.hpp"
#include "ssm/ops/embedding.hpp"
#include "ssm/ops/linear.hpp"
#include "ssm/ops/rms_norm.hpp"

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
    auto get_int = [&](std::initializer_list<const char*> keys, index_t& out, bool required) {
      for (const char* k : keys)
        if (j.contains(k)) {
          const auto& v = j[k];
          SSM_CHECK(v.is_number_integer(), op, ": field '", k, "' must be an integer, got ", v.dump());
          out = v.get<index_t>();
          return;
        }
      SSM_CHECK(!required, op, ": config.json lacks '", *keys.begin(), "'");
    };
    auto get_bool = [&](const nlohmann::json& obj, const char* k, bool& out, const char* where = "field") {
      if (!obj.contains(k)) return;
      SSM_CHECK(obj[k].is_boolean(), op, ": ", where, " '", k, "' must be a boolean, got ", obj[k].dump());
      out = obj[k].get<bool>();
    };
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
      get_int({"pad_vocab_size_multiple"}, c.pad_vocab_size_multiple, false);
    }
    get_int({"hidden_size", "d_model"}, c.d_model, true);
    get_int({"num_hidden_layers", "n_layer"}, c.n_layer, true);
    get_int({"vocab_size"}, c.vocab_size, true);
    get_int({"state_size", "d_state"}, c.d_state, false);
    get_int({"conv_kernel", "d_conv"}, c.d_conv, false);
    get_int({"expand"}, c.expand, false);
    get_int({"intermediate_size"}, c.d_inner, false);
    if (!hf && j.contains("ssm_cfg")) {  // mamba_ssm: keyword arguments of mamba_simple.Mamba
      const auto& s = j["ssm_cfg"];
      SSM_CHECK(s.is_object(), op, ": ssm_cfg must be an object, got ", s.dump());
      for (auto [k, dst] : {std::pair<const char*, index_t*>{"d_state", &c.d_state}, {"d_conv", &c.d_conv},
                            {"expand", &c.expand}}) {
        if (!s.contains(k)) continue;
        SSM_CHECK(s[k].is_number_integer(), op, ": ssm_cfg field '", k, "' must be an integer, got ", s[k].dump());
        *dst = s[k].get<index_t>();
      }
      if (s.contains("dt_rank")) c.dt_rank = get_rank(s["dt_rank"], "ssm_cfg field 'dt_rank'");
      get_bool(s, "bias", c.bias, "ssm_cfg field");
      get_bool(s, "conv_bias", c.conv_bias, "ssm_cfg field");
    }
    if (j.contains("time_step_rank")) c.dt_rank = get_rank(j["time_step_rank"], "time_step_rank");
    get_bool(j, "use_bias", c.bias);
    get_bool(j, "use_conv_bias", c.conv_bias);
    get_bool(j, "tie_word_embeddings", c.tie_embeddings);
    get_bool(j, "tie_embeddings", c.tie_embeddings);
    get_bool(j, "residual_in_fp32", c.residual_in_fp32);
    auto get_number = [&](const char* k, double& out) {
      if (!j.contains(k)) return false;
      SSM_CHECK(j[k].is_number(), op, ": field '", k, "' must be a number, got ", j[k].dump());
      out = j[k].get<double>();
      return true;
    };
    for (const char* k : {"layer_norm_epsilon", "norm_epsilon"}) get_number(k, c.norm_epsilon);
    if (type == "falcon_mamba") {
      double eps = 1e-6;  // transformers' FalconMambaConfig default
      get_number("mixer_rms_eps", eps);
      c.mixer_rms_eps = eps;
    }
    if (j.contains("hidden_act"))
      SSM_CHECK(j["hidden_act"] == "silu", op, ": only hidden_act \"silu\" is supported, got ",
                j["hidden_act"].dump());
    if (j.contains("eos_token_id") && !j["eos_token_id"].is_null()) {
      const auto& e = j["eos_token_id"];
      auto add = [&](const nlohmann::json& v) {
        SSM_CHECK(v.is_number_integer(), op, ": eos_token_id must be an integer or a list of integers, got ",
                  e.dump());
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
                "' is not implemented by this library (supported: mamba, falcon_mamba)");
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

/// Sampling options for generation. temperature 0 (or top_k 1) is greedy decoding (argmax, lowest id
/// on ties); otherwise logits / temperature → keep the top_k largest (0: all) → keep the smallest set
/// of most probable tokens whose probability reaches top_p (1: all) → sample with the seeded RNG.
struct SamplingOptions {
  double temperature = 0.0;
  index_t top_k = 0;
  double top_p = 1.0;
  std::uint64_t seed = 0;

  void validate() const {
    SSM_CHECK(std::isfinite(temperature) && temperature >= 0, "SamplingOptions: temperature must be finite and >= 0, got ",
              temperature);
    SSM_CHECK(top_k >= 0, "SamplingOptions: top_k must be >= 0 (0 = no limit), got ", top_k);
    SSM_CHECK(std::isfinite(top_p) && top_p > 0 && top_p <= 1, "SamplingOptions: top_p must be in (0, 1], got ", top_p);
  }
};

/// Options of MambaLM::generate: sampling, and the tokens that end the generation.
struct GenerationOptions : SamplingOptions {
  /// Tokens that end generation. The stop token is the last token returned, as in transformers' generate()
  /// (which appends the eos token, then marks the sequence finished). Unset: the model's end-of-sequence ids
  /// (MambaConfig::eos_token_ids, from config.json's eos_token_id); empty: only max_new_tokens ends it.
  std::optional<std::vector<std::int64_t>> stop_ids;
  /// Prefill the prompt in chunks of at most this many tokens (each resumes the cache of the previous one), so
  /// that the prefill's memory stays bounded for a prompt of any length; 0: the whole prompt at once.
  index_t prefill_chunk = 0;

  GenerationOptions() = default;
  /// Sampling options alone (implicit, so that generate(prompt, n, sampling) reads as before).
  GenerationOptions(const SamplingOptions& s) : SamplingOptions(s) {}  // NOLINT(google-explicit-constructor)

  void validate() const {
    SamplingOptions::validate();
    if (stop_ids)
      for (auto id : *stop_ids) SSM_CHECK(id >= 0, "GenerationOptions: stop_ids must be >= 0, got ", id);
    SSM_CHECK(prefill_chunk >= 0, "GenerationOptions: prefill_chunk must be >= 0 (0 = the whole prompt), got ",
              prefill_chunk);
  }
};

/// Picks a token from logits (vocab) under the options; `rng` is advanced only when sampling.
inline index_t sample_token(std::span<const float> logits, const SamplingOptions& opt, std::mt19937_64& rng) {
  SSM_CHECK(!logits.empty(), "sample_token: empty logits");
  const index_t v = static_cast<index_t>(logits.size());
  if (opt.temperature <= 0 || opt.top_k == 1)
    return static_cast<index_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<index_t> order(static_cast<std::size_t>(v));
  std::iota(order.begin(), order.end(), index_t(0));
  std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) { return logits[a] > logits[b]; });
  const index_t k = opt.top_k > 0 ? std::min(opt.top_k, v) : v;
  std::vector<double> p(static_cast<std::size_t>(k));
  const double mx = logits[order[0]];
  double sum = 0;
  for (index_t i = 0; i < k; ++i) sum += (p[i] = std::exp((logits[order[i]] - mx) / opt.temperature));
  index_t keep = k;
  if (opt.top_p < 1) {
    double cum = 0;
    for (index_t i = 0; i < k; ++i) {
      cum += p[i] / sum;
      if (cum >= opt.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double total = 0;
  for (index_t i = 0; i < keep; ++i) total += p[i];
  const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53 * total;  // uniform in [0, total)
  double acc = 0;
  for (index_t i = 0; i < keep; ++i) {
    acc += p[i];
    if (u < acc) return order[i];
  }
  return order[keep - 1];
}

/// The decoding state of b sequences: one MambaLayerCache per layer plus the number of tokens seen.
/// A plain value: copying it forks the sequences. Its size is independent of the context length.
struct MambaCache {
  index_t b = 0;
  index_t seqlen = 0;
  std::vector<layers::MambaLayerCache<float>> layers;

  std::size_t nbytes() const {
    std::size_t s = 0;
    for (const auto& l : layers) s += l.nbytes();
    return s;
  }
};

/// Options of MambaLM::load / from_checkpoint.
struct LoadOptions {
  /// The dtype the big matrices (embedding, lm_head, every block's in_proj, x_proj, dt_proj and out_proj) are
  /// held in: f32, f16 or bf16. Unset (the default): each matrix keeps the dtype it has in the checkpoint (F64
  /// becomes f32); a 16-bit matrix stored aligned is then a zero-copy view of the memory-mapped file. f32:
  /// every weight converted to f32 (what backward / training needs). The norms, conv, biases, A_log and D are
  /// always f32; computation is f32 throughout (16-bit weights are converted inside the products).
  std::optional<DType> weight_dtype;
};

/// The Mamba language model: f32 activations and arithmetic; the big weight matrices in f32, f16 or bf16
/// (LoadOptions::weight_dtype).
class MambaLM {
 public:
  using Block = layers::MambaBlock<float>;

  /// A randomly initialized model: embedding N(0, 0.02), norms 1, blocks as published.
  static MambaLM init(const MambaConfig& cfg, std::uint64_t seed) {
    cfg.validate();
    MambaLM m;
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
    for (index_t i = 0; i < cfg.n_layer; ++i) {
      m.blocks_.push_back(Block::init(cfg.block(), rng()));
      m.norms_.emplace_back(static_cast<std::size_t>(cfg.d_model), 1.0f);
    }
    m.norm_f_.assign(static_cast<std::size_t>(cfg.d_model), 1.0f);
    return m;
  }

  /// Loads a checkpoint directory: `config.json` (see MambaConfig::from_json) and the weights, either
  /// `model.safetensors` or the shards named by `model.safetensors.index.json` (F32, F16, BF16, F64; every
  /// file memory-mapped; the big matrices kept in their dtype or converted as `opt` says, the rest converted to
  /// f32). Throws ssm::Error for a missing file, an unsupported model type, a bad config, a malformed file or
  /// index, a missing, extra or wrongly shaped tensor, a non-floating dtype, or a weight_dtype other than f32,
  /// f16, bf16; a PyTorch pickle checkpoint (pytorch_model.bin) is named with the command that converts it.
  static MambaLM load(const std::string& dir, const LoadOptions& opt = {}) {
    namespace fs = std::filesystem;
    const fs::path cfg_path = fs::path(dir) / "config.json";
    SSM_CHECK(fs::is_regular_file(cfg_path), "MambaLM::load: '", cfg_path.string(), "' not found");
    std::ifstream is(cfg_path);
    const nlohmann::json j = nlohmann::json::parse(is, nullptr, /*allow_exceptions=*/false);
    SSM_CHECK(!j.is_discarded(), "MambaLM::load: '", cfg_path.string(), "' is not valid JSON");
    // The config first: a model this library does not implement is named before its tensors are looked at.
    const MambaConfig cfg = MambaConfig::from_json(j);
    return from_checkpoint(cfg, open_weights(dir), opt);
  }

  /// The weights of a checkpoint directory: model.safetensors, else the shards of model.safetensors.index.json
  /// (as transformers prefers them). Throws ssm::Error when neither is there, explaining a PyTorch pickle.
  static safetensors::Checkpoint open_weights(const std::string& dir) {
    namespace fs = std::filesystem;
    const fs::path single = fs::path(dir) / "model.safetensors", index = fs::path(dir) / "model.safetensors.index.json";
    if (fs::is_regular_file(single)) return safetensors::Checkpoint(safetensors::File::open(single.string()));
    if (fs::is_regular_file(index)) return safetensors::Checkpoint::open_index(index.string());
    for (const char* bin : {"pytorch_model.bin", "pytorch_model.bin.index.json"})
      SSM_CHECK(!fs::exists(fs::path(dir) / bin), "MambaLM::load: '", dir, "' holds '", bin,
                "', a PyTorch pickle checkpoint, which this library does not read (unpickling can run arbitrary code). "
                "Convert it to safetensors with transformers: python -c \"from transformers import "
                "AutoModelForCausalLM as M; M.from_pretrained('", dir, "').save_pretrained('OUT', "
                "safe_serialization=True)\" and load OUT (docs/checkpoints.md)");
    fail("MambaLM::load: '", dir, "' has no weights: '", single.string(), "' not found, nor '", index.string(),
         "' (a sharded checkpoint)");
  }

  /// Builds the model from one parsed safetensors file under the Hugging Face tensor names (mamba_ssm's
  /// `backbone.embedding.weight` is accepted too).
  static MambaLM from_safetensors(const MambaConfig& cfg, const safetensors::File& f, const LoadOptions& opt = {}) {
    return from_checkpoint(cfg, safetensors::Checkpoint(f), opt);
  }

  /// from_safetensors over a checkpoint of one or more files (a sharded checkpoint).
  static MambaLM from_checkpoint(const MambaConfig& cfg, const safetensors::Checkpoint& f,
                                 const LoadOptions& opt = {}) {
    cfg.validate();
    if (opt.weight_dtype)
      layers::WeightMatrix::check_dtype("MambaLM::load: LoadOptions::weight_dtype", *opt.weight_dtype);
    MambaLM m;
    m.cfg_ = cfg;
    const auto bc = cfg.block();
    std::set<std::string> used;
    auto check = [&](const std::string& name, const Dims& shape) {
      SSM_CHECK(f.contains(name), "MambaLM::load: '", f.source(), "' lacks tensor '", name, "'");
      const auto& e = f.entry(name);
      SSM_CHECK(e.shape == shape, "MambaLM::load: tensor '", name, "' has shape ", e.shape.str(), ", the config needs ",
                shape.str());
      SSM_CHECK(e.dtype == DType::f32 || e.dtype == DType::f16 || e.dtype == DType::bf16 || e.dtype == DType::f64,
                "MambaLM::load: tensor '", name, "' has dtype ", e.dtype_str, ", expected F32, F16, BF16 or F64");
      used.insert(name);
    };
    auto take = [&](const std::string& name, const Dims& shape, std::vector<float>& dst) {
      check(name, shape);
      dst = f.tensor_f32(name).to_vector<float>();
    };
    // The dtype a matrix is held in: opt.weight_dtype, else the stored one (F64: f32).
    auto matrix_dtype = [&](const std::string& name) {
      if (opt.weight_dtype) return *opt.weight_dtype;
      const auto stored = f.contains(name) ? f.entry(name).dtype : std::nullopt;
      return stored == DType::f16 || stored == DType::bf16 ? *stored : DType::f32;
    };
    // A matrix in `dtype`: the file's bytes when the dtype is kept (a view of the mapping when aligned, see
    // safetensors::File::tensor), else converted through f32.
    auto take_matrix = [&](const std::string& name, const Dims& shape, DType dtype) {
      check(name, shape);
      if (f.entry(name).dtype == dtype) return layers::WeightMatrix(f.file_of(name).tensor(name));
      Tensor t = f.tensor_f32(name);
      if (dtype == DType::f32) return layers::WeightMatrix(std::move(t));
      return layers::WeightMatrix::from_f32(t.data_as<float>(), shape[0], shape[1], dtype);
    };
    const Dims emb_shape{cfg.padded_vocab(), cfg.d_model};
    const std::string emb_name =
        f.contains("backbone.embedding.weight") ? "backbone.embedding.weight" : "backbone.embeddings.weight";
    m.embedding_ = take_matrix(emb_name, emb_shape, matrix_dtype(emb_name));
    for (index_t i = 0; i < cfg.n_layer; ++i) {
      const std::string pre = "backbone.layers." + std::to_string(i) + ".";
      layers::MambaBlockParams<float> p;
      layers::MambaBlockMatrices mats;
      p.for_each(bc, [&](const char* name, std::vector<float>& v, const Dims& s) {
        const std::string full = pre + "mixer." + name;
        layers::WeightMatrix* slot = mats.find(name);
        const DType dt = matrix_dtype(full);
        if (slot != nullptr && dt != DType::f32)
          *slot = take_matrix(full, s, dt);
        else
          take(full, s, v);  // f32 matrices stay in the params (backward works on them)
      });
      m.blocks_.emplace_back(bc, std::move(p), std::move(mats));
      m.norms_.emplace_back();
      take(pre + "norm.weight", Dims{cfg.d_model}, m.norms_.back());
    }
    take("backbone.norm_f.weight", Dims{cfg.d_model}, m.norm_f_);
    if (!cfg.tie_embeddings) {
      m.lm_head_ = take_matrix("lm_head.weight", emb_shape, matrix_dtype("lm_head.weight"));
    } else if (f.contains("lm_head.weight")) {
      // Some writers store the tied head as well: accept it when it is the embedding.
      const layers::WeightMatrix head = take_matrix("lm_head.weight", emb_shape, matrix_dtype("lm_head.weight"));
      SSM_CHECK(head.same_values(m.embedding_),
                "MambaLM::load: tie_word_embeddings is set but 'lm_head.weight' "
                "differs from the embedding");
    }
    for (const auto& name : f.names())
      SSM_CHECK(used.count(name) != 0, "MambaLM::load: '", f.file_of(name).source(), "' has unexpected tensor '", name,
                "' (not part of a Mamba model with this config)");
    return m;
  }

  /// Writes config.json and model.safetensors (in `dtype`: f32, f16 or bf16) into `dir` (created).
  void save(const std::string& dir, DType dtype = DType::f32) const {
    namespace fs = std::filesystem;
    SSM_CHECK(dtype == DType::f32 || dtype == DType::f16 || dtype == DType::bf16, "MambaLM::save: dtype ",
              name(dtype), " is not one of f32, f16, bf16");
    fs::create_directories(dir);
    {
      std::ofstream os(fs::path(dir) / "config.json");
      os << cfg_.to_json().dump(2) << "\n";
      SSM_CHECK(os.good(), "MambaLM::save: cannot write config.json in '", dir, "'");
    }
    std::vector<Tensor> keep;
    std::vector<std::pair<std::string, TensorView>> named;
    auto add = [&](const std::string& name, const std::vector<float>& v, const Dims& shape) {
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
    };
    add("backbone.embeddings.weight", embedding_.to_f32(), {cfg_.padded_vocab(), cfg_.d_model});
    for (index_t i = 0; i < cfg_.n_layer; ++i) {
      const std::string pre = "backbone.layers." + std::to_string(i) + ".";
      auto p = blocks_[static_cast<std::size_t>(i)].full_params();
      p.for_each(cfg_.block(), [&](const char* name, std::vector<float>& v, const Dims& s) { add(pre + "mixer." + name, v, s); });
      add(pre + "norm.weight", norms_[static_cast<std::size_t>(i)], {cfg_.d_model});
    }
    add("backbone.norm_f.weight", norm_f_, {cfg_.d_model});
    if (!cfg_.tie_embeddings) add("lm_head.weight", lm_head_.to_f32(), {cfg_.padded_vocab(), cfg_.d_model});
    safetensors::save((fs::path(dir) / "model.safetensors").string(), named, {{"format", "pt"}});
  }

  const MambaConfig& config() const { return cfg_; }
  const std::vector<Block>& blocks() const { return blocks_; }

  /// The dtype of the embedding (the big matrices' dtype for a model loaded with one LoadOptions::weight_dtype
  /// or from a checkpoint of one dtype).
  DType weight_dtype() const { return embedding_.dtype(); }
  /// Bytes of all parameters as held (matrices in their dtype, the rest f32); a matrix viewing the mapped
  /// checkpoint counts as the file pages it reads.
  std::size_t weight_bytes() const {
    std::size_t n = embedding_.nbytes() + lm_head_.nbytes() + norm_f_.size() * sizeof(float);
    for (std::size_t i = 0; i < blocks_.size(); ++i) n += blocks_[i].nbytes() + norms_[i].size() * sizeof(float);
    return n;
  }

  /// Threads the CPU forward, prefill, step and the logits GEMM may use: every block's (MambaBlock::set_threads)
  /// and the lm_head's. 0 (the default): automatic, the hardware threads, fewer for a small problem
  /// (ssm::cpu::cpu_threads). Results depend on it only by rounding (the GEMMs block their sums by each
  /// thread's share of the features).
  void set_threads(int n) {
    SSM_CHECK(n >= 0, "MambaLM::set_threads: n must be >= 0 (0 = automatic), got ", n);
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
  /// tensors or on the device. Backward stays on the CPU model.
  MambaLM to(Device device) const {
    MambaLM m = *this;
    m.dev_.reset();
    m.blocks_.clear();
    for (const auto& blk : blocks_) m.blocks_.push_back(blk.to(device));
    if (device.is_cpu()) return m;
    auto up = [&](const TensorView& v) {
      Tensor t = Tensor::empty(v.shape(), v.dtype(), device);
      copy(t.view(), v);
      return t;
    };
    auto d = std::make_shared<DeviceWeights>();
    d->device = device;
    d->embedding = up(embedding_.tensor().view());
    if (!cfg_.tie_embeddings) d->lm_head = up(lm_head_.tensor().view());
    d->norm_f = up(TensorView::of(norm_f_.data(), {cfg_.d_model}));
    for (const auto& n : norms_) d->norms.push_back(up(TensorView::of(n.data(), {cfg_.d_model})));
    m.dev_ = std::move(d);
    return m;
  }

  /// A zero cache for b sequences on the model's device.
  MambaCache make_cache(index_t b) const {
    SSM_CHECK(b >= 1, "MambaLM::make_cache: b must be >= 1, got ", b);
    MambaCache c;
    c.b = b;
    for (const auto& blk : blocks_) c.layers.push_back(blk.make_cache(b));
    return c;
  }

  /// Logits for every position: ids (b, l) i32 or i64, on the CPU or the model's device → (b, l, padded_vocab) f32 on
  /// the model's device (device(); a model moved with to() runs there). Ids on another device (e.g. CUDA ids given
  /// to a CPU model) are an ssm::Error that says to move the model: the model never moves by itself.
  Tensor logits(const TensorView& ids) const {
    Checker c("MambaLM::logits");
    c.defined("ids", ids).rank("ids", ids, 2);
    check_ids(c, ids);
    const index_t b = ids.size(0), l = ids.size(1), dm = cfg_.d_model;
    Tensor keep;
    Stream h = hidden(on_device(ids, keep), nullptr);  // (b, l, d_model) twice
    Tensor out = Tensor::empty({b, l, cfg_.padded_vocab()}, DType::f32, device());  // (b, l, V)
    head(h.y.view().reshape({b * l, dm}), h.res.view().reshape({b * l, dm}), out);
    return out;
  }

  /// Runs the prompts ids (b, l) through the model in parallel, fills `cache` and returns the logits of
  /// the last position (b, padded_vocab). The cache is reset first, unless `resume` is set: then the
  /// tokens continue the sequences in `cache` (a long prompt can be prefilled in chunks).
  Tensor prefill(const TensorView& ids, MambaCache& cache, bool resume = false) const {
    Checker c("MambaLM::prefill");
    c.defined("ids", ids).rank("ids", ids, 2);
    check_ids(c, ids);
    c.require(ids.size(1) >= 1, "ids", "the prompt must hold at least one token");
    const index_t b = ids.size(0), l = ids.size(1), dm = cfg_.d_model;
    if (resume) {
      c.require(cache.b == b && cache.layers.size() == blocks_.size(), "cache",
                "resume needs a cache made for ", b, " sequences and ", blocks_.size(), " layers");
      for (std::size_t i = 0; i < blocks_.size(); ++i) blocks_[i].check_cache(cache.layers[i]);
    } else {
      cache = make_cache(b);
    }
    Tensor keep;
    Stream h = hidden(on_device(ids, keep), &cache, resume);  // (b, l, d_model) twice
    // The last position of every sequence: rows l - 1, 2l - 1, ... (row stride l · d_model).
    Tensor out = Tensor::empty({b, cfg_.padded_vocab()}, DType::f32, device());  // (b, V)
    head(h.y.view().reshape({b, l, dm}).select(1, l - 1), h.res.view().reshape({b, l, dm}).select(1, l - 1), out);
    cache.seqlen = resume ? cache.seqlen + l : l;
    return out;
  }

  /// One token per sequence: ids (b) → logits (b, padded_vocab); advances the cache by one token.
  Tensor step(std::span<const std::int64_t> ids, MambaCache& cache) const {
    SSM_CHECK(static_cast<index_t>(ids.size()) == cache.b && cache.b >= 1, "MambaLM::step: ", ids.size(),
              " token ids for a cache of ", cache.b, " sequences");
    SSM_CHECK(cache.layers.size() == blocks_.size(), "MambaLM::step: cache has ", cache.layers.size(),
              " layers, the model ", blocks_.size());
    for (std::size_t i = 0; i < blocks_.size(); ++i) blocks_[i].check_cache(cache.layers[i]);
    const index_t b = cache.b, dm = cfg_.d_model;
    Stream h(b, dm, device());  // (b, d_model) twice
    Tensor x = Tensor::empty({b, dm}, DType::f32, device());  // (b, d_model)
    Tensor work = Tensor::empty({blocks_.empty() ? 0 : blocks_[0].workspace_size(b)}, DType::f32, device());
    Tensor keep;
    embedding_into(on_device(TensorView::of(ids.data(), {b}), keep), embedding_view(), h.res);
    for (std::size_t i = 0; i < blocks_.size(); ++i) {
      pre_norm(i, h, x);
      blocks_[i].step_into(x, h.y, cache.layers[i].conv_state, cache.layers[i].ssm_state, work);
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
                                     const GenerationOptions& opt = {}, MambaCache* cache = nullptr) const {
    std::vector<std::int64_t> out;
    generate_stream(prompt, max_new_tokens, opt, [&](std::int64_t id) {
      out.push_back(id);
      return true;
    }, cache);
    return out;
  }

  /// generate() that hands each new token to `on_token` as soon as it is sampled, before the model computes the
  /// next one (for printing text as it is generated); on_token returning false ends the generation after that
  /// token. The tokens are those generate() returns. Without `cache` the last token is not fed back (nothing
  /// would read the state it makes). The prompt is prefilled in chunks of opt.prefill_chunk tokens when that is
  /// set. Returns the number of tokens generated.
  index_t generate_stream(const std::vector<std::int64_t>& prompt, index_t max_new_tokens, const GenerationOptions& opt,
                          const std::function<bool(std::int64_t)>& on_token, MambaCache* cache = nullptr) const {
    opt.validate();
    SSM_CHECK(max_new_tokens >= 0, "MambaLM::generate: max_new_tokens must be >= 0, got ", max_new_tokens);
    SSM_CHECK(!prompt.empty(), "MambaLM::generate: the prompt must hold at least one token");
    for (std::size_t i = 0; i < prompt.size(); ++i)
      SSM_CHECK(prompt[i] >= 0 && prompt[i] < cfg_.vocab_size, "MambaLM::generate: prompt token ", prompt[i],
                " at position ", i, " is outside the model's vocabulary [0, ", cfg_.vocab_size, ")");
    const std::vector<std::int64_t>& stop = opt.stop_ids ? *opt.stop_ids : cfg_.eos_token_ids;
    MambaCache local;
    MambaCache& c = cache != nullptr ? *cache : local;
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
  void check_ids(const Checker& c, const TensorView& ids) const {
    c.require(ids.dtype() == DType::i64 || ids.dtype() == DType::i32, "ids", "expected dtype i32 or i64, got ",
              name(ids.dtype()));
    c.require(ids.is_contiguous(), "ids", "expected a contiguous tensor, got strides ", ids.strides().str());
    c.require(ids.device().is_cpu() || ids.device() == device(), "ids", "expected a cpu tensor or one on the model's device ",
              device().str(), ", got ", ids.device().str(), ": run a model on that device (model.to(Device::",
              ids.device().is_cuda() ? "cuda(" + std::to_string(ids.device().index) + ")" : ids.device().str(),
              "), which copies the weights there once)");
  }

  // ids on the model's device: ids itself, or a copy of CPU ids held by `keep`.
  TensorView on_device(const TensorView& ids, Tensor& keep) const {
    if (ids.device() == device()) return ids;
    keep = Tensor::empty(ids.shape(), ids.dtype(), device());
    copy(keep.view(), ids);
    return keep.view();
  }

  // The embedding, lm_head (the embedding when tied), norms on the model's device.
  TensorView embedding_view() const { return dev_ ? dev_->embedding.view() : embedding_.tensor().view(); }
  TensorView head_view() const {
    if (cfg_.tie_embeddings) return embedding_view();
    return dev_ ? dev_->lm_head.view() : lm_head_.tensor().view();
  }
  TensorView norm_view(std::size_t i) const {
    return dev_ ? dev_->norms[i].view() : TensorView::of(norms_[i].data(), {cfg_.d_model});
  }
  TensorView norm_f_view() const { return dev_ ? dev_->norm_f.view() : TensorView::of(norm_f_.data(), {cfg_.d_model}); }

  // The residual stream before the last block's output is added (res) and that output (y), each (rows, d_model):
  // the add is fused into the next RMSNorm (ssm::rms_norm with a residual), as in mamba_ssm.
  struct Stream {
    Tensor res, y;  // (rows, d_model) each
    Stream(index_t rows, index_t dm, Device device)
        : res(Tensor::empty({rows, dm}, DType::f32, device)), y(Tensor::empty({rows, dm}, DType::f32, device)) {}
  };

  // x (rows, d_model) = RMSNorm_i of the residual stream: block 0 normalizes the embedding; block i > 0 first adds
  // block i - 1's output y into res.
  void pre_norm(std::size_t i, Stream& h, const TensorView& x) const {
    RmsNormInputs in;
    in.weight = norm_view(i);
    in.eps = cfg_.norm_epsilon;
    if (i == 0) {
      in.x = h.res;
    } else {
      in.x = h.y;
      in.residual = h.res.view();
    }
    rms_norm_into(in, x);
  }

  // Runs the blocks over ids (b, l); fills the cache when given.
  Stream hidden(const TensorView& ids, MambaCache* cache, bool resume = false) const {
    const index_t b = ids.size(0), l = ids.size(1), dm = cfg_.d_model, rows = b * l;
    Stream h(rows, dm, device());                               // (b · l, d_model) twice
    Tensor x = Tensor::empty({rows, dm}, DType::f32, device());  // (b · l, d_model)
    embedding_into(ids.reshape({rows}), embedding_view(), h.res);
    for (std::size_t i = 0; i < blocks_.size(); ++i) {
      pre_norm(i, h, x);
      std::optional<TensorView> conv_state, ssm_state;
      if (cache != nullptr) conv_state = cache->layers[i].conv_state.view(), ssm_state = cache->layers[i].ssm_state.view();
      blocks_[i].forward_into(x.view().reshape({b, l, dm}), h.y.view().reshape({b, l, dm}), conv_state, ssm_state, resume);
    }
    return h;
  }

  // logits (rows, V) = rmsnorm(res + y, norm_f) · head^T, head = the embedding when tied; y and res (rows,
  // d_model) with unit stride along d_model (res is updated in place by the fused add).
  void head(const TensorView& y, const TensorView& res, const TensorView& logits) const {
    const index_t rows = y.size(0), dm = cfg_.d_model;
    Tensor x = Tensor::empty({rows, dm}, DType::f32, device());  // (rows, d_model)
    rms_norm_into({y, norm_f_view(), res, cfg_.norm_epsilon}, x);
    LinearOptions opt;
    opt.num_threads = threads_;  // 0: by the size of the product
    linear_into({x, head_view(), std::nullopt}, logits.reshape({rows, cfg_.padded_vocab()}), opt);
  }

  MambaConfig cfg_;
  layers::WeightMatrix embedding_;         // (padded_vocab, d_model)
  layers::WeightMatrix lm_head_;           // (padded_vocab, d_model), empty when tied
  std::vector<Block> blocks_;              // n_layer
  std::vector<std::vector<float>> norms_;  // n_layer × (d_model)
  std::vector<float> norm_f_;              // (d_model)
  int threads_ = 0;                        // set_threads
  // The embedding, lm_head and norms on device() when not the CPU (to()); the blocks hold their own parameters.
  struct DeviceWeights {
    Device device;
    Tensor embedding, lm_head, norm_f;  // (padded_vocab, d_model) twice (lm_head empty when tied), (d_model)
    std::vector<Tensor> norms;          // n_layer × (d_model)
  };
  std::shared_ptr<const DeviceWeights> dev_;
};

}  // namespace ssm::models
