// Module header: layers built from the ops — linear, embedding, RMSNorm, SiLU, softplus, causal
// depthwise conv1d, and the Mamba block (forward, step, backward).
#pragma once

#include "ssm/layers/basic.hpp"
#include "ssm/layers/conv1d.hpp"
#include "ssm/layers/mamba.hpp"
