// The CUDA entry of the run-time backend table (ssm/core/device_backend.hpp): this library's runtime, memory and
// launchers, registered for DeviceType::cuda when the program starts. The target ssm::cuda links every consumer
// with --undefined=ssm_cuda_backend_registered, so this object is always taken from the static archive and its
// registrar always runs, in whichever program links ssm::cuda.
#include <memory>

#include "ssm/core/device_backend.hpp"
#include "ssm/cuda/attention.hpp"
#include "ssm/cuda/cast.hpp"
#include "ssm/cuda/causal_conv1d.hpp"
#include "ssm/cuda/delta_rule.hpp"
#include "ssm/cuda/dense.hpp"
#include "ssm/cuda/linear_attention.hpp"
#include "ssm/cuda/long_conv.hpp"
#include "ssm/cuda/moe.hpp"
#include "ssm/cuda/runtime.hpp"
#include "ssm/cuda/rwkv7.hpp"
#include "ssm/cuda/selective_scan.hpp"
#include "ssm/cuda/selective_state_update.hpp"
#include "ssm/cuda/ssd.hpp"
#include "ssm/cuda/ttt_linear.hpp"

namespace ssm::cuda {
namespace {

DeviceBackend make_backend() {
  DeviceBackend b;
  b.name = "cuda";
  b.device_count = &device_count;
  b.ensure_device = &ensure_device;
  b.status = &runtime_status;
  b.allocate = &device_malloc;
  b.deallocate = &device_free;
  b.copy = &ssm::cuda::memcpy;
  b.copy_2d = &memcpy_2d;
  b.memset_zero = &memset_zero;
  b.cast_from_f32 = &cast_from_f32;
  b.selective_scan_forward = &selective_scan_forward;
  b.selective_scan_backward = &selective_scan_backward;
  b.selective_scan_chunk_states = &selective_scan_chunk_states;
  b.causal_conv1d_forward = &causal_conv1d_forward;
  b.causal_conv1d_backward = &causal_conv1d_backward;
  b.causal_conv1d_update = &causal_conv1d_update;
  b.attention_workspace_floats = &attention_workspace_floats;
  b.attention_forward = &attention_forward;
  b.attention_backward = &attention_backward;
  b.linear_forward = &linear_forward;
  b.rms_norm_forward = &rms_norm_forward;
  b.rotary_forward = &rotary_forward;
  b.glu_forward = &glu_forward;
  b.long_conv_forward = &long_conv_forward;
  b.embedding_forward = &embedding_forward;
  b.selective_state_update = &selective_state_update;
  b.ssd_forward = &ssd_forward;
  b.ssd_backward = &ssd_backward;
  b.moe_forward = &moe_forward;
  b.linear_attention_forward = &linear_attention_forward;
  b.linear_attention_backward = &linear_attention_backward;
  b.delta_rule_forward = &delta_rule_forward;
  b.delta_rule_backward = &delta_rule_backward;
  b.rwkv7_forward = &rwkv7_forward;
  b.rwkv7_backward = &rwkv7_backward;
  b.ttt_linear_forward = &ttt_linear_forward;
  b.ttt_linear_backward = &ttt_linear_backward;
  return b;
}

const DeviceBackend kBackend = make_backend();  // initialized before the registrar below (same unit, earlier)

}  // namespace
}  // namespace ssm::cuda

extern "C" const bool ssm_cuda_backend_registered =
    (ssm::register_backend(ssm::DeviceType::cuda, &ssm::cuda::kBackend), true);
