// Backends and dispatch: which backends this build has, which SIMD level the CPU code was compiled
// for, and the one function every op calls to pick CPU or CUDA from its arguments' device.
#pragma once

#include <initializer_list>
#include <string>

#include "ssm/core/check.hpp"
#include "ssm/core/device.hpp"

#if defined(SSM_HAS_CUDA)
#include "ssm/cuda/runtime.hpp"
#endif

namespace ssm {

/// The SIMD instruction set the CPU code of this translation unit was compiled for.
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

/// True when this build links the CUDA backend (the consumer links ssm::cuda).
constexpr bool cuda_compiled() {
#if defined(SSM_HAS_CUDA)
  return true;
#else
  return false;
#endif
}

struct BackendInfo {
  bool cpu = true;
  const char* simd = simd_level();
  bool cuda_compiled = ssm::cuda_compiled();
  bool cuda_usable = false;  ///< compiled and a device answered
  std::string cuda_status;   ///< the runtime's own words, or why CUDA is unavailable
};

/// Which backends are available here, queried at call time.
inline BackendInfo backends() {
  BackendInfo info;
#if defined(SSM_HAS_CUDA)
  try {
    info.cuda_usable = ::ssm::cuda::device_count() > 0;
    info.cuda_status = ::ssm::cuda::runtime_status();
  } catch (const Error& e) {
    info.cuda_status = e.what();
  }
#else
  info.cuda_status = "not compiled: link the CMake target ssm::cuda";
#endif
  return info;
}

/// The device an op runs on, from its tensor arguments: all must share one device (else ssm::Error).
/// For a CUDA device it also checks that the backend is linked and the device is usable.
inline Device dispatch_device(const Checker& c, std::initializer_list<NamedView> args) {
  c.same_device(args);
  SSM_CHECK(args.size() > 0, c.op(), ": no tensor arguments to dispatch on");
  const Device dev = args.begin()->view.device();
  if (dev.is_cuda()) {
#if defined(SSM_HAS_CUDA)
    try {
      ::ssm::cuda::ensure_device(dev.index);
    } catch (const Error& e) {
      fail(c.op(), ": the tensors are on ", dev.str(), " but CUDA is unusable: ", e.what());
    }
#else
    fail(c.op(), ": the tensors are on ", dev.str(),
         " but the CUDA backend is not linked (link the CMake target ssm::cuda)");
#endif
  }
  return dev;
}

}  // namespace ssm
