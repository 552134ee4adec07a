// The index type of every size, stride and offset in the library (elements, signed 64-bit), shared by the
// tensors, the argument blocks in core/params/ and the CUDA kernels.
#pragma once

#include <cstdint>

namespace ssm {

using index_t = std::int64_t;

}  // namespace ssm
