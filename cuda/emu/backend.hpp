// The CUDA backend under the host emulation: a DeviceBackend (ssm/core/device_backend.hpp) named
// "cuda (host emulation)" whose device memory is host memory and whose op entry points run the kernel sources of
// cuda/kernels through the same launch code as ssm::cuda (kernels/launch/*.cuh, the attention launches), each
// kernel under emu::launch (emu::HostExecutor) in a chosen thread order. A finding of the emulation (a shared
// memory race, a divergent barrier, ...) is an ssm::Error naming the launch.
//
// Installed for DeviceType::cuda, it lets the public ops (ssm::selective_scan, causal_conv1d, attention_forward,
// ...) run on tensors of Device::cuda(0) without a GPU: the op code, the argument blocks it fills, the launchers'
// checks, grids and dtype dispatch, and the kernels are the ones a GPU would run.
//
//   ssm::emu::ScopedEmulatedCuda guard(ssm::emu::Order::random, 7);  // registers it; the destructor restores
//   ssm::Tensor u = u_cpu.to(ssm::Device::cuda(0));
//   auto r = ssm::selective_scan(inputs_on_cuda);                     // runs selective_scan_fwd_kernel emulated
//
// One device (index 0). Not thread-safe: the thread order is process-wide, set by the guard. A whole model runs on
// it the same way (model.to(ssm::Device::cuda(0))).
#pragma once

#include <cstddef>
#include <cstdint>

#include "executor.hpp"
#include "ssm/core/device.hpp"
#include "ssm/core/device_backend.hpp"
#include "ssm/core/instances.hpp"

namespace ssm::emu {

/// How the emulated backend runs its launches: the thread order within each block (Order::random: seeded, each
/// launch with seed + the launch's number) and the stack of each emulated thread (0: the emulation's default).
struct EmulatedCudaSettings {
  Order order = Order::forward;
  std::uint64_t seed = 1;
  std::size_t stack_bytes = 0;
};

namespace backend_detail {

inline constexpr const char* kName = "cuda (host emulation)";

inline EmulatedCudaSettings& settings() {
  static EmulatedCudaSettings s;
  return s;
}
/// The backend's table of entry points over the executor type Exec (backend_entries.hpp).
template <class Exec>
DeviceBackend make();

}  // namespace backend_detail
}  // namespace ssm::emu

// The table over the host executor is compiled once where SSM_EXTERN_INSTANCES is set (cuda/emu/instances/backend.cpp,
// with the launchers), so that a file installing the backend includes no kernel; elsewhere it is defined here.
#if SSM_EXTERN_INSTANCES
extern template ::ssm::DeviceBackend ssm::emu::backend_detail::make<::ssm::emu::HostExecutor>();
#else
#include "backend_entries.hpp"
#endif

namespace ssm::emu {

/// The emulated CUDA backend (one object per program).
inline const DeviceBackend& emulated_cuda_backend() {
  static const DeviceBackend b = backend_detail::make<HostExecutor>();
  return b;
}

/// Registers the emulated backend for DeviceType::cuda with the given thread order, and on destruction puts back
/// the backend (and the settings) it replaced. Guards nest. A tensor allocated while it is installed may outlive it:
/// each tensor keeps the deallocator of the backend that allocated it.
class ScopedEmulatedCuda {
 public:
  explicit ScopedEmulatedCuda(Order order = Order::forward, std::uint64_t seed = 1, std::size_t stack_bytes = 0)
      : saved_settings_(backend_detail::settings()) {
    backend_detail::settings() = EmulatedCudaSettings{order, seed, stack_bytes};
    previous_ = register_backend(DeviceType::cuda, &emulated_cuda_backend());
  }
  ~ScopedEmulatedCuda() {
    register_backend(DeviceType::cuda, previous_);
    backend_detail::settings() = saved_settings_;
  }
  ScopedEmulatedCuda(const ScopedEmulatedCuda&) = delete;
  ScopedEmulatedCuda& operator=(const ScopedEmulatedCuda&) = delete;

  /// The backend this guard replaced (null when none was registered).
  const DeviceBackend* previous() const { return previous_; }

 private:
  EmulatedCudaSettings saved_settings_;
  const DeviceBackend* previous_ = nullptr;
};

}  // namespace ssm::emu
