// ssm::cuda::selective_state_update: the launch of kernels/launch/selective_state_update.cuh on a stream.
#include <cuda_runtime.h>

#include "../kernels/launch/selective_state_update.cuh"
#include "ssm/cuda/selective_state_update.hpp"
#include "stream_executor.cuh"

namespace ssm::cuda {

void selective_state_update(const SelectiveStateUpdateParams& p, void* stream) {
  detail::StreamExecutor exec{static_cast<cudaStream_t>(stream)};
  kernels::selective_state_update_launches(exec, p, "ssm::cuda::selective_state_update");
}

}  // namespace ssm::cuda
