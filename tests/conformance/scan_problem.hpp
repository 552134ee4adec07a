// The one selective-scan problem generator of the tests and benchmarks: random inputs of every form the op takes
// (real / complex A, fixed / variable B and C, rank-3 B / C, groups, optional D / z / delta_bias / initial state,
// cu_seqlens, every input dtype, strided inputs) as host tensors, and the op's SelectiveScanInputs over them. The
// ScanParams of a problem is never filled by hand: ssm::scan_params builds it from inputs() (ops/selective_scan.hpp).
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <random>
#include <string>
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

  std::string describe() const {
    return "b=" + std::to_string(b) + " d=" + std::to_string(d) + " l=" + std::to_string(l) + " n=" + std::to_string(n) +
           " g=" + std::to_string(g) + (complex ? " complex" : " real") + (var_B ? " varB" : " fixB") +
           (var_C ? " varC" : " fixC") + (rank3_BC ? " rank3" : "") + (has_D ? " D" : "") + (has_z ? " z" : "") +
           (has_bias ? " bias" : "") + (softplus ? " softplus" : "") + (has_init ? " init" : "") +
           (delta_offset != 0 ? " delta+" + std::to_string(delta_offset) : "") + (cu.empty() ? "" : " cu_seqlens") +
           (pad ? " strided" : "") + " " + std::string(ssm::name(dtype));
  }
  index_t state_rows() const { return cu.empty() ? b : static_cast<index_t>(cu.size()) - 1; }
};

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
    for (const Input& a : args) views.push_back(cs.pad > 0 ? a.view : member(a.name).view());
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
  const auto uni = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
  const DType in = cs.dtype, w = weight_dtype(in), cw = cs.complex ? complex_dtype(w) : w;
  const auto fill = [&](Tensor& t, const ssm::Dims& shape, DType dt, double lo, double hi, double im_lo = -1,
                        double im_hi = 1) {
    t = Tensor::empty(shape, dt);
    for (index_t i = 0; i < t.numel(); ++i) {
      const double re = uni(lo, hi);
      set(t, i, re, ssm::is_complex(dt) ? uni(im_lo, im_hi) : 0.0);
    }
  };
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

  const auto add = [&](const char* name, const Tensor& t, bool strided) {
    ScanData::Input a{name, t, t.view()};
    if (strided && cs.pad > 0) a.view = padded_copy(t, cs.pad, a.owner);
    s.args.push_back(a);
  };
  add("u", s.u, true);
  add("delta", s.delta, true);
  add("A", s.A, false);
  add("B", s.B, cs.var_B);
  add("C", s.C, cs.var_C);
  if (cs.has_D) add("D", s.D, false);
  if (cs.has_z) add("z", s.z, true);
  if (cs.has_bias) add("delta_bias", s.delta_bias, false);
  if (cs.has_init) add("initial_state", s.initial_state, true);
  if (!cs.cu.empty()) add("cu_seqlens", s.cu_seqlens, false);
  return s;
}

}  // namespace scan_problem
