// Host API of the compiled CUDA backend (target ssm::cuda): device queries, memory, copies.
// Linking ssm::cuda registers these (and the launchers) in the header-only library's run-time backend table
// (ssm/core/device_backend.hpp), which tensors and ops on CUDA devices go through. Every function throws ssm::Error carrying the CUDA runtime's message on failure.
#pragma once

#include <cstddef>
#include <string>

#include "ssm/core/device.hpp"

namespace ssm::cuda {

/// Number of usable CUDA devices; throws ssm::Error with the runtime's message when the query fails
/// (for example error 35, "CUDA driver version is insufficient", on a machine without a GPU).
int device_count();
/// Throws ssm::Error unless device `index` exists and the runtime works.
void ensure_device(int index);
/// One line describing the runtime: "2 device(s): NVIDIA H100 ..." or the error the runtime gave.
std::string runtime_status();

void* device_malloc(std::size_t bytes, int index);
void device_free(void* p, int index) noexcept;
void memcpy(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes);
/// `height` rows of `width` bytes, row i at dst + i dst_pitch and src + i src_pitch (any pair of devices).
void memcpy_2d(void* dst, std::size_t dst_pitch, Device dst_device, const void* src, std::size_t src_pitch,
               Device src_device, std::size_t width, std::size_t height);
void memset_zero(void* p, Device device, std::size_t bytes);

}  // namespace ssm::cuda
