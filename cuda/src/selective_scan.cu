// ssm::cuda::selective_scan_forward / _backward: the checks and launches of kernels/launch/selective_scan.cuh on a
// stream. The kernels of each input dtype are instantiated in their own file (selective_scan_{fwd,bwd}_*.cu), so
// the dtype switch here calls the extern instantiations. The op ssm::selective_scan has validated shapes, dtypes
// and devices already; the checks guard the kernels' own limits.
#include <cuda_runtime.h>

#include <string>

#include "../kernels/launch/selective_scan.cuh"
#include "stream_executor.cuh"
#include "ssm/cuda/runtime.hpp"
#include "ssm/cuda/selective_scan.hpp"

namespace ssm::kernels {
using cuda::detail::StreamExecutor;
extern template void launch_selective_scan_fwd<float, StreamExecutor>(StreamExecutor&, const ScanParams&,
                                                                  const ChunkStates&, std::int64_t);
extern template void launch_selective_scan_fwd<half, StreamExecutor>(StreamExecutor&, const ScanParams&,
                                                                  const ChunkStates&, std::int64_t);
extern template void launch_selective_scan_fwd<bfloat16, StreamExecutor>(StreamExecutor&, const ScanParams&,
                                                                  const ChunkStates&, std::int64_t);
extern template void launch_selective_scan_bwd<float, StreamExecutor>(StreamExecutor&, const ScanParams&,
                                                                      const ScanDeviceGradParams&, std::int64_t);
extern template void launch_selective_scan_bwd<half, StreamExecutor>(StreamExecutor&, const ScanParams&,
                                                                     const ScanDeviceGradParams&, std::int64_t);
extern template void launch_selective_scan_bwd<bfloat16, StreamExecutor>(StreamExecutor&, const ScanParams&,
                                                                         const ScanDeviceGradParams&, std::int64_t);
}  // namespace ssm::kernels

namespace ssm::cuda {

std::int64_t selective_scan_chunk_len(std::int64_t max_seqlen) { return kernels::fwd_chunk_len(max_seqlen); }

std::int64_t selective_scan_chunk_count(std::int64_t max_seqlen) { return kernels::scan_chunk_count(max_seqlen); }

ChunkStates selective_scan_chunk_states(std::int64_t max_seqlen) { return kernels::scan_chunk_layout(max_seqlen); }

std::string selective_scan_forward(const ScanParams& p, DType input_dtype, const ScanForwardOptions& options) {
  const std::int64_t max_len = kernels::check_scan_forward(p, input_dtype, options, "ssm::cuda::selective_scan_forward");
  if (max_len < 0) return "cuda-fused";
  (void)device_count();  // a clear error (the runtime's message) when no GPU is usable
  if (options.device >= 0) {
    ensure_device(options.device);
    detail::check_cuda(cudaSetDevice(options.device), "cudaSetDevice");
  }
  detail::StreamExecutor exec{static_cast<cudaStream_t>(options.stream)};
  kernels::visit_input_dtype(input_dtype, [&](auto in) {
    kernels::launch_selective_scan_fwd<decltype(in)>(exec, p, options.chunk_states, max_len);
  });
  return "cuda-fused";
}

void selective_scan_backward(const ScanParams& p, DType input_dtype, const ScanDeviceGradParams& g, void* stream) {
  const std::int64_t max_len = kernels::check_scan_backward(p, input_dtype, g, "ssm::cuda::selective_scan_backward");
  if (max_len < 0) return;
  detail::StreamExecutor exec{static_cast<cudaStream_t>(stream)};
  kernels::visit_input_dtype(input_dtype,
                             [&](auto in) { kernels::launch_selective_scan_bwd<decltype(in)>(exec, p, g, max_len); });
}

}  // namespace ssm::cuda
