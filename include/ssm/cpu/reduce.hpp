// Sums of n terms in vectors, in an order fixed by n and the target's vector width alone. Eigen's reductions over a
// Map peel their first elements up to an aligned address, so the same row summed at another address rounds another
// way; these never look at an address: full vectors from index 0 into four accumulators, the accumulators added in a
// fixed tree, then the leftover terms one by one.
//
//   sum(x, n)      Σ x_i
//   dot(x, y, n)   Σ x_i y_i
//   sum_of<T>(n, term)   Σ term(read, i): term builds one term (or a vector of lanes<T> of them, from index i) out of
//                        read(p, i), which is simd::load(p + i) or p[i], and scalars (a scalar broadcasts).
#pragma once

#include <cstdint>

#include "ssm/core/macros.hpp"
#include "ssm/cpu/simd.hpp"

namespace ssm::cpu::reduce {

/// read(p, i) for a term of sum_of: a vector of lanes<T> elements from p + i (any alignment).
struct VectorRead {
  template <class T>
  SSM_FORCE_INLINE simd::Vec<T> operator()(const T* p, std::int64_t i) const {
    return simd::load(p + i);
  }
};

/// read(p, i) for a term of sum_of: the element p[i].
struct ScalarRead {
  template <class T>
  SSM_FORCE_INLINE T operator()(const T* p, std::int64_t i) const {
    return p[i];
  }
};

/// Σ_{i < n} term(read, i) (see the top of the file).
template <class T, class Term>
SSM_FORCE_INLINE T sum_of(std::int64_t n, Term&& term) {
  constexpr std::int64_t L = simd::lanes<T>;
  using V = simd::Vec<T>;
  V a0{}, a1{}, a2{}, a3{};
  std::int64_t i = 0;
  for (; i + 4 * L <= n; i += 4 * L) {
    a0 += term(VectorRead{}, i), a1 += term(VectorRead{}, i + L);
    a2 += term(VectorRead{}, i + 2 * L), a3 += term(VectorRead{}, i + 3 * L);
  }
  for (; i + L <= n; i += L) a0 += term(VectorRead{}, i);
  T s = simd::hsum<T>((a0 + a1) + (a2 + a3));
  for (; i < n; ++i) s += term(ScalarRead{}, i);
  return s;
}

/// Σ x_i over x (n).
template <class T>
T sum(const T* x, std::int64_t n) {
  return sum_of<T>(n, [&](auto read, std::int64_t i) { return read(x, i); });
}

/// Σ x_i y_i over x, y (n).
template <class T>
T dot(const T* x, const T* y, std::int64_t n) {
  return sum_of<T>(n, [&](auto read, std::int64_t i) { return read(x, i) * read(y, i); });
}

}  // namespace ssm::cpu::reduce
