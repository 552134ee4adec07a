// Linear attention and retention (ops/linear_attention.hpp, docs/linear_attention.md) throughput in state updates
// per second, b·l·h·dk·dv / time, at issue #16's shape: l = 4096, dk = dv = 128, 4 heads, b = 1, f32, 1 thread:
//   - the chunked forward (on the SSD engine) at chunk sizes 64 and 128, with speedup_over_loop: the token loop's
//     best time (LinearAttentionPath::recurrent, 3 calls timed here) over the chunked form's best (target >= 5);
//   - the token loop alone;
//   - the chunked backward with bwd_over_fwd: its best time over the forward's best of 5 (target <= 3).
// Variants (the first argument): 0 linear attention (φ = identity, no normalizer), 1 retention (γ_h of RetNet, scale
// dk^-1/2), 2 Katharopoulos (φ = elu + 1 with the normalizer), 3 GLA (a log gate per key channel in [−0.1, 0), about
// what GLA's logsigmoid / 16 gives: the gated chunk algebra, one product per chunk), 4 GLA with a gate in [−1, 0)
// (spans of ~32 per chunk of 64: blocks split once in f32).
// The delta rule (ops/delta_rule.hpp, docs/delta_rule.md) at the same shape, BM_dr_*: the chunked forward (WY / UT)
// with speedup_over_loop, the token loop, and the backward with bwd_over_fwd (its best time over the chunked
// forward's best): path 0 the chunked WY / UT backward, 1 the token loop over checkpointed states. Variants: 0
// DeltaNet, 1 Gated DeltaNet; both with L2-normalized q, k and scale dk^-1/2.
// RWKV-7's generalized delta rule (ops/rwkv7.hpp, docs/rwkv7.md) at the same shape, BM_rwkv7_*: the chunked forward
// with speedup_over_loop, the token loop, and the backward with bwd_over_fwd (its best time over the chunked
// forward's best at the same chunk): path 0 the chunked backward, 1 the token loop over states checkpointed every
// chunk. The inputs are drawn as the model forms them (log w in [−1, −0.01), a = −κ̂, b = κ̂ ⊙ a_icl).
// TTT-Linear (ops/ttt_linear.hpp, docs/ttt_linear.md), BM_ttt_*: the dual form with speedup_over_loop (the token
// loop's best over the dual form's best) at mini-batch sizes 16 (the paper's) and 64, and the token loop, at d = 128
// (the shape above: updates_per_s counts b·l·h·d², the inner model's size) and d = 64 (the paper's head width), with
// the paper's position weights τ_i = 1 / (i + 1) and η in [0, 0.1); and the dual form's backward with bwd_over_fwd (its
// best time over the dual forward's best of 3).
// Every chunked forward (BM_la_chunked, BM_dr_chunked, BM_rwkv7_chunked, BM_ttt_dual) also reports flops_per_s, its
// algorithm's matrix-product flops (bench/mixer_flops.hpp) over its best time, and gemm_fraction, that rate over the
// single-thread Eigen GEMM rate measured in this binary (bench/gemm_rate.hpp; bench_ssd reports Mamba-2's the same
// way).
// RWKV-4's WKV recurrence (ops/rwkv4.hpp, docs/rwkv4.md), BM_rwkv4_*: channel steps per second, b·l·c / time, at
// l = 4096 and c = 768 / 2048 (RWKV-4 169M's and 1.5B's widths), f32, 1 thread: the forward (the vectorized loop,
// two exponentials per channel and step) with steps_per_exp_s, its rate over the machine's rate of single
// exponentials in the same vectors (one simd::exp per lane, measured here); the reference loop in double for scale;
// and the backward (over states checkpointed every 64 steps) with bwd_over_fwd.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <random>

#include "../tests/conformance/delta_rule_problem.hpp"
#include "../tests/conformance/linear_attention_problem.hpp"
#include "../tests/conformance/rwkv4_problem.hpp"
#include "../tests/conformance/rwkv7_problem.hpp"
#include "../tests/conformance/ttt_linear_problem.hpp"
#include "gemm_rate.hpp"
#include "mixer_flops.hpp"
#include "ssm/cpu/simd.hpp"
#include "ssm/ops/delta_rule.hpp"
#include "ssm/ops/linear_attention.hpp"
#include "ssm/ops/rwkv4.hpp"
#include "ssm/ops/rwkv7.hpp"
#include "ssm/ops/ttt_linear.hpp"

namespace {

using ssm::index_t;
using Clock = std::chrono::steady_clock;

linear_attention_problem::LaCase bench_case(index_t l, int variant) {
  linear_attention_problem::LaCase c;
  c.b = 1, c.l = l, c.h = 4, c.g = 4, c.dk = 128, c.dv = 128, c.dtype = ssm::DType::f32;
  if (variant == 2) c.feature_map = ssm::FeatureMap::elu_plus_one, c.normalize = true;
  if (variant == 3) c.gate = 0.1;
  if (variant == 4) c.gate = 1;
  return c;
}

ssm::LinearAttentionOptions bench_options(const linear_attention_problem::LaData& d, int variant, index_t chunk,
                                          ssm::LinearAttentionPath path) {
  ssm::LinearAttentionOptions o = d.options();
  if (variant == 1) o.gamma = ssm::retention_gammas(d.cs.h);
  if (variant == 1 || variant >= 3) o.scale = 1.0 / std::sqrt(static_cast<double>(d.cs.dk));
  o.chunk_size = chunk, o.threads = 1, o.path = path;
  return o;
}

double best_of(int n, const auto& fn) {
  double best = 1e30;
  for (int r = 0; r <= n; ++r) {  // the first a warm-up
    const auto t0 = Clock::now();
    fn();
    if (r > 0) best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

template <class Case>
void set_updates(benchmark::State& state, const Case& c) {
  const double updates = static_cast<double>(c.b * c.l * c.h * c.dk * c.dv);
  state.counters["updates_per_s"] = benchmark::Counter(updates, benchmark::Counter::kIsIterationInvariantRate);
}

/// flops_per_s and gemm_fraction of a chunked forward: its matrix-product flops (bench/mixer_flops.hpp) over its best
/// time, and that rate over the machine's single-thread GEMM rate measured in this binary (bench/gemm_rate.hpp).
void set_gemm_fraction(benchmark::State& state, double flops, double best_s) {
  state.counters["flops_per_s"] = flops / best_s;
  state.counters["gemm_fraction"] = flops / best_s / bench_gemm::gemm_rate();
}

void BM_la_chunked(benchmark::State& state) {
  const index_t l = state.range(0), chunk = state.range(2);
  const int variant = static_cast<int>(state.range(1));
  const auto d = linear_attention_problem::make_data(bench_case(l, variant));
  const ssm::Tensor out = ssm::Tensor::empty(d.v.shape(), d.v.dtype());
  const auto in = d.inputs();
  const auto opt = bench_options(d, variant, chunk, ssm::LinearAttentionPath::chunked);
  const auto loop = bench_options(d, variant, chunk, ssm::LinearAttentionPath::recurrent);
  const double loop_s = best_of(3, [&] { ssm::linear_attention_into(in, out, std::nullopt, std::nullopt, loop); });
  double best = 1e30;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    ssm::linear_attention_into(in, out, std::nullopt, std::nullopt, opt);
    benchmark::DoNotOptimize(out.data());
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  set_updates(state, d.cs);
  state.counters["speedup_over_loop"] = loop_s / best;
  const auto& c = d.cs;
  set_gemm_fraction(state, mixer_flops::linear_attention(c.b, c.l, c.h, c.dk, c.dv + (c.normalize ? 1 : 0), chunk),
                    best);
}

void BM_la_recurrent(benchmark::State& state) {
  const index_t l = state.range(0);
  const int variant = static_cast<int>(state.range(1));
  const auto d = linear_attention_problem::make_data(bench_case(l, variant));
  const ssm::Tensor out = ssm::Tensor::empty(d.v.shape(), d.v.dtype());
  const auto in = d.inputs();
  const auto opt = bench_options(d, variant, 64, ssm::LinearAttentionPath::recurrent);
  for (auto _ : state) {
    ssm::linear_attention_into(in, out, std::nullopt, std::nullopt, opt);
    benchmark::DoNotOptimize(out.data());
  }
  set_updates(state, d.cs);
}

void BM_la_backward(benchmark::State& state) {
  const index_t l = state.range(0), chunk = state.range(2);
  const int variant = static_cast<int>(state.range(1));
  const auto d = linear_attention_problem::make_data(bench_case(l, variant));
  std::mt19937_64 rng(5);
  const ssm::Tensor grad_out = linear_attention_problem::uniform(rng, d.v.shape(), d.v.dtype(), -1, 1);
  const ssm::Tensor out = ssm::Tensor::empty(d.v.shape(), d.v.dtype());
  const auto in = d.inputs();
  const auto opt = bench_options(d, variant, chunk, ssm::LinearAttentionPath::chunked);
  const double fwd = best_of(5, [&] { ssm::linear_attention_into(in, out, std::nullopt, std::nullopt, opt); });
  double bwd = 1e30;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    ssm::LinearAttentionGrads g = ssm::linear_attention_backward(in, grad_out, std::nullopt, std::nullopt, opt);
    benchmark::DoNotOptimize(g.grad_q.data());
    bwd = std::min(bwd, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  set_updates(state, d.cs);
  state.counters["bwd_over_fwd"] = bwd / fwd;
}

delta_rule_problem::DrData dr_data(index_t l, int variant) {
  delta_rule_problem::DrCase c;
  c.b = 1, c.l = l, c.h = 4, c.g = 4, c.dk = 128, c.dv = 128, c.dtype = ssm::DType::f32, c.gated = variant == 1;
  c.scale = 1.0 / std::sqrt(static_cast<double>(c.dk));
  return delta_rule_problem::make_data(c);
}

ssm::DeltaRuleOptions dr_options(const delta_rule_problem::DrData& d, index_t chunk, ssm::DeltaRulePath path) {
  ssm::DeltaRuleOptions o = d.options();
  o.chunk_size = chunk, o.threads = 1, o.path = path;
  return o;
}

void BM_dr_chunked(benchmark::State& state) {
  const index_t chunk = state.range(2);
  const auto d = dr_data(state.range(0), static_cast<int>(state.range(1)));
  const ssm::Tensor out = ssm::Tensor::empty(d.v.shape(), d.v.dtype());
  const auto in = d.inputs();
  const auto opt = dr_options(d, chunk, ssm::DeltaRulePath::chunked);
  const auto loop = dr_options(d, chunk, ssm::DeltaRulePath::recurrent);
  const double loop_s = best_of(3, [&] { ssm::delta_rule_into(in, out, std::nullopt, loop); });
  double best = 1e30;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    ssm::delta_rule_into(in, out, std::nullopt, opt);
    benchmark::DoNotOptimize(out.data());
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  set_updates(state, d.cs);
  state.counters["speedup_over_loop"] = loop_s / best;
  set_gemm_fraction(state, mixer_flops::delta_rule(d.cs.b, d.cs.l, d.cs.h, d.cs.dk, d.cs.dv, chunk), best);
}

void BM_dr_recurrent(benchmark::State& state) {
  const auto d = dr_data(state.range(0), static_cast<int>(state.range(1)));
  const ssm::Tensor out = ssm::Tensor::empty(d.v.shape(), d.v.dtype());
  const auto in = d.inputs();
  const auto opt = dr_options(d, 64, ssm::DeltaRulePath::recurrent);
  for (auto _ : state) {
    ssm::delta_rule_into(in, out, std::nullopt, opt);
    benchmark::DoNotOptimize(out.data());
  }
  set_updates(state, d.cs);
}

void BM_dr_backward(benchmark::State& state) {
  const index_t chunk = state.range(2);
  const auto d = dr_data(state.range(0), static_cast<int>(state.range(1)));
  std::mt19937_64 rng(5);
  const ssm::Tensor grad_out = delta_rule_problem::uniform(rng, d.v.shape(), d.v.dtype(), -1, 1);
  const ssm::Tensor out = ssm::Tensor::empty(d.v.shape(), d.v.dtype());
  const auto in = d.inputs();
  const auto opt = dr_options(d, chunk, ssm::DeltaRulePath::chunked);
  const auto bwd_opt = dr_options(d, chunk, state.range(3) == 0 ? ssm::DeltaRulePath::chunked : ssm::DeltaRulePath::recurrent);
  const double fwd = best_of(3, [&] { ssm::delta_rule_into(in, out, std::nullopt, opt); });
  double bwd = 1e30;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    ssm::DeltaRuleGrads g = ssm::delta_rule_backward(in, grad_out, std::nullopt, bwd_opt);
    benchmark::DoNotOptimize(g.grad_q.data());
    bwd = std::min(bwd, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  set_updates(state, d.cs);
  state.counters["bwd_over_fwd"] = bwd / fwd;
}

rwkv7_problem::Rw7Data rwkv7_data(index_t l) {
  rwkv7_problem::Rw7Case c;
  c.b = 1, c.l = l, c.h = 4, c.dk = 128, c.dv = 128, c.dtype = ssm::DType::f32;
  return rwkv7_problem::make_data(c);
}

ssm::Rwkv7Options rwkv7_options(index_t chunk, ssm::Rwkv7Path path = ssm::Rwkv7Path::recurrent) {
  ssm::Rwkv7Options o;
  o.chunk_size = chunk, o.threads = 1, o.path = path;
  return o;
}

void BM_rwkv7_chunked(benchmark::State& state) {
  const auto d = rwkv7_data(state.range(0));
  const ssm::Tensor out = ssm::Tensor::empty(d.v.shape(), d.v.dtype());
  const auto in = d.inputs();
  const auto opt = rwkv7_options(state.range(1), ssm::Rwkv7Path::chunked);
  const double loop_s = best_of(3, [&] { ssm::rwkv7_into(in, out, std::nullopt, rwkv7_options(64)); });
  double best = 1e30;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    ssm::rwkv7_into(in, out, std::nullopt, opt);
    benchmark::DoNotOptimize(out.data());
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  set_updates(state, d.cs);
  state.counters["speedup_over_loop"] = loop_s / best;
  set_gemm_fraction(state, mixer_flops::rwkv7(d.cs.b, d.cs.l, d.cs.h, d.cs.dk, d.cs.dv, state.range(1)), best);
}

void BM_rwkv7_recurrent(benchmark::State& state) {
  const auto d = rwkv7_data(state.range(0));
  const ssm::Tensor out = ssm::Tensor::empty(d.v.shape(), d.v.dtype());
  const auto in = d.inputs();
  const auto opt = rwkv7_options(64);
  for (auto _ : state) {
    ssm::rwkv7_into(in, out, std::nullopt, opt);
    benchmark::DoNotOptimize(out.data());
  }
  set_updates(state, d.cs);
}

void BM_rwkv7_backward(benchmark::State& state) {
  const auto d = rwkv7_data(state.range(0));
  std::mt19937_64 rng(5);
  const ssm::Tensor grad_out = rwkv7_problem::uniform(rng, d.v.shape(), d.v.dtype(), -1, 1);
  const ssm::Tensor out = ssm::Tensor::empty(d.v.shape(), d.v.dtype());
  const auto in = d.inputs();
  const auto opt =
      rwkv7_options(state.range(1), state.range(2) == 0 ? ssm::Rwkv7Path::chunked : ssm::Rwkv7Path::recurrent);
  const double fwd =
      best_of(3, [&] { ssm::rwkv7_into(in, out, std::nullopt, rwkv7_options(state.range(1), ssm::Rwkv7Path::chunked)); });
  double bwd = 1e30;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    ssm::Rwkv7Grads g = ssm::rwkv7_backward(in, grad_out, std::nullopt, opt);
    benchmark::DoNotOptimize(g.grad_q.data());
    bwd = std::min(bwd, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  set_updates(state, d.cs);
  state.counters["bwd_over_fwd"] = bwd / fwd;
}

// (l, variant, chunk)
BENCHMARK(BM_la_chunked)
    ->ArgsProduct({{4096}, {0, 1, 2, 3, 4}, {64, 128}})
    ->ArgNames({"l", "variant", "chunk"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_la_recurrent)
    ->ArgsProduct({{4096}, {0, 1, 2, 3, 4}})
    ->ArgNames({"l", "variant"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_la_backward)
    ->ArgsProduct({{4096}, {0, 1, 2, 3, 4}, {64}})
    ->ArgNames({"l", "variant", "chunk"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
// (l, variant, chunk)
BENCHMARK(BM_dr_chunked)
    ->ArgsProduct({{4096}, {0, 1}, {32, 64, 128}})
    ->ArgNames({"l", "variant", "chunk"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_dr_recurrent)
    ->ArgsProduct({{4096}, {0, 1}})
    ->ArgNames({"l", "variant"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_dr_backward)
    ->ArgsProduct({{4096}, {0, 1}, {64}, {0, 1}})
    ->ArgNames({"l", "variant", "chunk", "path"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
// (l, chunk), (l), (l, chunk, path)
BENCHMARK(BM_rwkv7_chunked)
    ->ArgsProduct({{4096}, {16, 32, 64}})
    ->ArgNames({"l", "chunk"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_rwkv7_recurrent)->Args({4096})->ArgNames({"l"})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_rwkv7_backward)
    ->ArgsProduct({{4096}, {16, 32, 64}, {0, 1}})
    ->ArgNames({"l", "chunk", "path"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

rwkv4_problem::Rw4Data rwkv4_data(index_t l, index_t c) {
  rwkv4_problem::Rw4Case cs;
  cs.b = 1, cs.l = l, cs.c = c, cs.dtype = ssm::DType::f32, cs.has_init = true;
  return rwkv4_problem::make_data(cs);
}

/// Single-precision exponentials per second on one thread: simd::exp over 16 independent vector chains (the WKV loop
/// has at least that many channels in flight), the rate two exponentials per channel step are measured against.
double exp_rate() {
  using V = ssm::cpu::simd::Vec<float>;
  constexpr int L = ssm::cpu::simd::lanes<float>, chains = 16;
  V x[chains];
  for (int i = 0; i < chains; ++i) x[i] = ssm::cpu::simd::broadcast<float>(-0.001f * static_cast<float>(i + 1));
  const V shift = ssm::cpu::simd::broadcast<float>(-0.5f);
  const long rounds = 200000;
  const double seconds = best_of(3, [&] {
    for (long r = 0; r < rounds; ++r)
      for (int i = 0; i < chains; ++i) x[i] = ssm::cpu::simd::exp<float>(x[i] * shift + shift);
    benchmark::DoNotOptimize(x);
  });
  return static_cast<double>(rounds) * chains * L / seconds;
}

void set_channel_steps(benchmark::State& state, const rwkv4_problem::Rw4Case& cs) {
  state.counters["channel_steps_per_s"] = benchmark::Counter(static_cast<double>(cs.b * cs.l * cs.c),
                                                             benchmark::Counter::kIsIterationInvariantRate);
}

// path 0: the vectorized loop (cpu-recurrent), 1: the reference loop in double
void BM_rwkv4_forward(benchmark::State& state) {
  const auto d = rwkv4_data(state.range(0), state.range(1));
  const ssm::Tensor out = ssm::Tensor::empty(d.k.shape(), d.k.dtype());
  const auto in = d.inputs();
  ssm::Rwkv4Options opt;
  opt.threads = 1, opt.path = state.range(2) == 0 ? ssm::Rwkv4Path::recurrent : ssm::Rwkv4Path::reference;
  double best = 1e30;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    ssm::rwkv4_into(in, out, std::nullopt, opt);
    benchmark::DoNotOptimize(out.data());
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  set_channel_steps(state, d.cs);
  if (state.range(2) == 0)
    state.counters["steps_per_exp_s"] = static_cast<double>(d.cs.l * d.cs.c) / best / exp_rate();
}

void BM_rwkv4_backward(benchmark::State& state) {
  const auto d = rwkv4_data(state.range(0), state.range(1));
  std::mt19937_64 rng(5);
  const ssm::Tensor grad_out = conformance::uniform(rng, d.k.shape(), d.k.dtype(), -1, 1);
  const ssm::Tensor out = ssm::Tensor::empty(d.k.shape(), d.k.dtype());
  const auto in = d.inputs();
  ssm::Rwkv4Options opt;
  opt.threads = 1;
  const double fwd = best_of(3, [&] { ssm::rwkv4_into(in, out, std::nullopt, opt); });
  double bwd = 1e30;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    ssm::Rwkv4Grads g = ssm::rwkv4_backward(in, grad_out, std::nullopt, opt);
    benchmark::DoNotOptimize(g.grad_k.data());
    bwd = std::min(bwd, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  set_channel_steps(state, d.cs);
  state.counters["bwd_over_fwd"] = bwd / fwd;
}

// (l, c, path)
BENCHMARK(BM_rwkv4_forward)
    ->ArgsProduct({{4096}, {768, 2048}, {0, 1}})
    ->ArgNames({"l", "c", "path"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_rwkv4_backward)->ArgsProduct({{4096}, {768, 2048}})->ArgNames({"l", "c"})->Unit(benchmark::kMillisecond)->UseRealTime();

ttt_linear_problem::TttData ttt_data(index_t l, index_t d, index_t m) {
  ttt_linear_problem::TttCase c;
  c.b = 1, c.l = l, c.h = 4, c.dk = d, c.m = m, c.dtype = ssm::DType::f32, c.has_init = true, c.has_tau = true;
  c.eta_max = 0.1;
  return ttt_linear_problem::make_data(c);
}

ssm::TttLinearOptions ttt_options(index_t m, ssm::TttLinearPath path) {
  ssm::TttLinearOptions o;
  o.mini_batch_size = m, o.threads = 1, o.path = path;
  return o;
}

void BM_ttt_dual(benchmark::State& state) {
  const index_t m = state.range(2);
  const auto d = ttt_data(state.range(0), state.range(1), m);
  const ssm::Tensor out = ssm::Tensor::empty(d.v.shape(), d.v.dtype());
  const auto in = d.inputs();
  const auto opt = ttt_options(m, ssm::TttLinearPath::dual);
  const double loop_s = best_of(
      3, [&] { ssm::ttt_linear_into(in, out, std::nullopt, std::nullopt, ttt_options(m, ssm::TttLinearPath::recurrent)); });
  double best = 1e30;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    ssm::ttt_linear_into(in, out, std::nullopt, std::nullopt, opt);
    benchmark::DoNotOptimize(out.data());
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  set_updates(state, d.cs);
  state.counters["speedup_over_loop"] = loop_s / best;
  set_gemm_fraction(state, mixer_flops::ttt_dual(d.cs.b, d.cs.l, d.cs.h, d.cs.dk, m), best);
}

void BM_ttt_recurrent(benchmark::State& state) {
  const auto d = ttt_data(state.range(0), state.range(1), 16);
  const ssm::Tensor out = ssm::Tensor::empty(d.v.shape(), d.v.dtype());
  const auto in = d.inputs();
  const auto opt = ttt_options(16, ssm::TttLinearPath::recurrent);
  for (auto _ : state) {
    ssm::ttt_linear_into(in, out, std::nullopt, std::nullopt, opt);
    benchmark::DoNotOptimize(out.data());
  }
  set_updates(state, d.cs);
}

void BM_ttt_backward(benchmark::State& state) {
  const index_t m = state.range(2);
  const auto d = ttt_data(state.range(0), state.range(1), m);
  std::mt19937_64 rng(5);
  const ssm::Tensor grad_out = ttt_linear_problem::uniform(rng, d.v.shape(), d.v.dtype(), -1, 1);
  const ssm::Tensor out = ssm::Tensor::empty(d.v.shape(), d.v.dtype());
  const auto in = d.inputs();
  const auto opt = ttt_options(m, ssm::TttLinearPath::dual);
  const double fwd = best_of(3, [&] { ssm::ttt_linear_into(in, out, std::nullopt, std::nullopt, opt); });
  double bwd = 1e30;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    ssm::TttLinearGrads g = ssm::ttt_linear_backward(in, grad_out, std::nullopt, std::nullopt, opt);
    benchmark::DoNotOptimize(g.grad_q.data());
    bwd = std::min(bwd, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  set_updates(state, d.cs);
  state.counters["bwd_over_fwd"] = bwd / fwd;
}

// (l, d, mini-batch), (l, d)
BENCHMARK(BM_ttt_dual)
    ->ArgsProduct({{4096}, {64, 128}, {16, 64}})
    ->ArgNames({"l", "d", "m"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_ttt_recurrent)
    ->ArgsProduct({{4096}, {64, 128}})
    ->ArgNames({"l", "d"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_ttt_backward)
    ->ArgsProduct({{4096}, {64, 128}, {16}})
    ->ArgNames({"l", "d", "m"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
