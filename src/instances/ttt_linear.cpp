// TTT-Linear's CPU entry points, compiled once (see ssm/core/instances.hpp).
#include "ssm/cpu/ttt_linear.hpp"
#include "ssm/cpu/ttt_linear_backward.hpp"

SSM_FOR_EACH_INPUT(SSM_CPU_TTT_LINEAR_INSTANCES, template)
SSM_FOR_EACH_INPUT(SSM_CPU_TTT_LINEAR_BACKWARD_INSTANCES, template)
