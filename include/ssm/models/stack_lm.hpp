// A language model to train over a HybridStack: a token embedding E (V, d), the stack's pre-norm residual layers, a
// final RMSNorm and a head W (V, d), its own or the embedding (tied, as Mamba's checkpoints):
//
//   h = E[ids]   z = stack(h)   logits = RMSNorm(z) ⊙ norm_f · Wᵀ   loss = cross_entropy(logits, targets)
//
// step() computes the mean loss over the counted targets, how many the argmax got right, and every parameter's
// gradient (the stack's backward, which runs its forward again). for_each walks the parameters by name (embedding,
// layers.<i>.…, norm_f.weight, lm_head unless tied), what train::ParamTree::add_all and the training state use;
// Grads::for_each walks the gradients under the same names. CPU tensors of T = float or double.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/layers/basic.hpp"
#include "ssm/models/hybrid.hpp"
#include "ssm/ops/cross_entropy.hpp"
#include "ssm/ops/embedding.hpp"

namespace ssm::models {

template <class T, SequenceMixer... Mixers>
class StackLM {
 public:
  using Stack = HybridStack<T, Mixers...>;

  struct Grads {
    std::vector<T> embedding, norm_f, lm_head;  // (V, d), (d), (V, d); lm_head empty when tied (in embedding)
    typename Stack::Grads stack;
    template <class F>
    void for_each(F&& f) {
      f("embedding", embedding);
      stack.for_each([&](const char* n, std::vector<T>& v) { f(n, v); });
      f("norm_f.weight", norm_f);
      if (!tied) f("lm_head", lm_head);
    }
    bool tied = false;
  };

  /// What one step measured: the mean loss over counted targets, their count, and how many the argmax predicted.
  struct StepResult {
    double loss = 0;
    index_t count = 0, correct = 0;
  };

  /// vocab tokens over `stack`; the embedding drawn from N(0, 1), the head from N(0, 1 / d) (none when
  /// `tie_embeddings`: the head is the embedding), norm_f ones, from seed.
  StackLM(index_t vocab, Stack stack, std::uint64_t seed, double norm_eps = 1e-5, bool tie_embeddings = false)
      : V_(vocab), stack_(std::move(stack)), eps_(norm_eps), tied_(tie_embeddings) {
    Checker c("StackLM");
    c.require(vocab >= 1, "vocab", "must be >= 1, got ", vocab);
    c.positive("norm_eps", norm_eps);
    const index_t d = stack_.d_model();
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    E_.resize(static_cast<std::size_t>(V_ * d)), W_.resize(tied_ ? 0 : E_.size());
    for (T& e : E_) e = static_cast<T>(normal(rng));
    for (T& w : W_) w = static_cast<T>(normal(rng) / std::sqrt(static_cast<double>(d)));
    norm_f_.assign(static_cast<std::size_t>(d), T(1));
  }

  index_t vocab() const { return V_; }
  index_t d_model() const { return stack_.d_model(); }
  double norm_eps() const { return eps_; }
  bool tie_embeddings() const { return tied_; }
  const Stack& stack() const { return stack_; }
  const std::vector<T>& embedding() const { return E_; }    // (V, d)
  const std::vector<T>& norm_f() const { return norm_f_; }  // (d)
  /// W (V, d): the head, or the embedding when tied.
  const std::vector<T>& head() const { return tied_ ? E_ : W_; }
  Stack& stack() { return stack_; }

  /// logits (b, l, V) for ids (b, l) i32 | i64 contiguous.
  Tensor logits(const TensorView& ids) const;

  /// The mean cross-entropy of targets (b l) i32 | i64 (ignore_index −100) given ids (b, l), and every parameter's
  /// gradient into g (resized; earlier contents discarded).
  StepResult step(const TensorView& ids, const TensorView& targets, Grads& g) const;

  /// What step() measures, without gradients: the mean cross-entropy of targets (b l) given ids (b, l), their count and
  /// how many the argmax predicted (an evaluation, at any length the mixers take).
  StepResult evaluate(const TensorView& ids, const TensorView& targets) const;

  /// f(name, vector) for every parameter: "embedding", the stack's "layers.<i>.…", "norm_f.weight", "lm_head" (not
  /// when tied).
  template <class F>
  void for_each(F&& f) {
    f("embedding", E_);
    stack_.for_each([&](const char* n, std::vector<T>& v) { f(n, v); });
    f("norm_f.weight", norm_f_);
    if (!tied_) f("lm_head", W_);
  }

 private:
  /// ids must be a contiguous (b, l) CPU tensor of token ids (i32 | i64; their range is the embedding op's check).
  static void check_ids(const Checker& c, const TensorView& ids) {
    c.defined("ids", ids).rank("ids", ids, 2).dtype_in("ids", ids, {DType::i32, DType::i64}).contiguous("ids", ids);
    c.device("ids", ids, Device::cpu());
  }

  /// targets must be a contiguous (rows) CPU tensor of i32 | i64 (their values are cross_entropy's check).
  static void check_targets(const Checker& c, const TensorView& targets, index_t rows) {
    c.defined("targets", targets).dtype_in("targets", targets, {DType::i32, DType::i64}).shape("targets", targets, {rows});
    c.contiguous("targets", targets).device("targets", targets, Device::cpu());
  }

  /// How many rows of logits (rows, V) have their argmax (the first, on ties) at the row's target; targets outside
  /// [0, V) are ignored (cross_entropy rejects those other than ignore_index).
  index_t count_correct(const TensorView& logits, const TensorView& targets) const {
    const T* L = logits.data_as<const T>();
    index_t correct = 0;
    for (index_t i = 0; i < logits.size(0); ++i) {
      const std::int64_t t = targets.dtype() == DType::i32 ? targets.data_as<const std::int32_t>()[i]
                                                           : targets.data_as<const std::int64_t>()[i];
      if (t < 0 || t >= V_) continue;
      index_t best = 0;
      for (index_t j = 1; j < V_; ++j)
        if (L[i * V_ + j] > L[i * V_ + best]) best = j;
      correct += best == t;
    }
    return correct;
  }

  /// h (b, l, d) = E[ids] (ssm::embedding: ids outside [0, V) are an ssm::Error naming 'ids').
  Tensor embed(const TensorView& ids) const;

  /// The parameters' sizes (an optimizer may hold them; a resized one is an ssm::Error naming it).
  void check_params() const {
    const Checker c("StackLM");
    const std::size_t vd = static_cast<std::size_t>(V_ * d_model());
    c.require(E_.size() == vd, "embedding", "expected ", vd, " values (", V_, ", ", d_model(), "), got ", E_.size());
    c.require(tied_ || W_.size() == vd, "lm_head", "expected ", vd, " values (", V_, ", ", d_model(), "), got ",
              W_.size());
    c.require(norm_f_.size() == static_cast<std::size_t>(d_model()), "norm_f.weight", "expected shape (", d_model(),
              "), got (", norm_f_.size(), ")");
  }

  /// logits (b, l, V), keeping h = E[ids], z = stack(h) and n = RMSNorm(z) ⊙ norm_f.
  Tensor logits_of(const TensorView& ids, Tensor& h, Tensor& z, Tensor& n) const;

  index_t V_;
  Stack stack_;
  double eps_;
  bool tied_;
  std::vector<T> E_, W_, norm_f_;  // (V, d), (V, d) (empty when tied), (d)
};

// The members that run the model, defined outside the class (not inline), so that an `extern template` declaration
// of one holds: a program built with SSM_EXTERN_INSTANCES takes TrainableLM<float>'s logits, step and evaluate from
// src/instances/ (models/trainable_lm.hpp) instead of compiling every layer again.

template <class T, SequenceMixer... Mixers>
Tensor StackLM<T, Mixers...>::logits(const TensorView& ids) const {
  Tensor h, z, n;
  return logits_of(ids, h, z, n);
}

template <class T, SequenceMixer... Mixers>
auto StackLM<T, Mixers...>::step(const TensorView& ids, const TensorView& targets, Grads& g) const -> StepResult {
  const Checker c("StackLM::step");
  check_ids(c, ids);
  const index_t b = ids.size(0), l = ids.size(1), d = d_model(), rows = b * l;
  check_targets(c, targets, rows);
  Tensor h, z, n;                             // (b, l, d): the embedded ids, the stack's output, the normalized rows
  Tensor lg = logits_of(ids, h, z, n);        // (b, l, V), then ∂L/∂logits in place
  const TensorView lr = lg.view().reshape({rows, V_});
  StepResult r;
  r.correct = count_correct(lr, targets);
  const CrossEntropyResult ce = cross_entropy({lr, targets}, lr);
  r.loss = ce.loss, r.count = ce.count;
  g.tied = tied_;
  g.lm_head.assign(W_.size(), T(0));
  g.norm_f.assign(norm_f_.size(), T(0));
  g.embedding.assign(E_.size(), T(0));
  std::vector<T> grad_n(static_cast<std::size_t>(rows * d));  // ∂L/∂(normalized rows)
  // the head's gradient, into the embedding's when tied (the lookup's is added to it below)
  layers::linear_backward(n.data_as<const T>(), head().data(), lg.data_as<const T>(), grad_n.data(),
                          tied_ ? g.embedding.data() : g.lm_head.data(), static_cast<T*>(nullptr), rows, d, V_);
  Tensor grad_z = Tensor::empty({b, l, d}, dtype_of<T>());
  layers::rmsnorm_backward(z.data_as<const T>(), norm_f_.data(), grad_n.data(), grad_z.data_as<T>(), g.norm_f.data(),
                           rows, d, eps_);
  g.stack = stack_.backward(h, grad_z);
  const DType id_dt = ids.dtype();
  if (id_dt == DType::i32)
    layers::embedding_backward(ids.data_as<const std::int32_t>(), g.stack.grad_x.data(), g.embedding.data(), rows, d);
  else
    layers::embedding_backward(ids.data_as<const std::int64_t>(), g.stack.grad_x.data(), g.embedding.data(), rows, d);
  return r;
}

template <class T, SequenceMixer... Mixers>
auto StackLM<T, Mixers...>::evaluate(const TensorView& ids, const TensorView& targets) const -> StepResult {
  const Checker c("StackLM::evaluate");
  check_ids(c, ids);
  const index_t rows = ids.size(0) * ids.size(1);
  check_targets(c, targets, rows);
  Tensor h, z, n;
  const Tensor lg = logits_of(ids, h, z, n);  // (b, l, V)
  const TensorView lr = lg.view().reshape({rows, V_});
  StepResult r;
  r.correct = count_correct(lr, targets);
  const CrossEntropyResult ce = cross_entropy({lr, targets});
  r.loss = ce.loss, r.count = ce.count;
  return r;
}

template <class T, SequenceMixer... Mixers>
Tensor StackLM<T, Mixers...>::embed(const TensorView& ids) const {
  check_ids(Checker("StackLM"), ids);
  const index_t b = ids.size(0), l = ids.size(1), d = d_model();
  Tensor h = Tensor::empty({b, l, d}, dtype_of<T>());
  embedding_into(ids.reshape({b * l}), TensorView::of(E_.data(), {V_, d}), h.view().reshape({b * l, d}));
  return h;
}

template <class T, SequenceMixer... Mixers>
Tensor StackLM<T, Mixers...>::logits_of(const TensorView& ids, Tensor& h, Tensor& z, Tensor& n) const {
  check_params();
  h = embed(ids);
  const index_t b = ids.size(0), l = ids.size(1), d = d_model(), rows = b * l;
  z = stack_.forward(h);
  n = Tensor::empty({b, l, d}, dtype_of<T>());
  rms_norm_into({z.view().reshape({rows, d}), TensorView::of(norm_f_.data(), {d}), std::nullopt, eps_},
                n.view().reshape({rows, d}));
  Tensor lg = Tensor::empty({b, l, V_}, dtype_of<T>());
  layers::project(TensorView::of(head().data(), {V_, d}), n.view().reshape({rows, d}), std::nullopt,
                  lg.view().reshape({rows, V_}), 0);
  return lg;
}

}  // namespace ssm::models
