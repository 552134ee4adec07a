// ssm::cuda::delta_rule_forward and delta_rule_backward: the plan, the workspace (stream-ordered) and the launches of
// kernels/launch/delta_rule.cuh on a stream.
#include <cuda_runtime.h>

#include "../kernels/launch/delta_rule.cuh"
#include "ssm/cuda/delta_rule.hpp"
#include "ssm/cuda/runtime.hpp"
#include "stream_executor.cuh"

namespace ssm::cuda {

void delta_rule_forward(const DeltaRuleParams& p, void* stream) {
  const kernels::DrPlan plan = kernels::plan_delta_rule(p, "ssm::cuda::delta_rule_forward");
  if (p.rows() == 0) return;
  (void)device_count();  // a clear error (the runtime's message) when no GPU is usable
  const detail::StreamWorkspace w(plan.bytes, static_cast<cudaStream_t>(stream),
                                  "cudaMallocAsync (delta rule workspace)", plan.table.data(), plan.table_bytes);
  detail::StreamExecutor exec{w.stream()};
  kernels::delta_rule_forward_launches(exec, p, plan, w.base());
}

void delta_rule_backward(const DeltaRuleParams& p, const DeltaRuleGradParams& g, void* stream) {
  const kernels::DrPlan plan = kernels::plan_delta_rule(p, "ssm::cuda::delta_rule_backward", &g);
  if (p.rows() == 0) return;
  (void)device_count();
  const detail::StreamWorkspace w(plan.bytes, static_cast<cudaStream_t>(stream),
                                  "cudaMallocAsync (delta rule backward workspace)", plan.table.data(),
                                  plan.table_bytes);
  detail::StreamExecutor exec{w.stream()};
  kernels::delta_rule_backward_launches(exec, p, g, plan, w.base());
}

}  // namespace ssm::cuda
