// Portability macros shared by host and device code.
// SSM_HOST_DEVICE marks scalar math that CPU code and CUDA kernels share (Eigen's EIGEN_DEVICE_FUNC idea).
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define SSM_HOST_DEVICE __host__ __device__
#define SSM_DEVICE __device__
#else
#define SSM_HOST_DEVICE
#define SSM_DEVICE
#endif

#define SSM_INLINE inline

#if defined(__GNUC__) || defined(__clang__)
#define SSM_FORCE_INLINE inline __attribute__((always_inline))
#define SSM_RESTRICT __restrict__
#else
#define SSM_FORCE_INLINE inline
#define SSM_RESTRICT
#endif

// Around the library's #include of Eigen's headers:
//     SSM_EXTERNAL_INCLUDE_BEGIN
//     #include <Eigen/Dense>
//     SSM_EXTERNAL_INCLUDE_END
// GCC 12 at -march=native (AVX-512) reports a false -Wmaybe-uninitialized in the intrinsics that Eigen's packet code
// inlines (the deliberately self-initialized __Y of _mm512_undefined_pd and friends in avx512fintrin.h: GCC bug
// 105593, fixed in later releases), in every file that instantiates an Eigen template, the user's own file included,
// where -isystem does not hide it. GCC decides with the pragma state at the locations of the inlined code, which are
// inside Eigen's headers, so the library includes Eigen with that one warning off and restores it right after: the
// user's own code keeps the warning. A program that includes Eigen before any ssm header gets GCC's warnings as they
// stand. (GCC 12 still reports -Wuninitialized for the same __Y where Eigen's AVX-512 transpose is inlined into an
// f32 GEMM at -O2; that one this region does not reach.)
#if defined(__GNUC__) && !defined(__clang__)
#define SSM_EXTERNAL_INCLUDE_BEGIN \
  _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"")
#define SSM_EXTERNAL_INCLUDE_END _Pragma("GCC diagnostic pop")
#else
#define SSM_EXTERNAL_INCLUDE_BEGIN
#define SSM_EXTERNAL_INCLUDE_END
#endif
