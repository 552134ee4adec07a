// Tests of the optimized CPU selective-scan forward (ssm/cpu/selective_scan.hpp; Mamba's S6, docs/math.md §5.1)
// against the double-precision reference (ssm/reference/selective_scan.hpp) on awkward shapes with every feature;
// plus the vector exp2 / softplus / silu error bounds and sums (cpu/reduce.hpp), chunked == sequential, split calls,
// packed batches.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <complex>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "../conformance/scan_problem.hpp"
#include "ssm/cpu/reduce.hpp"
#include "ssm/cpu/selective_scan.hpp"
#include "ssm/cpu/simd.hpp"
#include "ssm/reference/selective_scan.hpp"

namespace {

using ssm::ScanParams;
using index_t = std::int64_t;
namespace simd = ssm::cpu::simd;

// ---- vector math -------------------------------------------------------------------------------------

template <class T>
double max_rel_exp2(double lo, double hi, int count) {
  constexpr int W = simd::lanes<T>;
  double worst = 0;
  for (int i = 0; i < count; i += W) {
    T x[W], y[W];
    for (int j = 0; j < W; ++j) x[j] = static_cast<T>(lo + (hi - lo) * (i + j) / (count - 1));
    simd::store(y, simd::exp2(simd::load(x)));
    for (int j = 0; j < W; ++j) {
      const double ref = std::exp2(static_cast<double>(x[j]));
      worst = std::max(worst, std::abs(static_cast<double>(y[j]) - ref) / ref);
    }
  }
  return worst;
}

TEST(SelectiveScanCpuMath, Exp2ErrorBound) {
  // The bounds stated in simd.hpp: 2.5e-7 (f32) and 6e-16 (f64; 4e-16 with FMA) relative, for normal
  // results. The used range: Delta A log2(e) is <= 0 for a decaying state and reaches -100s only where
  // the factor is ~0.
  EXPECT_LT(max_rel_exp2<float>(-120.0, 120.0, 2000003), 2.5e-7);
  EXPECT_LT(max_rel_exp2<float>(-1.0, 0.0, 200001), 2.5e-7);  // the range of typical Mamba decays
  EXPECT_LT(max_rel_exp2<double>(-1000.0, 1000.0, 2000003), 6e-16);
  // p(0) = 1: exact at integers, so a decay of exactly 1 (Delta = 0) leaves the state unchanged.
  for (int k = -100; k <= 100; ++k) {
    constexpr int W = simd::lanes<float>;
    float x[W], y[W];
    for (int j = 0; j < W; ++j) x[j] = static_cast<float>(k);
    simd::store(y, simd::exp2(simd::load(x)));
    EXPECT_EQ(y[0], std::ldexp(1.0f, k));
  }
}

TEST(SelectiveScanCpuMath, Exp2Underflow) {
  constexpr int W = simd::lanes<float>;
  float x[W], y[W];
  for (int j = 0; j < W; ++j) x[j] = -1000.0f;
  simd::store(y, simd::exp2(simd::load(x)));
  EXPECT_LE(y[0], 1.2e-38f);  // 0 (AVX-512) or the clamp 2^-126
  EXPECT_GE(y[0], 0.0f);
}

TEST(SelectiveScanCpuMath, Exp2DecayErrorBound) {
  // exp2_decay (the scan's decays; simd.hpp): within 3e-7 relative everywhere a decay lives, exact at
  // integers (a decay of exactly 1 leaves the state unchanged), and for x -> 0- the error vanishes like |x|
  // (<= 1.6e-6 |x| from the polynomial) up to the roundings of r = 1 + x and of the result (2^-25 + 2^-24
  // relative), which a correctly rounded f32 decay has too (half of it).
  constexpr int W = simd::lanes<float>;
  double worst = 0, worst_near0 = 0;
  for (int i = 0; i < 2000000; i += W) {
    float x[W], y[W];
    for (int j = 0; j < W; ++j) x[j] = static_cast<float>(-120.0 * (i + j) / 1999999.0);
    simd::store(y, simd::exp2_decay(simd::load(x)));
    for (int j = 0; j < W; ++j) worst = std::max(worst, std::abs(y[j] / std::exp2(static_cast<double>(x[j])) - 1));
  }
  for (int i = 0; i < 200000; i += W) {
    float x[W], y[W];
    for (int j = 0; j < W; ++j) x[j] = static_cast<float>(-1e-2 * (i + j + 1) / 200000.0);
    simd::store(y, simd::exp2_decay(simd::load(x)));
    for (int j = 0; j < W; ++j) {
      const double e = std::abs(y[j] / std::exp2(static_cast<double>(x[j])) - 1);
      worst_near0 = std::max(worst_near0, e - 1.6e-6 * std::abs(static_cast<double>(x[j])));
    }
  }
  EXPECT_LT(worst, 3e-7);
  EXPECT_LT(worst_near0, std::ldexp(1.0, -25) + std::ldexp(1.0, -24));
  for (int k = -100; k <= 0; ++k) {
    float x[W], y[W];
    for (int j = 0; j < W; ++j) x[j] = static_cast<float>(k);
    simd::store(y, simd::exp2_decay(simd::load(x)));
    EXPECT_EQ(y[0], std::ldexp(1.0f, k));
  }
}

TEST(SelectiveScanCpuMath, Log1pPolynomialErrorBound) {
  // The f32 log1p polynomial of softplus (simd.hpp): <= 2.5e-7 relative on [0, 1], 2^20 points (2.2e-7 with
  // FMA, 2.4e-7 measured without: the generic target rounds every product).
  constexpr int W = simd::lanes<float>;
  double worst = 0;
  const int count = 1 << 20;
  for (int i = 0; i < count; i += W) {
    float w[W], y[W];
    for (int j = 0; j < W; ++j) w[j] = static_cast<float>(static_cast<double>(i + j + 1) / count);
    simd::store(y, simd::log1p_unit_poly(simd::load(w)));
    for (int j = 0; j < W; ++j) worst = std::max(worst, std::abs(y[j] / std::log1p(static_cast<double>(w[j])) - 1));
  }
  EXPECT_LT(worst, 2.5e-7);
}

template <class T>
void check_softplus_silu(double tol) {
  constexpr int W = simd::lanes<T>;
  double worst_sp = 0, worst_silu = 0;
  for (int i = 0; i < 40000; i += W) {
    T x[W], sp[W], si[W];
    for (int j = 0; j < W; ++j) x[j] = static_cast<T>(-40.0 + 80.0 * (i + j) / 40000.0);
    simd::store(sp, simd::softplus<T>(simd::load(x)));
    simd::store(si, simd::silu<T>(simd::load(x)));
    for (int j = 0; j < W; ++j) {
      const double xd = static_cast<double>(x[j]);
      const double sp_ref = xd > 20 ? xd : std::log1p(std::exp(xd));
      const double si_ref = xd / (1 + std::exp(-xd));
      worst_sp = std::max(worst_sp, std::abs(sp[j] - sp_ref) / sp_ref);
      if (si_ref != 0) worst_silu = std::max(worst_silu, std::abs(si[j] - si_ref) / std::abs(si_ref));
    }
  }
  EXPECT_LT(worst_sp, tol);
  EXPECT_LT(worst_silu, tol);
}

// Far outside [-40, 40]: silu of an input below about -88.7 takes 1 / (1 + inf), which the AVX-512 f32 reciprocal's
// Newton step once turned into NaN (a trained model's conv output reached it); softplus saturates. All finite; within
// |x| <= 1e4 also close to the reference (beyond, the AVX2 and generic exp2 clamp their argument at 127, so
// silu(-1e30) reads -1e30 · 2^-127 = -6e-9 there instead of -0). And the reciprocal itself at 0, ±inf and the ends
// of the range.
template <class T>
void check_extremes() {
  constexpr int W = simd::lanes<T>;
  const double xs[] = {-1e30, -1e4, -200, -104, -90, -88.8, -88.7, -80, 80, 89, 200, 1e4, 1e30};
  for (double xd : xs) {
    SCOPED_TRACE(xd);
    T x[W], si[W], sp[W], sg[W];
    std::fill_n(x, W, static_cast<T>(xd));
    simd::store(si, simd::silu<T>(simd::load(x)));
    simd::store(sp, simd::softplus<T>(simd::load(x)));
    simd::store(sg, simd::reciprocal<T>(T(1) + simd::exp<T>(-simd::load(x))));  // the gate's sigmoid
    const double si_ref = xd / (1 + std::exp(-xd)), sp_ref = xd > 20 ? xd : std::log1p(std::exp(xd));
    const double sg_ref = 1 / (1 + std::exp(-xd));
    for (int j = 0; j < W; ++j) {
      ASSERT_TRUE(std::isfinite(static_cast<double>(si[j])) && std::isfinite(static_cast<double>(sp[j])) &&
                  std::isfinite(static_cast<double>(sg[j])))
          << "silu " << si[j] << ", softplus " << sp[j] << ", sigmoid " << sg[j];
      if (std::abs(xd) > 1e4) continue;
      EXPECT_NEAR(si[j], si_ref, 1e-6 * std::abs(si_ref) + 1e-30);
      EXPECT_NEAR(sp[j], sp_ref, 1e-6 * std::abs(sp_ref) + 1e-30);
      EXPECT_NEAR(sg[j], sg_ref, 1e-6 * sg_ref + 1e-30);
    }
  }
  const T inf = std::numeric_limits<T>::infinity();
  const T ins[] = {T(0), -T(0), inf, -inf, T(1e-30), T(-3e37)};
  for (T v : ins) {
    T x[W], r[W];
    std::fill_n(x, W, v);
    simd::store(r, simd::reciprocal<T>(simd::load(x)));
    const T want = T(1) / v;
    for (int j = 0; j < W; ++j) {
      if (std::isinf(want) || want == 0) EXPECT_EQ(r[j], want) << "1 / " << v;
      else EXPECT_NEAR(r[j], want, 1e-6 * std::abs(want)) << "1 / " << v;
    }
  }
}

TEST(SelectiveScanCpuMath, ExtremeInputsStayFinite) {
  check_extremes<float>();
  check_extremes<double>();
}

TEST(SelectiveScanCpuMath, SoftplusSilu) {
  // A few ulp: exp2 (2 ulp) and the rounding of x log2(e) (|x| <= 40: ~40 ulp of the argument's
  // relative error times |x| ln 2 ~ 30 ulp at the ends).
  check_softplus_silu<float>(4e-6);
  check_softplus_silu<double>(1e-14);
}

// ---- vector sums (cpu/reduce.hpp) ---------------------------------------------------------------------

/// reduce::sum, dot and a sum_of with a broadcast scalar, for every length up to 5 vectors and a few more: within
/// n ulp-sized steps of a long double loop, and the same bits wherever the rows sit (offsets 0 to 2 vectors' worth of
/// elements into a buffer).
template <class T>
void check_sums() {
  constexpr int L = simd::lanes<T>;
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  const double ulp = std::numeric_limits<T>::epsilon();
  for (index_t n = 0; n <= 5 * L + 3; ++n) {
    std::vector<T> x(static_cast<std::size_t>(n)), y(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<T>(u(rng)), y[i] = static_cast<T>(u(rng));
    long double want_sum = 0, want_dot = 0, want_sq = 0, abs_sum = 0, abs_dot = 0;
    const T c = T(0.25);
    for (std::size_t i = 0; i < x.size(); ++i) {
      want_sum += x[i], want_dot += static_cast<long double>(x[i]) * y[i], abs_sum += std::fabs(x[i]);
      abs_dot += std::fabs(static_cast<long double>(x[i]) * y[i]);
      want_sq += (static_cast<long double>(x[i]) - c) * (static_cast<long double>(x[i]) - c);
    }
    auto centered_squares = [&](const T* p) {
      return ssm::cpu::reduce::sum_of<T>(n, [&](auto read, index_t i) {
        const auto d = read(p, i) - c;
        return d * d;
      });
    };
    const T s0 = ssm::cpu::reduce::sum(x.data(), n), d0 = ssm::cpu::reduce::dot(x.data(), y.data(), n);
    const T q0 = centered_squares(x.data());
    const double bound = static_cast<double>(n + 1) * ulp;
    EXPECT_LE(std::fabs(static_cast<double>(s0 - want_sum)), bound * static_cast<double>(abs_sum)) << "n=" << n;
    EXPECT_LE(std::fabs(static_cast<double>(d0 - want_dot)), bound * static_cast<double>(abs_dot)) << "n=" << n;
    EXPECT_LE(std::fabs(static_cast<double>(q0 - want_sq)), 2 * bound * static_cast<double>(want_sq)) << "n=" << n;
    for (int off = 1; off <= 2 * L; ++off) {
      std::vector<T> xs(static_cast<std::size_t>(n + off)), ys(xs.size());
      std::copy(x.begin(), x.end(), xs.begin() + off), std::copy(y.begin(), y.end(), ys.begin() + off);
      const T* xo = xs.data() + off;
      const T s = ssm::cpu::reduce::sum(xo, n), d = ssm::cpu::reduce::dot(xo, ys.data() + off, n);
      const T q = centered_squares(xo);
      EXPECT_EQ(std::memcmp(&s, &s0, sizeof(T)), 0) << "sum, n=" << n << ", " << off << " elements in";
      EXPECT_EQ(std::memcmp(&d, &d0, sizeof(T)), 0) << "dot, n=" << n << ", " << off << " elements in";
      EXPECT_EQ(std::memcmp(&q, &q0, sizeof(T)), 0) << "sum_of, n=" << n << ", " << off << " elements in";
    }
  }
}

TEST(SelectiveScanCpuMath, VectorSumsAreAccurateAndDoNotDependOnTheAddress) {
  check_sums<float>();
  check_sums<double>();
}

// ---- problem setup ------------------------------------------------------------------------------------

struct Config {
  index_t b = 1, d = 20, l = 7, n = 16, g = 1;
  bool complex = false, var_B = true, var_C = true;
  bool has_D = true, has_z = true, has_bias = true, softplus = true, has_init = true, want_last = true;
  std::vector<std::int64_t> cu;  // cu_seqlens (then b = 1)
};

std::string describe(const Config& c) {
  std::string s = "b=" + std::to_string(c.b) + " d=" + std::to_string(c.d) + " l=" + std::to_string(c.l) +
                  " n=" + std::to_string(c.n) + " g=" + std::to_string(c.g);
  s += c.complex ? " complex" : " real";
  s += c.var_B ? " varB" : " fixB";
  s += c.var_C ? " varC" : " fixC";
  if (c.has_D) s += " D";
  if (c.has_z) s += " z";
  if (c.has_bias) s += " bias";
  if (c.softplus) s += " softplus";
  if (c.has_init) s += " h0";
  if (!c.cu.empty()) s += " cu_seqlens(" + std::to_string(c.cu.size() - 1) + ")";
  return s;
}

/// One problem of the scan problem generator (tests/conformance/scan_problem.hpp) with its rows padded (strided
/// inputs), its outputs, and the ScanParams the op builds over them (ssm::scan_params).
template <class In>
struct Problem {
  using W = ssm::cpu::detail::scan::weight_t<In>;
  using Cw = std::complex<W>;
  Config cfg;
  scan_problem::ScanData data;
  ssm::Tensor out_t, last_t;
  ssm::scan_detail::PreparedScan prepared;  // p.cu_seqlens points into it
  ScanParams p;
  std::span<In> out;    // (b, d, l)
  std::span<W> last;    // (b | n_seqs, d, n), real A
  std::span<Cw> lastc;  // the same, complex A

  static scan_problem::ScanCase to_case(const Config& c, unsigned seed) {
    scan_problem::ScanCase sc;
    sc.b = c.b, sc.d = c.d, sc.l = c.l, sc.n = c.n, sc.g = c.g;
    sc.complex = c.complex, sc.var_B = c.var_B, sc.var_C = c.var_C;
    sc.has_D = c.has_D, sc.has_z = c.has_z, sc.has_bias = c.has_bias, sc.softplus = c.softplus, sc.has_init = c.has_init;
    sc.cu = c.cu;
    sc.dtype = ssm::dtype_of<In>();
    sc.seed = seed;
    sc.pad = 3;  // extra elements per row of u, delta, z, B, C, the initial state
    return sc;
  }

  explicit Problem(const Config& c, unsigned seed = 1) : cfg(c), data(scan_problem::make_data(to_case(c, seed))) {
    const index_t rows = data.state_rows();
    out_t = ssm::Tensor::zeros({c.b, c.d, c.l}, ssm::dtype_of<In>());  // (b, d, l)
    if (c.want_last)
      last_t = ssm::Tensor::zeros({rows, c.d, c.n}, c.complex ? ssm::dtype_of<Cw>() : ssm::dtype_of<W>());
    prepared = ssm::scan_params(data.inputs(), out_t, c.want_last ? std::optional<ssm::TensorView>(last_t.view())
                                                                 : std::nullopt);
    p = prepared.p;
    out = {out_t.data_as<In>(), static_cast<std::size_t>(out_t.numel())};
    if (c.want_last && c.complex) lastc = {last_t.data_as<Cw>(), static_cast<std::size_t>(last_t.numel())};
    if (c.want_last && !c.complex) last = {last_t.data_as<W>(), static_cast<std::size_t>(last_t.numel())};
  }

  ssm::cpu::ScanRun run_cpu(const ssm::cpu::ScanCpuOptions& opt) { return ssm::cpu::selective_scan_forward<In>(p, opt); }
  std::string run(const ssm::cpu::ScanCpuOptions& opt) { return run_cpu(opt).name; }
  double out_at(std::size_t i) const { return static_cast<double>(static_cast<W>(static_cast<float>(out[i]))); }
  std::complex<double> last_at(std::size_t i) const {
    if (cfg.complex) return {static_cast<double>(lastc[i].real()), static_cast<double>(lastc[i].imag())};
    return {static_cast<double>(last[i]), 0.0};
  }
};

template <>
double Problem<double>::out_at(std::size_t i) const {
  return out[i];
}

/// Max |x - ref| / max |ref| (normalized: an element-wise relative error is meaningless where y crosses 0).
struct Errors {
  double out = 0, last = 0;
};

/// Runs ssm::reference::selective_scan_forward (double accumulation) on the same inputs into separate
/// buffers and returns the normalized errors of the optimized output and last state against it.
template <class In>
Errors compare_to_reference(Problem<In>& prob) {
  using W = typename Problem<In>::W;
  using Cw = typename Problem<In>::Cw;
  ScanParams q = prob.p;
  std::vector<In> ref_out(prob.out.size());
  std::vector<W> ref_last(prob.last.size());
  std::vector<Cw> ref_lastc(prob.lastc.size());
  q.out = ref_out.data();
  q.last_state = prob.cfg.want_last ? (prob.cfg.complex ? static_cast<void*>(ref_lastc.data())
                                                        : static_cast<void*>(ref_last.data()))
                                    : nullptr;
  ssm::reference::selective_scan_forward<In>(q);
  auto to_d = [](In x) { return static_cast<double>(static_cast<W>(static_cast<float>(x))); };
  Errors e;
  double scale = 0, err = 0;
  for (std::size_t i = 0; i < ref_out.size(); ++i) {
    const double r = std::is_same_v<In, double> ? static_cast<double>(static_cast<W>(ref_out[i])) : to_d(ref_out[i]);
    scale = std::max(scale, std::abs(r));
    err = std::max(err, std::abs(prob.out_at(i) - r));
  }
  e.out = scale > 0 ? err / scale : err;
  if (prob.cfg.want_last) {
    scale = err = 0;
    for (std::size_t i = 0; i < std::max(ref_last.size(), ref_lastc.size()); ++i) {
      const std::complex<double> r =
          prob.cfg.complex ? std::complex<double>(ref_lastc[i].real(), ref_lastc[i].imag())
                           : std::complex<double>(ref_last[i], 0.0);
      scale = std::max(scale, std::abs(r));
      err = std::max(err, std::abs(prob.last_at(i) - r));
    }
    e.last = scale > 0 ? err / scale : err;
  }
  return e;
}

// Tolerances (normalized max error, see Errors). f32: the state and the exp2 polynomial in f32 (2.5e-7
// per factor) over decays of up to a few hundred significant steps, plus f32 rounding of the sums over
// n <= 64 states: a few 1e-7 observed; the bound 1e-5. f64: the same in f64, issue bound 1e-12.
// f16 / bf16: both outputs are rounded to the input type, so they may differ by one ulp of it (2^-10 =
// 9.8e-4 / 2^-7 = 7.8e-3 of |y|); the rest is computed in f32 from the same rounded inputs.
template <class In>
double tolerance() {
  if constexpr (std::is_same_v<In, double>) return 1e-12;
  else if constexpr (std::is_same_v<In, float>) return 1e-5;
  else if constexpr (std::is_same_v<In, ssm::half>) return 1.5e-3;
  else return 1.2e-2;
}

template <class In>
void expect_matches(const Config& c, const ssm::cpu::ScanCpuOptions& opt, const std::string& expect_path = "") {
  Problem<In> prob(c);
  const std::string path = prob.run(opt);
  if (!expect_path.empty()) {
    EXPECT_NE(path.find(expect_path), std::string::npos) << path;
  }
  const Errors e = compare_to_reference(prob);
  EXPECT_LE(e.out, tolerance<In>()) << describe(c) << " path " << path;
  if (c.want_last) {  // NOLINT
    // The state is never rounded to the input type: f32 tolerance for f16 / bf16.
    const double tol_last = std::is_same_v<In, double> ? 1e-12 : 1e-5;
    EXPECT_LE(e.last, tol_last) << describe(c) << " path " << path;
  }
}

ssm::cpu::ScanCpuOptions opts(int threads, ssm::ScanPath path = ssm::ScanPath::sequential,
                              index_t chunk = 0) {
  ssm::cpu::ScanCpuOptions o;
  o.num_threads = threads;
  o.path = path;
  o.chunk_len = chunk;
  return o;
}

// ---- tests of the paths against the oracle ----------------------------------------------------------------

template <class T>
class SelectiveScanCpu : public ::testing::Test {};
using FloatTypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(SelectiveScanCpu, FloatTypes);

TYPED_TEST(SelectiveScanCpu, AwkwardShapesAllFeatures) {
  const std::string level = simd::kLevel;
  for (index_t l : {1, 7, 2049}) {
    for (index_t n : {1, 16, 64}) {
      for (index_t g : {1, 2}) {
        Config c;
        c.b = l > 1000 ? 1 : 3;
        c.d = g == 1 ? 19 : 38;  // not a multiple of the lanes; groups of 19 channels
        c.l = l;
        c.n = n;
        c.g = g;
        if (l > 1000 && n == 64) c.d = 5 * g;
        expect_matches<TypeParam>(c, opts(2), "cpu-" + level + "-sequential");
      }
    }
  }
}

TYPED_TEST(SelectiveScanCpu, LongSequence) {
  Config c;
  c.b = 1;
  c.d = 17;
  c.l = 5000;
  c.n = 16;
  c.g = 1;
  expect_matches<TypeParam>(c, opts(1));
  expect_matches<TypeParam>(c, opts(2, ssm::ScanPath::chunked), "chunked");
}

TYPED_TEST(SelectiveScanCpu, FeatureSubsets) {
  // Each optional input on and off (all on is covered above), fixed B / C, no softplus.
  for (int mask = 0; mask < 64; ++mask) {
    Config c;
    c.b = 2;
    c.d = 24;
    c.l = 37;
    c.n = 5;
    c.g = 2;
    c.has_D = mask & 1;
    c.has_z = mask & 2;
    c.has_bias = mask & 4;
    c.softplus = mask & 8;
    c.has_init = mask & 16;
    c.want_last = mask & 32;
    c.var_B = (mask % 3) != 0;
    c.var_C = (mask % 5) != 0;
    expect_matches<TypeParam>(c, opts(2));
  }
}

TYPED_TEST(SelectiveScanCpu, ComplexA) {
  for (index_t n : {1, 16}) {
    for (int fixed = 0; fixed < 3; ++fixed) {
      Config c;
      c.complex = true;
      c.b = 3;
      c.d = 6;
      c.l = 301;
      c.n = n;
      c.g = 2;
      c.var_B = fixed != 1;
      c.var_C = fixed != 2;
      expect_matches<TypeParam>(c, opts(2), "complex");
    }
  }
}

TYPED_TEST(SelectiveScanCpu, PackedVariableLength) {
  // Oracle comparison with cu_seqlens (incl. one-token sequences), and packed == separate calls.
  for (bool complex : {false, true}) {
    Config c;
    c.b = 1;
    c.d = 18;
    c.l = 700;
    c.n = 16;
    c.complex = complex;
    c.cu = {0, 13, 14, 400, 401, 700};  // one-token sequences (the op rejects empty ones: cu_seqlens strictly increasing)
    expect_matches<TypeParam>(c, opts(2));
    if (!complex) expect_matches<TypeParam>(c, opts(2, ssm::ScanPath::chunked, 50), "chunked");
  }
  Config c;
  c.b = 1;
  c.d = 18;
  c.l = 700;
  c.n = 16;
  c.cu = {0, 250, 700};
  Problem<TypeParam> packed(c, 3);
  packed.run(opts(2));
  for (index_t s = 0; s < 2; ++s) {
    const index_t t0 = c.cu[s], len = c.cu[s + 1] - c.cu[s];
    Problem<TypeParam> one(c, 3);  // same data; run sequence s alone as a plain batch of 1
    using W = typename Problem<TypeParam>::W;
    const auto at_t0 = [&](const void* ptr) { return static_cast<const TypeParam*>(ptr) + t0; };
    one.p.cu_seqlens = nullptr;
    one.p.n_seqs = 0;
    one.p.seqlen = len;
    one.p.u = at_t0(one.p.u);
    one.p.delta = at_t0(one.p.delta);
    one.p.z = at_t0(one.p.z);
    one.p.B = at_t0(one.p.B);
    one.p.C = at_t0(one.p.C);
    one.p.out = static_cast<TypeParam*>(one.p.out) + t0;
    one.p.initial_state = static_cast<const W*>(one.p.initial_state) + s * one.p.init_batch_stride;
    one.p.last_state = static_cast<W*>(one.p.last_state) + s * one.p.last_batch_stride;
    one.run(opts(1));
    for (index_t ch = 0; ch < c.d; ++ch)
      for (index_t t = t0; t < t0 + len; ++t)
        EXPECT_EQ(one.out[ch * c.l + t], packed.out[ch * c.l + t]) << "seq " << s << " ch " << ch << " t " << t;
    for (index_t i = 0; i < c.d * c.n; ++i)
      EXPECT_EQ(one.last[s * c.d * c.n + i], packed.last[s * c.d * c.n + i]);
  }
}

TYPED_TEST(SelectiveScanCpu, ChunkedOnSeveralThreadsMatchesReferenceAndSequential) {
  // The chunked path splits each sequence in time; chunk k >= 1 starts from the state carried over chunks 0..k-1
  // (forward_chunked, phase 2). One thread with the balanced split is a single chunk that carries nothing, so: 2
  // and 3 threads, the balanced split (3 and 4 chunks of unequal lengths) and fixed chunk lengths (333: a ragged
  // last chunk; 64: dozens of chunks, more than the threads, so each thread carries several), on lengths that are
  // multiples of neither the chunk, the tile nor the lanes. The whole output and the last state against the
  // reference (the tolerances of every path here) and against the sequential path: chunked recombines
  // exp(A sum Delta) instead of the product of the per-step factors, equal up to the exp2 error times the chunk
  // count (2e-6 f32) / rounding (1e-13 f64).
  const std::string want_path = std::string("cpu-") + simd::kLevel + "-chunked";
  const double tol_seq = std::is_same_v<TypeParam, double> ? 1e-13 : 2e-6;
  const double tol_last = std::is_same_v<TypeParam, double> ? 1e-12 : 1e-5;  // as expect_matches
  for (index_t l : {2999, 1001}) {
    Config c;
    c.b = 2;
    c.d = 16;
    c.l = l;
    c.n = 16;
    Problem<TypeParam> seq(c);
    EXPECT_EQ(seq.run(opts(1)), std::string("cpu-") + simd::kLevel + "-sequential");
    double scale = 0;
    for (auto v : seq.out) scale = std::max(scale, std::abs(static_cast<double>(v)));
    for (int threads : {2, 3}) {
      for (index_t chunk : {0, 333, 64}) {
        SCOPED_TRACE("l " + std::to_string(l) + " threads " + std::to_string(threads) + " chunk_len " +
                     std::to_string(chunk));
        Problem<TypeParam> chk(c);
        EXPECT_EQ(chk.run(opts(threads, ssm::ScanPath::chunked, chunk)), want_path);
        const Errors e = compare_to_reference(chk);
        EXPECT_LE(e.out, tolerance<TypeParam>());
        EXPECT_LE(e.last, tol_last);
        double err = 0, err_last = 0;
        for (std::size_t i = 0; i < seq.out.size(); ++i)
          err = std::max(err, std::abs(static_cast<double>(chk.out[i]) - static_cast<double>(seq.out[i])));
        for (std::size_t i = 0; i < seq.last.size(); ++i)
          err_last = std::max(err_last, std::abs(static_cast<double>(chk.last[i]) - static_cast<double>(seq.last[i])));
        EXPECT_LE(err, tol_seq * scale) << "output vs the sequential path";
        EXPECT_LE(err_last, tol_seq * 10) << "last state vs the sequential path";
      }
    }
  }
}

TYPED_TEST(SelectiveScanCpu, SplitCallsCarryState) {
  // One call over l == two calls over [0, m) and [m, l) with the first's last state as the second's
  // initial state: bit-identical when the split falls on a tile boundary (here: any split, same loops).
  Config c;
  c.b = 3;
  c.d = 21;
  c.l = 600;
  c.n = 16;
  c.g = 1;
  Problem<TypeParam> whole(c, 5), parts(c, 5);
  whole.run(opts(2));
  const index_t m = 256;  // a multiple of the tile length: the same arithmetic in both runs
  ScanParams first = parts.p, second = parts.p;
  std::vector<typename Problem<TypeParam>::W> mid(parts.last.size());
  first.seqlen = m;
  first.last_state = mid.data();
  ssm::cpu::selective_scan_forward<TypeParam>(first, opts(2));
  second.seqlen = c.l - m;
  for (auto* ptr : {&second.u, &second.delta, &second.z})
    *ptr = static_cast<const TypeParam*>(*ptr) + m;
  second.B = static_cast<const TypeParam*>(second.B) + m;
  second.C = static_cast<const TypeParam*>(second.C) + m;
  second.out = static_cast<TypeParam*>(second.out) + m;
  second.initial_state = mid.data();
  second.init_batch_stride = c.d * c.n;
  second.init_d_stride = c.n;
  second.init_n_stride = 1;
  ssm::cpu::selective_scan_forward<TypeParam>(second, opts(2));
  for (std::size_t i = 0; i < whole.out.size(); ++i) ASSERT_EQ(whole.out[i], parts.out[i]) << i;
  for (std::size_t i = 0; i < whole.last.size(); ++i) ASSERT_EQ(whole.last[i], parts.last[i]) << i;
}

TEST(SelectiveScanCpu16, HalfAndBfloat16Inputs) {
  for (index_t l : {7, 300}) {
    Config c;
    c.b = 2;
    c.d = 19;
    c.l = l;
    c.n = 16;
    c.g = 1;
    expect_matches<ssm::half>(c, opts(2));
    expect_matches<ssm::bfloat16>(c, opts(2));
    c.var_B = false;
    expect_matches<ssm::half>(c, opts(2, ssm::ScanPath::chunked, 100), std::string("cpu-") + simd::kLevel + "-chunked");
    c.complex = true;
    expect_matches<ssm::bfloat16>(c, opts(2));
  }
}

TEST(SelectiveScanCpuDispatch, AutomaticPicksChunkedForLongThin) {
  // One channel block (fewer work items than threads) and a long sequence: the time axis is split.
  Config c;
  c.b = 1;
  c.d = simd::lanes<float>;
  c.l = 9000;
  c.n = 4;
  Problem<float> prob(c);
  const ssm::cpu::ScanRun ran = prob.run_cpu(opts(2, ssm::ScanPath::automatic));
  EXPECT_EQ(ran.path, ssm::ScanPath::chunked);
  EXPECT_FALSE(ran.complex || ran.saved_chunk_states);
  EXPECT_EQ(ran.name, std::string("cpu-") + simd::kLevel + "-chunked");
  // 2 threads, the balanced split: 3 chunks. The output and the last state (the carry over all chunks) against the
  // reference.
  const Errors e = compare_to_reference(prob);
  EXPECT_LE(e.out, 1e-5);
  EXPECT_LE(e.last, 1e-5);
  Problem<float> wide(Config{});
  EXPECT_EQ(wide.run_cpu(opts(2, ssm::ScanPath::automatic)).path, ssm::ScanPath::sequential);
  EXPECT_EQ(wide.run_cpu(opts(1, ssm::ScanPath::automatic)).path, ssm::ScanPath::sequential);
  // ScanPath::reference is the oracle's, not a CPU kernel's: an ssm::Error, not a silent fast path.
  EXPECT_THROW(prob.run_cpu(opts(1, ssm::ScanPath::reference)), ssm::Error);
}

}  // namespace

// The default thread count follows the work: one thread for a tiny problem, all hardware threads for a
// large one; an explicit request is always honoured.
TEST(ScanCpuThreads, DefaultScalesWithWork) {
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  EXPECT_EQ(ssm::cpu::cpu_threads(0, 1), 1);
  EXPECT_EQ(ssm::cpu::cpu_threads(0, ssm::cpu::kMinUpdatesPerThread - 1), 1);
  EXPECT_EQ(ssm::cpu::cpu_threads(0, ssm::cpu::kMinUpdatesPerThread * 1000), hw);
  EXPECT_EQ(ssm::cpu::cpu_threads(0, ssm::cpu::kMinUpdatesPerThread * 2), std::min(hw, 2));
  EXPECT_EQ(ssm::cpu::cpu_threads(3, 1), 3);
}
