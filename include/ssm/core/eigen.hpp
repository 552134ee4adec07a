// Eigen's dense core as the library includes it (GCC 12's false AVX-512 warning silenced around it:
// core/macros.hpp), and, where SSM_EXTERN_INSTANCES is set, Eigen's matrix-product kernels compiled once
// (core/instances.hpp, src/instances/eigen.cpp) instead of in every translation unit that multiplies matrices.
#pragma once

#include <complex>

#include "ssm/core/instances.hpp"
#include "ssm/core/macros.hpp"
SSM_EXTERNAL_INCLUDE_BEGIN
#include <Eigen/Core>
SSM_EXTERNAL_INCLUDE_END

/// Eigen's blocked matrix-product kernels for one scalar type T, with the template arguments Eigen's own product
/// code gives them (the register tile mr × nr and the packet types follow the target's vector width): the GEBP
/// micro-kernel, the operand packing of both storage orders, and the two matrix-vector products.
#define SSM_EIGEN_PRODUCT_INSTANCES(PREFIX, T)                                                                        \
  PREFIX struct Eigen::internal::gebp_kernel<T, T, long, Eigen::internal::blas_data_mapper<T, long, Eigen::ColMajor>, \
                                             Eigen::internal::gebp_traits<T, T>::mr,                                  \
                                             Eigen::internal::gebp_traits<T, T>::nr, false, false>;                   \
  PREFIX struct Eigen::internal::gemm_pack_lhs<                                                                       \
      T, long, Eigen::internal::const_blas_data_mapper<T, long, Eigen::ColMajor>,                                     \
      Eigen::internal::gebp_traits<T, T>::mr, Eigen::internal::gebp_traits<T, T>::LhsProgress,                        \
      Eigen::internal::gebp_traits<T, T>::LhsPacket4Packing, Eigen::ColMajor>;                                        \
  PREFIX struct Eigen::internal::gemm_pack_lhs<                                                                       \
      T, long, Eigen::internal::const_blas_data_mapper<T, long, Eigen::RowMajor>,                                     \
      Eigen::internal::gebp_traits<T, T>::mr, Eigen::internal::gebp_traits<T, T>::LhsProgress,                        \
      Eigen::internal::gebp_traits<T, T>::LhsPacket4Packing, Eigen::RowMajor>;                                        \
  PREFIX struct Eigen::internal::gemm_pack_rhs<T, long,                                                               \
                                               Eigen::internal::const_blas_data_mapper<T, long, Eigen::ColMajor>,     \
                                               Eigen::internal::gebp_traits<T, T>::nr, Eigen::ColMajor>;              \
  PREFIX struct Eigen::internal::general_matrix_vector_product<                                                       \
      long, T, Eigen::internal::const_blas_data_mapper<T, long, Eigen::ColMajor>, Eigen::ColMajor, false, T,          \
      Eigen::internal::const_blas_data_mapper<T, long, Eigen::RowMajor>, false, 0>;                                   \
  PREFIX struct Eigen::internal::general_matrix_vector_product<                                                       \
      long, T, Eigen::internal::const_blas_data_mapper<T, long, Eigen::RowMajor>, Eigen::RowMajor, false, T,          \
      Eigen::internal::const_blas_data_mapper<T, long, Eigen::ColMajor>, false, 0>;

/// The scalar types the library multiplies matrices of: f32, f64 and complex f64 (S4's kernels).
#define SSM_FOR_EACH_EIGEN_SCALAR(M, PREFIX) M(PREFIX, float) M(PREFIX, double) M(PREFIX, std::complex<double>)

#if SSM_EXTERN_INSTANCES
SSM_FOR_EACH_EIGEN_SCALAR(SSM_EIGEN_PRODUCT_INSTANCES, extern template)
#endif
