// Tests of the selective-scan backward (docs/math.md §5.3): the reference and the CPU
// chunk-recompute backward against central finite differences in double for every input (and the
// incoming gradient of the last state), and the CPU backward against the reference on awkward shapes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <complex>
#include <string>
#include <vector>

#include "scan_test_util.hpp"

namespace {

using namespace scan_test;
using ssm::ScanPath;
using ssm::SelectiveScanInputs;

/// L = sum(grad_out * out) + sum(Re(conj(grad_last) * last_state)): its gradient is what the backward
/// returns for grad_out and grad_last_state (PyTorch's convention for complex: dL/dRe + i dL/dIm).
double loss(const ScanData& s, const Tensor& grad_out, const Tensor& grad_last) {
  const auto r = run(s, ScanPath::reference);
  const auto out = values(r.out), go = values(grad_out), last = values(r.last_state), gl = values(grad_last);
  double L = 0;
  for (std::size_t i = 0; i < out.size(); ++i) L += out[i] * go[i];
  for (std::size_t i = 0; i < last.size(); ++i) L += last[i] * gl[i];  // re*re + im*im
  return L;
}

/// Central differences on every real scalar (re and im of complex entries) of tensor t.
std::vector<double> finite_difference(const ScanData& s, const Tensor& t, const Tensor& grad_out, const Tensor& grad_last) {
  const bool cplx = ssm::is_complex(t.dtype());
  double* x = static_cast<double*>(t.data());  // f64 or c128: contiguous doubles
  const index_t m = t.numel() * (cplx ? 2 : 1);
  std::vector<double> g(static_cast<std::size_t>(m));
  const double eps = 1e-6;  // truncation O(eps^2) ~ 1e-12, rounding ~ 1e-16 / eps = 1e-10 (relative)
  for (index_t i = 0; i < m; ++i) {
    const double keep = x[i];
    x[i] = keep + eps;
    const double Lp = loss(s, grad_out, grad_last);
    x[i] = keep - eps;
    const double Lm = loss(s, grad_out, grad_last);
    x[i] = keep;
    g[static_cast<std::size_t>(i)] = (Lp - Lm) / (2 * eps);
  }
  return g;
}

double rel_err_vec(const std::vector<double>& a, const std::vector<double>& r) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < r.size(); ++i) {
    num = std::max(num, std::abs(a[i] - r[i]));
    den = std::max(den, std::abs(r[i]));
  }
  return den > 0 ? num / den : num;
}

std::vector<ScanCase> gradient_cases() {
  std::vector<ScanCase> v;
  ScanCase c;
  c.b = 2, c.d = 4, c.l = 5, c.n = 3, c.g = 2, c.has_D = c.has_z = c.has_bias = c.softplus = c.has_init = true;
  v.push_back(c);  // real, variable grouped B/C, every option
  c.complex = true;
  v.push_back(c);  // complex A, complex variable B/C
  c.var_B = false;
  v.push_back(c);  // complex, fixed B
  c.complex = false, c.var_C = false, c.softplus = false, c.has_bias = false;
  v.push_back(c);  // real, fixed B and C, no softplus
  ScanCase r3;
  r3.b = 2, r3.d = 2, r3.l = 4, r3.n = 2, r3.rank3_BC = true, r3.complex = true, r3.has_z = true;
  v.push_back(r3);  // rank-3 complex variable B/C, no initial state
  ScanCase cu;
  cu.b = 1, cu.d = 4, cu.l = 7, cu.n = 2, cu.g = 2, cu.cu = {0, 3, 4, 7};
  cu.has_init = cu.has_D = cu.has_z = cu.has_bias = cu.softplus = true;
  v.push_back(cu);  // packed varlen, real
  cu.complex = true;
  v.push_back(cu);  // packed varlen, complex
  return v;
}

TEST(SelectiveScanBackward, GradientsMatchFiniteDifferencesForEveryInput) {
  double worst = 0.0;
  for (const ScanCase& c : gradient_cases()) {
    SCOPED_TRACE(describe(c));
    const ScanData s = make_data(c);
    ScanCase gc = c;
    gc.seed = c.seed + 100;
    const ScanData weights = make_data(gc);  // random grad_out (like u) and grad_last_state (like initial_state)
    const Tensor grad_out = weights.u;
    const Tensor grad_last = weights.initial_state;
    for (ScanPath path : {ScanPath::reference, ScanPath::automatic}) {
      ssm::SelectiveScanOptions o;
      o.path = path;
      o.chunk_len = 2;  // several recompute chunks even at l = 5
      o.num_threads = 2;
      const ssm::SelectiveScanGrads g = ssm::selective_scan_backward(s.inputs(), grad_out, grad_last.view(), o);
      SCOPED_TRACE(g.path);
      const auto check = [&](const char* name, const Tensor& input, const Tensor& grad) {
        ASSERT_TRUE(grad.defined()) << name;
        EXPECT_EQ(grad.dtype(), input.dtype()) << name;
        EXPECT_TRUE(grad.shape() == input.shape()) << name;
        const auto fd = finite_difference(s, input, grad_out, grad_last);
        // Double arithmetic; the finite difference is good to ~1e-9 relative (see eps above).
        const double e = rel_err_vec(values(grad), fd);
        EXPECT_LE(e, 1e-6) << name;
        worst = std::max(worst, e);
      };
      check("u", s.u, g.grad_u);
      check("delta", s.delta, g.grad_delta);
      check("A", s.A, g.grad_A);
      check("B", s.B, g.grad_B);
      check("C", s.C, g.grad_C);
      if (c.has_D) check("D", s.D, g.grad_D);
      else EXPECT_FALSE(g.grad_D.defined());
      if (c.has_z) check("z", s.z, g.grad_z);
      else EXPECT_FALSE(g.grad_z.defined());
      if (c.has_bias) check("delta_bias", s.delta_bias, g.grad_delta_bias);
      else EXPECT_FALSE(g.grad_delta_bias.defined());
      if (c.has_init) check("initial_state", s.initial_state, g.grad_initial_state);
      else EXPECT_FALSE(g.grad_initial_state.defined());
    }
  }
  std::printf("[ info     ] worst normalized error of the gradients vs central differences: %.3g (bound 1e-06)\n", worst);
}

TEST(SelectiveScanBackward, SoftplusThresholdMatchesPyTorch) {
  // Above 20 softplus is the identity and its derivative exactly 1 (PyTorch's threshold); below, sigmoid.
  Tensor u = Tensor::from_vector<double>({1, 1, 2}, {1, 1});
  Tensor delta = Tensor::from_vector<double>({1, 1, 2}, {25, 0});
  Tensor A = Tensor::from_vector<double>({1, 1}, {-0.01});
  Tensor B = Tensor::from_vector<double>({1, 1}, {0});  // no state: grad_delta is zero...
  Tensor C = Tensor::from_vector<double>({1, 1}, {1});
  Tensor bias = Tensor::from_vector<double>({1}, {0});
  SelectiveScanInputs in;
  in.u = u, in.delta = delta, in.A = A, in.B = B, in.C = C, in.delta_bias = bias.view(), in.delta_softplus = true;
  // ...except through the initial state: h_t = exp(Delta_t A) h, dL/dDelta_t = A exp(Delta_t A) h ...
  Tensor h0 = Tensor::from_vector<double>({1, 1, 1}, {1});
  in.initial_state = h0.view();
  Tensor go = Tensor::from_vector<double>({1, 1, 2}, {1, 0});  // L = out_0 = exp(Delta_0 A) h0
  for (ScanPath path : {ScanPath::reference, ScanPath::automatic}) {
    ssm::SelectiveScanOptions o;
    o.path = path;
    const auto g = ssm::selective_scan_backward(in, go, std::nullopt, o);
    const auto gd = g.grad_delta.to_vector<double>();
    EXPECT_NEAR(gd[0], -0.01 * std::exp(-0.01 * 25), 1e-15) << g.path;  // factor exactly 1
    EXPECT_NEAR(gd[1], 0.0, 1e-15) << g.path;
  }
}

// The CPU backward (f32 arithmetic for f32 inputs, chunked recompute, threads) against the double
// reference. f64: the same arithmetic, 1e-12 as in the forward. f32: the gradients are sums over up to
// b·l ≈ 6000 terms (grad_A, fixed B/C, D, delta_bias) and a reverse scan through l steps, each in f32
// (2^-24 ≈ 6e-8 per operation) with a vector exp2 of relative error 2.5e-7: a bound of 1e-5 on the
// normalized error is ~170 ulps of the scale (measured worst: about 1e-6, native/generic/ASan builds).
/// Every gradient the case has, g against ref: max normalized error <= tol; returns the largest error seen.
double expect_grads_near(const ssm::SelectiveScanGrads& g, const ssm::SelectiveScanGrads& ref, const ScanCase& cs,
                         double tol) {
  double worst = 0.0;
  const auto rel_err = [&worst](const Tensor& x, const Tensor& r) {
    const double e = scan_test::rel_err(x, r);
    worst = std::max(worst, e);
    return e;
  };
  EXPECT_LE(rel_err(g.grad_u, ref.grad_u), tol) << "u";
  EXPECT_LE(rel_err(g.grad_delta, ref.grad_delta), tol) << "delta";
  EXPECT_LE(rel_err(g.grad_A, ref.grad_A), tol) << "A";
  EXPECT_LE(rel_err(g.grad_B, ref.grad_B), tol) << "B";
  EXPECT_LE(rel_err(g.grad_C, ref.grad_C), tol) << "C";
  if (cs.has_D) {
    EXPECT_LE(rel_err(g.grad_D, ref.grad_D), tol) << "D";
  }
  if (cs.has_z) {
    EXPECT_LE(rel_err(g.grad_z, ref.grad_z), tol) << "z";
  }
  if (cs.has_bias) {
    EXPECT_LE(rel_err(g.grad_delta_bias, ref.grad_delta_bias), tol) << "delta_bias";
  }
  if (cs.has_init) {
    EXPECT_LE(rel_err(g.grad_initial_state, ref.grad_initial_state), tol) << "initial_state";
  }
  return worst;
}

/// The incoming gradients for case cs: the u and initial_state of the same case drawn with another seed stand in
/// for grad_out and grad_last_state.
ScanData incoming_grads(const ScanCase& cs) {
  ScanCase gc = cs;
  gc.seed += 7;
  return make_data(gc);
}

/// The reference backward of s with w's u and initial_state as grad_out and grad_last_state.
ssm::SelectiveScanGrads reference_backward(const ScanData& s, const ScanData& w) {
  ssm::SelectiveScanOptions ro;
  ro.path = ScanPath::reference;
  return ssm::selective_scan_backward(s.inputs(), w.u, w.initial_state.view(), ro);
}

void expect_backward_matches_reference(DType dt, double tol) {
  double worst = 0.0;
  std::vector<ScanCase> cases;
  ScanCase c;
  c.dtype = dt, c.b = 3, c.d = 4, c.l = 7, c.n = 16, c.g = 2, c.has_D = c.has_z = c.has_bias = c.softplus = c.has_init = true;
  cases.push_back(c);
  c.complex = true, c.n = 1, c.var_B = false;
  cases.push_back(c);
  c = ScanCase{};
  c.dtype = dt, c.b = 1, c.d = 2, c.l = 2049, c.n = 16, c.g = 2, c.has_z = c.has_bias = c.softplus = true;
  cases.push_back(c);
  c = ScanCase{};
  c.dtype = dt, c.b = 1, c.d = 3, c.l = 1, c.n = 64, c.var_C = false, c.has_D = c.has_init = true;
  cases.push_back(c);
  c = ScanCase{};
  c.dtype = dt, c.b = 1, c.d = 2, c.l = 500, c.n = 4, c.complex = true, c.has_init = c.has_z = true, c.cu = {0, 1, 130, 500};
  cases.push_back(c);
  // Real A with several channel blocks (37 channels: 2 full blocks of 16 and a ragged one in AVX-512, more in
  // AVX2 / generic), split over the threads; n not a multiple of the inner loops' 4 states; fixed B and C;
  // packed sequences, one of a single step.
  c = ScanCase{};
  c.dtype = dt, c.b = 2, c.d = 37, c.l = 300, c.n = 16, c.g = 1, c.has_D = c.has_z = c.has_bias = c.softplus = c.has_init = true;
  cases.push_back(c);
  c = ScanCase{};
  c.dtype = dt, c.b = 1, c.d = 20, c.l = 130, c.n = 5, c.var_B = c.var_C = false, c.has_z = c.has_init = true;
  cases.push_back(c);
  c = ScanCase{};
  c.dtype = dt, c.b = 1, c.d = 18, c.l = 200, c.n = 4, c.g = 2, c.has_D = c.has_init = c.has_z = c.softplus = true;
  c.cu = {0, 1, 70, 200};
  cases.push_back(c);
  for (const ScanCase& cs : cases) {
    SCOPED_TRACE(describe(cs));
    const ScanData s = make_data(cs);
    const ScanData w = incoming_grads(cs);
    const auto ref = reference_backward(s, w);
    // Channel blocks over the threads, and each sequence split in time over 2 or 3 threads (chunked: the first
    // and last pieces, and with 3 a middle one that takes both a carried state and a carried gradient).
    struct Run {
      int threads;
      index_t chunk;
      ScanPath path;
    };
    for (const Run run : {Run{1, 0, ScanPath::automatic}, Run{2, 5, ScanPath::sequential}, Run{2, 1, ScanPath::sequential},
                          Run{2, 5, ScanPath::chunked}, Run{3, 16, ScanPath::chunked}, Run{3, 1, ScanPath::chunked}}) {
      if (cs.complex && run.path == ScanPath::chunked) continue;  // an ssm::Error (test_selective_scan_api.cpp)
      ssm::SelectiveScanOptions o;
      o.num_threads = run.threads;
      o.chunk_len = run.chunk;
      o.path = run.path;
      const auto g = ssm::selective_scan_backward(s.inputs(), w.u, w.initial_state.view(), o);
      SCOPED_TRACE(g.path + " threads " + std::to_string(run.threads) + " chunk " + std::to_string(run.chunk));
      const bool split = run.path == ScanPath::chunked && run.threads > 1;
      EXPECT_EQ(g.path, cs.complex ? std::string("cpu-per-channel")
                                   : std::string("cpu-") + ssm::cpu::simd::kLevel + (split ? "-time-split" : "-channel-blocks"));
      worst = std::max(worst, expect_grads_near(g, ref, cs, tol));
    }
  }
  std::printf("[ info     ] %s: worst normalized gradient error of the CPU backward vs reference: %.3g (bound %.0e)\n",
              std::string(ssm::name(dt)).c_str(), worst, tol);
}

TEST(SelectiveScanBackward, CpuMatchesReferenceF64) { expect_backward_matches_reference(DType::f64, 1e-12); }
TEST(SelectiveScanBackward, CpuMatchesReferenceF32) { expect_backward_matches_reference(DType::f32, 1e-5); }

TEST(SelectiveScanBackward, GradAStaysExactAtLargeDelta) {
  // Delta ~ 18-22 and ~ 50 (softplus of inputs near those values): exp(Delta A) << 1, so a_t h_{t-1} is tiny
  // beside h_t. Recovering it as h_t - Delta_t u_t B_t cancelled: f32 grad_A was 1.9e-3 off (7.5e-5 at Delta 50)
  // and f64 3.6e-12. The bounds are those of the ordinary cases (CpuMatchesReference*).
  for (const double offset : {20.0, 50.0})
    for (const DType dt : {DType::f32, DType::f64}) {
      ScanCase c;
      c.dtype = dt, c.b = 2, c.d = 20, c.l = 300, c.n = 16, c.g = 2, c.delta_offset = offset;
      c.has_D = c.has_z = c.has_bias = c.softplus = c.has_init = true;
      SCOPED_TRACE(describe(c));
      const ScanData s = make_data(c);
      const ScanData w = incoming_grads(c);
      const auto ref = reference_backward(s, w);
      for (const ScanPath path : {ScanPath::automatic, ScanPath::chunked}) {
        ssm::SelectiveScanOptions o;
        o.path = path;
        o.num_threads = 2;
        o.chunk_len = 64;
        const auto g = ssm::selective_scan_backward(s.inputs(), w.u, w.initial_state.view(), o);
        SCOPED_TRACE(g.path);
        expect_grads_near(g, ref, c, dt == DType::f64 ? 1e-12 : 1e-5);
      }
    }
}

TEST(SelectiveScanBackward, HalfInputsMatchReference) {
  // Both compute from the same f16/bf16 values; the CPU backward in f32, the reference in double;
  // each gradient of an input-dtype tensor is rounded to that dtype (half an ulp: 2^-11, 2^-8), hence
  // twice that rounding plus the f32 bound above.
  for (DType dt : {DType::f16, DType::bf16}) {
    ScanCase c;
    c.dtype = dt, c.b = 2, c.d = 4, c.l = 100, c.n = 16, c.g = 2, c.has_D = c.has_z = c.has_bias = c.softplus = true;
    SCOPED_TRACE(describe(c));
    const ScanData s = make_data(c);
    ssm::SelectiveScanOptions ro;
    ro.path = ScanPath::reference;
    const auto ref = ssm::selective_scan_backward(s.inputs(), s.z, std::nullopt, ro);
    const double tol = (dt == DType::f16 ? 2 * 0x1p-11 : 2 * 0x1p-8) + 1e-5;
    // channel blocks, and the time split (its variable grad_B / grad_C summed in one f32 buffer, then converted)
    for (const ScanPath path : {ScanPath::automatic, ScanPath::chunked}) {
      ssm::SelectiveScanOptions o;
      o.path = path;
      o.num_threads = 2;
      o.chunk_len = 16;
      const auto g = ssm::selective_scan_backward(s.inputs(), s.z, std::nullopt, o);
      SCOPED_TRACE(g.path);
      EXPECT_EQ(g.path.find("time-split") != std::string::npos, path == ScanPath::chunked) << g.path;
      EXPECT_EQ(g.grad_u.dtype(), dt);
      EXPECT_LE(rel_err(g.grad_u, ref.grad_u), tol);
      EXPECT_LE(rel_err(g.grad_delta, ref.grad_delta), tol);
      EXPECT_LE(rel_err(g.grad_z, ref.grad_z), tol);
      EXPECT_LE(rel_err(g.grad_B, ref.grad_B), tol);
      EXPECT_LE(rel_err(g.grad_C, ref.grad_C), tol);
      EXPECT_LE(rel_err(g.grad_A, ref.grad_A), 1e-5);  // f32 weight gradients: no input-dtype rounding
      EXPECT_LE(rel_err(g.grad_D, ref.grad_D), 1e-5);
    }
  }
}

}  // namespace

TEST(SelectiveScanBackward, SavedChunkStatesGiveTheSameGradients) {
  // The forward keeps the state at the end of every 128-step chunk (save_chunk_states); the backward restarts
  // from them instead of its first pass. Against the reference (same bounds as above) and against the backward
  // that recomputes them; f32 and f64, one chunk and several with a ragged tail, several channel blocks, threads,
  // fixed and variable B / C, initial state.
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f64 ? 1e-12 : 1e-5;
    std::vector<ScanCase> cases;
    ScanCase c;
    c.dtype = dt, c.b = 2, c.d = 37, c.l = 300, c.n = 16, c.g = 1, c.has_D = c.has_z = c.has_bias = c.softplus = c.has_init = true;
    cases.push_back(c);
    c = ScanCase{};
    c.dtype = dt, c.b = 1, c.d = 20, c.l = 129, c.n = 5, c.var_B = c.var_C = false, c.has_z = c.has_init = true;
    cases.push_back(c);
    c = ScanCase{};
    c.dtype = dt, c.b = 1, c.d = 3, c.l = 1, c.n = 64, c.var_C = false, c.has_D = c.has_init = true;
    cases.push_back(c);
    c = ScanCase{};
    c.dtype = dt, c.b = 1, c.d = 18, c.l = 2049, c.n = 4, c.g = 2, c.has_D = c.has_z = c.softplus = true;
    cases.push_back(c);
    for (const ScanCase& cs : cases) {
      SCOPED_TRACE(describe(cs));
      const ScanData s = make_data(cs);
      const ScanData w = incoming_grads(cs);
      ssm::SelectiveScanOptions fo;
      fo.path = ScanPath::sequential;
      fo.save_chunk_states = true;
      const auto fwd = ssm::selective_scan(s.inputs(), fo);
      ASSERT_TRUE(fwd.chunk_states.defined()) << fwd.path;
      EXPECT_EQ(fwd.chunk_states.shape(), (ssm::Dims{cs.b, cs.d, (cs.l + 127) / 128, cs.n}));
      const auto ref = reference_backward(s, w);
      // channel blocks over 1 or 2 threads; the sequence split in time over 2 or 3 (pieces of whole saved chunks)
      for (const auto& [threads, path] : {std::pair{1, ScanPath::automatic}, std::pair{2, ScanPath::automatic},
                                         std::pair{2, ScanPath::chunked}, std::pair{3, ScanPath::chunked}}) {
        ssm::SelectiveScanOptions o;
        o.num_threads = threads;
        o.path = path;
        const auto recomputed = ssm::selective_scan_backward(s.inputs(), w.u, w.initial_state.view(), o);
        o.chunk_states = fwd.chunk_states.view();
        const auto g = ssm::selective_scan_backward(s.inputs(), w.u, w.initial_state.view(), o);
        SCOPED_TRACE(g.path + ", threads " + std::to_string(threads));
        expect_grads_near(g, ref, cs, tol);
        expect_grads_near(g, recomputed, cs, tol);
      }
    }
  }
  // A wrong shape is an ssm::Error naming chunk_states (save_chunk_states where nothing can be saved, complex A
  // included, is one too: test_selective_scan_api.cpp).
  ScanCase rc;
  rc.dtype = DType::f32, rc.l = 300, rc.n = 4, rc.d = 3;
  const ScanData sr = make_data(rc);
  Tensor wrong = Tensor::zeros({1, 2, 3, 4}, DType::f32);  // 300 steps need 3 chunks of 128
  ssm::SelectiveScanOptions o;
  o.chunk_states = wrong.view();
  try {
    (void)ssm::selective_scan_backward(sr.inputs(), sr.u, std::nullopt, o);
    FAIL() << "expected ssm::Error";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("argument 'chunk_states': expected shape (1, 3, 3, 4)"), std::string::npos) << e.what();
  }
}

TEST(SelectiveScanBackward, SavedChunkStatesAreTheStatesAtChunkEnds) {
  // r.chunk_states is (b, d, n_chunks, n), ssm::ChunkStates' layout (CUDA's): [bi, c, j] is h at the end of chunk j,
  // steps [128 j, min(128 (j + 1), l)). Each chunk against the last state of the reference scan of the prefix that
  // ends there (the last chunk, ragged, is the whole scan); several channel blocks on 2 threads, 2 batch rows.
  ScanCase c;
  c.dtype = DType::f64, c.b = 2, c.d = 19, c.l = 300, c.n = 3, c.has_D = c.has_z = c.has_bias = c.softplus = true;
  c.has_init = true;
  const ScanData s = make_data(c);
  ssm::SelectiveScanOptions o;
  o.num_threads = 2;
  o.save_chunk_states = true;
  const auto r = ssm::selective_scan(s.inputs(), o);
  ASSERT_EQ(r.chunk_states.shape(), (ssm::Dims{c.b, c.d, 3, c.n}));
  for (index_t j = 0; j < 3; ++j) {
    const index_t end = std::min<index_t>(128 * (j + 1), c.l);
    ssm::SelectiveScanInputs in = s.inputs();
    in.u = in.u.narrow(2, 0, end);
    in.delta = in.delta.narrow(2, 0, end);
    in.B = in.B.narrow(3, 0, end);
    in.C = in.C.narrow(3, 0, end);
    in.z = in.z->narrow(2, 0, end);
    ssm::SelectiveScanOptions ro;
    ro.path = ScanPath::reference;
    ro.return_last_state = true;
    const auto prefix = ssm::selective_scan(in, ro);
    SCOPED_TRACE("chunk " + std::to_string(j));
    EXPECT_LE(rel_err(r.chunk_states.view().narrow(2, j, 1), prefix.last_state), 1e-12);
  }
}

TEST(SelectiveScanBackward, CpuBackwardRestartsFromChunkStatesOfTheirRecordedLength) {
  // ssm::ChunkStates records its chunk length (CUDA saves chunks of 128, 1024 or 2048 steps, the CPU 128): the CPU
  // backward recomputes in chunks of that length. States at the end of every 50-step chunk, from the reference's
  // prefix scans, give the reference's gradients (channel blocks and time split); a wrong count is an ssm::Error.
  ScanCase c;
  c.dtype = DType::f64, c.b = 2, c.d = 11, c.l = 230, c.n = 3, c.has_D = c.has_z = c.softplus = c.has_init = true;
  const ScanData s = make_data(c);
  const ScanData w = incoming_grads(c);
  const index_t len = 50, chunks = ssm::ChunkStates::count(c.l, len);
  ASSERT_EQ(chunks, 5);
  Tensor saved = Tensor::zeros({c.b, c.d, chunks, c.n}, DType::f64);  // (b, d, n_chunks, n)
  for (index_t j = 0; j < chunks; ++j) {
    const index_t end = std::min(len * (j + 1), c.l);
    ssm::SelectiveScanInputs in = s.inputs();
    in.u = in.u.narrow(2, 0, end);
    in.delta = in.delta.narrow(2, 0, end);
    in.B = in.B.narrow(3, 0, end);
    in.C = in.C.narrow(3, 0, end);
    in.z = in.z->narrow(2, 0, end);
    ssm::SelectiveScanOptions ro;
    ro.path = ScanPath::reference;
    ro.return_last_state = true;
    const std::vector<double> h = values(ssm::selective_scan(in, ro).last_state);  // (b, d, n)
    for (index_t r = 0; r < c.b * c.d; ++r)
      for (index_t k = 0; k < c.n; ++k)
        saved.view().data_as<double>()[(r * chunks + j) * c.n + k] = h[static_cast<std::size_t>(r * c.n + k)];
  }
  const auto ref = reference_backward(s, w);
  ssm::Checker chk("test");
  const ssm::scan_detail::PreparedScan ps = ssm::scan_detail::prepare(chk, s.inputs());
  for (const auto& [threads, path] : {std::pair{1, ScanPath::automatic}, std::pair{2, ScanPath::chunked}}) {
    ssm::SelectiveScanGrads g;
    const auto like = [](const Tensor& t) { return Tensor::zeros(t.shape(), t.dtype()); };
    g.grad_u = like(s.u), g.grad_delta = like(s.delta), g.grad_A = like(s.A), g.grad_B = like(s.B);
    g.grad_C = like(s.C), g.grad_D = like(s.D), g.grad_z = like(s.z), g.grad_initial_state = like(s.initial_state);
    ssm::ScanGradParams gp;
    gp.grad_out = w.u.data();
    gp.grad_out_batch_stride = w.u.view().stride(0);
    gp.grad_out_d_stride = w.u.view().stride(1);
    gp.grad_last_state = w.initial_state.data();
    gp.grad_last_batch_stride = w.initial_state.view().stride(0);
    gp.grad_last_d_stride = w.initial_state.view().stride(1);
    gp.grad_last_n_stride = w.initial_state.view().stride(2);
    gp.grad_u = g.grad_u.data(), gp.grad_delta = g.grad_delta.data(), gp.grad_A = g.grad_A.data();
    gp.grad_B = g.grad_B.data(), gp.grad_C = g.grad_C.data(), gp.grad_D = g.grad_D.data();
    gp.grad_z = g.grad_z.data(), gp.grad_initial_state = g.grad_initial_state.data();
    ssm::cpu::ScanBackwardOptions bo;
    bo.num_threads = threads;
    bo.path = path;
    bo.chunk_states = {saved.data(), chunks, len};
    const ssm::cpu::ScanRun ran = ssm::cpu::selective_scan_backward<double>(ps.p, gp, bo);
    EXPECT_EQ(ran.path, threads == 1 ? ScanPath::sequential : ScanPath::chunked) << ran.name;
    SCOPED_TRACE(ran.name);
    expect_grads_near(g, ref, c, 1e-12);
    bo.chunk_states.n_chunks = chunks - 1;  // does not cover l
    EXPECT_THROW(ssm::cpu::selective_scan_backward<double>(ps.p, gp, bo), ssm::Error);
  }
}

// No channels (d = 0) through the CPU kernel itself (the op returns before it): complex A with variable B / C, whose
// gradients are then all zero, on 1 and 2 threads (the complex backward once divided by its thread count, 0 here).
TEST(SelectiveScanBackward, ComplexKernelWithNoChannelsWritesZeroGradients) {
  ScanCase c;
  c.b = 2, c.d = 0, c.l = 5, c.n = 3, c.complex = true;
  const ScanData s = make_data(c);
  ssm::Checker chk("test");
  const ssm::scan_detail::PreparedScan ps = ssm::scan_detail::prepare(chk, s.inputs());
  for (int threads : {1, 2}) {
    SCOPED_TRACE(threads);
    Tensor grad_out = Tensor::zeros(s.u.shape(), s.u.dtype());
    Tensor grad_B = Tensor::empty(s.B.shape(), s.B.dtype()), grad_C = Tensor::empty(s.C.shape(), s.C.dtype());
    std::memset(grad_B.data(), 0xff, grad_B.nbytes());  // NaN until written
    std::memset(grad_C.data(), 0xff, grad_C.nbytes());
    Tensor grad_A = Tensor::zeros(s.A.shape(), s.A.dtype()), grad_u = Tensor::zeros(s.u.shape(), s.u.dtype());
    Tensor grad_delta = Tensor::zeros(s.delta.shape(), s.delta.dtype());
    ssm::ScanGradParams gp;
    gp.grad_out = grad_out.data();
    gp.grad_u = grad_u.data(), gp.grad_delta = grad_delta.data(), gp.grad_A = grad_A.data();
    gp.grad_B = grad_B.data(), gp.grad_C = grad_C.data();
    ssm::cpu::ScanBackwardOptions bo;
    bo.num_threads = threads;
    ssm::cpu::selective_scan_backward<double>(ps.p, gp, bo);
    for (const Tensor* t : {&grad_B, &grad_C})
      for (double v : values(*t)) EXPECT_EQ(v, 0.0);
  }
}

TEST(SelectiveScanBackward, AutomaticPathSplitsLongThinSequencesInTime) {
  // One channel block and 4096 steps: with 2 threads the automatic path splits the sequence in time (channel blocks
  // would leave a thread idle); with 1 thread, or a sequence too short for two pieces of 2048 steps, it does not.
  ScanCase c;
  c.dtype = DType::f32, c.b = 1, c.d = 3, c.l = 4096, c.n = 2, c.has_D = c.has_z = c.has_bias = c.softplus = c.has_init = true;
  const ScanData s = make_data(c);
  const ScanData w = incoming_grads(c);
  const auto ref = reference_backward(s, w);
  const std::string level = std::string("cpu-") + ssm::cpu::simd::kLevel;
  ssm::SelectiveScanOptions o;
  o.num_threads = 2;
  const auto g = ssm::selective_scan_backward(s.inputs(), w.u, w.initial_state.view(), o);
  EXPECT_EQ(g.path, level + "-time-split");
  expect_grads_near(g, ref, c, 1e-5);
  o.num_threads = 1;
  EXPECT_EQ(ssm::selective_scan_backward(s.inputs(), w.u, w.initial_state.view(), o).path, level + "-channel-blocks");
  c.l = 4095;
  const ScanData shorter = make_data(c);
  o.num_threads = 2;
  EXPECT_EQ(ssm::selective_scan_backward(shorter.inputs(), shorter.u, std::nullopt, o).path, level + "-channel-blocks");
}
