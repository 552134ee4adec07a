// The whole library: #include <ssm/ssm.hpp> and link ssm::ssm (add ssm::cuda for CUDA tensors).
#pragma once

#include "ssm/attention.hpp"
#include "ssm/core.hpp"
#include "ssm/cpu.hpp"
#include "ssm/layers.hpp"
#include "ssm/math.hpp"
#include "ssm/models.hpp"
#include "ssm/ops.hpp"
#include "ssm/s4.hpp"
#include "ssm/train.hpp"

