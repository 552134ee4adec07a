// Internal to ssm::cuda: the device executor of the launch headers (cuda/kernels/launch/*.cuh, the attention
// launches): a kernel launch on one stream, each failure an ssm::Error with the runtime's words; device copies
// on that stream, and a copy to the host that waits for it. The first launch or copy checks that the runtime has a device (the runtime's message if not). Also the launches' stream-ordered workspace (StreamWorkspace).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../kernels/common.cuh"
#include "cuda_check.cuh"
#include "ssm/cuda/runtime.hpp"

namespace ssm::cuda::detail {

class StreamExecutor {
 public:
  explicit StreamExecutor(cudaStream_t stream = nullptr) : stream_(stream) {}

  template <class... P, class... A>
  void launch(void (*kernel)(P...), kernels::LaunchDims grid, kernels::LaunchDims block, A... args) {
    ensure_runtime();
    kernel<<<dim3(grid.x, grid.y, grid.z), dim3(block.x, block.y, block.z), 0, stream_>>>(static_cast<P>(args)...);
    check_cuda(cudaGetLastError(), "kernel launch");
  }
  void copy(void* dst, const void* src, std::size_t bytes) {
    ensure_runtime();
    check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_), "cudaMemcpyAsync");
  }
  /// Device to host, after the stream's earlier work: waits for the stream (kernels/launch/embedding.cuh's id check).
  void download(void* host, const void* src, std::size_t bytes) {
    ensure_runtime();
    check_cuda(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync (to the host)");
    check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

 private:
  /// Before the first launch (after the launch header's argument checks): the runtime's own message when no GPU is
  /// usable, instead of a failed launch.
  void ensure_runtime() {
    if (!runtime_checked_) (void)device_count();
    runtime_checked_ = true;
  }

  cudaStream_t stream_;
  bool runtime_checked_ = false;
};

/// `bytes` of device memory allocated stream-ordered on `stream` and freed there with the object (the launches'
/// workspace: kernels/launch/*.cuh lay it out), its first header_bytes copied from `header` (host memory, e.g. a
/// chunk table; pageable, so the copy has staged it when the constructor returns and the host buffer may go).
class StreamWorkspace {
 public:
  StreamWorkspace(std::size_t bytes, cudaStream_t stream, const char* what, const void* header = nullptr,
                  std::size_t header_bytes = 0)
      : stream_(stream) {
    check_cuda(cudaMallocAsync(&base_, bytes, stream_), what);
    if (header_bytes > 0)
      check_cuda(cudaMemcpyAsync(base_, header, header_bytes, cudaMemcpyHostToDevice, stream_),
                 "cudaMemcpyAsync (workspace header)");
  }
  ~StreamWorkspace() { (void)cudaFreeAsync(base_, stream_); }
  StreamWorkspace(const StreamWorkspace&) = delete;
  StreamWorkspace& operator=(const StreamWorkspace&) = delete;

  void* base() const { return base_; }
  cudaStream_t stream() const { return stream_; }

 private:
  void* base_ = nullptr;
  cudaStream_t stream_;
};

/// The planned entry points' common body: a clear error (the runtime's message) when no GPU is usable, `bytes` of
/// workspace stream-ordered on `stream` with the plan's table uploaded to its start, then launches(exec, base) on
/// that stream; the workspace is freed (stream-ordered) when launches returns or throws.
template <class Launches>
void run_with_workspace(std::size_t bytes, void* stream, const char* what, const std::vector<std::int64_t>& table,
                        Launches&& launches) {
  (void)::ssm::cuda::device_count();
  const StreamWorkspace w(bytes, static_cast<cudaStream_t>(stream), what, table.data(),
                          table.size() * sizeof(std::int64_t));
  StreamExecutor exec{w.stream()};
  launches(exec, w.base());
}

}  // namespace ssm::cuda::detail
