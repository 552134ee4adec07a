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
