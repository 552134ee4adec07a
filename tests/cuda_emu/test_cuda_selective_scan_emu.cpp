// The fused selective-scan forward kernel (cuda/kernels/selective_scan_fwd.cuh) run on the CPU under the host
// emulation, against a plain double-precision loop of MATH.md §5: lengths 1, 31, 2047, 2048, 2049, 5000
// (one and several chunks, ragged tails), n in {1, 16, 64}, groups, fixed and variable B / C, with and without
// z / D / delta bias / initial state, packed variable-length batches, f32 / f16 / bf16 inputs, every thread
// order, and the production configuration (128 threads x 16 items) as well as small ones.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kernels/selective_scan_fwd.cuh"

namespace {

using ssm::ScanParams;
using ssm::emu::LaunchConfig;
using ssm::emu::Order;
using index_t = std::int64_t;

struct Case {
  index_t b = 2, d = 4, l = 100, n = 16, g = 2;
  bool variable_B = true, variable_C = true;
  bool has_z = true, has_D = true, has_bias = true, softplus = true, has_init = true;
  std::vector<std::int64_t> cu_seqlens;  // non-empty: b = 1, packed sequences
  std::string name() const {
    std::string s = "b" + std::to_string(b) + " d" + std::to_string(d) + " l" + std::to_string(l) + " n" +
                    std::to_string(n) + " g" + std::to_string(g);
    if (!variable_B) s += " fixedB";
    if (!variable_C) s += " fixedC";
    if (!has_z) s += " no-z";
    if (!has_D) s += " no-D";
    if (!has_bias) s += " no-bias";
    if (!softplus) s += " no-softplus";
    if (!has_init) s += " no-init";
    if (!cu_seqlens.empty()) s += " varlen";
    return s;
  }
};

template <class In>
std::vector<In> random_inputs(std::mt19937& rng, std::size_t count, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<In> v(count);
  for (auto& x : v) x = ssm::from_float<In>(dist(rng));
  return v;
}

double to_d(float x) { return x; }
template <class In>
double to_d(In x) {
  return static_cast<double>(ssm::to_float(x));
}

// Tolerances: the kernel computes in f32 (expf, a tree-shaped scan instead of the sequential one), the
// reference in double on the same (rounded) inputs. With A <= -0.5 and Delta >= 0.05 each state forgets within
// ~40 steps, so f32 rounding stays at a few ulp of the magnitude of the terms summed into y (that magnitude,
// sum_n |C h| + |D u|, is the scale): 1e-5 relative to it, the bound. f16 / bf16 add one rounding of
// the output: half an ulp, 2^-11 and 2^-8 relative.
template <class In>
double out_tolerance() {
  if constexpr (std::is_same_v<In, float>) return 1e-5;
  else if constexpr (std::is_same_v<In, ssm::half>) return 1e-5 + std::ldexp(1.0, -11);
  else return 1e-5 + std::ldexp(1.0, -8);
}

// Largest |out - reference| / scale seen in this test program (printed at the end).
double g_worst[3] = {0, 0, 0};  // f32, f16, bf16
template <class In>
constexpr int dtype_slot() {
  return std::is_same_v<In, float> ? 0 : std::is_same_v<In, ssm::half> ? 1 : 2;
}

template <class In, class Cfg>
void run_case(const Case& c, Order order, std::uint64_t seed) {
  SCOPED_TRACE(c.name() + " order " + ssm::emu::name(order) + " seed " + std::to_string(seed) + " threads " +
               std::to_string(Cfg::kThreads) + " items " + std::to_string(Cfg::kItems));
  const bool varlen = !c.cu_seqlens.empty();
  const index_t b = c.b, d = c.d, l = c.l, n = c.n, g = c.g;
  const index_t seqs = varlen ? static_cast<index_t>(c.cu_seqlens.size()) - 1 : b;
  std::mt19937 rng(static_cast<unsigned>(1234 + l * 7 + n * 13 + g));
  auto u = random_inputs<In>(rng, static_cast<std::size_t>(b * d * l), -1.0f, 1.0f);       // (b, d, l)
  auto delta = random_inputs<In>(rng, static_cast<std::size_t>(b * d * l), -3.0f, -0.5f);  // (b, d, l)
  auto z = random_inputs<In>(rng, static_cast<std::size_t>(b * d * l), -2.0f, 2.0f);       // (b, d, l)
  auto B_var = random_inputs<In>(rng, static_cast<std::size_t>(b * g * n * l), -1.0f, 1.0f);  // (b, g, n, l)
  auto C_var = random_inputs<In>(rng, static_cast<std::size_t>(b * g * n * l), -1.0f, 1.0f);  // (b, g, n, l)
  auto B_fix = random_inputs<float>(rng, static_cast<std::size_t>(d * n), -1.0f, 1.0f);       // (d, n)
  auto C_fix = random_inputs<float>(rng, static_cast<std::size_t>(d * n), -1.0f, 1.0f);       // (d, n)
  auto D = random_inputs<float>(rng, static_cast<std::size_t>(d), -1.0f, 1.0f);               // (d)
  auto bias = random_inputs<float>(rng, static_cast<std::size_t>(d), 0.0f, 0.5f);             // (d)
  auto h0 = random_inputs<float>(rng, static_cast<std::size_t>(seqs * d * n), -1.0f, 1.0f);   // (seqs, d, n)
  std::vector<float> A(static_cast<std::size_t>(d * n));                                      // (d, n)
  {
    std::uniform_real_distribution<float> jitter(0.5f, 1.5f);
    for (index_t i = 0; i < d; ++i)
      for (index_t s = 0; s < n; ++s) A[static_cast<std::size_t>(i * n + s)] = -static_cast<float>(s + 1) * jitter(rng);
  }
  // Without softplus delta is used as given: keep it positive.
  if (!c.softplus)
    for (auto& x : delta) x = ssm::from_float<In>(0.05f + std::fabs(ssm::to_float(x)) * 0.2f);

  ScanParams p;
  p.batch = b;
  p.dim = d;
  p.seqlen = l;
  p.dstate = n;
  p.n_groups = g;
  p.variable_B = c.variable_B;
  p.variable_C = c.variable_C;
  p.delta_softplus = c.softplus;
  p.u = u.data();
  p.u_batch_stride = d * l;
  p.u_d_stride = l;
  p.delta = delta.data();
  p.delta_batch_stride = d * l;
  p.delta_d_stride = l;
  if (c.has_z) {
    p.z = z.data();
    p.z_batch_stride = d * l;
    p.z_d_stride = l;
  }
  if (c.variable_B) {
    p.B = B_var.data();
    p.B_batch_stride = g * n * l;
    p.B_group_stride = n * l;
    p.B_n_stride = l;
  } else {
    p.B = B_fix.data();
    p.B_group_stride = n;
    p.B_n_stride = 1;
  }
  if (c.variable_C) {
    p.C = C_var.data();
    p.C_batch_stride = g * n * l;
    p.C_group_stride = n * l;
    p.C_n_stride = l;
  } else {
    p.C = C_fix.data();
    p.C_group_stride = n;
    p.C_n_stride = 1;
  }
  p.A = A.data();
  p.A_d_stride = n;
  p.A_n_stride = 1;
  if (c.has_D) p.D = D.data();
  if (c.has_bias) p.delta_bias = bias.data();
  if (c.has_init) {
    p.initial_state = h0.data();
    p.init_batch_stride = d * n;
    p.init_d_stride = n;
    p.init_n_stride = 1;
  }
  std::vector<float> last(static_cast<std::size_t>(seqs * d * n), -99.0f);  // (seqs, d, n)
  p.last_state = last.data();
  p.last_batch_stride = d * n;
  p.last_d_stride = n;
  if (varlen) {
    p.cu_seqlens = c.cu_seqlens.data();
    p.n_seqs = seqs;
  }
  std::vector<In> out(static_cast<std::size_t>(b * d * l), ssm::from_float<In>(-77.0f));  // (b, d, l)
  p.out = out.data();
  p.out_batch_stride = d * l;
  p.out_d_stride = l;

  index_t max_len = l;
  if (varlen) {
    max_len = 0;
    for (index_t s = 0; s < seqs; ++s)
      max_len = std::max<index_t>(max_len, c.cu_seqlens[static_cast<std::size_t>(s + 1)] - c.cu_seqlens[static_cast<std::size_t>(s)]);
  }
  const index_t n_chunks_max = std::max<index_t>(1, (max_len + Cfg::kChunk - 1) / Cfg::kChunk);
  std::vector<float> saved(static_cast<std::size_t>(seqs * d * n_chunks_max * n), -55.0f);  // (seqs, d, c, n)

  LaunchConfig cfg{ssm::emu::dim3(static_cast<unsigned>(d), static_cast<unsigned>(seqs)),
                   ssm::emu::dim3(Cfg::kThreads), order, seed};
  const auto report = ssm::emu::launch(cfg, ssm::kernels::selective_scan_fwd_kernel<In, Cfg::kThreads, Cfg::kItems>,
                                       p, saved.data(), n_chunks_max);
  ASSERT_TRUE(report.ok()) << report.summary();

  // Reference: MATH.md §5 in double, token by token.
  const double tol = out_tolerance<In>();
  double worst = 0;
  for (index_t q = 0; q < seqs; ++q) {
    const index_t bb = varlen ? 0 : q;
    const index_t start = varlen ? c.cu_seqlens[static_cast<std::size_t>(q)] : 0;
    const index_t len = varlen ? c.cu_seqlens[static_cast<std::size_t>(q + 1)] - start : l;
    for (index_t ch = 0; ch < d; ++ch) {
      const index_t grp = ch / (d / g);
      std::vector<double> h(static_cast<std::size_t>(n));  // (n)
      for (index_t s = 0; s < n; ++s) h[static_cast<std::size_t>(s)] = c.has_init ? h0[static_cast<std::size_t>((q * d + ch) * n + s)] : 0.0;
      for (index_t t = 0; t < len; ++t) {
        const index_t pos = start + t;
        const std::size_t x = static_cast<std::size_t>((bb * d + ch) * l + pos);
        double Delta = to_d(delta[x]) + (c.has_bias ? bias[static_cast<std::size_t>(ch)] : 0.0);
        if (c.softplus) Delta = Delta <= 20.0 ? std::log1p(std::exp(Delta)) : Delta;
        const double u_t = to_d(u[x]);
        double y = 0, scale = 0;
        for (index_t s = 0; s < n; ++s) {
          const std::size_t bc = static_cast<std::size_t>(((bb * g + grp) * n + s) * l + pos);
          const double B_t = c.variable_B ? to_d(B_var[bc]) : B_fix[static_cast<std::size_t>(ch * n + s)];
          const double C_t = c.variable_C ? to_d(C_var[bc]) : C_fix[static_cast<std::size_t>(ch * n + s)];
          double& hs = h[static_cast<std::size_t>(s)];
          hs = std::exp(Delta * A[static_cast<std::size_t>(ch * n + s)]) * hs + Delta * B_t * u_t;
          y += C_t * hs;
          scale += std::fabs(C_t * hs);
        }
        if (c.has_D) {
          y += D[static_cast<std::size_t>(ch)] * u_t;
          scale += std::fabs(D[static_cast<std::size_t>(ch)] * u_t);
        }
        if (c.has_z) {
          const double z_t = to_d(z[x]);
          const double gate = z_t / (1.0 + std::exp(-z_t));
          y *= gate;
          scale *= std::fabs(gate);
        }
        const double err = std::fabs(to_d(out[x]) - y);
        const double bound = tol * (scale + 1e-30) + 1e-30;
        worst = std::max(worst, err / (scale + 1e-30));
        if (!(err <= bound)) {
          ADD_FAILURE() << "out[seq " << q << ", ch " << ch << ", t " << t << "] = " << to_d(out[x]) << ", reference "
                        << y << ", scale " << scale;
          return;
        }
        // The state at each chunk end (and at the sequence end) is what the backward pass restarts from.
        if ((t + 1) % Cfg::kChunk == 0 || t + 1 == len) {
          const index_t chunk = t / Cfg::kChunk;
          for (index_t s = 0; s < n; ++s) {
            const double ref = h[static_cast<std::size_t>(s)];
            const float got = saved[static_cast<std::size_t>(((q * d + ch) * n_chunks_max + chunk) * n + s)];
            ASSERT_NEAR(got, ref, 1e-5 * (1.0 + std::fabs(ref))) << "chunk state " << chunk << " s " << s;
          }
        }
      }
      // Output positions outside this sequence stay untouched (varlen: other sequences write them).
      for (index_t s = 0; s < n; ++s) {
        const double ref = h[static_cast<std::size_t>(s)];
        const float got = last[static_cast<std::size_t>((q * d + ch) * n + s)];
        ASSERT_NEAR(got, ref, 1e-5 * (1.0 + std::fabs(ref))) << "last state seq " << q << " ch " << ch << " s " << s;
      }
    }
  }
  ::testing::Test::RecordProperty("worst_relative_error", std::to_string(worst));
  g_worst[dtype_slot<In>()] = std::max(g_worst[dtype_slot<In>()], worst);
}

using Small = ssm::kernels::ScanFwdConfig<32, 4>;  // 128-token chunks: many chunks at modest emulation cost

const Order kOrders[] = {Order::forward, Order::reverse, Order::random};

TEST(CudaSelectiveScanEmu, LengthsAcrossChunkBoundaries) {
  for (index_t l : {1, 31, 2047, 2048, 2049, 5000}) {
    Case c;
    c.l = l;
    c.d = 2;
    for (Order o : kOrders) run_case<float, Small>(c, o, 7);
  }
}

TEST(CudaSelectiveScanEmu, StateSizes) {
  for (index_t n : {1, 16, 64}) {
    Case c;
    c.l = 300;
    c.n = n;
    for (Order o : kOrders) run_case<float, Small>(c, o, 11);
  }
}

TEST(CudaSelectiveScanEmu, OptionalInputsAndGroups) {
  std::vector<Case> cases;
  Case base;
  base.l = 260;
  base.d = 4;
  {
    Case c = base;
    c.has_z = false;
    cases.push_back(c);
  }
  {
    Case c = base;
    c.has_D = false;
    c.has_init = false;
    cases.push_back(c);
  }
  {
    Case c = base;
    c.has_bias = false;
    c.softplus = false;
    cases.push_back(c);
  }
  {
    Case c = base;
    c.variable_B = false;
    cases.push_back(c);
  }
  {
    Case c = base;
    c.variable_C = false;
    c.g = 1;
    cases.push_back(c);
  }
  {
    Case c = base;
    c.variable_B = c.variable_C = false;
    c.has_z = c.has_D = c.has_init = c.has_bias = false;
    cases.push_back(c);
  }
  {
    Case c = base;
    c.g = 4;  // one channel per group
    cases.push_back(c);
  }
  for (const Case& c : cases)
    for (Order o : kOrders) run_case<float, Small>(c, o, 3);
}

TEST(CudaSelectiveScanEmu, PackedVariableLengthSequences) {
  Case c;
  c.b = 1;
  c.d = 2;
  c.cu_seqlens = {0, 0, 1, 131, 390, 647};  // an empty sequence, one token, several chunks, ragged tails
  c.l = c.cu_seqlens.back();
  for (Order o : kOrders) run_case<float, Small>(c, o, 5);
}

TEST(CudaSelectiveScanEmu, HalfAndBfloat16Inputs) {
  Case c;
  c.l = 300;
  for (Order o : kOrders) {
    run_case<ssm::half, Small>(c, o, 13);
    run_case<ssm::bfloat16, Small>(c, o, 13);
  }
}

TEST(CudaSelectiveScanEmu, ProductionConfigurations) {
  // The configurations the launcher picks (dispatch_fwd_config), at lengths that select each of them.
  for (index_t l : {100, 1000, 2049}) {
    Case c;
    c.l = l;
    c.b = 1;
    c.d = 2;
    ssm::kernels::dispatch_fwd_config(l, [&](auto cfg) {
      using Cfg = decltype(cfg);
      run_case<float, Cfg>(c, Order::forward, 1);
      run_case<float, Cfg>(c, Order::random, 2);
    });
  }
  Case c;
  c.l = 2049;
  c.b = 1;
  c.d = 1;
  c.g = 1;
  ssm::kernels::dispatch_fwd_config(c.l, [&](auto cfg) { run_case<ssm::bfloat16, decltype(cfg)>(c, Order::reverse, 3); });
}

TEST(CudaSelectiveScanEmu, WorstErrorSeen) {
  std::printf("worst |out - reference| / scale over the emulated runs: f32 %.3g, f16 %.3g, bf16 %.3g\n", g_worst[0],
              g_worst[1], g_worst[2]);
  EXPECT_LE(g_worst[0], out_tolerance<float>());
}

}  // namespace
