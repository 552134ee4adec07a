// What the mixer-layer tests share: random inputs, values as doubles, and the normalized difference.
#pragma once

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "ssm/core/tensor.hpp"

namespace mixer_test {

/// A (shape) tensor of T with values uniform in [-1, 1).
template <class T>
ssm::Tensor random_input(const ssm::Dims& shape, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-1, 1);
  ssm::Tensor t = ssm::Tensor::empty(shape, ssm::dtype_of<T>());
  for (ssm::index_t i = 0; i < t.numel(); ++i) t.data_as<T>()[i] = static_cast<T>(u(rng));
  return t;
}

/// The values of a contiguous f32 or f64 tensor.
inline std::vector<double> doubles(const ssm::Tensor& t) {
  std::vector<double> v(static_cast<std::size_t>(t.numel()));
  for (ssm::index_t i = 0; i < t.numel(); ++i)
    v[static_cast<std::size_t>(i)] = t.dtype() == ssm::DType::f64 ? t.data_as<double>()[i] : t.data_as<float>()[i];
  return v;
}

/// max |a − b| / max |b|.
inline double rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double e = 0, s = 0;
  for (std::size_t i = 0; i < b.size(); ++i) e = std::max(e, std::abs(a[i] - b[i])), s = std::max(s, std::abs(b[i]));
  return e / s;
}

}  // namespace mixer_test
