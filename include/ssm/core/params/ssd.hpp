// The argument block of the chunked linear-recurrence engine (docs/ssd.md; docs/math.md §8), whose first client is
// Mamba-2's state space duality (SSD). Per sequence and head, with a state H of (dv, dk) = (p, n):
//   Δ_t = dt_t + dt_bias, then softplus (dt_softplus), then clamped to [dt_min, dt_max] (has_dt_limit);
//   H_t = exp(Δ_t A) H_{t−1} + (Δ_t x_t) B_tᵀ,    y_t = H_t C_t + D ⊙ x_t,    out_t = y_t ⊙ silu(z_t) (with z).
// In linear-attention words: q = C, k = B, v = Δ x, and a gate g_t = Δ_t A that is one scalar per head and step
// (GateKind::scalar_per_head; a diagonal gate, one per key channel, is the next kind the engine will take). The CPU
// engine (cpu/ssd/) reads the gate through a Gate object (cpu/ssd/gate.hpp): a value scale and a log decay per step;
// ops other than SSD (linear attention, RetNet) fill this block with D, z, dt and A absent and a gate of their own.
// Plain pointers, sizes and element strides, trivially copyable; pointers are memory of the device that runs it.
#pragma once

#include <cstdint>

#include "ssm/core/dtype.hpp"
#include "ssm/core/scalar.hpp"

namespace ssm {

/// How the state decays per step. Only scalar_per_head (Mamba-2, RetNet, linear attention) is implemented.
enum class GateKind { scalar_per_head };

struct SsdParams {
  std::int64_t batch = 0, seqlen = 0;   // b, l (with cu_seqlens: b == 1 and the sequences packed along l)
  std::int64_t nheads = 0, headdim = 0;  // h, p (p = dv: the value width of the state)
  std::int64_t ngroups = 0, dstate = 0;  // g (h % g == 0: head i reads group i / (h / g)), n (= dk)
  std::int64_t chunk_size = 0;           // Q > 0: the chunked path's block of steps (the reference ignores it)
  GateKind gate = GateKind::scalar_per_head;

  // Inputs, element strides; the last dimension of x, z, B, C and out has unit stride.
  const void* x = nullptr;  // (b, l, h, p) input dtype
  std::int64_t x_batch_stride = 0, x_seq_stride = 0, x_head_stride = 0;
  const void* dt = nullptr;  // (b, l, h) param dtype
  std::int64_t dt_batch_stride = 0, dt_seq_stride = 0, dt_head_stride = 0;
  const void* A = nullptr;  // (h) param dtype, contiguous: A_h < 0 for a decaying state
  const void* B = nullptr;  // (b, l, g, n) input dtype
  std::int64_t B_batch_stride = 0, B_seq_stride = 0, B_group_stride = 0;
  const void* C = nullptr;  // (b, l, g, n) input dtype
  std::int64_t C_batch_stride = 0, C_seq_stride = 0, C_group_stride = 0;
  const void* D = nullptr;  // (h) or (h, p) param dtype, contiguous; or null
  bool D_per_channel = false;  // D is (h, p)
  const void* z = nullptr;  // (b, l, h, p) input dtype; or null
  std::int64_t z_batch_stride = 0, z_seq_stride = 0, z_head_stride = 0;
  const void* dt_bias = nullptr;  // (h) param dtype, contiguous; or null
  bool dt_softplus = false;
  bool has_dt_limit = false;  // clamp Δ to [dt_min, dt_max] after the softplus
  double dt_min = 0, dt_max = 0;
  const void* initial_state = nullptr;  // (rows, h, p, n) param dtype, contiguous; or null (zero)
  const std::int64_t* cu_seqlens = nullptr;  // (n_seqs + 1) host, validated; or null
  std::int64_t n_seqs = 0;                   // with cu_seqlens; rows = n_seqs, else rows = b

  // Outputs.
  void* out = nullptr;  // (b, l, h, p) input dtype
  std::int64_t out_batch_stride = 0, out_seq_stride = 0, out_head_stride = 0;
  void* final_state = nullptr;  // (rows, h, p, n) param dtype, contiguous; or null
  // What the chunked forward keeps for its backward (SsdGradParams::saved_*), when set: the state entering each chunk
  // (chunk_count(), h, p, n) and y before the gate (b, l, h, p) (with z), both param dtype, contiguous.
  void* chunk_states = nullptr;
  void* y = nullptr;

  DType input_dtype = DType::f32;  // x, B, C, z, out: f32 | f64 | f16 | bf16
  DType param_dtype = DType::f32;  // dt, A, D, dt_bias, states: f64 for f64 inputs, else f32

  std::int64_t rows() const { return cu_seqlens ? n_seqs : batch; }
  /// Sequence s's batch row and its steps [begin, end) along l.
  std::int64_t seq_row(std::int64_t s) const { return cu_seqlens ? 0 : s; }
  std::int64_t seq_begin(std::int64_t s) const { return cu_seqlens ? cu_seqlens[s] : 0; }
  std::int64_t seq_end(std::int64_t s) const { return cu_seqlens ? cu_seqlens[s + 1] : seqlen; }
  /// The chunks of the chunked paths: each sequence cut into chunk_size steps from its own start, the last ragged.
  std::int64_t chunk_count() const {
    std::int64_t count = 0;
    for (std::int64_t s = 0; s < rows(); ++s) count += (seq_end(s) - seq_begin(s) + chunk_size - 1) / chunk_size;
    return count;
  }
};

/// The gradients of the SSD forward (the backward of a loss through out and the final state). Every pointer is a
/// contiguous buffer of its input's shape and dtype (grad_B, grad_C: (b, l, g, n) summed over the group's heads);
/// null grad_* outputs the caller does not want are skipped. grad_out (b, l, h, p) input dtype; grad_final_state
/// (rows, h, p, n) param dtype or null (zero).
struct SsdGradParams {
  const void* grad_out = nullptr;
  const void* grad_final_state = nullptr;
  // The forward's SsdParams::chunk_states and y (same chunk_size, same inputs), read instead of recomputed; or null.
  const void* saved_states = nullptr;
  const void* saved_y = nullptr;
  void *grad_x = nullptr, *grad_dt = nullptr, *grad_A = nullptr, *grad_B = nullptr, *grad_C = nullptr;
  void *grad_D = nullptr, *grad_z = nullptr, *grad_dt_bias = nullptr, *grad_initial_state = nullptr;
};

/// Δ from dt + dt_bias: softplus (PyTorch's threshold), then the clamp, as mamba_ssm's mamba_chunk_scan_combined.
/// One definition for the reference (T = double) and the CPU path.
template <class T>
inline T ssd_delta(T dt_plus_bias, const SsdParams& p) {
  return scalar::step_size(dt_plus_bias, p.dt_softplus, p.has_dt_limit, p.dt_min, p.dt_max);
}

/// dΔ / d(dt + dt_bias) (scalar::step_size_grad: zero where the limit clamps).
template <class T>
inline T ssd_delta_grad(T dt_plus_bias, const SsdParams& p) {
  return scalar::step_size_grad(dt_plus_bias, p.dt_softplus, p.has_dt_limit, p.dt_min, p.dt_max);
}

}  // namespace ssm
