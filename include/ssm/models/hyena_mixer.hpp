// layers::HyenaLayer (safari's Hyena operator) as a trainable mixer of a models::HybridStack. The layer caches its
// implicit filters until refresh(); an optimizer updates the parameters in place and cannot call it, so every call
// here runs on a copy whose filters come from the current parameters (HyenaLayer::refreshed), computed only for the
// positions the call reaches (the sequence's length, or the decoding state's): cheap at training lengths.
#pragma once

#include <utility>

#include "ssm/core/tensor.hpp"
#include "ssm/layers/head_mixer.hpp"
#include "ssm/layers/hyena.hpp"

namespace ssm::models {

/// A SequenceMixer and TrainableMixer over layers::HyenaLayer<T>: forward, step (decoding from the layer's state),
/// backward and params() (the trainable walk: all but the window's decay rates), each on fresh filters.
template <class T>
class HyenaMixer {
 public:
  using State = layers::HyenaLayerState<T>;
  using Grads = layers::head_mixer::MixerGrads<T, layers::HyenaLayerParams<T>>;

  explicit HyenaMixer(layers::HyenaLayer<T> layer) : layer_(std::move(layer)) {}

  index_t d_model() const { return layer_.d_model(); }
  /// The layer with filters for every position from the current parameters (a copy: e.g. to decode with after
  /// training, without recomputing filters per token).
  layers::HyenaLayer<T> layer() const { return layer_.refreshed(); }
  /// x (b, l, d_model), l ≤ l_max → (b, l, d_model).
  Tensor forward(const TensorView& x) const { return fresh(x.rank() == 3 ? x.size(1) : 0).forward(x); }
  State init_state(index_t b) const { return layer_.init_state(b); }
  /// x (b, t, d_model) → (b, t, d_model), continuing from and updating state.
  Tensor step(const TensorView& x, State& state) const {
    return fresh(state.t + (x.rank() == 3 ? x.size(1) : 0)).step(x, state);
  }
  Grads backward(const TensorView& x, const TensorView& grad_out) const {
    return fresh(x.rank() == 3 ? x.size(1) : 0).backward(x, grad_out);
  }
  const layers::HyenaLayerParams<T>& params() const { return layer_.params(); }
  layers::HyenaLayerParams<T>& params() { return layer_.params(); }
  void set_threads(int n) { layer_.set_threads(n); }

 private:
  // The layer with filters for positions < l (all of l_max when l is out of [1, l_max]: the layer's checks then name
  // the bad input).
  layers::HyenaLayer<T> fresh(index_t l) const {
    const index_t l_max = layer_.config().l_max;
    return layer_.refreshed(l >= 1 && l <= l_max ? l : 0);
  }

  layers::HyenaLayer<T> layer_;
};

}  // namespace ssm::models
