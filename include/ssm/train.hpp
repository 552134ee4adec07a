// Module header: training. The parameter tree every optimizer step walks, gradient clipping, AdamW, the warmup +
// cosine learning-rate schedule, and the training state saved to and resumed from safetensors. The loss is an op
// (ssm::cross_entropy, ssm/ops/cross_entropy.hpp); the gradients come from the layers' backward.
#pragma once

#include "ssm/ops/cross_entropy.hpp"
#include "ssm/train/adamw.hpp"
#include "ssm/train/param_tree.hpp"
#include "ssm/train/schedule.hpp"
#include "ssm/train/state.hpp"
