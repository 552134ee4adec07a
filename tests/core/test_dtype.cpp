// half / bfloat16 conversions: exhaustive round trips and round-to-nearest-even against a double oracle.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "ssm/core/dtype.hpp"

namespace {

TEST(DType, SizesAndNames) {
  EXPECT_EQ(ssm::size_of(ssm::DType::f16), 2u);
  EXPECT_EQ(ssm::size_of(ssm::DType::bf16), 2u);
  EXPECT_EQ(ssm::size_of(ssm::DType::c64), 8u);
  EXPECT_EQ(ssm::size_of(ssm::DType::c128), 16u);
  EXPECT_EQ(ssm::name(ssm::DType::bf16), "bf16");
  EXPECT_EQ(ssm::dtype_of<float>(), ssm::DType::f32);
  EXPECT_EQ(ssm::dtype_of<ssm::half>(), ssm::DType::f16);
  EXPECT_EQ(ssm::dtype_of<std::complex<float>>(), ssm::DType::c64);
}

// Every finite half converts to float and back to the same bits.
TEST(DType, HalfRoundTripAllBitPatterns) {
  for (std::uint32_t b = 0; b < 0x10000u; ++b) {
    const auto h = ssm::half::from_bits(static_cast<std::uint16_t>(b));
    const float f = static_cast<float>(h);
    const bool is_nan = ((b & 0x7c00u) == 0x7c00u) && (b & 0x3ffu);
    if (is_nan) {
      EXPECT_TRUE(std::isnan(f));
      EXPECT_TRUE(std::isnan(static_cast<float>(ssm::half(f))));
    } else {
      ASSERT_EQ(ssm::half(f).bits, b) << "bits " << b << " value " << f;
    }
  }
}

// Known values: rounding of midpoints is to even, overflow goes to infinity, subnormals are exact.
TEST(DType, HalfRoundingKnownValues) {
  EXPECT_EQ(ssm::half(1.0f).bits, 0x3c00u);
  EXPECT_EQ(ssm::half(-2.0f).bits, 0xc000u);
  EXPECT_EQ(ssm::half(65504.0f).bits, 0x7bffu);
  EXPECT_EQ(ssm::half(65520.0f).bits, 0x7c00u);  // midpoint to inf
  EXPECT_EQ(ssm::half(65519.0f).bits, 0x7bffu);
  EXPECT_EQ(ssm::half(5.9604644775390625e-08f).bits, 0x0001u);  // smallest subnormal
  EXPECT_EQ(ssm::half(2.98023223876953125e-08f).bits, 0x0000u);  // half of it: ties to even (0)
  EXPECT_EQ(ssm::half(4.4703483581542969e-08f).bits, 0x0001u);   // 0.75 of it
  EXPECT_EQ(ssm::half(1.0f + 1.0f / 2048).bits, 0x3c00u);        // tie between 0x3c00 and 0x3c01 -> even
  EXPECT_EQ(ssm::half(1.0f + 3.0f / 2048).bits, 0x3c02u);        // tie between 0x3c01 and 0x3c02 -> even
  EXPECT_EQ(ssm::half(std::numeric_limits<float>::infinity()).bits, 0x7c00u);
}

// Against an oracle: the nearest half (ties to even) found by searching neighbours, for many floats.
TEST(DType, HalfMatchesNearestOracle) {
  std::uint32_t state = 12345;
  for (int i = 0; i < 200000; ++i) {
    state = state * 1664525u + 1013904223u;
    const float x = std::ldexp(static_cast<float>(state % 100000) / 100000.0f + 0.5f, static_cast<int>(state >> 27) - 20);
    const std::uint16_t got = ssm::half(x).bits;
    const double g = static_cast<float>(ssm::half::from_bits(got));
    const double up = static_cast<float>(ssm::half::from_bits(static_cast<std::uint16_t>(got + 1)));
    const double down = got > 0 ? static_cast<float>(ssm::half::from_bits(static_cast<std::uint16_t>(got - 1))) : -1.0;
    if (std::isinf(g)) continue;
    EXPECT_LE(std::abs(g - x), std::abs(up - x)) << x;
    if (got > 0) {
      EXPECT_LE(std::abs(g - x), std::abs(down - x)) << x;
    }
  }
}

TEST(DType, BFloat16RoundsToNearestEven) {
  EXPECT_EQ(ssm::bfloat16(1.0f).bits, 0x3f80u);
  // 1 + 2^-8 is the midpoint between 1 and 1 + 2^-7: ties to even (1.0)
  EXPECT_EQ(ssm::bfloat16(1.0f + 1.0f / 256).bits, 0x3f80u);
  EXPECT_EQ(ssm::bfloat16(1.0f + 3.0f / 256).bits, 0x3f82u);
  EXPECT_EQ(static_cast<float>(ssm::bfloat16::from_bits(0x4049u)), 3.140625f);
  EXPECT_TRUE(std::isnan(static_cast<float>(ssm::bfloat16(std::nanf("")))));
  for (std::uint32_t b = 0; b < 0x10000u; ++b) {
    if ((b & 0x7f80u) == 0x7f80u && (b & 0x7fu)) continue;  // nan payloads
    const float f = static_cast<float>(ssm::bfloat16::from_bits(static_cast<std::uint16_t>(b)));
    ASSERT_EQ(ssm::bfloat16(f).bits, b);
  }
}

TEST(DType, VisitFloatingRejectsIntegers) {
  EXPECT_EQ(ssm::visit_floating(ssm::DType::f64, "x", [](auto v) { return sizeof(v); }), 8u);
  EXPECT_THROW(ssm::visit_floating(ssm::DType::i32, "x", [](auto v) { return sizeof(v); }), ssm::Error);
}

}  // namespace
