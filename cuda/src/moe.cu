// ssm::cuda::moe_forward: the plan, the workspace (stream-ordered) and the launches of kernels/launch/moe.cuh on a
// stream.
#include <cuda_runtime.h>

#include "../kernels/launch/moe.cuh"
#include "ssm/cuda/moe.hpp"
#include "ssm/cuda/runtime.hpp"
#include "stream_executor.cuh"

namespace ssm::cuda {

void moe_forward(const MoeParams& p, void* stream) {
  const kernels::MoePlan plan = kernels::plan_moe(p, "ssm::cuda::moe_forward");
  if (p.tokens == 0) return;
  (void)device_count();  // a clear error (the runtime's message) when no GPU is usable
  const detail::StreamWorkspace w(plan.bytes, static_cast<cudaStream_t>(stream), "cudaMallocAsync (moe workspace)");
  detail::StreamExecutor exec{w.stream()};
  kernels::moe_forward_launches(exec, p, plan, w.base());
}

}  // namespace ssm::cuda
