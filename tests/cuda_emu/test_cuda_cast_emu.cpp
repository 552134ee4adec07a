// The f32 -> f16 / bf16 cast kernel (cuda/kernels/cast.cuh) under the emulation, against a reference written here
// from the definition of round to nearest even (IEEE 754 §4.3.1): the two representable neighbours of |x| found by
// bisection over the target's bit patterns decoded exactly in double, the nearer one taken, the even one on a tie,
// overflow to infinity at the midpoint above the largest finite value. It shares nothing with ssm::from_float, which
// the kernel's store_float is under the emulation (and which the GPU replaces with __float2half_rn /
// __float2bfloat16_rn): a comparison with from_float compared the function with itself.
// Values: every rounding midpoint of the target format and its float neighbours (ties, subnormals, the overflow
// threshold), exhaustive sweeps of the bits that rounding depends on at chosen exponents, random bit patterns
// (NaN payloads included), ±0, ±inf; with a grid smaller than the data (the grid-stride loop) and a ragged last block.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cast.cuh"

namespace {

float bits_to_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
std::uint32_t float_to_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// A binary format of 1 + E + M bits (f16: E = 5, M = 10; bf16: E = 8, M = 7).
template <int E, int M>
struct Format {
  static constexpr std::uint32_t kInf = ((1u << E) - 1u) << M;  // the infinity pattern (sign clear)
  static constexpr std::uint32_t kSign = 1u << (E + M);

  // The exact value of a non-negative pattern in [0, kInf]. kInf decodes as 2^(emax + 1), the next step above the
  // largest finite value: rounding to nearest even with that step is exactly IEEE 754's overflow rule (|x| at or
  // above the midpoint between the largest finite value and 2^(emax + 1) goes to infinity).
  static double decode(std::uint32_t bits) {
    const int bias = (1 << (E - 1)) - 1;
    const auto exp = static_cast<int>(bits >> M);
    const std::uint32_t mant = bits & ((1u << M) - 1u);
    if (exp == 0) return std::ldexp(static_cast<double>(mant), 1 - bias - M);  // subnormal or zero
    return std::ldexp(static_cast<double>((1u << M) | mant), exp - bias - M);
  }

  // Round to nearest even of x. A NaN gives some NaN (the payload is not specified: only NaN-ness is checked).
  static std::uint16_t round(float x) {
    const std::uint32_t sign = std::signbit(x) ? kSign : 0u;
    if (std::isnan(x)) return static_cast<std::uint16_t>(kInf | 1u);
    const double a = std::fabs(static_cast<double>(x));  // exact
    if (a >= decode(kInf)) return static_cast<std::uint16_t>(sign | kInf);
    std::uint32_t lo = 0, hi = kInf;  // decode(lo) <= a < decode(hi)
    while (hi - lo > 1) {
      const std::uint32_t mid = lo + (hi - lo) / 2;
      (decode(mid) <= a ? lo : hi) = mid;
    }
    // Both differences are exact in double: a has 24 significant bits, the neighbours fewer, at most 2^8 apart in
    // scale (or one of them 0).
    const double below = a - decode(lo), above = decode(hi) - a;
    const std::uint32_t r = below < above ? lo : above < below ? hi : (lo % 2 == 0 ? lo : hi);
    return static_cast<std::uint16_t>(sign | r);  // r == kInf: rounded up to infinity
  }

  static bool is_nan(std::uint16_t h) { return (h & kInf) == kInf && (h & ((1u << M) - 1u)) != 0; }
};

using F16 = Format<5, 10>;
using BF16 = Format<8, 7>;

template <class Out>
using FormatOf = std::conditional_t<std::is_same_v<Out, ssm::half>, F16, BF16>;

// The reference itself, on values whose results are known by hand, so that a wrong reference cannot agree with a
// wrong kernel.
TEST(CudaCastEmu, ReferenceOnKnownValues) {
  EXPECT_EQ(F16::round(1.0f), 0x3c00);
  EXPECT_EQ(F16::round(-2.0f), 0xc000);
  EXPECT_EQ(F16::round(65504.0f), 0x7bff);                                    // the largest finite half
  EXPECT_EQ(F16::round(65519.996f), 0x7bff);                                  // just below the overflow midpoint
  EXPECT_EQ(F16::round(65520.0f), 0x7c00);                                    // the midpoint: to inf (even)
  EXPECT_EQ(F16::round(1.0f + std::ldexp(1.0f, -11)), 0x3c00);                // tie, even below
  EXPECT_EQ(F16::round(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);            // tie, even above
  EXPECT_EQ(F16::round(std::ldexp(1.0f, -24)), 0x0001);                       // the smallest subnormal
  EXPECT_EQ(F16::round(std::ldexp(1.0f, -25)), 0x0000);                       // half of it: tie to 0
  EXPECT_EQ(F16::round(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);  // just above the tie
  EXPECT_EQ(F16::round(-0.0f), 0x8000);
  EXPECT_EQ(F16::round(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_EQ(BF16::round(1.0f), 0x3f80);
  EXPECT_EQ(BF16::round(bits_to_float(0x3f808000u)), 0x3f80);  // tie, even below
  EXPECT_EQ(BF16::round(bits_to_float(0x3f818000u)), 0x3f82);  // tie, even above
  EXPECT_EQ(BF16::round(bits_to_float(0x3f808001u)), 0x3f81);
  EXPECT_EQ(BF16::round(bits_to_float(0x00000001u)), 0x0000);  // the smallest f32 subnormal
  EXPECT_EQ(BF16::round(bits_to_float(0x00008000u)), 0x0000);  // a subnormal tie, even below
  EXPECT_EQ(BF16::round(bits_to_float(0x00018000u)), 0x0002);
  EXPECT_EQ(BF16::round(std::numeric_limits<float>::max()), 0x7f80);  // above the overflow midpoint
  EXPECT_EQ(BF16::round(bits_to_float(0x7f7f7fffu)), 0x7f7f);
  EXPECT_EQ(BF16::round(-0.0f), 0x8000);
  EXPECT_TRUE(F16::is_nan(F16::round(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(BF16::is_nan(BF16::round(bits_to_float(0x7f800001u))));
}

// The inputs, both signs of each.
template <class Fmt>
std::vector<float> inputs(const std::vector<std::uint32_t>& sweep_exponents, int low_bits) {
  std::vector<float> v = {0.0f,
                          1.0f,
                          -2.5f,
                          1e9f,
                          6e-8f,
                          1e-40f,
                          std::numeric_limits<float>::max(),
                          std::numeric_limits<float>::min(),
                          std::numeric_limits<float>::denorm_min(),
                          std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::quiet_NaN(),
                          std::numeric_limits<float>::signaling_NaN(),
                          bits_to_float(0x7f800001u),   // a NaN whose payload is below the bits a 16-bit type keeps
                          bits_to_float(0x7fc00000u)};  // the canonical f32 NaN
  // Every positive pattern of the target below infinity: itself, the midpoint to the next, and the floats on either
  // side of the midpoint (all exactly representable in f32: the midpoints need M + 2 significant bits).
  for (std::uint32_t p = 0; p < Fmt::kInf; ++p) {
    const auto mid = static_cast<float>((Fmt::decode(p) + Fmt::decode(p + 1)) / 2);
    v.push_back(static_cast<float>(Fmt::decode(p)));
    v.push_back(mid);
    v.push_back(std::nextafter(mid, 0.0f));
    v.push_back(std::nextafter(mid, std::numeric_limits<float>::infinity()));
  }
  // Exhaustive over the low f32 bits rounding depends on (those below the target's last bit, and that bit) at the
  // given f32 exponents, the higher mantissa bits random.
  std::mt19937 rng(7);
  for (const std::uint32_t e : sweep_exponents) {
    const std::uint32_t high = (e << 23) | (static_cast<std::uint32_t>(rng()) & 0x7fffffu & ~((1u << low_bits) - 1u));
    for (std::uint32_t low = 0; low < (1u << low_bits); ++low) v.push_back(bits_to_float(high | low));
  }
  // Random bit patterns: every exponent, NaN payloads.
  for (int i = 0; i < 20000; ++i) v.push_back(bits_to_float(static_cast<std::uint32_t>(rng())));
  const std::size_t n = v.size();
  for (std::size_t i = 0; i < n; ++i) v.push_back(-v[i]);
  return v;
}

template <class Out>
void check_cast(const std::vector<float>& src) {
  using Fmt = FormatOf<Out>;
  std::vector<std::uint16_t> want(src.size());
  for (std::size_t i = 0; i < src.size(); ++i) want[i] = Fmt::round(src[i]);
  std::vector<Out> dst(src.size());
  // Every value through a grid of 3 blocks (the grid-stride loop); the first 50001 (a ragged last block) through
  // the launcher's grid, one element per thread. (The emulation's cost is per thread: one thread per value of all
  // ~1M would take seconds, under the sanitizers many.)
  const std::int64_t all = static_cast<std::int64_t>(src.size()), part = std::min<std::int64_t>(all, 50001);
  for (const auto& [blocks, n] : {std::pair{3u, all}, std::pair{ssm::kernels::cast_blocks(part), part}}) {
    SCOPED_TRACE("blocks " + std::to_string(blocks) + ", elements " + std::to_string(n));
    std::fill(dst.begin(), dst.end(), Out::from_bits(0x5555));
    ssm::emu::LaunchConfig cfg{ssm::emu::dim3(blocks), ssm::emu::dim3(ssm::kernels::kCastThreads), ssm::emu::Order::random, 5};
    auto report = ssm::emu::launch(cfg, ssm::kernels::cast_from_f32_kernel<Out>, static_cast<const float*>(src.data()),
                                   dst.data(), n);
    ASSERT_TRUE(report.ok()) << report.summary();
    int failures = 0;
    for (std::size_t i = 0; i < src.size() && failures < 10; ++i) {
      if (static_cast<std::int64_t>(i) >= n) {  // beyond the launch: untouched
        if (dst[i].bits != 0x5555) {
          ++failures;
          ADD_FAILURE() << "element " << i << " written beyond n = " << n;
        }
        continue;
      }
      const std::uint16_t got = dst[i].bits;
      const bool ok = Fmt::is_nan(want[i]) ? Fmt::is_nan(got) : got == want[i];
      if (!ok) {
        ++failures;
        ADD_FAILURE() << "element " << i << ": f32 0x" << std::hex << float_to_bits(src[i]) << " (" << std::dec
                      << src[i] << ") gave 0x" << std::hex << got << ", round to nearest even is 0x" << want[i];
      }
    }
  }
}

// f16: the low 14 bits of f32 (the 13 below the half's last bit, and that bit) at the f32 exponents where halves
// change regime: 2^-26 and 2^-25 (rounding to zero or to the smallest subnormal), 2^-24 and 2^-15 (subnormals, the
// shift depending on the exponent), 2^-14 (the smallest normals), 2^0, and 2^15 (the largest finite, overflow).
// ~0.5M values.
TEST(CudaCastEmu, F32ToF16RoundsToNearestEven) {
  check_cast<ssm::half>(inputs<F16>({127 - 26, 127 - 25, 127 - 24, 127 - 15, 127 - 14, 127, 127 + 15}, 14));
}

// bf16: the low 17 bits (the 16 below the last bit, and that bit) at f32 exponent fields 0 (subnormals), 127 and 254
// (the largest finite, overflow). ~0.9M values.
TEST(CudaCastEmu, F32ToBf16RoundsToNearestEven) { check_cast<ssm::bfloat16>(inputs<BF16>({0, 127, 254}, 17)); }

}  // namespace
