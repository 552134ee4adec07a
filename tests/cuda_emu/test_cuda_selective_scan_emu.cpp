// The fused selective-scan forward kernel (cuda/kernels/selective_scan_fwd.cuh) run on the CPU under the host
// emulation, against a plain double-precision loop of MATH.md §5: lengths 1, 31, 2047, 2048, 2049, 5000
// (one and several chunks, ragged tails), n in {1, 16, 64}, groups, fixed and variable B / C, with and without
// z / D / delta bias / initial state, packed variable-length batches, f32 / f16 / bf16 inputs, every thread
// order, and the configurations the launcher picks (up to 256 threads x 8 items) as well as a small one.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kernels/selective_scan_fwd.cuh"
#include "selective_scan_problem.hpp"

namespace {

using ssm_test::Case;
using ssm_test::out_tolerance;
using ssm_test::ScanProblem;
using ssm::emu::LaunchConfig;
using ssm::emu::Order;
using index_t = std::int64_t;

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
  ScanProblem<In> prob(c);
  const index_t n_chunks_max = std::max<index_t>(1, (prob.max_len + Cfg::kChunk - 1) / Cfg::kChunk);
  std::vector<float> saved(static_cast<std::size_t>(prob.seqs * c.d * n_chunks_max * c.n), -55.0f);  // (seqs, d, c, n)
  LaunchConfig cfg{ssm::emu::dim3(static_cast<unsigned>(c.d), static_cast<unsigned>(prob.seqs)),
                   ssm::emu::dim3(Cfg::kThreads), order, seed};
  const auto report = ssm::emu::launch(cfg, ssm::kernels::selective_scan_fwd_kernel<In, Cfg::kThreads, Cfg::kItems>,
                                       prob.p, saved.data(), n_chunks_max);
  ASSERT_TRUE(report.ok()) << report.summary();
  const double worst = prob.check(prob.out, prob.last, &saved, Cfg::kChunk, n_chunks_max);
  ::testing::Test::RecordProperty("worst_relative_error", std::to_string(worst));
  g_worst[dtype_slot<In>()] = std::max(g_worst[dtype_slot<In>()], worst);
}

using Small = ssm::kernels::ScanFwdConfig<32, 4>;  // 128-token chunks: many chunks at modest emulation cost

const Order kOrders[] = {Order::forward, Order::reverse, Order::random};

TEST(CudaSelectiveScanEmu, LengthsAcrossChunkBoundaries) {
  for (index_t l : {1, 31, 2047, 2048, 2049, 5000}) {
    Case c;
    c.l = l;
    c.b = 1;  // batch > 1 is covered by the other tests; this keeps the ASan run short
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
