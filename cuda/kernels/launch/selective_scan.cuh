// The launch logic of the fused selective scan, written once over an executor (anything with
// `exec.launch(kernel, LaunchDims grid, LaunchDims block, args...)`): the kernels' limits, the block configuration
// for the longest sequence, the grid and the per-dtype dispatch. ssm::cuda instantiates it with a stream executor
// (cuda/src/selective_scan*.cu, one file per input dtype), the host emulation with emu::HostExecutor
// (cuda/emu/backend_entries.hpp), so the emulated tests run the launches the device runs.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "../selective_scan_bwd.cuh"
#include "../selective_scan_fwd.cuh"
#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/params/selective_scan_device.hpp"

namespace ssm::kernels {

/// Chunks per sequence of max_seqlen tokens (at least 1): the third extent of the saved chunk states
/// (sequences, d, chunks, n), ChunkStates' layout.
inline std::int64_t scan_chunk_count(std::int64_t max_seqlen) {
  return ChunkStates::count(max_seqlen, fwd_chunk_len(max_seqlen));
}

/// The ChunkStates (data null) the forward saves when the longest sequence has max_seqlen tokens: chunks of the
/// configuration's block tokens.
inline ChunkStates scan_chunk_layout(std::int64_t max_seqlen) {
  return {nullptr, scan_chunk_count(max_seqlen), fwd_chunk_len(max_seqlen)};
}

/// Checks that `cs` has the layout the kernels save / read for a longest sequence of max_seqlen tokens, naming `op`.
inline void check_chunk_layout(const ChunkStates& cs, std::int64_t max_seqlen, const char* op) {
  const ChunkStates want = scan_chunk_layout(max_seqlen);
  SSM_CHECK(cs.n_chunks == want.n_chunks && cs.chunk_len == want.chunk_len, op,
            ": argument 'chunk_states': the kernel's chunks for sequences of up to ", max_seqlen, " tokens are ",
            want.n_chunks, " of ", want.chunk_len, " steps (selective_scan_chunk_states(", max_seqlen,
            ")), got n_chunks = ", cs.n_chunks, ", chunk_len = ", cs.chunk_len);
}

/// The kernel limits both directions share, naming `op`.
inline void check_scan_supported(const ScanParams& p, DType input_dtype, const char* op) {
  SSM_CHECK(input_dtype == DType::f32 || input_dtype == DType::f16 || input_dtype == DType::bf16, op,
            ": input dtype must be f32, f16 or bf16 on CUDA, got ", name(input_dtype));
  SSM_CHECK(!p.is_complex, op, ": complex A is not supported by the CUDA kernel (use the CPU path)");
  SSM_CHECK(p.dstate >= 1 && p.dstate <= kScanMaxDstate, op, ": state size n must be in [1, ", kScanMaxDstate,
            "], got ", p.dstate);
  SSM_CHECK(p.n_groups >= 1 && p.dim >= 1 && p.dim % p.n_groups == 0, op, ": d (", p.dim,
            ") must be a positive multiple of the number of groups g (", p.n_groups, ")");
  SSM_CHECK(p.u && p.delta && p.A && p.B && p.C, op, ": u, delta, A, B and C must be set");
  SSM_CHECK(p.dim <= 0x7fffffff, op, ": d must be below 2^31 (the grid's x extent), got ", p.dim);
  SSM_CHECK(p.seqlen <= 0x7fffffff, op, ": l must be below 2^31 (32-bit positions in the kernel), got ", p.seqlen);
}

/// Checks what both directions take about the sequences (l, b with cu_seqlens, their count, max_seqlen: the
/// forward's option, passed on to the backward; 0 means l); returns the length that picks the configuration and sizes
/// the chunk states (the longest sequence), and their count in `sequences`.
inline std::int64_t check_scan_sequences(const ScanParams& p, std::int64_t max_seqlen, const char* op,
                                         std::int64_t& sequences) {
  SSM_CHECK(p.seqlen >= 0, op, ": l must be >= 0, got ", p.seqlen);
  SSM_CHECK(!p.cu_seqlens || p.batch == 1, op, ": cu_seqlens needs b == 1, got b = ", p.batch);
  sequences = fwd_num_sequences(p);
  SSM_CHECK(sequences >= 0 && sequences <= 65535, op, ": at most 65535 sequences per launch, got ", sequences);
  SSM_CHECK(max_seqlen >= 0 && max_seqlen <= p.seqlen, op, ": max_seqlen must be in [0, l = ", p.seqlen,
            "] (0: l), got ", max_seqlen);
  return p.cu_seqlens && max_seqlen > 0 ? max_seqlen : p.seqlen;
}

/// Checks a forward launch; returns the length that picks the configuration and sizes the chunk states (the
/// longest sequence), or -1 when there is nothing to launch (no sequences).
inline std::int64_t check_scan_forward(const ScanParams& p, DType input_dtype, const ScanForwardOptions& o,
                                       const char* op) {
  check_scan_supported(p, input_dtype, op);
  SSM_CHECK(p.out, op, ": out must be set");
  std::int64_t sequences = 0;
  const std::int64_t max_len = check_scan_sequences(p, o.max_seqlen, op, sequences);
  if (sequences == 0) return -1;
  if (o.chunk_states.data) check_chunk_layout(o.chunk_states, max_len, op);
  return max_len;
}

/// Checks a backward launch; returns the length that picks the configuration (the longest sequence, as the
/// forward's), or -1 when there is nothing to launch (no sequences).
inline std::int64_t check_scan_backward(const ScanParams& p, DType input_dtype, const ScanDeviceGradParams& g,
                                        const char* op) {
  check_scan_supported(p, input_dtype, op);
  SSM_CHECK(p.u_l_stride == 1 && p.delta_l_stride == 1 && p.z_l_stride == 1 && p.B_l_stride == 1 &&
                p.C_l_stride == 1 && p.out_l_stride == 1,
            op, ": the backward kernel reads its operands with unit stride along l (channel-major)");
  std::int64_t sequences = 0;
  const std::int64_t max_len = check_scan_sequences(p, g.max_seqlen, op, sequences);  // as the forward's
  SSM_CHECK(g.grad_out && g.grad_u && g.grad_delta && g.grad_A && g.grad_B && g.grad_C, op,
            ": grad_out, grad_u, grad_delta, grad_A, grad_B and grad_C must be set");
  SSM_CHECK(!p.z || g.grad_z, op, ": grad_z must be set when z is given");
  SSM_CHECK(g.chunk_states.data, op, ": argument 'chunk_states': the states the forward saved are needed");
  check_chunk_layout(g.chunk_states, max_len, op);
  return sequences > 0 ? max_len : -1;
}

/// The forward kernel for inputs of type In: grid (d, sequences), the configuration of max_len (the longest
/// sequence; check_scan_forward). chunk_states: f32 (sequences, d, n_chunks, n) in scan_chunk_layout(max_len)
/// (checked by check_scan_forward), or data null.
template <class In, class Exec>
void launch_selective_scan_fwd(Exec& exec, const ScanParams& p, const ChunkStates& chunk_states, std::int64_t max_len) {
  const auto sequences = static_cast<unsigned>(fwd_num_sequences(p));
  dispatch_fwd_config(max_len, [&](auto cfg) {
    using Cfg = decltype(cfg);
    exec.launch(selective_scan_fwd_kernel<In, Cfg::kThreads, Cfg::kItems>,
                LaunchDims{static_cast<unsigned>(p.dim), sequences}, LaunchDims{static_cast<unsigned>(Cfg::kThreads)},
                p, chunk_states);
  });
}

/// The backward kernel for inputs of type In: grid (d, sequences), the forward's chunk length for max_len (the
/// longest sequence; check_scan_backward) with 4 items per thread.
template <class In, class Exec>
void launch_selective_scan_bwd(Exec& exec, const ScanParams& p, const ScanDeviceGradParams& g, std::int64_t max_len) {
  dispatch_fwd_config(max_len, [&](auto fwd_cfg) {
    using Cfg = ScanBwdConfig<decltype(fwd_cfg)>;
    exec.launch(selective_scan_bwd_kernel<In, Cfg::kThreads, Cfg::kItems>,
                LaunchDims{static_cast<unsigned>(p.dim), static_cast<unsigned>(fwd_num_sequences(p))},
                LaunchDims{static_cast<unsigned>(Cfg::kThreads)}, p, g);
  });
}

/// The whole forward (checks, then the kernel of the input dtype) over one executor that instantiates every
/// dtype; returns the path name. ssm::cuda splits the dtypes over three files instead (same pieces).
template <class Exec>
std::string selective_scan_forward_launches(Exec& exec, const ScanParams& p, DType input_dtype,
                                            const ScanForwardOptions& o, const char* op) {
  const std::int64_t max_len = check_scan_forward(p, input_dtype, o, op);
  if (max_len < 0) return "cuda-fused";
  visit_input_dtype(input_dtype,
                    [&](auto in) { launch_selective_scan_fwd<decltype(in)>(exec, p, o.chunk_states, max_len); });
  return "cuda-fused";
}

/// The whole backward over one executor that instantiates every dtype.
template <class Exec>
void selective_scan_backward_launches(Exec& exec, const ScanParams& p, DType input_dtype, const ScanDeviceGradParams& g,
                                      const char* op) {
  const std::int64_t max_len = check_scan_backward(p, input_dtype, g, op);
  if (max_len < 0) return;
  visit_input_dtype(input_dtype, [&](auto in) { launch_selective_scan_bwd<decltype(in)>(exec, p, g, max_len); });
}

}  // namespace ssm::kernels
