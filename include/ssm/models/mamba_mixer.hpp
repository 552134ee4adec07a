// The recurrent blocks (layers::MambaBlock, layers::Mamba2Block) as mixers of a models::HybridStack: a SequenceMixer
// (the parallel forward; decoding through the block's conv and SSM cache) and a TrainableMixer (the block's backward
// and parameters), what the Jamba-style stacks (models/jamba.hpp) and the trainable models (models/trainable_lm.hpp)
// hold.
#pragma once

#include <type_traits>
#include <utility>

#include "ssm/core/tensor.hpp"
#include "ssm/layers/head_mixer.hpp"
#include "ssm/layers/mamba.hpp"
#include "ssm/layers/mamba2.hpp"

namespace ssm::models {

/// A block as a SequenceMixer: forward is the block's parallel forward; step continues the block's cache over the
/// next t tokens (a resumed forward, i.e. a prefill in chunks; t = 1 is one step). Also a TrainableMixer: backward is
/// the block's, params() its parameters (the block must hold them as T vectors, not as 16-bit weight matrices).
/// Block: value_type T, Cache, make_cache(b), forward(x, Cache*, resume), backward(x, grad_out) → {grad_u, params},
/// params(), set_threads.
template <class Block>
class BlockMixer {
 public:
  using T = typename Block::value_type;
  using State = typename Block::Cache;  ///< conv and SSM state: its size does not grow with the context
  using Params = std::decay_t<decltype(std::declval<Block&>().params())>;
  using Grads = layers::head_mixer::MixerGrads<T, Params>;

  explicit BlockMixer(Block block) : block_(std::move(block)) {}

  index_t d_model() const { return block_.config().d_model; }
  const Block& block() const { return block_; }
  /// x (b, l, d_model) → (b, l, d_model).
  Tensor forward(const TensorView& x) const { return block_.forward(x); }
  State init_state(index_t b) const { return block_.make_cache(b); }
  /// x (b, t, d_model) → (b, t, d_model), continuing from and updating state.
  Tensor step(const TensorView& x, State& state) const { return block_.forward(x, &state, true); }
  /// ∂L/∂x and every parameter's gradient for grad_out = ∂L/∂y, y = forward(x) (the block's backward).
  Grads backward(const TensorView& x, const TensorView& grad_out) const {
    auto g = block_.backward(x, grad_out);
    return {std::move(g.grad_u), std::move(g.params)};
  }
  const Params& params() const { return block_.params(); }
  /// The block's parameters, to update in place (see the block's params()).
  Params& params() { return block_.params(); }
  void set_threads(int n) { block_.set_threads(n); }

 private:
  Block block_;
};

/// Mamba's block (Gu & Dao 2023) as a mixer.
template <class T>
using MambaMixer = BlockMixer<layers::MambaBlock<T>>;
/// The Mamba-2 block (Dao & Gu 2024) as a mixer.
template <class T>
using Mamba2Mixer = BlockMixer<layers::Mamba2Block<T>>;

}  // namespace ssm::models
