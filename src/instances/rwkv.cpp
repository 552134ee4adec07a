// RWKV-4's and RWKV-7's CPU entry points, compiled once (see ssm/core/instances.hpp).
#include "ssm/cpu/rwkv4.hpp"
#include "ssm/cpu/rwkv7.hpp"

SSM_FOR_EACH_INPUT(SSM_CPU_RWKV4_INSTANCES, template)
SSM_FOR_EACH_INPUT(SSM_CPU_RWKV7_INSTANCES, template)
