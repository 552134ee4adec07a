// A Jamba-style hybrid (Lieber et al. 2024, "Jamba": Mamba layers with one attention layer every k) built
// from the library's parts: HybridStack (models/hybrid.hpp) over layers::MambaBlock, adapted to the
// SequenceMixer interface by MambaMixer, and layers::MultiHeadAttention.
#pragma once

#include <cstdint>
#include <utility>

#include "ssm/layers/attention.hpp"
#include "ssm/layers/mamba.hpp"
#include "ssm/models/hybrid.hpp"

namespace ssm::models {

/// layers::MambaBlock as a SequenceMixer: forward is the block's parallel forward; step continues the
/// block's cache over the next t tokens (a resumed forward, i.e. a prefill in chunks; t = 1 is one step).
template <class T>
class MambaMixer {
 public:
  using State = layers::MambaLayerCache<T>;  ///< conv and SSM state: its size does not grow with the context

  explicit MambaMixer(layers::MambaBlock<T> block) : block_(std::move(block)) {}

  index_t d_model() const { return block_.config().d_model; }
  const layers::MambaBlock<T>& block() const { return block_; }
  /// x (b, l, d_model) → (b, l, d_model).
  Tensor forward(const TensorView& x) const { return block_.forward(x); }
  State init_state(index_t b) const { return block_.make_cache(b); }
  /// x (b, t, d_model) → (b, t, d_model), continuing from and updating state.
  Tensor step(const TensorView& x, State& state) const { return block_.forward(x, &state, true); }

 private:
  layers::MambaBlock<T> block_;
};

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

}  // namespace ssm::models
