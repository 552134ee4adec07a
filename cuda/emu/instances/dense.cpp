// The emulated backend's cast, linear, RMSNorm, rotary, GLU and embedding launchers, compiled once
// (see ../launch_instances.hpp).
#include "../../kernels/launch/cast.cuh"
#include "../../kernels/launch/embedding.cuh"
#include "../../kernels/launch/glu.cuh"
#include "../../kernels/launch/linear.cuh"
#include "../../kernels/launch/rms_norm.cuh"
#include "../../kernels/launch/rotary.cuh"
#include "../executor.hpp"
#include "../launch_instances.hpp"

SSM_EMU_DENSE_INSTANCES(template)
