// ssm::cuda::rotary_forward: the launch of kernels/launch/rotary.cuh on a stream.
#include <cuda_runtime.h>

#include "../kernels/launch/rotary.cuh"
#include "ssm/cuda/dense.hpp"
#include "stream_executor.cuh"

namespace ssm::cuda {

void rotary_forward(const RotaryParams& p, void* stream) {
  detail::StreamExecutor exec{static_cast<cudaStream_t>(stream)};
  kernels::rotary_launches(exec, p, "ssm::cuda::rotary_forward");
}

}  // namespace ssm::cuda
