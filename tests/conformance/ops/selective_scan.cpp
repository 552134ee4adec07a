// Conformance registration of the selective scan (ops/selective_scan.hpp): cases from the one scan problem generator
// (scan_problem.hpp), the reference of include/ssm/reference/selective_scan.hpp, tolerances per dtype.
#include <memory>
#include <string>
#include <vector>

#include "../registry.hpp"
#include "../scan_problem.hpp"
#include "ssm/ops/selective_scan.hpp"
#include "ssm/reference/selective_scan.hpp"

namespace conformance {
namespace {

using scan_problem::ScanCase;
using scan_problem::ScanData;

struct ScanCaseData {
  std::shared_ptr<const ScanData> data;
  std::size_t n_args = 0;        // inputs [0, n_args) are the scan's; then grad_out and maybe grad_last_state
  bool last_state = true;        // the forward returns the last state
  bool grad_last_state = false;  // the backward has an incoming gradient of the last state
};

const ScanCaseData& scan_of(const Case& c) { return *std::any_cast<ScanCaseData>(&c.params); }

ssm::SelectiveScanInputs scan_inputs(const Case& c, const Views& in) {
  const ScanCaseData& s = scan_of(c);
  return s.data->inputs_from(Views(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(s.n_args)));
}

/// The cases: each shape in every input dtype it takes (complex A: f32 / f64, the complex state).
std::vector<Case> scan_cases() {
  struct Shape {
    ScanCase c;
    bool last_state = true, grad_last = true, narrow = true;  // narrow: also f16 / bf16
    index_t out_pad = 0;                                      // > 0: out (b, d, l) rows out_pad apart beyond l
    bool out_channel_last = false;                            // out a channel-last view (rows d + out_pad wide)
  };
  std::vector<Shape> shapes;
  {  // every size 1, every optional input present
    Shape s;
    s.c.b = 1, s.c.d = 1, s.c.l = 1, s.c.n = 1, s.c.g = 1;
    s.c.has_D = s.c.has_z = s.c.has_bias = s.c.softplus = s.c.has_init = true;
    shapes.push_back(s);
  }
  {  // odd sizes (d not a multiple of any SIMD width), groups, strided inputs and a strided output
    Shape s;
    s.c.b = 2, s.c.d = 19, s.c.l = 37, s.c.n = 5, s.c.g = 1;
    s.c.has_D = s.c.has_z = s.c.has_bias = s.c.softplus = s.c.has_init = true;
    s.c.pad = 3;
    s.out_pad = 5;
    shapes.push_back(s);
  }
  {  // two groups, fixed C, no D, no last state out
    Shape s;
    s.c.b = 2, s.c.d = 18, s.c.l = 130, s.c.n = 16, s.c.g = 2;
    s.c.var_C = false;
    s.c.has_z = s.c.has_bias = s.c.softplus = s.c.has_init = true;
    s.last_state = false;
    shapes.push_back(s);
  }
  {  // every optional input absent, rank-3 B / C, no gradient of the last state
    Shape s;
    s.c.b = 2, s.c.d = 4, s.c.l = 40, s.c.n = 3;
    s.c.rank3_BC = true;
    s.grad_last = false;
    shapes.push_back(s);
  }
  {  // long: two kernel chunks of 2048, several CPU chunks; large Delta (exp(Delta A) << 1)
    Shape s;
    s.c.b = 1, s.c.d = 3, s.c.l = 2100, s.c.n = 4;
    s.c.has_D = s.c.has_z = s.c.softplus = true;
    s.c.delta_offset = 3;
    s.narrow = false;
    shapes.push_back(s);
  }
  {  // channel-last operands and output (slices of time-major activations, as the Mamba block passes them): rows of
     // features + 3 (out: d + 2) elements, rank-3 B / C; forward only (every backward takes channel-major operands)
    Shape s;
    s.c.b = 2, s.c.d = 19, s.c.l = 150, s.c.n = 5;
    s.c.rank3_BC = true;
    s.c.has_D = s.c.has_z = s.c.has_bias = s.c.softplus = s.c.has_init = true;
    s.c.channel_last = true;
    s.c.pad = 3;
    s.out_pad = 2;
    s.out_channel_last = true;
    shapes.push_back(s);
  }
  {  // channel-last with groups (b, g, n, l), one step, and packed sequences over channel-last memory
    Shape s;
    s.c.b = 1, s.c.d = 8, s.c.l = 300, s.c.n = 4, s.c.g = 2;
    s.c.cu = {0, 1, 130, 300};
    s.c.has_z = s.c.softplus = true;
    s.c.channel_last = true;
    s.c.pad = 1;
    shapes.push_back(s);
  }
  {  // packed sequences: a one-token one, ragged lengths
    Shape s;
    s.c.b = 1, s.c.d = 4, s.c.l = 300, s.c.n = 8;
    s.c.cu = {0, 1, 130, 300};
    s.c.has_z = s.c.has_bias = s.c.softplus = s.c.has_init = true;
    shapes.push_back(s);
  }
  {  // complex A (CPU only), variable B, fixed C
    Shape s;
    s.c.b = 2, s.c.d = 3, s.c.l = 45, s.c.n = 4;
    s.c.complex = true;
    s.c.var_C = false;
    s.c.has_D = s.c.has_z = s.c.softplus = s.c.has_init = true;
    s.narrow = false;
    shapes.push_back(s);
  }
  std::vector<Case> cases;
  unsigned seed = 1;
  for (const Shape& sh : shapes) {
    std::vector<DType> dtypes = {DType::f64, DType::f32};
    if (sh.narrow) dtypes.insert(dtypes.end(), {DType::f16, DType::bf16});
    for (DType dt : dtypes) {
      ScanCase sc = sh.c;
      sc.dtype = dt;
      sc.seed = seed++;
      auto data = std::make_shared<ScanData>(scan_problem::make_data(sc));
      Case c;
      c.name = sc.describe() + (sh.out_channel_last ? " channel-last-out" : sh.out_pad ? " strided-out" : "") +
               (sh.last_state ? "" : " no-last-state");
      for (const ScanData::Input& a : data->args) c.inputs.push_back({a.name, a.owner, a.view, a.name == "cu_seqlens"});
      ScanCaseData p;
      p.data = data;
      p.n_args = c.inputs.size();
      p.last_state = sh.last_state;
      const DType w = scan_problem::weight_dtype(dt), state = sc.complex ? scan_problem::complex_dtype(w) : w;
      const index_t b = sc.b, d = sc.d, l = sc.l, n = sc.n, rows = sc.state_rows();
      std::mt19937_64 rng(sc.seed + 1000);
      c.inputs.push_back(dense_arg("grad_out", uniform(rng, {b, d, l}, dt, -1, 1)));  // (b, d, l)
      if (sh.grad_last) {
        c.inputs.push_back(dense_arg("grad_last_state", uniform(rng, {rows, d, n}, state, -1, 1)));  // (rows, d, n)
        p.grad_last_state = true;
      }
      OutSpec out{"out", {b, d, l}, dt};  // (b, d, l)
      if (sh.out_channel_last) out.strides = {l * (d + sh.out_pad), 1, d + sh.out_pad};
      else if (sh.out_pad) out.strides = {d * (l + sh.out_pad), l + sh.out_pad, 1};
      c.outputs.push_back(out);
      if (sh.last_state) c.outputs.push_back({"last_state", {rows, d, n}, state});  // (rows, d, n)
      // gradients: contiguous, each like its input; accumulated ones start at zero
      for (const ScanData::Input& a : data->args) {
        if (a.name == "cu_seqlens" || sc.channel_last) continue;  // channel-last: forward only
        c.grads.push_back({"grad_" + a.name, a.view.shape(), a.view.dtype(), {}, true});
      }
      c.params = p;
      cases.push_back(std::move(c));
    }
  }
  return cases;
}

/// The output views by name (absent: undefined).
TensorView output(const Case& c, const std::vector<OutSpec>& specs, const Views& views, const std::string& name) {
  (void)c;
  for (std::size_t i = 0; i < specs.size(); ++i)
    if (specs[i].name == name) return views[i];
  return {};
}

ssm::ScanPath scan_path(const std::string& path) {
  if (path == "reference") return ssm::ScanPath::reference;
  if (path == "chunked") return ssm::ScanPath::chunked;
  return ssm::ScanPath::sequential;
}

void scan_forward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  const ssm::SelectiveScanInputs si = scan_inputs(c, in);
  const TensorView o = output(c, c.outputs, out.views, "out");
  const std::optional<TensorView> last = optional_view(output(c, c.outputs, out.views, "last_state"));
  ssm::SelectiveScanOptions opt;
  opt.path = scan_path(cfg.path);
  opt.num_threads = cfg.threads;
  opt.chunk_len = cfg.chunk_len;
  const std::string path = ssm::selective_scan_into(si, o, last, opt);
  if (cfg.device.is_cpu() && cfg.path != "reference") {  // the path asked for ran (complex A: its one CPU loop)
    EXPECT_NE(path.find(scan_of(c).data->cs.complex ? "complex" : cfg.path), std::string::npos) << path;
  }
}

void scan_forward_reference(const Case& c, const Views& in, const Views& out) {
  const ssm::SelectiveScanInputs si = scan_inputs(c, in);
  const TensorView last = output(c, c.outputs, out, "last_state");
  const ssm::scan_detail::PreparedScan s = ssm::scan_params(si, output(c, c.outputs, out, "out"), optional_view(last));
  ssm::scan_detail::visit_input(s.input, [&](auto zero) { ssm::reference::selective_scan_forward<decltype(zero)>(s.p); });
}

std::optional<TensorView> grad_last_of(const Case& c, const Views& in) {
  const int i = c.input("grad_last_state");
  return i >= 0 ? std::optional<TensorView>(in[static_cast<std::size_t>(i)]) : std::nullopt;
}

/// The op's backward: its allocating form, the outputs adopted (compared, not guarded).
void scan_backward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  const ssm::SelectiveScanInputs si = scan_inputs(c, in);
  const TensorView grad_out = in[static_cast<std::size_t>(c.input("grad_out"))];
  ssm::SelectiveScanOptions opt;
  opt.path = scan_path(cfg.path);
  opt.num_threads = cfg.threads;
  opt.chunk_len = cfg.chunk_len;
  ssm::SelectiveScanGrads r = ssm::selective_scan_backward(si, grad_out, grad_last_of(c, in), opt);
  for (std::size_t i = 0; i < c.grads.size(); ++i) {
    const std::string& n = c.grads[i].name;
    Tensor* t = n == "grad_u" ? &r.grad_u : n == "grad_delta" ? &r.grad_delta : n == "grad_A" ? &r.grad_A
              : n == "grad_B" ? &r.grad_B : n == "grad_C" ? &r.grad_C : n == "grad_D" ? &r.grad_D
              : n == "grad_z" ? &r.grad_z : n == "grad_delta_bias" ? &r.grad_delta_bias : &r.grad_initial_state;
    out.adopt(i, *t);
  }
}

/// The reference backward (reference::selective_scan_backward through the op's ScanPath::reference, which runs
/// nothing else), copied into the harness's outputs.
void scan_backward_reference(const Case& c, const Views& in, const Views& out) {
  Outputs o;
  o.views = out;
  RunConfig ref;
  ref.path = "reference";
  scan_backward(c, in, o, ref);
  for (std::size_t i = 0; i < out.size(); ++i) ssm::copy(out[i], o.adopted[i]);
}

std::string scan_unsupported(const Case& c, const RunConfig& cfg, Pass pass) {
  const ScanCase& sc = scan_of(c).data->cs;
  if (cfg.path == "reference" && pass == Pass::backward)
    return "the backward on ScanPath::reference is the oracle itself";
  if (cfg.path == "chunked" && sc.complex) return "complex A has no chunked path";
  if (sc.channel_last && cfg.device.is_cpu() && (sc.dtype == DType::f16 || sc.dtype == DType::bf16))
    return "channel-last operands on the CPU: f32 / f64 (its channel-major copies)";
  if (sc.channel_last && cfg.device.is_cpu() && !sc.cu.empty())
    return "channel-last operands on the CPU: not with cu_seqlens (copied channel-major only without)";
  if (cfg.emulated || cfg.device.is_cuda()) {
    if (sc.complex) return "complex A has no CUDA kernel";
    if (sc.dtype == DType::f64) return "f64 inputs have no CUDA kernel";
  }
  return {};
}

/// Normalized error bounds (max |got - ref| / max |ref| over one output), by the output's dtype.
/// Forward: f64 the same arithmetic in another order (1e-12); f32 (and the c64 state) the exp2 polynomial and f32
/// sums over decays of up to a few hundred steps (a few 1e-7 seen; 1e-5, the bound); f16 / bf16 outputs are
/// rounded to their type, so one ulp of it: 2^-10 (1.5e-3 with the f32 part) and 2^-7 (1.2e-2).
/// Backward: sums over up to l tokens and atomics in any order on CUDA: 1e-10 (f64) and 1e-4 (f32, the CUDA
/// kernel's bound); f16 / bf16 gradients once more one ulp of their type.
double scan_tolerance(DType dt, Pass pass) {
  const bool fwd = pass == Pass::forward;
  switch (dt) {
    case DType::f64:
    case DType::c128: return fwd ? 1e-12 : 1e-10;
    case DType::f16: return 1.5e-3;
    case DType::bf16: return 1.2e-2;
    default: return fwd ? 1e-5 : 1e-4;
  }
}

const Register reg{Op{"selective_scan", {"reference", "sequential", "chunked"}, true, scan_cases, scan_unsupported,
                      scan_forward, scan_backward, scan_forward_reference, scan_backward_reference, scan_tolerance}};

}  // namespace
}  // namespace conformance
