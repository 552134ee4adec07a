// The selective scan's CPU entry points, compiled once (see ssm/core/instances.hpp).
#include "ssm/cpu/scan/backward_schedule.hpp"
#include "ssm/cpu/scan/forward.hpp"
#include "ssm/reference/selective_scan.hpp"

SSM_FOR_EACH_INPUT(SSM_CPU_SCAN_FORWARD_INSTANCES, template)
SSM_FOR_EACH_INPUT(SSM_CPU_SCAN_BACKWARD_INSTANCES, template)
SSM_FOR_EACH_INPUT(SSM_REFERENCE_SCAN_INSTANCES, template)
