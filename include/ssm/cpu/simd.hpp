// Portable SIMD vectors for the optimized CPU kernels: GCC/Clang vector extensions whose width is the
// target's widest (64 bytes with AVX-512F, 32 with AVX2, 16 otherwise: SSE2 on x86-64, NEON, or plain
// scalar code where the compiler has no vectors), plus FMA, a fast exp2 and a softplus/log1p in vectors.
// Compile-time dispatch on __AVX512F__ / __AVX2__ / generic: the code is correct for every target.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) || defined(__AVX2__) || defined(__FMA__) || defined(__SSE2__)
#include <immintrin.h>
#endif

#include "ssm/core/macros.hpp"
#include "ssm/core/scalar.hpp"

namespace ssm::cpu::simd {

#if defined(__AVX512F__)
inline constexpr int kBytes = 64;
inline constexpr const char* kLevel = "avx512";
#elif defined(__AVX2__)
inline constexpr int kBytes = 32;
inline constexpr const char* kLevel = "avx2";
#else
inline constexpr int kBytes = 16;
inline constexpr const char* kLevel = "generic";
#endif

template <class T>
struct VecTraits;
template <>
struct VecTraits<float> {
  typedef float type __attribute__((vector_size(kBytes)));
  typedef std::int32_t itype __attribute__((vector_size(kBytes)));
  using int_t = std::int32_t;
};
template <>
struct VecTraits<double> {
  typedef double type __attribute__((vector_size(kBytes)));
  typedef std::int64_t itype __attribute__((vector_size(kBytes)));
  using int_t = std::int64_t;
};

/// A vector of T with the target's widest register; `lanes<T>` elements.
template <class T>
using Vec = typename VecTraits<T>::type;
template <class T>
using IVec = typename VecTraits<T>::itype;
template <class T>
inline constexpr int lanes = kBytes / static_cast<int>(sizeof(T));
/// Vector registers of the target: 32 with AVX-512, 16 with AVX2 / SSE2. The scan kernels size their groups of
/// independent state chains by it (the chains, their constants and exp2's stay in registers).
inline constexpr int kRegisters = kBytes == 64 ? 32 : 16;

template <class T>
SSM_FORCE_INLINE Vec<T> broadcast(T x) {
  return x - Vec<T>{};  // x - 0 == x for every x (also -0), so this folds to a plain broadcast; 0 + x would not
}
template <class T>
SSM_FORCE_INLINE Vec<T> load(const T* p) {  // any alignment
  Vec<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class T>
SSM_FORCE_INLINE void store(T* p, Vec<T> v) {  // any alignment
  std::memcpy(p, &v, sizeof v);
}
/// Non-temporal store (bypasses the caches) when the target has one; p must be kBytes-aligned.
SSM_FORCE_INLINE void store_stream(float* p, Vec<float> v) {
#if defined(__AVX512F__)
  _mm512_stream_ps(p, v);
#elif defined(__AVX2__)
  _mm256_stream_ps(p, v);
#elif defined(__SSE2__)
  _mm_stream_ps(p, v);
#else
  store(p, v);
#endif
}
SSM_FORCE_INLINE void store_stream(double* p, Vec<double> v) {
#if defined(__AVX512F__)
  _mm512_stream_pd(p, v);
#elif defined(__AVX2__)
  _mm256_stream_pd(p, v);
#elif defined(__SSE2__)
  _mm_stream_pd(p, v);
#else
  store(p, v);
#endif
}
/// Orders the non-temporal stores before what follows (call once a thread's streaming output is done).
SSM_FORCE_INLINE void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}
SSM_FORCE_INLINE void prefetch(const void* p) {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(p, 0, 3);
#else
  (void)p;
#endif
}

/// Sum of the lanes of a vector as a tree (depth log2(lanes), not a serial chain of adds); call as hsum<T>(v).
template <class T>
SSM_FORCE_INLINE T hsum(Vec<T> v) {
  constexpr int L = lanes<T>;
  T x[L];
  std::memcpy(x, &v, sizeof v);
  for (int w = L / 2; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) x[j] += x[j + w];
  return x[0];
}

/// a * b + c, fused where the target has FMA.
SSM_FORCE_INLINE Vec<float> fma(Vec<float> a, Vec<float> b, Vec<float> c) {
#if defined(__AVX512F__)
  return _mm512_fmadd_ps(a, b, c);
#elif defined(__AVX2__) && defined(__FMA__)
  return _mm256_fmadd_ps(a, b, c);
#else
  return a * b + c;
#endif
}
SSM_FORCE_INLINE Vec<double> fma(Vec<double> a, Vec<double> b, Vec<double> c) {
#if defined(__AVX512F__)
  return _mm512_fmadd_pd(a, b, c);
#elif defined(__AVX2__) && defined(__FMA__)
  return _mm256_fmadd_pd(a, b, c);
#else
  return a * b + c;
#endif
}

template <class T>
SSM_FORCE_INLINE Vec<T> select(IVec<T> mask, Vec<T> a, Vec<T> b) {  // mask lanes all-ones → a
  return mask ? a : b;
}
/// a > b ? a : b and a < b ? a : b per lane (so b where either is NaN), as one max / min instruction: the
/// vector-extension form compiles to a compare and a blend on AVX2 (measured: 4 instructions instead of 2 in
/// every exp2 of the scan's inner loop).
template <class T>
SSM_FORCE_INLINE Vec<T> vmax(Vec<T> a, Vec<T> b) {
#if defined(__AVX512F__)  // maskz forms: the plain ones take _mm512_undefined_ps(), a false -Wuninitialized in GCC 12
  if constexpr (sizeof(T) == 4) return _mm512_maskz_max_ps(static_cast<__mmask16>(0xFFFF), a, b);
  else return _mm512_maskz_max_pd(static_cast<__mmask8>(0xFF), a, b);
#elif defined(__AVX2__)
  if constexpr (sizeof(T) == 4) return _mm256_max_ps(a, b);
  else return _mm256_max_pd(a, b);
#elif defined(__SSE2__)
  if constexpr (sizeof(T) == 4) return _mm_max_ps(a, b);
  else return _mm_max_pd(a, b);
#else
  return a > b ? a : b;
#endif
}
template <class T>
SSM_FORCE_INLINE Vec<T> vmin(Vec<T> a, Vec<T> b) {
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 4) return _mm512_maskz_min_ps(static_cast<__mmask16>(0xFFFF), a, b);
  else return _mm512_maskz_min_pd(static_cast<__mmask8>(0xFF), a, b);
#elif defined(__AVX2__)
  if constexpr (sizeof(T) == 4) return _mm256_min_ps(a, b);
  else return _mm256_min_pd(a, b);
#elif defined(__SSE2__)
  if constexpr (sizeof(T) == 4) return _mm_min_ps(a, b);
  else return _mm_min_pd(a, b);
#else
  return a < b ? a : b;
#endif
}

namespace detail {
#if defined(__GNUC__) && !defined(__clang__)
/// Permute indices of transpose stage S (see transpose): element e of block m = e / S of the two output
/// rows: even m keeps row i / takes row i+S, odd m the reverse.
template <class T, int S, bool Hi>
struct StageMask {
  static constexpr std::array<typename VecTraits<T>::int_t, lanes<T>> make() {
    std::array<typename VecTraits<T>::int_t, lanes<T>> m{};
    constexpr int W = lanes<T>;
    for (int e = 0; e < W; ++e) {
      const bool odd = (e / S) % 2 == 1;
      m[static_cast<std::size_t>(e)] = Hi ? (odd ? W + e : e + S) : (odd ? W + e - S : e);
    }
    return m;
  }
  static constexpr auto values = make();
};
template <class T, int S>
SSM_FORCE_INLINE void transpose_stage(Vec<T> (&rows)[lanes<T>]) {
  IVec<T> lo, hi;
  std::memcpy(&lo, StageMask<T, S, false>::values.data(), sizeof lo);
  std::memcpy(&hi, StageMask<T, S, true>::values.data(), sizeof hi);
  for (int i = 0; i < lanes<T>; ++i) {
    if (i & S) continue;
    const Vec<T> a = rows[i], b = rows[i + S];
    rows[i] = __builtin_shuffle(a, b, lo);
    rows[i + S] = __builtin_shuffle(a, b, hi);
  }
  if constexpr (S > 1) transpose_stage<T, S / 2>(rows);
}
#endif
}  // namespace detail

namespace detail {
#if defined(__AVX512F__)
/// 16 x 16 f32: 32-bit and 64-bit unpacks within 128-bit lanes, then two stages of 128-bit lane shuffles (one
/// shuffle per row per stage, as the butterfly, but in-lane unpacks and vshuff32x4 instead of vpermt2ps: Zen 4,
/// load + transpose + store, 0.78 ns per row against 1.39).
SSM_FORCE_INLINE void transpose_f32x16(Vec<float> (&r)[16]) {
  __m512 t[16], s[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4)
    for (int j = 0; j < 2; ++j) {
      const __m512d a = _mm512_castps_pd(t[i + j]), b = _mm512_castps_pd(t[i + j + 2]);
      s[i + 2 * j] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
      s[i + 2 * j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    }
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 16; j += 8) {
      t[i + j] = _mm512_shuffle_f32x4(s[i + j], s[i + j + 4], 0x88);
      t[i + j + 4] = _mm512_shuffle_f32x4(s[i + j], s[i + j + 4], 0xdd);
    }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
  }
}
#elif defined(__AVX2__)
/// 8 x 8 f32: unpacks and shufps within 128-bit lanes, then vperm2f128 (Zen 4: 0.31 ns per row against 0.39).
SSM_FORCE_INLINE void transpose_f32x8(Vec<float> (&r)[8]) {
  __m256 t[8], s[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4)
    for (int j = 0; j < 2; ++j) {
      s[i + 2 * j] = _mm256_shuffle_ps(t[i + j], t[i + j + 2], 0x44);
      s[i + 2 * j + 1] = _mm256_shuffle_ps(t[i + j], t[i + j + 2], 0xee);
    }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
  }
}
#endif
}  // namespace detail

/// In-register transpose of a lanes x lanes block: rows[i][j] <-> rows[j][i]. f32 on AVX-512 / AVX2: the
/// unpack-based kernels above; otherwise log2(lanes) butterfly stages, stage S swapping the off-diagonal S x S
/// blocks of every 2S x 2S block (one two-source permute per row).
template <class T>
SSM_FORCE_INLINE void transpose(Vec<T> (&rows)[lanes<T>]) {
  constexpr int W = lanes<T>;
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 4) {
    detail::transpose_f32x16(rows);
    return;
  }
#elif defined(__AVX2__)
  if constexpr (sizeof(T) == 4) {
    detail::transpose_f32x8(rows);
    return;
  }
#endif
#if defined(__GNUC__) && !defined(__clang__)
  detail::transpose_stage<T, W / 2>(rows);
#else
  T m[W][W];
  for (int i = 0; i < W; ++i) store(m[i], rows[i]);
  for (int i = 0; i < W; ++i) {
    T col[W];
    for (int j = 0; j < W; ++j) col[j] = m[j][i];
    rows[i] = load(col);
  }
#endif
}

// ---- exp2 ----------------------------------------------------------------------------------------------
// 2^x = 2^k * 2^r with k = round(x), r = x - k in [-1/2, 1/2], and 2^r ~ p(r) = 1 + r q(r). Constraining
// p(0) = 1 makes exp2(0) exact and the error of a long product of decays near 1 about ten times smaller.
//  f32: q of degree 4, coefficients fitted for minimal relative error on [-1/2, 1/2] (near-minimax, iterated
//       weighted least squares): |p(r) / 2^r - 1| <= 9.2e-8 with exact arithmetic, <= 1.9e-7 evaluated in
//       f32 (Horner); so |exp2(x) / 2^x - 1| <= 2.5e-7 for normal results (tested over [-120, 120]).
//  f64: Taylor series of degree 12 (error (ln2 / 2)^13 / 13! = 1.7e-16): |rel error| <= 4e-16 in f64 with FMA,
//       <= 6e-16 without (the generic target rounds each product and sum; 4.7e-16 measured).
// Underflow: AVX-512 scales with vscalefps, so results go through the subnormals to 0 exactly like 2^x;
// elsewhere x is clamped to [-126, 127] (f64: [-1022, 1023]), i.e. results below 2^-126 read 2^-126.
namespace detail {
template <class T>
SSM_FORCE_INLINE Vec<T> exp2_poly(Vec<T> r) {
  if constexpr (sizeof(T) == 4) {
    Vec<T> p = broadcast<T>(0.001326472731307149f);
    p = fma(p, r, broadcast<T>(0.009671512991189957f));
    p = fma(p, r, broadcast<T>(0.05550733581185341f));
    p = fma(p, r, broadcast<T>(0.24022242426872253f));
    p = fma(p, r, broadcast<T>(0.6931470036506653f));
    return fma(p, r, broadcast<T>(1.0f));
  } else {
    // ln2^k / k!, k = 0 .. 12
    constexpr double c[13] = {1.0,
                              0.6931471805599453,
                              0.2402265069591007,
                              0.055504108664821576,
                              0.009618129107628477,
                              0.0013333558146428441,
                              0.00015403530393381606,
                              1.5252733804059838e-05,
                              1.3215486790144305e-06,
                              1.0178086009239696e-07,
                              7.054911620801121e-09,
                              4.44553827187081e-10,
                              2.5678435993488196e-11};
    Vec<T> q = broadcast<T>(c[12]);
    for (int k = 11; k >= 0; --k) q = fma(q, r, broadcast<T>(c[k]));
    return q;
  }
}
}  // namespace detail

/// 2^x per lane (error bound above).
SSM_FORCE_INLINE Vec<float> exp2(Vec<float> x) {
#if defined(__AVX512DQ__)
  // vreduceps gives r = x - round(x) in one instruction (0 for |x| >= 2^23, where x is an integer)
  const Vec<float> r = _mm512_maskz_reduce_ps(static_cast<__mmask16>(0xFFFF), x, _MM_FROUND_NO_EXC);
  const Vec<float> p = detail::exp2_poly<float>(r);
  return _mm512_maskz_scalef_ps(static_cast<__mmask16>(0xFFFF), p, x - r);
#elif defined(__AVX512F__)
  const Vec<float> k = _mm512_maskz_roundscale_ps(static_cast<__mmask16>(0xFFFF), x,
                                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const Vec<float> p = detail::exp2_poly<float>(x - k);
  return _mm512_maskz_scalef_ps(static_cast<__mmask16>(0xFFFF), p, k);
#else
  x = vmin<float>(vmax<float>(x, broadcast(-126.0f)), broadcast(127.0f));
  const Vec<float> magic = broadcast(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const Vec<float> t = x + magic;
  const Vec<float> k = t - magic;
  const Vec<float> p = detail::exp2_poly<float>(x - k);
  IVec<float> ti, pi;
  std::memcpy(&ti, &t, sizeof ti);
  std::memcpy(&pi, &p, sizeof pi);
  pi += ti << 23;  // the low mantissa bits of t hold k: add k to the exponent of p
  Vec<float> out;
  std::memcpy(&out, &pi, sizeof out);
  return out;
#endif
}
SSM_FORCE_INLINE Vec<double> exp2(Vec<double> x) {
#if defined(__AVX512DQ__)
  const Vec<double> r = _mm512_maskz_reduce_pd(static_cast<__mmask8>(0xFF), x, _MM_FROUND_NO_EXC);
  const Vec<double> p = detail::exp2_poly<double>(r);
  return _mm512_maskz_scalef_pd(static_cast<__mmask8>(0xFF), p, x - r);
#elif defined(__AVX512F__)
  const Vec<double> k = _mm512_maskz_roundscale_pd(static_cast<__mmask8>(0xFF), x,
                                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const Vec<double> p = detail::exp2_poly<double>(x - k);
  return _mm512_maskz_scalef_pd(static_cast<__mmask8>(0xFF), p, k);
#else
  x = vmin<double>(vmax<double>(x, broadcast(-1022.0)), broadcast(1023.0));
  const Vec<double> magic = broadcast(6755399441055744.0);  // 1.5 * 2^52
  const Vec<double> t = x + magic;
  const Vec<double> k = t - magic;
  const Vec<double> p = detail::exp2_poly<double>(x - k);
  IVec<double> ti, pi;
  std::memcpy(&ti, &t, sizeof ti);
  std::memcpy(&pi, &p, sizeof pi);
  pi += ti << 52;
  Vec<double> out;
  std::memcpy(&out, &pi, sizeof out);
  return out;
#endif
}

/// 2^x per lane for the decays of a scan (x = Delta A log2(e) <= 0 in practice; any x is accepted). AVX-512 f32:
/// r = x - floor(x) in [0, 1) by vreduceps and vscalefps, which floors its exponent argument itself, so no
/// subtraction is needed (7 operations instead of 8). p(r) = 1 + r q(r), q of degree 4, with p(0) = 1 and
/// p(1) = 2 exact and fitted for minimal |p(r) / 2^r - 1| / (1.1 - r) on [0, 1] (iterated weighted least
/// squares): the error of a decay 2^x with x -> 0- (r -> 1) vanishes like |x|, so a product of many decays near
/// 1 keeps its accuracy. |rel error| <= 2.1e-7 in exact arithmetic (<= 1.6e-6 |x| for x in (-1, 0)), plus the
/// rounding of r = 1 + x (2^-25 absolute) and of p: <= 3e-7 measured (tests). Elsewhere: exp2.
SSM_FORCE_INLINE Vec<float> exp2_decay(Vec<float> x) {
#if defined(__AVX512DQ__)
  const Vec<float> r = _mm512_maskz_reduce_ps(static_cast<__mmask16>(0xFFFF), x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  Vec<float> p = broadcast<float>(0.0019336557281493874f);
  p = fma(p, r, broadcast<float>(0.008855900145536624f));
  p = fma(p, r, broadcast<float>(0.05593417678021343f));
  p = fma(p, r, broadcast<float>(0.24012051932319142f));
  p = fma(p, r, broadcast<float>(0.6931557480229091f));
  p = fma(p, r, broadcast<float>(1.0f));
  return _mm512_maskz_scalef_ps(static_cast<__mmask16>(0xFFFF), p, x);
#else
  return exp2(x);
#endif
}
SSM_FORCE_INLINE Vec<double> exp2_decay(Vec<double> x) { return exp2(x); }

template <class T>
inline constexpr T kLog2e = scalar::kLog2e<T>;

/// e^x per lane (through exp2; the rounding of x log2(e) adds |x| ulp-size relative error).
template <class T>
SSM_FORCE_INLINE Vec<T> exp(Vec<T> x) {
  return exp2(x * kLog2e<T>);
}

/// 1 / x per lane. AVX-512 f32: the 14-bit estimate and one Newton step (relative error ~2^-27, i.e.
/// correctly rounded or one ulp off), 3 cheap operations instead of a slow division; elsewhere a division. At x = ±inf
/// and ±0 the Newton step is inf · 0 = NaN, so those lanes keep the estimate, which is exact there (±0, ±inf): silu
/// and the gate's sigmoid take 1 / (1 + e^-z) with e^-z = inf for z below about -88.7.
template <class T>
SSM_FORCE_INLINE Vec<T> reciprocal(Vec<T> x) {
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 4) {
    const Vec<T> r = _mm512_maskz_rcp14_ps(static_cast<__mmask16>(0xFFFF), x);
    const Vec<T> refined = r * (T(2) - x * r);  // Newton: r (2 - x r)
    return select<T>(refined == refined, refined, r);
  }
#endif
  return T(1) / x;
}

/// log1p(w) for w in [0, 1]: 2 atanh(s) with s = w / (2 + w) in [0, 1/3], odd series in s (relative
/// error below 3e-8 in f32 with 8 terms, 2e-17 in f64 with 17 terms, before rounding).
template <class T>
SSM_FORCE_INLINE Vec<T> log1p_unit(Vec<T> w) {
  const Vec<T> s = w * reciprocal<T>(w + T(2));
  const Vec<T> s2 = s * s;
  constexpr int terms = sizeof(T) == 4 ? 8 : 17;
  Vec<T> q = broadcast<T>(T(1) / T(2 * terms - 1));
  for (int k = terms - 2; k >= 0; --k) q = fma(q, s2, broadcast<T>(T(1) / T(2 * k + 1)));
  return T(2) * s * q;
}

/// log1p(w) for w in [0, 1], f32: w q(w) with q of degree 8 fitted for minimal relative error (iterated
/// weighted least squares on [0, 1]): |rel error| <= 3.0e-8 with exact arithmetic, <= 2.5e-7 evaluated in
/// f32 (Horner, with or without FMA; checked against log1p on 2^20 points in tests). 9 FMA-class operations, no division.
SSM_FORCE_INLINE Vec<float> log1p_unit_poly(Vec<float> w) {
  Vec<float> q = broadcast<float>(0.005232073366641998f);
  q = fma(q, w, broadcast<float>(-0.029502347111701965f));
  q = fma(q, w, broadcast<float>(0.07822048664093018f));
  q = fma(q, w, broadcast<float>(-0.13662706315517426f));
  q = fma(q, w, broadcast<float>(0.19105710089206696f));
  q = fma(q, w, broadcast<float>(-0.24842892587184906f));
  q = fma(q, w, broadcast<float>(0.33319082856178284f));
  q = fma(q, w, broadcast<float>(-0.4999949336051941f));
  q = fma(q, w, broadcast<float>(0.9999999403953552f));
  return q * w;
}

/// softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^-|x|), and x itself for x > 20 (kSoftplusThreshold, torch's /
/// selective_scan_ref). f32: e^-|x| = 2^-|x log2(e)| and the log1p polynomial above (about 22 operations);
/// f64: the atanh series (error ~1e-16). NaN in, NaN out, as scalar::softplus (max and min would drop it).
template <class T>
SSM_FORCE_INLINE Vec<T> softplus(Vec<T> x) {
  if constexpr (sizeof(T) == 4) {
    const Vec<T> xl = x * kLog2e<T>;
    const Vec<T> w = exp2(vmin<T>(xl, -xl));  // 2^-|x log2 e| = e^-|x|, in (0, 1]
    const Vec<T> sp = vmax<T>(x, broadcast<T>(0)) + log1p_unit_poly(w);
    // x above the threshold, and NaN where x is NaN (sp is finite there: the max and min above drop NaN)
    return select<T>(x <= scalar::kSoftplusThreshold<T>, sp, x);
  } else {
    const Vec<T> ax = vmax<T>(x, -x);
    const Vec<T> w = exp<T>(-ax);  // in (0, 1]
    const Vec<T> sp = vmax<T>(x, broadcast<T>(0)) + log1p_unit<T>(w);
    return select<T>(x <= scalar::kSoftplusThreshold<T>, sp, x);
  }
}

/// silu(z) = z / (1 + e^-z).
template <class T>
SSM_FORCE_INLINE Vec<T> silu(Vec<T> z) {
  return z * reciprocal<T>(T(1) + exp<T>(-z));
}

}  // namespace ssm::cpu::simd
