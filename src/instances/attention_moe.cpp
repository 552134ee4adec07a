// Attention's and the mixture of experts' CPU entry points, compiled once (see ssm/core/instances.hpp).
#include "ssm/cpu/attention.hpp"
#include "ssm/cpu/moe.hpp"

SSM_FOR_EACH_COMPUTE(SSM_CPU_ATTENTION_INSTANCES, template)
SSM_FOR_EACH_COMPUTE(SSM_CPU_MOE_INSTANCES, template)
