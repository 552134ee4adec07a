// The one-token selective state update (mamba_ssm's selective_state_update; docs/math.md §5.1 at l = 1): the decode
// step of the selective scan, updating the state h in place. For each batch row and channel c,
//   Δ = softplus(dt + dt_bias) (dt_softplus; else dt + dt_bias),   h[c] = exp(Δ A[c]) ⊙ h[c] + Δ B u[c],
//   y = C · h[c] + D[c] u[c],   out[c] = y silu(z[c]) (without z: y).
// One group (B, C shared by the channels), real A. The scan op (ops/selective_scan.hpp) with l = 1 computes the
// same, but its channel-major operands, separate initial and last state and per-call setup cost several times this
// loop per token (measured in the commit that added this op); the Mamba block's step() runs this.
// CPU tensors: cpu/selective_state_update.hpp, or the reference on request. CUDA tensors: the backend's
// selective_state_update entry, an ssm::Error while it is not implemented there.
#pragma once

#include <optional>
#include <string>

#include "ssm/core/backend.hpp"
#include "ssm/core/check.hpp"
#include "ssm/core/params/selective_state_update.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/selective_state_update.hpp"
#include "ssm/reference/selective_state_update.hpp"

namespace ssm {

struct SelectiveStateUpdateInputs {
  TensorView state{};                   // h (b, d, n) f32 | f64, contiguous: updated in place
  TensorView x{};                       // u (b, d)    state's dtype, unit stride along d
  TensorView dt{};                      // (b, d)      unit stride along d: Δ before dt_bias and softplus
  TensorView A{};                       // (d, n)      contiguous
  TensorView B{};                       // (b, n)      unit stride along n
  TensorView C{};                       // (b, n)      unit stride along n
  std::optional<TensorView> D{};        // (d)
  std::optional<TensorView> z{};        // (b, d)      unit stride along d: the gate
  std::optional<TensorView> dt_bias{};  // (d)
  bool dt_softplus = false;
};

enum class StateUpdatePath { automatic, reference };

/// Advances `state` by one token and writes out (b, d) (state's dtype, unit stride along d, on its device). Returns
/// the path that ran: "cpu", "reference" or "cuda".
inline std::string selective_state_update(const SelectiveStateUpdateInputs& in, const TensorView& out,
                                          StateUpdatePath path = StateUpdatePath::automatic) {
  Checker c("selective_state_update");
  for (const auto& [nm, t] : {NamedView{"state", in.state}, NamedView{"x", in.x}, NamedView{"dt", in.dt},
                              NamedView{"A", in.A}, NamedView{"B", in.B}, NamedView{"C", in.C}, NamedView{"out", out}})
    c.defined(nm, t);
  c.rank("state", in.state, 3);
  const Device device =
      dispatch_device(c, {{"state", in.state}, {"x", in.x}, {"dt", in.dt}, {"A", in.A}, {"B", in.B}, {"C", in.C},
                          {"out", out}, {"D", in.D.value_or(in.A)}, {"z", in.z.value_or(in.x)},
                          {"dt_bias", in.dt_bias.value_or(in.A)}});
  c.dtype_in("state", in.state, {DType::f32, DType::f64}).contiguous("state", in.state);
  SelectiveStateUpdateParams p;
  p.batch = in.state.size(0), p.dim = in.state.size(1), p.dstate = in.state.size(2);
  p.dtype = in.state.dtype(), p.dt_softplus = in.dt_softplus;
  const index_t b = p.batch, d = p.dim, n = p.dstate;
  auto rows = [&](const char* nm, const TensorView& t, index_t cols) {
    c.same_dtype(nm, t, "state", in.state).shape(nm, t, {b, cols}).unit_stride(nm, t, 1);
    return t.stride(0);
  };
  p.x_batch_stride = rows("x", in.x, d), p.x = in.x.data();
  p.dt_batch_stride = rows("dt", in.dt, d), p.dt = in.dt.data();
  p.B_batch_stride = rows("B", in.B, n), p.B = in.B.data();
  p.C_batch_stride = rows("C", in.C, n), p.C = in.C.data();
  p.out_batch_stride = rows("out", out, d), p.out = out.data();
  c.same_dtype("A", in.A, "state", in.state).shape("A", in.A, {d, n}).contiguous("A", in.A);
  p.A = in.A.data(), p.state = in.state.data();
  auto channel = [&](const char* nm, const std::optional<TensorView>& t) -> const void* {
    if (!t) return nullptr;
    c.defined(nm, *t).same_dtype(nm, *t, "state", in.state).shape(nm, *t, {d}).contiguous(nm, *t);
    return t->data();
  };
  p.D = channel("D", in.D), p.dt_bias = channel("dt_bias", in.dt_bias);
  if (in.z) p.z_batch_stride = rows("z", *in.z, d), p.z = in.z->data();
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
