// Every mixer a models::StackLM can train, by name: TrainableLM<T> is one StackLM type over all of them, and add_mixer
// appends a layer of a named mixer with small-model defaults. What example_train and bench_train build.
//
//   deltanet, gated_deltanet          layers::DeltaNetLayer (Yang et al. 2024)
//   linear_attention, retnet, gla     layers::LinearAttentionLayer (Katharopoulos et al. 2020; Sun et al. 2023; Yang et
//                                     al. 2023)
//   ttt                               layers::TttLinearLayer (Sun et al. 2024), gated output
//   rwkv7                             layers::Rwkv7Layer (Peng et al. 2025), low-rank sizes MixerOptions::rank
//   rwkv4, rwkv4_channel              layers::Rwkv4Layer (Peng et al. 2023): RWKV-4's time mixing (the WKV recurrence,
//                                     attention width d_model) or its channel mixing (the squared-ReLU feed-forward,
//                                     4 d_model wide); an RWKV-4 block is one of each
//   mamba                             layers::MambaBlock through MambaMixer (Gu & Dao 2023), state size d_state
//   mamba_s4d, s6, s4d                the block's ablations of the Mamba paper's Table 1: the Mamba block with a
//                                     time-invariant S4D-Real SSM in place of S6; S6 without the gate; S4D-Real without
//                                     the gate (MambaBlockConfig::selective and ::gated)
//   mamba2                            layers::Mamba2Block through Mamba2Mixer (Dao & Gu 2024): MixerOptions::heads
//                                     heads, each 2 d_model / heads channels wide, state size d_state, one group,
//                                     chunks of 64
//   hyena                             layers::HyenaLayer through HyenaMixer (Poli et al. 2023): order 2, the implicit
//                                     filter's FFN 64 wide, l_max = MixerOptions::max_len
//   striped_hyena                     layers::ModalHyenaLayer through ModalHyenaMixer (StripedHyena, Poli et al. 2023):
//                                     the order-2 gated convolution with a modal long filter (d_state poles per
//                                     channel; MixerOptions::heads groups of the column split; filter taps l_max =
//                                     MixerOptions::max_len, or 2048 when it is 0: longer sequences run in pieces)
//   s4d_layer                         S4DLayer through S4DMixer (Gu et al. 2022, s4d.py): S4D-Lin, ZOH, state size
//                                     N = d_state (N/2 complex modes), GELU then a GLU output Linear
//   s4_layer                          S4Layer through S4Mixer (Gu et al. 2022): DPLR HiPPO-LegS, bilinear, N = d_state,
//                                     C̃ for l_max = MixerOptions::max_len, GELU then a GLU output Linear
//   attention                         layers::MultiHeadAttention, causal softmax attention with RoPE
//   moe                               layers::MoeLayer, a feed-forward: MixerOptions::experts SwiGLU experts 2 d_model
//                                     wide, top_k of them per token, Switch Transformer's load-balancing loss with
//                                     weight aux_loss_coef (Jamba's MoE layers between the mixers)
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "ssm/core/check.hpp"
#include "ssm/core/instances.hpp"
#include "ssm/layers/attention.hpp"
#include "ssm/layers/delta_net.hpp"
#include "ssm/layers/linear_attention.hpp"
#include "ssm/layers/moe.hpp"
#include "ssm/layers/rwkv4.hpp"
#include "ssm/layers/rwkv7.hpp"
#include "ssm/layers/ttt_linear.hpp"
#include "ssm/models/hybrid.hpp"
#include "ssm/models/hyena_mixer.hpp"
#include "ssm/models/mamba_mixer.hpp"
#include "ssm/models/s4_mixer.hpp"
#include "ssm/models/stack_lm.hpp"

/// The mixer types of TrainableStack<T>, in order (a macro: an explicit instantiation must spell the class out).
#define SSM_TRAINABLE_MIXERS(T)                                                                                    \
  ::ssm::layers::DeltaNetLayer<T>, ::ssm::layers::LinearAttentionLayer<T>, ::ssm::layers::TttLinearLayer<T>,        \
      ::ssm::layers::Rwkv7Layer<T>, ::ssm::models::MambaMixer<T>, ::ssm::layers::MultiHeadAttention<T>,             \
      ::ssm::models::Mamba2Mixer<T>, ::ssm::models::HyenaMixer<T>, ::ssm::models::S4DMixer<T>,                      \
      ::ssm::models::S4Mixer<T>, ::ssm::layers::Rwkv4Layer<T>, ::ssm::models::ModalHyenaMixer<T>,                   \
      ::ssm::layers::MoeLayer<T>

namespace ssm::models {

template <class T>
using TrainableStack = HybridStack<T, SSM_TRAINABLE_MIXERS(T)>;

namespace detail {
/// The StackLM over a HybridStack's mixers.
template <class Stack>
struct stack_lm_of;
template <class T, class... Mixers>
struct stack_lm_of<HybridStack<T, Mixers...>> {
  using type = StackLM<T, Mixers...>;
};
}  // namespace detail

template <class T>
using TrainableLM = typename detail::stack_lm_of<TrainableStack<T>>::type;

/// The names add_mixer takes, for messages and usage lines.
inline constexpr const char* kTrainableMixers =
    "deltanet, gated_deltanet, linear_attention, retnet, gla, ttt, rwkv7, rwkv4, rwkv4_channel, mamba, mamba_s4d, s6, "
    "s4d, mamba2, hyena, striped_hyena, s4d_layer, s4_layer, attention, moe";

/// What add_mixer sets beyond the width; each mixer reads the fields that apply to it.
struct MixerOptions {
  /// heads (all but mamba, its ablations, hyena, the S4 layers, rwkv4 and moe); must divide d_model
  index_t heads = 2;
  /// rwkv7: the decay, a, v and gate low-rank sizes
  index_t rank = 8;
  /// mamba and its ablations: n, the state size per channel; mamba2: per head; s4d_layer, s4_layer: N (even);
  /// striped_hyena: poles per channel
  index_t d_state = 16;
  /// hyena: l_max, the longest sequence it will see (its filters' length); s4_layer: the longest it trains at (C̃'s
  /// length); required for both; striped_hyena: the filter's taps, the longest sequence its backward takes (0: 2048)
  index_t max_len = 0;
  /// moe: E, the experts, and k, the experts each token goes to
  index_t experts = 8, top_k = 2;
  /// moe: the load-balancing loss's weight in the backward (Switch Transformer's default)
  double aux_loss_coef = 0.01;
  /// the layer's threads (0: automatic)
  int threads = 0;
};

/// Appends to `stack` one layer of the mixer called `name` (kTrainableMixers), width stack.d_model(), its parameters
/// drawn from seed. An unknown name or sizes the mixer refuses are an ssm::Error.
template <class T>
void add_mixer(TrainableStack<T>& stack, const std::string& name, const MixerOptions& o, std::uint64_t seed) {
  const index_t d = stack.d_model();
  Checker c("add_mixer");
  const bool mamba_family = name == "mamba" || name == "mamba_s4d" || name == "s6" || name == "s4d";
  const bool s4_family = name == "s4d_layer" || name == "s4_layer";
  const bool rwkv4 = name == "rwkv4" || name == "rwkv4_channel";
  if (!mamba_family && !s4_family && !rwkv4 && name != "hyena" && name != "moe")
    c.require(o.heads >= 1 && d % o.heads == 0, "heads", "must divide d_model (", d, "), got ", o.heads);
  auto add = [&](auto layer) {
    layer.set_threads(o.threads);
    stack.add(std::move(layer));
  };
  if (name == "deltanet" || name == "gated_deltanet") {
    layers::DeltaNetConfig cfg;
    cfg.d_model = d, cfg.heads = o.heads, cfg.gated = name == "gated_deltanet";
    add(layers::DeltaNetLayer<T>::init(cfg, seed));
  } else if (name == "linear_attention" || name == "retnet" || name == "gla") {
    using Cfg = layers::LinearAttentionConfig;
    add(layers::LinearAttentionLayer<T>::init(name == "retnet" ? Cfg::retnet(d, o.heads)
                                              : name == "gla"  ? Cfg::gla(d, o.heads)
                                                               : Cfg::katharopoulos(d, o.heads),
                                              seed));
  } else if (name == "ttt") {
    layers::TttLinearConfig cfg;
    cfg.d_model = d, cfg.heads = o.heads, cfg.use_gate = true;
    add(layers::TttLinearLayer<T>::init(cfg, seed));
  } else if (name == "rwkv7") {
    layers::Rwkv7Config cfg;
    cfg.d_model = d, cfg.head_dim = d / o.heads, cfg.decay_rank = cfg.a_rank = cfg.v_rank = cfg.gate_rank = o.rank;
    add(layers::Rwkv7Layer<T>::init(cfg, seed));
  } else if (rwkv4) {
    layers::Rwkv4BlockConfig cfg;
    cfg.kind = name == "rwkv4" ? layers::Rwkv4Kind::time_mix : layers::Rwkv4Kind::channel_mix;
    cfg.d_model = d, cfg.d_att = d, cfg.d_ffn = 4 * d;
    add(layers::Rwkv4Layer<T>::init(cfg, seed));
  } else if (mamba_family) {
    layers::MambaBlockConfig cfg;
    cfg.d_model = d, cfg.d_state = o.d_state;
    cfg.selective = name == "mamba" || name == "s6";
    cfg.gated = name == "mamba" || name == "mamba_s4d";
    add(MambaMixer<T>(layers::MambaBlock<T>::init(cfg, seed)));
  } else if (name == "mamba2") {
    layers::Mamba2BlockConfig cfg;
    cfg.d_model = d, cfg.d_state = o.d_state, cfg.head_dim = cfg.inner() / o.heads, cfg.chunk_size = 64;
    add(Mamba2Mixer<T>(layers::Mamba2Block<T>::init(cfg, seed)));
  } else if (name == "hyena") {
    c.require(o.max_len >= 2 && o.max_len <= (index_t(1) << 24), "max_len",
              "hyena needs the longest sequence length (its filters' l_max), in [2, 2^24], got ", o.max_len);
    layers::HyenaConfig cfg;
    cfg.d_model = d, cfg.l_max = o.max_len;
    add(HyenaMixer<T>(layers::HyenaLayer<T>::init(cfg, seed)));
  } else if (name == "striped_hyena") {
    c.require(o.d_state >= 1, "d_state", "must be >= 1 (striped_hyena's poles per channel), got ", o.d_state);
    c.require(o.max_len >= 0 && o.max_len <= (index_t(1) << 24), "max_len",
              "striped_hyena's filter length must be in [0, 2^24] (0: 2048), got ", o.max_len);
    layers::ModalHyenaConfig cfg;
    cfg.d_model = d, cfg.heads = o.heads, cfg.state_size = o.d_state, cfg.l_max = o.max_len > 0 ? o.max_len : 2048;
    add(ModalHyenaMixer<T>(layers::ModalHyenaLayer<T>::init(cfg, seed)));
  } else if (s4_family) {
    c.require(o.d_state >= 2 && o.d_state % 2 == 0, "d_state", "must be even and >= 2 for ", name,
              " (N, conjugate pairs), got ", o.d_state);
    if (name == "s4d_layer") {
      typename S4DLayer<T>::Config cfg;
      cfg.h = d, cfg.N = o.d_state, cfg.mix = OutputMix::gelu_glu, cfg.seed = seed;
      add(S4DMixer<T>(S4DLayer<T>(cfg)));
    } else {
      c.require(o.max_len >= 1 && o.max_len <= (index_t(1) << 24), "max_len",
                "s4_layer needs the longest training length (C̃'s l_max), in [1, 2^24], got ", o.max_len);
      typename S4Layer<T>::Config cfg;
      cfg.h = d, cfg.N = o.d_state, cfg.l_max = o.max_len, cfg.step_form = StepForm::linear;
      cfg.mix = OutputMix::gelu_glu, cfg.seed = seed;
      add(S4Mixer<T>(S4Layer<T>(cfg)));
    }
  } else if (name == "attention") {
    layers::MultiHeadAttentionConfig cfg;
    cfg.d_model = d, cfg.n_heads = o.heads, cfg.rotary = true, cfg.attention.n_threads = o.threads;
    stack.add(layers::MultiHeadAttention<T>(cfg, seed));
  } else if (name == "moe") {
    layers::MoeLayerConfig cfg;
    cfg.d_model = d, cfg.d_ff = 2 * d, cfg.experts = o.experts, cfg.top_k = o.top_k,
    cfg.aux_loss_coef = o.aux_loss_coef;
    add(layers::MoeLayer<T>::init(cfg, seed));
  } else {
    c.require(false, "name", "is not a trainable mixer: '", name, "' (", kTrainableMixers, ")");
  }
}

}  // namespace ssm::models

/// What a program that trains in f32 runs of TrainableLM<float> (its step, evaluate and logits, the stack's forward and
/// backward) and add_mixer<float>, compiled once where SSM_EXTERN_INSTANCES is set (core/instances.hpp,
/// src/instances/trainable_lm.cpp): every layer's forward and backward behind them would otherwise be compiled again in
/// each such program. The rest (decoding, f64) stays with the programs that use it.
// (no leading :: in these two: `PREFIX ::ssm::Tensor ::ssm::models::...` would parse as one qualified name)
#define SSM_TRAINABLE_STACK(T) ssm::models::HybridStack<T, SSM_TRAINABLE_MIXERS(T)>
#define SSM_TRAINABLE_LM(T) ssm::models::StackLM<T, SSM_TRAINABLE_MIXERS(T)>
#define SSM_TRAINABLE_LM_INSTANCES(PREFIX, T)                                                                      \
  PREFIX ::ssm::Tensor SSM_TRAINABLE_STACK(T)::forward(const ::ssm::TensorView&) const;                            \
  PREFIX SSM_TRAINABLE_STACK(T)::Grads SSM_TRAINABLE_STACK(T)::backward(const ::ssm::TensorView&,                 \
                                                                        const ::ssm::TensorView&) const;          \
  PREFIX ::ssm::Tensor SSM_TRAINABLE_LM(T)::logits(const ::ssm::TensorView&) const;                               \
  PREFIX SSM_TRAINABLE_LM(T)::StepResult SSM_TRAINABLE_LM(T)::step(const ::ssm::TensorView&, const ::ssm::TensorView&, \
                                                                   SSM_TRAINABLE_LM(T)::Grads&) const;            \
  PREFIX SSM_TRAINABLE_LM(T)::StepResult SSM_TRAINABLE_LM(T)::evaluate(const ::ssm::TensorView&,                  \
                                                                       const ::ssm::TensorView&) const;           \
  PREFIX void ssm::models::add_mixer<T>(::ssm::models::TrainableStack<T>&, const std::string&,                    \
                                        const ::ssm::models::MixerOptions&, std::uint64_t);
#if SSM_EXTERN_INSTANCES
SSM_TRAINABLE_LM_INSTANCES(extern template, float)
#endif
