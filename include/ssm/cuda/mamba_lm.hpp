// Host API of the Mamba language model on a CUDA device (target ssm::cuda; Gu & Dao 2023, §3.4; docs/math.md §6):
// the weights of a CPU ssm::models::MambaLM uploaded once, the forward over token ids (logits of every
// position), a prefill that fills a device-resident decoding cache, and the one-token generation step. The
// sequence of launches (cuBLAS GEMMs, RMSNorm with the residual add, causal conv1d, fused selective scan) is
// cuda/kernels/mamba_lm_launches.cuh, which also runs under the host emulation in tests.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "ssm/core/tensor.hpp"

namespace ssm::cuda {

/// Sizes of a Mamba LM (MambaConfig with the defaults resolved).
struct MambaLMShape {
  std::int64_t d_model = 0, n_layer = 0;
  std::int64_t vocab = 0;       ///< the embedding's rows (the padded vocabulary): logits per position
  std::int64_t d_state = 0;     ///< n
  std::int64_t d_conv = 0;      ///< w, 2..4 on the device
  std::int64_t d_inner = 0;     ///< di
  std::int64_t dt_rank = 0;     ///< r
  bool bias = false;            ///< in_proj / out_proj biases
  bool conv_bias = true;
  double norm_epsilon = 1e-5;
  /// FalconMamba's RMS normalization of δ, B, C (config key mixer_rms_eps; MambaBlockConfig::bcdt_rms_eps); 0: none
  /// (Mamba). Not implemented on the device: a nonzero value is rejected rather than computed as Mamba.
  double bcdt_rms_eps = 0;
};

/// Host pointers to one layer's weights in PyTorch's layouts (see layers::MambaBlockParams); optional biases null.
struct MambaLayerWeights {
  const float* norm = nullptr;             // (d_model)
  const float* in_proj_weight = nullptr;   // (2 di, d_model)
  const float* in_proj_bias = nullptr;     // (2 di) or null
  const float* conv_weight = nullptr;      // (di, w)
  const float* conv_bias = nullptr;        // (di) or null
  const float* x_proj_weight = nullptr;    // (r + 2n, di)
  const float* dt_proj_weight = nullptr;   // (di, r)
  const float* dt_proj_bias = nullptr;     // (di)
  const float* A_log = nullptr;            // (di, n); A = -exp(A_log)
  const float* D = nullptr;                // (di)
  const float* out_proj_weight = nullptr;  // (d_model, di)
  const float* out_proj_bias = nullptr;    // (d_model) or null
};

/// Host pointers to a whole model's weights (what models::MambaLM::weights() returns).
struct MambaLMWeights {
  MambaLMShape shape;
  const float* embedding = nullptr;  // (vocab, d_model)
  const float* lm_head = nullptr;    // (vocab, d_model); null: tied to the embedding
  const float* norm_f = nullptr;     // (d_model)
  std::vector<MambaLayerWeights> layers;
  /// f32 copies some pointers above may point into (MambaLM::weights() of a model holding f16 / bf16 weights
  /// converts them, as the device model uploads f32); kept alive with this object.
  std::shared_ptr<const void> storage;
};

/// The decoding state of b sequences on the device: per layer the last d_conv conv inputs and the SSM state.
struct MambaDeviceCache {
  std::int64_t b = 0;
  std::int64_t seqlen = 0;  ///< tokens seen
  Tensor conv_state;        ///< (n_layer, b, di, d_conv) f32 on the device, oldest input first
  Tensor ssm_state;         ///< (n_layer, b, di, n) f32 on the device
};

/// A Mamba LM whose weights live in one CUDA device's memory. Calls on one object are not concurrent (they
/// share a workspace); the default stream is used and every call returns after its work is done.
class MambaLMDevice {
 public:
  /// Uploads the weights (validated: shapes positive, d_conv in 2..4, pointers set) to `device`. Throws
  /// ssm::Error when CUDA is unusable (no GPU) or the shape is not supported.
  explicit MambaLMDevice(const MambaLMWeights& weights, int device = 0);
  virtual ~MambaLMDevice();
  MambaLMDevice(MambaLMDevice&&) noexcept;
  MambaLMDevice& operator=(MambaLMDevice&&) noexcept;

  // Virtual, so that the header-only library calls them through the object the registered backend made
  // (DeviceBackend::make_mamba_lm) without naming symbols of ssm::cuda.
  virtual const MambaLMShape& shape() const;
  virtual Device device() const;

  /// Logits for every position: ids (b, l) i32 or i64 (cpu or this device) → (b, l, vocab) f32 on the device.
  virtual Tensor logits(const TensorView& ids) const;
  /// A zero cache for b sequences on the device.
  virtual MambaDeviceCache make_cache(std::int64_t b) const;
  /// Runs prompts ids (b, l) and fills `cache` (reset first); returns the last position's logits (b, vocab).
  virtual Tensor prefill(const TensorView& ids, MambaDeviceCache& cache) const;
  /// One token per sequence: ids (b) i32 / i64 → logits (b, vocab) on the device; advances the cache.
  virtual Tensor step(const TensorView& ids, MambaDeviceCache& cache) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ssm::cuda
