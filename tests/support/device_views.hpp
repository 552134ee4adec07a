// A view of host memory labelled as CUDA memory, for tests of the checks an op makes before it reads anything (device
// agreement, the backend's presence, argument shapes): nothing may dereference it.
#pragma once

#include "ssm/core/tensor.hpp"

namespace ssm_test {

/// v's data, dtype, shape and strides on cuda:0.
inline ssm::TensorView on_cuda(const ssm::TensorView& v) {
  return ssm::TensorView(v.data(), v.dtype(), ssm::Device::cuda(0), v.shape(), v.strides());
}

}  // namespace ssm_test
