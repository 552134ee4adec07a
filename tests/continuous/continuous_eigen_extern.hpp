// Explicit instantiation declarations of the heavy Eigen templates the continuous-time tests share: the matrix
// exponential of MatrixXd / MatrixXcd (ssm/math/discretize.hpp, ssm/layers/lssl.hpp) and the general eigensolver
// on MatrixXd. Every TU of test_continuous includes this header, so none compiles them at -O3 on its own;
// continuous_eigen_instantiations.cpp (SSM_CONTINUOUS_INSTANTIATE defined) compiles each once.
#pragma once
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 AVX-512 false positive (ssm/core/macros.hpp)
#endif
#include <Eigen/Dense>
#include <unsupported/Eigen/MatrixFunctions>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#if defined(SSM_CONTINUOUS_INSTANTIATE)
#define SSM_CONTINUOUS_EXTERN
#else
#define SSM_CONTINUOUS_EXTERN extern
#endif

SSM_CONTINUOUS_EXTERN template void Eigen::internal::matrix_exp_compute<Eigen::MatrixXd, Eigen::MatrixXd>(
    const Eigen::MatrixXd&, Eigen::MatrixXd&, Eigen::internal::true_type);
SSM_CONTINUOUS_EXTERN template void Eigen::internal::matrix_exp_compute<Eigen::MatrixXcd, Eigen::MatrixXcd>(
    const Eigen::MatrixXcd&, Eigen::MatrixXcd&, Eigen::internal::true_type);
SSM_CONTINUOUS_EXTERN template Eigen::EigenSolver<Eigen::MatrixXd>&
Eigen::EigenSolver<Eigen::MatrixXd>::compute<Eigen::MatrixXd>(const Eigen::EigenBase<Eigen::MatrixXd>&, bool);

#undef SSM_CONTINUOUS_EXTERN
