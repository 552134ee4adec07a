// Linear attention's CPU entry points, compiled once (see ssm/core/instances.hpp).
#include "ssm/cpu/linear_attention.hpp"

SSM_FOR_EACH_INPUT(SSM_CPU_LINEAR_ATTENTION_INSTANCES, template)
