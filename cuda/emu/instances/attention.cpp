// The emulated backend's attention launchers, compiled once (see ../launch_instances.hpp).
#include "../../kernels/attention.cuh"
#include "../executor.hpp"
#include "../launch_instances.hpp"

SSM_EMU_ATTENTION_INSTANCES(template)
