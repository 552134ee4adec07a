// ssm::cuda::ssd_forward: the plan, the workspace (stream-ordered) and the launches of kernels/launch/ssd.cuh on a
// stream.
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
  const auto s = static_cast<cudaStream_t>(stream);
  void* base = nullptr;
  detail::check_cuda(cudaMallocAsync(&base, plan.bytes, s), "cudaMallocAsync (ssd workspace)");
  struct Free {
    void* base;
    cudaStream_t s;
    ~Free() { (void)cudaFreeAsync(base, s); }
  } free_at_exit{base, s};
  // From pageable memory: returns once the table is staged, so the host vector may go.
  detail::check_cuda(cudaMemcpyAsync(base, plan.table.data(), plan.table_bytes, cudaMemcpyHostToDevice, s),
                     "cudaMemcpyAsync (ssd chunk table)");
  detail::StreamExecutor exec{s};
  kernels::ssd_forward_launches(exec, p, plan, kernels::ssd_workspace(plan, base));
}

}  // namespace ssm::cuda
