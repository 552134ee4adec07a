// The emulated backend's SSD (Mamba-2) launchers, compiled once (see ../launch_instances.hpp).
#include "../../kernels/launch/ssd.cuh"
#include "../executor.hpp"
#include "../launch_instances.hpp"

SSM_EMU_SSD_INSTANCES(template)
