// Backends and dispatch, decided at run time: which backends are there (the CPU always; CUDA when a DeviceBackend
// is registered, ssm/core/device_backend.hpp), the SIMD level the CPU code was compiled for, and the one function
// every op calls to pick its device from its arguments.
#pragma once

#include <initializer_list>
#include <string>

#include "ssm/core/check.hpp"
#include "ssm/core/device.hpp"
#include "ssm/core/device_backend.hpp"

namespace ssm {

/// The SIMD instruction set the CPU code of this translation unit was compiled for (a property of the compiler
/// flags, identical across one program's units when they share flags; it names a level, it selects no code).
constexpr const char* simd_level() {
#if defined(__AVX512F__)
  return "avx512";
#elif defined(__AVX2__) && defined(__FMA__)
  return "avx2+fma";
#elif defined(__AVX2__)
  return "avx2";
#elif defined(__AVX__)
  return "avx";
#elif defined(__SSE4_2__)
  return "sse4.2";
#elif defined(__x86_64__) || defined(__SSE2__)
  return "sse2";
#elif defined(__ARM_NEON)
  return "neon";
#else
  return "scalar";
#endif
}

/// True when a CUDA backend is registered (the program links ssm::cuda, or a test installed the emulation).
inline bool cuda_linked() { return find_backend(DeviceType::cuda) != nullptr; }

struct BackendInfo {
  bool cpu = true;
  const char* simd = simd_level();
  bool cuda_linked = false;  ///< a CUDA backend is registered
  std::string cuda_name;     ///< its name ("cuda", "cuda (host emulation)"), or empty
  bool cuda_usable = false;  ///< registered and a device answered
  std::string cuda_status;   ///< the runtime's own words, or why CUDA is unavailable
};

/// Which backends are available here, queried at call time.
inline BackendInfo backends() {
  BackendInfo info;
  const DeviceBackend* cuda = find_backend(DeviceType::cuda);
  if (cuda == nullptr) {
    info.cuda_status = "not linked: link the CMake target ssm::cuda";
    return info;
  }
  info.cuda_linked = true;
  info.cuda_name = cuda->name;
  try {
    info.cuda_usable = cuda->device_count() > 0;
    info.cuda_status = cuda->status();
  } catch (const Error& e) {
    info.cuda_status = e.what();
  }
  return info;
}

/// The device an op runs on, from its tensor arguments: all must share one device (else ssm::Error).
/// For a CUDA device it also checks that a backend is registered and the device is usable.
inline Device dispatch_device(const Checker& c, std::initializer_list<NamedView> args) {
  c.same_device(args);
  SSM_CHECK(args.size() > 0, c.op(), ": no tensor arguments to dispatch on");
  const Device dev = args.begin()->view.device();
  if (dev.is_cuda()) {
    const DeviceBackend& b = backend_for(c.op(), dev);
    try {
      b.ensure_device(dev.index);
    } catch (const Error& e) {
      fail(c.op(), ": the tensors are on ", dev.str(), " but CUDA is unusable: ", e.what());
    }
  }
  return dev;
}

}  // namespace ssm
