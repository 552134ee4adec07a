// Fused selective-scan backward, f32 inputs (f32 weights, state and weight gradients): the kernel instantiations.
#include "selective_scan_bwd_launch.cuh"

namespace ssm::cuda::detail {
template void launch_selective_scan_bwd<float>(const ScanParams&, const ScanDeviceGradParams&, cudaStream_t);
}  // namespace ssm::cuda::detail
