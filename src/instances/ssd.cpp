// The SSD engine's CPU entry points, compiled once (see ssm/core/instances.hpp).
#include "ssm/cpu/ssd/backward.hpp"
#include "ssm/cpu/ssd/forward.hpp"
#include "ssm/cpu/ssd/recurrent.hpp"

SSM_FOR_EACH_INPUT(SSM_CPU_SSD_FORWARD_INSTANCES, template)
SSM_FOR_EACH_INPUT(SSM_CPU_SSD_BACKWARD_INSTANCES, template)
SSM_FOR_EACH_INPUT(SSM_CPU_SSD_RECURRENT_INSTANCES, template)
