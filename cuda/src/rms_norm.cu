// ssm::cuda::rms_norm_forward: the launch of kernels/launch/rms_norm.cuh on a stream.
#include <cuda_runtime.h>

#include "../kernels/launch/rms_norm.cuh"
#include "ssm/cuda/dense.hpp"
#include "stream_executor.cuh"

namespace ssm::cuda {

void rms_norm_forward(const RmsNormParams& p, void* stream) {
  detail::StreamExecutor exec{static_cast<cudaStream_t>(stream)};
  kernels::rms_norm_launches(exec, p, "ssm::cuda::rms_norm_forward");
}

}  // namespace ssm::cuda
