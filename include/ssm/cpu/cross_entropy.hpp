// The CPU path of the cross_entropy op (ops/cross_entropy.hpp): rows split over threads; per row one pass for the
// maximum, one for Σ exp(x − max) (accumulated in double for f32 logits, so a 50k-entry vocabulary loses nothing to the
// sum), and one that writes the gradient (softmax − onehot) · scale over the logits, in place when asked.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "ssm/core/index.hpp"
#include "ssm/core/params/dense.hpp"
#include "ssm/cpu/threads.hpp"

namespace ssm::cpu {

template <class T>
void cross_entropy_rows(const CrossEntropyParams& p, std::int64_t begin, std::int64_t end) {
  for (std::int64_t r = begin; r < end; ++r) {
    const T* x = static_cast<const T*>(p.logits) + r * p.logits_row_stride;
    const std::int64_t t = p.target_dtype == DType::i32 ? static_cast<const std::int32_t*>(p.targets)[r]
                                                        : static_cast<const std::int64_t*>(p.targets)[r];
    const bool counted = t != p.ignore_index;
    T m = x[0];
    for (index_t j = 1; j < p.vocab; ++j) m = std::max(m, x[j]);
    double sum = 0;
    for (index_t j = 0; j < p.vocab; ++j) sum += std::exp(static_cast<double>(x[j] - m));
    const double lse = static_cast<double>(m) + std::log(sum);
    p.row_loss[r] = counted ? lse - static_cast<double>(x[t]) : 0.0;
    if (p.grad_logits == nullptr) continue;
    T* g = static_cast<T*>(p.grad_logits) + r * p.grad_row_stride;
    if (!counted) {
      std::fill_n(g, p.vocab, T(0));
      continue;
    }
    const double scale = p.grad_scale / static_cast<double>(p.count);
    const T inv_sum = static_cast<T>(scale / sum), mt = m;
    for (index_t j = 0; j < p.vocab; ++j) g[j] = std::exp(x[j] - mt) * inv_sum;  // in place: x[j] read first
    g[t] -= static_cast<T>(scale);
  }
}

/// The op's CPU path for a validated p (dtype f32 or f64, vocab >= 1) on `threads` threads (0: by the work).
inline void cross_entropy(const CrossEntropyParams& p, int threads) {
  constexpr std::int64_t kRowsPerTask = 4;
  const std::int64_t tasks = (p.rows + kRowsPerTask - 1) / kRowsPerTask;
  const int nt = cpu_threads(threads, p.rows * p.vocab);
  parallel_for(tasks, nt, [&](std::int64_t task) {
    const std::int64_t b = task * kRowsPerTask, e = std::min(p.rows, b + kRowsPerTask);
    if (p.dtype == DType::f64)
      cross_entropy_rows<double>(p, b, e);
    else
      cross_entropy_rows<float>(p, b, e);
  });
}

}  // namespace ssm::cpu
