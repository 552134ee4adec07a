// The Hyena layers as trainable mixers of a models::HybridStack: layers::HyenaLayer (safari's Hyena operator, implicit
// filters) and layers::ModalHyenaLayer (StripedHyena's gated convolution, modal filters). Each caches its long filter
// until refresh(); an optimizer updates the parameters in place and cannot call it, so every call here runs on a copy
// whose filter comes from the current parameters (the layer's refreshed(n_taps)), computed only for the taps the call
// reads (the sequence's length, or what a decoding step reads): cheap at training lengths.
#pragma once

#include <type_traits>
#include <utility>

#include "ssm/core/tensor.hpp"
#include "ssm/layers/head_mixer.hpp"
#include "ssm/layers/hyena.hpp"

namespace ssm::models {

/// A SequenceMixer and TrainableMixer over a filter layer (HyenaLayer<T>, ModalHyenaLayer<T>): forward, step (decoding
/// from the layer's state), backward and params() (the layer's trainable walk), each on a fresh filter. Layer:
/// refreshed(n_taps), taps_to_step(state, t), config().l_max, and the mixer interface.
template <class Layer>
class FilterMixer {
 public:
  using State = typename Layer::State;
  using Params = std::decay_t<decltype(std::declval<Layer&>().params())>;
  using Grads = typename Layer::Grads;

  explicit FilterMixer(Layer layer) : layer_(std::move(layer)) {}

  index_t d_model() const { return layer_.d_model(); }
  /// The layer with the filter for every tap from the current parameters (a copy: e.g. to decode with after training,
  /// without recomputing the filter per token).
  Layer layer() const { return layer_.refreshed(); }
  /// x (b, l, d_model) → (b, l, d_model).
  Tensor forward(const TensorView& x) const { return fresh(x.rank() == 3 ? x.size(1) : 0).forward(x); }
  State init_state(index_t b) const { return layer_.init_state(b); }
  /// x (b, t, d_model) → (b, t, d_model), continuing from and updating state.
  Tensor step(const TensorView& x, State& state) const {
    return fresh(layer_.taps_to_step(state, x.rank() == 3 ? x.size(1) : 0)).step(x, state);
  }
  Grads backward(const TensorView& x, const TensorView& grad_out) const {
    return fresh(x.rank() == 3 ? x.size(1) : 0).backward(x, grad_out);
  }
  const Params& params() const { return layer_.params(); }
  Params& params() { return layer_.params(); }
  void set_threads(int n) { layer_.set_threads(n); }

 private:
  // The layer with its filter for taps < n (all of l_max when n is out of [1, l_max]: the layer's checks then name the
  // bad input, or run it in pieces).
  Layer fresh(index_t n) const {
    const index_t l_max = layer_.config().l_max;
    return layer_.refreshed(n >= 1 && n <= l_max ? n : 0);
  }

  Layer layer_;
};

/// safari's Hyena operator (Poli et al. 2023) as a mixer.
template <class T>
using HyenaMixer = FilterMixer<layers::HyenaLayer<T>>;
/// StripedHyena's gated convolution with modal filters as a mixer.
template <class T>
using ModalHyenaMixer = FilterMixer<layers::ModalHyenaLayer<T>>;

}  // namespace ssm::models
