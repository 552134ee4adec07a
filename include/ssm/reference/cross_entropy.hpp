// Reference cross-entropy with its gradient (the language-model loss): plain loops in double over a
// CrossEntropyParams. Per counted row r (target t_r ≠ ignore_index), m = max_j logits_rj,
// loss_r = m + log Σ_j exp(logits_rj − m) − logits_r[t_r], and ∂loss/∂logits_rj = (softmax_rj − [j = t_r]) / count.
#pragma once

#include <cmath>
#include <cstdint>

#include "ssm/core/params/dense.hpp"
#include "ssm/reference/elements.hpp"

namespace ssm::reference {

inline void cross_entropy(const CrossEntropyParams& p) {
  for (std::int64_t r = 0; r < p.rows; ++r) {
    const std::int64_t t = p.target(r);
    const bool counted = t != p.ignore_index;
    auto logit = [&](std::int64_t j) { return load_real(p.logits, p.dtype, r * p.logits_row_stride + j); };
    double m = -INFINITY;
    for (std::int64_t j = 0; j < p.vocab; ++j) m = std::fmax(m, logit(j));
    double sum = 0;
    for (std::int64_t j = 0; j < p.vocab; ++j) sum += std::exp(logit(j) - m);
    const double lse = m + std::log(sum);
    p.row_loss[r] = counted ? lse - logit(t) : 0.0;
    if (p.grad_logits == nullptr) continue;
    const double scale = counted ? p.grad_scale / static_cast<double>(p.count) : 0.0;
    for (std::int64_t j = 0; j < p.vocab; ++j) {
      const double g = (std::exp(logit(j) - lse) - (j == t ? 1.0 : 0.0)) * scale;  // read before the in-place write
      store_real(p.grad_logits, p.dtype, r * p.grad_row_stride + j, g);
    }
  }
}

}  // namespace ssm::reference
