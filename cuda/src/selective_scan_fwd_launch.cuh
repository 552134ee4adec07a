// Internal to ssm::cuda: the launcher of the fused selective-scan forward kernel for one input type, included
// by one .cu per dtype (they compile in parallel).
#pragma once

#include <cuda_runtime.h>

#include "../kernels/selective_scan_fwd.cuh"
#include "cuda_check.cuh"

namespace ssm::cuda::detail {

template <class In>
void launch_selective_scan_fwd(const ScanParams& p, float* chunk_states, std::int64_t max_len, cudaStream_t stream) {
  const std::int64_t sequences = kernels::fwd_num_sequences(p);
  kernels::dispatch_fwd_config(max_len, [&](auto cfg) {
    using Cfg = decltype(cfg);
    const std::int64_t n_chunks_max = std::max<std::int64_t>(1, (max_len + Cfg::kChunk - 1) / Cfg::kChunk);
    const dim3 grid(static_cast<unsigned>(p.dim), static_cast<unsigned>(sequences));
    kernels::selective_scan_fwd_kernel<In, Cfg::kThreads, Cfg::kItems>
        <<<grid, Cfg::kThreads, 0, stream>>>(p, chunk_states, n_chunks_max);
  });
  check_cuda(cudaGetLastError(), "selective_scan_fwd_kernel launch");
}

}  // namespace ssm::cuda::detail
