// The emulated backend's entry points (the functions of its DeviceBackend table, backend.hpp): each checks the
// device index where it takes one, plans as ssm::cuda does (kernels/launch/*.cuh), and runs the launchers over an
// executor made from the backend's settings. Generic over the executor's type (emu::HostExecutor), so that the table,
// make<HostExecutor>(), is a template that a program with SSM_EXTERN_INSTANCES compiles once
// (cuda/emu/instances/backend.cpp): the files that only install the backend (backend.hpp) then never see a kernel's
// text, and a changed kernel recompiles its family's launchers and this table, not every emulated test.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "backend.hpp"
#include "launchers.hpp"
#include "ssm/core/device.hpp"
#include "ssm/core/device_backend.hpp"
#include "ssm/core/error.hpp"

namespace ssm::emu::backend_detail {

template <class Exec>
Exec executor() {
  const EmulatedCudaSettings& s = settings();
  return Exec(s.order, s.seed, s.stack_bytes);
}

inline void check_index(int index, const char* what) {
  SSM_CHECK(index == 0, kName, ": ", what, ": CUDA device ", index, " does not exist (1 device(s) present)");
}
inline void check_device(Device d, const char* what) {
  if (d.is_cuda()) check_index(d.index, what);
}

inline int device_count() { return 1; }
inline void ensure_device(int index) { check_index(index, "ensure_device"); }
inline std::string status() { return std::string("1 device(s): ") + kName; }

/// Host memory with guard bands, registered with the emulation's global shadow (global_memory.hpp): a kernel
/// writing past either end of a tensor, or two blocks writing one element, is a finding of the launch.
inline void* allocate(std::size_t bytes, int index) {
  check_index(index, "allocate");
  if (bytes == 0) return nullptr;  // as cudaMalloc
  static std::int64_t count = 0;
  void* p = allocate_guarded(bytes, ("cuda allocation " + std::to_string(++count)).c_str());
  SSM_CHECK(p != nullptr, kName, ": failed to allocate ", bytes, " bytes");
  return p;
}
inline void deallocate(void* p, int) noexcept { free_guarded(p); }

inline void copy(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) {
  check_device(dst_device, "copy");
  check_device(src_device, "copy");
  if (bytes > 0) std::memcpy(dst, src, bytes);
}
inline void copy_2d(void* dst, std::size_t dst_pitch, Device dst_device, const void* src, std::size_t src_pitch,
                    Device src_device, std::size_t width, std::size_t height) {
  check_device(dst_device, "copy_2d");
  check_device(src_device, "copy_2d");
  SSM_CHECK(height <= 1 || (width <= dst_pitch && width <= src_pitch), kName, ": copy_2d: a row of ", width,
            " bytes is wider than the pitch (", dst_pitch, ", ", src_pitch, ")");
  for (std::size_t i = 0; i < height && width > 0; ++i)
    std::memcpy(static_cast<char*>(dst) + i * dst_pitch, static_cast<const char*>(src) + i * src_pitch, width);
}
inline void memset_zero(void* p, Device device, std::size_t bytes) {
  check_device(device, "memset_zero");
  if (bytes > 0) std::memset(p, 0, bytes);
}

template <class Exec>
void cast_from_f32(const float* src, void* dst, DType dst_dtype, std::int64_t n, int device, void*) {
  check_index(device, "cast_from_f32");
  Exec exec = executor<Exec>();
  kernels::cast_from_f32_launches(exec, src, dst, dst_dtype, n, "ssm::cuda::cast_from_f32 (host emulation)");
}
template <class Exec>
std::string selective_scan_forward(const ScanParams& p, DType input_dtype, const ScanForwardOptions& o) {
  if (o.device >= 0) check_index(o.device, "selective_scan_forward");
  Exec exec = executor<Exec>();
  return kernels::selective_scan_forward_launches(exec, p, input_dtype, o,
                                                  "ssm::cuda::selective_scan_forward (host emulation)");
}
template <class Exec>
void selective_scan_backward(const ScanParams& p, DType input_dtype, const ScanDeviceGradParams& g, void*) {
  Exec exec = executor<Exec>();
  kernels::selective_scan_backward_launches(exec, p, input_dtype, g,
                                            "ssm::cuda::selective_scan_backward (host emulation)");
}
inline ChunkStates selective_scan_chunk_states(std::int64_t max_seqlen) {
  return kernels::scan_chunk_layout(max_seqlen);
}
template <class Exec>
void causal_conv1d_forward(const CausalConv1dParams& p, DType input_dtype, void*) {
  Exec exec = executor<Exec>();
  kernels::causal_conv1d_forward_launches(exec, p, input_dtype, "ssm::cuda::causal_conv1d_forward (host emulation)");
}
template <class Exec>
void causal_conv1d_backward(const CausalConv1dParams& p, const CausalConv1dGradParams& g, DType input_dtype,
                                   void*) {
  Exec exec = executor<Exec>();
  kernels::causal_conv1d_backward_launches(exec, p, g, input_dtype,
                                           "ssm::cuda::causal_conv1d_backward (host emulation)");
}
template <class Exec>
void causal_conv1d_update(const CausalConv1dUpdateParams& p, DType input_dtype, void*) {
  Exec exec = executor<Exec>();
  kernels::causal_conv1d_update_launches(exec, p, input_dtype, "ssm::cuda::causal_conv1d_update (host emulation)");
}
inline std::int64_t attention_workspace_floats(const AttentionParams& p) {
  return ::ssm::cuda::attention_workspace_floats(p);
}
template <class Exec>
void attention_forward(const AttentionParams& p, void*) {
  Exec exec = executor<Exec>();
  kernels::attention_forward_launches(exec, p);
}
template <class Exec>
void attention_backward(const AttentionParams& p, const AttentionGradParams& g, void*) {
  Exec exec = executor<Exec>();
  kernels::attention_backward_launches(exec, p, g);
}
template <class Exec>
void linear_forward(const LinearParams& p, void*) {
  Exec exec = executor<Exec>();
  kernels::linear_launches(exec, p, "ssm::cuda::linear_forward (host emulation)");
}
template <class Exec>
void rms_norm_forward(const RmsNormParams& p, void*) {
  Exec exec = executor<Exec>();
  kernels::rms_norm_launches(exec, p, "ssm::cuda::rms_norm_forward (host emulation)");
}
template <class Exec>
void rotary_forward(const RotaryParams& p, void*) {
  Exec exec = executor<Exec>();
  kernels::rotary_launches(exec, p, "ssm::cuda::rotary_forward (host emulation)");
}
template <class Exec>
void glu_forward(const GluParams& p, void*) {
  Exec exec = executor<Exec>();
  kernels::glu_launches(exec, p, "ssm::cuda::glu_forward (host emulation)");
}
template <class Exec>
void long_conv_forward(const LongConvParams& p, void*) {
  Exec exec = executor<Exec>();
  kernels::long_conv_launches(exec, p, "ssm::cuda::long_conv_forward (host emulation)");
}
template <class Exec>
void embedding_forward(const EmbeddingParams& p, void*) {
  Exec exec = executor<Exec>();
  kernels::embedding_launches(exec, p, "ssm::cuda::embedding_forward (host emulation)");
}
template <class Exec>
void selective_state_update(const SelectiveStateUpdateParams& p, void*) {
  Exec exec = executor<Exec>();
  kernels::selective_state_update_launches(exec, p, "ssm::cuda::selective_state_update (host emulation)");
}

/// The planned entry points' common body: an executor, `bytes` of emulated device memory (freed with it) with the
/// plan's table uploaded to its start, then launches(exec, base).
template <class Exec, class Launches>
void with_table(std::size_t bytes, const std::vector<std::int64_t>& table, Launches&& launches) {
  Exec exec = executor<Exec>();
  void* base = exec.allocate(bytes);
  exec.upload(base, table.data(), table.size() * sizeof(std::int64_t));
  launches(exec, base);
}

template <class Exec>
void ssd_forward(const SsdParams& p, void*) {
  const kernels::SsdPlan plan = kernels::plan_ssd(p, "ssm::cuda::ssd_forward (host emulation)");
  if (p.rows() == 0) return;
  with_table<Exec>(plan.bytes, plan.table, [&](Exec& x, void* b) {
    kernels::ssd_forward_launches(x, p, plan, kernels::ssd_workspace(plan, b));
  });
}

template <class Exec>
void ssd_backward(const SsdParams& p, const SsdGradParams& g, void*) {
  const kernels::SsdPlan plan = kernels::plan_ssd_backward(p, g, "ssm::cuda::ssd_backward (host emulation)");
  with_table<Exec>(plan.bytes, plan.table, [&](Exec& x, void* b) {
    kernels::ssd_backward_launches(x, p, g, plan, kernels::ssd_workspace(plan, b),
                                   kernels::ssd_grad_workspace(plan, b, p.z != nullptr));
  });
}

template <class Exec>
void linear_attention_forward(const LinearAttentionParams& p, void*) {
  const kernels::LaPlan plan =
      kernels::plan_linear_attention(p, "ssm::cuda::linear_attention_forward (host emulation)");
  if (p.rows() == 0) return;
  with_table<Exec>(plan.bytes, plan.ssd.table,
                   [&](Exec& x, void* b) { kernels::linear_attention_forward_launches(x, p, plan, b); });
}

template <class Exec>
void linear_attention_backward(const LinearAttentionParams& p, const LinearAttentionGradParams& g, void*) {
  const kernels::LaPlan plan =
      kernels::plan_linear_attention(p, "ssm::cuda::linear_attention_backward (host emulation)", &g);
  if (p.rows() == 0) return;
  with_table<Exec>(plan.bytes, plan.ssd.table,
                   [&](Exec& x, void* b) { kernels::linear_attention_backward_launches(x, p, g, plan, b); });
}

template <class Exec>
void delta_rule_forward(const DeltaRuleParams& p, void*) {
  const kernels::DrPlan plan = kernels::plan_delta_rule(p, "ssm::cuda::delta_rule_forward (host emulation)");
  if (p.rows() == 0) return;
  with_table<Exec>(plan.bytes, plan.table,
                   [&](Exec& x, void* b) { kernels::delta_rule_forward_launches(x, p, plan, b); });
}

template <class Exec>
void delta_rule_backward(const DeltaRuleParams& p, const DeltaRuleGradParams& g, void*) {
  const kernels::DrPlan plan = kernels::plan_delta_rule(p, "ssm::cuda::delta_rule_backward (host emulation)", &g);
  if (p.rows() == 0) return;
  with_table<Exec>(plan.bytes, plan.table,
                   [&](Exec& x, void* b) { kernels::delta_rule_backward_launches(x, p, g, plan, b); });
}

template <class Exec>
void rwkv7_forward(const Rwkv7Params& p, void*) {
  const kernels::Rwkv7Plan plan = kernels::plan_rwkv7(p, "ssm::cuda::rwkv7_forward (host emulation)");
  if (p.rows() == 0) return;
  with_table<Exec>(plan.bytes, plan.table, [&](Exec& x, void* b) { kernels::rwkv7_forward_launches(x, p, plan, b); });
}

template <class Exec>
void rwkv7_backward(const Rwkv7Params& p, const Rwkv7GradParams& g, void*) {
  const kernels::Rwkv7Plan plan = kernels::plan_rwkv7(p, "ssm::cuda::rwkv7_backward (host emulation)", &g);
  if (p.rows() == 0) return;
  with_table<Exec>(plan.bytes, plan.table,
                   [&](Exec& x, void* b) { kernels::rwkv7_backward_launches(x, p, g, plan, b); });
}

template <class Exec>
void ttt_linear_forward(const TttLinearParams& p, void*) {
  const kernels::TttPlan plan = kernels::plan_ttt_linear(p, "ssm::cuda::ttt_linear_forward (host emulation)");
  if (p.rows() == 0) return;
  with_table<Exec>(plan.bytes, plan.table,
                   [&](Exec& x, void* b) { kernels::ttt_linear_forward_launches(x, p, plan, b); });
}

template <class Exec>
void ttt_linear_backward(const TttLinearParams& p, const TttLinearGradParams& g, void*) {
  const kernels::TttPlan plan = kernels::plan_ttt_linear(p, "ssm::cuda::ttt_linear_backward (host emulation)", &g);
  with_table<Exec>(plan.bytes, plan.table,
                   [&](Exec& x, void* b) { kernels::ttt_linear_backward_launches(x, p, g, plan, b); });
}

template <class Exec>
void moe_forward(const MoeParams& p, void*) {
  const kernels::MoePlan plan = kernels::plan_moe(p, "ssm::cuda::moe_forward (host emulation)");
  if (p.tokens == 0) return;
  Exec exec = executor<Exec>();
  kernels::moe_forward_launches(exec, p, plan, exec.allocate(plan.bytes));  // freed with exec
}

template <class Exec>
DeviceBackend make() {
  DeviceBackend b;
  b.name = kName;
  b.device_count = &device_count;
  b.ensure_device = &ensure_device;
  b.status = &status;
  b.allocate = &allocate;
  b.deallocate = &deallocate;
  b.copy = &copy;
  b.copy_2d = &copy_2d;
  b.memset_zero = &memset_zero;
  b.cast_from_f32 = &cast_from_f32<Exec>;
  b.selective_scan_forward = &selective_scan_forward<Exec>;
  b.selective_scan_backward = &selective_scan_backward<Exec>;
  b.selective_scan_chunk_states = &selective_scan_chunk_states;
  b.causal_conv1d_forward = &causal_conv1d_forward<Exec>;
  b.causal_conv1d_backward = &causal_conv1d_backward<Exec>;
  b.causal_conv1d_update = &causal_conv1d_update<Exec>;
  b.attention_workspace_floats = &attention_workspace_floats;
  b.attention_forward = &attention_forward<Exec>;
  b.attention_backward = &attention_backward<Exec>;
  b.linear_forward = &linear_forward<Exec>;
  b.rms_norm_forward = &rms_norm_forward<Exec>;
  b.rotary_forward = &rotary_forward<Exec>;
  b.glu_forward = &glu_forward<Exec>;
  b.long_conv_forward = &long_conv_forward<Exec>;
  b.embedding_forward = &embedding_forward<Exec>;
  b.selective_state_update = &selective_state_update<Exec>;
  b.ssd_forward = &ssd_forward<Exec>;
  b.ssd_backward = &ssd_backward<Exec>;
  b.moe_forward = &moe_forward<Exec>;
  b.linear_attention_forward = &linear_attention_forward<Exec>;
  b.linear_attention_backward = &linear_attention_backward<Exec>;
  b.delta_rule_forward = &delta_rule_forward<Exec>;
  b.delta_rule_backward = &delta_rule_backward<Exec>;
  b.rwkv7_forward = &rwkv7_forward<Exec>;
  b.rwkv7_backward = &rwkv7_backward<Exec>;
  b.ttt_linear_forward = &ttt_linear_forward<Exec>;
  b.ttt_linear_backward = &ttt_linear_backward<Exec>;
  return b;
}

}  // namespace ssm::emu::backend_detail
