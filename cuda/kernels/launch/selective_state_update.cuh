// The launch logic of the one-token selective state update, written once over an executor (`exec.launch(kernel,
// LaunchDims grid, LaunchDims block, args...)`): the kernel's limits, grid and dtype dispatch. ssm::cuda runs it on
// a stream (cuda/src/selective_state_update.cu), the host emulation with emu::HostExecutor
// (cuda/emu/backend_entries.hpp).
#pragma once

#include "../selective_state_update.cuh"
#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"

namespace ssm::kernels {

template <class Exec>
void selective_state_update_launches(Exec& exec, const SelectiveStateUpdateParams& p, const char* op) {
  SSM_CHECK(p.dtype == DType::f32 || p.dtype == DType::f64, op, ": dtype must be f32 or f64 on CUDA, got ",
            name(p.dtype));
  SSM_CHECK(p.batch >= 0 && p.batch <= 65535 && p.nheads >= 0 && p.nheads <= 65535 && p.dim >= 0 &&
                p.dim <= 0x7fffffff && p.dstate >= 0 && p.ngroups >= 1 && p.nheads % p.ngroups == 0,
            op, ": b and h must be in [0, 65535], d in [0, 2^31), n >= 0 and g >= 1 dividing h, got b = ", p.batch,
            ", h = ", p.nheads, ", d = ", p.dim, ", n = ", p.dstate, ", g = ", p.ngroups);
  if (p.batch == 0 || p.dim == 0 || p.nheads == 0) return;
  SSM_CHECK(p.x && p.dt && p.out && (p.dstate == 0 || (p.state && p.A && p.B && p.C)), op,
            ": state, x, dt, A, B, C and out must be set");
  const LaunchDims grid{static_cast<unsigned>((p.dim + kStateUpdateChannels - 1) / kStateUpdateChannels),
                        static_cast<unsigned>(p.nheads), static_cast<unsigned>(p.batch)};
  const LaunchDims block{static_cast<unsigned>(kStateUpdateThreads)};
  if (p.dtype == DType::f32) exec.launch(selective_state_update_kernel<float>, grid, block, p);
  else exec.launch(selective_state_update_kernel<double>, grid, block, p);
}

}  // namespace ssm::kernels
