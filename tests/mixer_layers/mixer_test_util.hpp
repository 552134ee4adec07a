// What the mixer-layer tests share: random inputs, values as doubles, the normalized difference, and the check of a
// layer's backward against central differences.
#pragma once

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "ssm/core/tensor.hpp"
#include "support/central_differences.hpp"

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

/// Layer<double>(cfg, params).backward(x, R) against central differences of L = Σ forward(x) ⊙ R, R random: ∂L/∂x
/// and every non-empty parameter's gradient (params' for_each names them), element by element: every element of a
/// tensor of up to kMaxChecked, kMaxChecked spread over a larger one (support/central_differences.hpp). Returns the
/// number of parameters checked.
inline constexpr ssm::index_t kMaxChecked = 64;

template <template <class> class Layer, class Config, class Params>
int expect_backward_matches_central_differences(const Config& cfg, const Params& params, const ssm::Tensor& x,
                                                double tol = 1e-7) {
  const ssm::Tensor R = random_input<double>(x.shape(), 99);
  auto loss_of = [&](const Params& p, const ssm::Tensor& input) {
    return ssm_test::weighted_sum(Layer<double>(cfg, p).forward(input), R);
  };
  auto grads = Layer<double>(cfg, params).backward(x, R);
  ssm::Tensor xt = ssm::Tensor::empty(x.shape(), ssm::DType::f64);
  std::copy_n(x.data_as<double>(), x.numel(), xt.data_as<double>());
  ssm_test::expect_central_differences("x", xt, ssm_test::to_tensor(grads.grad_x), [&] { return loss_of(params, xt); },
                                       1e-6, tol, kMaxChecked);
  Params p = params;  // perturbed in place, a layer built from it at every loss
  return ssm_test::expect_parameter_gradients(p, grads.params, [&] { return loss_of(p, x); }, kMaxChecked, 1e-6, tol);
}

}  // namespace mixer_test
