// The optimized CPU forward of the selective scan: an umbrella for scan/forward.hpp (the driver and its schedules),
// which includes scan/engine.hpp (the vectorized recurrence) and scan/complex.hpp (complex A).
#pragma once

#include "ssm/cpu/scan/forward.hpp"
