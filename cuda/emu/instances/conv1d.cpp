// The emulated backend's causal conv1d launchers, compiled once (see ../launch_instances.hpp).
#include "../../kernels/launch/causal_conv1d.cuh"
#include "../executor.hpp"
#include "../launch_instances.hpp"

SSM_EMU_CONV1D_INSTANCES(template)
