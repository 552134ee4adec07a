// Every launcher of cuda/kernels (kernels/launch/*.cuh and the attention launches) with the host executor that runs
// them under the emulation: what the emulated backend's entry points call (backend_entries.hpp) and what a test that
// launches kernels itself may include. Under SSM_EXTERN_INSTANCES the launchers are declared `extern template`: they
// are compiled once, family by family, in cuda/emu/instances/*.cpp (see launch_instances.hpp), not in every file
// that includes this header (each launcher instantiates its kernels for every dtype it takes).
#pragma once

#include "../kernels/attention.cuh"
#include "../kernels/launch/cast.cuh"
#include "../kernels/launch/causal_conv1d.cuh"
#include "../kernels/launch/delta_rule.cuh"
#include "../kernels/launch/embedding.cuh"
#include "../kernels/launch/glu.cuh"
#include "../kernels/launch/linear.cuh"
#include "../kernels/launch/linear_attention.cuh"
#include "../kernels/launch/long_conv.cuh"
#include "../kernels/launch/moe.cuh"
#include "../kernels/launch/rms_norm.cuh"
#include "../kernels/launch/rotary.cuh"
#include "../kernels/launch/rwkv7.cuh"
#include "../kernels/launch/selective_scan.cuh"
#include "../kernels/launch/selective_state_update.cuh"
#include "../kernels/launch/ssd.cuh"
#include "../kernels/launch/ttt_linear.cuh"
#include "executor.hpp"
#include "launch_instances.hpp"
#include "ssm/core/instances.hpp"

#if SSM_EXTERN_INSTANCES
SSM_EMU_LAUNCH_INSTANCES(extern template)
#endif
