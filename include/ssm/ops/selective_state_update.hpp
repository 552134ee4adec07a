// The one-token selective state update (mamba_ssm's selective_state_update; docs/math.md §5.1 at l = 1): the decode
// step of the selective scan (Mamba-1) and of SSD (Mamba-2, a state (b, h, p, n) with one decay per head: the token
// loop of ops/ssd.hpp at l = 1), updating the state h in place. For each batch row and channel c (Mamba-1 form),
//   Δ = softplus(dt + dt_bias) (dt_softplus; else dt + dt_bias),   h[c] = exp(Δ A[c]) ⊙ h[c] + Δ B u[c],
//   y = C · h[c] + D[c] u[c],   out[c] = y silu(z[c]) (without z: y).
// Mamba-1 form: one group (B, C shared by the channels), real A. Mamba-2 form: see SelectiveStateUpdateInputs.
// The scan op (ops/selective_scan.hpp) with l = 1 computes the same, but its channel-major operands, separate initial
// and last state and per-call setup cost several times this loop per token (measured in the commit that added this
// op); the Mamba block's step() runs this, and the Mamba-2 block's step() its head form.
// CPU tensors: cpu/selective_state_update.hpp, or the reference on request. CUDA tensors: the backend's
// selective_state_update entry, an ssm::Error while it is not implemented there.
#pragma once

#include <cmath>
#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include "ssm/core/backend.hpp"
#include "ssm/core/check.hpp"
#include "ssm/core/params/selective_state_update.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/selective_state_update.hpp"
#include "ssm/reference/selective_state_update.hpp"

namespace ssm {

/// Two forms, chosen by the state's rank:
///   Mamba-1, state (b, d, n): x, dt, z, out (b, d); A (d, n); B, C (b, n); D, dt_bias (d).
///   Mamba-2, state (b, h, p, n) (the SSD op's state): x, z, out (b, h, p); dt (b, h), A (h), D (h), dt_bias (h): one
///   scalar per head, shared by its p channels (mamba_ssm's tied head dim); B, C (b, g, n), g dividing h, head i
///   reading group i / (h / g).
struct SelectiveStateUpdateInputs {
  TensorView state{};                   // h (b, d, n) | (b, h, p, n) f32 | f64, contiguous: updated in place
  TensorView x{};                       // u (b, d) | (b, h, p)    state's dtype, unit stride along the last dimension
  TensorView dt{};                      // (b, d) | (b, h)         Δ before dt_bias and softplus; unit stride (Mamba-1)
  TensorView A{};                       // (d, n) | (h)            contiguous
  TensorView B{};                       // (b, n) | (b, g, n)      unit stride along n
  TensorView C{};                       // (b, n) | (b, g, n)      unit stride along n
  std::optional<TensorView> D{};        // (d) | (h)
  std::optional<TensorView> z{};        // x's shape, unit stride along the last dimension: the gate
  std::optional<TensorView> dt_bias{};  // (d) | (h)
  bool dt_softplus = false;
  std::optional<std::pair<double, double>> dt_limit{};  // clamp Δ to [min, max] after the softplus (as ssm::ssd)
};

enum class StateUpdatePath { automatic, reference };

/// Advances `state` by one token and writes out (x's shape: (b, d) or (b, h, p); state's dtype, unit stride along
/// the last dimension, on its device). Returns the path that ran: "cpu", "reference" or "cuda".
inline std::string selective_state_update(const SelectiveStateUpdateInputs& in, const TensorView& out,
                                          StateUpdatePath path = StateUpdatePath::automatic) {
  Checker c("selective_state_update");
  for (const auto& [nm, t] : {NamedView{"state", in.state}, NamedView{"x", in.x}, NamedView{"dt", in.dt},
                              NamedView{"A", in.A}, NamedView{"B", in.B}, NamedView{"C", in.C}, NamedView{"out", out}})
    c.defined(nm, t);
  c.require(in.state.rank() == 3 || in.state.rank() == 4, "state",
            "expected rank 3 (b, d, n) or rank 4 (b, h, p, n), got shape ", in.state.shape().str());
  const Device device =
      dispatch_device(c, {{"state", in.state}, {"x", in.x}, {"dt", in.dt}, {"A", in.A}, {"B", in.B}, {"C", in.C},
                          {"out", out}, {"D", in.D.value_or(in.A)}, {"z", in.z.value_or(in.x)},
                          {"dt_bias", in.dt_bias.value_or(in.A)}});
  c.dtype_in("state", in.state, {DType::f32, DType::f64}).contiguous("state", in.state);
  const bool heads = in.state.rank() == 4;
  SelectiveStateUpdateParams p;
  p.batch = in.state.size(0);
  p.nheads = heads ? in.state.size(1) : 1;
  p.dim = in.state.size(heads ? 2 : 1), p.dstate = in.state.size(heads ? 3 : 2);
  p.per_head = heads;
  p.dtype = in.state.dtype(), p.dt_softplus = in.dt_softplus;
  const index_t b = p.batch, h = p.nheads, d = p.dim, n = p.dstate;
  if (in.dt_limit) {
    const auto [lo, hi] = *in.dt_limit;
    c.require(!std::isnan(lo) && !std::isnan(hi) && lo <= hi, "dt_limit",
              "expected (min, max) with min <= max and neither NaN, got (", lo, ", ", hi, ")");
    p.has_dt_limit = true, p.dt_min = lo, p.dt_max = hi;
  }
  // (b, d) or (b, h, p) with unit stride along the last dimension: its batch and head strides.
  auto channels = [&](const char* nm, const TensorView& t) {
    c.same_dtype(nm, t, "state", in.state);
    if (heads) c.shape(nm, t, {b, h, d}).unit_stride(nm, t, 2);
    else c.shape(nm, t, {b, d}).unit_stride(nm, t, 1);
    return std::pair<std::int64_t, std::int64_t>{t.stride(0), heads ? t.stride(1) : 0};
  };
  std::tie(p.x_batch_stride, p.x_head_stride) = channels("x", in.x), p.x = in.x.data();
  std::tie(p.out_batch_stride, p.out_head_stride) = channels("out", out), p.out = out.data();
  if (in.z) std::tie(p.z_batch_stride, p.z_head_stride) = channels("z", *in.z), p.z = in.z->data();
  if (heads) {
    c.same_dtype("dt", in.dt, "state", in.state).shape("dt", in.dt, {b, h});
    p.dt_batch_stride = in.dt.stride(0), p.dt_head_stride = in.dt.stride(1);
  } else {
    p.dt_batch_stride = channels("dt", in.dt).first;
  }
  p.dt = in.dt.data();
  // B, C: (b, n), or (b, g, n) with g dividing h.
  if (heads) {
    c.rank("B", in.B, 3);
    p.ngroups = in.B.size(1);
    c.require(p.ngroups > 0 && h % p.ngroups == 0, "B", "n_groups = ", p.ngroups,
              " (its dimension 1) does not divide the number of heads h = ", h);
  }
  auto groups = [&](const char* nm, const TensorView& t) {
    c.same_dtype(nm, t, "state", in.state);
    if (heads) c.shape(nm, t, {b, p.ngroups, n}).unit_stride(nm, t, 2);
    else c.shape(nm, t, {b, n}).unit_stride(nm, t, 1);
    return std::pair<std::int64_t, std::int64_t>{t.stride(0), heads ? t.stride(1) : 0};
  };
  std::tie(p.B_batch_stride, p.B_group_stride) = groups("B", in.B), p.B = in.B.data();
  std::tie(p.C_batch_stride, p.C_group_stride) = groups("C", in.C), p.C = in.C.data();
  c.same_dtype("A", in.A, "state", in.state).contiguous("A", in.A);
  if (heads) c.shape("A", in.A, {h});
  else c.shape("A", in.A, {d, n});
  p.A = in.A.data(), p.state = in.state.data();
  auto per_channel = [&](const char* nm, const std::optional<TensorView>& t) -> const void* {
    if (!t) return nullptr;
    c.defined(nm, *t).same_dtype(nm, *t, "state", in.state).shape(nm, *t, {heads ? h : d}).contiguous(nm, *t);
    return t->data();
  };
  p.D = per_channel("D", in.D), p.dt_bias = per_channel("dt_bias", in.dt_bias);
  if (device.is_cuda()) {
    backend_entry(c.op(), device, &DeviceBackend::selective_state_update)(p, nullptr);
    return "cuda";
  }
  if (path == StateUpdatePath::reference) {
    reference::selective_state_update(p);
    return "reference";
  }
  cpu::selective_state_update(p);
  return "cpu";
}

}  // namespace ssm
