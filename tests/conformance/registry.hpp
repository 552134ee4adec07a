// The conformance registry (issue #14 item 5; after ggml's test-backend-ops): every op registers once, in a file
// of its own under tests/conformance/ops/, its case generator, its reference and its tolerance per dtype; one test
// (test_conformance.cpp) runs every registered op, forward and backward, on every backend of backends() and
// compares each output with the reference.
//
// - A backend is {name, device, option tweak}: a line in backends(). Its tweak sets what the op should run (a CPU
//   path, threads, the emulated CUDA kernels); an op that has no such path skips that backend with a message.
// - Every output buffer the harness hands an op is a GuardedBuffer: guard bands before and after it, and the gaps a
//   strided output leaves between its elements, hold a byte pattern that must be untouched after the op; the
//   elements themselves start as NaN (so an element the op did not write fails the comparison), or as zero for
//   outputs an op accumulates into.
// - Outputs an op allocates itself (its allocating form is the only one) are "adopted": compared, not guarded.
// - On a CPU backend every pass runs twice: the second time every input and output sits kShift bytes past a 64-byte
//   boundary, and each output must equal the first run's bit for bit. A result may depend on the machine, never on
//   where the caller's buffers happen to sit (an alignment-peeled vector reduction sums in another order).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <any>
#include <cmath>
#include <complex>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "ssm/core.hpp"
#include "values.hpp"

namespace conformance {

using ssm::Device;
using ssm::Dims;
using ssm::DType;
using ssm::index_t;
using ssm::Tensor;
using ssm::TensorView;

// ---- backends ----------------------------------------------------------------------------------------------

/// What a backend asks of an op. An op maps `path` to its own option (ScanPath, AttentionAlgorithm, ...).
struct RunConfig {
  Device device = Device::cpu();
  std::string path;       // a CPU implementation ("reference", "sequential", "chunked", "loops", "tiled", ...)
  bool emulated = false;  // install the emulated CUDA backend (cuda/emu/backend.hpp) for the run
  int threads = 0;        // CPU threads (0: the op's default)
  index_t chunk_len = 0;  // the chunked scan's chunk (0: balanced over the threads)
  int block = 0;          // tiled attention: block_q = block_k (0: the op's default)
};

struct Backend {
  std::string name;
  Device device;
  std::function<void(RunConfig&)> tweak;
};

/// Every backend, one line each. CPU paths take 2 or 3 threads so that the threaded and chunked code really splits
/// (3 threads on a sequence: 3 chunks); the tiled attention takes blocks of 16 so that the small cases have
/// several query and key blocks with ragged tails. "cuda_emulated" runs the ops on Device::cuda(0) with the emulated CUDA
/// backend installed (the kernel sources under the host emulation, through the same launchers as ssm::cuda, in a
/// random thread order); "cuda" needs a GPU and a build linked to ssm::cuda (this program is not: see CMakeLists).
inline const std::vector<Backend>& backends() {
  static const std::vector<Backend> list = {
      {"cpu_reference", Device::cpu(), [](RunConfig& r) { r.path = "reference"; }},
      {"cpu_sequential", Device::cpu(), [](RunConfig& r) { r.path = "sequential"; r.threads = 2; }},
      {"cpu_chunked", Device::cpu(), [](RunConfig& r) { r.path = "chunked"; r.threads = 3; }},
      {"cpu_loops", Device::cpu(), [](RunConfig& r) { r.path = "loops"; }},
      {"cpu_materialized", Device::cpu(), [](RunConfig& r) { r.path = "materialized"; r.threads = 2; }},
      {"cpu_tiled", Device::cpu(), [](RunConfig& r) { r.path = "tiled"; r.threads = 3; r.block = 16; }},
      {"cpu_fast", Device::cpu(), [](RunConfig& r) { r.path = "fast"; r.threads = 2; }},  // ops with one fast path
      {"cuda_emulated", Device::cuda(0), [](RunConfig& r) { r.emulated = true; }},
      {"cuda", Device::cuda(0), [](RunConfig&) {}},
  };
  return list;
}

// ---- cases -------------------------------------------------------------------------------------------------

/// One input: `view` is what the op sees (a window with strides of its own, or all of `owner`).
struct Arg {
  std::string name;
  Tensor owner;
  TensorView view;
  bool host = false;  // stays on the CPU whatever the backend (an op validates its values there, e.g. cu_seqlens)
};

/// One output the harness allocates: its shape, dtype and strides (empty: contiguous).
struct OutSpec {
  std::string name;
  Dims shape;
  DType dtype = DType::f32;
  Dims strides{};
  bool zeroed = false;  // starts at zero (the op accumulates into it) rather than NaN
};

struct Case {
  std::string name;
  std::vector<Arg> inputs;      // forward inputs, then the backward's incoming gradients
  std::vector<OutSpec> outputs;  // forward
  std::vector<OutSpec> grads;    // backward (empty: the case has no backward)
  std::any params;               // the op's own description of the case
  int input(const std::string& n) const {
    for (std::size_t i = 0; i < inputs.size(); ++i)
      if (inputs[i].name == n) return static_cast<int>(i);
    return -1;
  }
};

using Views = std::vector<TensorView>;

/// The view of a case's input `name` among an op's input views, or an undefined view when the case has none.
inline TensorView named(const Case& c, const Views& in, const std::string& name) {
  const int i = c.input(name);
  return i >= 0 ? in[static_cast<std::size_t>(i)] : TensorView();
}

/// An optional input of an op from a view that may be undefined (absent).
inline std::optional<TensorView> optional_view(const TensorView& v) {
  return v.defined() ? std::optional<TensorView>(v) : std::nullopt;
}

/// The outputs an op writes: guarded views it must write into, or tensors it allocated itself (adopt).
struct Outputs {
  Views views;
  std::vector<Tensor> adopted;  // by output index; undefined where the op wrote into views[i]
  void adopt(std::size_t i, Tensor t) {
    if (adopted.size() < views.size()) adopted.resize(views.size());
    adopted[i] = std::move(t);
  }
};

enum class Pass { forward, backward };
inline const char* name(Pass p) { return p == Pass::forward ? "forward" : "backward"; }

/// An op's registration. The `run` functions get the inputs on the backend's device and write the outputs; the
/// `reference` ones get host inputs and write contiguous host outputs of the OutSpecs' shapes and dtypes.
struct Op {
  std::string name;
  std::vector<std::string> paths;  // the RunConfig::path values it has
  bool emulated = false;           // has CUDA kernels (cuda_emulated, cuda)
  std::function<std::vector<Case>()> cases;
  /// Why this case cannot run on this backend in this pass (dtype, feature); empty: it runs.
  std::function<std::string(const Case&, const RunConfig&, Pass)> unsupported;
  std::function<void(const Case&, const Views& in, Outputs& out, const RunConfig&)> forward, backward;
  std::function<void(const Case&, const Views& in, const Views& out)> forward_reference, backward_reference;
  /// Bound on max |got - ref| / max |ref| of one output tensor, by that output's dtype.
  std::function<double(DType out_dtype, Pass)> tolerance;
  /// The bound on a device (CUDA, emulated or not) when it differs from the CPU paths'; unset: `tolerance`.
  std::function<double(DType out_dtype, Pass)> device_tolerance = nullptr;
};

inline std::vector<Op>& ops() {
  static std::vector<Op> list;
  return list;
}

/// `static const conformance::Register reg{Op{...}};` in an op's file registers it.
struct Register {
  explicit Register(Op op) { ops().push_back(std::move(op)); }
};

// ---- helpers for case generators (uniform values: values.hpp) ------------------------------------------------

/// An input whose view has rows `pad` elements apart beyond their length (values.hpp: padded_copy).
inline Arg strided_arg(const std::string& name, const Tensor& dense, index_t pad) {
  Arg a{name, Tensor(), TensorView()};
  a.view = padded_copy(dense, pad, a.owner);
  return a;
}

inline Arg dense_arg(const std::string& name, const Tensor& t) { return {name, t, t.view()}; }

// ---- helpers for registrations ------------------------------------------------------------------------------

/// The tolerance of a chunked recurrence (SSD, linear attention, the delta rule) against its token loop in double.
/// Forward: f64 1e-12, f32 1e-5, the bound for sums of up to a chunk of products against a double loop. f16 / bf16
/// outputs: the inputs are the same 16-bit values for both, so one rounding of the output, about 2^-11 and 2^-8 of
/// max |out|, with room: 1e-3, 8e-3. Backward: the chunked sums reassociate the loop's over up to l steps: 1e-10
/// (f64) and 1e-4 (f32); 16-bit gradients once more one rounding of their type.
inline double chunked_recurrence_tolerance(DType dt, Pass pass) {
  const bool fwd = pass == Pass::forward;
  switch (dt) {
    case DType::f64: return fwd ? 1e-12 : 1e-10;
    case DType::f16: return 1e-3;
    case DType::bf16: return 8e-3;
    default: return fwd ? 1e-5 : 1e-4;
  }
}

/// A backward reference for an op whose own backward has a "reference" path (a token loop in double): runs `backward`
/// on that path and copies the gradients it allocated into the contiguous reference outputs.
template <class Backward>
void backward_on_reference_path(const Backward& backward, const Case& c, const Views& in, const Views& out) {
  Outputs o;
  o.views = out;
  RunConfig ref;
  ref.path = "reference";
  backward(c, in, o, ref);
  for (std::size_t i = 0; i < out.size(); ++i) ssm::copy(out[i], o.adopted[i]);
}

// ---- helpers for the chunked recurrences (SSD, linear attention, the delta rule) -------------------------------

/// A chunked recurrence's case: the problem's shape, the chunk size and the chunked path's threads (Case::params).
template <class Shape>
struct ChunkedCase {
  Shape shape;
  index_t chunk = 0;
  int threads = 1;
};

template <class Shape>
const ChunkedCase<Shape>& chunked_case(const Case& c) {
  return *std::any_cast<ChunkedCase<Shape>>(&c.params);
}

/// Why a case of a chunked recurrence with CUDA kernels (SSD, linear attention, the delta rule) does not run on a CUDA
/// backend, for the reasons all of them share; empty: it may run. f64: the kernels compute in f32. Under ASan + UBSan,
/// the emulation's second chunk size of each shape (the cases with 2 threads): the emulation was the longest test of
/// the sanitized stage (ssd__cuda_emulated: 768 s of its 1122 s at two tests at a time), and memory errors do not
/// depend on the chunk size beyond what the first of each shape covers (single steps, partial tiles, ragged tails);
/// the Release run takes both.
template <class Shape>
std::string chunked_cuda_unsupported(const ChunkedCase<Shape>& k, const RunConfig& cfg) {
  if (cfg.device.is_cuda() && k.shape.dtype == DType::f64) return "f64 on CUDA (the kernels compute in f32)";
#ifdef SSM_SANITIZED
  if (cfg.emulated && k.threads == 2) return "the second chunk size of each shape under the sanitizers";
#endif
  return {};
}

/// Adds `shape` once per chunk size, alternating 1 and 2 threads.
template <class Shape>
void add_chunks(std::vector<ChunkedCase<Shape>>& list, const Shape& shape, const std::vector<index_t>& chunks) {
  int k = 0;
  for (index_t q : chunks) list.push_back({shape, q, 1 + (k++ % 2)});
}

/// Every listed shape in f64, f32, f16 and bf16: make(ChunkedCase with its dtype set) builds the Case (its params are
/// then set to that ChunkedCase).
template <class Shape, class Make>
std::vector<Case> chunked_cases(const std::vector<ChunkedCase<Shape>>& list, const Make& make) {
  std::vector<Case> cases;
  for (const ChunkedCase<Shape>& cc : list)
    for (DType dt : {DType::f64, DType::f32, DType::f16, DType::bf16}) {
      ChunkedCase<Shape> k = cc;
      k.shape.dtype = dt;
      Case c = make(k);
      c.name += " chunk=" + std::to_string(k.chunk) + " threads=" + std::to_string(k.threads);
      c.params = k;
      cases.push_back(std::move(c));
    }
  return cases;
}

/// An input the op reads through `view`, whose storage is `dense` or, for a strided view, `padded` (a generator's
/// padded copy). cu_seqlens stays on the host.
inline void add_input(Case& c, const char* name, bool strided, const Tensor& dense, const Tensor& padded,
                      const TensorView& view) {
  c.inputs.push_back({name, strided ? padded : dense, view});
  if (std::string(name) == "cu_seqlens") c.inputs.back().host = true;
}

/// A contiguous gradient output "grad_<name>" shaped like each of the named inputs the case has.
inline void add_input_grads(Case& c, const std::vector<std::string>& names) {
  for (const std::string& nm : names)
    if (const int i = c.input(nm); i >= 0) {
      const TensorView& v = c.inputs[static_cast<std::size_t>(i)].view;
      c.grads.push_back({"grad_" + nm, v.shape(), v.dtype()});
    }
}

/// The op's path for a backend: Path::reference, Path::recurrent (cpu_sequential) or Path::chunked (the rest).
template <class Path>
Path recurrence_path(const RunConfig& cfg) {
  return cfg.path == "reference" ? Path::reference : cfg.path == "sequential" ? Path::recurrent : Path::chunked;
}

/// The path name the op reports for that backend.
inline std::string recurrence_path_name(const RunConfig& cfg) {
  return cfg.device.is_cuda()          ? "cuda"
         : cfg.path == "reference"     ? "reference"
         : cfg.path == "sequential"    ? "cpu-recurrent"
                                       : "cpu-chunked";
}

/// Threads: the case's own on the chunked path (1 or 2, so that both split), the backend's elsewhere.
inline int recurrence_threads(int case_threads, const RunConfig& cfg) {
  return cfg.path == "chunked" ? case_threads : cfg.threads;
}

// ---- guarded output buffers --------------------------------------------------------------------------------

/// An output view inside a larger byte buffer: kGuard bytes before and after, and the gaps of a strided view, hold
/// a pattern checked after the op.
class GuardedBuffer {
 public:
  static constexpr std::size_t kGuard = 256;  // bytes; keeps the view 64-byte aligned (with shift 0)

  /// The view starts kGuard + shift bytes into the buffer (shift: a multiple of the element type's alignment).
  GuardedBuffer(const OutSpec& spec, Device device, std::size_t shift = 0)
      : spec_(spec), device_(device), lead_(kGuard + shift) {
    const Dims strides = spec.strides.size() ? spec.strides : ssm::contiguous_strides(spec.shape);
    es_ = ssm::size_of(spec.dtype);
    index_t span = spec.shape.product() > 0 ? 1 : 0;
    for (int k = 0; k < spec.shape.size(); ++k)
      if (spec.shape.product() > 0) span += (spec.shape[k] - 1) * strides[k];
    const std::size_t bytes = lead_ + kGuard + static_cast<std::size_t>(span) * es_;
    covered_.assign(static_cast<std::size_t>(span), 0);
    for_each_offset(spec.shape, strides, [&](index_t off) { covered_[static_cast<std::size_t>(off)] = 1; });
    initial_.resize(bytes);
    for (std::size_t i = 0; i < bytes; ++i) initial_[i] = pattern(i);
    for (std::size_t e = 0; e < covered_.size(); ++e)
      if (covered_[e]) std::memset(initial_.data() + lead_ + e * es_, spec.zeroed ? 0x00 : 0xff, es_);
    Tensor host = Tensor::empty({static_cast<index_t>(bytes)}, DType::u8);
    std::memcpy(host.data(), initial_.data(), bytes);
    raw_ = device.is_cpu() ? host : host.to(device);
    view_ = TensorView(static_cast<char*>(raw_.data()) + lead_, spec.dtype, device, spec.shape, strides);
  }

  const TensorView& view() const { return view_; }

  /// The bytes as they are now, on the host.
  Tensor host_bytes() const { return device_.is_cpu() ? raw_ : raw_.to(Device::cpu()); }

  /// The view over a host copy of the bytes (for reading the values).
  TensorView host_view(const Tensor& bytes) const {
    return TensorView(static_cast<char*>(bytes.data()) + lead_, view_.dtype(), Device::cpu(), view_.shape(),
                      view_.strides());
  }

  /// Empty when every guard byte and gap byte still holds its pattern; else where the first change is.
  std::string check_untouched(const Tensor& bytes) const {
    const auto* now = static_cast<const unsigned char*>(bytes.data());
    const std::size_t total = initial_.size(), body_end = lead_ + covered_.size() * es_;
    for (std::size_t i = 0; i < total; ++i) {
      if (i >= lead_ && i < body_end && covered_[(i - lead_) / es_]) continue;
      if (now[i] == initial_[i]) continue;
      if (i < lead_) return spec_.name + ": a write before the buffer (byte " + std::to_string(lead_ - i) + " before it)";
      if (i >= body_end) return spec_.name + ": a write past the end (byte " + std::to_string(i - body_end) + " after it)";
      return spec_.name + ": written in a gap of the strided output (element offset " +
             std::to_string((i - lead_) / es_) + ", strides " + view_.strides().str() + ")";
    }
    return {};
  }

  template <class F>
  static void for_each_offset(const Dims& shape, const Dims& strides, F&& f) {
    if (shape.product() == 0) return;
    std::vector<index_t> idx(static_cast<std::size_t>(shape.size()), 0);
    for (index_t e = 0; e < shape.product(); ++e) {
      index_t off = 0;
      for (int k = 0; k < shape.size(); ++k) off += idx[static_cast<std::size_t>(k)] * strides[k];
      f(off);
      for (int k = shape.size() - 1; k >= 0; --k) {
        if (++idx[static_cast<std::size_t>(k)] < shape[k]) break;
        idx[static_cast<std::size_t>(k)] = 0;
      }
    }
  }

 private:
  static unsigned char pattern(std::size_t i) { return static_cast<unsigned char>(0x5a ^ (i * 0x3d)); }

  OutSpec spec_;
  Device device_;
  std::size_t lead_;  // bytes before the view: the guard and the shift
  std::size_t es_ = 1;
  std::vector<unsigned char> covered_;  // per element of the span: 1 where the view has an element
  std::vector<unsigned char> initial_;
  Tensor raw_;
  TensorView view_;
};

// ---- the run of one op on one backend -------------------------------------------------------------------------

/// A host input on the backend's device, with the view's offset and strides kept.
inline TensorView on_device(const Arg& a, Device device, std::vector<Tensor>& keep) {
  if (device.is_cpu()) return a.view;
  Tensor moved = a.owner.to(device);
  keep.push_back(moved);
  const std::ptrdiff_t offset = static_cast<const char*>(a.view.data()) - static_cast<const char*>(a.owner.data());
  return TensorView(static_cast<char*>(moved.data()) + offset, a.view.dtype(), device, a.view.shape(), a.view.strides());
}

/// The second run's shift: every buffer moves 8 bytes (every element type keeps its alignment, at most 8 bytes), so
/// each view's address changes modulo 16, 32 and 64.
inline constexpr std::size_t kShift = 8;

/// A host input copied kShift bytes past the start of a fresh (64-byte aligned) buffer, the view's offset and strides
/// kept (an undefined view stays undefined).
inline TensorView shifted(const Arg& a, std::vector<Tensor>& keep) {
  if (!a.view.defined()) return a.view;
  const Tensor& owner = a.owner;
  SSM_CHECK(owner.defined() && owner.device().is_cpu(), "conformance: input ", a.name, " has no host owner");
  Tensor raw = Tensor::empty({static_cast<index_t>(owner.nbytes() + kShift)}, DType::u8);
  char* base = static_cast<char*>(raw.data()) + kShift;
  if (owner.nbytes() > 0) std::memcpy(base, owner.data(), owner.nbytes());
  keep.push_back(raw);
  const std::ptrdiff_t offset = static_cast<const char*>(a.view.data()) - static_cast<const char*>(owner.data());
  return TensorView(base + offset, a.view.dtype(), Device::cpu(), a.view.shape(), a.view.strides());
}

struct PassResult {
  bool ran = false;
  std::string skipped;  // why not, when !ran
};

/// Runs one pass of one case on the backend, its inputs and outputs `shift` bytes past a 64-byte boundary (0 or
/// kShift; kShift on the CPU only), and returns every output on the host, after checking that the op wrote nothing
/// outside them; own[i] says whether the op allocated output i itself.
inline std::vector<Tensor> run_backend(const Op& op, const Case& c, const RunConfig& cfg, Pass pass,
                                       std::size_t shift, std::vector<bool>& own) {
  const std::vector<OutSpec>& specs = pass == Pass::forward ? c.outputs : c.grads;
  std::vector<Tensor> keep;
  Views dev_in;
  for (const Arg& a : c.inputs)
    dev_in.push_back(shift ? shifted(a, keep) : on_device(a, a.host ? Device::cpu() : cfg.device, keep));
  std::vector<GuardedBuffer> guarded;
  Outputs out;
  for (const OutSpec& s : specs) guarded.emplace_back(s, cfg.device, shift);
  for (const GuardedBuffer& g : guarded) out.views.push_back(g.view());
  (pass == Pass::forward ? op.forward : op.backward)(c, dev_in, out, cfg);
  std::vector<Tensor> got;
  own.assign(specs.size(), false);
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const Tensor bytes = guarded[i].host_bytes();
    const std::string touched = guarded[i].check_untouched(bytes);
    EXPECT_TRUE(touched.empty()) << touched << (shift ? " (the run at a shifted address)" : "");
    if (i < out.adopted.size() && out.adopted[i].defined()) {
      got.push_back(out.adopted[i].to(Device::cpu()));
      own[i] = true;
    } else {
      Tensor t = Tensor::empty(specs[i].shape, specs[i].dtype);
      ssm::copy(t.view(), guarded[i].host_view(bytes));
      got.push_back(std::move(t));
    }
  }
  return got;
}

/// Runs one pass of one case and checks it: guards untouched, every output within its tolerance of the reference; on
/// the CPU, the same bits again with every buffer moved off its alignment.
inline PassResult run_pass(const Op& op, const Case& c, const RunConfig& cfg, Pass pass) {
  if (std::string why = op.unsupported ? op.unsupported(c, cfg, pass) : std::string(); !why.empty()) return {false, why};
  const std::vector<OutSpec>& specs = pass == Pass::forward ? c.outputs : c.grads;
  SCOPED_TRACE(std::string(name(pass)) + " of case " + c.name);
  // the reference, on the host, into contiguous outputs
  Views host_in;
  for (const Arg& a : c.inputs) host_in.push_back(a.view);
  std::vector<Tensor> ref_t;
  Views ref_v;
  for (const OutSpec& s : specs) {
    ref_t.push_back(Tensor::zeros(s.shape, s.dtype));
    ref_v.push_back(ref_t.back().view());
  }
  (pass == Pass::forward ? op.forward_reference : op.backward_reference)(c, host_in, ref_v);
  std::vector<bool> own;
  const std::vector<Tensor> got = run_backend(op, c, cfg, pass, 0, own);
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const double err = normalized_error(to_doubles(got[i].view()), to_doubles(ref_v[i]));
    const double tol = !cfg.device.is_cpu() && op.device_tolerance ? op.device_tolerance(specs[i].dtype, pass)
                                                                   : op.tolerance(specs[i].dtype, pass);
    EXPECT_LE(err, tol) << specs[i].name << " (" << ssm::name(specs[i].dtype) << ", " << got[i].shape().str()
                        << (own[i] ? ", allocated by the op" : "") << "): normalized error against the reference";
  }
  if (!cfg.device.is_cpu()) return {true, {}};
  const std::vector<Tensor> again = run_backend(op, c, cfg, pass, kShift, own);
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const std::vector<double> a = to_doubles(got[i].view()), b = to_doubles(again[i].view());
    EXPECT_EQ(a.size(), b.size()) << specs[i].name << ": a different size at a shifted address";
    if (a.size() != b.size()) continue;
    std::size_t k = 0;
    while (k < a.size() && std::memcmp(&a[k], &b[k], sizeof(double)) == 0) ++k;
    EXPECT_EQ(k, a.size()) << specs[i].name << " (" << ssm::name(specs[i].dtype) << "): element " << k
                           << " differs when the buffers sit " << kShift << " bytes past a 64-byte boundary: "
                           << (k < a.size() ? a[k] : 0.0) << " against " << (k < b.size() ? b[k] : 0.0);
  }
  return {true, {}};
}

}  // namespace conformance
