// Tests of the selective-scan forward (Mamba S6, docs/math.md §5.1): the reference against closed forms and
// an independent unrolled re-derivation; every op path against the reference on awkward shapes;
// chunked = sequential, split-in-two = one call, packed varlen = separate calls; f16/bf16; errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <complex>
#include <cstdint>
#include <string>
#include <vector>

#include "scan_test_util.hpp"
#include "support/expect_error.hpp"

namespace {

using ssm_test::expect_error;

using namespace scan_test;
using ssm::ScanPath;
using ssm::SelectiveScanInputs;
using cd = std::complex<double>;

// ---------------------------------------------------------------------------------------------------
// Closed forms, n = 1.

TEST(SelectiveScanReference, ClosedFormRealN1) {
  // A = -1, Delta = 0.5 (no softplus), B = 2, C = 3, D = 0.5, u = (1, 2, 3):
  //   h0 = 0.5*2*1 = 1,            out0 = 3*1 + 0.5*1
  //   h1 = e^-0.5 h0 + 0.5*2*2,    out1 = 3 h1 + 0.5*2
  //   h2 = e^-0.5 h1 + 0.5*2*3,    out2 = 3 h2 + 0.5*3
  Tensor u = Tensor::from_vector<double>({1, 1, 3}, {1, 2, 3});
  Tensor delta = Tensor::from_vector<double>({1, 1, 3}, {0.5, 0.5, 0.5});
  Tensor A = Tensor::from_vector<double>({1, 1}, {-1});
  Tensor B = Tensor::from_vector<double>({1, 1}, {2});
  Tensor C = Tensor::from_vector<double>({1, 1}, {3});
  Tensor D = Tensor::from_vector<double>({1}, {0.5});
  SelectiveScanInputs in;
  in.u = u;
  in.delta = delta;
  in.A = A;
  in.B = B;
  in.C = C;
  in.D = D.view();
  ssm::SelectiveScanOptions o;
  o.return_last_state = true;
  for (ScanPath path : {ScanPath::reference, ScanPath::automatic}) {
    o.path = path;
    auto r = ssm::selective_scan(in, o);
    const double e = std::exp(-0.5), h0 = 1, h1 = e * h0 + 2, h2 = e * h1 + 3;
    const auto out = r.out.to_vector<double>();
    EXPECT_NEAR(out[0], 3 * h0 + 0.5, 1e-14);
    EXPECT_NEAR(out[1], 3 * h1 + 1.0, 1e-14);
    EXPECT_NEAR(out[2], 3 * h2 + 1.5, 1e-14);
    EXPECT_NEAR(r.last_state.to_vector<double>()[0], h2, 1e-14);
  }
}

TEST(SelectiveScanReference, ClosedFormSoftplusBiasGateInitialState) {
  // delta = (-0.3, 25), delta_bias = 0.3: Delta0 = softplus(0) = ln 2, Delta1 = 25.3 (x > 20: identity).
  // A = -0.1, B_t = (1, 2), C_t = (-1, 0.5) (variable, b = g = n = 1), u = (2, -1), h_{-1} = 4, z = (1, -2).
  Tensor u = Tensor::from_vector<double>({1, 1, 2}, {2, -1});
  Tensor delta = Tensor::from_vector<double>({1, 1, 2}, {-0.3, 25});
  Tensor A = Tensor::from_vector<double>({1, 1}, {-0.1});
  Tensor B = Tensor::from_vector<double>({1, 1, 1, 2}, {1, 2});
  Tensor C = Tensor::from_vector<double>({1, 1, 1, 2}, {-1, 0.5});
  Tensor bias = Tensor::from_vector<double>({1}, {0.3});
  Tensor z = Tensor::from_vector<double>({1, 1, 2}, {1, -2});
  Tensor h_init = Tensor::from_vector<double>({1, 1, 1}, {4});
  SelectiveScanInputs in;
  in.u = u;
  in.delta = delta;
  in.A = A;
  in.B = B;
  in.C = C;
  in.delta_bias = bias.view();
  in.delta_softplus = true;
  in.z = z.view();
  in.initial_state = h_init.view();
  ssm::SelectiveScanOptions o;
  o.return_last_state = true;
  o.path = ScanPath::reference;
  auto r = ssm::selective_scan(in, o);
  const double D0 = std::log(2.0), D1 = 25.3;
  const double h0 = std::exp(-0.1 * D0) * 4 + D0 * 1 * 2;
  const double h1 = std::exp(-0.1 * D1) * h0 + D1 * 2 * -1;
  const auto silu = [](double x) { return x / (1 + std::exp(-x)); };
  const auto out = r.out.to_vector<double>();
  EXPECT_NEAR(out[0], -1 * h0 * silu(1), 1e-14);
  EXPECT_NEAR(out[1], 0.5 * h1 * silu(-2), 1e-13);
  EXPECT_NEAR(r.last_state.to_vector<double>()[0], h1, 1e-13);
}

TEST(SelectiveScanReference, ClosedFormComplexN1) {
  // l = 2, A = -0.5 + 2i, Delta = 0.25, B = 1 - i (fixed), C = 0.5 + 0.25i (fixed), u = (1, 3):
  //   h0 = Delta B u0, h1 = exp(Delta A) h0 + Delta B u1, out_t = 2 Re(C h_t) (the conjugate pair).
  Tensor u = Tensor::from_vector<double>({1, 1, 2}, {1, 3});
  Tensor delta = Tensor::from_vector<double>({1, 1, 2}, {0.25, 0.25});
  Tensor A = Tensor::from_vector<cd>({1, 1}, {cd(-0.5, 2)});
  Tensor B = Tensor::from_vector<cd>({1, 1}, {cd(1, -1)});
  Tensor C = Tensor::from_vector<cd>({1, 1}, {cd(0.5, 0.25)});
  SelectiveScanInputs in;
  in.u = u;
  in.delta = delta;
  in.A = A;
  in.B = B;
  in.C = C;
  ssm::SelectiveScanOptions o;
  o.return_last_state = true;
  o.path = ScanPath::reference;
  auto r = ssm::selective_scan(in, o);
  const cd h0 = 0.25 * cd(1, -1) * 1.0;
  const cd h1 = std::exp(0.25 * cd(-0.5, 2)) * h0 + 0.25 * cd(1, -1) * 3.0;
  const auto out = r.out.to_vector<double>();
  EXPECT_NEAR(out[0], 2 * (cd(0.5, 0.25) * h0).real(), 1e-15);
  EXPECT_NEAR(out[1], 2 * (cd(0.5, 0.25) * h1).real(), 1e-15);
  const auto last = r.last_state.to_vector<cd>();
  EXPECT_NEAR(std::abs(last[0] - h1), 0.0, 1e-15);
}

// ---------------------------------------------------------------------------------------------------
// Independent re-derivation: the unrolled (convolution-like) form of the recurrence,
//   h_t = exp(A (S_t - S_{t0-1})) h_init + sum_{s <= t} exp(A (S_t - S_s)) Delta_s B_s u_s,
// with S_t the running sum of Delta, evaluated in O(l^2) without any recurrence.

struct Naive {
  std::vector<double> out;  // (b, d, l)
  std::vector<cd> last;     // (rows, d, n)
};

Naive naive_unrolled(const ScanData& s) {
  const ScanCase& c = s.cs;
  const auto u = values(s.u), delta = values(s.delta), A = values(s.A), B = values(s.B), C = values(s.C),
             D = values(s.D), z = values(s.z), bias = values(s.delta_bias), h0 = values(s.initial_state);
  const index_t b = c.b, d = c.d, l = c.l, n = c.n, g = c.complex ? c.g : c.g;
  const index_t gg = c.rank3_BC ? 1 : g;
  const auto cplx = [&](const std::vector<double>& v, index_t i) {
    return c.complex ? cd(v[static_cast<std::size_t>(2 * i)], v[static_cast<std::size_t>(2 * i + 1)])
                     : cd(v[static_cast<std::size_t>(i)], 0);
  };
  const auto at = [](const std::vector<double>& v, index_t i) { return v[static_cast<std::size_t>(i)]; };
  const auto BC = [&](const std::vector<double>& v, bool variable, index_t bi, index_t ch, index_t k, index_t t) {
    if (!variable) return cplx(v, ch * n + k);
    const index_t grp = ch / (d / gg);
    return cplx(v, ((bi * gg + grp) * n + k) * l + t);
  };
  std::vector<std::array<index_t, 4>> seqs;  // (bi, t0, t1, row)
  if (c.cu.empty())
    for (index_t bi = 0; bi < b; ++bi) seqs.push_back({bi, 0, l, bi});
  else
    for (std::size_t s2 = 0; s2 + 1 < c.cu.size(); ++s2)
      seqs.push_back({0, c.cu[s2], c.cu[s2 + 1], static_cast<index_t>(s2)});
  Naive r;
  r.out.assign(static_cast<std::size_t>(b * d * l), 0.0);
  r.last.assign(static_cast<std::size_t>(static_cast<index_t>(seqs.size()) * d * n), cd(0));
  for (const auto& [bi, t0, t1, row] : seqs) {
    for (index_t ch = 0; ch < d; ++ch) {
      std::vector<double> Delta(static_cast<std::size_t>(l)), S(static_cast<std::size_t>(l));
      double run = 0;
      for (index_t t = t0; t < t1; ++t) {
        double x = at(delta, (bi * d + ch) * l + t) + (c.has_bias ? at(bias, ch) : 0.0);
        if (c.softplus) x = x > 20 ? x : std::log(1 + std::exp(x));
        Delta[static_cast<std::size_t>(t)] = x;
        run += x;
        S[static_cast<std::size_t>(t)] = run;
      }
      for (index_t t = t0; t < t1; ++t) {
        double y = 0;
        for (index_t k = 0; k < n; ++k) {
          const cd Ak = cplx(A, ch * n + k);
          cd h = c.has_init ? std::exp(Ak * S[static_cast<std::size_t>(t)]) * cplx(h0, (row * d + ch) * n + k) : cd(0);
          for (index_t s2 = t0; s2 <= t; ++s2)
            h += std::exp(Ak * (S[static_cast<std::size_t>(t)] - S[static_cast<std::size_t>(s2)])) *
                 Delta[static_cast<std::size_t>(s2)] * BC(B, c.var_B, bi, ch, k, s2) * at(u, (bi * d + ch) * l + s2);
          const cd Ch = BC(C, c.var_C, bi, ch, k, t) * h;
          y += c.complex ? 2 * Ch.real() : Ch.real();
          if (t == t1 - 1) r.last[static_cast<std::size_t>((row * d + ch) * n + k)] = h;
        }
        double o = y + (c.has_D ? at(D, ch) * at(u, (bi * d + ch) * l + t) : 0.0);
        if (c.has_z) {
          const double zz = at(z, (bi * d + ch) * l + t);
          o *= zz / (1 + std::exp(-zz));
        }
        r.out[static_cast<std::size_t>((bi * d + ch) * l + t)] = o;
      }
    }
  }
  return r;
}

TEST(SelectiveScanReference, MatchesUnrolledRederivation) {
  std::vector<ScanCase> cases;
  {
    ScanCase c;  // real, variable B/C, groups, every option
    c.b = 2, c.d = 4, c.l = 6, c.n = 3, c.g = 2;
    c.has_D = c.has_z = c.has_bias = c.softplus = c.has_init = true;
    cases.push_back(c);
    c.complex = true;  // complex A, complex variable B/C
    cases.push_back(c);
    c.var_B = false;  // complex fixed B, variable C
    cases.push_back(c);
    c.complex = false, c.var_C = false;  // real fixed B and C
    cases.push_back(c);
  }
  {
    ScanCase c;  // rank-3 B/C (g = 1), l = 1
    c.b = 3, c.d = 2, c.l = 1, c.n = 2, c.rank3_BC = true, c.has_D = true;
    cases.push_back(c);
  }
  {
    ScanCase c;  // packed varlen with initial states, groups
    c.b = 1, c.d = 4, c.l = 9, c.n = 2, c.g = 2, c.has_init = c.has_z = true, c.cu = {0, 2, 3, 9};
    cases.push_back(c);
    c.complex = true, c.softplus = c.has_bias = true;
    cases.push_back(c);
  }
  for (const ScanCase& c : cases) {
    SCOPED_TRACE(describe(c));
    const ScanData s = make_data(c);
    const auto r = run(s, ScanPath::reference);
    const Naive nv = naive_unrolled(s);
    const auto out = values(r.out);
    const auto last = values(r.last_state);
    ASSERT_EQ(out.size(), nv.out.size());
    // Double vs double through a different order of operations (sums of exp of differences):
    // agreement to a few ulps of the values (|values| < 10).
    for (std::size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], nv.out[i], 1e-12) << "out " << i;
    for (std::size_t i = 0; i < nv.last.size(); ++i) {
      const cd got = c.complex ? cd(last[2 * i], last[2 * i + 1]) : cd(last[i], 0);
      EXPECT_NEAR(std::abs(got - nv.last[i]), 0.0, 1e-12) << "last " << i;
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Every path against the reference on awkward shapes.

std::vector<ScanCase> awkward_cases(DType dt) {
  std::vector<ScanCase> v;
  ScanCase c;
  c.dtype = dt;
  c.b = 3, c.d = 4, c.l = 1, c.n = 16, c.g = 1, c.has_D = c.has_z = c.has_bias = c.softplus = c.has_init = true;
  v.push_back(c);
  c = ScanCase{};
  c.dtype = dt, c.b = 3, c.d = 4, c.l = 7, c.n = 1, c.g = 2, c.complex = true, c.has_z = c.has_D = c.has_init = true;
  v.push_back(c);
  c = ScanCase{};
  c.dtype = dt, c.b = 1, c.d = 4, c.l = 2049, c.n = 16, c.g = 2, c.has_bias = c.softplus = c.has_z = c.has_init = true;
  v.push_back(c);
  c = ScanCase{};
  c.dtype = dt, c.b = 1, c.d = 2, c.l = 5000, c.n = 64, c.g = 1, c.complex = true, c.has_D = true;
  v.push_back(c);
  c = ScanCase{};
  c.dtype = dt, c.b = 3, c.d = 2, c.l = 2049, c.n = 64, c.var_B = false, c.has_D = c.has_bias = c.softplus = true;
  v.push_back(c);
  c = ScanCase{};
  c.dtype = dt, c.b = 1, c.d = 4, c.l = 5000, c.n = 1, c.g = 2;
  v.push_back(c);
  c = ScanCase{};
  c.dtype = dt, c.b = 3, c.d = 2, c.l = 7, c.n = 16, c.var_C = false, c.complex = true, c.has_bias = c.softplus = true,
  c.has_init = true;
  v.push_back(c);
  return v;
}

void expect_paths_match_reference(DType dt, double tol) {
  double worst = 0.0;
  for (const ScanCase& c : awkward_cases(dt)) {
    SCOPED_TRACE(describe(c));
    const ScanData s = make_data(c);
    const auto ref = run(s, ScanPath::reference);
    EXPECT_EQ(ref.path, "reference");
    for (ScanPath path : {ScanPath::automatic, ScanPath::sequential, ScanPath::chunked}) {
      if (c.complex && path == ScanPath::chunked) continue;  // an ssm::Error (test_selective_scan_api.cpp)
      for (int threads : {1, 2}) {
        const auto r = run(s, path, threads);
        SCOPED_TRACE("path " + r.path + " threads " + std::to_string(threads));
        EXPECT_EQ(r.path.rfind("cpu-", 0), 0u);  // an optimized CPU path ran, not the reference
        const double e_out = rel_err(r.out, ref.out), e_last = rel_err(r.last_state, ref.last_state);
        EXPECT_LE(e_out, tol);
        EXPECT_LE(e_last, tol);
        worst = std::max({worst, e_out, e_last});
      }
    }
  }
  std::printf("[ info     ] %s: worst normalized error of the optimized paths vs reference: %.3g (bound %.0e)\n",
              std::string(ssm::name(dt)).c_str(), worst, tol);
}

// f32: the optimized paths compute in f32 while the reference accumulates in double; the recurrence
// is contracting (Re(A) < 0), so errors stay at a few hundred f32 ulps of the output scale at most.
TEST(SelectiveScanPaths, MatchReferenceF32) { expect_paths_match_reference(DType::f32, 1e-5); }
// f64: same arithmetic at 2^-53; 1e-12 leaves ~4500 ulps for order-of-summation differences.
TEST(SelectiveScanPaths, MatchReferenceF64) { expect_paths_match_reference(DType::f64, 1e-12); }

TEST(SelectiveScanPaths, ChunkedEqualsSequential) {
  for (DType dt : {DType::f32, DType::f64}) {
    ScanCase c;
    c.dtype = dt, c.b = 2, c.d = 3, c.l = 1000, c.n = 16, c.g = 1, c.has_init = c.has_z = c.has_D = true;
    const ScanData s = make_data(c);
    const auto seq = run(s, ScanPath::sequential, 1);
    for (index_t chunk : {1, 7, 64, 999, 4096}) {
      const auto ch = run(s, ScanPath::chunked, 2, chunk);
      SCOPED_TRACE("chunk " + std::to_string(chunk) + " " + ch.path);
      // Re-association of the affine maps: equal up to rounding (f32 1e-5, f64 1e-12 as above).
      const double tol = dt == DType::f32 ? 1e-5 : 1e-12;
      EXPECT_LE(rel_err(ch.out, seq.out), tol);
      EXPECT_LE(rel_err(ch.last_state, seq.last_state), tol);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Streaming and packing.

TEST(SelectiveScanStreaming, SplitInTwoCallsEqualsOneCall) {
  for (bool complex : {false, true}) {
    for (DType dt : {DType::f64, DType::f32}) {
      ScanCase c;
      c.dtype = dt, c.complex = complex, c.b = 2, c.d = 4, c.l = 37, c.n = 5, c.g = 2;
      c.has_init = c.has_z = c.has_D = c.has_bias = c.softplus = true;
      SCOPED_TRACE(describe(c));
      const ScanData s = make_data(c);
      for (ScanPath path : {ScanPath::reference, ScanPath::automatic}) {
        const auto whole = run(s, path);
        const index_t l1 = 16;
        ssm::SelectiveScanOptions o;
        o.path = path;
        o.return_last_state = true;
        SelectiveScanInputs first = s.inputs(), second = s.inputs();
        for (auto [in, start, len] : {std::tuple{&first, index_t{0}, l1}, std::tuple{&second, l1, c.l - l1}}) {
          in->u = s.u.view().narrow(2, start, len);
          in->delta = s.delta.view().narrow(2, start, len);
          in->z = s.z.view().narrow(2, start, len);
          in->B = s.B.view().narrow(3, start, len);
          in->C = s.C.view().narrow(3, start, len);
        }
        const auto r1 = ssm::selective_scan(first, o);
        second.initial_state = r1.last_state.view();
        const auto r2 = ssm::selective_scan(second, o);
        const double tol = dt == DType::f64 ? 1e-13 : 1e-6;  // same arithmetic; the state goes through f32/f64 storage
        EXPECT_LE(rel_err(r1.out, whole.out.view().narrow(2, 0, l1)), tol);
        EXPECT_LE(rel_err(r2.out, whole.out.view().narrow(2, l1, c.l - l1)), tol);
        EXPECT_LE(rel_err(r2.last_state, whole.last_state), tol);
      }
    }
  }
}

TEST(SelectiveScanStreaming, PackedVarlenEqualsSeparateCalls) {
  for (bool complex : {false, true}) {
    for (DType dt : {DType::f64, DType::f32}) {
      ScanCase c;
      c.dtype = dt, c.complex = complex, c.b = 1, c.d = 4, c.n = 3, c.g = 2;
      c.cu = {0, 100, 101, 138, 200};
      c.l = 200;
      c.has_init = c.has_z = c.has_D = c.has_bias = c.softplus = true;
      SCOPED_TRACE(describe(c));
      const ScanData s = make_data(c);
      for (ScanPath path : {ScanPath::reference, ScanPath::automatic}) {
        const auto packed = run(s, path);
        ssm::SelectiveScanOptions o;
        o.path = path;
        o.return_last_state = true;
        for (std::size_t q = 0; q + 1 < c.cu.size(); ++q) {
          const index_t t0 = c.cu[q], len = c.cu[q + 1] - c.cu[q];
          SelectiveScanInputs in = s.inputs();
          in.cu_seqlens.reset();
          in.u = s.u.view().narrow(2, t0, len);
          in.delta = s.delta.view().narrow(2, t0, len);
          in.z = s.z.view().narrow(2, t0, len);
          in.B = s.B.view().narrow(3, t0, len);
          in.C = s.C.view().narrow(3, t0, len);
          in.initial_state = s.initial_state.view().narrow(0, static_cast<index_t>(q), 1);
          const auto r = ssm::selective_scan(in, o);
          const double tol = dt == DType::f64 ? 1e-13 : 1e-6;
          EXPECT_LE(rel_err(r.out, packed.out.view().narrow(2, t0, len)), tol) << "sequence " << q;
          EXPECT_LE(rel_err(r.last_state, packed.last_state.view().narrow(0, static_cast<index_t>(q), 1)), tol)
              << "sequence " << q;
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Half-precision inputs: the op on f16/bf16 against the f32 op on exactly the same (rounded) values.
// The state and accumulation are f32 in both, so the only extra error is the output's rounding to the
// input type: half an ulp, 2^-11 (f16) or 2^-8 (bf16) relative to |out_t| ≤ max |out|. The bounds
// are that rounding doubled, plus the f32 bound.

Tensor convert(const Tensor& t, DType to) {
  Tensor r = Tensor::empty(t.shape(), to);
  const auto v = values(t);
  for (index_t i = 0; i < t.numel(); ++i) set(r, i, v[static_cast<std::size_t>(i)]);
  return r;
}

TEST(SelectiveScanHalf, F16AndBf16MatchF32OnSameValues) {
  for (DType dt : {DType::f16, DType::bf16}) {
    for (bool complex : {false, true}) {
      ScanCase c;
      c.dtype = dt, c.complex = complex, c.b = 2, c.d = 4, c.l = 300, c.n = 16, c.g = 2;
      c.has_init = c.has_z = c.has_D = c.has_bias = c.softplus = true;
      SCOPED_TRACE(describe(c));
      const ScanData s = make_data(c);  // u, delta, z (and real B, C) in dt
      ScanData s32 = s;
      s32.cs.dtype = DType::f32;
      s32.u = convert(s.u, DType::f32);
      s32.delta = convert(s.delta, DType::f32);
      s32.z = convert(s.z, DType::f32);
      if (!complex) {
        s32.B = convert(s.B, DType::f32);
        s32.C = convert(s.C, DType::f32);
      }
      const auto ref = run(s32, ScanPath::reference);
      const double tol = (dt == DType::f16 ? 2 * 0x1p-11 : 2 * 0x1p-8) + 1e-5;
      for (ScanPath path : {ScanPath::reference, ScanPath::automatic}) {
        const auto r = run(s, path);
        EXPECT_EQ(r.out.dtype(), dt);
        EXPECT_LE(rel_err(r.out, ref.out), tol) << r.path;
        EXPECT_LE(rel_err(r.last_state, ref.last_state), 1e-5) << r.path;  // the state is f32 in both
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Bad input: every check names the argument.


TEST(SelectiveScanErrors, EveryBadArgumentIsRejected) {
  ScanCase c;
  c.b = 2, c.d = 4, c.l = 6, c.n = 3, c.g = 2, c.dtype = DType::f32;
  c.has_D = c.has_z = c.has_bias = c.has_init = true;
  const ScanData s = make_data(c);
  const auto call = [&](auto mutate) {
    return [&s, mutate] {
      SelectiveScanInputs in = s.inputs();
      mutate(in);
      ssm::selective_scan(in);
    };
  };
  Tensor u64 = Tensor::zeros({2, 4, 6}, DType::f64);
  Tensor i32 = Tensor::zeros({2, 4, 6}, DType::i32);
  Tensor wrong_len = Tensor::zeros({2, 4, 5}, DType::f32);
  Tensor w5 = Tensor::zeros({5}, DType::f32);
  Tensor w4d = Tensor::zeros({4}, DType::f64);
  Tensor A_bad = Tensor::zeros({3, 3}, DType::f32);
  Tensor A_f64 = Tensor::zeros({4, 3}, DType::f64);
  Tensor A_c128 = Tensor::zeros({4, 3}, DType::c128);
  Tensor B_g3 = Tensor::zeros({2, 3, 3, 6}, DType::f32);
  Tensor B_g1 = Tensor::zeros({2, 1, 3, 6}, DType::f32);
  Tensor B_rank5 = Tensor::zeros({1, 2, 2, 3, 6}, DType::f32);
  Tensor B_f64 = Tensor::zeros({2, 2, 3, 6}, DType::f64);
  Tensor B_fixed_bad = Tensor::zeros({4, 2}, DType::f32);
  Tensor B_fixed_f16 = Tensor::zeros({4, 3}, DType::f16);
  Tensor h_bad = Tensor::zeros({2, 4, 2}, DType::f32);
  Tensor h_f64 = Tensor::zeros({2, 4, 3}, DType::f64);
  Tensor big = Tensor::zeros({2, 4, 12}, DType::f32);  // stride 2 along l via a reshaped view below
  const ssm::TensorView strided_u(big.data(), DType::f32, ssm::Device::cpu(), {2, 4, 6}, {48, 12, 2});
  Tensor keep_alive_B = Tensor::zeros({2, 2, 3, 12}, DType::f32);
  const ssm::TensorView strided_B2(keep_alive_B.data(), DType::f32, ssm::Device::cpu(), {2, 2, 3, 6}, {72, 36, 12, 2});
  Tensor A_n0 = Tensor::zeros({4, 0}, DType::f32);
  Tensor A_c64 = Tensor::zeros({4, 3}, DType::c64);

  expect_error(call([&](SelectiveScanInputs& in) { in.u = i32; }), "'u'");
  expect_error(call([&](SelectiveScanInputs& in) { in.u = s.u.view().reshape({2, 24}); }), "'u'");
  expect_error(call([&](SelectiveScanInputs& in) { in.u = strided_u; }), "'u'");
  expect_error(call([&](SelectiveScanInputs& in) { in.delta = u64; }), "'delta'");
  expect_error(call([&](SelectiveScanInputs& in) { in.delta = wrong_len; }), "'delta'");
  expect_error(call([&](SelectiveScanInputs& in) { in.delta = strided_u; }), "'delta'");
  expect_error(call([&](SelectiveScanInputs& in) { in.A = A_bad; }), "'A'");
  expect_error(call([&](SelectiveScanInputs& in) { in.A = A_f64; }), "'A'");
  expect_error(call([&](SelectiveScanInputs& in) { in.A = A_n0; }), "'A'");
  expect_error(call([&](SelectiveScanInputs& in) { in.B = B_g3; }), "'B'");         // d % g != 0
  expect_error(call([&](SelectiveScanInputs& in) { in.B = B_g1; }), "'C'");         // B and C group counts differ
  expect_error(call([&](SelectiveScanInputs& in) { in.B = B_rank5; }), "'B'");
  expect_error(call([&](SelectiveScanInputs& in) { in.B = B_f64; }), "'B'");
  expect_error(call([&](SelectiveScanInputs& in) { in.B = strided_B2; }), "'B'");
  expect_error(call([&](SelectiveScanInputs& in) { in.C = B_fixed_bad; }), "'C'");
  expect_error(call([&](SelectiveScanInputs& in) { in.C = B_fixed_f16; }), "'C'");
  expect_error(call([&](SelectiveScanInputs& in) { in.C = wrong_len; }), "'C'");
  expect_error(call([&](SelectiveScanInputs& in) { in.D = w5.view(); }), "'D'");
  expect_error(call([&](SelectiveScanInputs& in) { in.D = w4d.view(); }), "'D'");
  expect_error(call([&](SelectiveScanInputs& in) { in.delta_bias = w5.view(); }), "'delta_bias'");
  expect_error(call([&](SelectiveScanInputs& in) { in.delta_bias = w4d.view(); }), "'delta_bias'");
  expect_error(call([&](SelectiveScanInputs& in) { in.z = wrong_len.view(); }), "'z'");
  expect_error(call([&](SelectiveScanInputs& in) { in.z = u64.view(); }), "'z'");
  expect_error(call([&](SelectiveScanInputs& in) { in.z = strided_u; }), "'z'");
  expect_error(call([&](SelectiveScanInputs& in) { in.initial_state = h_bad.view(); }), "'initial_state'");
  expect_error(call([&](SelectiveScanInputs& in) { in.initial_state = h_f64.view(); }), "'initial_state'");
  // Complex A needs complex B/C (variable: complex weight dtype) and a complex initial state.
  expect_error(call([&](SelectiveScanInputs& in) { in.A = A_c64; }), "'B'");
  expect_error(call([&](SelectiveScanInputs& in) { in.A = A_c128; }), "'A'");
  // Devices: a tensor claiming a CUDA device without the backend linked.
  const ssm::TensorView cuda_u(s.u.data(), DType::f32, ssm::Device::cuda(0), {2, 4, 6});
  expect_error(call([&](SelectiveScanInputs& in) { in.u = cuda_u; }), "cuda");

  // cu_seqlens: b must be 1, increasing, from 0 to l; i32 or i64.
  ScanCase cv;
  cv.b = 1, cv.d = 2, cv.l = 6, cv.n = 2, cv.cu = {0, 2, 6}, cv.has_init = true;
  const ScanData v = make_data(cv);
  const auto call_v = [&](auto mutate) {
    return [&v, mutate] {
      SelectiveScanInputs in = v.inputs();
      mutate(in);
      ssm::selective_scan(in);
    };
  };
  Tensor cu_dec = Tensor::from_vector<std::int64_t>({3}, {0, 4, 2});
  Tensor cu_eq = Tensor::from_vector<std::int64_t>({3}, {0, 2, 2});
  Tensor cu_end = Tensor::from_vector<std::int64_t>({3}, {0, 2, 5});
  Tensor cu_start = Tensor::from_vector<std::int64_t>({3}, {1, 2, 6});
  Tensor cu_short = Tensor::from_vector<std::int64_t>({1}, {0});
  Tensor cu_f32 = Tensor::from_vector<float>({3}, {0, 2, 6});
  Tensor cu_i32 = Tensor::from_vector<std::int32_t>({3}, {0, 2, 6});
  expect_error(call_v([&](SelectiveScanInputs& in) { in.cu_seqlens = cu_dec.view(); }), "'cu_seqlens'");
  expect_error(call_v([&](SelectiveScanInputs& in) { in.cu_seqlens = cu_eq.view(); }), "'cu_seqlens'");
  expect_error(call_v([&](SelectiveScanInputs& in) { in.cu_seqlens = cu_end.view(); }), "'cu_seqlens'");
  expect_error(call_v([&](SelectiveScanInputs& in) { in.cu_seqlens = cu_start.view(); }), "'cu_seqlens'");
  expect_error(call_v([&](SelectiveScanInputs& in) { in.cu_seqlens = cu_short.view(); }), "'cu_seqlens'");
  expect_error(call_v([&](SelectiveScanInputs& in) { in.cu_seqlens = cu_f32.view(); }), "'cu_seqlens'");
  // initial_state with cu_seqlens is (n_seqs, d, n), not (b, d, n).
  Tensor h_b = Tensor::zeros({1, 2, 2}, DType::f32);
  expect_error(call_v([&](SelectiveScanInputs& in) { in.initial_state = h_b.view(); }), "'initial_state'");
  // i32 offsets are accepted and equal to i64 ones.
  {
    SelectiveScanInputs in = v.inputs();
    const auto r64 = ssm::selective_scan(in);
    in.cu_seqlens = cu_i32.view();
    const auto r32 = ssm::selective_scan(in);
    EXPECT_EQ(rel_err(r32.out, r64.out), 0.0);
  }
  // b > 1 with cu_seqlens.
  expect_error(call([&](SelectiveScanInputs& in) {
                 in.cu_seqlens = cu_i32.view();
                 in.initial_state.reset();
               }),
               "'cu_seqlens'");

  // Outputs of selective_scan_into, options, and the backward's own arguments.
  SelectiveScanInputs in = s.inputs();
  Tensor out_ok = Tensor::empty({2, 4, 6}, DType::f32);
  Tensor last_ok = Tensor::empty({2, 4, 3}, DType::f32);
  expect_error([&] { ssm::selective_scan_into(in, wrong_len, std::nullopt); }, "'out'");
  expect_error([&] { ssm::selective_scan_into(in, u64, std::nullopt); }, "'out'");
  expect_error([&] { ssm::selective_scan_into(in, out_ok, h_bad.view()); }, "'last_state'");
  expect_error([&] { ssm::selective_scan_into(in, out_ok, h_f64.view()); }, "'last_state'");
  ssm::SelectiveScanOptions bad_threads;
  bad_threads.num_threads = -1;
  expect_error([&] { ssm::selective_scan(in, bad_threads); }, "'num_threads'");
  ssm::SelectiveScanOptions bad_chunk;
  bad_chunk.chunk_len = -3;
  expect_error([&] { ssm::selective_scan(in, bad_chunk); }, "'chunk_len'");
  EXPECT_EQ(ssm::selective_scan_into(in, out_ok, last_ok.view()), ssm::selective_scan(in).path);
  expect_error([&] { ssm::selective_scan_backward(in, wrong_len); }, "'grad_out'");
  expect_error([&] { ssm::selective_scan_backward(in, u64); }, "'grad_out'");
  expect_error([&] { ssm::selective_scan_backward(in, out_ok, h_bad.view()); }, "'grad_last_state'");
  expect_error([&] { ssm::selective_scan_backward(in, out_ok, h_f64.view()); }, "'grad_last_state'");
  expect_error([&] { ssm::selective_scan_backward(in, out_ok, std::nullopt, bad_threads); }, "'num_threads'");
  in.B = B_g3;
  expect_error([&] { ssm::selective_scan_backward(in, out_ok); }, "selective_scan_backward");
}

}  // namespace
