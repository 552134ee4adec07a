// Learning-rate schedules: linear warmup, then a cosine decay to a floor (the schedule of the Mamba and GPT-3 papers).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>

#include "ssm/core/check.hpp"

namespace ssm::train {

/// lr(step), step counted from 0: peak_lr · (step + 1) / warmup_steps during the warmup, then
/// min_lr + (peak_lr − min_lr) · (1 + cos(π p)) / 2 with p = (step − warmup_steps) / (total_steps − warmup_steps),
/// held at min_lr from total_steps on.
struct WarmupCosine {
  double peak_lr = 1e-3;
  double min_lr = 0;
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 1;

  /// Throws ssm::Error naming the first invalid field.
  void validate(const char* op = "WarmupCosine") const {
    const Checker c(op);
    c.require(std::isfinite(peak_lr) && peak_lr >= 0, "peak_lr", "must be finite and >= 0, got ", peak_lr);
    c.require(std::isfinite(min_lr) && min_lr >= 0 && min_lr <= peak_lr, "min_lr",
              "must be finite and in [0, peak_lr = ", peak_lr, "], got ", min_lr);
    c.require(warmup_steps >= 0, "warmup_steps", "must be >= 0, got ", warmup_steps);
    c.require(total_steps >= 1 && total_steps >= warmup_steps, "total_steps", "must be >= max(1, warmup_steps = ",
              warmup_steps, "), got ", total_steps);
  }

  double operator()(std::int64_t step) const {
    validate("WarmupCosine");
    Checker("WarmupCosine").require(step >= 0, "step", "must be >= 0, got ", step);
    if (step < warmup_steps) return peak_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
    const std::int64_t decay = total_steps - warmup_steps;
    const double p = decay > 0 ? std::min(1.0, static_cast<double>(step - warmup_steps) / static_cast<double>(decay)) : 1.0;
    return min_lr + (peak_lr - min_lr) * 0.5 * (1 + std::cos(std::numbers::pi * p));
  }
};

}  // namespace ssm::train
