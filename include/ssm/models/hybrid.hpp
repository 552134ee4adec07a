// A hybrid stack of sequence-mixer layers with pre-norm residual blocks, x ← x + mixer_i(RMSNorm_i(x)), so
// attention can be interleaved with state-space layers (Jamba, Lieber et al. 2024: one attention layer every
// k layers, the others Mamba). The mixer types are template parameters satisfying SequenceMixer; each
// layer holds one of them (std::variant), and decoding carries one State per layer (KV cache, SSM state, …). A stack
// of TrainableMixers also has a backward and a walk over its parameters (for_each), what an optimizer needs.
#pragma once

#include <cmath>
#include <concepts>
#include <cstddef>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/layers/basic.hpp"
#include "ssm/ops/rms_norm.hpp"

namespace ssm::models {

/// What HybridStack needs of a layer: x (b, l, d_model) → (b, l, d_model) for a whole sequence, and
/// token-by-token decoding with a State made for a batch size: step(x (b, t, d_model), state).
template <class M>
concept SequenceMixer = requires(const M& m, const TensorView& x, typename M::State& s, index_t b) {
  { m.d_model() } -> std::convertible_to<index_t>;
  { m.forward(x) } -> std::same_as<Tensor>;
  { m.init_state(b) } -> std::same_as<typename M::State>;
  { m.step(x, s) } -> std::same_as<Tensor>;
};

/// What a stack's backward needs of a layer besides SequenceMixer (element type T): backward(x, grad_out) returning
/// grad_x ((b l d_model) values of T) and params (the layer's parameter struct, of gradients), and params() with
/// for_each(f(name, std::vector<T>&)): DeltaNetLayer, LinearAttentionLayer, Rwkv7Layer (without the value residual),
/// TttLinearLayer, layers::MultiHeadAttention, MambaMixer and Mamba2Mixer (models/mamba_mixer.hpp), HyenaMixer
/// and ModalHyenaMixer (models/hyena_mixer.hpp), S4DMixer and S4Mixer (models/s4_mixer.hpp), Rwkv4Layer, MoeLayer.
template <class M, class T>
concept TrainableMixer = SequenceMixer<M> && requires(M& m, const M& cm, const TensorView& x) {
  { cm.backward(x, x).grad_x } -> std::convertible_to<std::vector<T>>;
  m.params().for_each([](const char*, std::vector<T>&) {});
};

namespace detail {
/// The type of m.params() (a mixer's parameter struct), or std::monostate for a mixer without one.
template <class M, class = void>
struct params_of {
  using type = std::monostate;
};
template <class M>
struct params_of<M, std::void_t<decltype(std::declval<M&>().params())>> {
  using type = std::decay_t<decltype(std::declval<M&>().params())>;
};
}  // namespace detail

/// Pre-norm residual stack over layers of the types Mixers (element type T; x contiguous (b, l, d_model)).
template <class T, SequenceMixer... Mixers>
class HybridStack {
 public:
  using Layer = std::variant<Mixers...>;
  using LayerState = std::variant<typename Mixers::State...>;
  using State = std::vector<LayerState>;  ///< one entry per layer

  explicit HybridStack(index_t d_model, double eps = 1e-5) : d_model_(d_model), eps_(eps) {
    Checker c("HybridStack");
    c.require(d_model >= 1, "d_model", "must be >= 1, got ", d_model);
    c.positive("eps", eps);
  }

  /// Appends a layer (its RMSNorm weight starts at ones).
  template <class M>
  void add(M mixer) {
    Checker("HybridStack::add").require(mixer.d_model() == d_model_, "mixer", "has d_model ", mixer.d_model(),
                                        ", the stack has ", d_model_);
    layers_.emplace_back(std::move(mixer));
    norm_weights_.emplace_back(static_cast<std::size_t>(d_model_), T(1));
  }

  std::size_t size() const { return layers_.size(); }
  index_t d_model() const { return d_model_; }
  double eps() const { return eps_; }  // the pre-norms' eps
  const Layer& layer(std::size_t i) const { return layers_[i]; }
  std::vector<T>& norm_weight(std::size_t i) { return norm_weights_[i]; }  // (d_model)
  const std::vector<T>& norm_weight(std::size_t i) const { return norm_weights_[i]; }
  /// One character per layer: 'a' + the index of its type in Mixers (e.g. "aaab" for three of the first
  /// type and one of the second).
  std::string pattern() const {
    std::string s;
    for (const Layer& l : layers_) s += static_cast<char>('a' + l.index());
    return s;
  }

  /// x (b, l, d_model) → (b, l, d_model).
  Tensor forward(const TensorView& x) const;

  /// The gradients of backward: ∂L/∂x, each layer's RMSNorm weight, each layer's parameters (the variant holds the
  /// Params type of that layer's mixer).
  template <class... Ps>
  struct GradsOf {
    std::vector<T> grad_x;                     // (b, l, d_model)
    std::vector<std::vector<T>> norm_weights;  // per layer (d_model)
    std::vector<std::variant<Ps...>> layers;   // per layer
    /// f(name, vector) for each gradient, named as the stack's for_each names the parameters.
    template <class F>
    void for_each(F&& f) {
      for (std::size_t i = 0; i < layers.size(); ++i) {
        const std::string prefix = "layers." + std::to_string(i) + ".";
        f((prefix + "norm.weight").c_str(), norm_weights[i]);
        std::visit(
            [&](auto& p) {
              p.for_each([&](const char* n, std::vector<T>& v) { f((prefix + "mixer." + n).c_str(), v); });
            },
            layers[i]);
      }
    }
  };
  using Grads = GradsOf<typename detail::params_of<Mixers>::type...>;

  /// ∂L/∂x and every parameter's gradient for grad_out = ∂L/∂y (b, l, d_model) contiguous, y = forward(x): the forward
  /// again (keeping each layer's input), then per layer from the last, h ← h + mixer(RMSNorm(h)) in reverse:
  /// ∂L/∂h += RMSNorm'ᵀ (mixer.backward(RMSNorm(h), ∂L/∂h).grad_x). Every mixer must be a TrainableMixer.
  Grads backward(const TensorView& x, const TensorView& grad_out) const
    requires(TrainableMixer<Mixers, T> && ...);

  /// f(name, vector) for every parameter: "layers.<i>.norm.weight" (the pre-norm), then "layers.<i>.mixer.<the mixer's
  /// names>", as Hugging Face lays out a block (a mixer's own "norm.weight", as Mamba-2's, stays apart from the
  /// pre-norm's) (what train::ParamTree::add_all walks). Every mixer must be a TrainableMixer.
  template <class F>
  void for_each(F&& f)
    requires(TrainableMixer<Mixers, T> && ...)
  {
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      const std::string prefix = "layers." + std::to_string(i) + ".";
      f((prefix + "norm.weight").c_str(), norm_weights_[i]);
      std::visit(
          [&](auto& m) {
            m.params().for_each([&](const char* n, std::vector<T>& v) { f((prefix + "mixer." + n).c_str(), v); });
          },
          layers_[i]);
    }
  }

  /// Decoding state for batch b: each layer's init_state(b).
  State init_state(index_t b) const;

  /// The next t tokens x (b, t, d_model) given the state of the earlier ones (updated).
  Tensor step(const TensorView& x, State& state) const;

 private:
  template <std::size_t I = 0, class F>
  static void with_index(std::size_t index, F&& f) {
    if constexpr (I < sizeof...(Mixers)) {
      if (index == I)
        f(std::integral_constant<std::size_t, I>{});
      else
        with_index<I + 1>(index, std::forward<F>(f));
    }
  }

  void check_input(const char* op, const TensorView& x) const {
    Checker c(op);
    c.defined("x", x).dtype("x", x, dtype_of<T>()).shape("x", x, {kAny, kAny, d_model_}).contiguous("x", x);
    c.device("x", x, Device::cpu());
  }

  static Tensor copy_of(const TensorView& x) {
    Tensor h = Tensor::empty(x.shape(), x.dtype());
    copy(h, x);
    return h;
  }

  /// RMSNorm (Zhang & Sennrich 2019) over the last dimension: the ssm::rms_norm op.
  Tensor pre_norm(const Tensor& x, std::size_t i) const {
    // An optimizer may hold the weight (for_each): a resized one is an error, not a read past its end.
    const std::vector<T>& w = norm_weights_[i];
    if (w.size() != static_cast<std::size_t>(d_model_))
      Checker("HybridStack")
          .require(false, ("layers." + std::to_string(i) + ".norm.weight").c_str(), "expected shape (", d_model_,
                   "), got (", w.size(), ")");
    Tensor y = Tensor::empty(x.shape(), x.dtype());  // (b, l, d_model)
    const Dims rows{x.numel() / d_model_, d_model_};
    rms_norm_into({x.view().reshape(rows), TensorView::of(w.data(), {d_model_}), std::nullopt, eps_},
                  y.view().reshape(rows));
    return y;
  }

  static void add_into(Tensor& h, const Tensor& y) {
    SSM_CHECK(y.shape() == h.shape() && y.dtype() == h.dtype(), "HybridStack: a layer returned shape ",
              y.shape().str(), " for input ", h.shape().str());
    T* a = h.data_as<T>();
    const T* b = y.data_as<T>();
    for (index_t i = 0; i < h.numel(); ++i) a[i] += b[i];
  }

  index_t d_model_;
  double eps_;
  std::vector<Layer> layers_;
  std::vector<std::vector<T>> norm_weights_;
};

// The members that run the layers, defined outside the class (not inline), so that an `extern template` declaration
// of one holds: a program built with SSM_EXTERN_INSTANCES takes TrainableStack<float>'s forward and backward from
// src/instances/ (models/trainable_lm.hpp) instead of compiling every layer again.

template <class T, SequenceMixer... Mixers>
Tensor HybridStack<T, Mixers...>::forward(const TensorView& x) const {
  check_input("HybridStack::forward", x);
  Tensor h = copy_of(x);  // (b, l, d_model) residual stream
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    const Tensor normed = pre_norm(h, i);  // (b, l, d_model)
    const Tensor y = std::visit([&](const auto& m) { return m.forward(normed); }, layers_[i]);
    add_into(h, y);
  }
  return h;
}

template <class T, SequenceMixer... Mixers>
auto HybridStack<T, Mixers...>::backward(const TensorView& x, const TensorView& grad_out) const -> Grads
  requires(TrainableMixer<Mixers, T> && ...)
{
  check_input("HybridStack::backward", x);
  Checker c("HybridStack::backward");
  c.defined("grad_out", grad_out).dtype("grad_out", grad_out, dtype_of<T>()).contiguous("grad_out", grad_out);
  c.shape("grad_out", grad_out, {x.size(0), x.size(1), d_model_}).device("grad_out", grad_out, Device::cpu());
  const index_t rows = x.size(0) * x.size(1), n = rows * d_model_;
  std::vector<Tensor> inputs;  // per layer: its residual-stream input (b, l, d_model)
  Tensor h = copy_of(x);
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    inputs.push_back(copy_of(h));
    const Tensor y = std::visit([&](const auto& m) { return m.forward(pre_norm(h, i)); }, layers_[i]);
    add_into(h, y);
  }
  Grads g;
  g.grad_x.assign(grad_out.data_as<const T>(), grad_out.data_as<const T>() + n);  // ∂L/∂h, from the top
  g.norm_weights.assign(layers_.size(), std::vector<T>(static_cast<std::size_t>(d_model_), T(0)));
  g.layers.resize(layers_.size());
  std::vector<T> grad_in(static_cast<std::size_t>(n));  // ∂L/∂h through the norm
  for (std::size_t i = layers_.size(); i-- > 0;) {
    const Tensor normed = pre_norm(inputs[i], i);
    Tensor gh = Tensor::empty(x.shape(), dtype_of<T>());  // ∂L/∂(this layer's output)
    std::copy(g.grad_x.begin(), g.grad_x.end(), gh.data_as<T>());
    with_index(layers_[i].index(), [&](auto I) {
      auto mg = std::get<I>(layers_[i]).backward(normed, gh);
      layers::rmsnorm_backward(inputs[i].data_as<const T>(), norm_weights_[i].data(), mg.grad_x.data(),
                               grad_in.data(), g.norm_weights[i].data(), rows, d_model_, eps_);
      g.layers[i].template emplace<I>(std::move(mg.params));
    });
    for (index_t e = 0; e < n; ++e) g.grad_x[e] += grad_in[e];
  }
  return g;
}

template <class T, SequenceMixer... Mixers>
auto HybridStack<T, Mixers...>::init_state(index_t b) const -> State {
  State s;
  s.reserve(layers_.size());
  for (const Layer& l : layers_)
    with_index(l.index(), [&](auto I) { s.emplace_back(std::in_place_index<I>, std::get<I>(l).init_state(b)); });
  return s;
}

template <class T, SequenceMixer... Mixers>
Tensor HybridStack<T, Mixers...>::step(const TensorView& x, State& state) const {
  check_input("HybridStack::step", x);
  Checker("HybridStack::step").require(state.size() == layers_.size(), "state", "has ", state.size(),
                                       " layer states, the stack has ", layers_.size(), " layers");
  Tensor h = copy_of(x);  // (b, t, d_model)
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    const Tensor normed = pre_norm(h, i);
    Tensor y;
    with_index(layers_[i].index(), [&](auto I) { y = std::get<I>(layers_[i]).step(normed, std::get<I>(state[i])); });
    add_into(h, y);
  }
  return h;
}

/// Jamba-style interleaving: n_layers layers where layer i (0-based) comes from make_every(i) when
/// (i + 1) % every == 0 (e.g. attention), otherwise from make_other(i) (e.g. Mamba).
template <class T, SequenceMixer Other, SequenceMixer Every, class MakeOther, class MakeEvery>
HybridStack<T, Other, Every> make_interleaved_stack(index_t d_model, index_t n_layers, index_t every,
                                                    MakeOther&& make_other, MakeEvery&& make_every) {
  Checker c("make_interleaved_stack");
  c.require(n_layers >= 1, "n_layers", "must be >= 1, got ", n_layers);
  c.require(every >= 1, "every", "must be >= 1, got ", every);
  HybridStack<T, Other, Every> stack(d_model);
  for (index_t i = 0; i < n_layers; ++i) {
    if ((i + 1) % every == 0)
      stack.add(Every(make_every(i)));
    else
      stack.add(Other(make_other(i)));
  }
  return stack;
}

}  // namespace ssm::models
