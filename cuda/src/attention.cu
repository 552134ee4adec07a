// ssm::cuda::attention_forward / _backward: the launch sequences of cuda/kernels/attention.cuh on the device.
#include <cuda_runtime.h>

#include "../kernels/attention.cuh"
#include "cuda_check.cuh"
#include "ssm/cuda/attention.hpp"
#include "ssm/cuda/runtime.hpp"

namespace ssm::cuda {
namespace {

/// Launches on one stream and reports launch failures as ssm::Error.
struct StreamExecutor {
  cudaStream_t stream = nullptr;
  template <class... P, class... A>
  void launch(void (*kernel)(P...), kernels::LaunchDims grid, kernels::LaunchDims block, A... args) {
    kernel<<<dim3(grid.x, grid.y, grid.z), dim3(block.x, block.y, block.z), 0, stream>>>(static_cast<P>(args)...);
    detail::check_cuda(cudaGetLastError(), "attention kernel launch");
  }
};

}  // namespace

void attention_forward(const AttentionParams& p, void* stream) {
  kernels::check_attention_params(p, "ssm::cuda::attention_forward");
  (void)device_count();
  StreamExecutor exec{static_cast<cudaStream_t>(stream)};
  kernels::attention_forward_launches(exec, p);
}

void attention_backward(const AttentionParams& p, const AttentionGradParams& g, void* stream) {
  kernels::check_attention_params(p, "ssm::cuda::attention_backward");
  (void)device_count();
  StreamExecutor exec{static_cast<cudaStream_t>(stream)};
  kernels::attention_backward_launches(exec, p, g);
}

}  // namespace ssm::cuda
