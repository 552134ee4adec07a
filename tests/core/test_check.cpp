// Checker: each check throws ssm::Error with the op, the argument, the expected and the actual value.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <string_view>

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

// The messages' text is what an ostream with 17 significant digits prints for each piece (detail::concat routes the
// common types through out-of-line overloads): every kind of argument against the stream itself.
TEST(ErrorMessage, ConcatPrintsWhatTheStreamPrints) {
  auto streamed = [](const auto&... args) {
    std::ostringstream os;
    os.precision(17);
    (os << ... << args);
    return os.str();
  };
  enum Plain { plain_three = 3 };
  const char array[] = "array";
  const char* pointer = "pointer";
  const std::string str = "string";
  const std::string_view view = "view";
  const char c = 'c';
  const signed char sc = 'S';
  const unsigned char uc = 'U';
  const std::int8_t i8 = 65;
  const short sh = -3;
  const unsigned short ush = 7;
  const long l = std::numeric_limits<long>::min();
  const unsigned long ul = std::numeric_limits<unsigned long>::max();
  const float f = 0.1f;
  const double d = 0.1, tiny = 5e-324, big = 1e300, nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = -std::numeric_limits<double>::infinity(), negative_zero = -0.0;
  const long double ld = 0.1L;
  const bool yes = true, no = false;
  const Device dev = Device::cuda(1);
  const Plain e = plain_three;
  EXPECT_EQ(ssm::detail::concat(array, pointer, str, view, c, sc, uc, i8, sh, ush, l, ul),
            streamed(array, pointer, str, view, c, sc, uc, i8, sh, ush, l, ul));
  EXPECT_EQ(ssm::detail::concat(f, d, tiny, big, nan, inf, negative_zero, ld, yes, no, dev, e, 42, 42u),
            streamed(f, d, tiny, big, nan, inf, negative_zero, ld, yes, no, dev, e, 42, 42u));
  EXPECT_EQ(ssm::detail::concat("x = ", 0.1, ", n = ", std::int64_t{-5}), "x = 0.10000000000000001, n = -5");
  EXPECT_EQ(ssm::detail::concat(static_cast<const char*>(nullptr)), "(null)");  // the stream would set badbit
}

}  // namespace
