// The emulated backend's launchers under the host executor, compiled once (see backend.hpp and
// ssm/core/instances.hpp): linked by the tests that run kernels under the emulation.
#include "backend.hpp"

SSM_EMU_LAUNCH_INSTANCES(template)
