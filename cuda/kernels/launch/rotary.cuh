// The launch logic of the rotary kernel, written once over an executor (`exec.launch(kernel, LaunchDims grid,
// LaunchDims block, args...)`): its limits, grid and dtype dispatch. ssm::cuda runs it on a stream
// (cuda/src/rotary.cu), the host emulation with emu::HostExecutor (cuda/emu/backend_entries.hpp).
#pragma once

#include "../rotary.cuh"
#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"

namespace ssm::kernels {

template <class Exec>
void rotary_launches(Exec& exec, const RotaryParams& p, const char* op) {
  SSM_CHECK(p.dtype == DType::f32 || p.dtype == DType::f64, op, ": dtype must be f32 or f64 on CUDA, got ",
            name(p.dtype));
  SSM_CHECK(p.batch >= 0 && p.seqlen >= 0 && p.heads >= 0 && p.dim >= 0 && p.dim % 2 == 0, op,
            ": sizes must be >= 0 with an even dim, got b = ", p.batch, ", l = ", p.seqlen, ", h = ", p.heads,
            ", d = ", p.dim);
  SSM_CHECK(p.period >= 0 && p.position_offset >= 0, op, ": position_offset and period must be >= 0, got ",
            p.position_offset, " and ", p.period);
  const std::int64_t half = p.dim / 2;
  if (p.batch == 0 || p.seqlen == 0 || p.heads == 0 || half == 0) return;
  SSM_CHECK(p.x && p.y, op, ": x and y must be set");
  // One thread per (token, pair): b · l · d/2 threads, at most 2^31 − 1 blocks.
  const std::int64_t blocks_max = 0x7fffffff;
  SSM_CHECK(p.batch * p.seqlen <= blocks_max * kRotaryThreads / half, op, ": b · l · d/2 = ", p.batch, " · ",
            p.seqlen, " · ", half, " (token, pair) threads exceed the grid (2^31 − 1 blocks of ", kRotaryThreads,
            ")");
  const std::int64_t pairs = p.batch * p.seqlen * half;
  const LaunchDims grid{static_cast<unsigned>((pairs + kRotaryThreads - 1) / kRotaryThreads)};
  const LaunchDims block{static_cast<unsigned>(kRotaryThreads)};
  if (p.dtype == DType::f32) exec.launch(rotary_kernel<float, kRotaryThreads>, grid, block, p);
  else exec.launch(rotary_kernel<double, kRotaryThreads>, grid, block, p);
}

}  // namespace ssm::kernels
