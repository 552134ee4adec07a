// The one definition of the Eigen templates continuous_eigen_extern.hpp declares extern for test_continuous.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 AVX-512 false positive (ssm/core/macros.hpp)
#endif
#define SSM_CONTINUOUS_INSTANTIATE
#include "continuous_eigen_extern.hpp"
