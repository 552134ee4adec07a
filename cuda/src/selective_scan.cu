// ssm::cuda::selective_scan_forward / _backward: check what the fused kernels support, then launch the per-dtype
// instantiations (selective_scan_{fwd,bwd}_{f32,f16,bf16}.cu). The op ssm::selective_scan has validated shapes,
// dtypes and devices already; the checks here guard the kernel's own limits.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "../kernels/selective_scan_bwd.cuh"
#include "cuda_check.cuh"
#include "ssm/cuda/runtime.hpp"
#include "ssm/cuda/selective_scan.hpp"

namespace ssm::cuda {
namespace detail {
template <class In>
void launch_selective_scan_fwd(const ScanParams& p, float* chunk_states, std::int64_t max_len, cudaStream_t stream);
extern template void launch_selective_scan_fwd<float>(const ScanParams&, float*, std::int64_t, cudaStream_t);
extern template void launch_selective_scan_fwd<half>(const ScanParams&, float*, std::int64_t, cudaStream_t);
extern template void launch_selective_scan_fwd<bfloat16>(const ScanParams&, float*, std::int64_t, cudaStream_t);
template <class In>
void launch_selective_scan_bwd(const ScanParams& p, const ScanDeviceGradParams& g, cudaStream_t stream);
extern template void launch_selective_scan_bwd<float>(const ScanParams&, const ScanDeviceGradParams&, cudaStream_t);
extern template void launch_selective_scan_bwd<half>(const ScanParams&, const ScanDeviceGradParams&, cudaStream_t);
extern template void launch_selective_scan_bwd<bfloat16>(const ScanParams&, const ScanDeviceGradParams&, cudaStream_t);

// The kernel limits both directions share.
void check_supported(const ScanParams& p, DType input_dtype, const char* op) {
  SSM_CHECK(input_dtype == DType::f32 || input_dtype == DType::f16 || input_dtype == DType::bf16, op,
            ": input dtype must be f32, f16 or bf16 on CUDA, got ", name(input_dtype));
  SSM_CHECK(!p.is_complex, op, ": complex A is not supported by the CUDA kernel (use the CPU path)");
  SSM_CHECK(p.dstate >= 1 && p.dstate <= kernels::kScanMaxDstate, op, ": state size n must be in [1, ",
            kernels::kScanMaxDstate, "], got ", p.dstate);
  SSM_CHECK(p.n_groups >= 1 && p.dim >= 1 && p.dim % p.n_groups == 0, op, ": d (", p.dim,
            ") must be a positive multiple of the number of groups g (", p.n_groups, ")");
  SSM_CHECK(p.u && p.delta && p.A && p.B && p.C, op, ": u, delta, A, B and C must be set");
  SSM_CHECK(p.dim <= 0x7fffffff, op, ": d must be below 2^31, got ", p.dim);
  SSM_CHECK(p.seqlen <= 0x7fffffff, op, ": l must be below 2^31 (32-bit positions in the kernel), got ", p.seqlen);
}
}  // namespace detail

std::int64_t selective_scan_chunk_len(std::int64_t max_seqlen) { return kernels::fwd_chunk_len(max_seqlen); }

std::int64_t selective_scan_chunk_count(std::int64_t max_seqlen) {
  const std::int64_t c = selective_scan_chunk_len(max_seqlen);
  return std::max<std::int64_t>(1, (max_seqlen + c - 1) / c);
}

std::string selective_scan_forward(const ScanParams& p, DType input_dtype, const ScanForwardOptions& options) {
  constexpr const char* op = "ssm::cuda::selective_scan_forward";
  detail::check_supported(p, input_dtype, op);
  SSM_CHECK(p.out, op, ": out must be set");
  SSM_CHECK(!p.cu_seqlens || p.batch == 1, op, ": cu_seqlens needs b == 1, got b = ", p.batch);
  const std::int64_t sequences = kernels::fwd_num_sequences(p);
  SSM_CHECK(sequences >= 0 && sequences <= 65535, op, ": at most 65535 sequences per launch, got ", sequences);
  SSM_CHECK(options.max_seqlen >= 0, op, ": max_seqlen must be >= 0, got ", options.max_seqlen);
  if (sequences == 0 || p.seqlen < 0) return "cuda-fused";
  (void)device_count();  // a clear error (the runtime's message) when no GPU is usable
  if (options.device >= 0) {
    ensure_device(options.device);
    detail::check_cuda(cudaSetDevice(options.device), "cudaSetDevice");
  }
  const std::int64_t max_len = p.cu_seqlens && options.max_seqlen > 0 ? options.max_seqlen : p.seqlen;
  auto stream = static_cast<cudaStream_t>(options.stream);
  switch (input_dtype) {
    case DType::f32: detail::launch_selective_scan_fwd<float>(p, options.chunk_states, max_len, stream); break;
    case DType::f16: detail::launch_selective_scan_fwd<half>(p, options.chunk_states, max_len, stream); break;
    default: detail::launch_selective_scan_fwd<bfloat16>(p, options.chunk_states, max_len, stream); break;
  }
  return "cuda-fused";
}

void selective_scan_backward(const ScanParams& p, DType input_dtype, const ScanDeviceGradParams& g, void* stream) {
  constexpr const char* op = "ssm::cuda::selective_scan_backward";
  detail::check_supported(p, input_dtype, op);
  SSM_CHECK(!p.cu_seqlens, op, ": packed variable-length batches (cu_seqlens) are not supported by the backward kernel");
  SSM_CHECK(p.batch >= 0 && p.batch <= 65535, op, ": b must be in [0, 65535], got ", p.batch);
  SSM_CHECK(g.grad_out && g.grad_u && g.grad_delta && g.grad_A && g.grad_B && g.grad_C, op,
            ": grad_out, grad_u, grad_delta, grad_A, grad_B and grad_C must be set");
  SSM_CHECK(!p.z || g.grad_z, op, ": grad_z must be set when z is given");
  SSM_CHECK(g.chunk_states && g.n_chunks_max == selective_scan_chunk_count(p.seqlen), op,
            ": chunk_states from the forward with n_chunks_max = selective_scan_chunk_count(l) = ",
            selective_scan_chunk_count(p.seqlen), " are needed, got n_chunks_max = ", g.n_chunks_max);
  if (p.batch == 0 || p.seqlen < 0) return;
  (void)device_count();
  auto s = static_cast<cudaStream_t>(stream);
  switch (input_dtype) {
    case DType::f32: detail::launch_selective_scan_bwd<float>(p, g, s); break;
    case DType::f16: detail::launch_selective_scan_bwd<half>(p, g, s); break;
    default: detail::launch_selective_scan_bwd<bfloat16>(p, g, s); break;
  }
}

}  // namespace ssm::cuda
