// Host tensor helpers shared by the registry, the scan problem generator and the kernel-level tests: one element from
// a double, a copy of a tensor's values into a view with padded rows (a strided input), a view's values as doubles,
// and the normalized error every comparison uses.
#pragma once

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ssm/core.hpp"

namespace conformance {

/// Element i (row-major over the shape) of a contiguous host tensor from a double (complex: re, im).
inline void set_element(const ssm::TensorView& t, ssm::index_t i, double re, double im = 0.0) {
  void* p = t.data();
  switch (t.dtype()) {
    case ssm::DType::f32: static_cast<float*>(p)[i] = static_cast<float>(re); break;
    case ssm::DType::f64: static_cast<double*>(p)[i] = re; break;
    case ssm::DType::f16: static_cast<ssm::half*>(p)[i] = ssm::half(static_cast<float>(re)); break;
    case ssm::DType::bf16: static_cast<ssm::bfloat16*>(p)[i] = ssm::bfloat16(static_cast<float>(re)); break;
    case ssm::DType::c64: static_cast<std::complex<float>*>(p)[i] = {static_cast<float>(re), static_cast<float>(im)}; break;
    case ssm::DType::c128: static_cast<std::complex<double>*>(p)[i] = {re, im}; break;
    case ssm::DType::i32: static_cast<std::int32_t*>(p)[i] = static_cast<std::int32_t>(re); break;
    case ssm::DType::i64: static_cast<std::int64_t*>(p)[i] = static_cast<std::int64_t>(re); break;
    default: ssm::fail("conformance::set_element: unsupported dtype ", ssm::name(t.dtype()));
  }
}

/// A host tensor of uniform values in [lo, hi) (imaginary parts in [im_lo, im_hi) for complex dtypes).
inline ssm::Tensor uniform(std::mt19937_64& rng, const ssm::Dims& shape, ssm::DType dt, double lo, double hi,
                           double im_lo = -1, double im_hi = 1) {
  ssm::Tensor t = ssm::Tensor::empty(shape, dt);
  std::uniform_real_distribution<double> re(lo, hi), im(im_lo, im_hi);
  for (ssm::index_t i = 0; i < t.numel(); ++i) {
    const double r = re(rng);
    set_element(t, i, r, ssm::is_complex(dt) ? im(rng) : 0.0);
  }
  return t;
}

/// A view of `dense`'s values whose rows (the last dimension, kept unit-stride as every op requires) are `pad`
/// elements apart beyond their length; the padding holds NaN, so an op that reads outside the view poisons its
/// output. `owner` receives the storage.
inline ssm::TensorView padded_copy(const ssm::Tensor& dense, ssm::index_t pad, ssm::Tensor& owner) {
  const ssm::Dims& shape = dense.shape();
  ssm::Dims strides = shape;
  ssm::index_t step = 1;
  for (int k = shape.size() - 1; k >= 0; --k) {
    strides[k] = step;
    step *= shape[k] + (k == shape.size() - 1 ? pad : 0);
  }
  owner = ssm::Tensor::empty({std::max<ssm::index_t>(step, 1)}, dense.dtype());
  std::memset(owner.data(), 0xff, owner.nbytes());  // NaN in every float dtype
  const ssm::TensorView v(owner.data(), dense.dtype(), ssm::Device::cpu(), shape, strides);
  ssm::copy(v, dense.view());
  return v;
}

/// A view of `dense` (b, k..., l) over time-major memory (b, l, k...): each time step's row holds the middle
/// dimensions contiguously, then `pad` NaN elements; the view has unit stride along the last middle dimension and
/// the row width along l (a channel-last view, as the Mamba block passes slices of its activations). `owner`
/// receives the storage.
inline ssm::TensorView time_major_copy(const ssm::Tensor& dense, ssm::index_t pad, ssm::Tensor& owner) {
  const ssm::Dims& shape = dense.shape();
  const int r = shape.size();
  ssm::Dims strides = shape;
  ssm::index_t row = 1;
  for (int k = r - 2; k >= 1; --k) {
    strides[k] = row;
    row *= shape[k];
  }
  row += pad;
  strides[r - 1] = row;
  strides[0] = row * shape[r - 1];
  owner = ssm::Tensor::empty({std::max<ssm::index_t>(strides[0] * shape[0], 1)}, dense.dtype());
  std::memset(owner.data(), 0xff, owner.nbytes());  // NaN in every float dtype
  const ssm::TensorView v(owner.data(), dense.dtype(), ssm::Device::cpu(), shape, strides);
  ssm::copy(v, dense.view());
  return v;
}

/// The view with dimensions 1 and 2 of a rank-3 view swapped (no copy).
inline ssm::TensorView swap12(const ssm::TensorView& v) {
  return ssm::TensorView(v.data(), v.dtype(), v.device(), {v.size(0), v.size(2), v.size(1)},
                         {v.stride(0), v.stride(2), v.stride(1)});
}

// ---- comparison --------------------------------------------------------------------------------------------

/// The values of a host view in row-major order as doubles (complex: re, im interleaved).
inline std::vector<double> to_doubles(const ssm::TensorView& v) {
  ssm::Tensor t = ssm::Tensor::empty(v.shape(), v.dtype());
  ssm::copy(t, v);
  std::vector<double> r;
  r.reserve(static_cast<std::size_t>(t.numel()));
  const void* p = t.data();
  for (ssm::index_t i = 0; i < t.numel(); ++i) {
    switch (t.dtype()) {
      case ssm::DType::f32: r.push_back(static_cast<const float*>(p)[i]); break;
      case ssm::DType::f64: r.push_back(static_cast<const double*>(p)[i]); break;
      case ssm::DType::f16: r.push_back(ssm::to_float(static_cast<const ssm::half*>(p)[i])); break;
      case ssm::DType::bf16: r.push_back(ssm::to_float(static_cast<const ssm::bfloat16*>(p)[i])); break;
      case ssm::DType::c64:
        r.push_back(static_cast<const std::complex<float>*>(p)[i].real());
        r.push_back(static_cast<const std::complex<float>*>(p)[i].imag());
        break;
      case ssm::DType::c128:
        r.push_back(static_cast<const std::complex<double>*>(p)[i].real());
        r.push_back(static_cast<const std::complex<double>*>(p)[i].imag());
        break;
      default: ssm::fail("conformance::to_doubles: unsupported dtype ", ssm::name(t.dtype()));
    }
  }
  return r;
}

/// Writes values (row-major, complex: re, im interleaved) into a contiguous host tensor of any float dtype.
inline void from_doubles(const ssm::TensorView& dst, const std::vector<double>& v) {
  SSM_CHECK(dst.is_contiguous() && dst.device().is_cpu(), "conformance::from_doubles: a contiguous host tensor");
  const bool cx = ssm::is_complex(dst.dtype());
  SSM_CHECK(static_cast<ssm::index_t>(v.size()) == dst.numel() * (cx ? 2 : 1), "conformance::from_doubles: ", v.size(),
            " values for shape ", dst.shape().str());
  for (ssm::index_t i = 0; i < dst.numel(); ++i)
    set_element(dst, i, v[static_cast<std::size_t>(cx ? 2 * i : i)], cx ? v[static_cast<std::size_t>(2 * i + 1)] : 0.0);
}

/// max |got - ref| / max |ref| (an element-wise ratio means nothing where ref crosses zero); a NaN in got (an
/// element never written) is infinite.
inline double normalized_error(const std::vector<double>& got, const std::vector<double>& ref) {
  if (got.size() != ref.size()) return INFINITY;
  double err = 0, scale = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    err = std::max(err, std::abs(got[i] - ref[i]));
    scale = std::max(scale, std::abs(ref[i]));
  }
  return scale > 0 ? err / scale : err;
}

/// normalized_error of two tensors of any layout and float dtype.
inline double rel_error(const ssm::Tensor& got, const ssm::Tensor& ref) {
  return normalized_error(to_doubles(got), to_doubles(ref));
}

// ---- small host tensors ---------------------------------------------------------------------------------------

/// A contiguous host copy of t.
inline ssm::Tensor clone(const ssm::Tensor& t) {
  ssm::Tensor r = ssm::Tensor::empty(t.shape(), t.dtype());
  ssm::copy(r, t);
  return r;
}

/// A host tensor with every element x.
inline ssm::Tensor filled(const ssm::Dims& shape, ssm::DType dt, double x) {
  ssm::Tensor t = ssm::Tensor::empty(shape, dt);
  for (ssm::index_t i = 0; i < t.numel(); ++i) set_element(t.view(), i, x);
  return t;
}

}  // namespace conformance
