// Module header: the optimized CPU kernels (SIMD helpers and the selective-scan forward).
#pragma once

#include "ssm/cpu/selective_scan.hpp"
#include "ssm/cpu/selective_scan_backward.hpp"
#include "ssm/cpu/simd.hpp"
#include "ssm/cpu/threads.hpp"
