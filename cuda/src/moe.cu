// ssm::cuda::moe_forward: the plan, the workspace (stream-ordered) and the launches of kernels/launch/moe.cuh on a
// stream.
#include <cuda_runtime.h>

#include "../kernels/launch/moe.cuh"
#include "cuda_check.cuh"
#include "ssm/cuda/moe.hpp"
#include "ssm/cuda/runtime.hpp"
#include "stream_executor.cuh"

namespace ssm::cuda {

void moe_forward(const MoeParams& p, void* stream) {
  const kernels::MoePlan plan = kernels::plan_moe(p, "ssm::cuda::moe_forward");
  if (p.tokens == 0) return;
  (void)device_count();  // a clear error (the runtime's message) when no GPU is usable
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  void* base = nullptr;
  detail::check_cuda(cudaMallocAsync(&base, plan.bytes, s), "cudaMallocAsync (moe workspace)");
  struct Free {
    void* p;
    cudaStream_t s;
    ~Free() { (void)cudaFreeAsync(p, s); }
  } free_at_exit{base, s};
  detail::StreamExecutor exec{s};
  kernels::moe_forward_launches(exec, p, plan, base);
}

}  // namespace ssm::cuda
