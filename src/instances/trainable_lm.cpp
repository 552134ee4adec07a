// The f32 trainable language model's training entry points, compiled once (see ssm/models/trainable_lm.hpp).
#include "ssm/models/trainable_lm.hpp"

SSM_TRAINABLE_LM_INSTANCES(template, float)
