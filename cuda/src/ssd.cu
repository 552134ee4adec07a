// ssm::cuda::ssd_forward and ssd_backward, and the SSD kernels' other clients, linear_attention_forward and
// linear_attention_backward (linear attention, retention, and GLA on its own kernels): the plan, the workspace
// (stream-ordered) and the launches of kernels/launch/ssd.cuh and linear_attention.cuh on a stream. One translation
// unit: nvcc allows a non-template kernel (such as ssd_state_passing_kernel) in only one unit of a program.
#include <cuda_runtime.h>

#include "../kernels/launch/linear_attention.cuh"
#include "../kernels/launch/ssd.cuh"
#include "cuda_check.cuh"
#include "ssm/cuda/linear_attention.hpp"
#include "ssm/cuda/runtime.hpp"
#include "ssm/cuda/ssd.hpp"
#include "stream_executor.cuh"

namespace ssm::cuda {

void ssd_forward(const SsdParams& p, void* stream) {
  const kernels::SsdPlan plan = kernels::plan_ssd(p, "ssm::cuda::ssd_forward");
  if (p.rows() == 0) return;
  detail::run_with_workspace(plan.bytes, stream, "cudaMallocAsync (ssd workspace)", plan.table,
                             [&](auto& exec, void* base) {
                               kernels::ssd_forward_launches(exec, p, plan, kernels::ssd_workspace(plan, base));
                             });
}

void ssd_backward(const SsdParams& p, const SsdGradParams& g, void* stream) {
  const kernels::SsdPlan plan = kernels::plan_ssd_backward(p, g, "ssm::cuda::ssd_backward");
  // Also with no sequence: the summed gradients (A, D, dt_bias) are still zero-filled.
  detail::run_with_workspace(plan.bytes, stream, "cudaMallocAsync (ssd workspace)", plan.table,
                             [&](auto& exec, void* base) {
                               kernels::ssd_backward_launches(exec, p, g, plan, kernels::ssd_workspace(plan, base),
                                                              kernels::ssd_grad_workspace(plan, base, p.z != nullptr));
                             });
}

void linear_attention_forward(const LinearAttentionParams& p, void* stream) {
  const kernels::LaPlan plan = kernels::plan_linear_attention(p, "ssm::cuda::linear_attention_forward");
  if (p.rows() == 0) return;
  detail::run_with_workspace(
      plan.bytes, stream, "cudaMallocAsync (linear attention workspace)", plan.ssd.table,
      [&](auto& exec, void* base) { kernels::linear_attention_forward_launches(exec, p, plan, base); });
}

void linear_attention_backward(const LinearAttentionParams& p, const LinearAttentionGradParams& g, void* stream) {
  const kernels::LaPlan plan = kernels::plan_linear_attention(p, "ssm::cuda::linear_attention_backward", &g);
  if (p.rows() == 0) return;
  detail::run_with_workspace(
      plan.bytes, stream, "cudaMallocAsync (linear attention workspace)", plan.ssd.table,
      [&](auto& exec, void* base) { kernels::linear_attention_backward_launches(exec, p, g, plan, base); });
}

}  // namespace ssm::cuda
