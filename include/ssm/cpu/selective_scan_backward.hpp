// The CPU backward of the selective scan: an umbrella for scan/backward_schedule.hpp (the driver: channel blocks or
// time split), which includes scan/backward_kernels.hpp (the block kernels), scan/engine.hpp (the recurrence it
// shares with the forward) and scan/complex.hpp (complex A).
#pragma once

#include "ssm/cpu/scan/backward_schedule.hpp"
