// The emulated backend's linear-attention launchers, compiled once (see ../launch_instances.hpp).
#include "../../kernels/launch/linear_attention.cuh"
#include "../executor.hpp"
#include "../launch_instances.hpp"

SSM_EMU_LINEAR_ATTENTION_INSTANCES(template)
