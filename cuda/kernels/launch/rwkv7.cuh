// The launch logic of RWKV-7's generalized delta rule on CUDA (docs/rwkv7.md "On CUDA"), written once over an executor
// as kernels/launch/ssd.cuh: the plan (the sequence table and the workspace's layout), then the forward's one kernel,
// or the backward's kernel and the sum of its column blocks' partials (kernels/rwkv7.cuh). The caller allocates
// plan.bytes of device memory and uploads plan.table (plan.table_bytes) to its start.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../rwkv7.cuh"
#include "chunk_table.cuh"
#include "ssm/core/error.hpp"
#include "ssm/core/params/rwkv7.hpp"

namespace ssm::kernels {

/// The host side of one call: the sequence table and the workspace's byte offsets (0: absent).
struct Rwkv7Plan {
  std::vector<std::int64_t> table;               // (rows, 4): batch row, begin, end, first checkpoint
  std::int64_t checkpoints = 0, blocks = 0;      // the intervals of every sequence; the forward's column blocks
  std::int64_t grad_warps = 1, grad_blocks = 0;  // the backward's warps per block and column blocks
  std::int64_t interval = 1;                     // the checkpoint interval: chunk_size, at most the longest sequence
  std::size_t table_bytes = 0, S = 0, ck = 0, Sc = 0, D = 0, part = 0;
  std::size_t bytes = 0;
};

/// Checks p against what the kernels take (the op, ops/rwkv7.hpp, has checked shapes, dtypes and values) and lays out
/// the workspace for the forward, or for the backward when g is given.
inline Rwkv7Plan plan_rwkv7(const Rwkv7Params& p, const char* op, const Rwkv7GradParams* g = nullptr) {
  check_compute_dtypes(p, op);
  SSM_CHECK(p.chunk_size > 0, op, ": chunk_size must be > 0, got ", p.chunk_size);
  SSM_CHECK(p.batch * p.seqlen == 0 ||
                (p.q.data && p.k.data && p.v.data && p.log_w.data && p.a.data && p.b.data && (g || p.out.data)),
            op, g ? ": q, k, v, log_w, a and b must be set" : ": q, k, v, log_w, a, b and out must be set");
  SSM_CHECK(!g || p.batch * p.seqlen == 0 || g->grad_out, op, ": grad_out must be set");
  const std::int64_t blocks = (p.dv + kRwkv7Columns - 1) / kRwkv7Columns;
  SSM_CHECK(p.nheads >= 1 && p.nheads <= 65535 && p.dk >= 1 && p.dv >= 1 && blocks <= 0x7fffffff && p.rows() <= 65535,
            op, ": need h in [1, 65535], dk, dv >= 1 and at most 65535 sequences, got h = ", p.nheads, ", dk = ", p.dk,
            ", dv = ", p.dv, ", ", p.rows(), " sequences");
  SSM_CHECK(!p.cu_seqlens || p.batch == 1, op, ": cu_seqlens needs b == 1, got b = ", p.batch);
  check_packed_sequences(p, op);
  Rwkv7Plan plan;
  plan.blocks = blocks;
  plan.grad_warps = std::min<std::int64_t>(blocks, kRwkv7GradWarps);
  plan.grad_blocks = (blocks + plan.grad_warps - 1) / plan.grad_warps;
  std::int64_t longest = 1;  // (a direct caller's chunk_size far past the sequences sizes no buffer)
  for (std::int64_t s = 0; s < p.rows(); ++s) longest = std::max(longest, p.seq_end(s) - p.seq_begin(s));
  plan.interval = std::min(p.chunk_size, longest);
  for (std::int64_t s = 0; s < p.rows(); ++s) {
    const std::int64_t begin = p.seq_begin(s), end = p.seq_end(s);
    plan.table.insert(plan.table.end(), {p.seq_row(s), begin, end, plan.checkpoints});
    plan.checkpoints += (end - begin + plan.interval - 1) / plan.interval;
  }
  plan.table_bytes = plan.table.size() * sizeof(std::int64_t);
  const std::int64_t h = p.nheads, size = p.dk * p.dv;
  WorkspaceLayout layout{ssd_align(plan.table_bytes)};
  plan.S = layout.take(p.rows() * h * size);
  if (g) {
    plan.ck = layout.take(plan.checkpoints * h * size),
    plan.Sc = layout.take(p.rows() * h * (plan.interval + 1) * size);
    plan.D = layout.take(p.rows() * h * size);
    if (plan.grad_blocks > 1)  // (one block per head writes the key channels' gradients itself)
      plan.part = layout.take(plan.grad_blocks * p.batch * p.seqlen * h * kRwkv7Parts * p.dk);
  }
  plan.bytes = layout.bytes;
  return plan;
}

/// The workspace's pointers in `base` (plan.bytes of device memory whose first plan.table_bytes hold plan.table).
inline Rwkv7Workspace rwkv7_workspace(const Rwkv7Plan& plan, const Rwkv7Params& p, void* base) {
  const auto f = [&](std::size_t offset) { return workspace_at(base, offset); };
  Rwkv7Workspace w;
  w.seqs = static_cast<const std::int64_t*>(base), w.rows = p.rows();
  w.S = f(plan.S), w.ck = f(plan.ck), w.Sc = f(plan.Sc), w.D = f(plan.D), w.part = f(plan.part);
  return w;
}

/// Grid of the per-column kernels: (column blocks, h, rows).
inline LaunchDims rwkv7_grid(const Rwkv7Params& p, const Rwkv7Plan& plan) {
  return LaunchDims{static_cast<unsigned>(plan.blocks), static_cast<unsigned>(p.nheads),
                    static_cast<unsigned>(p.rows())};
}

template <class In, class Exec>
void launch_rwkv7_forward(Exec& exec, const Rwkv7Params& p, const Rwkv7Plan& plan, void* base) {
  if (p.rows() > 0)  // also with no steps: the final states are then the initial ones
    exec.launch(rwkv7_forward_kernel<In>, rwkv7_grid(p, plan), LaunchDims{kRwkv7Columns}, p,
                rwkv7_workspace(plan, p, base));
}

template <class In, class Exec>
void launch_rwkv7_backward(Exec& exec, const Rwkv7Params& p, const Rwkv7GradParams& g, const Rwkv7Plan& plan,
                           void* base) {
  const Rwkv7Workspace w = rwkv7_workspace(plan, p, base);
  Rwkv7Params q = p;  // the kernel's intervals: the plan's
  q.chunk_size = plan.interval;
  if (p.rows() > 0)
    exec.launch(rwkv7_backward_kernel<In>,
                LaunchDims{static_cast<unsigned>(plan.grad_blocks), static_cast<unsigned>(p.nheads),
                           static_cast<unsigned>(p.rows())},
                LaunchDims{static_cast<unsigned>(kRwkv7Columns * plan.grad_warps)}, q, g, w);
  const std::int64_t n = p.batch * p.seqlen * p.nheads * p.dk, blocks = (n + kRwkv7SumThreads - 1) / kRwkv7SumThreads;
  if (n > 0 && plan.grad_blocks > 1)
    exec.launch(rwkv7_grad_sum_kernel<In>, LaunchDims{static_cast<unsigned>(blocks < 4096 ? blocks : 4096)},
                LaunchDims{kRwkv7SumThreads}, p, g, w, plan.grad_blocks);
}

/// The whole forward over one executor, every input dtype: plan_rwkv7 has run, the workspace holds the table.
template <class Exec>
void rwkv7_forward_launches(Exec& exec, const Rwkv7Params& p, const Rwkv7Plan& plan, void* base) {
  visit_input_dtype(p.input_dtype, [&](auto in) { launch_rwkv7_forward<decltype(in)>(exec, p, plan, base); });
}

/// The whole backward over one executor (plan_rwkv7 with g has run).
template <class Exec>
void rwkv7_backward_launches(Exec& exec, const Rwkv7Params& p, const Rwkv7GradParams& g, const Rwkv7Plan& plan,
                             void* base) {
  visit_input_dtype(p.input_dtype, [&](auto in) { launch_rwkv7_backward<decltype(in)>(exec, p, g, plan, base); });
}

}  // namespace ssm::kernels
