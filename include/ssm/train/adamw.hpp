// AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"), step for step as PyTorch's torch.optim.AdamW
// (foreach off, amsgrad off). For each parameter p with gradient g, at step t = 1, 2, …:
//   p ← p − lr · λ · p                       decoupled weight decay (only where decays(name))
//   m ← β1 m + (1 − β1) g,   v ← β2 v + (1 − β2) g²
//   p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)
// The moments m, v are kept per parameter in the parameters' type, in the parameter tree's order.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/train/param_tree.hpp"

namespace ssm::train {

struct AdamWConfig {
  double lr = 1e-3;  // the rate when step() is given none (a schedule's otherwise)
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;  // λ
  /// Which parameters take the weight decay (by tree name); empty: all. A common choice leaves out biases, norm
  /// weights and the SSM's A_log, D and dt_bias.
  std::function<bool(const std::string&)> decays{};

  /// Throws ssm::Error naming the first invalid field.
  void validate(const char* op = "AdamWConfig") const {
    const Checker c(op);
    c.require(std::isfinite(lr) && lr >= 0, "lr", "must be finite and >= 0, got ", lr);
    c.require(beta1 >= 0 && beta1 < 1, "beta1", "must be in [0, 1), got ", beta1);
    c.require(beta2 >= 0 && beta2 < 1, "beta2", "must be in [0, 1), got ", beta2);
    c.require(std::isfinite(eps) && eps > 0, "eps", "must be finite and > 0, got ", eps);
    c.require(std::isfinite(weight_decay) && weight_decay >= 0, "weight_decay", "must be finite and >= 0, got ",
              weight_decay);
  }
};

/// The weight-decay rule of example_train and the Python trainer (AdamWConfig::decays): every parameter except the
/// norms' weights (a name containing "norm"), the token embedding ("embedding"), an S4 / S4D kernel's own parameters
/// (a name containing "kernel.": Δ, A or Λ, P, B; the S4 code trains them without decay), RWKV-4's decays, bonuses and
/// token-shift mixes (a name containing "time_": RWKV-LM decays only its matrices) and StripedHyena's poles and
/// residues (names ending in "filter.poles" / "filter.residues", the modal filter's SSM).
inline bool decays_by_default(const std::string& name) {
  auto ends_with = [&](const std::string& s) {
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  return name.find("norm") == std::string::npos && name != "embedding" && name.find("kernel.") == std::string::npos &&
         name.find("time_") == std::string::npos && !ends_with("filter.poles") && !ends_with("filter.residues");
}

template <class T>
class AdamW {
 public:
  struct Moments {
    std::string name;
    std::vector<T> m, v;  // each the parameter's size
  };

  explicit AdamW(AdamWConfig cfg = {}) : cfg_(std::move(cfg)) { cfg_.validate("AdamW"); }

  /// One update of every parameter in `params` by its gradient in `grads` (the same names and sizes in the same order:
  /// an ssm::Error naming 'grads' otherwise), at learning rate lr (cfg.lr when absent; finite and >= 0). The first
  /// step sizes the moments after `params`; later steps must see the same tree (an ssm::Error naming 'params').
  void step(ParamTree<T>& params, const ParamTree<T>& grads, std::optional<double> lr = std::nullopt) {
    const Checker c("AdamW::step");
    const double rate = lr.value_or(cfg_.lr);
    c.require(std::isfinite(rate) && rate >= 0, "lr", "must be finite and >= 0, got ", rate);
    params.check_matches("AdamW::step", "grads", grads);
    if (moments_.empty() && t_ == 0)
      for (const auto& e : params.entries())
        moments_.push_back({e.name, std::vector<T>(e.values->size(), T(0)), std::vector<T>(e.values->size(), T(0))});
    check_moments(c, params);
    ++t_;
    const double bc1 = 1 - std::pow(cfg_.beta1, static_cast<double>(t_));
    const double bc2 = 1 - std::pow(cfg_.beta2, static_cast<double>(t_));
    const T b1 = static_cast<T>(cfg_.beta1), b2 = static_cast<T>(cfg_.beta2);
    const T step_size = static_cast<T>(rate / bc1), sqrt_bc2 = static_cast<T>(std::sqrt(bc2));
    const T eps = static_cast<T>(cfg_.eps);
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto& e = params.entries()[i];
      std::vector<T>& p = *e.values;
      const std::vector<T>& g = *grads.entries()[i].values;
      Moments& mo = moments_[i];
      const bool decay = cfg_.weight_decay > 0 && (!cfg_.decays || cfg_.decays(e.name));
      const T shrink = static_cast<T>(1 - rate * cfg_.weight_decay);
      for (std::size_t k = 0; k < p.size(); ++k) {
        if (decay) p[k] *= shrink;
        mo.m[k] = b1 * mo.m[k] + (1 - b1) * g[k];
        mo.v[k] = b2 * mo.v[k] + (1 - b2) * g[k] * g[k];
        p[k] -= step_size * mo.m[k] / (std::sqrt(mo.v[k]) / sqrt_bc2 + eps);
      }
    }
  }

  /// Steps taken (t).
  std::int64_t steps() const { return t_; }
  const AdamWConfig& config() const { return cfg_; }
  /// The moments, one entry per parameter in the tree's order (empty before the first step).
  const std::vector<Moments>& moments() const { return moments_; }

  /// Restores a saved optimizer: t steps taken and the moments (the training-state loader's entry; checked against the
  /// parameter tree at the next step).
  void restore(std::int64_t t, std::vector<Moments> moments) {
    Checker("AdamW::restore").require(t >= 0, "t", "must be >= 0, got ", t);
    t_ = t;
    moments_ = std::move(moments);
  }

 private:
  void check_moments(const Checker& c, const ParamTree<T>& params) const {
    c.require(moments_.size() == params.size(), "params", "the optimizer holds moments for ", moments_.size(),
              " parameters, the tree has ", params.size());
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto& e = params.entries()[i];
      c.require(moments_[i].name == e.name && moments_[i].m.size() == e.values->size() &&
                    moments_[i].v.size() == e.values->size(),
                "params", "entry ", i, " is '", e.name, "' of ", e.values->size(), " elements; the optimizer's is '",
                moments_[i].name, "' of ", moments_[i].m.size());
    }
  }

  AdamWConfig cfg_;
  std::int64_t t_ = 0;
  std::vector<Moments> moments_;
};

}  // namespace ssm::train
