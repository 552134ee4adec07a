// ssm::cuda::ssd_forward and ssd_backward: the plan, the workspace (stream-ordered) and the launches of
// kernels/launch/ssd.cuh on a stream.
#include <cuda_runtime.h>

#include "../kernels/launch/ssd.cuh"
#include "cuda_check.cuh"
#include "ssm/cuda/runtime.hpp"
#include "ssm/cuda/ssd.hpp"
#include "stream_executor.cuh"

namespace ssm::cuda {

void ssd_forward(const SsdParams& p, void* stream) {
  const kernels::SsdPlan plan = kernels::plan_ssd(p, "ssm::cuda::ssd_forward");
  if (p.rows() == 0) return;
  (void)device_count();  // a clear error (the runtime's message) when no GPU is usable
  const detail::StreamWorkspace w(plan.bytes, static_cast<cudaStream_t>(stream), "cudaMallocAsync (ssd workspace)",
                                  plan.table.data(), plan.table_bytes);
  detail::StreamExecutor exec{w.stream()};
  kernels::ssd_forward_launches(exec, p, plan, kernels::ssd_workspace(plan, w.base()));
}

void ssd_backward(const SsdParams& p, const SsdGradParams& g, void* stream) {
  const kernels::SsdPlan plan = kernels::plan_ssd_backward(p, g, "ssm::cuda::ssd_backward");
  (void)device_count();
  // Also with no sequence: the summed gradients (A, D, dt_bias) are still zero-filled.
  const detail::StreamWorkspace w(plan.bytes, static_cast<cudaStream_t>(stream), "cudaMallocAsync (ssd workspace)",
                                  plan.table.data(), plan.table_bytes);
  detail::StreamExecutor exec{w.stream()};
  kernels::ssd_backward_launches(exec, p, g, plan, kernels::ssd_workspace(plan, w.base()),
                                 kernels::ssd_grad_workspace(plan, w.base(), p.z != nullptr));
}

}  // namespace ssm::cuda
