// ssm::cuda::ttt_linear_forward and ttt_linear_backward: the plan, the workspace (stream-ordered) and the launches of
// kernels/launch/ttt_linear.cuh on a stream.
#include <cuda_runtime.h>

#include "../kernels/launch/ttt_linear.cuh"
#include "ssm/cuda/runtime.hpp"
#include "ssm/cuda/ttt_linear.hpp"
#include "stream_executor.cuh"

namespace ssm::cuda {

void ttt_linear_forward(const TttLinearParams& p, void* stream) {
  const kernels::TttPlan plan = kernels::plan_ttt_linear(p, "ssm::cuda::ttt_linear_forward");
  if (p.rows() == 0) return;
  detail::run_with_workspace(
      plan.bytes, stream, "cudaMallocAsync (TTT-Linear workspace)", plan.table,
      [&](auto& exec, void* base) { kernels::ttt_linear_forward_launches(exec, p, plan, base); });
}

void ttt_linear_backward(const TttLinearParams& p, const TttLinearGradParams& g, void* stream) {
  const kernels::TttPlan plan = kernels::plan_ttt_linear(p, "ssm::cuda::ttt_linear_backward", &g);
  detail::run_with_workspace(
      plan.bytes, stream, "cudaMallocAsync (TTT-Linear backward workspace)", plan.table,
      [&](auto& exec, void* base) { kernels::ttt_linear_backward_launches(exec, p, g, plan, base); });
}

}  // namespace ssm::cuda
