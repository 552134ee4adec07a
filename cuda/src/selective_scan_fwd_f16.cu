// Fused selective-scan forward, f16 inputs (f32 weights and state): the kernel instantiations for this dtype.
#include "selective_scan_fwd_launch.cuh"

namespace ssm::cuda::detail {
template void launch_selective_scan_fwd<ssm::half>(const ScanParams&, float*, std::int64_t, cudaStream_t);
}  // namespace ssm::cuda::detail
