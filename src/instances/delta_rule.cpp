// The delta rule's CPU entry points, compiled once (see ssm/core/instances.hpp).
#include "ssm/cpu/delta_rule.hpp"

SSM_FOR_EACH_INPUT(SSM_CPU_DELTA_RULE_INSTANCES, template)
