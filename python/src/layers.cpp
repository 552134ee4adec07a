// The sequence-mixing layers (ssm/layers), f32 on the CPU: MambaBlock, Mamba2Block, DeltaNet (and Gated DeltaNet),
// LinearAttention (and RetNet's retention, GLA), RWKV-7's time mixing, TTT-Linear, MultiHeadAttention. Each is made from its config with the layer's
// published initialization and a seed; forward(x (b, l, d_model)) runs the whole sequence from a zero state, or
// continues from a state (init_state(b)) and updates it, so a prompt and then one token at a time gives what one
// forward gives.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <type_traits>

#include "arrays.hpp"
#include "bindings.hpp"
#include "options.hpp"
#include "ssm/layers/attention.hpp"
#include "ssm/layers/delta_net.hpp"
#include "ssm/layers/linear_attention.hpp"
#include "ssm/layers/mamba.hpp"
#include "ssm/layers/mamba2.hpp"
#include "ssm/layers/rwkv4.hpp"
#include "ssm/layers/rwkv7.hpp"
#include "ssm/layers/ttt_linear.hpp"

namespace ssm::python {

namespace {

using namespace nb::literals;

/// The attention layer's state: its KV cache, and the batch size it was made for (the cache does not say).
struct AttentionState {
  KVCache cache;
  index_t b = 0;
};

/// A layer with its recurrent state type: forward from zero, or over a state (continuing it). The Mamba blocks
/// carry their conv and SSM state in a layer cache and continue with resume; the head mixers in their State; the
/// attention layer in its KV cache.
template <class Layer, class State>
struct Mixer {
  Layer layer;
  std::string name;

  Tensor forward(const TensorView& x, State* state) const {
    // The Mamba blocks would start a state of another batch size again from zero: here that is an error.
    if (state != nullptr && x.rank() == 3)
      Checker(name + "::forward")
          .require(state->b == x.size(0), "state", "is for ", state->b, " sequences, x has b = ", x.size(0));
    if constexpr (requires { layer.forward(x, state, true); }) {
      return layer.forward(x, state, state != nullptr);
    } else if constexpr (std::is_same_v<State, AttentionState>) {
      return state != nullptr ? layer.step(x, state->cache) : layer.forward(x);
    } else {
      return state != nullptr ? layer.step(x, *state) : layer.forward(x);
    }
  }
  State init_state(index_t b) const {
    Checker(name + "::init_state").require(b >= 1, "b", "must be >= 1, got ", b);
    if constexpr (requires { layer.make_cache(b); }) {
      return layer.make_cache(b);
    } else if constexpr (std::is_same_v<State, AttentionState>) {
      return AttentionState{layer.init_state(b), b};
    } else {
      return layer.init_state(b);
    }
  }
};

template <class M, class State>
void bind_mixer(nb::class_<M>& cls, const char* state_name, nb::module_& m) {
  nb::class_<State>(m, state_name, "The recurrent state of a layer for b sequences (from the layer's init_state).")
      .def_ro("b", &State::b, "The number of sequences.");
  cls.def(
         "forward_capsule",
         [](const M& self, const Array& x, State* state) {
           const TensorView v = view((self.name + "::forward").c_str(), "x", x);
           Tensor out;
           {
             nb::gil_scoped_release unlocked;
             out = self.forward(v, state);
           }
           return capsule(out);
         },
         "x"_a, "state"_a = nb::none(),
         "x (b, l, d_model) float32 contiguous -> (b, l, d_model) capsule. With a state: continues from it and "
         "leaves it after the last token.")
      .def("init_state", &M::init_state, "b"_a, "A zero state for b sequences.")
      .def_prop_ro("d_model", [](const M& self) { return self.layer.config().d_model; });
}

using MambaMixer = Mixer<layers::MambaBlock<float>, layers::MambaLayerCache<float>>;
using Mamba2Mixer = Mixer<layers::Mamba2Block<float>, layers::Mamba2LayerCache<float>>;
using DeltaNetMixer = Mixer<layers::DeltaNetLayer<float>, layers::DeltaNetState>;
using LinearAttentionMixer = Mixer<layers::LinearAttentionLayer<float>, layers::LinearAttentionState>;
using AttentionMixer = Mixer<layers::MultiHeadAttention<float>, AttentionState>;
using Rwkv4Mixer = Mixer<layers::Rwkv4Block, layers::Rwkv4LayerCache>;
using Rwkv7Mixer = Mixer<layers::Rwkv7Layer<float>, layers::Rwkv7State>;
using TttLinearMixer = Mixer<layers::TttLinearLayer<float>, layers::TttLinearState>;

}  // namespace

void bind_layers(nb::module_& m) {
  // The keyword defaults are the C++ configs' own (identity is LinearAttentionConfig's default feature map).
  const layers::MambaBlockConfig mamba_d{};
  const layers::Mamba2BlockConfig mamba2_d{};
  const layers::DeltaNetConfig delta_d{};
  const layers::LinearAttentionConfig linear_d{};
  const layers::MultiHeadAttentionConfig attention_d{};
  nb::class_<MambaMixer> mamba(m, "MambaBlock", "Mamba's mixer: in_proj, causal conv + SiLU, the selective scan, gate, "
                                                "out_proj (Gu & Dao 2023), mamba_ssm's initialization.");
  mamba.def(
      "__init__",
      [](MambaMixer* self, index_t d_model, index_t d_state, index_t d_conv, index_t expand, index_t dt_rank, bool bias,
         bool conv_bias, bool gated, bool selective, std::uint64_t seed) {
        layers::MambaBlockConfig c;
        c.d_model = d_model, c.d_state = d_state, c.d_conv = d_conv, c.expand = expand, c.dt_rank = dt_rank;
        c.bias = bias, c.conv_bias = conv_bias, c.gated = gated, c.selective = selective;
        new (self) MambaMixer{layers::MambaBlock<float>::init(c, seed), "MambaBlock"};
      },
      "d_model"_a, nb::kw_only(), "d_state"_a = mamba_d.d_state, "d_conv"_a = mamba_d.d_conv,
      "expand"_a = mamba_d.expand, "dt_rank"_a = mamba_d.dt_rank, "bias"_a = mamba_d.bias,
      "conv_bias"_a = mamba_d.conv_bias, "gated"_a = mamba_d.gated, "selective"_a = mamba_d.selective, "seed"_a = 0,
      "dt_rank 0: ceil(d_model / 16). gated False: no silu(z) gate; selective False: a time-invariant S4D-Real SSM "
      "(the Mamba paper's Table 1 ablations).");
  bind_mixer<MambaMixer, layers::MambaLayerCache<float>>(mamba, "MambaState", m);

  nb::class_<Mamba2Mixer> mamba2(m, "Mamba2Block",
                                 "Mamba-2's mixer: in_proj to [z, xBC, dt], causal conv + SiLU, SSD, gated RMSNorm, "
                                 "out_proj (Dao & Gu 2024), mamba_ssm's initialization.");
  mamba2.def(
      "__init__",
      [](Mamba2Mixer* self, index_t d_model, index_t d_state, index_t d_conv, index_t expand, index_t head_dim,
         index_t n_groups, index_t chunk_size, bool bias, bool conv_bias, double norm_eps, std::uint64_t seed) {
        layers::Mamba2BlockConfig c;
        c.d_model = d_model, c.d_state = d_state, c.d_conv = d_conv, c.expand = expand, c.head_dim = head_dim;
        c.n_groups = n_groups, c.chunk_size = chunk_size, c.bias = bias, c.conv_bias = conv_bias, c.norm_eps = norm_eps;
        new (self) Mamba2Mixer{layers::Mamba2Block<float>::init(c, seed), "Mamba2Block"};
      },
      "d_model"_a, nb::kw_only(), "d_state"_a = mamba2_d.d_state, "d_conv"_a = mamba2_d.d_conv,
      "expand"_a = mamba2_d.expand, "head_dim"_a = mamba2_d.head_dim, "n_groups"_a = mamba2_d.n_groups,
      "chunk_size"_a = mamba2_d.chunk_size, "bias"_a = mamba2_d.bias, "conv_bias"_a = mamba2_d.conv_bias,
      "norm_eps"_a = mamba2_d.norm_eps, "seed"_a = 0, "head_dim must divide expand * d_model, n_groups the heads.");
  bind_mixer<Mamba2Mixer, layers::Mamba2LayerCache<float>>(mamba2, "Mamba2State", m);

  nb::class_<DeltaNetMixer> delta(m, "DeltaNet",
                                  "DeltaNet / Gated DeltaNet (Yang et al. 2024): q, k, v through a short conv + SiLU, "
                                  "the delta rule, per-head RMSNorm with a SiLU gate.");
  delta.def(
      "__init__",
      [](DeltaNetMixer* self, index_t d_model, index_t heads, index_t head_dim, index_t head_v_dim, index_t d_conv,
         bool gated, double norm_eps, index_t chunk_size, std::uint64_t seed) {
        layers::DeltaNetConfig c;
        c.d_model = d_model, c.heads = heads, c.head_dim = head_dim, c.head_v_dim = head_v_dim, c.d_conv = d_conv;
        c.gated = gated, c.norm_eps = norm_eps, c.chunk_size = chunk_size;
        new (self) DeltaNetMixer{layers::DeltaNetLayer<float>::init(c, seed), "DeltaNet"};
      },
      "d_model"_a, nb::kw_only(), "heads"_a = delta_d.heads, "head_dim"_a = delta_d.head_dim,
      "head_v_dim"_a = delta_d.head_v_dim, "d_conv"_a = delta_d.d_conv, "gated"_a = delta_d.gated,
      "norm_eps"_a = delta_d.norm_eps, "chunk_size"_a = delta_d.chunk_size, "seed"_a = 0,
      "head_dim 0: d_model / heads; head_v_dim 0: head_dim; gated: Gated DeltaNet's decay per head and step.");
  bind_mixer<DeltaNetMixer, layers::DeltaNetState>(delta, "DeltaNetState", m);

  nb::class_<LinearAttentionMixer> linear(
      m, "LinearAttention",
      "Multi-head linear attention (Katharopoulos et al. 2020) and RetNet's retention (Sun et al. 2023): in_proj to "
      "q, k, v (and a gate), the linear-attention op with a feature map, decay and normalizer, out_proj.");
  linear.def(
      "__init__",
      [](LinearAttentionMixer* self, index_t d_model, index_t heads, index_t head_dim, index_t head_v_dim,
         const std::string& feature_map, bool normalize, bool retention, bool output_norm, bool output_gate,
         bool gated, index_t gate_rank, double gate_normalizer, double norm_eps, index_t chunk_size,
         std::uint64_t seed) {
        layers::LinearAttentionConfig c;
        c.d_model = d_model, c.heads = heads, c.head_dim = head_dim, c.head_v_dim = head_v_dim;
        c.feature_map = feature_map_choice("LinearAttention", feature_map);
        c.normalize = normalize, c.retention = retention, c.output_norm = output_norm, c.output_gate = output_gate;
        c.gated = gated, c.gate_rank = gate_rank, c.gate_normalizer = gate_normalizer;
        c.norm_eps = norm_eps, c.chunk_size = chunk_size;
        new (self) LinearAttentionMixer{layers::LinearAttentionLayer<float>::init(c, seed), "LinearAttention"};
      },
      "d_model"_a, nb::kw_only(), "heads"_a = linear_d.heads, "head_dim"_a = linear_d.head_dim,
      "head_v_dim"_a = linear_d.head_v_dim, "feature_map"_a = "identity", "normalize"_a = linear_d.normalize,
      "retention"_a = linear_d.retention, "output_norm"_a = linear_d.output_norm,
      "output_gate"_a = linear_d.output_gate, "gated"_a = linear_d.gated, "gate_rank"_a = linear_d.gate_rank,
      "gate_normalizer"_a = linear_d.gate_normalizer, "norm_eps"_a = linear_d.norm_eps,
      "chunk_size"_a = linear_d.chunk_size, "seed"_a = 0,
      "RetNet: retention, output_norm and output_gate with head_v_dim = 2 d_model / heads (LinearAttention.retnet). "
      "Katharopoulos: feature_map 'elu_plus_one' with normalize (LinearAttention.katharopoulos). GLA: gated (the "
      "low-rank log gate logsigmoid(.) / gate_normalizer per key channel), head_dim = d_model / (2 heads), "
      "head_v_dim = d_model / heads, output_norm and output_gate (LinearAttention.gla).");
  bind_mixer<LinearAttentionMixer, layers::LinearAttentionState>(linear, "LinearAttentionState", m);

  nb::class_<Rwkv4Mixer> rwkv4(m, "Rwkv4",
                              "One of RWKV-4's two sublayers (Peng et al. 2023): time mixing (token shift, k / v / r "
                              "projections, the WKV recurrence, σ(r) ⊙ wkv, output) or channel mixing (token shift, "
                              "σ(W_r x_r) ⊙ W_v relu(W_k x_k)²).");
  rwkv4.def(
      "__init__",
      [](Rwkv4Mixer* self, index_t d_model, const std::string& kind, index_t d_att, index_t d_ffn, std::uint64_t seed) {
        layers::Rwkv4BlockConfig c;
        c.kind = choice<layers::Rwkv4Kind>("Rwkv4", "kind", kind,
                                           {{"time_mix", layers::Rwkv4Kind::time_mix},
                                            {"channel_mix", layers::Rwkv4Kind::channel_mix}});
        c.d_model = d_model, c.d_att = d_att > 0 ? d_att : d_model, c.d_ffn = d_ffn > 0 ? d_ffn : 4 * d_model;
        new (self) Rwkv4Mixer{layers::Rwkv4Block::init(c, seed), "Rwkv4"};
      },
      "d_model"_a, nb::kw_only(), "kind"_a = "time_mix", "d_att"_a = 0, "d_ffn"_a = 0, "seed"_a = 0,
      "kind 'time_mix' or 'channel_mix'; d_att (time mixing) 0: d_model; d_ffn (channel mixing) 0: 4 d_model; a "
      "plain initialization for experiments, not RWKV-4's tuned one.");
  bind_mixer<Rwkv4Mixer, layers::Rwkv4LayerCache>(rwkv4, "Rwkv4State", m);

  const layers::Rwkv7Config rwkv7_d{};
  nb::class_<Rwkv7Mixer> rwkv7(m, "Rwkv7",
                              "RWKV-7's time mixing (Peng et al. 2025) as a first layer (no value residual): token "
                              "shift, the decay / in-context-rate / gate LoRAs, the generalized delta rule, GroupNorm, "
                              "the bonus and the output gate.");
  rwkv7.def(
      "__init__",
      [](Rwkv7Mixer* self, index_t d_model, index_t head_dim, index_t decay_rank, index_t a_rank, index_t gate_rank,
         double norm_eps, std::uint64_t seed) {
        layers::Rwkv7Config c;
        c.d_model = d_model, c.head_dim = head_dim, c.decay_rank = decay_rank, c.a_rank = a_rank;
        c.gate_rank = gate_rank, c.norm_eps = norm_eps;
        new (self) Rwkv7Mixer{layers::Rwkv7Layer<float>::init(c, seed), "Rwkv7"};
      },
      "d_model"_a, nb::kw_only(), "head_dim"_a = rwkv7_d.head_dim, "decay_rank"_a = rwkv7_d.decay_rank,
      "a_rank"_a = rwkv7_d.a_rank, "gate_rank"_a = rwkv7_d.gate_rank, "norm_eps"_a = rwkv7_d.norm_eps, "seed"_a = 0,
      "heads = d_model / head_dim; a plain initialization for experiments, not RWKV-7's tuned one.");
  bind_mixer<Rwkv7Mixer, layers::Rwkv7State>(rwkv7, "Rwkv7State", m);

  const layers::TttLinearConfig ttt_d{};
  nb::class_<TttLinearMixer> ttt(m, "TTTLinear",
                                 "TTT-Linear (Sun et al. 2024), the authors' TTTLinear: q, k, v projections, RoPE at "
                                 "positions mod the mini-batch, the inner linear model trained by mini-batch gradient "
                                 "descent with a learnable token-dependent learning rate, post LayerNorm, optional "
                                 "gelu gate, out_proj.");
  ttt.def(
      "__init__",
      [](TttLinearMixer* self, index_t d_model, index_t heads, index_t mini_batch_size, double base_lr,
         double rope_base, bool use_gate, double ln_eps, std::uint64_t seed) {
        layers::TttLinearConfig c;
        c.d_model = d_model, c.heads = heads, c.mini_batch_size = mini_batch_size, c.base_lr = base_lr;
        c.rope_base = rope_base, c.use_gate = use_gate, c.ln_eps = ln_eps;
        new (self) TttLinearMixer{layers::TttLinearLayer<float>::init(c, seed), "TTTLinear"};
      },
      "d_model"_a, nb::kw_only(), "heads"_a = ttt_d.heads, "mini_batch_size"_a = ttt_d.mini_batch_size,
      "base_lr"_a = ttt_d.base_lr, "rope_base"_a = ttt_d.rope_base, "use_gate"_a = ttt_d.use_gate,
      "ln_eps"_a = ttt_d.ln_eps, "seed"_a = 0,
      "head width d_model / heads (even); the authors' initialization (std 0.02).");
  bind_mixer<TttLinearMixer, layers::TttLinearState>(ttt, "TTTLinearState", m);

  nb::class_<AttentionMixer> attention(
      m, "MultiHeadAttention",
      "Causal multi-head / grouped-query softmax attention (Vaswani et al. 2017): q, k, v projections, optional "
      "rotary embedding, the attention op, out_proj; its state is a KV cache that grows with the context.");
  attention.def(
      "__init__",
      [](AttentionMixer* self, index_t d_model, index_t n_heads, index_t n_kv_heads, index_t head_dim, bool rotary,
         double rotary_base, std::uint64_t seed) {
        layers::MultiHeadAttentionConfig c;
        c.d_model = d_model, c.n_heads = n_heads, c.n_kv_heads = n_kv_heads, c.head_dim = head_dim;
        c.rotary = rotary, c.rotary_base = rotary_base;
        new (self) AttentionMixer{layers::MultiHeadAttention<float>(c, seed), "MultiHeadAttention"};
      },
      "d_model"_a, nb::kw_only(), "n_heads"_a = attention_d.n_heads, "n_kv_heads"_a = attention_d.n_kv_heads,
      "head_dim"_a = attention_d.head_dim, "rotary"_a = attention_d.rotary, "rotary_base"_a = attention_d.rotary_base,
      "seed"_a = 0,
      "n_kv_heads 0: n_heads (multi-head); fewer, dividing n_heads: grouped-query. head_dim 0: d_model / n_heads.");
  bind_mixer<AttentionMixer, AttentionState>(attention, "AttentionState", m);
}

}  // namespace ssm::python
