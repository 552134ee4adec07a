// SSD (Mamba-2's scan; ops/ssd.hpp) on a GPU through the op's CUDA dispatch: the chunked forward and backward at the
// Mamba-2 shape (24 heads of 64, d_state 128, one group, b = 1 and 8, l = 2048 and 8192; D, z, dt_bias and softplus
// as the block calls it), f32 and bf16 inputs. The inputs are tests/conformance/ssd_problem.hpp's, moved to cuda:0.
// Time per call by CUDA events around the op (its outputs are allocated stream-ordered inside the timed region).
// Counters: updates_per_s (b·l·h·p·n / time, as bench_ssd on the CPU); flops_per_s (the chunked algorithm's matrix
// products, bench/ssd_flops.hpp); bytes_per_second / fraction_of_peak (the inputs read and outputs written once, over
// the DRAM bandwidth of the device's properties); bwd_over_fwd on the backward (its time over the forward's of the
// same shape, measured in this run). Without a usable GPU each benchmark reports the runtime's message and skips.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <tuple>

#include "../tests/conformance/ssd_problem.hpp"
#include "cuda_timing.hpp"
#include "ssd_flops.hpp"
#include "ssm/ops/ssd.hpp"

namespace {

using ssm::index_t;
const ssm::Device kCuda = ssm::Device::cuda(0);
constexpr index_t kChunk = 256;  // Mamba-2 checkpoints' chunk_size (the CUDA kernels' tile follows it)

ssd_problem::SsdCase mamba2_case(index_t b, index_t l, ssm::DType dtype) {
  ssd_problem::SsdCase c;
  c.b = b, c.l = l, c.h = 24, c.p = 64, c.g = 1, c.n = 128;
  c.has_D = c.has_z = c.has_bias = c.softplus = true;
  c.dtype = dtype;
  return c;
}

/// The problem's tensors on cuda:0 (the owners of the views SsdInputs holds).
struct DeviceProblem {
  ssm::Tensor x, dt, A, B, C, D, z, dt_bias, grad_out;
  explicit DeviceProblem(const ssd_problem::SsdCase& c) {
    const ssd_problem::SsdData d = ssd_problem::make_data(c);
    x = d.x.to(kCuda), dt = d.dt.to(kCuda), A = d.A.to(kCuda), B = d.B.to(kCuda), C = d.C.to(kCuda);
    D = d.D.to(kCuda), z = d.z.to(kCuda), dt_bias = d.dt_bias.to(kCuda);
    std::mt19937_64 rng(7);
    grad_out = ssd_problem::uniform(rng, d.x.shape(), d.x.dtype(), -1, 1).to(kCuda);
  }
  ssm::SsdInputs inputs() const {
    ssm::SsdInputs in;
    in.x = x.view(), in.dt = dt.view(), in.A = A.view(), in.B = B.view(), in.C = C.view();
    in.D = D.view(), in.z = z.view(), in.dt_bias = dt_bias.view();
    in.dt_softplus = true;
    return in;
  }
};

/// Best forward time per shape and dtype in this run, for the backward's bwd_over_fwd.
std::map<std::tuple<index_t, index_t, int>, double>& forward_seconds() {
  static std::map<std::tuple<index_t, index_t, int>, double> m;
  return m;
}

void set_counters(benchmark::State& state, const ssd_problem::SsdCase& c, bool backward, double bytes) {
  const double updates = static_cast<double>(c.b * c.l * c.h * c.p * c.n);
  const auto rate = benchmark::Counter::kIsIterationInvariantRate;
  state.counters["updates_per_s"] = benchmark::Counter(updates, rate);
  const auto pass = backward ? ssd_bench::SsdPass::backward : ssd_bench::SsdPass::forward;
  state.counters["flops_per_s"] = benchmark::Counter(ssd_bench::ssd_flops(c, kChunk, pass), rate);
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes) * state.iterations());
  const double peak = cuda_bench::peak_bandwidth();
  state.counters["fraction_of_peak"] = benchmark::Counter(peak > 0 ? bytes / peak : 0, rate);
}

/// Bytes the op must move at the least: x, z, out (b l h p), dt (b l h), B, C (b l g n) once each; the backward
/// reads x, z, dt, B, C and grad_out and writes their gradients.
double min_bytes(const ssd_problem::SsdCase& c, bool backward) {
  const double s = static_cast<double>(ssm::size_of(c.dtype)), s32 = 4;
  const double xz = static_cast<double>(c.b * c.l * c.h * c.p) * s, dt = static_cast<double>(c.b * c.l * c.h) * s32,
               bc = static_cast<double>(c.b * c.l * c.g * c.n) * s;
  return backward ? 2 * (3 * xz + dt + 2 * bc) + xz : 3 * xz + dt + 2 * bc;
}

/// One benchmark: the forward, or the backward (then bwd_over_fwd from the forward of its shape, run before it).
void run(benchmark::State& state, ssm::DType dtype, bool backward) {
  if (!cuda_bench::usable(state)) return;
  const auto c = mamba2_case(state.range(0), state.range(1), dtype);
  const DeviceProblem prob(c);
  const ssm::SsdInputs in = prob.inputs();
  ssm::SsdOptions opt;
  opt.chunk_size = kChunk;
  const auto key = std::make_tuple(c.b, c.l, static_cast<int>(dtype));
  if (!backward) {
    forward_seconds()[key] =
        cuda_bench::time_with_events(state, [&] { benchmark::DoNotOptimize(ssm::ssd(in, opt).out.data()); });
  } else {
    const double best = cuda_bench::time_with_events(state, [&] {
      benchmark::DoNotOptimize(ssm::ssd_backward(in, prob.grad_out.view(), opt).grad_x.data());
    });
    const auto it = forward_seconds().find(key);
    if (it != forward_seconds().end()) state.counters["bwd_over_fwd"] = best / it->second;
  }
  set_counters(state, c, backward, min_bytes(c, backward));
}

template <ssm::DType T>
void BM_CudaSsdForward(benchmark::State& state) {
  run(state, T, false);
}

template <ssm::DType T>
void BM_CudaSsdBackward(benchmark::State& state) {
  run(state, T, true);
}

// Args: b, l. The forwards register first so that each backward finds its forward's time.
#define SSM_SSD_SHAPES ->Args({1, 2048})->Args({1, 8192})->Args({8, 2048})->UseManualTime()->Unit(benchmark::kMicrosecond)
BENCHMARK(BM_CudaSsdForward<ssm::DType::f32>) SSM_SSD_SHAPES;
BENCHMARK(BM_CudaSsdForward<ssm::DType::bf16>) SSM_SSD_SHAPES;
BENCHMARK(BM_CudaSsdBackward<ssm::DType::f32>) SSM_SSD_SHAPES;
BENCHMARK(BM_CudaSsdBackward<ssm::DType::bf16>) SSM_SSD_SHAPES;
#undef SSM_SSD_SHAPES

}  // namespace

BENCHMARK_MAIN();
