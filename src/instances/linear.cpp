// The linear layer's CPU products, compiled once (see ssm/core/instances.hpp).
#include "ssm/cpu/linear.hpp"

SSM_CPU_LINEAR_INSTANCES(template)
