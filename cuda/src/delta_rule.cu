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
  detail::run_with_workspace(
      plan.bytes, stream, "cudaMallocAsync (delta rule workspace)", plan.table,
      [&](auto& exec, void* base) { kernels::delta_rule_forward_launches(exec, p, plan, base); });
}

void delta_rule_backward(const DeltaRuleParams& p, const DeltaRuleGradParams& g, void* stream) {
  const kernels::DrPlan plan = kernels::plan_delta_rule(p, "ssm::cuda::delta_rule_backward", &g);
  if (p.rows() == 0) return;
  detail::run_with_workspace(
      plan.bytes, stream, "cudaMallocAsync (delta rule backward workspace)", plan.table,
      [&](auto& exec, void* base) { kernels::delta_rule_backward_launches(exec, p, g, plan, base); });
}

}  // namespace ssm::cuda
