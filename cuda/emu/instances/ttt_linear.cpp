// The emulated backend's TTT-Linear launcher, compiled once (see ../launch_instances.hpp).
#include "../../kernels/launch/ttt_linear.cuh"
#include "../executor.hpp"
#include "../launch_instances.hpp"

SSM_EMU_TTT_LINEAR_INSTANCES(template)
