// The emulated backend's long convolution launcher, compiled once (see ../launch_instances.hpp).
#include "../../kernels/launch/long_conv.cuh"
#include "../executor.hpp"
#include "../launch_instances.hpp"

SSM_EMU_LONG_CONV_INSTANCES(template)
