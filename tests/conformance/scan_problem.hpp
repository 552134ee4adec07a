// The one selective-scan problem generator of the tests and benchmarks: random inputs of every form the op takes
// (real / complex A, fixed / variable B and C, rank-3 B / C, groups, optional D / z / delta_bias / initial state,
// cu_seqlens, every input dtype, strided inputs) as host tensors, and the op's SelectiveScanInputs over them. The
// ScanParams of a problem is never filled by hand: ssm::scan_params builds it from inputs() (ops/selective_scan.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "ssm/core.hpp"
#include "ssm/ops/selective_scan.hpp"
#include "values.hpp"

namespace scan_problem {

using ssm::DType;
using ssm::index_t;
using ssm::Tensor;
using ssm::TensorView;

struct ScanCase {
  index_t b = 1, d = 2, l = 5, n = 2, g = 1;
  bool complex = false;
  bool var_B = true, var_C = true;
  bool rank3_BC = false;  // variable B/C as (b, n, l) (g = 1)
  bool has_D = false, has_z = false, has_bias = false, softplus = false, has_init = false;
  double delta_offset = 0;       // added to every delta: large values give steps where exp(Delta A) << 1
  std::vector<std::int64_t> cu;  // empty: no cu_seqlens
  DType dtype = DType::f64;      // input dtype
  unsigned seed = 1;
  index_t pad = 0;  // > 0: u, delta, z, B, C and initial_state are views with `pad` extra elements per row
  // u, delta, z and variable B, C as channel-last views of time-major memory (b, l, features + pad): unit stride
  // along d (n), the row width along l, as the Mamba block passes them
  bool channel_last = false;

  std::string describe() const {
    return "b=" + std::to_string(b) + " d=" + std::to_string(d) + " l=" + std::to_string(l) + " n=" + std::to_string(n) +
           " g=" + std::to_string(g) + (complex ? " complex" : " real") + (var_B ? " varB" : " fixB") +
           (var_C ? " varC" : " fixC") + (rank3_BC ? " rank3" : "") + (has_D ? " D" : "") + (has_z ? " z" : "") +
           (has_bias ? " bias" : "") + (softplus ? " softplus" : "") + (has_init ? " init" : "") +
           (delta_offset != 0 ? " delta+" + std::to_string(delta_offset) : "") + (cu.empty() ? "" : " cu_seqlens") +
           (pad ? " strided" : "") +
           (channel_last ? " channel-last" : "") + " " + std::string(ssm::name(dtype));
  }
  index_t state_rows() const { return cu.empty() ? b : static_cast<index_t>(cu.size()) - 1; }
};

/// The kernel-level tests' default: b = 2, d = 4, g = 2, n = 16 and every optional input (D, z, delta_bias with
/// softplus, initial state), inputs of `dtype`, l steps.
inline ScanCase kernel_case(index_t l, DType dtype = DType::f32) {
  ScanCase c;
  c.b = 2;
  c.d = 4;
  c.g = 2;
  c.n = 16;
  c.l = l;
  c.has_D = c.has_z = c.has_bias = c.softplus = c.has_init = true;
  c.dtype = dtype;
  c.seed = static_cast<unsigned>(1234 + l);
  return c;
}

inline DType weight_dtype(DType in) { return ssm::compute_dtype(in); }
inline DType complex_dtype(DType w) { return w == DType::f64 ? DType::c128 : DType::c64; }

using conformance::padded_copy;

/// Element i of a contiguous host tensor from a double (complex: re, im).
inline void set(const Tensor& t, index_t i, double re, double im = 0.0) { conformance::set_element(t, i, re, im); }

struct ScanData {
  ScanCase cs;
  // the values, contiguous (with cs.pad the op reads the padded copies below instead)
  Tensor u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens;
  struct Input {
    std::string name;
    Tensor owner;
    TensorView view;
  };
  /// The inputs the op takes, as it sees them: u, delta, A, B, C, then the optional ones present, in this order.
  std::vector<Input> args;

  index_t state_rows() const { return cs.state_rows(); }
  const Input* arg(const std::string& name) const {
    for (const Input& a : args)
      if (a.name == name) return &a;
    return nullptr;
  }
  /// The op's inputs: the members above (a test may replace them), or with cs.pad the strided copies of args.
  ssm::SelectiveScanInputs inputs() const {
    std::vector<TensorView> views;
    for (const Input& a : args) views.push_back(cs.pad > 0 || cs.channel_last ? a.view : member(a.name).view());
    return inputs_from(views);
  }
  const Tensor& member(const std::string& nm) const {
    return nm == "u" ? u : nm == "delta" ? delta : nm == "A" ? A : nm == "B" ? B : nm == "C" ? C : nm == "D" ? D
         : nm == "z" ? z : nm == "delta_bias" ? delta_bias : nm == "initial_state" ? initial_state : cu_seqlens;
  }
  /// The op's inputs over views of the arguments in the order of `args` (e.g. the same arguments on a device).
  ssm::SelectiveScanInputs inputs_from(const std::vector<TensorView>& views) const {
    ssm::SelectiveScanInputs in;
    for (std::size_t i = 0; i < args.size(); ++i) {
      const std::string& nm = args[i].name;
      const TensorView& v = views[i];
      if (nm == "u") in.u = v;
      else if (nm == "delta") in.delta = v;
      else if (nm == "A") in.A = v;
      else if (nm == "B") in.B = v;
      else if (nm == "C") in.C = v;
      else if (nm == "D") in.D = v;
      else if (nm == "z") in.z = v;
      else if (nm == "delta_bias") in.delta_bias = v;
      else if (nm == "initial_state") in.initial_state = v;
      else if (nm == "cu_seqlens") in.cu_seqlens = v;
    }
    in.delta_softplus = cs.softplus;
    return in;
  }
};

/// The problem of a case: values from cs.seed, the same for every dtype up to its rounding.
inline ScanData make_data(const ScanCase& cs) {
  ScanData s;
  s.cs = cs;
  std::mt19937_64 rng(cs.seed);
  const DType in = cs.dtype, w = weight_dtype(in), cw = cs.complex ? complex_dtype(w) : w;
  const auto fill = [&](Tensor& t, const ssm::Dims& shape, DType dt, double lo, double hi, double im_lo = -1,
                        double im_hi = 1) { t = conformance::uniform(rng, shape, dt, lo, hi, im_lo, im_hi); };
  const index_t b = cs.b, d = cs.d, l = cs.l, n = cs.n, g = cs.g;
  fill(s.u, {b, d, l}, in, -1, 1);                                        // (b, d, l)
  const double off = cs.delta_offset;
  if (cs.softplus) fill(s.delta, {b, d, l}, in, -2.5 + off, 0.5 + off);  // softplus(x + bias) in about [0.03, 1]
  else fill(s.delta, {b, d, l}, in, 0.02 + off, 0.5 + off);               // (b, d, l), used as Delta
  fill(s.A, {d, n}, cw, -2.0, -0.3, -3.0, 3.0);                           // (d, n) stable: Re(A) < 0
  const auto fill_BC = [&](Tensor& t, bool variable) {
    if (!variable) fill(t, {d, n}, cw, -1, 1);                               // (d, n)
    else if (cs.rank3_BC) fill(t, {b, n, l}, cs.complex ? cw : in, -1, 1);  // (b, n, l)
    else fill(t, {b, g, n, l}, cs.complex ? cw : in, -1, 1);                // (b, g, n, l)
  };
  fill_BC(s.B, cs.var_B);
  fill_BC(s.C, cs.var_C);
  fill(s.D, {d}, w, -1, 1);          // (d)
  fill(s.z, {b, d, l}, in, -2, 2);   // (b, d, l)
  // (d): with softplus any sign; without it Delta = delta + bias must stay positive (else the state grows)
  if (cs.softplus) fill(s.delta_bias, {d}, w, -1, 0.5);
  else fill(s.delta_bias, {d}, w, 0.0, 0.5);
  const index_t rows = s.state_rows();
  fill(s.initial_state, {rows, d, n}, cs.complex ? cw : w, -1, 1);  // (b | n_seqs, d, n)
  if (!cs.cu.empty()) s.cu_seqlens = Tensor::from_vector<std::int64_t>({static_cast<index_t>(cs.cu.size())}, cs.cu);

  const auto add = [&](const char* name, const Tensor& t, bool strided, bool time_major = false) {
    ScanData::Input a{name, t, t.view()};
    if (time_major && cs.channel_last) a.view = conformance::time_major_copy(t, cs.pad, a.owner);
    else if (strided && cs.pad > 0) a.view = padded_copy(t, cs.pad, a.owner);
    s.args.push_back(a);
  };
  add("u", s.u, true, true);
  add("delta", s.delta, true, true);
  add("A", s.A, false);
  add("B", s.B, cs.var_B, cs.var_B);
  add("C", s.C, cs.var_C, cs.var_C);
  if (cs.has_D) add("D", s.D, false);
  if (cs.has_z) add("z", s.z, true, true);
  if (cs.has_bias) add("delta_bias", s.delta_bias, false);
  if (cs.has_init) add("initial_state", s.initial_state, true);
  if (!cs.cu.empty()) add("cu_seqlens", s.cu_seqlens, false);
  return s;
}


/// A problem with its outputs on a device (the host by default), and the ScanParams ssm::scan_params builds over
/// them, its checks included: for code that runs one implementation directly (a kernel, a device's launcher). With
/// packed sequences on a device, the ScanParams' cu_seqlens points at a device copy (the op validates them on the
/// host and copies them the same way).
struct Scan {
  ScanData s;
  std::vector<Tensor> inputs;  // the problem's inputs moved to the device (none on the host)
  Tensor out, last, cu;        // out (b, d, l) input dtype and last (rows, d, n) state dtype, NaN; cu_seqlens
  ssm::scan_detail::PreparedScan prepared;
};

inline Scan make_scan(const ScanCase& c, ssm::Device device = ssm::Device::cpu()) {
  Scan r;
  r.s = make_data(c);
  std::vector<TensorView> views;  // the op's inputs in the order of r.s.args
  for (const ScanData::Input& a : r.s.args) {
    if (device.is_cpu() || a.name == "cu_seqlens") {
      views.push_back(a.view);
      continue;
    }
    // the whole storage moves, so a strided view keeps its offset and strides
    r.inputs.push_back(a.owner.to(device));
    const std::ptrdiff_t offset = static_cast<const char*>(a.view.data()) - static_cast<const char*>(a.owner.data());
    views.emplace_back(static_cast<char*>(r.inputs.back().data()) + offset, a.view.dtype(), device, a.view.shape(),
                       a.view.strides());
  }
  const DType state = c.complex ? complex_dtype(weight_dtype(c.dtype)) : weight_dtype(c.dtype);
  // NaN until written, so an element an implementation skips fails the comparison
  const auto nan_tensor = [&](const ssm::Dims& shape, DType dt) {
    Tensor t = Tensor::empty(shape, dt);
    std::memset(t.data(), 0xff, t.nbytes());
    return device.is_cpu() ? t : t.to(device);
  };
  r.out = nan_tensor({c.b, c.d, c.l}, c.dtype);             // (b, d, l)
  r.last = nan_tensor({r.s.state_rows(), c.d, c.n}, state);  // (rows, d, n)
  r.prepared = ssm::scan_params(r.s.inputs_from(views), r.out, r.last.view());
  if (!c.cu.empty() && !device.is_cpu()) {
    r.cu = Tensor::from_vector<std::int64_t>({static_cast<index_t>(c.cu.size())}, c.cu).to(device);
    r.prepared.p.cu_seqlens = r.cu.data_as<std::int64_t>();
  }
  return r;
}

/// The buffers of a backward kernel's run on a real-A f32 problem, on `device`: grad_out (b, d, l) and grad_last_state
/// (b, d, n) uniform in [-1, 1) from `seed` (also kept on the host, for the reference); the gradients written element
/// by element (u, delta, z, initial state) start as NaN, those accumulated (A, B, C, D, delta_bias) as zero, as the op
/// hands them to the kernel.
struct KernelGrads {
  Tensor grad_out, grad_last;                // host
  Tensor grad_out_dev, grad_last_dev;        // on the device
  Tensor u, delta, z, A, B, C, D, delta_bias, initial_state;  // on the device

  /// The kernel's gradient block over these buffers and the forward's saved chunk states (b, d, n_chunks, n) of
  /// chunk_len steps each.
  ssm::ScanDeviceGradParams params(const Tensor& chunk_states, index_t n_chunks, index_t chunk_len) const {
    ssm::ScanDeviceGradParams gp;
    gp.grad_out = grad_out_dev.data();
    gp.grad_last_state = grad_last_dev.data_as<float>();
    gp.chunk_states = {chunk_states.data_as<float>(), n_chunks, chunk_len};
    gp.grad_u = u.data();
    gp.grad_delta = delta.data();
    gp.grad_z = z.data();
    gp.grad_A = A.data_as<float>();
    gp.grad_B = B.data_as<float>();
    gp.grad_C = C.data_as<float>();
    gp.grad_D = D.data_as<float>();
    gp.grad_delta_bias = delta_bias.data_as<float>();
    gp.grad_initial_state = initial_state.data_as<float>();
    return gp;
  }

  /// max |got - ref| / max |ref| of each gradient against the reference backward of `s` (its sums over tokens and
  /// channels make a bound relative to the largest entry the meaningful one); z only when the problem has z.
  std::vector<std::pair<std::string, double>> errors_against_reference(const ScanData& s) const {
    ssm::SelectiveScanOptions opt;
    opt.path = ssm::ScanPath::reference;
    const ssm::SelectiveScanGrads ref = ssm::selective_scan_backward(s.inputs(), grad_out, grad_last.view(), opt);
    std::vector<std::pair<std::string, double>> r;
    const auto add = [&](const char* name, const Tensor& got, const Tensor& want) {
      r.emplace_back(name, conformance::normalized_error(conformance::to_doubles(got.to(ssm::Device::cpu())),
                                                         conformance::to_doubles(want)));
    };
    add("grad_u", u, ref.grad_u);
    add("grad_delta", delta, ref.grad_delta);
    if (s.cs.has_z) add("grad_z", z, ref.grad_z);
    add("grad_A", A, ref.grad_A);
    add("grad_B", B, ref.grad_B);
    add("grad_C", C, ref.grad_C);
    add("grad_D", D, ref.grad_D);
    add("grad_delta_bias", delta_bias, ref.grad_delta_bias);
    add("grad_initial_state", initial_state, ref.grad_initial_state);
    return r;
  }
};

inline KernelGrads make_kernel_grads(const ScanCase& c, ssm::Device device, unsigned seed = 99) {
  SSM_CHECK(c.dtype == DType::f32 && !c.complex && c.cu.empty(), "scan_problem::make_kernel_grads: a real-A f32 problem "
            "without cu_seqlens (what the backward kernel takes)");
  const index_t b = c.b, d = c.d, l = c.l, n = c.n, g = c.g;
  std::mt19937_64 rng(seed);
  KernelGrads k;
  k.grad_out = conformance::uniform(rng, {b, d, l}, DType::f32, -1, 1);
  k.grad_last = conformance::uniform(rng, {b, d, n}, DType::f32, -1, 1);
  const auto place = [&](Tensor t) { return device.is_cpu() ? t : t.to(device); };
  const auto filled = [&](const ssm::Dims& shape, int byte) {
    Tensor t = Tensor::empty(shape, DType::f32);
    std::memset(t.data(), byte, t.nbytes());  // 0xff: NaN; 0: zero
    return place(t);
  };
  k.grad_out_dev = place(k.grad_out);
  k.grad_last_dev = place(k.grad_last);
  k.u = filled({b, d, l}, 0xff);
  k.delta = filled({b, d, l}, 0xff);
  k.z = filled({b, d, l}, 0xff);
  k.initial_state = filled({b, d, n}, 0xff);
  k.A = filled({d, n}, 0);
  k.B = filled(c.var_B ? ssm::Dims{b, g, n, l} : ssm::Dims{d, n}, 0);
  k.C = filled(c.var_C ? ssm::Dims{b, g, n, l} : ssm::Dims{d, n}, 0);
  k.D = filled({d}, 0);
  k.delta_bias = filled({d}, 0);
  return k;
}

/// The reference forward (ScanPath::reference: every sum in double) of a problem: out (b, d, l) and the last state
/// (rows, d, n).
inline ssm::SelectiveScanOutputs reference_forward(const ScanData& s) {
  ssm::SelectiveScanOptions opt;
  opt.path = ssm::ScanPath::reference;
  opt.return_last_state = true;
  return ssm::selective_scan(s.inputs(), opt);
}

/// The reference's state after each chunk of `chunk_len` steps of every sequence (the last chunk of a sequence ends
/// at its last step): (rows, d, n_chunks_max, n) as doubles, the layout of ChunkStates; the chunks a shorter
/// sequence does not have are NaN. Each is the last state of the reference run on that prefix of the sequence, so
/// it is independent of how any implementation carries states between chunks. Real A.
inline std::vector<double> reference_chunk_states(const ScanData& s, index_t chunk_len, index_t n_chunks_max) {
  const ScanCase& cs = s.cs;
  SSM_CHECK(!cs.complex && chunk_len >= 1, "scan_problem::reference_chunk_states: real A and chunk_len >= 1");
  const index_t rows = s.state_rows(), d = cs.d, n = cs.n;
  std::vector<double> states(static_cast<std::size_t>(rows * d * n_chunks_max * n), NAN);
  const ssm::SelectiveScanInputs all = s.inputs();
  for (index_t q = 0; q < rows; ++q) {
    const index_t start = cs.cu.empty() ? 0 : cs.cu[static_cast<std::size_t>(q)];
    const index_t len = cs.cu.empty() ? cs.l : cs.cu[static_cast<std::size_t>(q + 1)] - start;
    const index_t bq = cs.cu.empty() ? q : 0;  // the batch row holding sequence q
    for (index_t k = 0; k * chunk_len < len && k < n_chunks_max; ++k) {
      const index_t steps = std::min(len, (k + 1) * chunk_len);
      // sequence q's first `steps` steps: batch row bq, time [start, start + steps), its initial state row
      const auto prefix = [&](const TensorView& v) { return v.narrow(0, bq, 1).narrow(v.rank() - 1, start, steps); };
      ssm::SelectiveScanInputs in = all;
      in.cu_seqlens.reset();
      in.u = prefix(all.u);
      in.delta = prefix(all.delta);
      if (cs.var_B) in.B = prefix(all.B);
      if (cs.var_C) in.C = prefix(all.C);
      if (all.z) in.z = prefix(*all.z);
      if (all.initial_state) in.initial_state = all.initial_state->narrow(0, q, 1);
      ssm::SelectiveScanOptions opt;
      opt.path = ssm::ScanPath::reference;
      opt.return_last_state = true;
      const std::vector<double> h = conformance::to_doubles(ssm::selective_scan(in, opt).last_state);  // (1, d, n)
      for (index_t c = 0; c < d; ++c)
        for (index_t j = 0; j < n; ++j)
          states[static_cast<std::size_t>(((q * d + c) * n_chunks_max + k) * n + j)] =
              h[static_cast<std::size_t>(c * n + j)];
    }
  }
  return states;
}

}  // namespace scan_problem
