// The emulated backend's delta-rule launchers, compiled once (see ../launch_instances.hpp).
#include "../../kernels/launch/delta_rule.cuh"
#include "../executor.hpp"
#include "../launch_instances.hpp"

SSM_EMU_DELTA_RULE_INSTANCES(template)
