// Checker: each check throws ssm::Error with the op, the argument, the expected and the actual value.
#include <gtest/gtest.h>

#include <string>

#include "ssm/core/check.hpp"

namespace {

using ssm::Checker;
using ssm::Device;
using ssm::DType;
using ssm::Tensor;
using ssm::TensorView;

// Runs f, expects ssm::Error, and checks every fragment appears in the message.
template <class F>
void expect_error(F&& f, std::initializer_list<const char*> fragments) {
  try {
    f();
    ADD_FAILURE() << "expected ssm::Error";
  } catch (const ssm::Error& e) {
    const std::string msg = e.what();
    for (const char* frag : fragments) EXPECT_NE(msg.find(frag), std::string::npos) << "missing '" << frag << "' in: " << msg;
  }
}

TEST(Checker, ShapeNamesOpArgumentExpectedAndActual) {
  Tensor u = Tensor::empty({2, 16, 99}, DType::f32);
  Checker c("selective_scan");
  EXPECT_NO_THROW(c.shape("u", u, {2, 16, 99}));
  EXPECT_NO_THROW(c.shape("u", u, {2, ssm::kAny, 99}));
  expect_error([&] { c.shape("u", u, {2, 16, 100}); },
               {"selective_scan", "'u'", "expected shape (2, 16, 100)", "got (2, 16, 99)"});
  expect_error([&] { c.shape("u", u, {2, 16}); }, {"expected shape (2, 16)", "got (2, 16, 99)"});
  expect_error([&] { c.rank("u", u, 4); }, {"expected rank 4, got rank 3"});
}

TEST(Checker, DtypeChecks) {
  Tensor x = Tensor::empty({3}, DType::i32);
  Tensor y = Tensor::empty({3}, DType::f16);
  Checker c("op");
  expect_error([&] { c.dtype("x", x, DType::f32); }, {"'x'", "expected dtype f32, got i32"});
  expect_error([&] { c.floating("x", x); }, {"expected dtype in {f32, f64, f16, bf16}, got i32"});
  EXPECT_NO_THROW(c.floating("y", y));
  expect_error([&] { c.same_dtype("y", y, "x", x); }, {"'y'", "expected dtype i32 (the dtype of 'x'), got f16"});
}

TEST(Checker, DevicesStridesAndScalars) {
  Tensor a = Tensor::empty({4, 8}, DType::f32);
  float dummy = 0;
  TensorView on_gpu(&dummy, DType::f32, Device::cuda(1), ssm::Dims{4, 8});
  Checker c("attention");
  expect_error([&] { c.same_device({{"q", a}, {"k", on_gpu}}); },
               {"attention", "'k'", "is on cuda:1 but 'q' is on cpu", "mixed devices"});
  expect_error([&] { c.device("k", on_gpu, Device::cpu()); }, {"expected device cpu, got cuda:1"});
  TensorView cols = a.view().narrow(1, 0, 4);
  EXPECT_NO_THROW(c.unit_stride("cols", cols, 1));
  TensorView strided(a.data(), DType::f32, Device::cpu(), ssm::Dims{4, 4}, ssm::Dims{8, 2});
  expect_error([&] { c.unit_stride("x", strided, 1); }, {"expected stride 1 in dimension 1", "(8, 2)"});
  expect_error([&] { c.contiguous("x", strided); }, {"expected a contiguous tensor"});
  expect_error([&] { c.positive("dt", -1.0); }, {"'dt'", "must be finite and > 0, got -1"});
  expect_error([&] { c.finite("alpha", std::nan("")); }, {"'alpha'", "must be finite, got nan"});
  EXPECT_NO_THROW(c.positive("dt", 1e-3));
}

TEST(Checker, FreeScalarChecks) {
  expect_error([] { ssm::check_in_range("gbt", "alpha", 1.5, 0.0, 1.0); }, {"gbt", "'alpha'", "must be in [0, 1], got 1.5"});
  expect_error([] { ssm::check_positive("zoh", "Delta", 0.0); }, {"'Delta'", "> 0, got 0"});
  EXPECT_NO_THROW(ssm::check_finite("x", "y", 1.0));
}

}  // namespace
