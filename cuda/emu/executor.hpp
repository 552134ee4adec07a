// The host executor of the launch templates (kernels/launch/*.cuh, the attention launches): "device" memory is host
// memory, every kernel runs under the emulation (emu::launch, in a chosen thread order; the first finding is an
// ssm::Error), and the GEMM (cuBLAS on the device) is a plain host loop accumulating in its element type (f32 or
// f64). The emulated backend (cuda/emu/backend.hpp) runs every op's launch template over it.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../kernels/common.cuh"
#include "emulation.hpp"
#include "ssm/core/error.hpp"

namespace ssm::emu {

class HostExecutor {
 public:
  /// stack_bytes: per emulated thread (0: the emulation's default, 1 MiB under AddressSanitizer). Each launch maps
  /// and unmaps threads × stack_bytes, which dominates short launches under ASan.
  explicit HostExecutor(Order order = Order::forward, std::uint64_t seed = 1, std::size_t stack_bytes = 0)
      : order_(order), seed_(seed), stack_bytes_(stack_bytes) {}

  /// Guarded and registered with the emulation's global shadow (global_memory.hpp), as the backend's memory.
  void* allocate(std::size_t bytes) {
    void* p = allocate_guarded(std::max<std::size_t>(bytes, 1), "executor buffer");
    SSM_CHECK(p != nullptr, "emulated executor: failed to allocate ", bytes, " bytes");
    blocks_.emplace_back(p);
    return p;
  }
  void upload(void* dst, const void* host, std::size_t bytes) { std::memcpy(dst, host, bytes); }
  /// Device to device (host memory here).
  void copy(void* dst, const void* src, std::size_t bytes) {
    if (bytes > 0) std::memcpy(dst, src, bytes);
  }
  /// (For tests; the launches themselves never copy back.)
  void download(void* host, const void* src, std::size_t bytes) { std::memcpy(host, src, bytes); }

  /// Launches run so far (every kernel, including the scan and the conv).
  std::int64_t launches() const { return launches_; }

  template <class... P, class... A>
  void launch(void (*kernel)(P...), kernels::LaunchDims grid, kernels::LaunchDims block, A... args) {
    run(dim3(grid.x, grid.y, grid.z), dim3(block.x, block.y, block.z), "kernel", kernel, static_cast<P>(args)...);
  }

  /// The row-major GEMM of the launch sequences (cuBLAS on the device), T = float or double, accumulating in T.
  template <class T>
  void gemm(bool trans_A, bool trans_B, std::int64_t M, std::int64_t N, std::int64_t K, const T* A,
            std::int64_t lda, std::int64_t stride_A, const T* B, std::int64_t ldb, std::int64_t stride_B, T* C,
            std::int64_t ldc, std::int64_t stride_C, std::int64_t batch) {
    for (std::int64_t p = 0; p < batch; ++p) {
      const T* Ap = A + p * stride_A;
      const T* Bp = B + p * stride_B;
      T* Cp = C + p * stride_C;
      for (std::int64_t i = 0; i < M; ++i)
        for (std::int64_t j = 0; j < N; ++j) {
          T acc = T(0);
          for (std::int64_t k = 0; k < K; ++k)
            acc += (trans_A ? Ap[k * lda + i] : Ap[i * lda + k]) * (trans_B ? Bp[j * ldb + k] : Bp[k * ldb + j]);
          Cp[i * ldc + j] = acc;
        }
    }
  }

 private:
  template <class Kernel, class... Args>
  void run(dim3 grid, dim3 block, const char* what, Kernel kernel, Args... args) {
    const LaunchConfig cfg{grid, block, order_, seed_ + static_cast<std::uint64_t>(launches_), stack_bytes_};
    const LaunchReport report = emu::launch(cfg, kernel, args...);
    ++launches_;
    SSM_CHECK(report.ok(), "emulated ", what, " launch ", launches_, ": ", report.summary());
  }

  Order order_;
  std::uint64_t seed_;
  std::size_t stack_bytes_;
  std::int64_t launches_ = 0;
  std::vector<std::unique_ptr<void, FreeGuarded>> blocks_;
};

}  // namespace ssm::emu
