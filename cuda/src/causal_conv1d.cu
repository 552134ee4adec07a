// ssm::cuda::causal_conv1d_forward / _backward / _update: the checks and launches of
// kernels/launch/causal_conv1d.cuh on a stream.
#include <cuda_runtime.h>

#include "../kernels/launch/causal_conv1d.cuh"
#include "stream_executor.cuh"
#include "ssm/cuda/causal_conv1d.hpp"

namespace ssm::cuda {

void causal_conv1d_forward(const CausalConv1dParams& p, DType input_dtype, void* stream) {
  detail::StreamExecutor exec{static_cast<cudaStream_t>(stream)};
  kernels::causal_conv1d_forward_launches(exec, p, input_dtype, "ssm::cuda::causal_conv1d_forward");
}

void causal_conv1d_backward(const CausalConv1dParams& p, const CausalConv1dGradParams& g, DType input_dtype,
                            void* stream) {
  detail::StreamExecutor exec{static_cast<cudaStream_t>(stream)};
  kernels::causal_conv1d_backward_launches(exec, p, g, input_dtype, "ssm::cuda::causal_conv1d_backward");
}

void causal_conv1d_update(const CausalConv1dUpdateParams& p, DType input_dtype, void* stream) {
  detail::StreamExecutor exec{static_cast<cudaStream_t>(stream)};
  kernels::causal_conv1d_update_launches(exec, p, input_dtype, "ssm::cuda::causal_conv1d_update");
}

}  // namespace ssm::cuda
