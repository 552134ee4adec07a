// Internal to ssm::cuda: turns a CUDA runtime status into an ssm::Error carrying the runtime's own message.
#pragma once

#include <cuda_runtime.h>

#include "ssm/core/error.hpp"

namespace ssm::cuda::detail {

inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky error so later calls report their own status
    fail("CUDA runtime error in ", what, ": ", cudaGetErrorString(err), " (", cudaGetErrorName(err), ", code ",
         static_cast<int>(err), ")");
  }
}

}  // namespace ssm::cuda::detail
