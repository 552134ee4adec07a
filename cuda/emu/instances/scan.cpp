// The emulated backend's selective-scan and state-update launchers, compiled once (see ../launch_instances.hpp).
#include "../../kernels/launch/selective_scan.cuh"
#include "../../kernels/launch/selective_state_update.cuh"
#include "../executor.hpp"
#include "../launch_instances.hpp"

SSM_EMU_SCAN_INSTANCES(template)
