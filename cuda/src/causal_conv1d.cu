// ssm::cuda::causal_conv1d_forward / _update: argument checks, then the kernels of
// cuda/kernels/causal_conv1d.cuh for the input dtype.
#include <cuda_runtime.h>

#include <algorithm>

#include "../kernels/causal_conv1d.cuh"
#include "cuda_check.cuh"
#include "ssm/cuda/causal_conv1d.hpp"
#include "ssm/cuda/runtime.hpp"

namespace ssm::cuda {
namespace {

void check_dtype(DType t, const char* op) {
  SSM_CHECK(t == DType::f32 || t == DType::f16 || t == DType::bf16, op,
            ": input dtype must be f32, f16 or bf16 on CUDA, got ", name(t));
}

template <class F>
void visit_input(DType t, F&& f) {
  switch (t) {
    case DType::f32: f(float{}); break;
    case DType::f16: f(half{}); break;
    default: f(bfloat16{}); break;
  }
}

/// The checks the sequence kernels share (dtype, width, grid limits), and their grid: (tiles, d, b).
void check_sequence(const CausalConv1dParams& p, DType input_dtype, const char* op) {
  check_dtype(input_dtype, op);
  SSM_CHECK(p.width >= 2 && p.width <= kernels::kConvMaxWidth, op, ": width must be in [2, ", kernels::kConvMaxWidth,
            "], got ", p.width);
  SSM_CHECK(p.batch >= 0 && p.batch <= 65535 && p.dim >= 0 && p.dim <= 65535, op,
            ": b and d must be in [0, 65535], got b = ", p.batch, ", d = ", p.dim);
  SSM_CHECK(p.seqlen >= 0 && p.seqlen <= 0x7fffffff, op, ": l must be in [0, 2^31), got ", p.seqlen);
}
dim3 sequence_grid(const CausalConv1dParams& p) {
  using Cfg = kernels::ConvFwdConfig;
  constexpr std::int64_t tile = Cfg::kThreads * Cfg::kItems;
  return dim3(static_cast<unsigned>(std::max<std::int64_t>(1, (p.seqlen + tile - 1) / tile)),
              static_cast<unsigned>(p.dim), static_cast<unsigned>(p.batch));
}

}  // namespace

void causal_conv1d_forward(const CausalConv1dParams& p, DType input_dtype, void* stream) {
  constexpr const char* op = "ssm::cuda::causal_conv1d_forward";
  check_sequence(p, input_dtype, op);
  SSM_CHECK(p.x && p.weight && p.out, op, ": x, weight and out must be set");
  if (p.batch == 0 || p.dim == 0) return;
  (void)device_count();
  using Cfg = kernels::ConvFwdConfig;
  const dim3 grid = sequence_grid(p);
  visit_input(input_dtype, [&](auto in) {
    kernels::causal_conv1d_fwd_kernel<decltype(in), Cfg::kThreads, Cfg::kItems>
        <<<grid, Cfg::kThreads, 0, static_cast<cudaStream_t>(stream)>>>(p);
  });
  detail::check_cuda(cudaGetLastError(), "causal_conv1d_fwd_kernel launch");
}

void causal_conv1d_backward(const CausalConv1dParams& p, const CausalConv1dGradParams& g, DType input_dtype,
                            void* stream) {
  constexpr const char* op = "ssm::cuda::causal_conv1d_backward";
  check_sequence(p, input_dtype, op);
  SSM_CHECK(p.x && p.weight && g.grad_out && g.grad_x && g.grad_weight, op,
            ": x, weight, grad_out, grad_x and grad_weight must be set");
  if (p.batch == 0 || p.dim == 0) return;
  (void)device_count();
  using Cfg = kernels::ConvFwdConfig;
  const dim3 grid = sequence_grid(p);
  visit_input(input_dtype, [&](auto in) {
    kernels::causal_conv1d_bwd_kernel<decltype(in), Cfg::kThreads, Cfg::kItems>
        <<<grid, Cfg::kThreads, 0, static_cast<cudaStream_t>(stream)>>>(p, g);
  });
  detail::check_cuda(cudaGetLastError(), "causal_conv1d_bwd_kernel launch");
}

void causal_conv1d_update(const CausalConv1dUpdateParams& p, DType input_dtype, void* stream) {
  constexpr const char* op = "ssm::cuda::causal_conv1d_update";
  check_dtype(input_dtype, op);
  SSM_CHECK(p.width >= 2 && p.width <= kernels::kConvMaxWidth, op, ": width must be in [2, ", kernels::kConvMaxWidth,
            "], got ", p.width);
  SSM_CHECK(p.batch >= 0 && p.batch <= 65535 && p.dim >= 0, op, ": b must be in [0, 65535] and d >= 0");
  SSM_CHECK(p.x && p.conv_state && p.weight && p.out, op, ": x, conv_state, weight and out must be set");
  if (p.batch == 0 || p.dim == 0) return;
  (void)device_count();
  constexpr unsigned threads = 128;
  const dim3 grid(static_cast<unsigned>((p.dim + threads - 1) / threads), static_cast<unsigned>(p.batch));
  visit_input(input_dtype, [&](auto in) {
    kernels::causal_conv1d_update_kernel<decltype(in)><<<grid, threads, 0, static_cast<cudaStream_t>(stream)>>>(p);
  });
  detail::check_cuda(cudaGetLastError(), "causal_conv1d_update_kernel launch");
}

}  // namespace ssm::cuda
