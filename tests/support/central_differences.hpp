// The central-difference check the recurrence and layer tests share (linear attention, the delta rule, RWKV-7, the
// mixer layers, training): an analytic gradient against (L(x + e) − L(x − e)) / 2e, element by element of an f64
// input perturbed in place.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "ssm/core/tensor.hpp"

namespace ssm_test {

/// For every element of x (a contiguous f64 tensor that loss() reads): |(loss() at x + e − loss() at x − e) / 2e −
/// grad| <= tol · max(1, max |grad|), and grad is not all zero (a dropped gradient would otherwise pass wherever the
/// loss is flat). x is restored element by element. With max_checked > 0 and more elements than that, max_checked of
/// them are checked: elements k · a mod n for k = 0, 1, …, with a coprime to n near n / φ (the golden ratio), so the
/// checked ones spread over every row, column, chunk and head rather than falling on a lattice: how the layer tests
/// keep a check of every parameter affordable under the sanitizers.
template <class Loss>
void expect_central_differences(const std::string& what, ssm::Tensor& x, const ssm::Tensor& grad, Loss&& loss,
                                double e = 1e-6, double tol = 1e-7, ssm::index_t max_checked = 0) {
  SCOPED_TRACE(what);
  ASSERT_TRUE(grad.defined());
  ASSERT_EQ(grad.numel(), x.numel());
  const ssm::index_t n = x.numel();
  const bool subset = max_checked > 0 && n > max_checked;
  ssm::index_t a = 1;  // the step through the elements, mod n
  if (subset) {
    a = std::max<ssm::index_t>(1, static_cast<ssm::index_t>(static_cast<double>(n) * 0.6180339887498949));
    while (std::gcd(a, n) != 1) ++a;
  }
  double max_err = 0, max_g = 0;
  for (ssm::index_t k = 0; k < (subset ? max_checked : n); ++k) {
    const ssm::index_t i = subset ? k * a % n : k;
    double& xi = x.data_as<double>()[i];
    const double x0 = xi;
    xi = x0 + e;
    const double up = loss();
    xi = x0 - e;
    const double down = loss();
    xi = x0;
    const double fd = (up - down) / (2 * e), an = grad.data_as<double>()[i];
    max_err = std::max(max_err, std::abs(fd - an)), max_g = std::max(max_g, std::abs(an));
  }
  EXPECT_GT(max_g, 0.0);
  EXPECT_LE(max_err, tol * std::max(1.0, max_g));
}

/// L = Σ y ⊙ R over two contiguous f64 tensors of one size, summed in order: the scalar loss whose gradient with
/// respect to y is R, which the backward checks feed in as grad_out.
inline double weighted_sum(const ssm::Tensor& y, const ssm::Tensor& R) {
  double sum = 0;
  for (ssm::index_t i = 0; i < y.numel(); ++i) sum += y.data_as<double>()[i] * R.data_as<double>()[i];
  return sum;
}

/// A contiguous (n) f64 tensor holding v.
inline ssm::Tensor to_tensor(const std::vector<double>& v) {
  ssm::Tensor t = ssm::Tensor::empty({static_cast<ssm::index_t>(v.size())}, ssm::DType::f64);
  std::copy(v.begin(), v.end(), t.data_as<double>());
  return t;
}

/// Every non-empty parameter of `params` (anything with for_each(f(name, std::vector<double>&))) against central
/// differences of loss(), which must read the parameters where they are: its analytic gradient is the vector that
/// grads.for_each names the same. Each parameter is perturbed through a copy written back before every loss() and
/// restored afterwards. Returns how many parameters were checked.
template <class Params, class Grads, class Loss>
int expect_parameter_gradients(Params& params, Grads& grads, Loss&& loss, ssm::index_t max_checked = 0,
                               double e = 1e-6, double tol = 1e-7) {
  std::map<std::string, std::vector<double>> grad_of;
  grads.for_each([&](const char* name, std::vector<double>& g) { grad_of[name] = g; });
  int checked = 0;
  params.for_each([&](const char* name, std::vector<double>& v) {
    if (v.empty()) return;
    EXPECT_EQ(grad_of[name].size(), v.size()) << name;
    if (grad_of[name].size() != v.size()) return;
    ssm::Tensor pt = to_tensor(v);
    auto write_back = [&] { std::copy_n(pt.data_as<double>(), pt.numel(), v.data()); };
    expect_central_differences(
        name, pt, to_tensor(grad_of[name]),
        [&] {
          write_back();
          return loss();
        },
        e, tol, max_checked);
    write_back();
    ++checked;
  });
  return checked;
}

}  // namespace ssm_test
