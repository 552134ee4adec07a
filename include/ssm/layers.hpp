// Module header: the sequence layers — the LSSL in its three views; linear, embedding, RMSNorm, SiLU,
// softplus, causal depthwise conv1d, and the Mamba block (forward, step, backward).
#pragma once

#include "ssm/layers/basic.hpp"
#include "ssm/layers/conv1d.hpp"
#include "ssm/layers/lssl.hpp"
#include "ssm/layers/mamba.hpp"
#include "ssm/layers/mamba2.hpp"
