// ssm::cuda::glu_forward: the launch of kernels/launch/glu.cuh on a stream.
#include <cuda_runtime.h>

#include "../kernels/launch/glu.cuh"
#include "ssm/cuda/dense.hpp"
#include "stream_executor.cuh"

namespace ssm::cuda {

void glu_forward(const GluParams& p, void* stream) {
  detail::StreamExecutor exec{static_cast<cudaStream_t>(stream)};
  kernels::glu_launches(exec, p, "ssm::cuda::glu_forward");
}

}  // namespace ssm::cuda
