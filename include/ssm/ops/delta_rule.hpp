// The delta-rule op: DeltaNet (Schlag et al. 2021; Yang et al. 2024) and, with a log decay g, Gated DeltaNet (Yang,
// Kautz and Hatamizadeh 2024), one recurrence with a state S (dk, dv) per head (docs/delta_rule.md; the formulas in
// core/params/delta_rule.hpp): L2-normalized q and k (on by default), a scale, β_t ∈ (0, 2] per head and step, groups
// of q and k shared by heads, initial and final states, packed sequences (cu_seqlens).
// Forms: the chunked CPU path with the WY / UT transform on the SSD engine's chunk stages (cpu/delta_rule.hpp), the
// token loop in the compute type, the token loop in double (reference/delta_rule.hpp), and the one-token step for
// decoding (delta_rule_step). Forward and backward (delta_rule_backward: q, k, v, β, g and the initial state).
// CUDA tensors run the backend's delta_rule_forward / _backward entries (ssm::cuda: the chunked form and its chunked
// backward, f32 / f16 / bf16 inputs; opt.path is ignored there), and so does the decode step.
#pragma once

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "ssm/core/backend.hpp"
#include "ssm/core/check.hpp"
#include "ssm/core/params/delta_rule.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/delta_rule.hpp"
#include "ssm/ops/one_step.hpp"
#include "ssm/ops/value_checks.hpp"
#include "ssm/reference/delta_rule.hpp"
#include "ssm/reference/elements.hpp"

namespace ssm {

/// Input dtype: q, k, v, beta, g, out in f32 | f64 | f16 | bf16 (16-bit computed in f32); the state in the param
/// dtype (f64 for f64 inputs, else f32), contiguous. The last dimension of q, k, v, beta, g and out has unit stride.
struct DeltaRuleInputs {
  TensorView q{};                              // (b, l, g, dk), g divides h
  TensorView k{};                              // (b, l, g, dk)
  TensorView v{};                              // (b, l, h, dv)
  TensorView beta{};                           // (b, l, h), each in (0, 2]
  std::optional<TensorView> g{};               // (b, l, h), each finite and <= 0: Gated DeltaNet; absent: DeltaNet
  std::optional<TensorView> initial_state{};   // (b, h, dk, dv); with cu_seqlens (n_seqs, h, dk, dv)
  std::optional<TensorView> cu_seqlens{};      // (n_seqs + 1) i32 | i64 on the CPU; then b == 1
};

/// automatic = chunked; chunked = the WY / UT chunked form; recurrent = the token loop in the compute type;
/// reference = the token loop in double.
enum class DeltaRulePath { automatic, reference, chunked, recurrent };

struct DeltaRuleOptions {
  bool l2_normalize = true;  // q̂ = scale q / sqrt(|q|² + norm_eps), k̂ = k / sqrt(|k|² + norm_eps)
  double norm_eps = 1e-6;    // > 0
  double scale = 1.0;        // finite; the papers' layers use dk^(−1/2)
  index_t chunk_size = 64;   // > 0: the chunked forward's chunk, and the backward's checkpoint interval
  DeltaRulePath path = DeltaRulePath::automatic;
  int threads = 0;                  // CPU threads (0: by the amount of work)
  bool return_final_state = false;  // the allocating form: also the final state
};

struct DeltaRuleOutputs {
  Tensor out;          // v's shape and dtype
  Tensor final_state;  // (rows, h, dk, dv) param dtype, when asked for
  std::string path;    // "cpu-chunked", "cpu-recurrent", "reference" or "cuda"
};

struct DeltaRuleGrads {
  Tensor grad_q, grad_k, grad_v, grad_beta, grad_g, grad_initial_state;  // contiguous; empty when absent
  std::string path;  // "cpu-chunked", "cpu-recurrent", "reference" or "cuda"
};

namespace detail {

/// Checks everything (β's and g's values too) and fills the argument block; `cu` receives cu_seqlens as i64.
inline DeltaRuleParams check_delta_rule(const Checker& c, const DeltaRuleInputs& in, const TensorView& out,
                                        const std::optional<TensorView>& final_state, const DeltaRuleOptions& opt,
                                        std::vector<std::int64_t>& cu, const char* out_name = "out") {
  for (const auto& [nm, t] : {NamedView{"q", in.q}, NamedView{"k", in.k}, NamedView{"v", in.v},
                              NamedView{"beta", in.beta}, NamedView{out_name, out}})
    c.defined(nm, t);
  c.require(opt.chunk_size > 0, "chunk_size", "must be > 0, got ", opt.chunk_size);
  c.finite("scale", opt.scale);
  c.positive("norm_eps", opt.norm_eps);
  const Device device = dispatch_device(c, {{"q", in.q},
                                            {"k", in.k},
                                            {"v", in.v},
                                            {"beta", in.beta},
                                            {"g", in.g.value_or(in.q)},
                                            {out_name, out},
                                            {"initial_state", in.initial_state.value_or(in.q)},
                                            {"final_state", final_state.value_or(in.q)}});
  c.rank("v", in.v, 4).floating("v", in.v).unit_stride("v", in.v, 3);
  check_cuda_sequence_shapes(c, device, in.q, in.v);
  DeltaRuleParams p;
  p.batch = in.v.size(0), p.seqlen = in.v.size(1), p.nheads = in.v.size(2), p.dv = in.v.size(3);
  p.input_dtype = in.v.dtype(), p.param_dtype = compute_dtype(in.v.dtype());
  p.l2_normalize = opt.l2_normalize, p.norm_eps = opt.norm_eps, p.scale = opt.scale;
  // a chunk longer than the sequence is the sequence: the same result, and no buffer sized by a huge chunk_size
  p.chunk_size = std::min<index_t>(opt.chunk_size, std::max<index_t>(p.seqlen, 1));
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

  // β (b, l, h) in (0, 2] and g (b, l, h) finite and <= 0, element by element on the host (a CUDA tensor's copy)
  auto per_step = [&](const char* nm, const TensorView& dev, auto&& valid, const char* expected) {
    c.same_dtype(nm, dev, "v", in.v).shape(nm, dev, {b, l, h}).unit_stride(nm, dev, 2);
    Tensor storage;
    const TensorView t = host_mirror(dev, storage);
    for (index_t bi = 0; bi < b; ++bi)
      for (index_t ti = 0; ti < l; ++ti)
        for (index_t hh = 0; hh < h; ++hh) {
          const double x = reference::load_real(t.data(), t.dtype(), bi * t.stride(0) + ti * t.stride(1) + hh);
          c.require(valid(x), nm, expected, ", got ", x, " at (", bi, ", ", ti, ", ", hh, ")");
        }
  };
  per_step("beta", in.beta, [](double x) { return std::isfinite(x) && x > 0 && x <= 2; }, "every β must be in (0, 2]");
  p.beta = in.beta.data(), p.beta_batch_stride = in.beta.stride(0), p.beta_seq_stride = in.beta.stride(1);
  if (in.g) {
    per_step("g", *in.g, [](double x) { return std::isfinite(x) && x <= 0; },
             "every log decay must be finite and <= 0 (α = exp(g) <= 1)");
    p.g = in.g->data(), p.g_batch_stride = in.g->stride(0), p.g_seq_stride = in.g->stride(1);
  }
  index_t rows = b;
  if (in.cu_seqlens) {
    cu = c.cu_seqlens("cu_seqlens", *in.cu_seqlens, b, l);
    p.cu_seqlens = cu.data(), p.n_seqs = static_cast<index_t>(cu.size()) - 1;
    rows = p.n_seqs;
  }
  check_cuda_sequence_count(c, device, rows, in.cu_seqlens.has_value());
  const char* pname = p.param_dtype == DType::f64 ? "f64 (v is f64)" : "f32 (the param dtype for f32 / f16 / bf16 v)";
  auto state = [&](const char* nm, const TensorView& t) {
    c.defined(nm, t);
    c.require(t.dtype() == p.param_dtype, nm, "expected dtype ", pname, ", got ", name(t.dtype()));
    c.shape(nm, t, {rows, h, dk, dv}).contiguous(nm, t);
  };
  if (in.initial_state) state("initial_state", *in.initial_state), p.initial_state = in.initial_state->data();
  if (final_state) state("final_state", *final_state), p.final_state = final_state->data();
  c.same_dtype(out_name, out, "v", in.v).shape(out_name, out, {b, l, h, dv}).unit_stride(out_name, out, 3);
  p.out = out.data(), p.out_batch_stride = out.stride(0), p.out_seq_stride = out.stride(1);
  p.out_head_stride = out.stride(2);
  return p;
}

inline index_t delta_rule_rows(const DeltaRuleInputs& in) {
  return in.cu_seqlens ? in.cu_seqlens->numel() - 1 : in.v.rank() > 0 ? in.v.size(0) : 0;
}

}  // namespace detail

/// The forward into `out` (v's shape and dtype) and, when given, the final state (rows, h, dk, dv). Returns the
/// path that ran.
inline std::string delta_rule_into(const DeltaRuleInputs& in, const TensorView& out,
                                   const std::optional<TensorView>& final_state = std::nullopt,
                                   const DeltaRuleOptions& opt = {}) {
  Checker c("delta_rule");
  std::vector<std::int64_t> cu;
  const DeltaRuleParams p = detail::check_delta_rule(c, in, out, final_state, opt, cu);
  if (in.q.device().is_cuda()) {
    backend_entry(c.op(), in.q.device(), &DeviceBackend::delta_rule_forward)(p, nullptr);
    return "cuda";
  }
  switch (opt.path) {
    case DeltaRulePath::reference: reference::delta_rule_forward(p); return "reference";
    case DeltaRulePath::recurrent: cpu::delta_rule_forward_recurrent(p, opt.threads); return "cpu-recurrent";
    default: cpu::delta_rule_forward_chunked(p, opt.threads); return "cpu-chunked";
  }
}

/// The allocating form: out, and the final state when opt.return_final_state.
inline DeltaRuleOutputs delta_rule(const DeltaRuleInputs& in, const DeltaRuleOptions& opt = {}) {
  DeltaRuleOutputs r;
  r.out = Tensor::empty(in.v.shape(), in.v.dtype(), in.v.device());
  std::optional<TensorView> fs;
  if (opt.return_final_state && in.v.rank() == 4 && in.q.rank() == 4) {
    const index_t rows = std::max<index_t>(detail::delta_rule_rows(in), 0);
    r.final_state = Tensor::empty({rows, in.v.size(2), in.q.size(3), in.v.size(3)}, compute_dtype(in.v.dtype()),
                                  in.v.device());
    fs = r.final_state.view();
  }
  r.path = delta_rule_into(in, r.out, fs, opt);
  return r;
}

/// Gradients for grad_out (v's shape and dtype, contiguous) and the optional gradient of the final state (param
/// dtype, contiguous; zero when absent). DeltaRulePath::reference runs the token loop in double; automatic and
/// chunked the chunked backward (the WY / UT chunk's gradients, cpu/delta_rule.hpp); recurrent the token loop in the
/// compute type over states recomputed from checkpoints every opt.chunk_size steps.
/// grad_q, grad_k are summed over a group's heads; grad_g only with g.
inline DeltaRuleGrads delta_rule_backward(const DeltaRuleInputs& in, const TensorView& grad_out,
                                          const std::optional<TensorView>& grad_final_state = std::nullopt,
                                          const DeltaRuleOptions& opt = {}) {
  Checker c("delta_rule_backward");
  std::vector<std::int64_t> cu;
  DeltaRuleParams p = detail::check_delta_rule(c, in, grad_out, std::nullopt, opt, cu, "grad_out");
  p.out = nullptr, p.out_batch_stride = p.out_seq_stride = p.out_head_stride = 0;  // read, never written
  c.contiguous("grad_out", grad_out);
  DeltaRuleGradParams gp;
  gp.grad_out = grad_out.data();
  if (grad_final_state) {
    const TensorView& t = *grad_final_state;
    c.defined("grad_final_state", t).dtype("grad_final_state", t, p.param_dtype).contiguous("grad_final_state", t);
    c.shape("grad_final_state", t, {p.rows(), p.nheads, p.dk, p.dv}).device("grad_final_state", t, in.q.device());
    gp.grad_final_state = t.data();
  }
  DeltaRuleGrads r;
  const auto like = [&](const TensorView& t) { return Tensor::empty(t.shape(), t.dtype(), t.device()); };
  r.grad_q = like(in.q), r.grad_k = like(in.k), r.grad_v = like(in.v), r.grad_beta = like(in.beta);
  gp.grad_q = r.grad_q.data(), gp.grad_k = r.grad_k.data(), gp.grad_v = r.grad_v.data();
  gp.grad_beta = r.grad_beta.data();
  if (in.g) gp.grad_g = (r.grad_g = like(*in.g)).data();
  if (in.initial_state) gp.grad_initial_state = (r.grad_initial_state = like(*in.initial_state)).data();
  if (in.q.device().is_cuda()) {
    backend_entry(c.op(), in.q.device(), &DeviceBackend::delta_rule_backward)(p, gp, nullptr);
    r.path = "cuda";
  } else if (opt.path == DeltaRulePath::reference) {
    reference::delta_rule_backward(p, gp);
    r.path = "reference";
  } else if (opt.path == DeltaRulePath::recurrent) {
    cpu::delta_rule_backward_recurrent(p, gp, opt.threads);
    r.path = "cpu-recurrent";
  } else {
    cpu::delta_rule_backward_chunked(p, gp, opt.threads);
    r.path = "cpu-chunked";
  }
  return r;
}

/// One decoding step: q, k (b, g, dk), v (b, h, dv), beta and g (b, h); the state (b, h, dk, dv) is read and
/// updated in place (param dtype, contiguous); out (b, h, dv) receives o. The same recurrence as the forward's
/// (opt.path, opt.chunk_size do not apply): the token loop on the CPU, the chunked kernels on one step on CUDA.
inline void delta_rule_step(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& beta,
                            const std::optional<TensorView>& g, const TensorView& state, const TensorView& out,
                            const DeltaRuleOptions& opt = {}) {
  Checker c("delta_rule_step");
  for (const auto& [nm, t] : {NamedView{"q", q}, NamedView{"k", k}, NamedView{"v", v}, NamedView{"out", out}})
    c.rank(nm, t, 3);
  c.rank("beta", beta, 2);
  if (g) c.rank("g", *g, 2);
  c.rank("state", state, 4).shape("state", state, {q.size(0), v.size(1), q.size(2), v.size(2)});
  using detail::as_one_step;
  DeltaRuleInputs in;
  in.q = as_one_step(q), in.k = as_one_step(k), in.v = as_one_step(v), in.beta = as_one_step(beta);
  in.initial_state = state;
  if (g) in.g = as_one_step(*g);
  DeltaRuleOptions o = opt;
  o.chunk_size = 1;
  std::vector<std::int64_t> cu;
  const DeltaRuleParams p = detail::check_delta_rule(c, in, as_one_step(out), state, o, cu);
  if (q.device().is_cuda())  // the chunked kernels on one step; each column is read before it is written
    backend_entry(c.op(), q.device(), &DeviceBackend::delta_rule_forward)(p, nullptr);
  else
    cpu::delta_rule_forward_recurrent(p, opt.threads);
}

}  // namespace ssm
