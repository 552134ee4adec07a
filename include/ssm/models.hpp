// Module header: models and their file formats — the safetensors reader/writer, the language models (one body,
// models/causal_lm.hpp, over the Mamba and Mamba-2 blocks: Hugging Face checkpoints, prefill and generation), the
// tokenizer.json tokenizer, and StackLM, a language model over a hybrid stack to train (models/stack_lm.hpp; every
// trainable mixer by name: models/trainable_lm.hpp).
#pragma once

#include "ssm/models/decode_stream.hpp"
#include "ssm/models/fine_tune.hpp"
#include "ssm/models/jamba.hpp"
#include "ssm/models/mamba.hpp"
#include "ssm/models/mamba2.hpp"
#include "ssm/models/rwkv.hpp"
#include "ssm/models/safetensors.hpp"
#include "ssm/models/stack_lm.hpp"
#include "ssm/models/striped_hyena.hpp"
#include "ssm/models/tokenizer.hpp"
#include "ssm/models/trainable_lm.hpp"
