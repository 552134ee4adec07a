// Module header: the sequence layers — the LSSL in its three views; linear, embedding, RMSNorm, SiLU,
// softplus, causal depthwise conv1d, the Mamba block (forward, step, backward), the Mamba-2 block, and the mixers of
// the linear-attention family: linear attention / RetNet / GLA, DeltaNet / Gated DeltaNet, RWKV-7's time mixing,
// TTT-Linear.
#pragma once

#include "ssm/layers/basic.hpp"
#include "ssm/layers/conv1d.hpp"
#include "ssm/layers/delta_net.hpp"
#include "ssm/layers/hyena.hpp"
#include "ssm/layers/hybrid_block.hpp"
#include "ssm/layers/linear_attention.hpp"
#include "ssm/layers/lssl.hpp"
#include "ssm/layers/mamba.hpp"
#include "ssm/layers/mamba2.hpp"
#include "ssm/layers/moe.hpp"
#include "ssm/layers/rwkv4.hpp"
#include "ssm/layers/rwkv7.hpp"
#include "ssm/layers/ttt_linear.hpp"
