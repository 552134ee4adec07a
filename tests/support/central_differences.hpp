// The central-difference check the recurrence tests share (linear attention, the delta rule, RWKV-7): an analytic
// gradient against (L(x + e) − L(x − e)) / 2e, element by element of an f64 input perturbed in place.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "ssm/core/tensor.hpp"

namespace ssm_test {

/// For every element of x (a contiguous f64 tensor that loss() reads): |(loss() at x + e − loss() at x − e) / 2e −
/// grad| <= tol · max(1, max |grad|), and grad is not all zero (a dropped gradient would otherwise pass wherever the
/// loss is flat). x is restored element by element.
template <class Loss>
void expect_central_differences(const std::string& what, ssm::Tensor& x, const ssm::Tensor& grad, Loss&& loss,
                                double e = 1e-6, double tol = 1e-7) {
  SCOPED_TRACE(what);
  ASSERT_TRUE(grad.defined());
  ASSERT_EQ(grad.numel(), x.numel());
  double max_err = 0, max_g = 0;
  for (ssm::index_t i = 0; i < x.numel(); ++i) {
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

}  // namespace ssm_test
