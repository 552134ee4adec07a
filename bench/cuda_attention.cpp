// Attention on a CUDA device (cuda/kernels/attention.cuh) side by side with the fused selective scan, in one run:
// the causal forward and backward at d_model 768 (12 heads of 64, f32) against the scan of a Mamba block of the
// same width (d_inner 1536, n 16, with z, D, softplus), for l = 1K ... 64K; and one decoding step over a device
// KV cache of 1K ... 256K tokens (the split-key kernel). Time per call by CUDA events; counters: tokens/s, and for
// attention the f32 FLOP rate (4 l² p h, halved by the causal mask). Builds everywhere; without a usable GPU every
// benchmark reports the runtime's message and is skipped.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include <ssm/ssm.hpp>

#include "cuda_timing.hpp"

namespace {

constexpr std::int64_t kHeads = 12, kHeadDim = 64, kInner = 1536, kState = 16;

ssm::Tensor device_zeros(ssm::Dims shape) { return ssm::Tensor::zeros(shape, ssm::DType::f32, ssm::Device::cuda(0)); }

using cuda_bench::time_with_events;
using cuda_bench::usable;

// Args: l. Causal forward, b = 1.
void BM_CudaAttentionForward(benchmark::State& state) {
  if (!usable(state)) return;
  const std::int64_t l = state.range(0);
  ssm::Tensor q = device_zeros({1, l, kHeads, kHeadDim}), k = device_zeros({1, l, kHeads, kHeadDim});
  ssm::Tensor v = device_zeros({1, l, kHeads, kHeadDim}), out = device_zeros({1, l, kHeads, kHeadDim});
  ssm::Tensor lse = device_zeros({1, kHeads, l});
  time_with_events(state, [&] { ssm::attention_forward(q.view(), k.view(), v.view(), out.view(), lse.view()); });
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(l), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * static_cast<double>(l) * l * kHeadDim * kHeads,
                                                benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_CudaAttentionForward)->RangeMultiplier(4)->Range(1024, 65536)->UseManualTime()->Unit(benchmark::kMillisecond);

// Args: l. Causal backward (delta, grad_k / grad_v, grad_q), b = 1.
void BM_CudaAttentionBackward(benchmark::State& state) {
  if (!usable(state)) return;
  const std::int64_t l = state.range(0);
  const ssm::Dims qs{1, l, kHeads, kHeadDim};
  ssm::Tensor q = device_zeros(qs), k = device_zeros(qs), v = device_zeros(qs), out = device_zeros(qs);
  ssm::Tensor go = device_zeros(qs), gq = device_zeros(qs), gk = device_zeros(qs), gv = device_zeros(qs);
  ssm::Tensor lse = device_zeros({1, kHeads, l});
  ssm::attention_forward(q.view(), k.view(), v.view(), out.view(), lse.view());
  time_with_events(state, [&] {
    ssm::attention_backward(q.view(), k.view(), v.view(), out.view(), lse.view(), go.view(), gq.view(), gk.view(),
                            gv.view());
  });
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(l), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_CudaAttentionBackward)->RangeMultiplier(4)->Range(1024, 16384)->UseManualTime()->Unit(benchmark::kMillisecond);

// Args: l. The Mamba block's selective scan at the same width: b = 1, d_inner 1536, n 16, z, D, softplus.
void BM_CudaScanForward(benchmark::State& state) {
  if (!usable(state)) return;
  const std::int64_t l = state.range(0);
  ssm::Tensor u = device_zeros({1, kInner, l}), delta = device_zeros({1, kInner, l}), z = device_zeros({1, kInner, l});
  ssm::Tensor A = device_zeros({kInner, kState}), B = device_zeros({1, 1, kState, l}), C = device_zeros({1, 1, kState, l});
  ssm::Tensor D = device_zeros({kInner});
  ssm::SelectiveScanInputs in;
  in.u = u.view(), in.delta = delta.view(), in.A = A.view(), in.B = B.view(), in.C = C.view(), in.D = D.view();
  in.z = z.view(), in.delta_softplus = true;
  time_with_events(state, [&] { benchmark::DoNotOptimize(ssm::selective_scan(in)); });
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(l), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_CudaScanForward)->RangeMultiplier(4)->Range(1024, 65536)->UseManualTime()->Unit(benchmark::kMillisecond);

// Args: context. One query per step over a device KV cache of `context` tokens (split-key path), b = 1.
void BM_CudaAttentionDecode(benchmark::State& state) {
  if (!usable(state)) return;
  const std::int64_t context = state.range(0);
  ssm::KVCache cache(1, kHeads, kHeadDim, ssm::DType::f32, context, ssm::Device::cuda(0));
  ssm::Tensor kv = device_zeros({1, context, kHeads, kHeadDim});
  cache.append(kv.view(), kv.view());
  ssm::Tensor q = device_zeros({1, 1, kHeads, kHeadDim}), out = device_zeros({1, 1, kHeads, kHeadDim});
  time_with_events(state, [&] { ssm::attention_decode(q.view(), cache, out.view()); });
  state.counters["KV bytes"] = static_cast<double>(cache.bytes());
}
BENCHMARK(BM_CudaAttentionDecode)->RangeMultiplier(4)->Range(1024, 262144)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
