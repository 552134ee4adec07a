// Eigen's matrix-product kernels for the library's scalar types, compiled once (see ssm/core/eigen.hpp).
#include "ssm/core/eigen.hpp"

SSM_FOR_EACH_EIGEN_SCALAR(SSM_EIGEN_PRODUCT_INSTANCES, template)
