// The scalar functions every implementation shares: the reference (in double), the CPU code (f32 / f64), the
// CUDA kernels on the device and the same kernels under the host emulation. One definition each, callable from
// host and device code (SSM_HOST_DEVICE), so "softplus" means one thing everywhere:
//   softplus(x)  = log(1 + e^x), and x itself above 20 (PyTorch's threshold, which the mamba kernels use);
//   silu(x)      = x sigmoid(x);
//   exp(Delta A) = 2^(Delta (A log2 e)): the exp2-domain decay, with A pre-scaled once by log2 e;
//   the scan's combine: (a1, b1) then (a2, b2) is (a2 a1, a2 b1 + b2), the composition of h -> a h + b.
// Also the compute-type rule: f64 inputs compute in f64, every other real input (f32, f16, bf16) in f32.
#pragma once

#include <math.h>  // ::expf, ::log1pf, ::exp2f, ::sqrtf, ::erff: the names nvcc's device code and the host both have

#include <type_traits>

#include "ssm/core/macros.hpp"


namespace ssm {

/// The type an input element type computes in: double for double, float otherwise (f32, f16, bf16).
template <class In>
using compute_t = std::conditional_t<std::is_same_v<In, double>, double, float>;

namespace scalar {

SSM_HOST_DEVICE inline float exp(float x) { return ::expf(x); }
SSM_HOST_DEVICE inline double exp(double x) { return ::exp(x); }
SSM_HOST_DEVICE inline float exp2(float x) { return ::exp2f(x); }
SSM_HOST_DEVICE inline double exp2(double x) { return ::exp2(x); }
SSM_HOST_DEVICE inline float log1p(float x) { return ::log1pf(x); }
SSM_HOST_DEVICE inline double log1p(double x) { return ::log1p(x); }
SSM_HOST_DEVICE inline float sqrt(float x) { return ::sqrtf(x); }
SSM_HOST_DEVICE inline double sqrt(double x) { return ::sqrt(x); }
SSM_HOST_DEVICE inline float erf(float x) { return ::erff(x); }
SSM_HOST_DEVICE inline double erf(double x) { return ::erf(x); }
SSM_HOST_DEVICE inline double pow(double x, double y) { return ::pow(x, y); }

/// log2(e): exp(x) = 2^(x log2 e).
template <class T>
inline constexpr T kLog2e = T(1.44269504088896340735992468100189214);

/// Above this softplus(x) is x (and its derivative 1), as PyTorch's softplus(beta = 1, threshold = 20).
template <class T>
inline constexpr T kSoftplusThreshold = T(20);

/// softplus(x) = log(1 + e^x); x above the threshold. NaN in, NaN out.
template <class T>
SSM_HOST_DEVICE inline T softplus(T x) {
  return x > kSoftplusThreshold<T> ? x : scalar::log1p(scalar::exp(x));
}
/// sigmoid(x) = 1 / (1 + e^-x).
template <class T>
SSM_HOST_DEVICE inline T sigmoid(T x) {
  return T(1) / (T(1) + scalar::exp(-x));
}
/// d softplus / dx = sigmoid(x), and exactly 1 above the threshold (matching the forward).
template <class T>
SSM_HOST_DEVICE inline T softplus_grad(T x) {
  return x > kSoftplusThreshold<T> ? T(1) : sigmoid(x);
}
/// Mamba-2's step size from dt + dt_bias: softplus (when `softplus`), then clamped to [lo, hi] (when `limit`), as
/// mamba_ssm's dt_limit. The one definition behind ssd_delta (SSD) and the selective state update's Δ.
template <class T>
SSM_HOST_DEVICE inline T step_size(T dt_plus_bias, bool softplus, bool limit, double lo, double hi) {
  T d = softplus ? scalar::softplus(dt_plus_bias) : dt_plus_bias;
  if (limit) d = d < T(lo) ? T(lo) : (d > T(hi) ? T(hi) : d);
  return d;
}
/// d step_size / d(dt + dt_bias): the softplus's derivative (1 above its threshold; 1 without the softplus), times 0
/// where the limit clamps (as PyTorch's clamp, which passes the gradient where lo <= Δ <= hi).
template <class T>
SSM_HOST_DEVICE inline T step_size_grad(T dt_plus_bias, bool softplus, bool limit, double lo, double hi) {
  const T d = softplus ? scalar::softplus(dt_plus_bias) : dt_plus_bias;
  if (limit && (d < T(lo) || d > T(hi))) return T(0);
  return softplus ? scalar::softplus_grad(dt_plus_bias) : T(1);
}
/// silu(x) = x sigmoid(x) = x / (1 + e^-x).
template <class T>
SSM_HOST_DEVICE inline T silu(T x) {
  return x / (T(1) + scalar::exp(-x));
}
/// d silu / dx = s (1 + x (1 - s)), s = sigmoid(x).
template <class T>
SSM_HOST_DEVICE inline T silu_grad(T x) {
  const T s = sigmoid(x);
  return s * (T(1) + x * (T(1) - s));
}

/// GELU, the exact form (PyTorch's gelu(); the S4 / S4D layers' activation): ½ x (1 + erf(x / √2)) = x Φ(x). x is
/// divided by √2 (multiplying by 1/√2 rounds differently in about a fifth of the arguments).
template <class T>
SSM_HOST_DEVICE inline T gelu(T x) {
  return T(0.5) * x * (T(1) + scalar::erf(x / T(1.41421356237309504880)));
}

/// d gelu / dx = Φ(x) + x φ(x), φ(x) = e^{−x²/2} / √(2π).
template <class T>
SSM_HOST_DEVICE inline T gelu_grad(T x) {
  return T(0.5) * (T(1) + scalar::erf(x / T(1.41421356237309504880))) +
         x * scalar::exp(T(-0.5) * x * x) * (T(0.5) * T(0.56418958354775628695) * T(1.41421356237309504880));
}

/// GELU with the tanh approximation (PyTorch's gelu(approximate="tanh"); TTT's output gate):
/// ½ x (1 + tanh(√(2/π) (x + 0.044715 x³))), with tanh(u) = 1 − 2 / (e^{2u} + 1) (NaN in, NaN out).
template <class T>
SSM_HOST_DEVICE inline T gelu_tanh(T x) {
  const T u = T(0.7978845608028654) * (x + T(0.044715) * x * x * x);
  return T(0.5) * x * (T(2) - T(2) / (scalar::exp(T(2) * u) + T(1)));
}

/// d gelu_tanh / dx = ½ (1 + tanh u) + ½ x (1 − tanh² u) √(2/π) (1 + 3 · 0.044715 x²).
template <class T>
SSM_HOST_DEVICE inline T gelu_tanh_grad(T x) {
  const T u = T(0.7978845608028654) * (x + T(0.044715) * x * x * x);
  const T th = T(1) - T(2) / (scalar::exp(T(2) * u) + T(1));
  return T(0.5) * (T(1) + th) + T(0.5) * x * (T(1) - th * th) * T(0.7978845608028654) * (T(1) + T(0.134145) * x * x);
}

/// exp(Delta A) from Delta and A2 = A log2 e (the exp2-domain decay: one multiply and an exp2 per step).
template <class T>
SSM_HOST_DEVICE inline T decay_exp2(T Delta, T A2) {
  return scalar::exp2(Delta * A2);
}

/// One step of a linear recurrence, the map h -> a h + b (the element of the scan).
template <class T>
struct AffineStep {
  T a;
  T b;
};

/// `first` then `second`: (a1, b1) then (a2, b2) = (a2 a1, a2 b1 + b2). Associative; (1, 0) is the identity.
template <class T>
SSM_HOST_DEVICE inline AffineStep<T> combine(const AffineStep<T>& first, const AffineStep<T>& second) {
  return AffineStep<T>{second.a * first.a, second.a * first.b + second.b};
}

}  // namespace scalar
}  // namespace ssm
