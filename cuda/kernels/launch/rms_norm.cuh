// The launch logic of the RMSNorm kernel (with the fused residual add), written once over an executor
// (`exec.launch(kernel, LaunchDims grid, LaunchDims block, args...)`): its limits, grid and dtype dispatch. ssm::cuda
// runs it on a stream (cuda/src/rms_norm.cu), the host emulation with emu::HostExecutor (cuda/emu/backend_entries.hpp).
#pragma once

#include "../rms_norm.cuh"
#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"

namespace ssm::kernels {

template <class Exec>
void rms_norm_launches(Exec& exec, const RmsNormParams& p, const char* op) {
  SSM_CHECK(p.dtype == DType::f32 || p.dtype == DType::f64, op, ": dtype must be f32 or f64 on CUDA, got ",
            name(p.dtype));
  SSM_CHECK(p.rows >= 0 && p.rows <= 0x7fffffff && p.dim >= 0, op, ": rows must be in [0, 2^31) and dim >= 0, got rows = ",
            p.rows, ", dim = ", p.dim);
  SSM_CHECK(p.eps > 0, op, ": eps must be > 0, got ", p.eps);
  if (p.rows == 0 || p.dim == 0) return;
  SSM_CHECK(p.x && p.y, op, ": x and y must be set");
  const LaunchDims grid{static_cast<unsigned>(p.rows)}, block{static_cast<unsigned>(kRmsNormThreads)};
  if (p.dtype == DType::f32) exec.launch(rms_norm_kernel<float, kRmsNormThreads>, grid, block, p);
  else exec.launch(rms_norm_kernel<double, kRmsNormThreads>, grid, block, p);
}

}  // namespace ssm::kernels
