// The emulated backend's RWKV-7 launchers, compiled once (see ../launch_instances.hpp).
#include "../../kernels/launch/rwkv7.cuh"
#include "../executor.hpp"
#include "../launch_instances.hpp"

SSM_EMU_RWKV7_INSTANCES(template)
