// Element types: DType (the runtime tag a TensorView carries) and the 16-bit float storage types
// ssm::half (IEEE binary16) and ssm::bfloat16, with round-to-nearest-even conversions shared by host
// and device. They are storage types: arithmetic converts to float first (states and sums stay in f32).
#pragma once

#include <complex>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>

#include "ssm/core/error.hpp"
#include "ssm/core/macros.hpp"

namespace ssm {

/// The element types a tensor can hold.
enum class DType : std::uint8_t { f32, f64, f16, bf16, c64, c128, i32, i64, u8 };

namespace detail {
SSM_HOST_DEVICE inline std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
SSM_HOST_DEVICE inline float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace detail

/// IEEE 754 binary16 storage, layout-compatible with CUDA's __half.
struct half {
  std::uint16_t bits = 0;

  half() = default;
  SSM_HOST_DEVICE explicit half(float f) : bits(from_float(f)) {}
  SSM_HOST_DEVICE explicit operator float() const { return to_float(bits); }
  SSM_HOST_DEVICE static half from_bits(std::uint16_t b) {
    half h;
    h.bits = b;
    return h;
  }

  SSM_HOST_DEVICE static std::uint16_t from_float(float f) {
    const std::uint32_t x = detail::float_bits(f);
    const std::uint32_t sign = (x >> 16) & 0x8000u;
    const std::uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) {  // inf or nan
      return static_cast<std::uint16_t>(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u));
    }
    if (absx >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to inf
    if (absx < 0x38800000u) {  // subnormal half (or zero): value = m * 2^-24
      if (absx < 0x33000000u) return static_cast<std::uint16_t>(sign);  // below half of the smallest
      const std::uint32_t exp = absx >> 23;
      const std::uint32_t mant = (absx & 0x7fffffu) | 0x800000u;
      const std::uint32_t shift = 126u - exp;  // 14 + (113 - exp) - ... : bits below the half ulp
      std::uint32_t h = mant >> shift;
      const std::uint32_t rem = mant & ((1u << shift) - 1u);
      const std::uint32_t halfway = 1u << (shift - 1u);
      if (rem > halfway || (rem == halfway && (h & 1u))) ++h;
      return static_cast<std::uint16_t>(sign | h);
    }
    // normal: rebias exponent 127 -> 15, round mantissa 23 -> 10 bits to nearest even
    std::uint32_t h = ((absx - 0x38000000u) >> 13);
    const std::uint32_t rem = absx & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
    return static_cast<std::uint16_t>(sign | h);
  }

  SSM_HOST_DEVICE static float to_float(std::uint16_t h) {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    const std::uint32_t exp = (h >> 10) & 0x1fu;
    std::uint32_t mant = h & 0x3ffu;
    if (exp == 0x1fu) return detail::bits_float(sign | 0x7f800000u | (mant << 13));
    if (exp == 0) {
      if (mant == 0) return detail::bits_float(sign);
      // subnormal: m * 2^-24
      const float v = static_cast<float>(mant) * 5.9604644775390625e-08f;
      return sign ? -v : v;
    }
    return detail::bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
  }
};

/// bfloat16 storage (the upper half of an f32), layout-compatible with CUDA's __nv_bfloat16.
struct bfloat16 {
  std::uint16_t bits = 0;

  bfloat16() = default;
  SSM_HOST_DEVICE explicit bfloat16(float f) : bits(from_float(f)) {}
  SSM_HOST_DEVICE explicit operator float() const { return detail::bits_float(static_cast<std::uint32_t>(bits) << 16); }
  SSM_HOST_DEVICE static bfloat16 from_bits(std::uint16_t b) {
    bfloat16 h;
    h.bits = b;
    return h;
  }
  SSM_HOST_DEVICE static std::uint16_t from_float(float f) {
    const std::uint32_t x = detail::float_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);  // quiet nan
    const std::uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
    return static_cast<std::uint16_t>((x + rounding) >> 16);
  }
};

using complex64 = std::complex<float>;
using complex128 = std::complex<double>;

/// Size of one element in bytes.
constexpr std::size_t size_of(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::f16: return 2;
    case DType::bf16: return 2;
    case DType::c64: return 8;
    case DType::c128: return 16;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::u8: return 1;
  }
  return 0;
}

/// Short name as used in error messages and safetensors: "f32", "bf16", ...
constexpr std::string_view name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::c64: return "c64";
    case DType::c128: return "c128";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::u8: return "u8";
  }
  return "?";
}

constexpr bool is_floating(DType t) {
  return t == DType::f32 || t == DType::f64 || t == DType::f16 || t == DType::bf16;
}
constexpr bool is_complex(DType t) { return t == DType::c64 || t == DType::c128; }
/// The dtype a real input computes in (weights, state, accumulators): f64 for f64 inputs, f32 for f32, f16 and
/// bf16. The run-time twin of ssm::compute_t (ssm/core/scalar.hpp).
constexpr DType compute_dtype(DType input) { return input == DType::f64 ? DType::f64 : DType::f32; }

/// The DType tag of a C++ element type: dtype_of<float>() == DType::f32.
template <class T>
constexpr DType dtype_of() {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_same_v<U, float>) return DType::f32;
  else if constexpr (std::is_same_v<U, double>) return DType::f64;
  else if constexpr (std::is_same_v<U, half>) return DType::f16;
  else if constexpr (std::is_same_v<U, bfloat16>) return DType::bf16;
  else if constexpr (std::is_same_v<U, complex64>) return DType::c64;
  else if constexpr (std::is_same_v<U, complex128>) return DType::c128;
  else if constexpr (std::is_same_v<U, std::int32_t>) return DType::i32;
  else if constexpr (std::is_same_v<U, std::int64_t>) return DType::i64;
  else if constexpr (std::is_same_v<U, std::uint8_t>) return DType::u8;
  else static_assert(sizeof(U) == 0, "ssm::dtype_of: unsupported element type");
}

/// Converts any real element type to float / double (16-bit types through their explicit operator).
template <class T>
SSM_HOST_DEVICE inline float to_float(T x) {
  return static_cast<float>(x);
}
template <class T>
SSM_HOST_DEVICE inline T from_float(float x) {
  return static_cast<T>(x);
}
template <>
SSM_HOST_DEVICE inline half from_float<half>(float x) {
  return half(x);
}
template <>
SSM_HOST_DEVICE inline bfloat16 from_float<bfloat16>(float x) {
  return bfloat16(x);
}

/// Calls f(T{}) with T the C++ type of a floating (real) dtype: f32, f64, f16, bf16.
/// Other dtypes throw ssm::Error naming `what`.
template <class F>
decltype(auto) visit_floating(DType t, const char* what, F&& f) {
  switch (t) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    case DType::f16: return f(half{});
    case DType::bf16: return f(bfloat16{});
    default: fail(what, ": expected a floating dtype (f32, f64, f16, bf16), got ", name(t));
  }
}

}  // namespace ssm
