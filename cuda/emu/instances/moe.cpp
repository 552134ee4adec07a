// The emulated backend's mixture-of-experts launchers, compiled once (see ../launch_instances.hpp).
#include "../../kernels/launch/moe.cuh"
#include "../executor.hpp"
#include "../launch_instances.hpp"

SSM_EMU_MOE_INSTANCES(template)
