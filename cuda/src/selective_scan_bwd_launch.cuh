// Internal to ssm::cuda: the launcher of the fused selective-scan backward kernel for one input type, included
// by one .cu per dtype.
#pragma once

#include <cuda_runtime.h>

#include "../kernels/selective_scan_bwd.cuh"
#include "cuda_check.cuh"

namespace ssm::cuda::detail {

template <class In>
void launch_selective_scan_bwd(const ScanParams& p, const ScanDeviceGradParams& g, cudaStream_t stream) {
  kernels::dispatch_fwd_config(p.seqlen, [&](auto fwd_cfg) {
    using Cfg = kernels::ScanBwdConfig<decltype(fwd_cfg)>;
    const dim3 grid(static_cast<unsigned>(p.dim), static_cast<unsigned>(p.batch));
    kernels::selective_scan_bwd_kernel<In, Cfg::kThreads, Cfg::kItems><<<grid, Cfg::kThreads, 0, stream>>>(p, g);
  });
  check_cuda(cudaGetLastError(), "selective_scan_bwd_kernel launch");
}

}  // namespace ssm::cuda::detail
