// The selective-scan op (S6; Gu & Dao 2023, "Mamba", Algorithm 2; docs/math.md §5): argument validation,
// a ScanParams, and dispatch to the reference, the optimized CPU forward or CUDA. Semantics of
// state-spaces/mamba `selective_scan_ref`, plus an initial state, the last state, and packed
// variable-length batches (cu_seqlens). Forward and backward (reverse scan, states recomputed by chunk).
// User guide (shapes, paths, saved chunk states, complex A, errors): docs/selective_scan.md.
//
// Deliberate differences from selective_scan_ref (mamba_ssm/ops/selective_scan_interface.py):
//  - f64 inputs are computed in f64 (the reference casts u and delta to f32 whatever their dtype);
//    f32/f16/bf16 inputs use f32 weights and state, as the reference does.
//  - complex A with variable B/C: B and C are complex tensors (c64/c128) of shape (b, g, n, l), or, as the
//    reference takes them, real tensors of the weight dtype (f32/f64) of shape (b, g, n, 2l) holding interleaved
//    (re, im) pairs (the same memory, read in place; the reference also accepts f16/bf16 there and casts).
//  - B/C of rank 3 (b, n, l) are accepted as g = 1, like the reference.
//  - the gradient of the last state is an input of the backward (the mamba kernel ignores it).
#pragma once

#include <algorithm>
#include <complex>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ssm/core/backend.hpp"
#include "ssm/core/check.hpp"
#include "ssm/core/dtype.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/selective_scan.hpp"
#include "ssm/cpu/selective_scan_backward.hpp"
#include "ssm/cpu/threads.hpp"
#include "ssm/cpu/transpose.hpp"
#include "ssm/core/params/selective_scan_grad.hpp"
#include "ssm/core/params/selective_scan.hpp"
#include "ssm/reference/selective_scan.hpp"

namespace ssm {

/// The tensors of one selective scan. Input dtype: u's (f32, f64, f16, bf16). Weight dtype: f64 for
/// f64 inputs, f32 otherwise. State dtype: the weight dtype, complex (c64/c128) when A is complex.
struct SelectiveScanInputs {
  TensorView u{};                             // (b, d, l)   f32 | f64 | f16 | bf16
  TensorView delta{};                         // (b, d, l)   same dtype as u
  TensorView A{};                             // (d, n)      weight dtype (real) or its complex type
  TensorView B{};                             // (b, g, n, l) input dtype, or (b, n, l), or fixed (d, n) like A. Complex A:
                                              // variable B in the complex weight dtype, or mamba's interleaved layout:
                                              // weight dtype (b, g, n, 2l) / (b, n, 2l), (re, im) at [.., 2t], [.., 2t + 1]
  TensorView C{};                             // same forms as B
  std::optional<TensorView> D{};              // (d)  weight dtype
  std::optional<TensorView> z{};              // (b, d, l) input dtype
  std::optional<TensorView> delta_bias{};     // (d)  weight dtype
  bool delta_softplus = false;
  std::optional<TensorView> initial_state{};  // (b, d, n) — with cu_seqlens (n_seqs, d, n); state dtype
  std::optional<TensorView> cu_seqlens{};     // (n_seqs + 1) i32 | i64; then b == 1, sequences packed along l
};

struct SelectiveScanOptions {
  /// CPU: reference = the plain loops (the oracle); sequential = threads over (batch row, channel block), forward
  /// and backward; chunked = each sequence split in time over the threads (forward: the associative scan over
  /// chunks; backward: pieces joined by their carried state and gradient); automatic: chunked for few channel blocks
  /// and long sequences. Complex A (CPU): sequential (its one loop, r.path "cpu-scalar-complex", backward
  /// "cpu-per-channel") or reference; chunked is an ssm::Error naming `path`. CUDA tensors run the fused kernels
  /// whatever the path.
  ScanPath path = ScanPath::automatic;
  int num_threads = 0;             // 0: all hardware threads
  bool return_last_state = false;
  index_t chunk_len = 0;           // 0: chosen by the implementation (chunked path; backward recompute chunk)
  /// Forward: also return the state at the end of every 128-step chunk (r.chunk_states), for the backward. The
  /// CPU sequential path of a real-A scan without cu_seqlens saves them; with it, automatic runs that path. Complex
  /// A, cu_seqlens, CUDA tensors, or ScanPath::chunked / reference: an ssm::Error naming `save_chunk_states`.
  bool save_chunk_states = false;
  /// Backward: the forward's r.chunk_states (CPU, real A, no cu_seqlens): the backward restarts its recompute
  /// chunks from them instead of running the recurrence over the sequence once more first. Empty: recomputed.
  TensorView chunk_states{};
};

struct SelectiveScanOutputs {
  Tensor out;         // (b, d, l) input dtype
  Tensor last_state;  // (b, d, n) or (n_seqs, d, n), state dtype; empty unless asked
  Tensor chunk_states;  // (b, d, ceil(l / 128), n) state dtype, ChunkStates' layout: with save_chunk_states; or empty
  std::string path;   // which implementation ran, e.g. "cpu-avx512-sequential", "reference"
};

struct SelectiveScanGrads {  // each has the shape and dtype of its input; empty when the input was absent
  Tensor grad_u, grad_delta, grad_A, grad_B, grad_C, grad_D, grad_z, grad_delta_bias, grad_initial_state;
  std::string path;  // which backward ran: "reference", "cpu-<simd>-channel-blocks", "cpu-per-channel" or "cuda-fused"
};

namespace scan_detail {

/// A validated ScanParams (without out / last_state) plus the data it points into.
struct PreparedScan {
  ScanParams p;
  DType input = DType::f32, weight = DType::f32, state = DType::f32;
  Device device = Device::cpu();
  std::vector<std::int64_t> cu;  // cu_seqlens as i64 (ScanParams points here)
  index_t state_rows = 0;        // b, or n_seqs with cu_seqlens
};

inline DType complex_of(DType w) { return w == DType::f64 ? DType::c128 : DType::c64; }

/// Validates one B or C argument and fills its ScanParams fields. Returns its group count (0: fixed).
inline index_t check_BC(const Checker& c, const char* name, const TensorView& X, const PreparedScan& s, index_t b,
                        index_t d, index_t n, index_t l, bool& variable, const void*& ptr, index_t& batch_stride,
                        index_t& group_stride, index_t& n_stride, index_t& l_stride) {
  c.defined(name, X);
  ptr = X.data();
  if (X.rank() == 2) {
    variable = false;
    c.shape(name, X, {d, n}).dtype(name, X, s.p.is_complex ? complex_of(s.weight) : s.weight);
    batch_stride = 0;
    group_stride = X.stride(0);
    n_stride = X.stride(1);
    return 0;
  }
  c.require(X.rank() == 3 || X.rank() == 4, name, "expected rank 2 (d, n), 3 (b, n, l) or 4 (b, g, n, l), got shape ",
            X.shape().str());
  variable = true;
  // Complex A: a complex tensor (b, g, n, l), or mamba's interleaved layout, a real tensor (b, g, n, 2l) of the weight
  // dtype holding (re, im) of step t at [..., 2t] and [..., 2t + 1]: the same memory, read as complex in place.
  const bool interleaved = s.p.is_complex && !is_complex(X.dtype());
  const int last = X.rank() - 1;
  if (interleaved) {
    const std::string layout = std::string(" (mamba's interleaved layout: a real ") + std::string(::ssm::name(s.weight)) +
                               " tensor (b, g, n, 2l) or (b, n, 2l) with (re, im) of step t at [..., 2t] and [..., 2t + 1])";
    c.require(X.dtype() == s.weight, name, "complex A takes variable ", name, " as ", ::ssm::name(complex_of(s.weight)),
              " (b, g, n, l) or (b, n, l), or in the interleaved layout", layout, "; got dtype ",
              ::ssm::name(X.dtype()), ": convert it to ", ::ssm::name(s.weight), " (PyTorch: .float()",
              s.weight == DType::f64 ? ".double()" : "", ") or to ", ::ssm::name(complex_of(s.weight)));
    c.require(X.size(last) == 2 * l, name, "a real ", name, " with complex A is the interleaved layout", layout,
              ": its last dimension must be 2l = ", 2 * l, ", got shape ", X.shape().str());
    c.unit_stride(name, X, last);
    for (int k = 0; k < last; ++k)
      c.require(X.size(k) <= 1 || X.stride(k) % 2 == 0, name, "in the interleaved layout", layout,
                " needs even strides (whole (re, im) pairs) to be read as complex, got strides ", X.strides().str(),
                " for shape ", X.shape().str(), ": make it contiguous first");
    static_assert(alignof(std::complex<float>) == alignof(float) && alignof(std::complex<double>) == alignof(double));
  } else {
    c.dtype(name, X, s.p.is_complex ? complex_of(s.weight) : s.input);
  }
  // strides in elements of the scan's B / C type (complex pairs for the interleaved layout; a dimension of size 1
  // is never stepped over, whatever its stride)
  const auto stride = [&](int k) { return interleaved ? X.stride(k) / 2 : X.stride(k); };
  const index_t len = interleaved ? 2 * l : l;
  // Any stride along l (channel-last views: the CUDA forward and the reference read it; selective_scan_into copies
  // them channel-major for the CPU kernels), except in mamba's interleaved layout.
  l_stride = interleaved ? 1 : X.stride(last);
  if (X.rank() == 3) {
    c.shape(name, X, {b, n, len});
    batch_stride = stride(0);
    group_stride = 0;
    n_stride = stride(1);
    return 1;
  }
  c.shape(name, X, {b, kAny, n, len});
  const index_t g = X.size(1);
  c.require(g >= 1 && d % g == 0, name, "the number of groups g = ", g, " (dimension 1) must divide d = ", d);
  batch_stride = stride(0);
  group_stride = stride(1);
  n_stride = stride(2);
  return g;
}

inline PreparedScan prepare(const Checker& c, const SelectiveScanInputs& in) {
  PreparedScan s;
  ScanParams& p = s.p;
  c.defined("u", in.u).floating("u", in.u).rank("u", in.u, 3);
  const index_t b = in.u.size(0), d = in.u.size(1), l = in.u.size(2);
  c.defined("A", in.A).rank("A", in.A, 2);
  const index_t n = in.A.size(1);
  c.shape("A", in.A, {d, n}).require(n >= 1, "A", "the state size n (dimension 1) must be >= 1, got shape ",
                                      in.A.shape().str());
  c.require(l >= 1, "u", "the sequence length l (dimension 2) must be >= 1, got shape ", in.u.shape().str());
  s.input = in.u.dtype();
  s.weight = compute_dtype(s.input);
  p.is_complex = is_complex(in.A.dtype());
  c.dtype("A", in.A, p.is_complex ? complex_of(s.weight) : s.weight);
  s.state = p.is_complex ? complex_of(s.weight) : s.weight;

  c.defined("delta", in.delta).same_dtype("delta", in.delta, "u", in.u).shape("delta", in.delta, {b, d, l});

  s.device = dispatch_device(c, {{"u", in.u}, {"delta", in.delta}, {"A", in.A}, {"B", in.B}, {"C", in.C}});
  const auto same_dev = [&](const char* name, const TensorView& t) {
    c.require(t.device() == s.device, name, "is on ", t.device().str(), " but 'u' is on ", s.device.str(),
              " (mixed devices: move the tensors to one device first)");
  };

  const index_t gB = check_BC(c, "B", in.B, s, b, d, n, l, p.variable_B, p.B, p.B_batch_stride, p.B_group_stride,
                              p.B_n_stride, p.B_l_stride);
  const index_t gC = check_BC(c, "C", in.C, s, b, d, n, l, p.variable_C, p.C, p.C_batch_stride, p.C_group_stride,
                              p.C_n_stride, p.C_l_stride);
  if (gB > 0 && gC > 0)
    c.require(gB == gC, "C", "has ", gC, " groups but 'B' has ", gB, " (B and C must share the group count)");
  p.n_groups = std::max<index_t>({gB, gC, 1});

  if (in.D) {
    c.defined("D", *in.D).shape("D", *in.D, {d}).dtype("D", *in.D, s.weight);
    same_dev("D", *in.D);
    p.D = in.D->data();
    c.require(in.D->stride(0) == 1 || d <= 1, "D", "expected stride 1, got strides ", in.D->strides().str());
  }
  if (in.delta_bias) {
    c.defined("delta_bias", *in.delta_bias).shape("delta_bias", *in.delta_bias, {d}).dtype("delta_bias", *in.delta_bias, s.weight);
    same_dev("delta_bias", *in.delta_bias);
    c.require(in.delta_bias->stride(0) == 1 || d <= 1, "delta_bias", "expected stride 1, got strides ",
              in.delta_bias->strides().str());
    p.delta_bias = in.delta_bias->data();
  }
  if (in.z) {
    c.defined("z", *in.z).same_dtype("z", *in.z, "u", in.u).shape("z", *in.z, {b, d, l});
    same_dev("z", *in.z);
    p.z = in.z->data();
    p.z_batch_stride = in.z->stride(0);
    p.z_d_stride = in.z->stride(1);
    p.z_l_stride = in.z->stride(2);
  }

  s.state_rows = b;
  if (in.cu_seqlens) {
    s.cu = c.cu_seqlens("cu_seqlens", *in.cu_seqlens, b, l);
    p.n_seqs = static_cast<index_t>(s.cu.size()) - 1;
    s.state_rows = p.n_seqs;
  }
  if (in.initial_state) {
    const TensorView& h0 = *in.initial_state;
    c.defined("initial_state", h0).shape("initial_state", h0, {s.state_rows, d, n}).dtype("initial_state", h0, s.state);
    same_dev("initial_state", h0);
    p.initial_state = h0.data();
    p.init_batch_stride = h0.stride(0);
    p.init_d_stride = h0.stride(1);
    p.init_n_stride = h0.stride(2);
  }

  p.batch = b;
  p.dim = d;
  p.seqlen = l;
  p.dstate = n;
  p.delta_softplus = in.delta_softplus;
  p.u = in.u.data();
  p.u_batch_stride = in.u.stride(0);
  p.u_d_stride = in.u.stride(1);
  p.u_l_stride = in.u.stride(2);
  p.delta = in.delta.data();
  p.delta_batch_stride = in.delta.stride(0);
  p.delta_d_stride = in.delta.stride(1);
  p.delta_l_stride = in.delta.stride(2);
  p.A = in.A.data();
  p.A_d_stride = in.A.stride(0);
  p.A_n_stride = in.A.stride(1);
  p.cu_seqlens = in.cu_seqlens ? s.cu.data() : nullptr;
  return s;
}

/// Checks out (b, d, l) and the optional last_state (b | n_seqs, d, n) against a prepared scan and points its
/// ScanParams at them.
inline void bind_outputs(const Checker& c, PreparedScan& s, const TensorView& out,
                         const std::optional<TensorView>& last_state) {
  ScanParams& p = s.p;
  c.defined("out", out).shape("out", out, {p.batch, p.dim, p.seqlen}).dtype("out", out, s.input);
  c.require(out.device() == s.device, "out", "is on ", out.device().str(), " but 'u' is on ", s.device.str());
  p.out = out.data();
  p.out_batch_stride = out.stride(0);
  p.out_d_stride = out.stride(1);
  p.out_l_stride = out.stride(2);
  if (last_state) {
    const TensorView& ls = *last_state;
    c.defined("last_state", ls).shape("last_state", ls, {s.state_rows, p.dim, p.dstate}).dtype("last_state", ls, s.state);
    c.unit_stride("last_state", ls, 2);
    c.require(ls.device() == s.device, "last_state", "is on ", ls.device().str(), " but 'u' is on ", s.device.str());
    p.last_state = ls.data();
    p.last_batch_stride = ls.stride(0);
    p.last_d_stride = ls.stride(1);
  }
}

/// The CPU kernels and every backward read their (b, ·, l) operands with unit stride along l: the error naming the
/// first operand that has another (the checks of prepare / bind_outputs leave the stride along l free, for the CUDA
/// forward and the reference).
inline void require_unit_time_stride(const Checker& c, const SelectiveScanInputs& in, const TensorView* out) {
  c.unit_stride("u", in.u, 2).unit_stride("delta", in.delta, 2);
  if (in.z) c.unit_stride("z", *in.z, 2);
  if (in.B.rank() >= 3) c.unit_stride("B", in.B, in.B.rank() - 1);
  if (in.C.rank() >= 3) c.unit_stride("C", in.C, in.C.rank() - 1);
  if (out) c.unit_stride("out", *out, 2);
}

/// cu_seqlens (validated on the host) on s's device for the kernels, p pointed at it; returns the copy (kept until
/// the launches are done: freeing it waits for them) and sets max_seqlen to the longest sequence.
inline Tensor cu_seqlens_on_device(const PreparedScan& s, ScanParams& p, std::int64_t& max_seqlen) {
  if (!p.cu_seqlens) return {};
  Tensor cu_device = Tensor::from_vector({static_cast<index_t>(s.cu.size())}, s.cu).to(s.device);  // (n_seqs + 1)
  p.cu_seqlens = cu_device.data_as<std::int64_t>();
  for (std::size_t i = 1; i < s.cu.size(); ++i) max_seqlen = std::max<std::int64_t>(max_seqlen, s.cu[i] - s.cu[i - 1]);
  return cu_device;
}

/// The fused CUDA forward (ssm::cuda, cuda/kernels/selective_scan_fwd.cuh) on a validated scan. Its own
/// limits (f32 / f16 / bf16 inputs, real A, n <= 256) are ssm::Error from the launcher. cu_seqlens is copied to
/// the device (cu_seqlens_on_device).
inline std::string selective_scan_cuda(const PreparedScan& s, ScanParams p) {
  ::ssm::ScanForwardOptions o;
  o.device = s.device.index;
  const Tensor cu_device = cu_seqlens_on_device(s, p, o.max_seqlen);
  return backend_for("selective_scan", s.device).selective_scan_forward(p, s.input, o);
}

/// f32 values of a device tensor as a new device tensor of `dtype` (f16 / bf16), converted on the device: the
/// backward kernel accumulates variable grad_B / grad_C in f32 whatever the input dtype.
inline Tensor f32_to_dtype_on_device(const Tensor& src, DType dtype, Device device) {
  Tensor out = Tensor::empty(src.shape(), dtype, device);
  backend_for("selective_scan_backward", device)
      .cast_from_f32(src.data_as<float>(), out.data(), dtype, src.numel(), device.index, nullptr);
  return out;
}

/// The fused CUDA backward (ssm::cuda, cuda/kernels/selective_scan_bwd.cuh) on a validated scan: the forward
/// kernel runs once more to save the chunk-boundary states the backward restarts from, then the backward kernel
/// fills the gradients r holds (zeroed device tensors). Variable grad_B / grad_C of f16 / bf16 inputs go through
/// f32 device buffers. Packed sequences (cu_seqlens): one block per channel and sequence in both kernels, the
/// chunks cut for the longest sequence.
inline std::string selective_scan_backward_cuda(const PreparedScan& s, ScanParams p, const ScanGradParams& gp,
                                                SelectiveScanGrads& r) {
  const DeviceBackend& backend = backend_for("selective_scan_backward", s.device);
  std::int64_t max_seqlen = 0;
  const Tensor cu_device = cu_seqlens_on_device(s, p, max_seqlen);
  const std::int64_t chunk_len_for = p.cu_seqlens ? max_seqlen : p.seqlen;
  ChunkStates saved = backend.selective_scan_chunk_states(chunk_len_for);  // the device's chunks; ChunkStates' layout
  Tensor states = Tensor::empty({s.state_rows, p.dim, saved.n_chunks, p.dstate}, DType::f32,
                                s.device);  // (b | n_seqs, d, chunks, n)
  saved.data = states.data();
  Tensor out = Tensor::empty({p.batch, p.dim, p.seqlen}, s.input, s.device);               // (b, d, l) recomputed
  p.out = out.data();
  p.out_batch_stride = out.view().stride(0);
  p.out_d_stride = out.view().stride(1);
  p.out_l_stride = 1;
  p.last_state = nullptr;
  ::ssm::ScanForwardOptions fo;
  fo.device = s.device.index;
  fo.chunk_states = saved;
  fo.max_seqlen = max_seqlen;
  backend.selective_scan_forward(p, s.input, fo);
  ::ssm::ScanDeviceGradParams g;
  g.grad_out = gp.grad_out;
  g.grad_last_state = static_cast<const float*>(gp.grad_last_state);
  g.chunk_states = saved;
  g.max_seqlen = max_seqlen;
  g.grad_u = gp.grad_u;
  g.grad_delta = gp.grad_delta;
  g.grad_z = gp.grad_z;
  g.grad_A = static_cast<float*>(gp.grad_A);
  g.grad_D = static_cast<float*>(gp.grad_D);
  g.grad_delta_bias = static_cast<float*>(gp.grad_delta_bias);
  g.grad_initial_state = static_cast<float*>(gp.grad_initial_state);
  const bool narrow = s.input != DType::f32;
  Tensor gB32, gC32;  // f32 accumulators for variable B / C of f16 / bf16 inputs
  if (narrow && p.variable_B) gB32 = Tensor::zeros(r.grad_B.shape(), DType::f32, s.device);
  if (narrow && p.variable_C) gC32 = Tensor::zeros(r.grad_C.shape(), DType::f32, s.device);
  g.grad_B = gB32.defined() ? gB32.data_as<float>() : static_cast<float*>(gp.grad_B);
  g.grad_C = gC32.defined() ? gC32.data_as<float>() : static_cast<float*>(gp.grad_C);
  backend.selective_scan_backward(p, s.input, g, nullptr);
  if (gB32.defined()) r.grad_B = f32_to_dtype_on_device(gB32, s.input, s.device);
  if (gC32.defined()) r.grad_C = f32_to_dtype_on_device(gC32, s.input, s.device);
  return "cuda-fused";
}

/// Complex A has one CPU scan: the sequential one (threads over batch rows and channels, each sequence in order);
/// there is no chunked (split in time) implementation. A requested ScanPath::chunked is an error, never replaced.
inline void check_complex_path(const Checker& c, const ScanParams& p, ScanPath path) {
  c.require(!p.is_complex || path != ScanPath::chunked, "path",
            "ScanPath::chunked has no complex-A implementation; complex A runs with ScanPath::sequential (or "
            "automatic, which picks it: one loop per batch row and channel) or ScanPath::reference");
}

template <class F>
decltype(auto) visit_input(DType t, F&& f) {
  return visit_floating(t, "selective_scan", std::forward<F>(f));
}

}  // namespace scan_detail

/// A scan's validated argument block, for code that runs one implementation directly (the reference, a CPU kernel,
/// the emulated CUDA kernels: tests and benchmarks): the checks of selective_scan_into, then the ScanParams over
/// in's tensors, out (b, d, l) and the optional last_state (b | n_seqs, d, n), with the dtypes and the device.
/// With cu_seqlens, r.p points into r.cu: keep r (moving it is fine) while r.p is used.
inline scan_detail::PreparedScan scan_params(const SelectiveScanInputs& in, const TensorView& out,
                                             std::optional<TensorView> last_state = std::nullopt) {
  Checker c("selective_scan");
  scan_detail::PreparedScan s = scan_detail::prepare(c, in);
  scan_detail::bind_outputs(c, s, out, last_state);
  return s;
}

namespace scan_detail {

/// Whether X (b, k, l) is a channel-last view (unit stride along k, another along l: a slice of time-major (b, l, ·)
/// memory) that the CPU kernels read through a channel-major copy.
inline bool is_channel_last(const TensorView& X) {
  return X.defined() && X.rank() == 3 && X.size(2) > 1 && X.stride(2) != 1 && (X.size(1) == 1 || X.stride(1) == 1);
}

/// dst (b, k, l) contiguous = src (b, k, l) (channel-last), or the reverse with to_src: threads over (batch, group
/// of cpu::kTransposeChannels channels), each copying tiles (cpu::to_channel_major / to_time_major).
template <class T>
void transpose_operand(const TensorView& src, T* dst, bool to_src, int threads) {
  const index_t b = src.size(0), k = src.size(1), l = src.size(2), ld = src.stride(2);
  const index_t groups = (k + cpu::kTransposeChannels - 1) / cpu::kTransposeChannels;
  T* s = static_cast<T*>(src.data());
  cpu::parallel_for(b * groups, threads, [&](index_t task) {
    const index_t bi = task / groups, c0 = (task % groups) * cpu::kTransposeChannels;
    const index_t c1 = std::min(k, c0 + cpu::kTransposeChannels);
    if (to_src) cpu::to_time_major(dst + bi * k * l, l, ld, s + bi * src.stride(0), c0, c1);
    else cpu::to_channel_major(static_cast<const T*>(s + bi * src.stride(0)), l, ld, dst + bi * k * l, c0, c1);
  });
}

}  // namespace scan_detail

/// Selective scan into caller-provided outputs: out (b, d, l) in the input dtype, unit stride along l;
/// u, delta, z, B / C (b, n, l) and out may instead be channel-last views (unit stride along d or n, e.g. slices of
/// time-major (b, l, ·) activations): on CUDA the forward kernel reads and writes them in place (any stride along
/// l), on the CPU (f32 / f64) the kernels run on channel-major copies;
/// last_state (b | n_seqs, d, n) in the state dtype, unit stride along n (optional). With
/// opt.save_chunk_states and `chunk_states` given, the saved chunk states go there (see SelectiveScanOptions).
/// Returns the name of the implementation that ran.
inline std::string selective_scan_into(const SelectiveScanInputs& in, const TensorView& out,
                                       std::optional<TensorView> last_state, const SelectiveScanOptions& opt = {},
                                       Tensor* chunk_states = nullptr) {
  Checker c("selective_scan");
  if (in.u.defined() && in.u.device().is_cpu() && !in.cu_seqlens &&
      (scan_detail::is_channel_last(in.u) || scan_detail::is_channel_last(in.delta) ||
       scan_detail::is_channel_last(in.B) || scan_detail::is_channel_last(in.C) ||
       (in.z && scan_detail::is_channel_last(*in.z)) || scan_detail::is_channel_last(out))) {
    // Channel-last operands (slices of time-major activations, as the Mamba block passes them): the CPU kernels
    // run on channel-major copies, and out is copied back.
    c.dtype_in("u", in.u, {DType::f32, DType::f64});
    const index_t n = in.A.rank() == 2 ? in.A.size(1) : 1;
    const int threads = cpu::cpu_threads(opt.num_threads, in.u.numel() * n);  // as the scan's own split
    std::vector<Tensor> keep;
    auto channel_major = [&](const TensorView& X) -> TensorView {
      if (!scan_detail::is_channel_last(X)) return X;
      keep.push_back(Tensor::empty(X.shape(), X.dtype()));
      scan_detail::visit_input(X.dtype(), [&](auto tag) {
        using T = decltype(tag);
        if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
          scan_detail::transpose_operand<T>(X, keep.back().data_as<T>(), false, threads);
      });
      return keep.back().view();
    };
    SelectiveScanInputs cm = in;
    cm.u = channel_major(in.u);
    cm.delta = channel_major(in.delta);
    if (in.B.rank() == 3) cm.B = channel_major(in.B);
    if (in.C.rank() == 3) cm.C = channel_major(in.C);
    if (in.z) cm.z = channel_major(*in.z);
    c.defined("out", out).same_dtype("out", out, "u", in.u).rank("out", out, 3);
    const bool out_cl = scan_detail::is_channel_last(out);
    Tensor out_cm = out_cl ? Tensor::empty(out.shape(), out.dtype()) : Tensor();  // (b, d, l)
    const std::string path = selective_scan_into(cm, out_cl ? out_cm.view() : out, last_state, opt, chunk_states);
    if (out_cl)
      scan_detail::visit_input(out.dtype(), [&](auto tag) {
        using T = decltype(tag);
        if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
          scan_detail::transpose_operand<T>(out, out_cm.data_as<T>(), true, threads);
      });
    return path;
  }
  scan_detail::PreparedScan s = scan_detail::prepare(c, in);
  scan_detail::bind_outputs(c, s, out, last_state);
  if (s.device.is_cpu()) scan_detail::require_unit_time_stride(c, in, &out);  // channel-last operands came copied
  ScanParams& p = s.p;
  c.require(opt.num_threads >= 0, "num_threads", "must be >= 0 (0: all hardware threads), got ", opt.num_threads);
  c.require(opt.chunk_len >= 0, "chunk_len", "must be >= 0 (0: automatic), got ", opt.chunk_len);
  scan_detail::check_complex_path(c, p, opt.path);
  if (opt.save_chunk_states) {
    // Saved by the sequential CPU path of a real-A scan without cu_seqlens, the only backward that restarts from
    // them; anything else is an error rather than an empty r.chunk_states.
    c.require(chunk_states != nullptr, "save_chunk_states",
              "selective_scan_into has nowhere to put them: pass its chunk_states argument (a Tensor*), or call "
              "selective_scan");
    c.require(!p.is_complex, "save_chunk_states",
              "complex A saves no chunk states (its backward recomputes the states and takes no chunk_states): "
              "leave save_chunk_states false");
    c.require(p.cu_seqlens == nullptr, "save_chunk_states",
              "packed sequences (cu_seqlens) save no chunk states (their backward recomputes the states): leave "
              "save_chunk_states false");
    c.require(s.device.is_cpu(), "save_chunk_states", "tensors on ", s.device.str(),
              ": the CUDA backward saves its own chunk states; leave save_chunk_states false");
    c.require(opt.path == ScanPath::sequential || opt.path == ScanPath::automatic, "save_chunk_states",
              "only the sequential CPU path saves chunk states: use ScanPath::sequential or ScanPath::automatic "
              "(which then runs sequential), not ",
              opt.path == ScanPath::chunked ? "ScanPath::chunked" : "ScanPath::reference");
  }
  if (p.batch * p.dim == 0) {
    if (opt.save_chunk_states)  // nothing to scan: the states of no channel
      *chunk_states = Tensor::empty({p.batch, p.dim, ChunkStates::count(p.seqlen, kCpuScanChunkLen), p.dstate}, s.state);
    return "empty";
  }
  if (!s.device.is_cpu()) return scan_detail::selective_scan_cuda(s, p);
  return scan_detail::visit_input(s.input, [&](auto tag) -> std::string {
    using In = decltype(tag);
    if (opt.path != ScanPath::reference) {
      cpu::ScanCpuOptions co;
      co.num_threads = opt.num_threads;
      co.chunk_len = opt.chunk_len;
      co.path = opt.path;  // automatic runs sequential when it is to save chunk states
      Tensor saved;  // (b, d, n_chunks, n) state dtype
      if (opt.save_chunk_states) {
        const index_t chunks = ChunkStates::count(p.seqlen, kCpuScanChunkLen);
        saved = Tensor::empty({p.batch, p.dim, chunks, p.dstate}, s.state);
        co.chunk_states = {saved.data(), chunks, kCpuScanChunkLen};
      }
      const cpu::ScanRun ran = cpu::selective_scan_forward<In>(p, co);
      if (saved.defined()) {
        SSM_CHECK(ran.saved_chunk_states, "selective_scan: internal: the path ", ran.name,
                  " did not save the chunk states it was asked for");
        *chunk_states = std::move(saved);
      }
      return ran.name;
    }
    reference::selective_scan_forward<In>(p);
    return "reference";
  });
}

/// Selective scan: out_t = (C_t . h_t + D u_t) * silu(z_t), h_t = exp(Delta_t A) h_{t-1} + Delta_t B_t u_t,
/// Delta_t = softplus(delta_t + delta_bias) (docs/math.md §5.1). Shapes in SelectiveScanInputs; returns out
/// (b, d, l), the last state when opt.return_last_state, and the path that ran.
inline SelectiveScanOutputs selective_scan(const SelectiveScanInputs& in, const SelectiveScanOptions& opt = {}) {
  Checker c("selective_scan");
  const scan_detail::PreparedScan s = scan_detail::prepare(c, in);  // validates before allocating
  SelectiveScanOutputs r;
  r.out = Tensor::empty({s.p.batch, s.p.dim, s.p.seqlen}, s.input, s.device);  // (b, d, l)
  if (opt.return_last_state)
    r.last_state = Tensor::empty({s.state_rows, s.p.dim, s.p.dstate}, s.state, s.device);  // (b | n_seqs, d, n)
  r.path = selective_scan_into(in, r.out, opt.return_last_state ? std::optional<TensorView>(r.last_state.view())
                                                                : std::nullopt,
                               opt, &r.chunk_states);
  return r;
}

/// Gradients of a selective scan for grad_out (b, d, l) (input dtype, unit stride along l) and the
/// optional grad_last_state (b | n_seqs, d, n) (state dtype). ScanPath::reference runs the double
/// reference; any other path the CPU backward that recomputes states chunk by chunk (opt.chunk_len,
/// opt.num_threads). Complex gradients: dL/dRe + i dL/dIm.
inline SelectiveScanGrads selective_scan_backward(const SelectiveScanInputs& in, const TensorView& grad_out,
                                                  std::optional<TensorView> grad_last_state = std::nullopt,
                                                  const SelectiveScanOptions& opt = {}) {
  Checker c("selective_scan_backward");
  const scan_detail::PreparedScan s = scan_detail::prepare(c, in);
  scan_detail::require_unit_time_stride(c, in, nullptr);  // every backward reads unit stride along l
  const ScanParams& p = s.p;
  c.defined("grad_out", grad_out).shape("grad_out", grad_out, {p.batch, p.dim, p.seqlen}).dtype("grad_out", grad_out, s.input);
  c.unit_stride("grad_out", grad_out, 2);
  c.require(grad_out.device() == s.device, "grad_out", "is on ", grad_out.device().str(), " but 'u' is on ", s.device.str());
  c.require(opt.num_threads >= 0, "num_threads", "must be >= 0 (0: all hardware threads), got ", opt.num_threads);
  c.require(opt.chunk_len >= 0, "chunk_len", "must be >= 0 (0: automatic), got ", opt.chunk_len);
  scan_detail::check_complex_path(c, p, opt.path);
  ChunkStates saved_states;
  if (opt.chunk_states.defined() && opt.path != ScanPath::reference) {
    const TensorView& cs = opt.chunk_states;
    c.require(s.device.is_cpu(), "chunk_states", "are taken by the CPU backward only (the CUDA backward saves its own)");
    c.require(!p.is_complex && p.cu_seqlens == nullptr, "chunk_states",
              "apply to a real-A scan without cu_seqlens (the forward saves none otherwise)");
    const index_t chunks = ChunkStates::count(p.seqlen, kCpuScanChunkLen);
    c.shape("chunk_states", cs, {p.batch, p.dim, chunks, p.dstate});
    c.dtype("chunk_states", cs, s.state).contiguous("chunk_states", cs).device("chunk_states", cs, Device::cpu());
    saved_states = {cs.data(), chunks, kCpuScanChunkLen};
  }
  ScanGradParams gp;
  gp.grad_out = grad_out.data();
  gp.grad_out_batch_stride = grad_out.stride(0);
  gp.grad_out_d_stride = grad_out.stride(1);
  if (grad_last_state) {
    const TensorView& gl = *grad_last_state;
    c.defined("grad_last_state", gl).shape("grad_last_state", gl, {s.state_rows, p.dim, p.dstate});
    c.dtype("grad_last_state", gl, s.state);
    c.require(gl.device() == s.device, "grad_last_state", "is on ", gl.device().str(), " but 'u' is on ", s.device.str());
    gp.grad_last_state = gl.data();
    gp.grad_last_batch_stride = gl.stride(0);
    gp.grad_last_d_stride = gl.stride(1);
    gp.grad_last_n_stride = gl.stride(2);
  }
  if (!s.device.is_cpu()) {
    // the backward kernel reads grad_out and grad_last_state as contiguous arrays
    c.contiguous("grad_out", grad_out);
    if (grad_last_state) c.contiguous("grad_last_state", *grad_last_state);
  }

  SelectiveScanGrads r;
  const auto like = [&](const TensorView& t) { return Tensor::zeros(t.shape(), t.dtype(), s.device); };
  r.grad_u = like(in.u);
  r.grad_delta = like(in.delta);
  r.grad_A = like(in.A);
  r.grad_B = like(in.B);
  r.grad_C = like(in.C);
  gp.grad_u = r.grad_u.data();
  gp.grad_delta = r.grad_delta.data();
  gp.grad_A = r.grad_A.data();
  gp.grad_B = r.grad_B.data();
  gp.grad_C = r.grad_C.data();
  if (in.D) gp.grad_D = (r.grad_D = like(*in.D)).data();
  if (in.z) gp.grad_z = (r.grad_z = like(*in.z)).data();
  if (in.delta_bias) gp.grad_delta_bias = (r.grad_delta_bias = like(*in.delta_bias)).data();
  if (in.initial_state) gp.grad_initial_state = (r.grad_initial_state = like(*in.initial_state)).data();
  if (p.batch * p.dim == 0) {
    r.path = "empty";
    return r;
  }
  if (!s.device.is_cpu()) {
    r.path = scan_detail::selective_scan_backward_cuda(s, p, gp, r);
    return r;
  }
  r.path = scan_detail::visit_input(s.input, [&](auto tag) -> std::string {
    using In = decltype(tag);
    if (opt.path == ScanPath::reference) {
      reference::selective_scan_backward<In>(p, gp);
      return "reference";
    }
    cpu::ScanBackwardOptions bo;
    bo.num_threads = opt.num_threads;
    bo.chunk_len = opt.chunk_len;
    bo.chunk_states = saved_states;
    bo.path = opt.path;
    return cpu::selective_scan_backward<In>(p, gp, bo).name;
  });
  return r;
}

/// selective_scan_backward without a grad_last_state: selective_scan_backward(in, grad_out, opt) is
/// selective_scan_backward(in, grad_out, std::nullopt, opt).
inline SelectiveScanGrads selective_scan_backward(const SelectiveScanInputs& in, const TensorView& grad_out,
                                                  const SelectiveScanOptions& opt) {
  return selective_scan_backward(in, grad_out, std::nullopt, opt);
}

}  // namespace ssm
