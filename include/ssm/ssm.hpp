// The whole library: #include <ssm/ssm.hpp> and link ssm::ssm (add ssm::cuda for CUDA tensors).
#pragma once

#include "ssm/core.hpp"
