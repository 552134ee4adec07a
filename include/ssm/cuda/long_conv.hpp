// Host API of the long convolution on a CUDA device (argument block in core/params/long_conv.hpp; kernel in
// cuda/kernels/long_conv.cuh, launch logic in cuda/kernels/launch/long_conv.cuh). Pointers are device memory of the
// current device; the call runs on `stream` (null: the default stream) and does not synchronize. ssm::Error for what
// it does not take and for CUDA failures.
#pragma once

#include "ssm/core/params/long_conv.hpp"

namespace ssm::cuda {

/// y = g_out ⊙ act(K * u + D u), u = g_in ⊙ x (gates optional), per batch row and channel by the direct sums, f32 or
/// f64 (accumulated in that type).
void long_conv_forward(const LongConvParams& p, void* stream = nullptr);

}  // namespace ssm::cuda
