// Host tensor helpers shared by the registry and the scan problem generator: one element from a double, and a copy
// of a tensor's values into a view with padded rows (a strided input).
#pragma once

#include <algorithm>
#include <complex>
#include <cstdint>
#include <cstring>

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

}  // namespace conformance
