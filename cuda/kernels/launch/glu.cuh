// The launch logic of the gated linear unit's kernel over an executor: its limits, grid and dtype dispatch. ssm::cuda
// runs it on a stream (cuda/src/glu.cu), the host emulation with emu::HostExecutor (cuda/emu/backend_entries.hpp).
#pragma once

#include "../glu.cuh"
#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"

namespace ssm::kernels {

template <class Exec>
void glu_launches(Exec& exec, const GluParams& p, const char* op) {
  SSM_CHECK(p.dtype == DType::f32 || p.dtype == DType::f64, op, ": dtype must be f32 or f64 on CUDA, got ",
            name(p.dtype));
  SSM_CHECK(p.rows >= 0 && p.dim >= 0, op, ": sizes must be >= 0, got rows = ", p.rows, ", h = ", p.dim);
  if (p.rows == 0 || p.dim == 0) return;
  SSM_CHECK(p.z && p.y, op, ": z and y must be set");
  const std::int64_t blocks_max = 0x7fffffff;
  SSM_CHECK(p.rows <= blocks_max * kGluThreads / p.dim, op, ": rows · h = ", p.rows, " · ", p.dim,
            " outputs exceed the grid (2^31 − 1 blocks of ", kGluThreads, ")");
  const LaunchDims grid{static_cast<unsigned>((p.rows * p.dim + kGluThreads - 1) / kGluThreads)};
  const LaunchDims block{static_cast<unsigned>(kGluThreads)};
  if (p.dtype == DType::f32) exec.launch(glu_kernel<float, kGluThreads>, grid, block, p);
  else exec.launch(glu_kernel<double, kGluThreads>, grid, block, p);
}

}  // namespace ssm::kernels
