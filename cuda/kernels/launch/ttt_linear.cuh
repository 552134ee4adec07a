// The launch logic of TTT-Linear's forward on CUDA (docs/ttt_linear.md "On CUDA"), written once over an executor as
// kernels/launch/ssd.cuh: the plan (the sequence table and the workspace's layout), then ttt_forward_kernel
// (kernels/ttt_linear.cuh). The caller allocates plan.bytes of device memory and uploads plan.table (plan.table_bytes)
// to its start.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../ttt_linear.cuh"
#include "chunk_table.cuh"
#include "ssm/core/error.hpp"
#include "ssm/core/params/ttt_linear.hpp"

namespace ssm::kernels {

/// The host side of one forward: the sequence table and the workspace's byte offsets.
struct TttPlan {
  std::vector<std::int64_t> table;  // (rows, 3): batch row, begin, end
  std::size_t table_bytes = 0, W = 0, A = 0, z = 0, g = 0, zh = 0;
  std::size_t bytes = 0;
};

/// Checks p against what the kernel takes (the op, ops/ttt_linear.hpp, has checked shapes, dtypes and values) and lays
/// out the workspace.
inline TttPlan plan_ttt_linear(const TttLinearParams& p, const char* op) {
  check_compute_dtypes(p, op);
  SSM_CHECK(p.mini_batch > 0 && p.start >= 0 && p.start < p.mini_batch, op,
            ": need mini_batch > 0 and start in [0, mini_batch), got ", p.mini_batch, " and ", p.start);
  SSM_CHECK(p.ln_weight && p.ln_bias, op, ": ln_weight and ln_bias must be set");
  SSM_CHECK(p.batch * p.seqlen == 0 || (p.q.data && p.k.data && p.v.data && p.eta.data && p.out.data), op,
            ": q, k, v, eta and out must be set");  // (with no steps they are empty and may have no storage)
  SSM_CHECK(p.nheads >= 1 && p.nheads <= 0x7fffffff && p.d >= 1 && p.rows() <= 65535, op,
            ": need h >= 1, d >= 1 and at most 65535 sequences, got h = ", p.nheads, ", d = ", p.d, ", ", p.rows(),
            " sequences");
  SSM_CHECK(!p.cu_seqlens || p.batch == 1, op, ": cu_seqlens needs b == 1, got b = ", p.batch);
  check_packed_sequences(p, op);
  TttPlan plan;
  for (std::int64_t s = 0; s < p.rows(); ++s)
    plan.table.insert(plan.table.end(), {p.seq_row(s), p.seq_begin(s), p.seq_end(s)});
  plan.table_bytes = plan.table.size() * sizeof(std::int64_t);
  WorkspaceLayout layout{ssd_align(plan.table_bytes)};
  const std::int64_t n = p.rows() * p.nheads;
  plan.W = layout.take(n * p.state_size()), plan.A = layout.take(n * p.state_size());
  plan.z = layout.take(n * p.d), plan.g = layout.take(n * p.d), plan.zh = layout.take(n * p.d);
  plan.bytes = layout.bytes;
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

/// The whole forward over one executor, every input dtype: plan_ttt_linear has run, the workspace holds the table.
template <class Exec>
void ttt_linear_forward_launches(Exec& exec, const TttLinearParams& p, const TttPlan& plan, void* base) {
  if (p.rows() == 0) return;  // also with no steps: the final states are then the initial ones
  const LaunchDims grid{static_cast<unsigned>(p.nheads), static_cast<unsigned>(p.rows())};
  visit_input_dtype(p.input_dtype, [&](auto in) {
    exec.launch(ttt_forward_kernel<decltype(in)>, grid, LaunchDims{kTttThreads}, p, ttt_workspace(plan, base));
  });
}

}  // namespace ssm::kernels
