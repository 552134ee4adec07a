// The run-time backend table: for each device type other than the CPU, the DeviceBackend a library registered
// (its runtime, memory and the ops' entry points). ssm::cuda registers its launchers when it is linked (a static
// registrar in its compiled library, pulled into every program that links the target); a test may register the
// host emulation of the kernels instead. Tensors allocate and copy through it; ops dispatch through it
// (ssm/core/backend.hpp). No header body of the library depends on a build macro, so every translation unit of a
// program compiles the same definitions, with or without ssm::cuda.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "ssm/core/device.hpp"
#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/params/attention.hpp"
#include "ssm/core/params/causal_conv1d.hpp"
#include "ssm/core/params/delta_rule.hpp"
#include "ssm/core/params/dense.hpp"
#include "ssm/core/params/linear_attention.hpp"
#include "ssm/core/params/long_conv.hpp"
#include "ssm/core/params/moe.hpp"
#include "ssm/core/params/rwkv7.hpp"
#include "ssm/core/params/selective_scan.hpp"
#include "ssm/core/params/selective_scan_device.hpp"
#include "ssm/core/params/selective_state_update.hpp"
#include "ssm/core/params/ssd.hpp"
#include "ssm/core/params/ttt_linear.hpp"

namespace ssm::cuda {
}  // namespace ssm::cuda

namespace ssm {

/// What a device type provides: its runtime, its memory and the ops' entry points, as plain function pointers
/// over the argument blocks of core/params/. Every pointer of a registered backend is set, except the entries
/// marked "may be null" (not implemented there yet: the op then raises an ssm::Error "<op>: not implemented on
/// <device> yet" and never calls it). Pointers are memory of that device; `stream` is the device's stream (null:
/// its default).
struct DeviceBackend {
  const char* name = "";  ///< "cuda", or "cuda (host emulation)"

  // ---- runtime ----
  int (*device_count)() = nullptr;                     ///< ssm::Error with the runtime's words when it fails
  void (*ensure_device)(int index) = nullptr;          ///< ssm::Error unless device `index` is usable
  std::string (*status)() = nullptr;                   ///< one line: the devices, or the runtime's error

  // ---- memory ----
  void* (*allocate)(std::size_t bytes, int index) = nullptr;
  void (*deallocate)(void* p, int index) noexcept = nullptr;
  /// bytes from src to dst; one of the two devices may be the CPU.
  void (*copy)(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) = nullptr;
  /// `height` rows of `width` bytes, row i at dst + i dst_pitch and src + i src_pitch.
  void (*copy_2d)(void* dst, std::size_t dst_pitch, Device dst_device, const void* src, std::size_t src_pitch,
                  Device src_device, std::size_t width, std::size_t height) = nullptr;
  void (*memset_zero)(void* p, Device device, std::size_t bytes) = nullptr;

  // ---- ops ----
  /// dst[i] = src[i] rounded to dst_dtype (f16, bf16; f32 copies), i < n.
  void (*cast_from_f32)(const float* src, void* dst, DType dst_dtype, std::int64_t n, int device,
                        void* stream) = nullptr;
  /// The fused selective-scan forward; returns the path name.
  std::string (*selective_scan_forward)(const ScanParams& p, DType input_dtype, const ScanForwardOptions& o) = nullptr;
  void (*selective_scan_backward)(const ScanParams& p, DType input_dtype, const ScanDeviceGradParams& g,
                                  void* stream) = nullptr;
  /// The layout (n_chunks, chunk_len; data null) of the chunk states the forward saves when the longest sequence
  /// has max_seqlen tokens: what ScanForwardOptions / ScanDeviceGradParams::chunk_states must carry.
  ChunkStates (*selective_scan_chunk_states)(std::int64_t max_seqlen) = nullptr;
  void (*causal_conv1d_forward)(const CausalConv1dParams& p, DType input_dtype, void* stream) = nullptr;
  void (*causal_conv1d_backward)(const CausalConv1dParams& p, const CausalConv1dGradParams& g, DType input_dtype,
                                 void* stream) = nullptr;
  void (*causal_conv1d_update)(const CausalConv1dUpdateParams& p, DType input_dtype, void* stream) = nullptr;
  /// Floats of workspace attention_forward needs for p.
  std::int64_t (*attention_workspace_floats)(const AttentionParams& p) = nullptr;
  void (*attention_forward)(const AttentionParams& p, void* stream) = nullptr;
  void (*attention_backward)(const AttentionParams& p, const AttentionGradParams& g, void* stream) = nullptr;
  /// y = x Wᵀ + bias (cuBLAS GEMM / GEMV on CUDA). May be null.
  void (*linear_forward)(const LinearParams& p, void* stream) = nullptr;
  /// RMSNorm with the optional fused residual add. May be null.
  void (*rms_norm_forward)(const RmsNormParams& p, void* stream) = nullptr;
  /// Rotary position embedding (y may be x). May be null.
  void (*rotary_forward)(const RotaryParams& p, void* stream) = nullptr;
  /// The gated linear unit (y may be z's first half). May be null.
  void (*glu_forward)(const GluParams& p, void* stream) = nullptr;
  /// The long convolution with its optional gates (the S4 layers' convolution, Hyena's order steps; y overlaps no
  /// input). May be null.
  void (*long_conv_forward)(const LongConvParams& p, void* stream) = nullptr;
  /// Embedding rows gathered (and converted) by token id. May be null.
  void (*embedding_forward)(const EmbeddingParams& p, void* stream) = nullptr;
  /// The one-token selective state update (decoding). May be null.
  void (*selective_state_update)(const SelectiveStateUpdateParams& p, void* stream) = nullptr;
  /// The chunked SSD forward (Mamba-2; p.cu_seqlens in host memory). May be null ("ssd: not implemented on ... yet").
  void (*ssd_forward)(const SsdParams& p, void* stream) = nullptr;
  /// The chunked SSD backward (g's buffers contiguous, as ssd_backward allocates them). May be null.
  void (*ssd_backward)(const SsdParams& p, const SsdGradParams& g, void* stream) = nullptr;
  /// Linear attention, retention and GLA, chunked (p.cu_seqlens and p.log_gamma in host memory). May be null.
  void (*linear_attention_forward)(const LinearAttentionParams& p, void* stream) = nullptr;
  /// Their backward (g's buffers contiguous, as linear_attention_backward allocates them). May be null.
  void (*linear_attention_backward)(const LinearAttentionParams& p, const LinearAttentionGradParams& g,
                                    void* stream) = nullptr;
  /// The delta rule's chunked forward (DeltaNet, Gated DeltaNet; p.cu_seqlens in host memory). May be null.
  void (*delta_rule_forward)(const DeltaRuleParams& p, void* stream) = nullptr;
  /// Its chunked backward (g's buffers contiguous, as delta_rule_backward allocates them). May be null.
  void (*delta_rule_backward)(const DeltaRuleParams& p, const DeltaRuleGradParams& g, void* stream) = nullptr;
  /// RWKV-7's generalized delta rule, forward (p.cu_seqlens in host memory). May be null.
  void (*rwkv7_forward)(const Rwkv7Params& p, void* stream) = nullptr;
  /// Its backward (g's buffers contiguous, as rwkv7_backward allocates them). May be null.
  void (*rwkv7_backward)(const Rwkv7Params& p, const Rwkv7GradParams& g, void* stream) = nullptr;
  /// TTT-Linear's forward, the token loop (p.cu_seqlens in host memory). May be null.
  void (*ttt_linear_forward)(const TttLinearParams& p, void* stream) = nullptr;
  /// Its backward (g's buffers contiguous, as ttt_linear_backward allocates them). May be null.
  void (*ttt_linear_backward)(const TttLinearParams& p, const TttLinearGradParams& g, void* stream) = nullptr;
  /// The mixture of experts' forward: routing and the gathered expert GEMMs (x f32 or f64). May be null.
  void (*moe_forward)(const MoeParams& p, void* stream) = nullptr;
  /// Cross-entropy with its gradient (p.row_loss in host memory; p.count is −1: the entry counts the rows, scales the
  /// gradient by that count, and returns it). May be null.
  std::int64_t (*cross_entropy)(const CrossEntropyParams& p, void* stream) = nullptr;

  // ---- models (transitional) ----
};

namespace detail {
inline constexpr std::size_t kDeviceTypes = 2;  // DeviceType::cpu, DeviceType::cuda
/// The registered backend per device type (the CPU's slot stays empty: the CPU code is the header library itself).
/// A function-local static of an inline function: one table per program, whichever translation unit asks first.
inline std::atomic<const DeviceBackend*>& backend_slot(DeviceType type) {
  static std::array<std::atomic<const DeviceBackend*>, kDeviceTypes> slots{};
  return slots[static_cast<std::size_t>(type)];
}
}  // namespace detail

/// Installs `backend` for `type` (null removes it) and returns the one it replaces. ssm::cuda installs its own
/// for DeviceType::cuda at program start when the target is linked; a test may install the host emulation. The
/// backend object must outlive its registration. Not for the CPU (an ssm::Error).
inline const DeviceBackend* register_backend(DeviceType type, const DeviceBackend* backend) {
  SSM_CHECK(type != DeviceType::cpu, "ssm::register_backend: the CPU backend is built in and cannot be replaced");
  return detail::backend_slot(type).exchange(backend);
}

/// The backend registered for `type`, or null.
inline const DeviceBackend* find_backend(DeviceType type) {
  return type == DeviceType::cpu ? nullptr : detail::backend_slot(type).load();
}

/// The backend of `device` for op `op`: an ssm::Error naming the op when none is registered (the program does not
/// link ssm::cuda).
inline const DeviceBackend& backend_for(const std::string& op, Device device) {
  const DeviceBackend* b = find_backend(device.type);
  if (b == nullptr)
    fail(op, ": the tensors are on ", device.str(),
         " but the CUDA backend is not linked (link the CMake target ssm::cuda)");
  return *b;
}

/// The entry point `entry` of the backend of `device` for op `op`: backend_for's error when no backend is
/// registered, and "<op>: not implemented on cuda yet" when the backend leaves that entry null.
template <class Fn>
Fn* backend_entry(const std::string& op, Device device, Fn* DeviceBackend::*entry) {
  Fn* f = backend_for(op, device).*entry;
  if (f == nullptr) fail(op, ": not implemented on ", device.is_cuda() ? "cuda" : device.str(), " yet");
  return f;
}

}  // namespace ssm
