// The launch logic of TTT-Linear on CUDA (docs/ttt_linear.md "On CUDA"), written once over an executor as
// kernels/launch/ssd.cuh: the plan (the sequence table and the workspace's layout), then ttt_forward_kernel
// (kernels/ttt_linear.cuh), or the backward's ttt_backward_kernel and ttt_param_grad_sum_kernel
// (kernels/ttt_linear_bwd.cuh). The caller allocates plan.bytes of device memory and uploads plan.table
// (plan.table_bytes) to its start.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../ttt_linear.cuh"
#include "../ttt_linear_bwd.cuh"
#include "chunk_table.cuh"
#include "ssm/core/error.hpp"
#include "ssm/core/params/ttt_linear.hpp"

namespace ssm::kernels {

/// The host side of one call: the sequence table and the workspace's byte offsets (the backward's from ck on).
struct TttPlan {
  std::vector<std::int64_t> table;  // (rows, 4): batch row, begin, end, first mini-batch
  std::int64_t batches = 0;         // the mini-batches of every sequence
  std::int64_t span = 1;  // the backward keeps this many tokens of a mini-batch: m, at most the longest sequence
  std::size_t table_bytes = 0, W = 0, A = 0, z = 0, g = 0, zh = 0;
  std::size_t ck = 0, Wb = 0, C = 0, G = 0, Zq = 0, stats = 0, zb = 0, rb = 0, gamma_bar = 0, beta_bar = 0, tau_bar = 0;
  std::size_t bytes = 0;
};

/// Checks p against what the kernels take (the op, ops/ttt_linear.hpp, has checked shapes, dtypes and values) and lays
/// out the workspace for the forward, or for the backward when g is given.
inline TttPlan plan_ttt_linear(const TttLinearParams& p, const char* op, const TttLinearGradParams* g = nullptr) {
  check_compute_dtypes(p, op);
  SSM_CHECK(p.mini_batch > 0 && p.start >= 0 && p.start < p.mini_batch, op,
            ": need mini_batch > 0 and start in [0, mini_batch), got ", p.mini_batch, " and ", p.start);
  SSM_CHECK(p.ln_weight && p.ln_bias, op, ": ln_weight and ln_bias must be set");
  SSM_CHECK(
      p.batch * p.seqlen == 0 || (p.q.data && p.k.data && p.v.data && p.eta.data && (g || p.out.data)), op,
      g ? ": q, k, v and eta must be set" : ": q, k, v, eta and out must be set");  // (no steps: maybe no storage)
  SSM_CHECK(!g || p.batch * p.seqlen == 0 || g->grad_out, op, ": grad_out must be set");
  SSM_CHECK(!g || !g->grad_position_weights || p.position_weights, op,
            ": grad_position_weights needs position_weights");
  SSM_CHECK(p.nheads >= 1 && p.nheads <= 0x7fffffff && p.d >= 1 && p.rows() <= 65535, op,
            ": need h >= 1, d >= 1 and at most 65535 sequences, got h = ", p.nheads, ", d = ", p.d, ", ", p.rows(),
            " sequences");
  SSM_CHECK(!p.cu_seqlens || p.batch == 1, op, ": cu_seqlens needs b == 1, got b = ", p.batch);
  check_packed_sequences(p, op);
  TttPlan plan;
  for (std::int64_t s = 0; s < p.rows(); ++s) {
    plan.span = std::max(plan.span, std::min(p.mini_batch, p.seq_end(s) - p.seq_begin(s)));
    const std::int64_t begin = p.seq_begin(s), end = p.seq_end(s);
    plan.table.insert(plan.table.end(), {p.seq_row(s), begin, end, plan.batches});
    plan.batches += end > begin ? (p.start + end - begin + p.mini_batch - 1) / p.mini_batch : 0;
  }
  plan.table_bytes = plan.table.size() * sizeof(std::int64_t);
  WorkspaceLayout layout{ssd_align(plan.table_bytes)};
  const std::int64_t n = p.rows() * p.nheads, size = p.state_size(), d = p.d, span = plan.span;
  plan.W = layout.take(n * size), plan.A = layout.take(n * size);
  plan.z = layout.take(n * d), plan.g = layout.take(n * d);
  plan.zh = layout.take(n * (g ? span : 1) * d);
  if (g) {
    plan.ck = layout.take(plan.batches * p.nheads * size);
    plan.Wb = layout.take(n * size), plan.C = layout.take(n * size);
    plan.G = layout.take(n * span * d), plan.Zq = layout.take(n * span * d), plan.stats = layout.take(n * span * 2);
    plan.zb = layout.take(n * d), plan.rb = layout.take(n * d);
    plan.gamma_bar = layout.take(n * d), plan.beta_bar = layout.take(n * d),
    plan.tau_bar = layout.take(p.position_weights ? n * p.mini_batch : 0);
  }
  plan.bytes = std::max<std::size_t>(layout.bytes, 256);  // (the backward runs with no sequences too)
  return plan;
}

/// The workspace's pointers in `base` (plan.bytes of device memory whose first plan.table_bytes hold plan.table).
inline TttWorkspace ttt_workspace(const TttPlan& plan, void* base) {
  const auto f = [&](std::size_t offset) { return workspace_at(base, offset); };
  TttWorkspace w;
  w.seqs = static_cast<const std::int64_t*>(base);
  w.W = f(plan.W), w.A = f(plan.A), w.z = f(plan.z), w.g = f(plan.g), w.zh = f(plan.zh);
  return w;
}

/// The backward's pointers in `base`.
inline TttGradWorkspace ttt_grad_workspace(const TttPlan& plan, const TttLinearParams& p, void* base) {
  const auto f = [&](std::size_t offset) { return workspace_at(base, offset); };
  TttGradWorkspace w;
  w.seqs = static_cast<const std::int64_t*>(base), w.rows = p.rows(), w.span = plan.span;
  w.ck = f(plan.ck), w.W = f(plan.W), w.A = f(plan.A), w.Wb = f(plan.Wb), w.C = f(plan.C);
  w.zh = f(plan.zh), w.G = f(plan.G), w.Zq = f(plan.Zq), w.stats = f(plan.stats);
  w.z = f(plan.z), w.g = f(plan.g), w.zb = f(plan.zb), w.rb = f(plan.rb);
  w.gamma_bar = f(plan.gamma_bar), w.beta_bar = f(plan.beta_bar), w.tau_bar = f(plan.tau_bar);
  return w;
}

/// The whole forward over one executor, every input dtype: plan_ttt_linear has run, the workspace holds the table.
template <class Exec>
void ttt_linear_forward_launches(Exec& exec, const TttLinearParams& p, const TttPlan& plan, void* base) {
  if (p.rows() == 0) return;  // also with no steps: the final states are then the initial ones
  const LaunchDims grid{static_cast<unsigned>(p.nheads), static_cast<unsigned>(p.rows())};
  visit_input_dtype(p.input_dtype, [&](auto in) {
    exec.launch(ttt_forward_kernel<decltype(in)>, grid, LaunchDims{kTttThreads}, p, ttt_workspace(plan, base));
  });
}

/// The whole backward over one executor (plan_ttt_linear with g has run): the per-(sequence, head) kernel, then the
/// sums of γ̄, β̄ and τ̄ (which also run with no sequences, writing zeros).
template <class Exec>
void ttt_linear_backward_launches(Exec& exec, const TttLinearParams& p, const TttLinearGradParams& g,
                                  const TttPlan& plan, void* base) {
  const TttGradWorkspace w = ttt_grad_workspace(plan, p, base);
  const LaunchDims grid{static_cast<unsigned>(p.nheads), static_cast<unsigned>(p.rows())};
  if (p.rows() > 0)
    visit_input_dtype(p.input_dtype, [&](auto in) {
      exec.launch(ttt_backward_kernel<decltype(in)>, grid, LaunchDims{kTttThreads}, p, g, w);
    });
  const std::int64_t n = 2 * p.nheads * p.d + p.mini_batch, blocks = (n + kTttSumThreads - 1) / kTttSumThreads;
  exec.launch(ttt_param_grad_sum_kernel, LaunchDims{static_cast<unsigned>(std::min<std::int64_t>(blocks, 4096))},
              LaunchDims{kTttSumThreads}, p, g, w);
}

}  // namespace ssm::kernels
