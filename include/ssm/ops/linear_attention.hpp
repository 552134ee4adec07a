// The linear-attention op: linear attention (Katharopoulos et al. 2020), RetNet's retention (Sun et al. 2023) and
// gated linear attention, GLA (Yang et al. 2024), as one recurrence with a state (dk, dv) per head
// (docs/linear_attention.md; the formulas in core/params/linear_attention.hpp): a feature map φ (identity or elu + 1)
// on q and k, an optional normalizer, an optional fixed decay γ_h ∈ (0, 1] per head, an optional data-dependent log
// gate g_t (dk) per head and step (GLA), a scale, initial and final states, packed sequences (cu_seqlens).
// Forms: the chunked CPU path (cpu/linear_attention.hpp: on the SSD engine, or with a log gate on the gated chunk
// algebra of cpu/linear_attention_gated.hpp), the token loop in the compute type, the token loop in double
// (reference/linear_attention.hpp), and the one-token step for decoding (linear_attention_step). Forward and
// backward (linear_attention_backward: q, k, v, the log gate and the initial states; γ is fixed). CUDA tensors run the
// backend's linear_attention_forward / _backward entries (ssm::cuda: the SSD kernels on the same packing as the CPU
// path, or with a log gate cuda/kernels/gla.cuh in the SSD kernels' place; f32 / f16 / bf16 inputs; opt.path is
// ignored there), and so does the decode step.
#pragma once

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "ssm/core/backend.hpp"
#include "ssm/core/check.hpp"
#include "ssm/core/params/linear_attention.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/linear_attention.hpp"
#include "ssm/ops/one_step.hpp"
#include "ssm/ops/value_checks.hpp"
#include "ssm/reference/linear_attention.hpp"

namespace ssm {

/// Input dtype: q, k, v, out in f32 | f64 | f16 | bf16; the states in the param dtype (f64 for f64 inputs, else
/// f32), contiguous. The last dimension of q, k, v and out must have unit stride.
struct LinearAttentionInputs {
  TensorView q{};                                  // (b, l, g, dk), g divides h
  TensorView k{};                                  // (b, l, g, dk)
  TensorView v{};                                  // (b, l, h, dv)
  std::optional<TensorView> log_gate{};            // (b, l, h, dk) v's dtype, each finite and <= 0: GLA's gate
  std::optional<TensorView> initial_state{};       // (b, h, dk, dv); with cu_seqlens (n_seqs, h, dk, dv)
  std::optional<TensorView> initial_normalizer{};  // (b, h, dk), only with normalize
  std::optional<TensorView> cu_seqlens{};          // (n_seqs + 1) i32 | i64 on the CPU; then b == 1
};

/// automatic = chunked; chunked = on the SSD engine; recurrent = the token loop in the compute type; reference =
/// the token loop in double.
enum class LinearAttentionPath { automatic, reference, chunked, recurrent };

struct LinearAttentionOptions {
  FeatureMap feature_map = FeatureMap::identity;
  bool normalize = false;  // y_t = S_tᵀ q̃_t / (z_tᵀ q̃_t + eps)
  double eps = 1e-6;       // >= 0, added to the normalizer's denominator (only with normalize)
  double scale = 1.0;      // q̃ = scale φ(q); finite
  std::vector<double> gamma{};  // empty: no decay (linear attention); else (h), each γ_h ∈ (0, 1] (retention)
  index_t chunk_size = 64;      // > 0
  LinearAttentionPath path = LinearAttentionPath::automatic;
  int threads = 0;                  // CPU threads (0: by the amount of work)
  bool return_final_state = false;  // the allocating form: also the final state (and normalizer)
};

/// RetNet's multi-scale decays (Sun et al. 2023, §2.2): γ_i = 1 − 2^(−5 − i) for head i of h.
inline std::vector<double> retention_gammas(index_t heads) {
  std::vector<double> g(static_cast<std::size_t>(heads));
  for (index_t i = 0; i < heads; ++i) g[static_cast<std::size_t>(i)] = 1.0 - std::exp2(-5.0 - static_cast<double>(i));
  return g;
}

struct LinearAttentionOutputs {
  Tensor out;               // v's shape and dtype
  Tensor final_state;       // (rows, h, dk, dv) param dtype, when asked for
  Tensor final_normalizer;  // (rows, h, dk), when asked for with normalize
  std::string path;         // "cpu-chunked", "cpu-recurrent", "reference" or "cuda"
};

struct LinearAttentionGrads {
  Tensor grad_q, grad_k, grad_v, grad_initial_state, grad_initial_normalizer;  // contiguous; empty when absent
  Tensor grad_log_gate;                                                         // (b, l, h, dk), with a log gate
  std::string path;
};

namespace detail {

/// Checks everything and fills the argument block; `cu` receives cu_seqlens as i64 and `log_gamma` the decays'
/// logarithms (p points into both).
inline LinearAttentionParams check_linear_attention(const Checker& c, const LinearAttentionInputs& in,
                                                    const TensorView& out, const std::optional<TensorView>& final_state,
                                                    const std::optional<TensorView>& final_normalizer,
                                                    const LinearAttentionOptions& opt, std::vector<std::int64_t>& cu,
                                                    std::vector<double>& log_gamma, const char* out_name = "out") {
  for (const auto& [nm, t] : {NamedView{"q", in.q}, NamedView{"k", in.k}, NamedView{"v", in.v}, NamedView{out_name, out}})
    c.defined(nm, t);
  c.require(opt.chunk_size > 0, "chunk_size", "must be > 0, got ", opt.chunk_size);
  c.finite("scale", opt.scale);
  c.require(std::isfinite(opt.eps) && opt.eps >= 0, "eps", "must be finite and >= 0, got ", opt.eps);
  const Device device = dispatch_device(c, {{"q", in.q},
                                            {"k", in.k},
                                            {"v", in.v},
                                            {out_name, out},
                                            {"log_gate", in.log_gate.value_or(in.q)},
                                            {"initial_state", in.initial_state.value_or(in.q)},
                                            {"initial_normalizer", in.initial_normalizer.value_or(in.q)},
                                            {"final_state", final_state.value_or(in.q)},
                                            {"final_normalizer", final_normalizer.value_or(in.q)}});
  c.rank("v", in.v, 4).floating("v", in.v).unit_stride("v", in.v, 3);
  check_cuda_sequence_shapes(c, device, in.q, in.v);
  LinearAttentionParams p;
  p.batch = in.v.size(0), p.seqlen = in.v.size(1), p.nheads = in.v.size(2), p.dv = in.v.size(3);
  p.input_dtype = in.v.dtype(), p.param_dtype = compute_dtype(in.v.dtype());
  // a chunk longer than the sequence is the sequence: the same result, and no buffer sized by a huge chunk_size
  p.chunk_size = std::min<index_t>(opt.chunk_size, std::max<index_t>(p.seqlen, 1));
  p.feature_map = opt.feature_map, p.normalize = opt.normalize, p.eps = opt.eps;
  p.scale = opt.scale;
  const index_t b = p.batch, l = p.seqlen, h = p.nheads, dv = p.dv;
  c.rank("q", in.q, 4);
  p.ngroups = in.q.size(2), p.dk = in.q.size(3);
  const index_t g = p.ngroups, dk = p.dk;
  c.require(g > 0 && h % g == 0, "q", "its dimension 2 (the groups, ", g, ") does not divide the heads of v, h = ", h);
  for (const auto& [nm, t] : {NamedView{"q", in.q}, NamedView{"k", in.k}})
    c.same_dtype(nm, t, "v", in.v).shape(nm, t, {b, l, g, dk}).unit_stride(nm, t, 3);
  p.v = in.v.data(), p.v_batch_stride = in.v.stride(0), p.v_seq_stride = in.v.stride(1), p.v_head_stride = in.v.stride(2);
  p.q = in.q.data(), p.q_batch_stride = in.q.stride(0), p.q_seq_stride = in.q.stride(1), p.q_group_stride = in.q.stride(2);
  p.k = in.k.data(), p.k_batch_stride = in.k.stride(0), p.k_seq_stride = in.k.stride(1), p.k_group_stride = in.k.stride(2);

  if (!opt.gamma.empty()) {
    c.require(static_cast<index_t>(opt.gamma.size()) == h, "gamma", "expected one decay per head (", h, "), got ",
              opt.gamma.size());
    log_gamma.clear();
    for (double gm : opt.gamma) {
      c.require(std::isfinite(gm) && gm > 0 && gm <= 1, "gamma", "every decay must be in (0, 1], got ", gm);
      log_gamma.push_back(std::log(gm));
    }
    p.log_gamma = log_gamma.data();
  }
  if (in.log_gate) {  // (b, l, h, dk), each finite and <= 0, element by element on the host
    const TensorView& t = *in.log_gate;
    c.defined("log_gate", t).same_dtype("log_gate", t, "v", in.v).shape("log_gate", t, {b, l, h, dk});
    c.unit_stride("log_gate", t, 3);
    Tensor storage;  // a CUDA tensor's values, copied to the host for the check
    check_values(
        c, "log_gate", host_mirror(t, storage), [](double x) { return std::isfinite(x) && x <= 0; },
        "every log gate must be finite and <= 0 (α = exp(g) <= 1)");
    p.log_gate = t.data(), p.gate_batch_stride = t.stride(0), p.gate_seq_stride = t.stride(1);
    p.gate_head_stride = t.stride(2);
  }
  index_t rows = b;
  if (in.cu_seqlens) {
    cu = c.cu_seqlens("cu_seqlens", *in.cu_seqlens, b, l);
    p.cu_seqlens = cu.data(), p.n_seqs = static_cast<index_t>(cu.size()) - 1;
    rows = p.n_seqs;
  }
  const char* pname = p.param_dtype == DType::f64 ? "f64 (v is f64)" : "f32 (the param dtype for f32 / f16 / bf16 v)";
  auto state = [&](const char* nm, const TensorView& t, std::initializer_list<index_t> shape) {
    c.defined(nm, t);
    c.require(t.dtype() == p.param_dtype, nm, "expected dtype ", pname, ", got ", name(t.dtype()));
    c.shape(nm, t, shape).contiguous(nm, t);
  };
  auto normalizer = [&](const char* nm) {
    c.require(opt.normalize, nm, "is given but the normalizer is off (LinearAttentionOptions::normalize)");
  };
  if (in.initial_state) state("initial_state", *in.initial_state, {rows, h, dk, dv}), p.initial_state = in.initial_state->data();
  if (final_state) state("final_state", *final_state, {rows, h, dk, dv}), p.final_state = final_state->data();
  if (in.initial_normalizer) {
    normalizer("initial_normalizer");
    state("initial_normalizer", *in.initial_normalizer, {rows, h, dk});
    p.initial_normalizer = in.initial_normalizer->data();
  }
  if (final_normalizer) {
    normalizer("final_normalizer");
    state("final_normalizer", *final_normalizer, {rows, h, dk});
    p.final_normalizer = final_normalizer->data();
  }
  c.same_dtype(out_name, out, "v", in.v).shape(out_name, out, {b, l, h, dv}).unit_stride(out_name, out, 3);
  p.out = out.data(), p.out_batch_stride = out.stride(0), p.out_seq_stride = out.stride(1);
  p.out_head_stride = out.stride(2);
  return p;
}

}  // namespace detail

/// The forward into `out` (v's shape and dtype) and, when given, the final state (rows, h, dk, dv) and normalizer
/// (rows, h, dk; only with normalize). Returns the path that ran.
inline std::string linear_attention_into(const LinearAttentionInputs& in, const TensorView& out,
                                         const std::optional<TensorView>& final_state = std::nullopt,
                                         const std::optional<TensorView>& final_normalizer = std::nullopt,
                                         const LinearAttentionOptions& opt = {}) {
  Checker c("linear_attention");
  std::vector<std::int64_t> cu;
  std::vector<double> log_gamma;
  const LinearAttentionParams p =
      detail::check_linear_attention(c, in, out, final_state, final_normalizer, opt, cu, log_gamma);
  if (in.q.device().is_cuda()) {
    backend_entry(c.op(), in.q.device(), &DeviceBackend::linear_attention_forward)(p, nullptr);
    return "cuda";
  }
  switch (opt.path) {
    case LinearAttentionPath::reference: reference::linear_attention_forward(p); return "reference";
    case LinearAttentionPath::recurrent: cpu::linear_attention_forward_recurrent(p, opt.threads); return "cpu-recurrent";
    default: cpu::linear_attention_forward_chunked(p, opt.threads); return "cpu-chunked";
  }
}

namespace detail {
inline index_t linear_attention_rows(const LinearAttentionInputs& in) {
  return in.cu_seqlens ? in.cu_seqlens->numel() - 1 : in.v.rank() > 0 ? in.v.size(0) : 0;
}
}  // namespace detail

/// The allocating form: out, and the final state (and normalizer) when opt.return_final_state.
inline LinearAttentionOutputs linear_attention(const LinearAttentionInputs& in, const LinearAttentionOptions& opt = {}) {
  LinearAttentionOutputs r;
  r.out = Tensor::empty(in.v.shape(), in.v.dtype(), in.v.device());
  std::optional<TensorView> fs, fz;
  if (opt.return_final_state && in.v.rank() == 4 && in.q.rank() == 4) {
    const index_t rows = std::max<index_t>(detail::linear_attention_rows(in), 0), h = in.v.size(2);
    const DType pt = compute_dtype(in.v.dtype());
    r.final_state = Tensor::empty({rows, h, in.q.size(3), in.v.size(3)}, pt, in.v.device());
    fs = r.final_state.view();
    if (opt.normalize) {
      r.final_normalizer = Tensor::empty({rows, h, in.q.size(3)}, pt, in.v.device());
      fz = r.final_normalizer.view();
    }
  }
  r.path = linear_attention_into(in, r.out, fs, fz, opt);
  return r;
}

/// Gradients for grad_out (v's shape and dtype, contiguous) and the optional gradients of the final state and
/// normalizer (param dtype, contiguous; zero when absent). LinearAttentionPath::reference runs the token loop in
/// double; automatic and chunked the engine's backward. The recurrent path has no backward (an ssm::Error). CUDA
/// tensors: the backend's backward (opt.path ignored). grad_q, grad_k are summed over a group's heads.
inline LinearAttentionGrads linear_attention_backward(const LinearAttentionInputs& in, const TensorView& grad_out,
                                                      std::optional<TensorView> grad_final_state = std::nullopt,
                                                      std::optional<TensorView> grad_final_normalizer = std::nullopt,
                                                      const LinearAttentionOptions& opt = {}) {
  Checker c("linear_attention_backward");
  std::vector<std::int64_t> cu;
  std::vector<double> log_gamma;
  LinearAttentionParams p = detail::check_linear_attention(c, in, grad_out, std::nullopt, std::nullopt, opt, cu,
                                                           log_gamma, "grad_out");
  p.out = nullptr, p.out_batch_stride = p.out_seq_stride = p.out_head_stride = 0;  // read, never written
  c.contiguous("grad_out", grad_out);
  c.require(in.q.device().is_cuda() || opt.path != LinearAttentionPath::recurrent, "path",
            "LinearAttentionPath::recurrent has no backward; use chunked or reference");
  LinearAttentionGradParams gp;
  gp.grad_out = grad_out.data();
  const DType pt = p.param_dtype;
  if (grad_final_state) {
    const TensorView& t = *grad_final_state;
    c.defined("grad_final_state", t).dtype("grad_final_state", t, pt).contiguous("grad_final_state", t);
    c.shape("grad_final_state", t, {p.rows(), p.nheads, p.dk, p.dv}).device("grad_final_state", t, in.q.device());
    gp.grad_final_state = t.data();
  }
  if (grad_final_normalizer) {
    const TensorView& t = *grad_final_normalizer;
    c.require(opt.normalize, "grad_final_normalizer", "is given but the normalizer is off");
    c.defined("grad_final_normalizer", t).dtype("grad_final_normalizer", t, pt).contiguous("grad_final_normalizer", t);
    c.shape("grad_final_normalizer", t, {p.rows(), p.nheads, p.dk}).device("grad_final_normalizer", t, in.q.device());
    gp.grad_final_normalizer = t.data();
  }
  LinearAttentionGrads r;
  const auto like = [&](const TensorView& t) { return Tensor::empty(t.shape(), t.dtype(), t.device()); };
  r.grad_q = like(in.q), r.grad_k = like(in.k), r.grad_v = like(in.v);
  gp.grad_q = r.grad_q.data(), gp.grad_k = r.grad_k.data(), gp.grad_v = r.grad_v.data();
  if (in.initial_state) gp.grad_initial_state = (r.grad_initial_state = like(*in.initial_state)).data();
  if (in.initial_normalizer) gp.grad_initial_normalizer = (r.grad_initial_normalizer = like(*in.initial_normalizer)).data();
  if (in.log_gate) gp.grad_log_gate = (r.grad_log_gate = like(*in.log_gate)).data();
  if (in.q.device().is_cuda()) {
    backend_entry(c.op(), in.q.device(), &DeviceBackend::linear_attention_backward)(p, gp, nullptr);
    r.path = "cuda";
  } else if (opt.path == LinearAttentionPath::reference) {
    reference::linear_attention_backward(p, gp);
    r.path = "reference";
  } else {
    cpu::linear_attention_backward_chunked(p, gp, opt.threads);
    r.path = "cpu-chunked";
  }
  return r;
}

/// One decoding step: q, k (b, g, dk), v (b, h, dv), and GLA's log gate (b, h, dk) when the layer has one; the state
/// (b, h, dk, dv) and, with normalize, the normalizer (b, h, dk) are read and updated in place (param dtype,
/// contiguous); out (b, h, dv) receives y. The same recurrence as the forward's (opt.path, opt.chunk_size,
/// cu_seqlens do not apply): the token loop on the CPU, the chunked kernels on one step on CUDA.
inline void linear_attention_step(const TensorView& q, const TensorView& k, const TensorView& v,
                                  const TensorView& state, const std::optional<TensorView>& normalizer,
                                  const TensorView& out, const LinearAttentionOptions& opt = {},
                                  const std::optional<TensorView>& log_gate = std::nullopt) {
  Checker c("linear_attention_step");
  for (const auto& [nm, t] : {NamedView{"q", q}, NamedView{"k", k}, NamedView{"v", v}, NamedView{"out", out}})
    c.rank(nm, t, 3);
  c.require(!opt.normalize || normalizer.has_value(), "normalizer", "is required with normalize");
  c.rank("state", state, 4).shape("state", state, {q.size(0), v.size(1), q.size(2), v.size(2)});
  if (normalizer) c.shape("normalizer", *normalizer, {q.size(0), v.size(1), q.size(2)});
  if (log_gate) c.rank("log_gate", *log_gate, 3);
  using detail::as_one_step;
  LinearAttentionInputs in;
  in.q = as_one_step(q), in.k = as_one_step(k), in.v = as_one_step(v), in.initial_state = state;
  if (normalizer) in.initial_normalizer = *normalizer;
  if (log_gate) in.log_gate = as_one_step(*log_gate);
  LinearAttentionOptions o = opt;
  o.chunk_size = 1;
  std::vector<std::int64_t> cu;
  std::vector<double> log_gamma;
  LinearAttentionParams p = detail::check_linear_attention(c, in, as_one_step(out), state, normalizer, o, cu, log_gamma);
  if (q.device().is_cuda())  // the chunked kernels on one step; they read the state before they write it
    backend_entry(c.op(), q.device(), &DeviceBackend::linear_attention_forward)(p, nullptr);
  else
    cpu::linear_attention_forward_recurrent(p, opt.threads);
}

}  // namespace ssm
