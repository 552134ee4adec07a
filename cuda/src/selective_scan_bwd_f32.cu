// Fused selective-scan backward, f32 inputs (f32 weights and state): the launcher and kernel instantiations for this
// dtype (one file per dtype, so that nvcc compiles them in parallel). Launch logic: kernels/launch/selective_scan.cuh.
#include "../kernels/launch/selective_scan.cuh"
#include "stream_executor.cuh"

namespace ssm::kernels {
using cuda::detail::StreamExecutor;
template void launch_selective_scan_bwd<float, StreamExecutor>(StreamExecutor&, const ScanParams&,
                                                                  const ScanDeviceGradParams&, std::int64_t);
}  // namespace ssm::kernels
