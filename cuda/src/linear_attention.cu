// ssm::cuda::linear_attention_forward and linear_attention_backward: the plan, the workspace (stream-ordered) and the
// launches of kernels/launch/linear_attention.cuh on a stream.
#include <cuda_runtime.h>

#include "../kernels/launch/linear_attention.cuh"
#include "ssm/cuda/linear_attention.hpp"
#include "ssm/cuda/runtime.hpp"
#include "stream_executor.cuh"

namespace ssm::cuda {

void linear_attention_forward(const LinearAttentionParams& p, void* stream) {
  const kernels::LaPlan plan = kernels::plan_linear_attention(p, "ssm::cuda::linear_attention_forward");
  if (p.rows() == 0) return;
  (void)device_count();  // a clear error (the runtime's message) when no GPU is usable
  const detail::StreamWorkspace w(plan.bytes, static_cast<cudaStream_t>(stream),
                                  "cudaMallocAsync (linear attention workspace)", plan.ssd.table.data(),
                                  plan.ssd.table_bytes);
  detail::StreamExecutor exec{w.stream()};
  kernels::linear_attention_forward_launches(exec, p, plan, w.base());
}

void linear_attention_backward(const LinearAttentionParams& p, const LinearAttentionGradParams& g, void* stream) {
  const kernels::LaPlan plan = kernels::plan_linear_attention(p, "ssm::cuda::linear_attention_backward", &g);
  if (p.rows() == 0) return;
  (void)device_count();
  const detail::StreamWorkspace w(plan.bytes, static_cast<cudaStream_t>(stream),
                                  "cudaMallocAsync (linear attention workspace)", plan.ssd.table.data(),
                                  plan.ssd.table_bytes);
  detail::StreamExecutor exec{w.stream()};
  kernels::linear_attention_backward_launches(exec, p, g, plan, w.base());
}

}  // namespace ssm::cuda
