// ssm::cuda::rwkv7_forward and rwkv7_backward: the plan, the workspace (stream-ordered) and the launches of
// kernels/launch/rwkv7.cuh on a stream.
#include <cuda_runtime.h>

#include "../kernels/launch/rwkv7.cuh"
#include "ssm/cuda/runtime.hpp"
#include "ssm/cuda/rwkv7.hpp"
#include "stream_executor.cuh"

namespace ssm::cuda {

void rwkv7_forward(const Rwkv7Params& p, void* stream) {
  const kernels::Rwkv7Plan plan = kernels::plan_rwkv7(p, "ssm::cuda::rwkv7_forward");
  if (p.rows() == 0) return;
  detail::run_with_workspace(plan.bytes, stream, "cudaMallocAsync (RWKV-7 workspace)", plan.table,
                             [&](auto& exec, void* base) { kernels::rwkv7_forward_launches(exec, p, plan, base); });
}

void rwkv7_backward(const Rwkv7Params& p, const Rwkv7GradParams& g, void* stream) {
  const kernels::Rwkv7Plan plan = kernels::plan_rwkv7(p, "ssm::cuda::rwkv7_backward", &g);
  if (p.rows() == 0) return;
  detail::run_with_workspace(plan.bytes, stream, "cudaMallocAsync (RWKV-7 backward workspace)", plan.table,
                             [&](auto& exec, void* base) { kernels::rwkv7_backward_launches(exec, p, g, plan, base); });
}

}  // namespace ssm::cuda
