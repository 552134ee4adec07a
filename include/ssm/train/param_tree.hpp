// A parameter tree: the named parameter vectors of a layer or a model, in a fixed order, as an optimizer, gradient
// clipping and a training-state file walk them. A tree does not own the vectors; it points into the layer's parameter
// struct (anything with for_each(f(name, std::vector<T>&)), such as DeltaNetParams) or into vectors of the caller's.
// The gradients of a backward (a second struct of the same type) make a second tree with the same names and sizes.
#pragma once

#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/index.hpp"

namespace ssm::train {

template <class T>
class ParamTree {
 public:
  struct Entry {
    std::string name;
    std::vector<T>* values;
  };

  /// One parameter vector under `name` (an empty one is left out: a parameter the configuration does not have).
  ParamTree& add(const std::string& name, std::vector<T>& values) {
    SSM_CHECK(!name.empty() && name.find('\n') == std::string::npos,
              "ParamTree::add: a parameter needs a name without line breaks, got '", name, "'");
    for (const Entry& e : entries_)
      SSM_CHECK(e.name != name, "ParamTree::add: parameter '", name, "' is already in the tree");
    if (!values.empty()) entries_.push_back({name, &values});
    return *this;
  }

  /// Every parameter of `params` (its for_each(f(name, vector&))), named prefix + name.
  template <class Params>
  ParamTree& add_all(const std::string& prefix, Params& params) {
    params.for_each([&](const char* name, std::vector<T>& v) { add(prefix + name, v); });
    return *this;
  }

  const std::vector<Entry>& entries() const { return entries_; }
  std::size_t size() const { return entries_.size(); }
  /// Elements over all parameters.
  index_t numel() const {
    index_t n = 0;
    for (const Entry& e : entries_) n += static_cast<index_t>(e.values->size());
    return n;
  }

  /// Throws an ssm::Error naming `what` (as op `op`'s argument) unless `other` holds the same names with the same
  /// sizes in the same order: a gradient tree that does not belong to these parameters.
  void check_matches(const char* op, const char* what, const ParamTree& other) const {
    const Checker c(op);
    c.require(other.size() == size(), what, "expected ", size(), " parameters (as the parameter tree), got ",
              other.size());
    for (std::size_t i = 0; i < size(); ++i) {
      const Entry &a = entries_[i], &b = other.entries_[i];
      c.require(a.name == b.name, what, "entry ", i, " is '", b.name, "', expected '", a.name, "'");
      c.require(a.values->size() == b.values->size(), what, "'", a.name, "' has ", b.values->size(),
                " elements, expected ", a.values->size());
    }
  }

 private:
  std::vector<Entry> entries_;
};

/// The global L2 norm of every gradient in `grads` (summed in double, in the tree's order). When max_norm / (norm +
/// 1e-6) < 1, every gradient is scaled by that factor (PyTorch's clip_grad_norm_). Returns the norm before
/// clipping. A non-finite gradient is an ssm::Error naming the parameter (a step on it would corrupt the weights);
/// max_norm must be finite and > 0.
template <class T>
double clip_grad_norm(ParamTree<T>& grads, double max_norm) {
  const Checker c("clip_grad_norm");
  c.positive("max_norm", max_norm);
  double sq = 0;
  for (const auto& e : grads.entries()) {
    double s = 0;
    for (T g : *e.values) s += static_cast<double>(g) * static_cast<double>(g);
    c.require(std::isfinite(s), "grads", "parameter '", e.name, "' has a non-finite gradient");
    sq += s;
  }
  const double norm = std::sqrt(sq), coef = max_norm / (norm + 1e-6);
  if (coef < 1) {
    const T scale = static_cast<T>(coef);
    for (const auto& e : grads.entries())
      for (T& g : *e.values) g *= scale;
  }
  return norm;
}

}  // namespace ssm::train
