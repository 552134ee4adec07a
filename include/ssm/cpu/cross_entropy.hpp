// The CPU path of the cross_entropy op (ops/cross_entropy.hpp): rows split over threads; per row three vector passes
// over the vocabulary:
//   1. m = max_j x_j;
//   2. e_j = exp(x_j − m) (simd::exp), summed in blocks of vectors whose sums are added in double, so a 50k-entry
//      vocabulary loses nothing to the sum; with a gradient wanted, e_j is stored into it (over the logits when in
//      place: x_t, the target's logit, is read first);
//   3. the gradient e_j · scale / Σe, then scale subtracted at the target.
// One exp per element, whether or not the gradient is asked for.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "ssm/core/index.hpp"
#include "ssm/core/params/dense.hpp"
#include "ssm/cpu/simd.hpp"
#include "ssm/cpu/threads.hpp"

namespace ssm::cpu {

template <class T>
void cross_entropy_rows(const CrossEntropyParams& p, std::int64_t begin, std::int64_t end) {
  namespace simd = ssm::cpu::simd;
  using V = simd::Vec<T>;
  constexpr index_t W = simd::lanes<T>;
  constexpr index_t kBlock = 32 * W;  // elements summed in T before the block's sum joins the double total
  const index_t n = p.vocab, nv = n / W * W;
  for (std::int64_t r = begin; r < end; ++r) {
    const T* x = static_cast<const T*>(p.logits) + r * p.logits_row_stride;
    T* g = p.grad_logits ? static_cast<T*>(p.grad_logits) + r * p.grad_row_stride : nullptr;
    const std::int64_t t = p.target(r);
    const bool counted = t != p.ignore_index;
    const T xt = counted ? x[t] : T(0);  // before an in-place gradient overwrites it
    // 1. the maximum
    V vm = simd::broadcast<T>(-std::numeric_limits<T>::infinity());
    for (index_t j = 0; j < nv; j += W) vm = simd::vmax<T>(vm, simd::load(x + j));
    T lanes[W];
    std::memcpy(lanes, &vm, sizeof vm);
    T m = -std::numeric_limits<T>::infinity();
    for (index_t k = 0; k < W; ++k) m = std::max(m, lanes[k]);
    for (index_t j = nv; j < n; ++j) m = std::max(m, x[j]);
    // 2. Σ exp(x − m), the exponentials kept in the gradient when one is wanted
    const V mv = simd::broadcast<T>(m);
    double sum = 0;
    for (index_t b = 0; b < nv; b += kBlock) {
      V acc = simd::broadcast<T>(T(0));
      for (index_t j = b; j < std::min(nv, b + kBlock); j += W) {
        const V e = simd::exp<T>(simd::load(x + j) - mv);
        if (g) simd::store(g + j, e);
        acc += e;
      }
      sum += static_cast<double>(simd::hsum<T>(acc));
    }
    for (index_t j = nv; j < n; ++j) {
      const T e = std::exp(x[j] - m);
      if (g) g[j] = e;
      sum += static_cast<double>(e);
    }
    p.row_loss[r] = counted ? static_cast<double>(m) + std::log(sum) - static_cast<double>(xt) : 0.0;
    if (!g) continue;
    // 3. the gradient: (softmax − onehot) · grad_scale / count, zero for an ignored row
    if (!counted) {
      std::fill_n(g, n, T(0));
      continue;
    }
    const double scale = p.grad_scale / static_cast<double>(p.count);
    const T s = static_cast<T>(scale / sum);
    const V sv = simd::broadcast<T>(s);
    for (index_t j = 0; j < nv; j += W) simd::store(g + j, simd::load(g + j) * sv);
    for (index_t j = nv; j < n; ++j) g[j] *= s;
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
