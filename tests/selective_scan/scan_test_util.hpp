// Test helpers for the selective scan: random inputs of every form (real/complex A, fixed/variable B
// and C, groups, optional D/z/delta_bias/initial state, cu_seqlens) and a normalized error metric.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "ssm/core.hpp"
#include "ssm/ops/selective_scan.hpp"

namespace scan_test {

using ssm::DType;
using ssm::index_t;
using ssm::Tensor;

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
};

inline DType weight_dtype(DType in) { return in == DType::f64 ? DType::f64 : DType::f32; }
inline DType complex_dtype(DType w) { return w == DType::f64 ? DType::c128 : DType::c64; }

/// Writes a double into element i of a contiguous tensor of a real dtype, or (re, im) of a complex one.
inline void set(const Tensor& t, index_t i, double re, double im = 0.0) {
  switch (t.dtype()) {
    case DType::f32: t.view().data_as<float>()[i] = static_cast<float>(re); break;
    case DType::f64: t.view().data_as<double>()[i] = re; break;
    case DType::f16: t.view().data_as<ssm::half>()[i] = ssm::half(static_cast<float>(re)); break;
    case DType::bf16: t.view().data_as<ssm::bfloat16>()[i] = ssm::bfloat16(static_cast<float>(re)); break;
    case DType::c64: t.view().data_as<std::complex<float>>()[i] = {static_cast<float>(re), static_cast<float>(im)}; break;
    case DType::c128: t.view().data_as<std::complex<double>>()[i] = {re, im}; break;
    case DType::i64: t.view().data_as<std::int64_t>()[i] = static_cast<std::int64_t>(re); break;
    case DType::i32: t.view().data_as<std::int32_t>()[i] = static_cast<std::int32_t>(re); break;
    default: FAIL() << "unsupported dtype";
  }
}

/// All elements as doubles (complex: re, im interleaved), in row-major order of the shape.
inline std::vector<double> values(const ssm::TensorView& v) {
  Tensor t = Tensor::empty(v.shape(), v.dtype());
  ssm::copy(t, v);
  std::vector<double> r;
  const index_t m = t.numel();
  for (index_t i = 0; i < m; ++i) {
    switch (t.dtype()) {
      case DType::f32: r.push_back(t.view().data_as<float>()[i]); break;
      case DType::f64: r.push_back(t.view().data_as<double>()[i]); break;
      case DType::f16: r.push_back(static_cast<float>(t.view().data_as<ssm::half>()[i])); break;
      case DType::bf16: r.push_back(static_cast<float>(t.view().data_as<ssm::bfloat16>()[i])); break;
      case DType::c64: {
        auto z = t.view().data_as<std::complex<float>>()[i];
        r.push_back(z.real());
        r.push_back(z.imag());
        break;
      }
      case DType::c128: {
        auto z = t.view().data_as<std::complex<double>>()[i];
        r.push_back(z.real());
        r.push_back(z.imag());
        break;
      }
      default: ADD_FAILURE() << "unsupported dtype"; return r;
    }
  }
  return r;
}

/// max |x - ref| / max |ref|: the error relative to the tensor's scale (an elementwise ratio is
/// meaningless where ref crosses zero).
inline double rel_err(const ssm::TensorView& x, const ssm::TensorView& ref) {
  const std::vector<double> a = values(x), r = values(ref);
  EXPECT_EQ(a.size(), r.size());
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < std::min(a.size(), r.size()); ++i) {
    if (std::isnan(a[i]) != std::isnan(r[i])) return INFINITY;
    num = std::max(num, std::abs(a[i] - r[i]));
    den = std::max(den, std::abs(r[i]));
  }
  return den > 0 ? num / den : num;
}

struct ScanData {
  ScanCase cs;
  Tensor u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens;

  index_t state_rows() const { return cs.cu.empty() ? cs.b : static_cast<index_t>(cs.cu.size()) - 1; }
  ssm::SelectiveScanInputs inputs() const {
    ssm::SelectiveScanInputs in;
    in.u = u;
    in.delta = delta;
    in.A = A;
    in.B = B;
    in.C = C;
    if (cs.has_D) in.D = D.view();
    if (cs.has_z) in.z = z.view();
    if (cs.has_bias) in.delta_bias = delta_bias.view();
    in.delta_softplus = cs.softplus;
    if (cs.has_init) in.initial_state = initial_state.view();
    if (!cs.cu.empty()) in.cu_seqlens = cu_seqlens.view();
    return in;
  }
};

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
  fill(s.u, {b, d, l}, in, -1, 1);
  const double off = cs.delta_offset;
  if (cs.softplus) fill(s.delta, {b, d, l}, in, -2.5 + off, 0.5 + off);  // softplus(x + bias) in about [0.03, 1]
  else fill(s.delta, {b, d, l}, in, 0.02 + off, 0.5 + off);
  fill(s.A, {d, n}, cw, -2.0, -0.3, -3.0, 3.0);  // stable: Re(A) < 0
  const auto fill_BC = [&](Tensor& t, bool variable) {
    if (!variable) fill(t, {d, n}, cw, -1, 1);
    else if (cs.rank3_BC) fill(t, {b, n, l}, cs.complex ? cw : in, -1, 1);
    else fill(t, {b, g, n, l}, cs.complex ? cw : in, -1, 1);
  };
  fill_BC(s.B, cs.var_B);
  fill_BC(s.C, cs.var_C);
  fill(s.D, {d}, w, -1, 1);
  fill(s.z, {b, d, l}, in, -2, 2);
  fill(s.delta_bias, {d}, w, -1, 0.5);
  const index_t rows = s.state_rows();
  fill(s.initial_state, {rows, d, n}, cs.complex ? cw : w, -1, 1);
  if (!cs.cu.empty()) s.cu_seqlens = Tensor::from_vector<std::int64_t>({static_cast<index_t>(cs.cu.size())}, cs.cu);
  return s;
}

/// Forward through the op with a given path; returns (out, last_state).
inline ssm::SelectiveScanOutputs run(const ScanData& s, ssm::ScanPath path, int threads = 0, index_t chunk_len = 0) {
  ssm::SelectiveScanOptions o;
  o.path = path;
  o.num_threads = threads;
  o.chunk_len = chunk_len;
  o.return_last_state = true;
  return ssm::selective_scan(s.inputs(), o);
}

inline std::string describe(const ScanCase& c) {
  return "b=" + std::to_string(c.b) + " d=" + std::to_string(c.d) + " l=" + std::to_string(c.l) +
         " n=" + std::to_string(c.n) + " g=" + std::to_string(c.g) + (c.complex ? " complex" : " real") +
         (c.var_B ? " varB" : " fixB") + (c.var_C ? " varC" : " fixC") + (c.rank3_BC ? " rank3" : "") +
         (c.has_D ? " D" : "") + (c.has_z ? " z" : "") + (c.has_bias ? " bias" : "") + (c.softplus ? " softplus" : "") +
         (c.has_init ? " init" : "") + (c.delta_offset != 0 ? " delta+" + std::to_string(c.delta_offset) : "") + (c.cu.empty() ? "" : " cu_seqlens") + " " + std::string(ssm::name(c.dtype));
}

}  // namespace scan_test
