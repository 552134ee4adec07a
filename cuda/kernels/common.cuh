// What every kernel header includes: under nvcc the CUDA headers and CUB; under a host compiler the host
// emulation (cuda/emu/emulation.hpp), so the same kernel source runs on the CPU in tests. Also the block
// primitive policy (cub::BlockScan on the device, the emulation's stand-in on the host), the one macro for
// shared memory (SSM_SHARED), the unroll pragma, and input loads / output stores per element type.
#pragma once

#include <cstdint>
#include <type_traits>

#include "ssm/core/dtype.hpp"
#include "ssm/core/index.hpp"
#include "ssm/core/scalar.hpp"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cub/block/block_scan.cuh>

/// One shared-memory array per block (under the emulation: bounds- and race-checked storage).
#define SSM_SHARED(T, name, N) __shared__ T name[N]
#define SSM_UNROLL _Pragma("unroll")

namespace ssm::kernels {
/// Block-wide scan of T over kThreads threads (blocked arrangement). Warp scans: log-depth shuffles per
/// warp, then the warp aggregates through shared memory; the variant mamba's kernel uses.
template <class T, int kThreads>
using BlockScan = cub::BlockScan<T, kThreads, cub::BLOCK_SCAN_WARP_SCANS>;
}  // namespace ssm::kernels

#else
#include "../emu/emulation.hpp"

#define SSM_UNROLL _Pragma("GCC unroll 16")

namespace ssm::kernels {
template <class T, int kThreads>
using BlockScan = ::ssm::emu::BlockScan<T, kThreads>;
}  // namespace ssm::kernels
#endif

namespace ssm::kernels {

using ::ssm::index_t;

/// Grid / block extents of a launch, for launch sequences written over an executor (the device launches them
/// with <<<>>>, tests under the host emulation): converted to dim3 by the executor.
struct LaunchDims {
  unsigned x = 1, y = 1, z = 1;
};

/// Calls f(In{}) for the kernels' input type of `dtype`: f32, f16, and bf16 for the rest (each launch's plan or checks
/// have refused other dtypes before). Host code: the launch sequences instantiate their kernels per dtype through it.
template <class F>
void visit_input_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32:
      f(float{});
      break;
    case DType::f16:
      f(::ssm::half{});
      break;
    default:
      f(::ssm::bfloat16{});
      break;
  }
}

/// Loads one input element as float (hardware conversion on the device).
template <class In>
__device__ __forceinline__ float load_float(const In* p) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<In, ::ssm::half>) return __half2float(*reinterpret_cast<const __half*>(p));
  else if constexpr (std::is_same_v<In, ::ssm::bfloat16>)
    return __bfloat162float(*reinterpret_cast<const __nv_bfloat16*>(p));
  else return *p;
#else
  return ::ssm::to_float(*p);
#endif
}

/// Stores a float as one element of type Out (round to nearest even).
template <class Out>
__device__ __forceinline__ void store_float(Out* p, float v) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<Out, ::ssm::half>) *reinterpret_cast<__half*>(p) = __float2half_rn(v);
  else if constexpr (std::is_same_v<Out, ::ssm::bfloat16>) *reinterpret_cast<__nv_bfloat16*>(p) = __float2bfloat16_rn(v);
  else *p = v;
#else
  *p = ::ssm::from_float<Out>(v);
#endif
}

}  // namespace ssm::kernels
