// The CPU path of the rotary op (ops/rotary.hpp; the formulas in core/params/dense.hpp's RotaryParams): the cosines and
// sines of every (position, pair) computed once in double into a table of T, then one pass over the tokens. With a
// period shorter than the sequence the table has one row per position mod the period (TTT-Linear: 16), not per token.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "ssm/core/params/dense.hpp"

namespace ssm::cpu {

inline void rotary_forward(const RotaryParams& p) {
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const std::int64_t half = p.dim / 2;
    const bool cyclic = p.period > 0 && p.period < p.seqlen;  // rows by position mod period, else by step
    const std::int64_t rows = cyclic ? p.period : p.seqlen;
    std::vector<T> cs(static_cast<std::size_t>(2 * rows * half));  // (rows, half, 2): cos, sin
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t i = 0; i < half; ++i) {
        const double angle = p.angle(cyclic ? r : p.position(r), i);
        cs[static_cast<std::size_t>(2 * (r * half + i))] = static_cast<T>(std::cos(angle));
        cs[static_cast<std::size_t>(2 * (r * half + i) + 1)] = static_cast<T>(p.inverse ? -std::sin(angle) : std::sin(angle));
      }
    const T* x = static_cast<const T*>(p.x);
    T* y = static_cast<T*>(p.y);
    for (std::int64_t bi = 0; bi < p.batch; ++bi)
      for (std::int64_t t = 0; t < p.seqlen; ++t)
        for (std::int64_t hh = 0; hh < p.heads; ++hh) {
          const T* xr = x + bi * p.x_strides[0] + t * p.x_strides[1] + hh * p.x_strides[2];
          T* yr = y + bi * p.y_strides[0] + t * p.y_strides[1] + hh * p.y_strides[2];
          const T* row = cs.data() + 2 * (cyclic ? p.position(t) : t) * half;
          for (std::int64_t i = 0; i < half; ++i) {
            const T a = xr[p.first(i)], b = xr[p.second(i)], c = row[2 * i], s = row[2 * i + 1];
            yr[p.first(i)] = a * c - b * s;
            yr[p.second(i)] = a * s + b * c;
          }
        }
  };
  if (p.dtype == DType::f64) run(double{});
  else run(float{});
}

}  // namespace ssm::cpu
