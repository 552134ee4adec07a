// StripedHyena (Poli et al. 2023; togethercomputer/stripedhyena; docs/hyena.md): a language model whose layers
// alternate StripedHyena's gated convolutions (order-2 Hyena with a modal long filter, layers/hyena.hpp) with rotary
// grouped-query attention. StripedHyenaLM is the one causal LM body (models/causal_lm.hpp) over layers::HybridBlock:
// embedding → n_layer × (RMSNorm → mixer, residual add; RMSNorm → SwiGLU MLP, residual add) → RMSNorm → head.
// Decoding carries a constant-size state in the Hyena layers (the FIR's last inputs and S complex sums per channel) and
// a KV cache in the attention layers.
//
// The config reads StripedHyena's keys (hidden_size, num_layers, attn_layer_idxs, hyena_layer_idxs, state_size, ...).
// The tensors are named after StripedHyena's modules (blocks.i.projections / filter / out_filter_dense, blocks.i.mlp.l1
// / l2 / l3, pre_norm / post_norm), with two differences from its published checkpoints: the norms' parameter is
// ".weight" (StripedHyena: ".scale") and attention's q / k / v are separate (StripedHyena: one Wqkv); and its RMSNorm
// here is x / sqrt(mean x² + eps) (StripedHyena's use_flash_rmsnorm form; its plain form adds eps to the RMS). Files
// written by save() load back; published checkpoints are not converted.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/layers/hybrid_block.hpp"
#include "ssm/models/causal_lm.hpp"
#include "ssm/models/checkpoint.hpp"

namespace ssm::models {

struct StripedHyenaConfig {
  index_t d_model = 4096;  // hidden_size
  index_t n_layer = 32;    // num_layers
  index_t vocab_size = 32000;
  index_t n_heads = 32;         // num_attention_heads (also the Hyena column split's groups)
  index_t n_kv_heads = 8;       // num_attention_heads / proj_groups
  std::vector<index_t> attn_layer_idxs;  // the attention layers; every other layer is a Hyena layer
  index_t state_size = 2;       // S: poles per channel
  index_t short_filter_length = 3;
  index_t d_ff = 0;             // inner_mlp_size (0: ⌈⌊8 H / 3⌋ / m⌉ · m)
  index_t ffn_multiple = 64;    // m: inner_size_multiple_of
  double norm_epsilon = 1e-5;   // eps
  double rotary_base = 10000;   // rotary_emb_base
  index_t l_max = 2048;         // max_seqlen: the Hyena filters are precomputed for min(max_seqlen, 4096) taps and
                                // longer sequences run in pieces of that length (exact: the modal state carries over)
  bool column_split = true;     // column_split_hyena
  bool tie_embeddings = false;  // tie_embeddings
  std::vector<std::int64_t> eos_token_ids;

  index_t padded_vocab() const { return vocab_size; }
  index_t ffn() const { return d_ff > 0 ? d_ff : ((8 * d_model / 3 + ffn_multiple - 1) / ffn_multiple) * ffn_multiple; }
  /// The Hyena layers' precomputed filter length (and chunk of a long forward).
  static constexpr index_t kFilterChunk = 4096;
  bool is_attention(index_t layer) const {
    return std::find(attn_layer_idxs.begin(), attn_layer_idxs.end(), layer) != attn_layer_idxs.end();
  }
  /// Sublayer j: the mixer of layer j / 2 when j is even, its MLP when odd.
  layers::HybridBlockConfig block(index_t j) const {
    layers::HybridBlockConfig c;
    c.d_model = d_model;
    if (j % 2 == 0) {
      c.kind = is_attention(j / 2) ? layers::HybridKind::attention : layers::HybridKind::hyena;
      c.n_heads = n_heads, c.n_kv_heads = n_kv_heads, c.rotary = true, c.rotary_base = rotary_base;
      c.hyena.d_model = d_model, c.hyena.heads = column_split ? n_heads : 1, c.hyena.state_size = state_size;
      c.hyena.short_filter_length = short_filter_length, c.hyena.l_max = std::min(l_max, kFilterChunk);
    } else {
      c.kind = layers::HybridKind::mlp, c.d_ff = ffn();
    }
    return c;
  }

  void validate() const {
    const char* op = "StripedHyenaConfig";
    SSM_CHECK(d_model >= 1, op, ": hidden_size must be >= 1, got ", d_model);
    SSM_CHECK(n_layer >= 1, op, ": num_layers must be >= 1, got ", n_layer);
    SSM_CHECK(vocab_size >= 1, op, ": vocab_size must be >= 1, got ", vocab_size);
    SSM_CHECK(n_heads >= 1 && d_model % n_heads == 0 && (d_model / n_heads) % 2 == 0, op,
              ": num_attention_heads must divide hidden_size (", d_model, ") into heads of even size, got ", n_heads);
    SSM_CHECK(n_kv_heads >= 1 && n_heads % n_kv_heads == 0, op, ": the key-value heads (num_attention_heads / proj_groups) ",
              "must divide num_attention_heads (", n_heads, "), got ", n_kv_heads);
    SSM_CHECK(ffn_multiple >= 1, op, ": inner_size_multiple_of must be >= 1, got ", ffn_multiple);
    for (index_t i : attn_layer_idxs)
      SSM_CHECK(i >= 0 && i < n_layer, op, ": attn_layer_idxs entry ", i, " is not a layer in [0, ", n_layer, ")");
    SSM_CHECK(state_size >= 1, op, ": state_size must be >= 1, got ", state_size);
    SSM_CHECK(short_filter_length >= 2, op, ": short_filter_length must be >= 2, got ", short_filter_length);
    SSM_CHECK(d_ff >= 0, op, ": inner_mlp_size must be >= 0 (0: the default), got ", d_ff);
    check_positive(op, "eps", norm_epsilon);
    SSM_CHECK(std::isfinite(rotary_base) && rotary_base > 1, op, ": rotary_emb_base must be > 1, got ", rotary_base);
    SSM_CHECK(l_max >= 1, op, ": max_seqlen must be >= 1, got ", l_max);
    for (auto id : eos_token_ids) SSM_CHECK(id >= 0, op, ": eos_token_id must be >= 0, got ", id);
  }

  /// StripedHyena's config.json (model_type "stripedhyena"). Options this library does not compute are rejected by
  /// key: hyena_filter_groups other than 1, qkv_proj_bias, mha_out_proj_bias, short_filter_bias false, final_norm
  /// false, an mlp_activation other than silu, a hyena_layer_idxs that is not the complement of attn_layer_idxs.
  static StripedHyenaConfig from_json(const nlohmann::json& j) {
    const char* op = "StripedHyenaConfig";
    SSM_CHECK(j.is_object(), op, ": config.json must be a JSON object");
    const std::string type = j.contains("model_type") && j["model_type"].is_string() ? j["model_type"].get<std::string>() : "";
    SSM_CHECK(type == "stripedhyena", "StripedHyenaLM::load: model_type '", type,
              "' is not a StripedHyena model (supported: stripedhyena)");
    StripedHyenaConfig c;
    const ConfigFields F(j, op);
    F.get_int({"hidden_size"}, c.d_model, true);
    F.get_int({"num_layers"}, c.n_layer, true);
    F.get_int({"vocab_size"}, c.vocab_size, true);
    F.get_int({"num_attention_heads"}, c.n_heads);
    index_t groups = 1;
    F.get_int({"proj_groups"}, groups);
    SSM_CHECK(groups >= 1 && c.n_heads % groups == 0, op, ": proj_groups must divide num_attention_heads (", c.n_heads,
              "), got ", groups);
    c.n_kv_heads = c.n_heads / groups;
    auto indices = [&](const char* key) {
      std::vector<index_t> v;
      if (!j.contains(key)) return v;
      SSM_CHECK(j[key].is_array(), op, ": '", key, "' must be a list of layer indices");
      for (const auto& e : j[key]) {
        SSM_CHECK(e.is_number_integer(), op, ": '", key, "' must be a list of layer indices, got ", e.dump());
        v.push_back(e.get<index_t>());
      }
      return v;
    };
    c.attn_layer_idxs = indices("attn_layer_idxs");
    F.get_int({"state_size"}, c.state_size);
    F.get_int({"short_filter_length"}, c.short_filter_length);
    if (j.contains("inner_mlp_size") && !j["inner_mlp_size"].is_null()) F.get_int({"inner_mlp_size"}, c.d_ff);
    F.get_int({"inner_size_multiple_of"}, c.ffn_multiple);
    if (j.contains("mlp_activation"))
      SSM_CHECK(j["mlp_activation"] == "silu", op, ": only mlp_activation \"silu\" is supported, got ",
                j["mlp_activation"].dump());
    F.get_number("eps", c.norm_epsilon);
    F.get_number("rotary_emb_base", c.rotary_base);
    F.get_int({"max_seqlen"}, c.l_max);
    F.get_bool("column_split_hyena", c.column_split);
    F.get_bool("tie_embeddings", c.tie_embeddings);
    c.eos_token_ids = F.eos_token_ids();
    index_t groups_h = 1;
    F.get_int({"hyena_filter_groups"}, groups_h);
    SSM_CHECK(groups_h == 1, op, ": hyena_filter_groups ", groups_h, " is not supported (only 1: a filter per channel)");
    for (const char* key : {"qkv_proj_bias", "mha_out_proj_bias"}) {
      bool v = false;
      F.get_bool(key, v);
      SSM_CHECK(!v, op, ": ", key, " true is not supported (attention without biases)");
    }
    for (const char* key : {"short_filter_bias", "final_norm"}) {
      bool v = true;
      F.get_bool(key, v);
      SSM_CHECK(v, op, ": ", key, " false is not supported");
    }
    c.validate();
    if (j.contains("hyena_layer_idxs")) {
      std::set<index_t> hy;
      for (index_t i : indices("hyena_layer_idxs")) hy.insert(i);
      for (index_t i = 0; i < c.n_layer; ++i)
        SSM_CHECK(hy.count(i) == (c.is_attention(i) ? 0u : 1u), op, ": layer ", i,
                  " must be in exactly one of attn_layer_idxs and hyena_layer_idxs");
    }
    return c;
  }

  nlohmann::json to_json() const {
    std::vector<index_t> hyena;
    for (index_t i = 0; i < n_layer; ++i)
      if (!is_attention(i)) hyena.push_back(i);
    nlohmann::json j = {{"model_type", "stripedhyena"},
                        {"hidden_size", d_model},
                        {"num_layers", n_layer},
                        {"vocab_size", vocab_size},
                        {"num_attention_heads", n_heads},
                        {"proj_groups", n_heads / n_kv_heads},
                        {"attn_layer_idxs", attn_layer_idxs},
                        {"hyena_layer_idxs", hyena},
                        {"state_size", state_size},
                        {"short_filter_length", short_filter_length},
                        {"short_filter_bias", true},
                        {"inner_mlp_size", ffn()},
                        {"inner_size_multiple_of", ffn_multiple},
                        {"mlp_activation", "silu"},
                        {"eps", norm_epsilon},
                        {"rotary_emb_base", rotary_base},
                        {"max_seqlen", l_max},
                        {"column_split_hyena", column_split},
                        {"hyena_filter_groups", 1},
                        {"final_norm", true},
                        {"tie_embeddings", tie_embeddings}};
    if (eos_token_ids.size() == 1) j["eos_token_id"] = eos_token_ids[0];
    if (eos_token_ids.size() > 1) j["eos_token_id"] = eos_token_ids;
    return j;
  }
};

/// How StripedHyenaLM's body reads and writes its tensors (see the header comment).
struct StripedHyenaSpec {
  static constexpr const char* name = "StripedHyenaLM";
  static constexpr const char* model = "StripedHyena";
  using Config = StripedHyenaConfig;
  using Block = layers::HybridBlock;
  using LayerCache = layers::HybridLayerCache;

  static constexpr bool layer_norm = false;
  static constexpr const char* embedding = "embedding_layer.weight";
  static constexpr const char* embedding_alias = nullptr;
  static constexpr const char* embedding_norm = nullptr;
  static constexpr const char* final_norm = "norm";
  static constexpr const char* head = "unembed.weight";

  static index_t sublayers(const Config& cfg) { return 2 * cfg.n_layer; }
  static std::string norm_name(index_t j) {
    return "blocks." + std::to_string(j / 2) + (j % 2 == 0 ? ".pre_norm" : ".post_norm");
  }
  static std::string block_prefix(index_t j) {
    return "blocks." + std::to_string(j / 2) + (j % 2 == 0 ? "." : ".mlp.");
  }
  static double norm_eps(const Config& cfg, index_t) { return cfg.norm_epsilon; }

  static Block init_block(const Config& cfg, index_t j, std::uint64_t seed) { return Block::init(cfg.block(j), seed); }

  static Block load_block(CheckpointReader& r, const Config& cfg, index_t j) {
    const std::string prefix = block_prefix(j);
    const layers::HybridBlockConfig bc = cfg.block(j);
    const index_t H = cfg.d_model;
    Block::Params p;
    switch (bc.kind) {
      case layers::HybridKind::hyena: {
        layers::ModalHyenaParams<float> hp;
        hp.for_each(bc.hyena, [&](const char* nm, std::vector<float>& v, const Dims& s) { r.take(prefix + nm, s, v); });
        p.hyena = layers::ModalHyenaLayer<float>(bc.hyena, std::move(hp));
        break;
      }
      case layers::HybridKind::attention: {
        const std::string a = prefix + "inner_mha_cls.";
        const index_t hp = bc.n_heads * bc.head_dim(), kvp = bc.n_kv_heads * bc.head_dim();
        p.q_proj = r.take_matrix(a + "q_proj.weight", {hp, H});
        p.k_proj = r.take_matrix(a + "k_proj.weight", {kvp, H});
        p.v_proj = r.take_matrix(a + "v_proj.weight", {kvp, H});
        p.o_proj = r.take_matrix(a + "out_proj.weight", {H, hp});
        break;
      }
      default: {  // the MLP l3(silu(l1 z) ⊙ l2 z): one expert with gate l1, up l2, down l3
        const index_t I = bc.d_ff;
        std::vector<float> gu, v;
        r.take(prefix + "l1.weight", {I, H}, gu);
        r.take(prefix + "l2.weight", {I, H}, v);
        gu.insert(gu.end(), v.begin(), v.end());
        r.take(prefix + "l3.weight", {H, I}, v);
        p.router = Tensor::zeros({1, H}, DType::f32);
        p.w_gate_up = Tensor::empty({1, 2 * I, H}, DType::f32);
        p.w_down = Tensor::empty({1, H, I}, DType::f32);
        std::copy(gu.begin(), gu.end(), p.w_gate_up.data_as<float>());
        std::copy(v.begin(), v.end(), p.w_down.data_as<float>());
      }
    }
    return Block(bc, std::move(p));
  }

  template <class F>
  static void save_block(const Block& blk, const Config&, F&& add) {
    const layers::HybridBlockConfig& bc = blk.config();
    const Block::Params& p = blk.params();
    const index_t H = bc.d_model;
    switch (bc.kind) {
      case layers::HybridKind::hyena: {
        p.hyena.params().for_each(bc.hyena, [&](const char* nm, const std::vector<float>& v, const Dims& s) {
          add(nm, v, s);
        });
        break;
      }
      case layers::HybridKind::attention: {
        const index_t hp = bc.n_heads * bc.head_dim(), kvp = bc.n_kv_heads * bc.head_dim();
        add("inner_mha_cls.q_proj.weight", p.q_proj.to_f32(), Dims{hp, H});
        add("inner_mha_cls.k_proj.weight", p.k_proj.to_f32(), Dims{kvp, H});
        add("inner_mha_cls.v_proj.weight", p.v_proj.to_f32(), Dims{kvp, H});
        add("inner_mha_cls.out_proj.weight", p.o_proj.to_f32(), Dims{H, hp});
        break;
      }
      default: {
        const index_t I = bc.d_ff;
        const float* gu = p.w_gate_up.data_as<float>();
        add("l1.weight", std::vector<float>(gu, gu + I * H), Dims{I, H});
        add("l2.weight", std::vector<float>(gu + I * H, gu + 2 * I * H), Dims{I, H});
        add("l3.weight", std::vector<float>(p.w_down.data_as<float>(), p.w_down.data_as<float>() + H * I), Dims{H, I});
      }
    }
  }
};

/// The StripedHyena language model: CausalLM over layers::HybridBlock (models/causal_lm.hpp), f32.
using StripedHyenaLM = CausalLM<StripedHyenaSpec>;
using StripedHyenaCache = StripedHyenaLM::Cache;

}  // namespace ssm::models
