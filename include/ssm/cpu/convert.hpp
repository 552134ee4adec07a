// Element conversions of the CPU kernels between f32 (or f64) and the 16-bit storage types ssm::half and
// ssm::bfloat16: one vector of 16-bit values loaded as f32 (load_f32: AVX-512 _mm512_cvtph_ps for f16 and a
// 16-bit shift for bf16, the 256-bit forms with AVX2 + F16C, SSE2 unpacking for bf16, ssm::half's scalar
// conversion for f16 otherwise), and row passes in both directions (load_row, store_row). 16-bit -> f32 is exact
// (NaN, infinities, subnormals and signed zeros included); f32 -> 16-bit rounds to nearest even as ssm::half and
// ssm::bfloat16 do (core/dtype.hpp).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "ssm/core/dtype.hpp"
#include "ssm/cpu/simd.hpp"

namespace ssm::cpu {

/// simd::lanes<float> consecutive 16-bit values at p (H = ssm::half or ssm::bfloat16; any alignment) as f32.
template <class H>
SSM_FORCE_INLINE simd::Vec<float> load_16bit_as_f32(const H* p) {
  static_assert(std::is_same_v<H, half> || std::is_same_v<H, bfloat16>, "H is ssm::half or ssm::bfloat16");
#if defined(__AVX512F__)  // maskz forms: the plain ones take an undefined vector, a false -Wuninitialized in GCC 12
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  if constexpr (std::is_same_v<H, half>) {
    return _mm512_maskz_cvtph_ps(0xffff, bits);
  } else {
    const __m512i v = _mm512_maskz_cvtepu16_epi32(0xffff, bits);
    return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xffff, v, 16));
  }
#elif defined(__AVX2__)
  if constexpr (std::is_same_v<H, bfloat16>) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  }
#if defined(__F16C__)
  if constexpr (std::is_same_v<H, half>) return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#endif
#elif defined(__SSE2__)
  if constexpr (std::is_same_v<H, bfloat16>) {
    const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return _mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), v));
  }
#endif
  // f16 without a conversion instruction (AVX2 without F16C, SSE2) or no vectors: the scalar conversion.
  float tmp[simd::lanes<float>];
  for (int i = 0; i < simd::lanes<float>; ++i) tmp[i] = static_cast<float>(p[i]);
  return simd::load(tmp);
}

/// simd::lanes<float> consecutive values at p as f32 (H = float, ssm::half or ssm::bfloat16; any alignment): the
/// weight load of kernels that read W in its stored dtype.
template <class H>
SSM_FORCE_INLINE simd::Vec<float> load_f32(const H* p) {
  if constexpr (std::is_same_v<H, float>) return simd::load(p);
  else return load_16bit_as_f32(p);
}

/// dst[0, len) = src[0, len) converted from In to T (any of float, double, ssm::half, ssm::bfloat16 to float or
/// double; 16-bit to f32 a vector at a time).
template <class In, class T>
inline void load_row(const In* SSM_RESTRICT src, std::int64_t len, T* SSM_RESTRICT dst) {
  if constexpr (std::is_same_v<In, T>) {
    std::memcpy(dst, src, static_cast<std::size_t>(len) * sizeof(T));
  } else if constexpr (std::is_same_v<In, half> || std::is_same_v<In, bfloat16>) {
    std::int64_t i = 0;
    if constexpr (std::is_same_v<T, float>)
      for (; i + simd::lanes<float> <= len; i += simd::lanes<float>) simd::store(dst + i, load_f32(src + i));
    for (; i < len; ++i) dst[i] = static_cast<T>(static_cast<float>(src[i]));
  } else {
    for (std::int64_t i = 0; i < len; ++i) dst[i] = static_cast<T>(src[i]);
  }
}

/// dst[0, len) = src[0, len) converted from T to In (rounded to nearest even for a 16-bit In). Same types: streaming
/// stores when dst is aligned to simd::kBytes (the output is written once and not read back by the caller).
template <class T, class In>
inline void store_row(const T* SSM_RESTRICT src, std::int64_t len, In* SSM_RESTRICT dst) {
  if constexpr (std::is_same_v<In, T>) {
    std::int64_t i = 0;
    constexpr int W = simd::lanes<T>;
    if (reinterpret_cast<std::uintptr_t>(dst) % simd::kBytes == 0) {
      for (; i + W <= len; i += W) simd::store_stream(dst + i, simd::load(src + i));
    }
    for (; i < len; ++i) dst[i] = src[i];
  } else if constexpr (std::is_same_v<In, half>) {
    std::int64_t i = 0;
#if defined(__F16C__)
    if constexpr (std::is_same_v<T, float>)
      for (; i + 8 <= len; i += 8) {
        __m256 f;
        std::memcpy(&f, src + i, sizeof f);
        const __m128i h = _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        std::memcpy(static_cast<void*>(dst + i), &h, sizeof h);
      }
#endif
    for (; i < len; ++i) dst[i] = half(static_cast<float>(src[i]));
  } else if constexpr (std::is_same_v<In, bfloat16>) {
    for (std::int64_t i = 0; i < len; ++i) dst[i] = bfloat16(static_cast<float>(src[i]));
  } else {
    for (std::int64_t i = 0; i < len; ++i) dst[i] = static_cast<In>(src[i]);
  }
}

}  // namespace ssm::cpu
