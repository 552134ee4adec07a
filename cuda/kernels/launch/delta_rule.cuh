// The launch logic of the delta rule's forward on CUDA (docs/delta_rule.md "On CUDA"), written once over an executor as
// kernels/launch/ssd.cuh: the plan (the chunk table of launch/chunk_table.cuh, and the workspace's
// layout), then dr_chunk_kernel over every chunk and dr_state_kernel over every sequence. The caller allocates
// plan.bytes of device memory and uploads plan.table (plan.table_bytes) to its start.
#pragma once

#include <cstddef>
#include <cstdint>
#include <tuple>
#include <vector>

#include "../delta_rule.cuh"
#include "chunk_table.cuh"
#include "ssm/core/error.hpp"
#include "ssm/core/params/delta_rule.hpp"

namespace ssm::kernels {

/// The host side of one forward: the chunk table and the workspace's byte offsets.
struct DrPlan {
  std::vector<std::int64_t> table;  // (n_chunks, 4) rows, then first_chunk (rows + 1)
  std::int64_t n_chunks = 0, q = 0;
  std::size_t table_bytes = 0, cs = 0, gam = 0, rho = 0, beta = 0, Qn = 0, Kn = 0, R = 0, A = 0, M = 0, S = 0, U = 0;
  std::size_t bytes = 0;
};

/// Checks p against what the kernels take (the op, ops/delta_rule.hpp, has checked shapes, dtypes and values) and
/// lays out the workspace.
inline DrPlan plan_delta_rule(const DeltaRuleParams& p, const char* op) {
  SSM_CHECK(p.input_dtype == DType::f32 || p.input_dtype == DType::f16 || p.input_dtype == DType::bf16, op,
            ": input dtype must be f32, f16 or bf16 on CUDA (f32 compute), got ", name(p.input_dtype));
  SSM_CHECK(p.param_dtype == DType::f32, op, ": the param dtype must be f32 on CUDA, got ", name(p.param_dtype));
  SSM_CHECK(p.chunk_size > 0, op, ": chunk_size must be > 0, got ", p.chunk_size);
  SSM_CHECK(p.batch * p.seqlen == 0 || (p.q && p.k && p.v && p.beta && p.out), op,
            ": q, k, v, beta and out must be set");  // (with no steps they are empty and may have no storage)
  SSM_CHECK(p.nheads >= 1 && p.nheads <= 65535 && p.ngroups >= 1 && p.nheads % p.ngroups == 0 && p.dk >= 1 &&
                p.dv >= 1 && p.rows() <= 65535,
            op, ": need h in [1, 65535], g dividing h, dk, dv >= 1 and at most 65535 sequences, got h = ", p.nheads,
            ", g = ", p.ngroups, ", dk = ", p.dk, ", dv = ", p.dv, ", ", p.rows(), " sequences");
  SSM_CHECK(!p.cu_seqlens || p.batch == 1, op, ": cu_seqlens needs b == 1, got b = ", p.batch);
  DrPlan plan;
  std::tie(plan.n_chunks, plan.q) = append_chunk_table(p, p.chunk_size, plan.table);
  SSM_CHECK(plan.n_chunks <= 0x7fffffff, op, ": at most 2^31 - 1 chunks per launch, got ", plan.n_chunks);
  plan.table_bytes = plan.table.size() * sizeof(std::int64_t);
  const std::int64_t per_chunk = plan.n_chunks * p.nheads, Q = plan.q, dk = p.dk, dv = p.dv;
  std::size_t at = ssd_align(plan.table_bytes);
  const auto take = [&](std::int64_t count, std::size_t size) {
    const std::size_t offset = at;
    at += ssd_align(static_cast<std::size_t>(count) * size);
    return offset;
  };
  plan.cs = take(per_chunk * Q, sizeof(double));
  plan.gam = take(per_chunk * Q, sizeof(float)), plan.rho = take(per_chunk * Q, sizeof(float));
  plan.beta = take(per_chunk * Q, sizeof(float));
  plan.Qn = take(per_chunk * Q * dk, sizeof(float)), plan.Kn = take(per_chunk * Q * dk, sizeof(float));
  plan.R = take(per_chunk * Q * (dv + dk), sizeof(float));
  plan.A = take(per_chunk * Q * Q, sizeof(float)), plan.M = take(per_chunk * Q * Q, sizeof(float));
  plan.S = take(p.rows() * p.nheads * dk * dv, sizeof(float));
  plan.U = take(p.rows() * p.nheads * Q * dv, sizeof(float));
  plan.bytes = at;
  return plan;
}

/// The workspace's pointers in `base` (plan.bytes of device memory whose first plan.table_bytes hold plan.table).
inline DrWorkspace dr_workspace(const DrPlan& plan, void* base) {
  char* b = static_cast<char*>(base);
  const auto f = [&](std::size_t offset) { return reinterpret_cast<float*>(b + offset); };
  DrWorkspace w;
  w.chunks = reinterpret_cast<const std::int64_t*>(b);
  w.first_chunk = w.chunks + plan.n_chunks * kSsdChunkFields;
  w.q = plan.q;
  w.cs = reinterpret_cast<double*>(b + plan.cs);
  w.gam = f(plan.gam), w.rho = f(plan.rho), w.beta = f(plan.beta), w.Qn = f(plan.Qn), w.Kn = f(plan.Kn);
  w.R = f(plan.R), w.A = f(plan.A), w.M = f(plan.M), w.S = f(plan.S), w.U = f(plan.U);
  return w;
}

template <class In, class Exec>
void launch_delta_rule_forward(Exec& exec, const DeltaRuleParams& p, const DrPlan& plan, void* base) {
  const DrWorkspace w = dr_workspace(plan, base);
  const auto h = static_cast<unsigned>(p.nheads);
  if (plan.n_chunks > 0)
    exec.launch(dr_chunk_kernel<In>, LaunchDims{static_cast<unsigned>(plan.n_chunks), h}, LaunchDims{kDrThreads}, p, w);
  if (p.rows() > 0)  // also with no chunks: the final states are then the initial ones
    exec.launch(
        dr_state_kernel<In>,
        LaunchDims{static_cast<unsigned>((p.dv + kDrColumns - 1) / kDrColumns), h, static_cast<unsigned>(p.rows())},
        LaunchDims{kDrColumns}, p, w);
}

/// The whole forward over one executor, every input dtype: plan_delta_rule has run, the workspace holds the table.
template <class Exec>
void delta_rule_forward_launches(Exec& exec, const DeltaRuleParams& p, const DrPlan& plan, void* base) {
  switch (p.input_dtype) {
    case DType::f32:
      launch_delta_rule_forward<float>(exec, p, plan, base);
      break;
    case DType::f16:
      launch_delta_rule_forward<::ssm::half>(exec, p, plan, base);
      break;
    default:
      launch_delta_rule_forward<::ssm::bfloat16>(exec, p, plan, base);
      break;
  }
}

}  // namespace ssm::kernels
