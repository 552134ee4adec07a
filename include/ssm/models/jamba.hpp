// Jamba (Lieber et al. 2024): Mamba layers with an attention layer every attn_layer_period layers and a mixture of
// experts in place of the MLP every expert_layer_period layers. JambaLM is the one causal LM body
// (models/causal_lm.hpp) over layers::HybridBlock: embedding → n_layer × (RMSNorm → mixer, residual add; RMSNorm →
// feed-forward, residual add) → RMSNorm → lm_head, loading transformers' JambaForCausalLM (model_type `jamba`):
// JambaConfig reads config.json, JambaSpec names the tensors. Also the small Jamba-style stack of the library's parts
// (make_jamba_stack: HybridStack over MambaBlock and MultiHeadAttention), kept for experiments.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ssm/layers/attention.hpp"
#include "ssm/layers/hybrid_block.hpp"
#include "ssm/layers/mamba.hpp"
#include "ssm/models/causal_lm.hpp"
#include "ssm/models/checkpoint.hpp"
#include "ssm/models/hybrid.hpp"
#include "ssm/models/mamba_mixer.hpp"

namespace ssm::models {

template <class T>
using JambaStack = HybridStack<T, MambaMixer<T>, layers::MultiHeadAttention<T>>;

/// n_layers pre-norm residual layers; layer i is attention when (i + 1) % attention_every == 0 (Jamba:
/// attention_every = 8, one attention layer for seven Mamba layers), a Mamba block otherwise. Both configs
/// must have the same d_model. Weights: the published Mamba initialization and uniform ±fan_in^(−1/2)
/// attention projections, from seed.
template <class T>
JambaStack<T> make_jamba_stack(const layers::MambaBlockConfig& mamba, const layers::MultiHeadAttentionConfig& attention,
                               index_t n_layers, index_t attention_every, std::uint64_t seed = 0) {
  Checker("make_jamba_stack").require(mamba.d_model == attention.d_model, "attention", "has d_model ",
                                      attention.d_model, " but the Mamba config has ", mamba.d_model);
  return make_interleaved_stack<T, MambaMixer<T>, layers::MultiHeadAttention<T>>(
      mamba.d_model, n_layers, attention_every,
      [&](index_t i) { return MambaMixer<T>(layers::MambaBlock<T>::init(mamba, seed + static_cast<std::uint64_t>(i))); },
      [&](index_t i) { return layers::MultiHeadAttention<T>(attention, seed + static_cast<std::uint64_t>(i)); });
}

/// Hyperparameters of a Jamba language model, under transformers' JambaConfig names (in comments where ours differ).
struct JambaConfig {
  index_t d_model = 4096;  // hidden_size
  index_t n_layer = 32;    // num_hidden_layers
  index_t vocab_size = 65536;
  index_t d_ff = 14336;  // intermediate_size
  index_t n_heads = 32;  // num_attention_heads
  index_t n_kv_heads = 8;  // num_key_value_heads (null: num_attention_heads)
  index_t attn_layer_period = 8, attn_layer_offset = 4;
  index_t expert_layer_period = 2, expert_layer_offset = 1;
  index_t num_experts = 16, num_experts_per_tok = 2;
  index_t d_state = 16, d_conv = 4, expand = 2;  // mamba_d_state, mamba_d_conv, mamba_expand
  index_t dt_rank = 0;                           // mamba_dt_rank ("auto" or 0: ceil(hidden_size / 16))
  bool conv_bias = true, proj_bias = false;      // mamba_conv_bias, mamba_proj_bias
  double norm_epsilon = 1e-6;                    // rms_norm_eps: every RMSNorm, the Mamba blocks' inner ones too
  double router_aux_loss_coef = 0.001;
  bool tie_embeddings = false;  // tie_word_embeddings
  std::vector<std::int64_t> eos_token_ids;

  index_t padded_vocab() const { return vocab_size; }
  bool is_attention(index_t layer) const { return layer % attn_layer_period == attn_layer_offset; }
  bool is_moe(index_t layer) const { return num_experts > 1 && layer % expert_layer_period == expert_layer_offset; }
  /// Sublayer j: the mixer of layer j / 2 when j is even, its feed-forward when odd.
  layers::HybridBlockConfig block(index_t j) const {
    const index_t layer = j / 2;
    layers::HybridBlockConfig c;
    c.d_model = d_model;
    if (j % 2 == 0) {
      c.kind = is_attention(layer) ? layers::HybridKind::attention : layers::HybridKind::mamba;
      c.n_heads = n_heads, c.n_kv_heads = n_kv_heads;
      c.mamba.d_model = d_model, c.mamba.d_state = d_state, c.mamba.d_conv = d_conv, c.mamba.expand = expand;
      c.mamba.dt_rank = dt_rank, c.mamba.bias = proj_bias, c.mamba.conv_bias = conv_bias;
      c.mamba.bcdt_rms_eps = norm_epsilon, c.mamba.bcdt_norm_weights = true;
    } else {
      c.kind = is_moe(layer) ? layers::HybridKind::moe : layers::HybridKind::mlp;
      c.d_ff = d_ff, c.experts = num_experts, c.top_k = num_experts_per_tok;
    }
    return c;
  }

  /// Throws ssm::Error naming the first invalid field (by its config.json key).
  void validate() const {
    const char* op = "JambaConfig";
    SSM_CHECK(d_model >= 1, op, ": hidden_size must be >= 1, got ", d_model);
    SSM_CHECK(n_layer >= 1, op, ": num_hidden_layers must be >= 1, got ", n_layer);
    SSM_CHECK(vocab_size >= 1, op, ": vocab_size must be >= 1, got ", vocab_size);
    SSM_CHECK(d_ff >= 1, op, ": intermediate_size must be >= 1, got ", d_ff);
    SSM_CHECK(n_heads >= 1 && d_model % n_heads == 0, op, ": num_attention_heads must divide hidden_size (", d_model,
              "), got ", n_heads);
    SSM_CHECK(n_kv_heads >= 1 && n_heads % n_kv_heads == 0, op, ": num_key_value_heads must divide num_attention_heads (",
              n_heads, "), got ", n_kv_heads);
    SSM_CHECK(attn_layer_period >= 1 && attn_layer_offset >= 0 && attn_layer_offset < attn_layer_period, op,
              ": attn_layer_offset must be in [0, attn_layer_period) and attn_layer_period >= 1, got offset ",
              attn_layer_offset, " and period ", attn_layer_period);
    SSM_CHECK(expert_layer_period >= 1 && expert_layer_offset >= 0 && expert_layer_offset < expert_layer_period, op,
              ": expert_layer_offset must be in [0, expert_layer_period) and expert_layer_period >= 1, got offset ",
              expert_layer_offset, " and period ", expert_layer_period);
    SSM_CHECK(num_experts >= 1, op, ": num_experts must be >= 1, got ", num_experts);
    // (without experts, num_experts == 1, the per-token count is unused, as in transformers)
    SSM_CHECK(num_experts_per_tok >= 1 && (num_experts == 1 || num_experts_per_tok <= num_experts), op,
              ": num_experts_per_tok must be in [1, num_experts = ", num_experts, "], got ", num_experts_per_tok);
    SSM_CHECK(d_state >= 1, op, ": mamba_d_state must be >= 1, got ", d_state);
    SSM_CHECK(d_conv >= 2, op, ": mamba_d_conv must be >= 2, got ", d_conv);
    SSM_CHECK(expand >= 1, op, ": mamba_expand must be >= 1, got ", expand);
    SSM_CHECK(dt_rank >= 0, op, ": mamba_dt_rank must be >= 1 or \"auto\", got ", dt_rank);
    check_positive(op, "rms_norm_eps", norm_epsilon);
    SSM_CHECK(std::isfinite(router_aux_loss_coef), op, ": router_aux_loss_coef must be finite, got ",
              router_aux_loss_coef);
    for (auto id : eos_token_ids) SSM_CHECK(id >= 0, op, ": eos_token_id must be >= 0, got ", id);
  }

  /// Reads transformers' config.json of a JambaForCausalLM (model_type `jamba`). Another model type or architecture, or
  /// a hidden_act other than silu, is rejected by name; a missing or mistyped field by its key.
  static JambaConfig from_json(const nlohmann::json& j) {
    const char* op = "JambaConfig";
    SSM_CHECK(j.is_object(), op, ": config.json must be a JSON object");
    SSM_CHECK(j.contains("model_type") && j["model_type"].is_string(), op,
              ": config.json lacks a string 'model_type' (expected \"jamba\")");
    const std::string type = j["model_type"].get<std::string>();
    SSM_CHECK(type == "jamba", "JambaLM::load: model_type '", type,
              "' is not a Jamba model (supported: jamba; mamba and falcon_mamba load with MambaLM, mamba2 with "
              "Mamba2LM, rwkv with RwkvLM)");
    if (j.contains("architectures") && j["architectures"].is_array())
      for (const auto& a : j["architectures"])
        SSM_CHECK(a.is_string() && a.get<std::string>() == "JambaForCausalLM", "JambaLM::load: architecture ", a.dump(),
                  " is not implemented by this library (supported: JambaForCausalLM)");
    JambaConfig c;
    const ConfigFields F(j, op);
    F.require_silu();
    F.get_int({"hidden_size"}, c.d_model, true);
    F.get_int({"num_hidden_layers"}, c.n_layer, true);
    F.get_int({"vocab_size"}, c.vocab_size, true);
    F.get_int({"intermediate_size"}, c.d_ff);
    F.get_int({"num_attention_heads"}, c.n_heads);
    c.n_kv_heads = c.n_heads;
    if (j.contains("num_key_value_heads") && !j["num_key_value_heads"].is_null())
      F.get_int({"num_key_value_heads"}, c.n_kv_heads);
    F.get_int({"attn_layer_period"}, c.attn_layer_period);
    F.get_int({"attn_layer_offset"}, c.attn_layer_offset);
    F.get_int({"expert_layer_period"}, c.expert_layer_period);
    F.get_int({"expert_layer_offset"}, c.expert_layer_offset);
    F.get_int({"num_experts", "num_local_experts"}, c.num_experts);
    F.get_int({"num_experts_per_tok"}, c.num_experts_per_tok);
    F.get_int({"mamba_d_state"}, c.d_state);
    F.get_int({"mamba_d_conv"}, c.d_conv);
    F.get_int({"mamba_expand"}, c.expand);
    if (j.contains("mamba_dt_rank") && !(j["mamba_dt_rank"].is_string() && j["mamba_dt_rank"] == "auto"))
      F.get_int({"mamba_dt_rank"}, c.dt_rank);
    F.get_bool("mamba_conv_bias", c.conv_bias);
    F.get_bool("mamba_proj_bias", c.proj_bias);
    F.get_number("rms_norm_eps", c.norm_epsilon);
    F.get_number("router_aux_loss_coef", c.router_aux_loss_coef);
    F.get_bool("tie_word_embeddings", c.tie_embeddings);
    c.eos_token_ids = F.eos_token_ids();
    c.validate();
    return c;
  }

  /// transformers' config.json of this config.
  nlohmann::json to_json() const {
    nlohmann::json j = {{"architectures", {"JambaForCausalLM"}},
                        {"model_type", "jamba"},
                        {"hidden_act", "silu"},
                        {"hidden_size", d_model},
                        {"num_hidden_layers", n_layer},
                        {"vocab_size", vocab_size},
                        {"intermediate_size", d_ff},
                        {"num_attention_heads", n_heads},
                        {"num_key_value_heads", n_kv_heads},
                        {"attn_layer_period", attn_layer_period},
                        {"attn_layer_offset", attn_layer_offset},
                        {"expert_layer_period", expert_layer_period},
                        {"expert_layer_offset", expert_layer_offset},
                        {"num_experts", num_experts},
                        {"num_experts_per_tok", num_experts_per_tok},
                        {"mamba_d_state", d_state},
                        {"mamba_d_conv", d_conv},
                        {"mamba_expand", expand},
                        {"mamba_conv_bias", conv_bias},
                        {"mamba_proj_bias", proj_bias},
                        {"rms_norm_eps", norm_epsilon},
                        {"router_aux_loss_coef", router_aux_loss_coef},
                        {"use_mamba_kernels", false},
                        {"tie_word_embeddings", tie_embeddings}};
    if (dt_rank > 0) j["mamba_dt_rank"] = dt_rank;
    else j["mamba_dt_rank"] = "auto";
    if (eos_token_ids.size() == 1) j["eos_token_id"] = eos_token_ids[0];
    if (eos_token_ids.size() > 1) j["eos_token_id"] = eos_token_ids;
    return j;
  }
};

/// How JambaLM's body (CausalLM) reads and writes Jamba: per layer i, input_layernorm → mixer (model.layers.i.mamba.*
/// or model.layers.i.self_attn.*) and pre_ff_layernorm → feed_forward (model.layers.i.feed_forward.*: gate_proj /
/// up_proj / down_proj, or router and experts.e.*), under transformers' names.
struct JambaSpec {
  static constexpr const char* name = "JambaLM";
  static constexpr const char* model = "Jamba";
  using Config = JambaConfig;
  using Block = layers::HybridBlock;
  using LayerCache = layers::HybridLayerCache;

  static constexpr bool layer_norm = false;
  static constexpr const char* embedding = "model.embed_tokens.weight";
  static constexpr const char* embedding_alias = nullptr;
  static constexpr const char* embedding_norm = nullptr;
  static constexpr const char* final_norm = "model.final_layernorm";
  static constexpr const char* head = "lm_head.weight";

  static index_t sublayers(const Config& cfg) { return 2 * cfg.n_layer; }
  static std::string norm_name(index_t j) {
    return "model.layers." + std::to_string(j / 2) + (j % 2 == 0 ? ".input_layernorm" : ".pre_ff_layernorm");
  }
  static std::string block_prefix(index_t j) {
    return "model.layers." + std::to_string(j / 2) + (j % 2 == 0 ? "." : ".feed_forward.");
  }
  static double norm_eps(const Config& cfg, index_t) { return cfg.norm_epsilon; }

  static Block init_block(const Config& cfg, index_t j, std::uint64_t seed) { return Block::init(cfg.block(j), seed); }

  static Block load_block(CheckpointReader& r, const Config& cfg, index_t j) {
    const std::string prefix = block_prefix(j);
    const layers::HybridBlockConfig bc = cfg.block(j);
    const index_t H = cfg.d_model, I = cfg.d_ff, E = bc.n_experts();
    Block::Params p;
    switch (bc.kind) {
      case layers::HybridKind::mamba: {
        const std::string m = prefix + "mamba.";
        layers::MambaBlockParams<float> mp;
        layers::MambaBlockMatrices mats;
        mp.for_each(bc.mamba, [&](const char* nm, std::vector<float>& v, const Dims& s) {
          if (layers::WeightMatrix* w = mats.find(nm)) *w = r.take_matrix(m + nm, s);
          else r.take(m + nm, s, v);
        });
        p.mamba = layers::MambaBlock<float>(bc.mamba, std::move(mp), std::move(mats));
        break;
      }
      case layers::HybridKind::attention: {
        const std::string a = prefix + "self_attn.";
        const index_t hp = bc.n_heads * bc.head_dim(), kvp = bc.n_kv_heads * bc.head_dim();
        p.q_proj = r.take_matrix(a + "q_proj.weight", {hp, H});
        p.k_proj = r.take_matrix(a + "k_proj.weight", {kvp, H});
        p.v_proj = r.take_matrix(a + "v_proj.weight", {kvp, H});
        p.o_proj = r.take_matrix(a + "o_proj.weight", {H, hp});
        break;
      }
      case layers::HybridKind::hyena: fail("JambaLM::load: internal: Jamba has no Hyena layers");
      case layers::HybridKind::mlp:
      case layers::HybridKind::moe: {
        // The experts stacked: gate_up (E, 2I, H) (gate rows first), down (E, H, I), in one dtype; a dense MLP is one
        // expert with a zero router row. Per-expert tensors (experts.e.gate_proj.weight, ...) or transformers' fused
        // ones (experts.gate_up_proj (E, 2I, H), experts.down_proj (E, H, I)).
        const bool moe = bc.kind == layers::HybridKind::moe;
        auto expert = [&](index_t e) { return moe ? prefix + "experts." + std::to_string(e) + "." : prefix; };
        const bool fused = moe && r.contains(prefix + "experts.gate_up_proj");
        const DType dt = r.matrix_dtype(fused ? prefix + "experts.gate_up_proj" : expert(0) + "gate_proj.weight");
        p.w_gate_up = Tensor::empty({E, 2 * I, H}, dt);
        p.w_down = Tensor::empty({E, H, I}, dt);
        auto store = [&](const Tensor& dst, index_t offset, const std::vector<float>& v) {
          const layers::WeightMatrix w = layers::WeightMatrix::from_f32(v.data(), 1, static_cast<index_t>(v.size()), dt);
          std::memcpy(static_cast<char*>(const_cast<void*>(dst.data())) + offset * size_of(dt), w.data(),
                      v.size() * size_of(dt));
        };
        std::vector<float> v;
        if (fused) {
          r.take(prefix + "experts.gate_up_proj", {E, 2 * I, H}, v), store(p.w_gate_up, 0, v);
          r.take(prefix + "experts.down_proj", {E, H, I}, v), store(p.w_down, 0, v);
        } else {
          for (index_t e = 0; e < E; ++e) {
            r.take(expert(e) + "gate_proj.weight", {I, H}, v), store(p.w_gate_up, e * 2 * I * H, v);
            r.take(expert(e) + "up_proj.weight", {I, H}, v), store(p.w_gate_up, (e * 2 + 1) * I * H, v);
            r.take(expert(e) + "down_proj.weight", {H, I}, v), store(p.w_down, e * H * I, v);
          }
        }
        if (moe) {
          r.take(prefix + "router.weight", {E, H}, v);
          p.router = Tensor::empty({E, H}, dt);
          store(p.router, 0, v);
        } else {
          p.router = Tensor::zeros({1, H}, dt);
        }
        break;
      }
    }
    return Block(bc, std::move(p));
  }

  template <class F>
  static void save_block(const Block& blk, const Config&, F&& add) {
    const layers::HybridBlockConfig& bc = blk.config();
    const Block::Params& p = blk.params();
    const index_t H = bc.d_model, I = bc.d_ff, E = bc.n_experts();
    auto slice = [](const Tensor& t, index_t offset, index_t n) {  // n elements of a contiguous tensor, in f32
      std::vector<float> v(static_cast<std::size_t>(n));
      layers::elements_to_f32(t.data(), t.dtype(), offset, n, v.data());
      return v;
    };
    switch (bc.kind) {
      case layers::HybridKind::mamba: {
        layers::MambaBlockParams<float> mp = p.mamba.full_params();
        mp.for_each(bc.mamba, [&](const char* nm, std::vector<float>& v, const Dims& s) {
          add((std::string("mamba.") + nm).c_str(), v, s);
        });
        break;
      }
      case layers::HybridKind::attention: {
        const index_t hp = bc.n_heads * bc.head_dim(), kvp = bc.n_kv_heads * bc.head_dim();
        add("self_attn.q_proj.weight", p.q_proj.to_f32(), Dims{hp, H});
        add("self_attn.k_proj.weight", p.k_proj.to_f32(), Dims{kvp, H});
        add("self_attn.v_proj.weight", p.v_proj.to_f32(), Dims{kvp, H});
        add("self_attn.o_proj.weight", p.o_proj.to_f32(), Dims{H, hp});
        break;
      }
      default: {
        const bool moe = bc.kind == layers::HybridKind::moe;
        if (moe) add("router.weight", slice(p.router, 0, E * H), Dims{E, H});
        for (index_t e = 0; e < E; ++e) {
          const std::string pre = moe ? "experts." + std::to_string(e) + "." : "";
          add((pre + "gate_proj.weight").c_str(), slice(p.w_gate_up, e * 2 * I * H, I * H), Dims{I, H});
          add((pre + "up_proj.weight").c_str(), slice(p.w_gate_up, (e * 2 + 1) * I * H, I * H), Dims{I, H});
          add((pre + "down_proj.weight").c_str(), slice(p.w_down, e * H * I, H * I), Dims{H, I});
        }
      }
    }
  }
};

/// The Jamba language model: CausalLM over layers::HybridBlock (models/causal_lm.hpp). Its cache holds each Mamba
/// layer's conv and SSM state and each attention layer's keys and values (which grow with the context).
using JambaLM = CausalLM<JambaSpec>;
using JambaCache = JambaLM::Cache;

/// The router logits of every mixture-of-experts sublayer for ids (b, l): one (b · l, E) f32 tensor per MoE layer, in
/// layer order (what transformers records with output_router_logits), and the model's logits; all on the model's
/// device.
struct JambaRouterLogits {
  Tensor logits;                       // (b, l, vocab)
  std::vector<Tensor> router_logits;  // per MoE layer (b · l, E)
};

inline JambaRouterLogits jamba_router_logits(const JambaLM& model, const TensorView& ids) {
  JambaRouterLogits r;
  r.logits = model.logits(ids, [&](index_t j, const TensorView& x) {
    const layers::HybridBlock& blk = model.blocks()[static_cast<std::size_t>(j)];
    if (blk.config().kind == layers::HybridKind::moe)
      r.router_logits.push_back(blk.router_logits(x.reshape({x.size(0) * x.size(1), x.size(2)})));
  });
  return r;
}

/// The load-balancing auxiliary loss of ids (b, l) (ssm::moe_load_balancing_loss over every MoE layer's router logits,
/// with num_experts_per_tok; mask (b · l) optional: 1 for real tokens, 0 for padding). A model without MoE layers gives
/// 0. The training loss adds config().router_aux_loss_coef times it.
inline MoeAuxLoss jamba_aux_loss(const JambaLM& model, const TensorView& ids,
                                 const std::optional<TensorView>& mask = std::nullopt, bool with_grad = false) {
  const JambaRouterLogits r = jamba_router_logits(model, ids);
  // the loss runs on the CPU: a device model's router logits (t, E), and a mask on a device, are copied there
  std::vector<Tensor> host;
  for (const Tensor& t : r.router_logits) host.push_back(t.device().is_cpu() ? t : layers::upload(t.view(), Device::cpu()));
  std::vector<TensorView> views;
  for (const Tensor& t : host) views.push_back(t.view());
  const Tensor host_mask = mask && !mask->device().is_cpu() ? layers::upload(*mask, Device::cpu()) : Tensor();  // (b·l)
  return moe_load_balancing_loss(views, model.config().num_experts_per_tok,
                                 host_mask.defined() ? std::optional<TensorView>(host_mask.view()) : mask, with_grad);
}

}  // namespace ssm::models
