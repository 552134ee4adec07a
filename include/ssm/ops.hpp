// Module header: the ops (validated, dispatched entry points) and their reference implementations.
// Selective scan (S6, docs/math.md §5): forward, backward, packed variable-length batches; the causal conv1d of the
// Mamba block (forward, backward, one-token update); the one-token selective state update (decoding); the dense ops
// layers are made of: linear, RMSNorm (with the fused residual add), LayerNorm, rotary position embedding, the gated
// linear unit, embedding; the chunked recurrences of the linear-attention family: SSD, linear attention / GLA, the
// delta rule, RWKV-7, TTT-Linear; the sparse mixture of experts; the S4 layers' long convolution and Hyena's gated
// long convolutions; the language-model loss (cross-entropy fused with its gradient).
#pragma once

#include "ssm/ops/causal_conv1d.hpp"
#include "ssm/ops/cross_entropy.hpp"
#include "ssm/ops/delta_rule.hpp"
#include "ssm/ops/embedding.hpp"
#include "ssm/ops/glu.hpp"
#include "ssm/ops/hyena.hpp"
#include "ssm/ops/layer_norm.hpp"
#include "ssm/ops/linear_attention.hpp"
#include "ssm/ops/linear.hpp"
#include "ssm/ops/long_conv.hpp"
#include "ssm/ops/moe.hpp"
#include "ssm/ops/rms_norm.hpp"
#include "ssm/ops/rotary.hpp"
#include "ssm/ops/rwkv4.hpp"
#include "ssm/ops/rwkv7.hpp"
#include "ssm/ops/selective_scan.hpp"
#include "ssm/ops/selective_state_update.hpp"
#include "ssm/ops/ssd.hpp"
#include "ssm/ops/ttt_linear.hpp"
#include "ssm/core/params/selective_scan_grad.hpp"
#include "ssm/core/params/selective_scan.hpp"
#include "ssm/reference/selective_scan.hpp"
