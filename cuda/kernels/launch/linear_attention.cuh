// The launch logic of linear attention and retention on CUDA (docs/linear_attention.md "On CUDA"), written once over an
// executor as kernels/launch/ssd.cuh: the plan (the engine's argument block, the SSD layout with the decays as its
// constants, the packed buffers after it), then pack → the chunked SSD launches → epilogue, and for the backward pack
// → (with the normalizer, the forward's y) → ḡy → the SSD backward → φ' and the scale. The caller allocates
// plan.bytes of device memory and uploads plan.ssd.table (plan.ssd.table_bytes) to its start. With GLA's log gate,
// forward and backward run kernels/gla.cuh in the SSD kernels' place (on the same chunk table and packed buffers).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../gla.cuh"
#include "../linear_attention.cuh"
#include "ssd.cuh"
#include "ssm/core/error.hpp"
#include "ssm/core/params/linear_attention.hpp"
#include "ssm/core/params/ssd.hpp"

namespace ssm::kernels {

/// The host side of one call: the engine's argument block (its pointers set by la_engine once the workspace
/// exists), its SSD layout, and the byte offsets of the packed buffers after it (0: absent).
struct LaPlan {
  SsdParams engine;
  SsdPlan ssd;
  std::int64_t dv1 = 0;
  std::size_t q = 0, k = 0, x = 0, y = 0, H0 = 0, HT = 0;
  std::size_t gy = 0, gq = 0, gk = 0, gx = 0, GF = 0, GH0 = 0;  // the backward's
  std::size_t gla_b = 0, gla_A = 0, gla_Qe = 0, gla_Ke = 0, gla_dec = 0, gla_H = 0;  // the gated engine's
  std::size_t gla_Hin = 0, gla_D = 0, gla_gq = 0, gla_gk = 0;                        // and its backward's
  std::size_t bytes = 0;
};

/// Checks p against what the kernels take (the op, ops/linear_attention.hpp, has checked shapes, dtypes and values)
/// and lays out the workspace for the forward, or for the backward when g is given.
inline LaPlan plan_linear_attention(const LinearAttentionParams& p, const char* op,
                                    const LinearAttentionGradParams* g = nullptr) {
  check_compute_dtypes(p, op);
  // (with no steps the per-step tensors are empty and may have no storage)
  SSM_CHECK(p.batch * p.seqlen == 0 || (p.q && p.k && p.v && (g || p.out)), op,
            g ? ": q, k and v must be set" : ": q, k, v and out must be set");
  SSM_CHECK(p.nheads >= 1 && p.dk >= 1 && p.dv >= 1, op, ": need h, dk and dv >= 1, got h = ", p.nheads,
            ", dk = ", p.dk, ", dv = ", p.dv);
  SSM_CHECK(!g || p.batch * p.seqlen == 0 || g->grad_out, op, ": grad_out must be set");
  LaPlan plan;
  plan.dv1 = p.dv + (p.normalize ? 1 : 0);
  const std::int64_t b = p.batch, l = p.seqlen, h = p.nheads, gr = p.ngroups, dk = p.dk, dv1 = plan.dv1;
  SsdParams& e = plan.engine;
  e.batch = b, e.seqlen = l, e.nheads = h, e.headdim = dv1, e.ngroups = gr, e.dstate = dk;
  e.chunk_size = p.chunk_size, e.cu_seqlens = p.cu_seqlens, e.n_seqs = p.n_seqs;
  e.x_batch_stride = l * h * dv1, e.x_seq_stride = h * dv1, e.x_head_stride = dv1;
  e.B_batch_stride = e.C_batch_stride = l * gr * dk, e.B_seq_stride = e.C_seq_stride = gr * dk;
  e.B_group_stride = e.C_group_stride = dk;
  e.out_batch_stride = l * h * dv1, e.out_seq_stride = h * dv1, e.out_head_stride = dv1;  // Δ: one 1, strides 0
  e.input_dtype = e.param_dtype = DType::f32;
  std::vector<float> constants;  // A (h) = log γ, then Δ = 1
  for (std::int64_t i = 0; i < h; ++i) constants.push_back(p.log_gamma ? static_cast<float>(p.log_gamma[i]) : 0.0f);
  constants.push_back(1.0f);
  plan.ssd = layout_ssd(e, op, constants);
  if (g) layout_ssd_backward(plan.ssd, e, op);
  // The gated engine reads only the chunk table and the constants: none of the SSD kernels' buffers (whose pointers
  // ssd_workspace would then place past plan.bytes, and nothing reads).
  if (p.log_gate) plan.ssd.bytes = ssd_align(plan.ssd.table_bytes);
  WorkspaceLayout layout{plan.ssd.bytes};
  const std::int64_t n_qk = b * l * gr * dk, n_x = b * l * h * dv1, n_states = p.rows() * h * dv1 * dk;
  plan.q = layout.take(n_qk), plan.k = layout.take(n_qk), plan.x = layout.take(n_x);
  if (!g || p.normalize) plan.y = layout.take(n_x);
  if (p.initial_state || p.initial_normalizer) plan.H0 = layout.take(n_states);
  if (!g && (p.final_state || p.final_normalizer)) plan.HT = layout.take(n_states);
  if (g) {
    plan.gy = layout.take(n_x), plan.gq = layout.take(n_qk), plan.gk = layout.take(n_qk), plan.gx = layout.take(n_x);
    if (g->grad_final_state || g->grad_final_normalizer) plan.GF = layout.take(n_states);
    // (the gated backward's reverse walk keeps its running gradient there, wanted or not)
    if (g->grad_initial_state || g->grad_initial_normalizer || p.log_gate) plan.GH0 = layout.take(n_states);
  }
  if (p.log_gate) {
    const std::int64_t per_chunk = plan.ssd.n_chunks * h, Q = plan.ssd.q;
    plan.gla_b = layout.take<double>(per_chunk * Q * dk);
    plan.gla_A = layout.take(per_chunk * Q * Q), plan.gla_Qe = layout.take(per_chunk * Q * dk),
    plan.gla_Ke = layout.take(per_chunk * Q * dk);
    plan.gla_dec = layout.take(per_chunk * dk), plan.gla_H = layout.take(n_states);
    if (g) {
      plan.gla_Hin = layout.take(per_chunk * dv1 * dk), plan.gla_D = layout.take(per_chunk * dv1 * dk);
      plan.gla_gq = layout.take(b * l * h * dk), plan.gla_gk = layout.take(b * l * h * dk);
    }
  }
  plan.bytes = layout.bytes;
  return plan;
}

/// The packed buffers in `base` (plan.bytes of device memory holding plan.ssd.table at its start).
inline LaWorkspace la_workspace(const LaPlan& plan, void* base) {
  const auto at = [&](std::size_t offset) { return workspace_at(base, offset); };
  LaWorkspace w;
  w.dv1 = plan.dv1;
  w.q = at(plan.q), w.k = at(plan.k), w.x = at(plan.x), w.y = at(plan.y), w.H0 = at(plan.H0), w.HT = at(plan.HT);
  w.gy = at(plan.gy), w.gq = at(plan.gq), w.gk = at(plan.gk), w.gx = at(plan.gx), w.GF = at(plan.GF);
  w.GH0 = at(plan.GH0);
  return w;
}

/// The engine's argument block over the workspace: C = q̃, B = k̃, x = [v, 1], A and Δ from the constants, the states
/// H0 / HT, out = y.
inline SsdParams la_engine(const LaPlan& plan, void* base, const LaWorkspace& w) {
  SsdParams e = plan.engine;
  const float* constants = reinterpret_cast<const float*>(static_cast<char*>(base) + plan.ssd.constants_offset);
  e.A = constants, e.dt = constants + e.nheads;
  e.x = w.x, e.B = w.k, e.C = w.q, e.out = w.y, e.initial_state = w.H0, e.final_state = w.HT;
  return e;
}

/// GLA's gated engine's buffers in `base` (the backward's null in the forward's plan).
inline GlaWorkspace gla_workspace(const LaPlan& plan, void* base) {
  const auto f = [&](std::size_t offset) { return workspace_at(base, offset); };
  const SsdWorkspace ws = ssd_workspace(plan.ssd, base);
  GlaWorkspace gw;
  gw.chunks = ws.chunks, gw.first_chunk = ws.first_chunk, gw.q = plan.ssd.q;
  gw.b = workspace_at<double>(base, plan.gla_b), gw.A = f(plan.gla_A), gw.Qe = f(plan.gla_Qe);
  gw.Ke = f(plan.gla_Ke), gw.dec = f(plan.gla_dec), gw.H = f(plan.gla_H);
  gw.Hin = f(plan.gla_Hin), gw.D = f(plan.gla_D), gw.gq = f(plan.gla_gq), gw.gk = f(plan.gla_gk);
  return gw;
}

/// The gated engine's view of the packed inputs and states: e's x, B = k̃, C = q̃, states and out (y may be null).
inline GlaIo gla_io(const LaPlan& plan, const SsdParams& e) {
  GlaIo io;
  io.dv1 = plan.dv1, io.q = static_cast<const float*>(e.C), io.k = static_cast<const float*>(e.B);
  io.x = static_cast<const float*>(e.x), io.y = static_cast<float*>(e.out);
  io.H0 = static_cast<const float*>(e.initial_state), io.HT = static_cast<float*>(e.final_state);
  return io;
}

/// Grid of the per-column walks: (ceil(dv1 / kGlaColumns), h, rows).
inline LaunchDims gla_column_grid(const LinearAttentionParams& p, const LaPlan& plan) {
  return LaunchDims{static_cast<unsigned>((plan.dv1 + kGlaColumns - 1) / kGlaColumns), static_cast<unsigned>(p.nheads),
                    static_cast<unsigned>(p.rows())};
}

/// GLA's forward (kernels/gla.cuh) in the SSD kernels' place, the decays log γ from the constants (e.A); in the
/// backward's workspace it also keeps the state entering each chunk (gw.Hin).
template <class In, class Exec>
void launch_gla_forward(Exec& exec, const LinearAttentionParams& p, const LaPlan& plan, const GlaWorkspace& gw,
                        const GlaIo& io, const float* log_gamma) {
  if (plan.ssd.n_chunks > 0)
    exec.launch(gla_chunk_kernel<In>,
                LaunchDims{static_cast<unsigned>(plan.ssd.n_chunks), static_cast<unsigned>(p.nheads)},
                LaunchDims{kGlaThreads}, p, gw, io, log_gamma);
  if (p.rows() > 0) exec.launch(gla_state_kernel, gla_column_grid(p, plan), LaunchDims{kGlaColumns}, p, gw, io);
}

/// GLA's backward after launch_gla_forward over the backward's workspace and ḡy: the reverse walk (D per chunk, the
/// initial states' gradients in gio.GH0), then per chunk ḡx, ḡq̃, ḡk̃, the gate's gradient and the group sums.
template <class In, class Exec>
void launch_gla_backward(Exec& exec, const LinearAttentionParams& p, const LaPlan& plan, const GlaWorkspace& gw,
                         const GlaIo& io, const GlaGradIo& gio) {
  if (p.rows() > 0)
    exec.launch(gla_state_grad_kernel, gla_column_grid(p, plan), LaunchDims{kGlaColumns}, p, gw, gio, plan.dv1);
  if (plan.ssd.n_chunks > 0)
    exec.launch(gla_chunk_grad_kernel,
                LaunchDims{static_cast<unsigned>(plan.ssd.n_chunks), static_cast<unsigned>(p.nheads)},
                LaunchDims{kGlaThreads}, p, gw, io, gio);
  if (gio.grad_log_gate)
    exec.launch(gla_gate_grad_kernel<In>, LaunchDims{la_blocks(p.rows() * p.nheads * p.dk)}, LaunchDims{kLaThreads}, p,
                gw, io, gio);
  exec.launch(gla_group_sum_kernel, LaunchDims{la_blocks(p.batch * p.seqlen * p.ngroups * p.dk)},
              LaunchDims{kLaThreads}, p, gw, gio);
}

template <class In, class Exec>
void launch_la_pack(Exec& exec, const LinearAttentionParams& p, const LaWorkspace& w) {
  const std::int64_t n = p.batch * p.seqlen * (p.ngroups * p.dk + p.nheads * w.dv1);
  exec.launch(la_pack_kernel<In>, LaunchDims{la_blocks(n)}, LaunchDims{kLaThreads}, p, w);
}

/// H (rows h, dv1, dk) from the op's states S and z (null: zero), when H is in the workspace.
template <class Exec>
void launch_la_states_in(Exec& exec, const LinearAttentionParams& p, const LaWorkspace& w, const void* S, const void* z,
                         float* H) {
  const std::int64_t n = p.rows() * p.nheads;
  if (H)
    exec.launch(la_states_in_kernel, LaunchDims{la_blocks(n * w.dv1 * p.dk)}, LaunchDims{kLaThreads},
                static_cast<const float*>(S), static_cast<const float*>(z), n, p.dk, p.dv, w.dv1, H);
}

/// The op's states S and z (null: not wanted) from H, when H is in the workspace.
template <class Exec>
void launch_la_states_out(Exec& exec, const LinearAttentionParams& p, const LaWorkspace& w, const float* H, void* S,
                          void* z) {
  const std::int64_t n = p.rows() * p.nheads;
  if (H)
    exec.launch(la_states_out_kernel, LaunchDims{la_blocks(n * w.dv1 * p.dk)}, LaunchDims{kLaThreads}, H, n, p.dk, p.dv,
                w.dv1, static_cast<float*>(S), static_cast<float*>(z));
}

template <class In, class Exec>
void launch_linear_attention_forward(Exec& exec, const LinearAttentionParams& p, const LaPlan& plan, void* base) {
  const LaWorkspace w = la_workspace(plan, base);
  const SsdParams e = la_engine(plan, base, w);
  launch_la_pack<In>(exec, p, w);
  launch_la_states_in(exec, p, w, p.initial_state, p.initial_normalizer, w.H0);
  if (p.log_gate)
    launch_gla_forward<In>(exec, p, plan, gla_workspace(plan, base), gla_io(plan, e), static_cast<const float*>(e.A));
  else
    launch_ssd_forward<float>(exec, e, plan.ssd, ssd_workspace(plan.ssd, base));
  exec.launch(la_epilogue_kernel<In>, LaunchDims{la_blocks(p.batch * p.seqlen * p.nheads * p.dv)},
              LaunchDims{kLaThreads}, p, w);
  launch_la_states_out(exec, p, w, w.HT, p.final_state, p.final_normalizer);
}

template <class In, class Exec>
void launch_linear_attention_backward(Exec& exec, const LinearAttentionParams& p, const LinearAttentionGradParams& g,
                                      const LaPlan& plan, void* base) {
  const LaWorkspace w = la_workspace(plan, base);
  SsdParams e = la_engine(plan, base, w);
  const SsdWorkspace ws = ssd_workspace(plan.ssd, base);
  launch_la_pack<In>(exec, p, w);
  launch_la_states_in(exec, p, w, p.initial_state, p.initial_normalizer, w.H0);
  const GlaWorkspace gw = p.log_gate ? gla_workspace(plan, base) : GlaWorkspace{};
  if (p.log_gate)  // the states entering the chunks, and y with the normalizer
    launch_gla_forward<In>(exec, p, plan, gw, gla_io(plan, e), static_cast<const float*>(e.A));
  else if (p.normalize)
    launch_ssd_forward<float>(exec, e, plan.ssd, ws);  // y: ḡy needs the numerator and denominator
  e.out = nullptr;
  exec.launch(la_grad_in_kernel<In>, LaunchDims{la_blocks(p.batch * p.seqlen * p.nheads)}, LaunchDims{kLaThreads}, p, g,
              w);
  launch_la_states_in(exec, p, w, g.grad_final_state, g.grad_final_normalizer, w.GF);
  if (p.log_gate) {
    GlaGradIo gio;
    gio.gy = w.gy, gio.GF = w.GF, gio.gx = w.gx, gio.gq = w.gq, gio.gk = w.gk, gio.GH0 = w.GH0;
    gio.grad_log_gate = g.grad_log_gate;
    launch_gla_backward<In>(exec, p, plan, gw, gla_io(plan, e), gio);
  } else {
    SsdGradParams eg;
    eg.grad_out = w.gy, eg.grad_final_state = w.GF;
    eg.grad_x = w.gx, eg.grad_B = w.gk, eg.grad_C = w.gq, eg.grad_initial_state = w.GH0;
    launch_ssd_backward<float>(exec, e, eg, plan.ssd, ws, ssd_grad_workspace(plan.ssd, base, false));
  }
  const std::int64_t n = p.batch * p.seqlen * (p.ngroups * p.dk + p.nheads * p.dv);
  exec.launch(la_grad_out_kernel<In>, LaunchDims{la_blocks(n)}, LaunchDims{kLaThreads}, p, g, w);
  launch_la_states_out(exec, p, w, w.GH0, g.grad_initial_state, g.grad_initial_normalizer);
}

/// The whole forward over one executor, every input dtype: plan_linear_attention has run, the workspace holds the
/// table.
template <class Exec>
void linear_attention_forward_launches(Exec& exec, const LinearAttentionParams& p, const LaPlan& plan, void* base) {
  visit_input_dtype(p.input_dtype,
                    [&](auto in) { launch_linear_attention_forward<decltype(in)>(exec, p, plan, base); });
}

/// The whole backward over one executor (plan_linear_attention with g has run).
template <class Exec>
void linear_attention_backward_launches(Exec& exec, const LinearAttentionParams& p, const LinearAttentionGradParams& g,
                                        const LaPlan& plan, void* base) {
  visit_input_dtype(p.input_dtype,
                    [&](auto in) { launch_linear_attention_backward<decltype(in)>(exec, p, g, plan, base); });
}

}  // namespace ssm::kernels
