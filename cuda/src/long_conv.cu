// ssm::cuda::long_conv_forward: the launch of kernels/launch/long_conv.cuh on a stream.
#include <cuda_runtime.h>

#include "../kernels/launch/long_conv.cuh"
#include "ssm/cuda/long_conv.hpp"
#include "stream_executor.cuh"

namespace ssm::cuda {

void long_conv_forward(const LongConvParams& p, void* stream) {
  detail::StreamExecutor exec{static_cast<cudaStream_t>(stream)};
  kernels::long_conv_launches(exec, p, "ssm::cuda::long_conv_forward");
}

}  // namespace ssm::cuda
