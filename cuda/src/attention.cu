// ssm::cuda::attention_forward / _backward: the launch sequences of cuda/kernels/attention.cuh on the device.
#include <cuda_runtime.h>

#include "../kernels/attention.cuh"
#include "stream_executor.cuh"
#include "ssm/cuda/attention.hpp"

namespace ssm::cuda {
void attention_forward(const AttentionParams& p, void* stream) {
  detail::StreamExecutor exec{static_cast<cudaStream_t>(stream)};
  kernels::attention_forward_launches(exec, p);
}

void attention_backward(const AttentionParams& p, const AttentionGradParams& g, void* stream) {
  detail::StreamExecutor exec{static_cast<cudaStream_t>(stream)};
  kernels::attention_backward_launches(exec, p, g);
}

}  // namespace ssm::cuda
