// Rotary position embedding (RoFormer, Su et al. 2021; the formulas in core/params/dense.hpp's RotaryParams): one
// thread per (token, pair i) computes the pair's cosine and sine in double once, rounds them to T, and rotates pair i
// of every head of its token. Used by the rotary op's CUDA entry.
//
// The angle pos · θ_i is taken in turns and reduced to [0, 1) before sinpi / cospi: their argument reduction is exact
// and needs no local memory, unlike double sin and cos, whose reduction of wide arguments (Payne–Hanek) keeps a
// stack frame (40 bytes, measured). The turns carry about pos · 2^-52 of rounding (θ_i / 2π, then the product): at
// position 10^5 some 2e-11 radians from the reference's angle, which a GPU's pow (within 2 ulp) moves by as much
// anyway.
#pragma once

#include <math.h>

#include "common.cuh"
#include "ssm/core/params/dense.hpp"

namespace ssm::kernels {

#if defined(__CUDACC__)
__device__ inline double rotary_sinpi(double x) { return ::sinpi(x); }
__device__ inline double rotary_cospi(double x) { return ::cospi(x); }
#else
// The emulation's stand-ins: x is in [0, 2), so sin and cos of π x need no wide reduction.
inline double rotary_sinpi(double x) { return ::sin(3.14159265358979323846 * x); }
inline double rotary_cospi(double x) { return ::cos(3.14159265358979323846 * x); }
#endif

/// Threads per block of rotary_kernel.
inline constexpr int kRotaryThreads = 256;

/// Grid ceil(b · l · d/2 / kThreads), block kThreads; thread k is token k / (d/2) (= bi · l + t), pair k mod (d/2).
/// y may be x: each element is read, then written, by the one thread of its pair.
template <class T, int kThreads>
__global__ void __launch_bounds__(kThreads) rotary_kernel(RotaryParams p) {
  const index_t half = p.dim / 2;
  const index_t k = static_cast<index_t>(blockIdx.x) * kThreads + static_cast<index_t>(threadIdx.x);
  if (k >= p.batch * p.seqlen * half) return;
  const index_t i = k % half, token = k / half, t = token % p.seqlen, bi = token / p.seqlen;
  constexpr double kInverse2Pi = 0.15915494309189533577;  // 1 / 2π
  const double turns = static_cast<double>(p.position(t)) * (p.angle(1, i) * kInverse2Pi);  // pos · θ_i / 2π
  const double r = 2 * (turns - ::floor(turns));  // the angle / π, in [0, 2)
  const double sin_a = rotary_sinpi(r), cos_a = rotary_cospi(r);
  const T c = static_cast<T>(cos_a);
  const T s = static_cast<T>(p.inverse ? -sin_a : sin_a);
  const T* x = static_cast<const T*>(p.x) + bi * p.x_strides[0] + t * p.x_strides[1];  // (h, d) of the token
  T* y = static_cast<T*>(p.y) + bi * p.y_strides[0] + t * p.y_strides[1];              // (h, d)
  const index_t first = p.first(i), second = p.second(i);
  for (index_t hh = 0; hh < p.heads; ++hh) {
    const T a = x[hh * p.x_strides[2] + first], b = x[hh * p.x_strides[2] + second];
    y[hh * p.y_strides[2] + first] = a * c - b * s;
    y[hh * p.y_strides[2] + second] = a * s + b * c;
  }
}

}  // namespace ssm::kernels
