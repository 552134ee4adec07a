// The memory-capacity experiment (examples/memory_capacity.hpp) through the library's ops: linear attention and
// DeltaNet recall orthonormal keys exactly; a second write to one key is added (linear attention), replaces the
// first (DeltaNet, Gated DeltaNet), decays it (Mamba-2) or is averaged (softmax); linear attention's recall error
// follows √((N − 1) / dk); the delta rule and a decay hold up better under load; bad arguments are errors.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>

#include "memory_capacity.hpp"
#include "support/expect_error.hpp"

namespace {

using memory_capacity::Mixer;
using memory_capacity::recall;
using memory_capacity::recall_error;
using ssm::index_t;
using ssm::Tensor;
using ssm_test::expect_arg_error;

/// max |a − b| over two f64 tensors of one shape.
double max_diff(const Tensor& a, const Tensor& b) {
  double m = 0;
  for (index_t i = 0; i < a.numel(); ++i) m = std::max(m, std::abs(a.data_as<double>()[i] - b.data_as<double>()[i]));
  return m;
}

/// (1, 1, 1, d) from one row of x (1, n, 1, d).
Tensor row(const Tensor& x, index_t i) {
  const index_t d = x.size(3);
  Tensor r = Tensor::empty({1, 1, 1, d}, ssm::DType::f64);
  for (index_t j = 0; j < d; ++j) r.data_as<double>()[j] = x.data_as<double>()[i * d + j];
  return r;
}

/// (1, 2, 1, d): a then b.
Tensor two_rows(const Tensor& a, const Tensor& b) {
  const index_t d = a.size(3);
  Tensor r = Tensor::empty({1, 2, 1, d}, ssm::DType::f64);
  for (index_t j = 0; j < d; ++j) r.data_as<double>()[j] = a.data_as<double>()[j], r.data_as<double>()[d + j] = b.data_as<double>()[j];
  return r;
}

TEST(MemoryCapacity, OrthonormalKeysAreRecalledExactlyUpToDk) {
  const index_t dk = 24;
  for (index_t n : {1, 7, 24}) {
    std::mt19937_64 rng(static_cast<std::uint64_t>(n));
    const Tensor k = memory_capacity::orthonormal_rows(rng, n, dk);
    const Tensor v = memory_capacity::random_unit_rows(rng, n, 10);
    for (Mixer m : {Mixer::linear_attention, Mixer::deltanet}) {
      const double err = recall_error(recall(m, k, v, k), v);
      EXPECT_LT(err, 1e-12) << memory_capacity::name(m) << ", n = " << n;
    }
  }
}

TEST(MemoryCapacity, ASecondWriteToOneKeyIsAddedReplacedDecayedOrAveraged) {
  std::mt19937_64 rng(7);
  const index_t d = 16;
  const Tensor k1 = memory_capacity::random_unit_rows(rng, 1, d);
  const Tensor vs = memory_capacity::random_unit_rows(rng, 2, d);
  const Tensor v1 = row(vs, 0), v2 = row(vs, 1);
  const Tensor k = two_rows(k1, k1), v = two_rows(v1, v2);
  auto combo = [&](double a, double b) {  // a v1 + b v2
    Tensor r = Tensor::empty({1, 1, 1, d}, ssm::DType::f64);
    for (index_t j = 0; j < d; ++j) r.data_as<double>()[j] = a * v1.data_as<double>()[j] + b * v2.data_as<double>()[j];
    return r;
  };
  memory_capacity::Options opt;
  opt.alpha = 0.99;
  EXPECT_LT(max_diff(recall(Mixer::linear_attention, k, v, k1, opt), combo(1, 1)), 1e-13);  // S = k (v1 + v2)ᵀ
  EXPECT_LT(max_diff(recall(Mixer::deltanet, k, v, k1, opt), combo(0, 1)), 1e-13);          // (I − k kᵀ) erases v1
  EXPECT_LT(max_diff(recall(Mixer::gated_deltanet, k, v, k1, opt), combo(0, 1)), 1e-13);
  EXPECT_LT(max_diff(recall(Mixer::mamba2, k, v, k1, opt), combo(0.99, 1)), 1e-13);  // α v1 + v2
  EXPECT_LT(max_diff(recall(Mixer::softmax, k, v, k1, opt), combo(0.5, 0.5)), 1e-13);  // equal scores
}

const std::vector<memory_capacity::Point>& sweep64() {
  static const std::vector<memory_capacity::Point> points = memory_capacity::sweep(64, 5);
  return points;
}

double error_at(Mixer m, index_t n) {
  for (const auto& p : sweep64())
    if (p.mixer == m && p.n == n) return p.error;
  ADD_FAILURE() << "no point for " << memory_capacity::name(m) << " at n = " << n;
  return NAN;
}

TEST(MemoryCapacity, LinearAttentionCrosstalkFollowsTheSquareRootLaw) {
  // For random unit keys each k_iᵀ k_j (i ≠ j) has mean 0 and variance 1 / dk, so the read error's norm is about
  // √((N − 1) / dk) of the value's. Measured (5 draws, dk = 64) within 3 % from N = dk / 2 on; 10 % allowed.
  for (index_t n : {32, 64, 128, 256, 512}) {
    const double law = std::sqrt(static_cast<double>(n - 1) / 64.0);
    EXPECT_NEAR(error_at(Mixer::linear_attention, n), law, 0.1 * law) << "n = " << n;
  }
}

TEST(MemoryCapacity, TheDeltaRuleAndADecayHoldUpUnderLoadAndSoftmaxLooksUp) {
  for (index_t n : {64, 128, 256, 512}) {
    const double la = error_at(Mixer::linear_attention, n);
    EXPECT_LT(error_at(Mixer::deltanet, n), 0.8 * la) << "n = " << n;
    EXPECT_LT(error_at(Mixer::gated_deltanet, n), 0.8 * la) << "n = " << n;
    EXPECT_LT(error_at(Mixer::mamba2, n), 0.85 * la) << "n = " << n;
  }
  // at 8 pairs per key dimension the additive memory is swamped (~2.8) while the overwriting ones stay near 1
  EXPECT_GT(error_at(Mixer::linear_attention, 512), 2.5);
  EXPECT_LT(error_at(Mixer::deltanet, 512), 1.5);
  // a sharp softmax is a lookup: below dk pairs it returns the stored value almost exactly
  EXPECT_LT(error_at(Mixer::softmax_sharp, 8), 1e-3);
  EXPECT_LT(error_at(Mixer::softmax_sharp, 64), 0.05);
  for (index_t n = 8; n <= 512; n *= 2)
    EXPECT_LT(error_at(Mixer::softmax_sharp, n), error_at(Mixer::softmax, n) + 1e-12) << "n = " << n;
}

TEST(MemoryCapacity, BadArgumentsAreErrorsNamingThem) {
  std::mt19937_64 rng(3);
  const Tensor k = memory_capacity::random_unit_rows(rng, 4, 8), v = memory_capacity::random_unit_rows(rng, 3, 8);
  const Tensor v4 = memory_capacity::random_unit_rows(rng, 4, 8), q5 = memory_capacity::random_unit_rows(rng, 2, 5);
  expect_arg_error("v", [&] { recall(Mixer::deltanet, k, v, k); });   // 4 keys, 3 values
  expect_arg_error("q", [&] { recall(Mixer::linear_attention, k, v4, q5); });  // dk 8, q of 5
  memory_capacity::Options nan;
  nan.alpha = std::numeric_limits<double>::quiet_NaN();
  expect_arg_error("alpha", [&] { recall(Mixer::mamba2, k, v4, k, nan); });
  memory_capacity::Options big;
  big.alpha = 1.5;
  expect_arg_error("alpha", [&] { recall(Mixer::gated_deltanet, k, v4, k, big); });
  const Tensor k32 = Tensor::zeros({1, 4, 1, 8}, ssm::DType::f32);
  expect_arg_error("k", [&] { recall(Mixer::softmax, k32, v4, k); });
  expect_arg_error("dk", [&] { memory_capacity::sweep(4, 1); });
  expect_arg_error("seeds", [&] { memory_capacity::sweep(64, 0); });
  expect_arg_error("n", [&] { memory_capacity::orthonormal_rows(rng, 9, 8); });
  expect_arg_error("d", [&] { memory_capacity::random_unit_rows(rng, 2, 0); });
}

}  // namespace
