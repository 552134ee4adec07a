// Host API of the one-token selective state update on a CUDA device (core/params/selective_state_update.hpp;
// kernel in cuda/kernels/selective_state_update.cuh): the decode step of the Mamba block, state updated in place.
#pragma once

#include "ssm/core/params/selective_state_update.hpp"

namespace ssm::cuda {

/// f32 or f64 (every tensor in p.dtype); b <= 65535. Runs on `stream` (null: the default stream), does not
/// synchronize. ssm::Error for other dtypes and CUDA failures.
void selective_state_update(const SelectiveStateUpdateParams& p, void* stream = nullptr);

}  // namespace ssm::cuda
