// The CUDA backend under the host emulation: a DeviceBackend (ssm/core/device_backend.hpp) named
// "cuda (host emulation)" whose device memory is host memory and whose op entry points run the kernel sources of
// cuda/kernels through the same launch code as ssm::cuda (kernels/launch/*.cuh, the attention launches), each
// kernel under emu::launch (emu::HostExecutor) in a chosen thread order. A finding of the emulation (a shared
// memory race, a divergent barrier, ...) is an ssm::Error naming the launch.
//
// Installed for DeviceType::cuda, it lets the public ops (ssm::selective_scan, causal_conv1d, attention_forward,
// ...) run on tensors of Device::cuda(0) without a GPU: the op code, the argument blocks it fills, the launchers'
// checks, grids and dtype dispatch, and the kernels are the ones a GPU would run.
//
//   ssm::emu::ScopedEmulatedCuda guard(ssm::emu::Order::random, 7);  // registers it; the destructor restores
//   ssm::Tensor u = u_cpu.to(ssm::Device::cuda(0));
//   auto r = ssm::selective_scan(inputs_on_cuda);                     // runs selective_scan_fwd_kernel emulated
//
// One device (index 0). Not thread-safe: the thread order is process-wide, set by the guard. A whole model runs on
// it the same way (model.to(ssm::Device::cuda(0))).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "../kernels/attention.cuh"
#include "../kernels/launch/cast.cuh"
#include "../kernels/launch/causal_conv1d.cuh"
#include "../kernels/launch/delta_rule.cuh"
#include "../kernels/launch/embedding.cuh"
#include "../kernels/launch/linear.cuh"
#include "../kernels/launch/linear_attention.cuh"
#include "../kernels/launch/moe.cuh"
#include "../kernels/launch/rms_norm.cuh"
#include "../kernels/launch/rwkv7.cuh"
#include "../kernels/launch/selective_scan.cuh"
#include "../kernels/launch/selective_state_update.cuh"
#include "../kernels/launch/ssd.cuh"
#include "../kernels/launch/ttt_linear.cuh"
#include "executor.hpp"
#include "launch_instances.hpp"
#include "ssm/core/device.hpp"
#include "ssm/core/device_backend.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/instances.hpp"

// The launchers this backend runs, under the host executor, are compiled once, family by family, in
// cuda/emu/instances/*.cpp (see launch_instances.hpp), instead of in every file that includes this header (each
// launcher instantiates its kernels for every dtype it takes).
#if SSM_EXTERN_INSTANCES
SSM_EMU_LAUNCH_INSTANCES(extern template)
#endif

namespace ssm::emu {

/// How the emulated backend runs its launches: the thread order within each block (Order::random: seeded, each
/// launch with seed + the launch's number) and the stack of each emulated thread (0: the emulation's default).
struct EmulatedCudaSettings {
  Order order = Order::forward;
  std::uint64_t seed = 1;
  std::size_t stack_bytes = 0;
};

namespace backend_detail {

inline constexpr const char* kName = "cuda (host emulation)";

inline EmulatedCudaSettings& settings() {
  static EmulatedCudaSettings s;
  return s;
}
inline HostExecutor executor() {
  const EmulatedCudaSettings& s = settings();
  return HostExecutor(s.order, s.seed, s.stack_bytes);
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

inline void cast_from_f32(const float* src, void* dst, DType dst_dtype, std::int64_t n, int device, void*) {
  check_index(device, "cast_from_f32");
  HostExecutor exec = executor();
  kernels::cast_from_f32_launches(exec, src, dst, dst_dtype, n, "ssm::cuda::cast_from_f32 (host emulation)");
}
inline std::string selective_scan_forward(const ScanParams& p, DType input_dtype, const ScanForwardOptions& o) {
  if (o.device >= 0) check_index(o.device, "selective_scan_forward");
  HostExecutor exec = executor();
  return kernels::selective_scan_forward_launches(exec, p, input_dtype, o,
                                                  "ssm::cuda::selective_scan_forward (host emulation)");
}
inline void selective_scan_backward(const ScanParams& p, DType input_dtype, const ScanDeviceGradParams& g, void*) {
  HostExecutor exec = executor();
  kernels::selective_scan_backward_launches(exec, p, input_dtype, g,
                                            "ssm::cuda::selective_scan_backward (host emulation)");
}
inline ChunkStates selective_scan_chunk_states(std::int64_t max_seqlen) {
  return kernels::scan_chunk_layout(max_seqlen);
}
inline void causal_conv1d_forward(const CausalConv1dParams& p, DType input_dtype, void*) {
  HostExecutor exec = executor();
  kernels::causal_conv1d_forward_launches(exec, p, input_dtype, "ssm::cuda::causal_conv1d_forward (host emulation)");
}
inline void causal_conv1d_backward(const CausalConv1dParams& p, const CausalConv1dGradParams& g, DType input_dtype,
                                   void*) {
  HostExecutor exec = executor();
  kernels::causal_conv1d_backward_launches(exec, p, g, input_dtype,
                                           "ssm::cuda::causal_conv1d_backward (host emulation)");
}
inline void causal_conv1d_update(const CausalConv1dUpdateParams& p, DType input_dtype, void*) {
  HostExecutor exec = executor();
  kernels::causal_conv1d_update_launches(exec, p, input_dtype, "ssm::cuda::causal_conv1d_update (host emulation)");
}
inline std::int64_t attention_workspace_floats(const AttentionParams& p) {
  return ::ssm::cuda::attention_workspace_floats(p);
}
inline void attention_forward(const AttentionParams& p, void*) {
  HostExecutor exec = executor();
  kernels::attention_forward_launches(exec, p);
}
inline void attention_backward(const AttentionParams& p, const AttentionGradParams& g, void*) {
  HostExecutor exec = executor();
  kernels::attention_backward_launches(exec, p, g);
}
inline void linear_forward(const LinearParams& p, void*) {
  HostExecutor exec = executor();
  kernels::linear_launches(exec, p, "ssm::cuda::linear_forward (host emulation)");
}
inline void rms_norm_forward(const RmsNormParams& p, void*) {
  HostExecutor exec = executor();
  kernels::rms_norm_launches(exec, p, "ssm::cuda::rms_norm_forward (host emulation)");
}
inline void embedding_forward(const EmbeddingParams& p, void*) {
  HostExecutor exec = executor();
  kernels::embedding_launches(exec, p, "ssm::cuda::embedding_forward (host emulation)");
}
inline void selective_state_update(const SelectiveStateUpdateParams& p, void*) {
  HostExecutor exec = executor();
  kernels::selective_state_update_launches(exec, p, "ssm::cuda::selective_state_update (host emulation)");
}

/// The planned entry points' common body: an executor, `bytes` of emulated device memory (freed with it) with the
/// plan's table uploaded to its start, then launches(exec, base).
template <class Launches>
void with_table(std::size_t bytes, const std::vector<std::int64_t>& table, Launches&& launches) {
  HostExecutor exec = executor();
  void* base = exec.allocate(bytes);
  exec.upload(base, table.data(), table.size() * sizeof(std::int64_t));
  launches(exec, base);
}

inline void ssd_forward(const SsdParams& p, void*) {
  const kernels::SsdPlan plan = kernels::plan_ssd(p, "ssm::cuda::ssd_forward (host emulation)");
  if (p.rows() == 0) return;
  with_table(plan.bytes, plan.table, [&](HostExecutor& x, void* b) {
    kernels::ssd_forward_launches(x, p, plan, kernels::ssd_workspace(plan, b));
  });
}

inline void ssd_backward(const SsdParams& p, const SsdGradParams& g, void*) {
  const kernels::SsdPlan plan = kernels::plan_ssd_backward(p, g, "ssm::cuda::ssd_backward (host emulation)");
  with_table(plan.bytes, plan.table, [&](HostExecutor& x, void* b) {
    kernels::ssd_backward_launches(x, p, g, plan, kernels::ssd_workspace(plan, b),
                                   kernels::ssd_grad_workspace(plan, b, p.z != nullptr));
  });
}

inline void linear_attention_forward(const LinearAttentionParams& p, void*) {
  const kernels::LaPlan plan =
      kernels::plan_linear_attention(p, "ssm::cuda::linear_attention_forward (host emulation)");
  if (p.rows() == 0) return;
  with_table(plan.bytes, plan.ssd.table,
             [&](HostExecutor& x, void* b) { kernels::linear_attention_forward_launches(x, p, plan, b); });
}

inline void linear_attention_backward(const LinearAttentionParams& p, const LinearAttentionGradParams& g, void*) {
  const kernels::LaPlan plan =
      kernels::plan_linear_attention(p, "ssm::cuda::linear_attention_backward (host emulation)", &g);
  if (p.rows() == 0) return;
  with_table(plan.bytes, plan.ssd.table,
             [&](HostExecutor& x, void* b) { kernels::linear_attention_backward_launches(x, p, g, plan, b); });
}

inline void delta_rule_forward(const DeltaRuleParams& p, void*) {
  const kernels::DrPlan plan = kernels::plan_delta_rule(p, "ssm::cuda::delta_rule_forward (host emulation)");
  if (p.rows() == 0) return;
  with_table(plan.bytes, plan.table,
             [&](HostExecutor& x, void* b) { kernels::delta_rule_forward_launches(x, p, plan, b); });
}

inline void delta_rule_backward(const DeltaRuleParams& p, const DeltaRuleGradParams& g, void*) {
  const kernels::DrPlan plan = kernels::plan_delta_rule(p, "ssm::cuda::delta_rule_backward (host emulation)", &g);
  if (p.rows() == 0) return;
  with_table(plan.bytes, plan.table,
             [&](HostExecutor& x, void* b) { kernels::delta_rule_backward_launches(x, p, g, plan, b); });
}

inline void rwkv7_forward(const Rwkv7Params& p, void*) {
  const kernels::Rwkv7Plan plan = kernels::plan_rwkv7(p, "ssm::cuda::rwkv7_forward (host emulation)");
  if (p.rows() == 0) return;
  with_table(plan.bytes, plan.table, [&](HostExecutor& x, void* b) { kernels::rwkv7_forward_launches(x, p, plan, b); });
}

inline void rwkv7_backward(const Rwkv7Params& p, const Rwkv7GradParams& g, void*) {
  const kernels::Rwkv7Plan plan = kernels::plan_rwkv7(p, "ssm::cuda::rwkv7_backward (host emulation)", &g);
  if (p.rows() == 0) return;
  with_table(plan.bytes, plan.table,
             [&](HostExecutor& x, void* b) { kernels::rwkv7_backward_launches(x, p, g, plan, b); });
}

inline void ttt_linear_forward(const TttLinearParams& p, void*) {
  const kernels::TttPlan plan = kernels::plan_ttt_linear(p, "ssm::cuda::ttt_linear_forward (host emulation)");
  if (p.rows() == 0) return;
  with_table(plan.bytes, plan.table,
             [&](HostExecutor& x, void* b) { kernels::ttt_linear_forward_launches(x, p, plan, b); });
}

inline void ttt_linear_backward(const TttLinearParams& p, const TttLinearGradParams& g, void*) {
  const kernels::TttPlan plan = kernels::plan_ttt_linear(p, "ssm::cuda::ttt_linear_backward (host emulation)", &g);
  with_table(plan.bytes, plan.table,
             [&](HostExecutor& x, void* b) { kernels::ttt_linear_backward_launches(x, p, g, plan, b); });
}

inline void moe_forward(const MoeParams& p, void*) {
  const kernels::MoePlan plan = kernels::plan_moe(p, "ssm::cuda::moe_forward (host emulation)");
  if (p.tokens == 0) return;
  HostExecutor exec = executor();
  kernels::moe_forward_launches(exec, p, plan, exec.allocate(plan.bytes));  // freed with exec
}

inline DeviceBackend make() {
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

}  // namespace backend_detail

/// The emulated CUDA backend (one object per program).
inline const DeviceBackend& emulated_cuda_backend() {
  static const DeviceBackend b = backend_detail::make();
  return b;
}

/// Registers the emulated backend for DeviceType::cuda with the given thread order, and on destruction puts back
/// the backend (and the settings) it replaced. Guards nest. A tensor allocated while it is installed may outlive it:
/// each tensor keeps the deallocator of the backend that allocated it.
class ScopedEmulatedCuda {
 public:
  explicit ScopedEmulatedCuda(Order order = Order::forward, std::uint64_t seed = 1, std::size_t stack_bytes = 0)
      : saved_settings_(backend_detail::settings()) {
    backend_detail::settings() = EmulatedCudaSettings{order, seed, stack_bytes};
    previous_ = register_backend(DeviceType::cuda, &emulated_cuda_backend());
  }
  ~ScopedEmulatedCuda() {
    register_backend(DeviceType::cuda, previous_);
    backend_detail::settings() = saved_settings_;
  }
  ScopedEmulatedCuda(const ScopedEmulatedCuda&) = delete;
  ScopedEmulatedCuda& operator=(const ScopedEmulatedCuda&) = delete;

  /// The backend this guard replaced (null when none was registered).
  const DeviceBackend* previous() const { return previous_; }

 private:
  EmulatedCudaSettings saved_settings_;
  const DeviceBackend* previous_ = nullptr;
};

}  // namespace ssm::emu
