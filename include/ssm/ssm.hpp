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

#if defined(SSM_HAS_CUDA)
#include "ssm/cuda/attention.hpp"
#include "ssm/cuda/causal_conv1d.hpp"
#include "ssm/cuda/mamba_lm.hpp"
#include "ssm/cuda/runtime.hpp"
#include "ssm/cuda/selective_scan.hpp"
#endif
