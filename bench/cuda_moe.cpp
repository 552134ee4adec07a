// The mixture of experts on a GPU through the op's CUDA dispatch (ops/moe.hpp → cuda/kernels/moe.cuh), f32
// activations, d_model 4096, experts of width 2048 (Mixtral's shape scaled to Jamba-like widths), k = 2:
//   BM_cuda_moe/t/E/w: t tokens over E experts, weights f32 (w = 0) or bf16 (w = 1);
//   moe_over_dense: its best time over that of the same op with one expert of width k · 2048 (a dense SwiGLU with the
//     same multiply-adds per token, through the same kernels), timed in the same run right after: what routing, grouping and
//     the per-expert GEMMs cost beyond the products;
//   flops_per_s: 2 · t · k · 3 · d_model · d_ff (the experts' products; the router's is negligible) over the best time;
//   bytes_per_second / fraction_of_peak: the weights of the experts the tokens reach (all E once t · k ≥ E) read once,
//     over the DRAM bandwidth of the device's properties: the bound that matters when decoding.
// Time per call by CUDA events around the op. Without a usable GPU each benchmark reports the runtime's message and
// skips.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <random>

#include "cuda_timing.hpp"
#include "ssm/ops/moe.hpp"

namespace {

using ssm::index_t;
const ssm::Device kCuda = ssm::Device::cuda(0);
constexpr index_t kDModel = 4096, kDff = 2048, kTopK = 2;

ssm::Tensor uniform(const ssm::Dims& shape, ssm::DType dt, std::uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> U(-scale, scale);
  ssm::Tensor t = ssm::Tensor::empty(shape, ssm::DType::f32);
  for (index_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = U(rng);
  if (dt == ssm::DType::f32) return t.to(kCuda);
  ssm::Tensor h = ssm::Tensor::empty(shape, dt);
  for (index_t i = 0; i < t.numel(); ++i) h.data_as<ssm::bfloat16>()[i] = ssm::from_float<ssm::bfloat16>(t.data_as<float>()[i]);
  return h.to(kCuda);
}

/// E experts of width I on cuda:0.
struct DeviceExperts {
  ssm::Tensor router, gate_up, down;
  DeviceExperts(index_t E, index_t I, ssm::DType dt)
      : router(uniform({E, kDModel}, dt, 1, 0.02f)),
        gate_up(uniform({E, 2 * I, kDModel}, dt, 2, 0.02f)),
        down(uniform({E, kDModel, I}, dt, 3, 0.02f)) {}
};

void BM_cuda_moe(benchmark::State& state) {
  if (!cuda_bench::usable(state)) return;
  const index_t t = state.range(0), E = state.range(1);
  const ssm::DType dt = state.range(2) == 0 ? ssm::DType::f32 : ssm::DType::bf16;
  const DeviceExperts moe(E, kDff, dt), dense(1, kTopK * kDff, dt);
  const ssm::Tensor x = uniform({t, kDModel}, ssm::DType::f32, 4, 1.0f);
  ssm::Tensor out = ssm::Tensor::empty({t, kDModel}, ssm::DType::f32, kCuda);
  auto run = [&](const DeviceExperts& w, index_t k) {
    ssm::MoeOptions opt;
    opt.top_k = k;
    ssm::moe_into({x.view(), w.router.view(), w.gate_up.view(), w.down.view()}, out.view(), std::nullopt, opt);
  };
  const double best = cuda_bench::time_with_events(state, [&] { run(moe, kTopK); });
  double best_dense = 1e30;  // after the MoE's iterations, the same count (events, as above)
  for (int i = 0; i < 3; ++i) {
    cudaEvent_t a, b;
    cudaEventCreate(&a), cudaEventCreate(&b);
    cudaEventRecord(a);
    run(dense, 1);
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    best_dense = std::min(best_dense, ms * 1e-3);
    cudaEventDestroy(a), cudaEventDestroy(b);
  }
  const double active = static_cast<double>(std::min(E, t * kTopK));  // experts whose weights are read
  const double wbytes = active * 3.0 * kDModel * kDff * static_cast<double>(ssm::size_of(dt));
  state.counters["moe_over_dense"] = best / best_dense;
  state.counters["flops_per_s"] = 2.0 * t * kTopK * 3.0 * kDModel * kDff / best;
  state.counters["bytes_per_second"] = wbytes / best;
  const double peak = cuda_bench::peak_bandwidth();
  if (peak > 0) state.counters["fraction_of_peak"] = wbytes / best / peak;
}

void moe_args(benchmark::internal::Benchmark* b) {
  for (int w : {0, 1})
    for (index_t E : {8, 16})
      for (index_t t : {1, 16, 512, 4096}) b->Args({t, E, w});
}

BENCHMARK(BM_cuda_moe)->Apply(moe_args)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
