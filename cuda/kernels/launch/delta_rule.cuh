// The launch logic of the delta rule on CUDA (docs/delta_rule.md "On CUDA"), written once over an executor as
// kernels/launch/ssd.cuh: the plan (the chunk table of launch/chunk_table.cuh, and the workspace's layout), then
// dr_chunk_kernel over every chunk and dr_state_kernel over every sequence; the backward runs both keeping each chunk's
// entering state and U, then the reverse walk, the chunks' gradients and the group sums (kernels/delta_rule_bwd.cuh).
// The caller allocates plan.bytes of device memory and uploads plan.table (plan.table_bytes) to its start.
#pragma once

#include <cstddef>
#include <cstdint>
#include <tuple>
#include <vector>

#include "../delta_rule.cuh"
#include "../delta_rule_bwd.cuh"
#include "chunk_table.cuh"
#include "ssm/core/error.hpp"
#include "ssm/core/params/delta_rule.hpp"

namespace ssm::kernels {

/// The host side of one call: the chunk table and the workspace's byte offsets (0: absent).
struct DrPlan {
  std::vector<std::int64_t> table;  // (n_chunks, 4) rows, then first_chunk (rows + 1)
  std::int64_t n_chunks = 0, q = 0;
  std::size_t table_bytes = 0, cs = 0, gam = 0, rho = 0, beta = 0, Qn = 0, Kn = 0, R = 0, A = 0, M = 0, S = 0, U = 0;
  std::size_t Sin = 0, Uc = 0, dS = 0, dU = 0, dR = 0, E = 0, E2 = 0, dcs = 0, G = 0, gq = 0, gk = 0;  // the backward's
  std::size_t bytes = 0;
};

/// Checks p against what the kernels take (the op, ops/delta_rule.hpp, has checked shapes, dtypes and values) and
/// lays out the workspace for the forward, or for the backward when g is given.
inline DrPlan plan_delta_rule(const DeltaRuleParams& p, const char* op, const DeltaRuleGradParams* g = nullptr) {
  check_compute_dtypes(p, op);
  SSM_CHECK(p.chunk_size > 0, op, ": chunk_size must be > 0, got ", p.chunk_size);
  SSM_CHECK(p.batch * p.seqlen == 0 || (p.q && p.k && p.v && p.beta && (g || p.out)), op,
            g ? ": q, k, v and beta must be set"
              : ": q, k, v, beta and out must be set");  // (with no steps they are empty and may have no storage)
  SSM_CHECK(!g || p.batch * p.seqlen == 0 || g->grad_out, op, ": grad_out must be set");
  SSM_CHECK(p.nheads >= 1 && p.nheads <= 65535 && p.ngroups >= 1 && p.nheads % p.ngroups == 0 && p.dk >= 1 &&
                p.dv >= 1 && p.rows() <= 65535,
            op, ": need h in [1, 65535], g dividing h, dk, dv >= 1 and at most 65535 sequences, got h = ", p.nheads,
            ", g = ", p.ngroups, ", dk = ", p.dk, ", dv = ", p.dv, ", ", p.rows(), " sequences");
  SSM_CHECK(!p.cu_seqlens || p.batch == 1, op, ": cu_seqlens needs b == 1, got b = ", p.batch);
  DrPlan plan;
  check_packed_sequences(p, op);
  std::tie(plan.n_chunks, plan.q) = append_chunk_table(p, p.chunk_size, plan.table);
  SSM_CHECK(plan.n_chunks <= 0x7fffffff, op, ": at most 2^31 - 1 chunks per launch, got ", plan.n_chunks);
  plan.table_bytes = plan.table.size() * sizeof(std::int64_t);
  const std::int64_t per_chunk = plan.n_chunks * p.nheads, Q = plan.q, dk = p.dk, dv = p.dv;
  WorkspaceLayout layout{ssd_align(plan.table_bytes)};
  plan.cs = layout.take<double>(per_chunk * Q);
  plan.gam = layout.take(per_chunk * Q), plan.rho = layout.take(per_chunk * Q);
  plan.beta = layout.take(per_chunk * Q);
  plan.Qn = layout.take(per_chunk * Q * dk), plan.Kn = layout.take(per_chunk * Q * dk);
  plan.R = layout.take(per_chunk * Q * (dv + dk));
  plan.A = layout.take(per_chunk * Q * Q), plan.M = layout.take(per_chunk * Q * Q);
  plan.S = layout.take(p.rows() * p.nheads * dk * dv);
  if (!g) plan.U = layout.take(p.rows() * p.nheads * Q * dv);
  if (g) {
    plan.Sin = layout.take(per_chunk * dk * dv), plan.Uc = layout.take(per_chunk * Q * dv);
    plan.dS = layout.take(per_chunk * dk * dv), plan.dU = layout.take(per_chunk * Q * dv);
    plan.dR = layout.take(per_chunk * Q * (dv + dk)), plan.E2 = layout.take(per_chunk * Q * Q);
    if (p.g) plan.E = layout.take(per_chunk * Q * Q), plan.dcs = layout.take<double>(per_chunk * 2 * Q);
    plan.G = layout.take(p.rows() * p.nheads * dk * dv);
    plan.gq = layout.take(p.batch * p.seqlen * p.nheads * dk);
    plan.gk = layout.take(p.batch * p.seqlen * p.nheads * dk);
  }
  plan.bytes = layout.bytes;
  return plan;
}

/// The workspace's pointers in `base` (plan.bytes of device memory whose first plan.table_bytes hold plan.table).
inline DrWorkspace dr_workspace(const DrPlan& plan, void* base) {
  const auto f = [&](std::size_t offset) { return workspace_at(base, offset); };
  DrWorkspace w;
  w.chunks = static_cast<const std::int64_t*>(base);
  w.first_chunk = w.chunks + plan.n_chunks * kSsdChunkFields;
  w.q = plan.q;
  w.cs = workspace_at<double>(base, plan.cs);
  w.gam = f(plan.gam), w.rho = f(plan.rho), w.beta = f(plan.beta), w.Qn = f(plan.Qn), w.Kn = f(plan.Kn);
  w.R = f(plan.R), w.A = f(plan.A), w.M = f(plan.M), w.S = f(plan.S), w.U = f(plan.U);
  return w;
}

/// The backward's pointers in `base` (all null in the forward's plan).
inline DrGradWorkspace dr_grad_workspace(const DrPlan& plan, void* base) {
  const auto f = [&](std::size_t offset) { return workspace_at(base, offset); };
  DrGradWorkspace w;
  w.Sin = f(plan.Sin), w.Uc = f(plan.Uc), w.dS = f(plan.dS), w.dU = f(plan.dU), w.dR = f(plan.dR), w.E = f(plan.E);
  w.E2 = f(plan.E2), w.G = f(plan.G), w.gq = f(plan.gq), w.gk = f(plan.gk);
  w.dcs = workspace_at<double>(base, plan.dcs);
  return w;
}

/// Grid of the per-column walks: (ceil(dv / kDrColumns), h, rows).
inline LaunchDims dr_column_grid(const DeltaRuleParams& p) {
  return LaunchDims{static_cast<unsigned>((p.dv + kDrColumns - 1) / kDrColumns), static_cast<unsigned>(p.nheads),
                    static_cast<unsigned>(p.rows())};
}

/// The forward's two kernels (in the backward's workspace they also keep each chunk's entering state and U).
template <class In, class Exec>
void launch_delta_rule_forward(Exec& exec, const DeltaRuleParams& p, const DrPlan& plan, void* base) {
  const DrWorkspace w = dr_workspace(plan, base);
  if (plan.n_chunks > 0)
    exec.launch(dr_chunk_kernel<In>, LaunchDims{static_cast<unsigned>(plan.n_chunks), static_cast<unsigned>(p.nheads)},
                LaunchDims{kDrThreads}, p, w);
  if (p.rows() > 0)  // also with no chunks: the final states are then the initial ones
    exec.launch(dr_state_kernel<In>, dr_column_grid(p), LaunchDims{kDrColumns}, p, w, dr_grad_workspace(plan, base));
}

/// The backward: the forward again (p.out null: nothing written but the workspace), the reverse walk, the chunks'
/// gradients, the group sums.
template <class In, class Exec>
void launch_delta_rule_backward(Exec& exec, const DeltaRuleParams& p, const DeltaRuleGradParams& g, const DrPlan& plan,
                                void* base) {
  DeltaRuleParams f = p;
  f.out = nullptr, f.final_state = nullptr;
  launch_delta_rule_forward<In>(exec, f, plan, base);
  const DrWorkspace w = dr_workspace(plan, base);
  const DrGradWorkspace gw = dr_grad_workspace(plan, base);
  DrGradIo io;
  io.grad_out = g.grad_out, io.grad_final_state = static_cast<const float*>(g.grad_final_state);
  io.grad_initial_state = static_cast<float*>(g.grad_initial_state);
  io.grad_q = g.grad_q, io.grad_k = g.grad_k, io.grad_v = g.grad_v, io.grad_beta = g.grad_beta;
  io.grad_g = p.g ? g.grad_g : nullptr;
  if (p.rows() > 0) exec.launch(dr_state_grad_kernel<In>, dr_column_grid(p), LaunchDims{kDrColumns}, f, w, gw, io);
  if (plan.n_chunks > 0)
    exec.launch(dr_chunk_grad_kernel<In>,
                LaunchDims{static_cast<unsigned>(plan.n_chunks), static_cast<unsigned>(p.nheads)},
                LaunchDims{kDrThreads}, f, w, gw, io);
  const std::int64_t n = p.batch * p.seqlen * p.ngroups, blocks = (n + kDrThreads - 1) / kDrThreads;
  if (n > 0 && (io.grad_q || io.grad_k))
    exec.launch(dr_group_grad_kernel<In>, LaunchDims{static_cast<unsigned>(blocks < 4096 ? blocks : 4096)},
                LaunchDims{kDrThreads}, f, gw, io);
}

/// The whole forward over one executor, every input dtype: plan_delta_rule has run, the workspace holds the table.
template <class Exec>
void delta_rule_forward_launches(Exec& exec, const DeltaRuleParams& p, const DrPlan& plan, void* base) {
  visit_input_dtype(p.input_dtype, [&](auto in) { launch_delta_rule_forward<decltype(in)>(exec, p, plan, base); });
}

/// The whole backward over one executor (plan_delta_rule with g has run).
template <class Exec>
void delta_rule_backward_launches(Exec& exec, const DeltaRuleParams& p, const DeltaRuleGradParams& g,
                                  const DrPlan& plan, void* base) {
  visit_input_dtype(p.input_dtype, [&](auto in) { launch_delta_rule_backward<decltype(in)>(exec, p, g, plan, base); });
}

}  // namespace ssm::kernels
