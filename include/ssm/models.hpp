// Module header: models and their file formats — the safetensors reader/writer and the Mamba
// language model (Hugging Face checkpoints, prefill and generation).
#pragma once

#include "ssm/models/mamba.hpp"
#include "ssm/models/safetensors.hpp"
