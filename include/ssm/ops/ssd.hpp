// The SSD op: Mamba-2's selective state space with a scalar decay per head, computed in chunks (state space duality;
// docs/ssd.md, the formulas in core/params/ssd.hpp). The semantics of mamba_ssm's mamba_chunk_scan_combined with
// D, z, dt_bias, dt_softplus, dt_limit, initial states, the final state and packed sequences (cu_seqlens), plus:
//   - an initial state per packed sequence (mamba_ssm takes none with cu_seqlens);
//   - the final state of every packed sequence (mamba_ssm's varlen_states), the same output as without cu_seqlens;
//   - x (and z, out) may also be given as (b, l, h p) with head_dim set;
//   - f64 computes in f64 (f32, f16, bf16 in f32).
// CPU tensors: the chunked path of cpu/ssd/ (or, on request, its token loop or the double one of reference/ssd.hpp). CUDA tensors: the
// backend's ssd_forward entry (ssm::cuda's kernels cuda/kernels/ssd_*.cuh: f32, f16, bf16 inputs; an ssm::Error
// "not implemented on cuda yet" where a backend leaves it null). The backward (ssd_backward, after
// selective_scan_backward): the chunked CPU backward of cpu/ssd/backward.hpp or the double one; on CUDA tensors the
// backend's ssd_backward entry (cuda/kernels/ssd_*_bwd.cuh and friends; opt.path is ignored there). Both read the
// chunk states and y a forward kept (SsdSaved), when given, instead of computing them again.
#pragma once

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ssm/core/backend.hpp"
#include "ssm/core/check.hpp"
#include "ssm/core/params/ssd.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/ssd/backward.hpp"
#include "ssm/cpu/ssd/forward.hpp"
#include "ssm/cpu/ssd/recurrent.hpp"
#include "ssm/reference/ssd.hpp"

namespace ssm {

/// Input dtype: x, B, C, z, out in f32 | f64 | f16 | bf16. Param dtype (f64 for f64 inputs, else f32): dt, A, D,
/// dt_bias, the states. The last dimension of x, z, B, C and out must have unit stride; A, D, dt_bias and the states
/// must be contiguous.
struct SsdInputs {
  TensorView x{};                             // (b, l, h, p), or (b, l, h p) with SsdOptions::head_dim
  TensorView dt{};                            // (b, l, h): Δ before dt_bias, softplus and the limit
  TensorView A{};                             // (h): the decay rate per head (Mamba-2: −exp(A_log) < 0)
  TensorView B{};                             // (b, l, g, n), g divides h
  TensorView C{};                             // (b, l, g, n)
  std::optional<TensorView> D{};              // (h) or (h, p): the skip
  std::optional<TensorView> z{};              // x's shape: the gate, out = y silu(z)
  std::optional<TensorView> dt_bias{};        // (h)
  bool dt_softplus = false;
  std::optional<std::pair<double, double>> dt_limit{};  // clamp Δ to [min, max] after the softplus
  std::optional<TensorView> initial_state{};  // (b, h, p, n); with cu_seqlens (n_seqs, h, p, n)
  std::optional<TensorView> cu_seqlens{};     // (n_seqs + 1) i32 | i64 on the CPU; then b == 1, sequences packed along l
};

/// CPU: automatic = chunked; chunked = the four stages on GEMMs (cpu/ssd/forward.hpp); recurrent = the token loop in
/// the compute type (cpu/ssd/recurrent.hpp); reference = the token loop in double (reference/ssd.hpp).
enum class SsdPath { automatic, reference, chunked, recurrent };

struct SsdOptions {
  index_t chunk_size = 256;  // Q > 0: steps per chunk (Mamba-2 checkpoints use 256; 64..256 is the useful range)
  index_t head_dim = 0;      // > 0: x, z and out are (b, l, h p) with p = head_dim (it must divide their last extent)
  SsdPath path = SsdPath::automatic;
  int threads = 0;                    // CPU threads (0: by the amount of work)
  bool return_final_state = false;    // the allocating form: also the final state
  bool save_for_backward = false;     // the allocating form: also SsdOutputs::saved (CPU chunked path, or CUDA)
};

/// What a chunked forward (CPU or CUDA) keeps so that ssd_backward need not compute it again: the state entering
/// each chunk and y before the gate. With them the backward skips the chunk states, the state passing and (with z)
/// the output, about a third of its work. Pass it to ssd_backward with the same inputs and chunk size, on the same
/// device.
struct SsdSaved {
  Tensor chunk_states;     // (chunks, h, p, n) param dtype: each sequence cut into chunk_size steps from its start
  Tensor y;                // (b, l, h, p) param dtype: SSD + D x before silu(z); empty without z
  index_t chunk_size = 0;  // the chunk size the forward ran with (a chunk longer than l counts as l)
};

/// The backward's gradients (ssd_backward): each has the shape and dtype of its input (grad_x, grad_z (b, l, h, p)
/// or (b, l, h p) as x was given); empty when the input was absent. All contiguous.
struct SsdGrads {
  Tensor grad_x, grad_dt, grad_A, grad_B, grad_C, grad_D, grad_z, grad_dt_bias, grad_initial_state;
  std::string path;  // "cpu-chunked", "reference" or "cuda"
};

struct SsdOutputs {
  Tensor out;          // x's shape and dtype
  Tensor final_state;  // (rows, h, p, n) param dtype, when asked for
  SsdSaved saved;      // with SsdOptions::save_for_backward
  std::string path;    // "cpu-chunked", "cpu-recurrent", "reference" or "cuda"
};

namespace detail {

/// A (b, l, h p) view as (b, l, h, p).
inline TensorView split_heads(const Checker& c, const char* name, const TensorView& t, index_t head_dim) {
  c.rank(name, t, 3);
  c.require(t.size(2) % head_dim == 0, name, "head_dim = ", head_dim, " does not divide its last extent ", t.size(2),
            " (shape ", t.shape().str(), ")");
  c.unit_stride(name, t, 2);
  return TensorView(t.data(), t.dtype(), t.device(), {t.size(0), t.size(1), t.size(2) / head_dim, head_dim},
                    {t.stride(0), t.stride(1), head_dim, 1});
}

/// Checks everything and fills the argument block; `cu` receives cu_seqlens as i64 (p points into it). `out_name`
/// names out_arg in errors (the backward passes grad_out, which has out's shape and dtype).
inline SsdParams check_ssd(const Checker& c, const SsdInputs& in, const TensorView& out_arg,
                           const std::optional<TensorView>& final_state, const SsdOptions& opt,
                           std::vector<std::int64_t>& cu, Device& device, const char* out_name = "out") {
  for (const auto& [nm, t] : {NamedView{"x", in.x}, NamedView{"dt", in.dt}, NamedView{"A", in.A}, NamedView{"B", in.B},
                              NamedView{"C", in.C}, NamedView{out_name, out_arg}})
    c.defined(nm, t);
  c.require(opt.chunk_size > 0, "chunk_size", "must be > 0, got ", opt.chunk_size);
  c.require(opt.head_dim >= 0, "head_dim", "must be >= 0 (0: x is (b, l, h, p)), got ", opt.head_dim);
  device = dispatch_device(
      c, {{"x", in.x}, {"dt", in.dt}, {"A", in.A}, {"B", in.B}, {"C", in.C}, {out_name, out_arg},
          {"D", in.D.value_or(in.A)}, {"z", in.z.value_or(in.x)}, {"dt_bias", in.dt_bias.value_or(in.A)},
          {"initial_state", in.initial_state.value_or(in.A)}, {"final_state", final_state.value_or(in.A)}});
  const TensorView x = opt.head_dim > 0 ? split_heads(c, "x", in.x, opt.head_dim) : in.x;
  const TensorView out = opt.head_dim > 0 ? split_heads(c, out_name, out_arg, opt.head_dim) : out_arg;
  c.rank("x", x, 4).floating("x", x).unit_stride("x", x, 3);
  SsdParams p;
  p.batch = x.size(0), p.seqlen = x.size(1), p.nheads = x.size(2), p.headdim = x.size(3);
  p.input_dtype = x.dtype(), p.param_dtype = compute_dtype(x.dtype());
  // a chunk longer than the sequence is the sequence: the same result, and no workspace sized by a huge chunk_size
  p.chunk_size = std::min<index_t>(opt.chunk_size, std::max<index_t>(p.seqlen, 1));
  const index_t b = p.batch, l = p.seqlen, h = p.nheads, hd = p.headdim;
  const char* pname = p.param_dtype == DType::f64 ? "f64 (x is f64)" : "f32 (the param dtype for f32 / f16 / bf16 x)";
  auto param = [&](const char* nm, const TensorView& t) {
    c.require(t.dtype() == p.param_dtype, nm, "expected dtype ", pname, ", got ", name(t.dtype()));
  };
  p.x = x.data(), p.x_batch_stride = x.stride(0), p.x_seq_stride = x.stride(1), p.x_head_stride = x.stride(2);

  param("dt", in.dt);
  c.shape("dt", in.dt, {b, l, h});
  p.dt = in.dt.data(), p.dt_batch_stride = in.dt.stride(0), p.dt_seq_stride = in.dt.stride(1);
  p.dt_head_stride = in.dt.stride(2);
  param("A", in.A);
  c.shape("A", in.A, {h}).contiguous("A", in.A);
  p.A = in.A.data();

  c.rank("B", in.B, 4);
  p.ngroups = in.B.size(2), p.dstate = in.B.size(3);
  const index_t g = p.ngroups, n = p.dstate;
  c.require(g > 0 && h % g == 0, "B", "n_groups = ", g, " (its dimension 2) does not divide the number of heads h = ", h);
  for (const auto& [nm, t] : {NamedView{"B", in.B}, NamedView{"C", in.C}})
    c.same_dtype(nm, t, "x", x).shape(nm, t, {b, l, g, n}).unit_stride(nm, t, 3);
  p.B = in.B.data(), p.B_batch_stride = in.B.stride(0), p.B_seq_stride = in.B.stride(1), p.B_group_stride = in.B.stride(2);
  p.C = in.C.data(), p.C_batch_stride = in.C.stride(0), p.C_seq_stride = in.C.stride(1), p.C_group_stride = in.C.stride(2);

  if (in.D) {
    c.defined("D", *in.D);
    param("D", *in.D);
    c.require(in.D->rank() >= 1 && in.D->rank() <= 2, "D", "expected shape (", h, ") or (", h, ", ", hd, "), got ",
              in.D->shape().str());
    if (in.D->rank() == 1) c.shape("D", *in.D, {h});
    else c.shape("D", *in.D, {h, hd});
    c.contiguous("D", *in.D);
    p.D = in.D->data(), p.D_per_channel = in.D->rank() == 2;
  }
  if (in.z) {
    c.defined("z", *in.z);
    const TensorView z = opt.head_dim > 0 ? split_heads(c, "z", *in.z, opt.head_dim) : *in.z;
    c.same_dtype("z", z, "x", x).shape("z", z, {b, l, h, hd}).unit_stride("z", z, 3);
    p.z = z.data(), p.z_batch_stride = z.stride(0), p.z_seq_stride = z.stride(1), p.z_head_stride = z.stride(2);
  }
  if (in.dt_bias) {
    c.defined("dt_bias", *in.dt_bias);
    param("dt_bias", *in.dt_bias);
    c.shape("dt_bias", *in.dt_bias, {h}).contiguous("dt_bias", *in.dt_bias);
    p.dt_bias = in.dt_bias->data();
  }
  p.dt_softplus = in.dt_softplus;
  if (in.dt_limit) {
    const auto [lo, hi] = *in.dt_limit;
    c.require(!std::isnan(lo) && !std::isnan(hi) && lo <= hi, "dt_limit",
              "expected (min, max) with min <= max and neither NaN, got (", lo, ", ", hi, ")");
    p.has_dt_limit = true, p.dt_min = lo, p.dt_max = hi;
  }

  index_t rows = b;
  if (in.cu_seqlens) {
    cu = c.cu_seqlens("cu_seqlens", *in.cu_seqlens, b, l);
    p.cu_seqlens = cu.data(), p.n_seqs = static_cast<index_t>(cu.size()) - 1;
    rows = p.n_seqs;
  }
  auto state = [&](const char* nm, const TensorView& t) {
    c.defined(nm, t);
    param(nm, t);
    c.shape(nm, t, {rows, h, hd, n}).contiguous(nm, t);
  };
  if (in.initial_state) state("initial_state", *in.initial_state), p.initial_state = in.initial_state->data();
  if (final_state) state("final_state", *final_state), p.final_state = final_state->data();

  c.same_dtype(out_name, out, "x", x).shape(out_name, out, {b, l, h, hd}).unit_stride(out_name, out, 3);
  p.out = out.data(), p.out_batch_stride = out.stride(0), p.out_seq_stride = out.stride(1);
  p.out_head_stride = out.stride(2);
  return p;
}

/// t, unless it already has this shape, dtype and device and nothing else owns its storage (then it is overwritten):
/// a training loop that passes the same SsdSaved every step does not fault in fresh pages each time (at the Mamba-2
/// shape, l = 2048, 25 MB: a third of the forward's time on a 2-core EPYC VM, bench_ssd).
inline void reuse_or_allocate(Tensor& t, const Dims& shape, DType dtype, Device device) {
  if (t.defined() && t.use_count() == 1 && t.shape() == shape && t.dtype() == dtype &&
      t.device() == device && t.view().is_contiguous())
    return;
  t = Tensor::empty(shape, dtype, device);
}

/// Checks what a forward kept (SsdSaved) against the backward's argument block p and points gp at it.
inline void check_saved(const Checker& c, const SsdSaved& s, const SsdParams& p, const Device& device,
                        SsdGradParams& gp) {
  c.require(s.chunk_size == p.chunk_size, "saved",
            "was kept by a forward in chunks of ", s.chunk_size, " steps, but this backward uses chunks of ",
            p.chunk_size, " (SsdOptions::chunk_size, at most l); run both with the same chunk size");
  c.defined("saved.chunk_states", s.chunk_states).dtype("saved.chunk_states", s.chunk_states, p.param_dtype);
  c.shape("saved.chunk_states", s.chunk_states, {p.chunk_count(), p.nheads, p.headdim, p.dstate});
  c.contiguous("saved.chunk_states", s.chunk_states).device("saved.chunk_states", s.chunk_states, device);
  gp.saved_states = s.chunk_states.data();
  if (!p.z) return;  // y is read only for z's gradient
  c.require(s.y.defined(), "saved.y",
            "is empty, but the backward with z needs y before the gate (keep it with a forward given the same z)");
  c.dtype("saved.y", s.y, p.param_dtype).shape("saved.y", s.y, {p.batch, p.seqlen, p.nheads, p.headdim});
  c.contiguous("saved.y", s.y).device("saved.y", s.y, device);
  gp.saved_y = s.y.data();
}

}  // namespace detail

/// The SSD forward into `out` (x's shape and dtype) and, when given, `final_state` ((rows, h, p, n), param dtype);
/// with `save`, also what the backward can reuse (SsdSaved; the chunked CPU path, or CUDA). save's tensors are
/// written in place where they already fit and nothing else owns them, else allocated (on x's device).
/// Returns the path that ran.
inline std::string ssd_into(const SsdInputs& in, const TensorView& out,
                            const std::optional<TensorView>& final_state = std::nullopt, const SsdOptions& opt = {},
                            SsdSaved* save = nullptr) {
  Checker c("ssd");
  std::vector<std::int64_t> cu;
  Device device;
  SsdParams p = detail::check_ssd(c, in, out, final_state, opt, cu, device);
  // On CUDA the backend's entry first: a backend without one raises before anything is allocated for it.
  auto* const device_forward = device.is_cuda() ? backend_entry(c.op(), device, &DeviceBackend::ssd_forward) : nullptr;
  if (save != nullptr) {
    const char* save_arg = opt.save_for_backward ? "save_for_backward" : "save";  // ssd()'s option, or ssd_into's
    c.require(device.is_cuda() || opt.path == SsdPath::automatic || opt.path == SsdPath::chunked, save_arg,
              "only the chunked path keeps chunk states; opt.path asks for the ",
              opt.path == SsdPath::reference ? "reference" : "recurrent", " path");
    save->chunk_size = p.chunk_size;
    detail::reuse_or_allocate(save->chunk_states, {p.chunk_count(), p.nheads, p.headdim, p.dstate}, p.param_dtype,
                              device);
    if (p.z) detail::reuse_or_allocate(save->y, {p.batch, p.seqlen, p.nheads, p.headdim}, p.param_dtype, device);
    else save->y = Tensor();
    p.chunk_states = save->chunk_states.data();
    p.y = p.z ? save->y.data() : nullptr;
  }
  try {
    if (device_forward != nullptr) {
      device_forward(p, nullptr);
      return "cuda";
    }
    if (opt.path == SsdPath::reference) {
      reference::ssd_forward(p);
      return "reference";
    }
    if (opt.path == SsdPath::recurrent) {
      cpu::ssd_forward_recurrent(p, opt.threads);
      return "cpu-recurrent";
    }
    cpu::ssd_forward_chunked(p, opt.threads);
    return "cpu-chunked";
  } catch (...) {
    if (save != nullptr) *save = SsdSaved();  // a forward that failed (e.g. past the CUDA kernels' limits) keeps nothing
    throw;
  }
}

/// The allocating form: out, and the final state when opt.return_final_state.
inline SsdOutputs ssd(const SsdInputs& in, const SsdOptions& opt = {}) {
  SsdOutputs r;
  r.out = Tensor::empty(in.x.shape(), in.x.dtype(), in.x.device());
  std::optional<TensorView> fs;
  if (opt.return_final_state) {
    const index_t h = opt.head_dim > 0 && in.x.rank() == 3 ? in.x.size(2) / opt.head_dim : in.x.rank() >= 3 ? in.x.size(2) : 0;
    const index_t hd = opt.head_dim > 0 ? opt.head_dim : in.x.rank() == 4 ? in.x.size(3) : 0;
    const index_t rows = in.cu_seqlens ? in.cu_seqlens->numel() - 1 : in.x.rank() > 0 ? in.x.size(0) : 0;
    const index_t n = in.B.rank() == 4 ? in.B.size(3) : 0;
    r.final_state = Tensor::empty({std::max<index_t>(rows, 0), h, hd, n}, compute_dtype(in.x.dtype()), in.x.device());
    fs = r.final_state.view();
  }
  r.path = ssd_into(in, r.out, fs, opt, opt.save_for_backward ? &r.saved : nullptr);
  return r;
}

/// Gradients of the SSD forward for grad_out (out's shape and dtype, contiguous) and the optional grad_final_state
/// ((rows, h, p, n), param dtype, contiguous; zero when absent). SsdPath::reference runs the token loop in double
/// (reference::ssd_backward); automatic and chunked the chunked CPU backward (cpu/ssd/backward.hpp: opt.chunk_size,
/// opt.threads). The token loop in the compute type (SsdPath::recurrent) has no backward: an ssm::Error says so.
/// CUDA tensors: the backend's ssd_backward entry (f32, f16, bf16 inputs; opt.path is ignored, as in the forward).
/// Gradients of shared inputs (A, D, dt_bias; B and C over a group's heads) are sums over what reads them. `saved`:
/// what the forward kept over these same inputs (SsdSaved), read by the chunked path instead of recomputed (the
/// reference path ignores it).
inline SsdGrads ssd_backward(const SsdInputs& in, const TensorView& grad_out,
                             std::optional<TensorView> grad_final_state = std::nullopt, const SsdOptions& opt = {},
                             const SsdSaved* saved = nullptr) {
  Checker c("ssd_backward");
  std::vector<std::int64_t> cu;
  Device device;
  SsdParams p = detail::check_ssd(c, in, grad_out, std::nullopt, opt, cu, device, "grad_out");
  p.out = nullptr, p.out_batch_stride = p.out_seq_stride = p.out_head_stride = 0;  // grad_out is read, never written
  c.contiguous("grad_out", grad_out);
  SsdGradParams gp;
  gp.grad_out = grad_out.data();
  if (grad_final_state) {
    const TensorView& gf = *grad_final_state;
    c.defined("grad_final_state", gf).dtype("grad_final_state", gf, p.param_dtype);
    c.shape("grad_final_state", gf, {p.rows(), p.nheads, p.headdim, p.dstate}).contiguous("grad_final_state", gf);
    c.require(gf.device() == device, "grad_final_state", "is on ", gf.device().str(), " but 'x' is on ", device.str());
    gp.grad_final_state = gf.data();
  }
  c.require(device.is_cuda() || opt.path != SsdPath::recurrent, "path",
            "SsdPath::recurrent (the token loop in the compute type) has no backward; use chunked or reference");
  if (saved != nullptr) detail::check_saved(c, *saved, p, device, gp);
  auto* const device_backward =
      device.is_cuda() ? backend_entry(c.op(), device, &DeviceBackend::ssd_backward) : nullptr;
  SsdGrads r;
  // Uninitialized: every path writes every element (cu_seqlens cover all of l).
  const auto like = [&](const TensorView& t) { return Tensor::empty(t.shape(), t.dtype(), device); };
  r.grad_x = like(in.x), r.grad_dt = like(in.dt), r.grad_A = like(in.A), r.grad_B = like(in.B), r.grad_C = like(in.C);
  gp.grad_x = r.grad_x.data(), gp.grad_dt = r.grad_dt.data(), gp.grad_A = r.grad_A.data();
  gp.grad_B = r.grad_B.data(), gp.grad_C = r.grad_C.data();
  if (in.D) gp.grad_D = (r.grad_D = like(*in.D)).data();
  if (in.z) gp.grad_z = (r.grad_z = like(*in.z)).data();
  if (in.dt_bias) gp.grad_dt_bias = (r.grad_dt_bias = like(*in.dt_bias)).data();
  if (in.initial_state) gp.grad_initial_state = (r.grad_initial_state = like(*in.initial_state)).data();
  if (device_backward != nullptr) {
    device_backward(p, gp, nullptr);
    r.path = "cuda";
  } else if (opt.path == SsdPath::reference) {
    reference::ssd_backward(p, gp);
    r.path = "reference";
  } else {
    cpu::ssd_backward_chunked(p, gp, opt.threads);
    r.path = "cpu-chunked";
  }
  return r;
}

/// ssd_backward without a grad_final_state.
inline SsdGrads ssd_backward(const SsdInputs& in, const TensorView& grad_out, const SsdOptions& opt,
                             const SsdSaved* saved = nullptr) {
  return ssd_backward(in, grad_out, std::nullopt, opt, saved);
}

}  // namespace ssm
