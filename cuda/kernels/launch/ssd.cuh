// The launch logic of the chunked SSD forward and backward, written once over an executor (`exec.launch(kernel,
// LaunchDims grid, LaunchDims block, args...)`): the kernels' limits, the chunk table and workspace layout (plan_ssd,
// on the host), the launches and the input-dtype dispatch. ssm::cuda runs it on a stream (cuda/src/ssd.cu), the host
// emulation with emu::HostExecutor (cuda/emu/backend_entries.hpp). The caller allocates plan.bytes of device memory,
// uploads plan.table to its start and passes ssd_workspace(plan, base).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <utility>
#include <vector>

#include "../ssd_bc_bwd.cuh"
#include "../ssd_chunk_cumsum.cuh"
#include "../ssd_chunk_local_bwd.cuh"
#include "../ssd_chunk_scan.cuh"
#include "../ssd_chunk_scan_bwd.cuh"
#include "../ssd_chunk_state.cuh"
#include "../ssd_chunk_state_grad.cuh"
#include "../ssd_gate_bwd.cuh"
#include "../ssd_state_passing.cuh"
#include "../ssd_state_passing_bwd.cuh"
#include "chunk_table.cuh"
#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"

namespace ssm::kernels {

/// The host side of one forward call: the chunk table and the workspace's layout (byte offsets from its base).
struct SsdPlan {
  std::vector<std::int64_t> table;   // (n_chunks, 4) rows (batch row, t0, len, sequence), then first_chunk (rows + 1),
                                     // then the caller's constants (f32, two to a slot)
  std::int64_t n_chunks = 0, q = 0;  // chunks; the longest chunk's length
  std::size_t table_bytes = 0, cs_offset = 0, Delta_offset = 0, states_offset = 0, bytes = 0;
  std::size_t constants_offset = 0;  // where the constants start (bytes from the base)
  // The backward's buffers after the forward's (plan_ssd_backward; 0 for a forward): dcs and dDelta adjacent, so
  // one zero fill covers both.
  std::size_t dstates_offset = 0, dcs_offset = 0, dDelta_offset = 0, dG_offset = 0, y_offset = 0;
  // The chunk states, and the backward's y, in the caller's buffers instead of the workspace (which then has no room
  // for them): a forward that keeps them for its backward (SsdParams::chunk_states, y), a backward that reads what a
  // forward kept (SsdGradParams::saved_states, saved_y).
  bool states_outside = false, y_outside = false;
};

/// Checks p against the kernels' limits (the op, ops/ssd.hpp, has checked shapes and dtypes) and lays out the
/// chunks of every sequence (cu_seqlens: host memory, as the op passes it); `constants` (host values) travel with the
/// table, at plan.constants_offset. p's pointers are not read: a client that places its engine inputs in the same
/// workspace (kernels/launch/linear_attention.cuh) lays it out first.
inline SsdPlan layout_ssd(const SsdParams& p, const char* op, const std::vector<float>& constants = {}) {
  check_compute_dtypes(p, op);
  SSM_CHECK(p.chunk_size > 0, op, ": chunk_size must be > 0, got ", p.chunk_size);
  SSM_CHECK(p.batch >= 0 && p.seqlen >= 0 && p.nheads >= 1 && p.nheads <= 65535 && p.headdim >= 1 && p.dstate >= 1 &&
                p.ngroups >= 1 && p.nheads % p.ngroups == 0,
            op, ": need b, l >= 0, h in [1, 65535], p, n >= 1 and g dividing h, got b = ", p.batch, ", l = ", p.seqlen,
            ", h = ", p.nheads, ", p = ", p.headdim, ", n = ", p.dstate, ", g = ", p.ngroups);
  SSM_CHECK(p.rows() <= 65535, op, ": at most 65535 sequences per launch, got ", p.rows());
  SSM_CHECK(!p.cu_seqlens || p.batch == 1, op, ": cu_seqlens needs b == 1, got b = ", p.batch);
  SsdPlan plan;
  check_packed_sequences(p, op);
  std::tie(plan.n_chunks, plan.q) = append_chunk_table(p, p.chunk_size, plan.table);
  SSM_CHECK(plan.n_chunks <= 0x7fffffff, op, ": at most 2^31 - 1 chunks per launch, got ", plan.n_chunks);
  const std::int64_t h = p.nheads, PN = p.headdim * p.dstate;
  const std::int64_t tiles = (std::max<std::int64_t>(plan.q, 1) + kSsdTile - 1) / kSsdTile;
  const std::int64_t p_tiles = (p.headdim + kSsdTile - 1) / kSsdTile, n_tiles = (p.dstate + kSsdTile - 1) / kSsdTile;
  SSM_CHECK(tiles * p_tiles <= 65535 && p_tiles * n_tiles <= 65535 &&
                (PN + kSsdPassThreads - 1) / kSsdPassThreads <= 0x7fffffff,
            op, ": the tiles of a (chunk, head) exceed the grid (p = ", p.headdim, ", n = ", p.dstate, ", chunk ",
            plan.q, ")");
  plan.constants_offset = plan.table.size() * sizeof(std::int64_t);
  plan.table.resize(plan.table.size() + (constants.size() + 1) / 2);
  if (!constants.empty())
    std::memcpy(reinterpret_cast<char*>(plan.table.data()) + plan.constants_offset, constants.data(),
                constants.size() * sizeof(float));
  const auto bytes = [](std::int64_t count, std::size_t size) {
    return ssd_align(static_cast<std::size_t>(count) * size);
  };
  plan.table_bytes = plan.table.size() * sizeof(std::int64_t);
  plan.cs_offset = ssd_align(plan.table_bytes);
  plan.Delta_offset = plan.cs_offset + bytes(plan.n_chunks * h * plan.q, sizeof(double));
  plan.states_offset = plan.Delta_offset + bytes(plan.n_chunks * h * plan.q, sizeof(float));
  plan.bytes = plan.states_offset + bytes(plan.n_chunks * h * PN, sizeof(float));
  return plan;
}

/// layout_ssd for p's own buffers: x, dt, A, B, C (and out, with_out) must be set. The backward passes with_out =
/// false (it writes no out).
inline SsdPlan plan_ssd(const SsdParams& p, const char* op, bool with_out = true) {
  // (with no steps the per-step tensors are empty and may have no storage)
  SSM_CHECK(p.A && (p.batch * p.seqlen == 0 || (p.x && p.dt && p.B && p.C && (p.out || !with_out))), op,
            ": x, dt, A, B, C and out must be set");
  SsdPlan plan = layout_ssd(p, op);
  if (with_out && p.chunk_states) plan.states_outside = true, plan.bytes = plan.states_offset;
  return plan;
}

/// The workspace's pointers in `base` (plan.bytes of device memory whose first plan.table_bytes hold plan.table);
/// states null when they are the caller's (plan.states_outside: the launches point at them).
inline SsdWorkspace ssd_workspace(const SsdPlan& plan, void* base) {
  char* b = static_cast<char*>(base);
  SsdWorkspace ws;
  ws.chunks = reinterpret_cast<const std::int64_t*>(b);
  ws.first_chunk = ws.chunks + plan.n_chunks * kSsdChunkFields;
  ws.n_chunks = plan.n_chunks, ws.q = plan.q;
  ws.cs = reinterpret_cast<double*>(b + plan.cs_offset);
  ws.Delta = reinterpret_cast<float*>(b + plan.Delta_offset);
  ws.states = plan.states_outside ? nullptr : reinterpret_cast<float*>(b + plan.states_offset);
  return ws;
}

/// The backward's buffers after a forward's layout (SsdGradWorkspace): dstates (n_chunks, h, p, n), dcs and dDelta
/// (n_chunks, h, q) each, dG (n_chunks, h, q, q), and y (b, l, h, p) with z unless plan.y_outside; all f32.
inline void layout_ssd_backward(SsdPlan& plan, const SsdParams& p, const char* op) {
  const std::int64_t h = p.nheads, PN = p.headdim * p.dstate, q = plan.q;
  const std::int64_t q_tiles = (std::max<std::int64_t>(q, 1) + kSsdTile - 1) / kSsdTile;
  const std::int64_t n_tiles = (p.dstate + kSsdTile - 1) / kSsdTile;
  SSM_CHECK(q_tiles * q_tiles <= 65535 && q_tiles * n_tiles <= 65535 && p.ngroups <= 65535, op,
            ": the backward's tiles of a (chunk, head) exceed the grid (chunk ", q, ", n = ", p.dstate, ")");
  const std::size_t rows = static_cast<std::size_t>(plan.n_chunks * h);
  plan.dstates_offset = plan.bytes;
  plan.dcs_offset = plan.dstates_offset + ssd_align(rows * static_cast<std::size_t>(PN) * sizeof(float));
  plan.dDelta_offset = plan.dcs_offset + rows * static_cast<std::size_t>(q) * sizeof(float);  // right after dcs
  plan.dG_offset = ssd_align(plan.dDelta_offset + rows * static_cast<std::size_t>(q) * sizeof(float));
  plan.y_offset = plan.dG_offset + ssd_align(rows * static_cast<std::size_t>(q * q) * sizeof(float));
  const std::size_t y_bytes =
      p.z && !plan.y_outside ? static_cast<std::size_t>(p.batch * p.seqlen * h * p.headdim) * sizeof(float) : 0u;
  plan.bytes = plan.y_offset + ssd_align(y_bytes);
}

/// plan_ssd and layout_ssd_backward for p's and g's own buffers (grad_out must be set); what a forward kept
/// (g.saved_states, g.saved_y) takes no workspace.
inline SsdPlan plan_ssd_backward(const SsdParams& p, const SsdGradParams& g, const char* op) {
  SsdPlan plan = plan_ssd(p, op, false);
  SSM_CHECK(g.grad_out, op, ": grad_out must be set");
  if (g.saved_states) plan.states_outside = true, plan.bytes = plan.states_offset;
  plan.y_outside = g.saved_y != nullptr;
  layout_ssd_backward(plan, p, op);
  return plan;
}

/// The backward's buffers in `base` (laid out by plan_ssd_backward); y null without z or when it is the caller's.
inline SsdGradWorkspace ssd_grad_workspace(const SsdPlan& plan, void* base, bool has_z) {
  char* b = static_cast<char*>(base);
  SsdGradWorkspace gw;
  gw.dstates = reinterpret_cast<float*>(b + plan.dstates_offset);
  gw.dcs = reinterpret_cast<float*>(b + plan.dcs_offset);
  gw.dDelta = reinterpret_cast<float*>(b + plan.dDelta_offset);
  gw.dG = reinterpret_cast<float*>(b + plan.dG_offset);
  gw.y = has_z && !plan.y_outside ? reinterpret_cast<float*>(b + plan.y_offset) : nullptr;
  return gw;
}

/// The four launches for inputs of type In. With p.chunk_states the chunk states are computed in that buffer (and
/// stay there, the states entering each chunk, for the backward), and the chunk scan also writes p.y.
template <class In, class Exec>
void launch_ssd_forward(Exec& exec, const SsdParams& p, const SsdPlan& plan, const SsdWorkspace& workspace) {
  SsdWorkspace ws = workspace;
  if (p.chunk_states) ws.states = static_cast<float*>(p.chunk_states);
  const auto h = static_cast<unsigned>(p.nheads), chunks = static_cast<unsigned>(plan.n_chunks);
  const index_t P = p.headdim, N = p.dstate, PN = P * N;
  const auto tiles = [](index_t e) { return static_cast<unsigned>((e + kSsdTile - 1) / kSsdTile); };
  if (plan.n_chunks > 0) {
    exec.launch(ssd_chunk_cumsum_kernel, LaunchDims{chunks, h}, LaunchDims{32}, p, ws);
    exec.launch(ssd_chunk_state_kernel<In>, LaunchDims{chunks, h, tiles(P) * tiles(N)}, LaunchDims{kSsdThreads}, p, ws);
  }
  if (p.rows() > 0)  // also with no chunks: the final states are then the initial ones
    exec.launch(ssd_state_passing_kernel,
                LaunchDims{static_cast<unsigned>((PN + kSsdPassThreads - 1) / kSsdPassThreads), h,
                           static_cast<unsigned>(p.rows())},
                LaunchDims{kSsdPassThreads}, p, ws);
  if (plan.n_chunks > 0)
    exec.launch(ssd_chunk_scan_kernel<In>, LaunchDims{chunks, h, tiles(plan.q) * tiles(P)}, LaunchDims{kSsdThreads}, p,
                ws);
}

/// The backward's launches for inputs of type In (docs/ssd.md "CUDA backward"): the zero fills, the forward's
/// stages 0-2 again (Δ, cs, the entering states; no final state), the forward's chunk scan into y (with z), then
/// E_c, the reverse state passing, ḡx (with ḡz, ḡD, ḡΔ), ḡ(C Bᵀ), ḡC, ḡB, and last the gate (ḡdt, ḡA, ḡdt_bias),
/// which reads the ḡcs every earlier launch added to. With g.saved_states the entering states are the forward's
/// (stages 1 and 2 do not run), with g.saved_y y is (the chunk scan into y does not run); both are only read.
template <class In, class Exec>
void launch_ssd_backward(Exec& exec, const SsdParams& p, const SsdGradParams& g, const SsdPlan& plan,
                         const SsdWorkspace& workspace, const SsdGradWorkspace& grad_workspace) {
  SsdWorkspace ws = workspace;
  SsdGradWorkspace gw = grad_workspace;
  // (const_cast: the kernels that write ws.states and gw.y are the launches skipped when these are set)
  if (g.saved_states) ws.states = const_cast<float*>(static_cast<const float*>(g.saved_states));
  if (p.z && g.saved_y) gw.y = const_cast<float*>(static_cast<const float*>(g.saved_y));
  const auto h = static_cast<unsigned>(p.nheads), chunks = static_cast<unsigned>(plan.n_chunks);
  const index_t P = p.headdim, N = p.dstate, PN = P * N;
  const auto tiles = [](index_t e) { return static_cast<unsigned>((e + kSsdTile - 1) / kSsdTile); };
  const auto zero = [&](void* data, index_t count) {
    if (data && count > 0)
      exec.launch(ssd_zero_kernel, LaunchDims{static_cast<unsigned>((count + kSsdPassThreads - 1) / kSsdPassThreads)},
                  LaunchDims{kSsdPassThreads}, static_cast<float*>(data), count);
  };
  zero(gw.dcs, 2 * plan.n_chunks * p.nheads * plan.q);  // dcs and dDelta
  zero(g.grad_A, p.nheads);
  if (p.D) zero(g.grad_D, p.D_per_channel ? p.nheads * P : p.nheads);
  if (p.dt_bias) zero(g.grad_dt_bias, p.nheads);
  SsdParams fwd = p;
  fwd.final_state = nullptr, fwd.chunk_states = nullptr, fwd.y = nullptr;
  const LaunchDims pass_grid{static_cast<unsigned>((PN + kSsdPassThreads - 1) / kSsdPassThreads), h,
                             static_cast<unsigned>(p.rows())};
  if (plan.n_chunks > 0) {
    exec.launch(ssd_chunk_cumsum_kernel, LaunchDims{chunks, h}, LaunchDims{32}, fwd, ws);
    if (!g.saved_states)
      exec.launch(ssd_chunk_state_kernel<In>, LaunchDims{chunks, h, tiles(P) * tiles(N)}, LaunchDims{kSsdThreads},
                  fwd, ws);
  }
  if (p.rows() > 0 && !g.saved_states)
    exec.launch(ssd_state_passing_kernel, pass_grid, LaunchDims{kSsdPassThreads}, fwd, ws);
  if (plan.n_chunks > 0) {
    if (p.z && !g.saved_y) {  // y = Y + D x before the gate, f32 (b, l, h, p) contiguous
      SsdParams py = fwd;
      py.z = nullptr;
      py.out = gw.y;
      py.out_batch_stride = p.seqlen * p.nheads * P, py.out_seq_stride = p.nheads * P, py.out_head_stride = P;
      exec.launch(ssd_chunk_scan_kernel<In, float>, LaunchDims{chunks, h, tiles(plan.q) * tiles(P)},
                  LaunchDims{kSsdThreads}, py, ws);
    }
    exec.launch(ssd_chunk_state_grad_kernel<In>, LaunchDims{chunks, h, tiles(P) * tiles(N)}, LaunchDims{kSsdThreads}, p,
                g, ws, gw);
  }
  if (p.rows() > 0) exec.launch(ssd_state_passing_bwd_kernel, pass_grid, LaunchDims{kSsdPassThreads}, p, g, ws, gw);
  if (plan.n_chunks > 0) {
    const auto groups = static_cast<unsigned>(p.ngroups);
    exec.launch(ssd_chunk_scan_bwd_kernel<In>, LaunchDims{chunks, h, tiles(plan.q) * tiles(P)}, LaunchDims{kSsdThreads},
                p, g, ws, gw);
    exec.launch(ssd_chunk_local_bwd_kernel<In>, LaunchDims{chunks, h, tiles(plan.q) * tiles(plan.q)},
                LaunchDims{kSsdThreads}, p, g, ws, gw);
    exec.launch(ssd_grad_C_kernel<In>, LaunchDims{chunks, groups, tiles(plan.q) * tiles(N)}, LaunchDims{kSsdThreads}, p,
                g, ws, gw);
    exec.launch(ssd_grad_B_kernel<In>, LaunchDims{chunks, groups, tiles(plan.q) * tiles(N)}, LaunchDims{kSsdThreads}, p,
                g, ws, gw);
    exec.launch(ssd_gate_bwd_kernel, LaunchDims{chunks, h}, LaunchDims{32}, p, g, ws, gw);
  }
}

/// The whole backward over one executor, every input dtype: plan_ssd_backward has run, the workspace holds the table.
template <class Exec>
void ssd_backward_launches(Exec& exec, const SsdParams& p, const SsdGradParams& g, const SsdPlan& plan,
                           const SsdWorkspace& ws, const SsdGradWorkspace& gw) {
  visit_input_dtype(p.input_dtype, [&](auto in) { launch_ssd_backward<decltype(in)>(exec, p, g, plan, ws, gw); });
}

/// The whole forward over one executor, every input dtype: plan_ssd has run, ws is laid out and holds the table.
template <class Exec>
void ssd_forward_launches(Exec& exec, const SsdParams& p, const SsdPlan& plan, const SsdWorkspace& ws) {
  visit_input_dtype(p.input_dtype, [&](auto in) { launch_ssd_forward<decltype(in)>(exec, p, plan, ws); });
}

}  // namespace ssm::kernels
