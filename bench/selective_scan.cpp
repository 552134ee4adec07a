// Selective scan (S6; Mamba, docs/math.md §5) throughput: state updates per second (b·d·l·n / time) and the
// fraction of this machine's limit, for the Mamba-130m shape (b = 1, d = 1536, n = 16) and the long-thin
// shape (b = 1, d = 16, l = 1M), forward (optimized CPU path vs the reference) and backward, 1 and 2 threads.
//
// The limit (counter machine_limit, updates / s / core, bench/machine_limit.hpp, shared with
// bench_scan_vs_attention): 1 / (1/E + 3/F) with E the measured vector exp2 rate and F the lane-FMA rate of one
// core; frac_of_limit divides the measured rate by that limit times the thread count (the number of cores used).
// BM_StateUpdate: the one-token form (ssm::selective_state_update, a decoding step's scan) at the Mamba-1 shapes
// (d = 1536 and 5120 channels, n = 16, exp(Δ A) per state) and Mamba-2's (24 or 80 heads of 64 channels, n = 128,
// one decay per head), in state updates per second (b·h·p·n / time).
// On a shared machine two more counters tell the code from the neighbours: cpu_util (how much of its cores the run
// got) and frac_of_limit_cpu (the rate per CPU-second the threads ran, over the same per-core limit).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <new>
#include <random>
#include <vector>

#include "../tests/conformance/scan_problem.hpp"
#include "machine_limit.hpp"
#include "ssm/cpu/selective_scan.hpp"
#include "ssm/cpu/selective_scan_backward.hpp"
#include "ssm/core/params/selective_scan_grad.hpp"
#include "ssm/ops/selective_scan.hpp"
#include "ssm/ops/selective_state_update.hpp"
#include "ssm/reference/selective_scan.hpp"

namespace {

using index_t = std::int64_t;

/// 64-byte aligned storage, as ssm::Tensor allocates host memory (so the output rows are aligned for the
/// streaming stores exactly as in the op).
template <class T>
struct Aligned64 {
  using value_type = T;
  Aligned64() = default;
  template <class U>
  explicit Aligned64(const Aligned64<U>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64})); }
  void deallocate(T* p, std::size_t) { ::operator delete(p, std::align_val_t{64}); }
  bool operator==(const Aligned64&) const { return true; }
};
using fvec = std::vector<float, Aligned64<float>>;

// ---- a Mamba-like problem (f32; the arguments of Mamba's call: D, z, delta_bias, softplus) ---------------

/// The inputs from the one scan problem generator (tests/conformance/scan_problem.hpp), the outputs in 64-byte
/// aligned tensors (as the op allocates them, so the output rows are aligned for the streaming stores), and the
/// ScanParams the op builds from them (ssm::scan_params).
struct Problem {
  index_t b, d, l, n;
  scan_problem::ScanData data;  // u, delta, z (b, d, l); B, C (b, 1, n, l); A (d, n); D, delta_bias (d)
  ssm::Tensor out, last;        // (b, d, l), (b, d, n)
  ssm::ScanParams p;

  static scan_problem::ScanCase mamba_case(index_t b, index_t d, index_t l, index_t n) {
    scan_problem::ScanCase c;
    c.b = b, c.d = d, c.l = l, c.n = n, c.g = 1;
    c.has_D = c.has_z = c.has_bias = c.softplus = true;
    c.dtype = ssm::DType::f32;
    c.seed = 7;
    return c;
  }
  Problem(index_t b_, index_t d_, index_t l_, index_t n_)
      : b(b_), d(d_), l(l_), n(n_), data(scan_problem::make_data(mamba_case(b_, d_, l_, n_))),
        out(ssm::Tensor::empty({b_, d_, l_}, ssm::DType::f32)), last(ssm::Tensor::empty({b_, d_, n_}, ssm::DType::f32)),
        p(ssm::scan_params(data.inputs(), out, last.view()).p) {}
  std::size_t out_size() const { return static_cast<std::size_t>(out.numel()); }
  const float* out_data() const { return out.data_as<float>(); }
  double updates() const { return static_cast<double>(b * d * l * n); }
};

/// The process's CPU time and the wall time from construction (start it just before the timed loop).
struct CpuClock {
  double cpu0 = ssm_bench::process_seconds();
  std::chrono::steady_clock::time_point wall0 = std::chrono::steady_clock::now();
  double cpu_seconds() const { return ssm_bench::process_seconds() - cpu0; }
  double wall_seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count(); }
};

/// The rate counters. On a shared machine the wall-time ones also measure how much of `threads` cores the run got;
/// two more separate that out, from the CPU time all the process's threads used (cpu_seconds, over the timed loop):
///   cpu_util          = CPU time / (wall time x threads): 1 when every thread ran all the time; less when a thread
///                       waited (for work, or for a core that another process held);
///   frac_of_limit_cpu = updates per CPU-second / the per-core limit: the rate per core while the threads ran.
void set_counters(benchmark::State& state, double updates_per_iter, int threads, const CpuClock& clock) {
  const double cpu_seconds = clock.cpu_seconds(), wall_seconds = clock.wall_seconds();
  const double total = updates_per_iter * static_cast<double>(state.iterations());
  state.counters["updates_per_s"] = benchmark::Counter(total, benchmark::Counter::kIsRate);
  state.counters["frac_of_limit"] =
      benchmark::Counter(total / ssm_bench::limit_for(threads), benchmark::Counter::kIsRate);
  state.counters["cpu_util"] = cpu_seconds / (wall_seconds * threads);
  state.counters["frac_of_limit_cpu"] = total / cpu_seconds / ssm_bench::limit_for(1);
  ssm_bench::set_limit_counters(state);
  state.SetItemsProcessed(static_cast<std::int64_t>(total));
}

// ---- forward ----------------------------------------------------------------------------------------------

/// Optimized CPU forward. Args: l, threads, d.
void BM_ScanForward(benchmark::State& state) {
  const index_t l = state.range(0), d = state.range(2);
  const int threads = static_cast<int>(state.range(1));
  Problem prob(1, d, l, 16);
  ssm::cpu::ScanCpuOptions opt;
  opt.num_threads = threads;
  std::string path;
  const CpuClock cpu;
  for (auto _ : state) {
    path = ssm::cpu::selective_scan_forward<float>(prob.p, opt).name;
    benchmark::ClobberMemory();
  }
  state.SetLabel(path);
  set_counters(state, prob.updates(), threads, cpu);
}

/// The reference forward (double accumulation, one thread) on the same problem, shorter: reported per update.
void BM_ScanForwardReference(benchmark::State& state) {
  const index_t l = state.range(0), d = state.range(2);
  Problem prob(1, d, l, 16);
  const CpuClock cpu;
  for (auto _ : state) {
    ssm::reference::selective_scan_forward<float>(prob.p);
    benchmark::ClobberMemory();
  }
  state.SetLabel("reference");
  set_counters(state, prob.updates(), 1, cpu);
}

/// Accuracy of the optimized f32 forward against the reference at the same shape (one iteration):
/// max_rel = max |out - ref| / max |ref|, rms_rel = rms(out - ref) / rms(ref), the reference accumulating
/// in double (its f32 rounding of the output is 6e-8 relative, below what is measured here).
void BM_ScanForwardAccuracy(benchmark::State& state) {
  const index_t l = state.range(0), d = state.range(2);
  Problem prob(1, d, l, 16);
  fvec ref(prob.out_size());
  for (auto _ : state) {
    ssm::cpu::ScanCpuOptions opt;
    opt.num_threads = static_cast<int>(state.range(1));
    ssm::cpu::selective_scan_forward<float>(prob.p, opt);
    ssm::ScanParams q = prob.p;
    q.out = ref.data();
    q.last_state = nullptr;
    ssm::reference::selective_scan_forward<float>(q);
  }
  double max_err = 0, max_ref = 0, sq_err = 0, sq_ref = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double e = static_cast<double>(prob.out_data()[i]) - static_cast<double>(ref[i]);
    max_err = std::max(max_err, std::abs(e));
    max_ref = std::max(max_ref, std::abs(static_cast<double>(ref[i])));
    sq_err += e * e;
    sq_ref += static_cast<double>(ref[i]) * ref[i];
  }
  state.counters["max_rel"] = max_err / max_ref;
  state.counters["rms_rel"] = std::sqrt(sq_err / sq_ref);
}

// ---- backward (ssm::cpu::selective_scan_backward, from branch scan) --------------------------------------

struct Grads {
  fvec grad_out, grad_u, grad_delta, grad_z, grad_A, grad_B, grad_C, grad_D, grad_bias;
  ssm::ScanGradParams gp;
  explicit Grads(const Problem& prob) {
    std::mt19937 rng(11);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const auto size = [](const ssm::Tensor& t) { return static_cast<std::size_t>(t.numel()); };
    grad_out.resize(prob.out_size());
    for (auto& x : grad_out) x = normal(rng);
    grad_u.resize(size(prob.data.u));
    grad_delta.resize(size(prob.data.u));
    grad_z.resize(size(prob.data.u));
    grad_A.resize(size(prob.data.A));
    grad_B.resize(size(prob.data.B));
    grad_C.resize(size(prob.data.C));
    grad_D.resize(size(prob.data.D));
    grad_bias.resize(size(prob.data.delta_bias));
    gp.grad_out = grad_out.data();
    gp.grad_out_batch_stride = prob.d * prob.l;
    gp.grad_out_d_stride = prob.l;
    gp.grad_u = grad_u.data();
    gp.grad_delta = grad_delta.data();
    gp.grad_z = grad_z.data();
    gp.grad_A = grad_A.data();
    gp.grad_B = grad_B.data();
    gp.grad_C = grad_C.data();
    gp.grad_D = grad_D.data();
    gp.grad_delta_bias = grad_bias.data();
  }
};

/// CPU backward (all gradients). Args: l, threads, d.
void BM_ScanBackward(benchmark::State& state) {
  const index_t l = state.range(0), d = state.range(2);
  const int threads = static_cast<int>(state.range(1));
  Problem prob(1, d, l, 16);
  prob.p.last_state = nullptr;
  Grads g(prob);
  ssm::cpu::ScanBackwardOptions opt;
  opt.num_threads = threads;
  std::string path;
  const CpuClock cpu;
  for (auto _ : state) {
    path = ssm::cpu::selective_scan_backward<float>(prob.p, g.gp, opt).name;
    benchmark::ClobberMemory();
  }
  state.SetLabel(path);
  set_counters(state, prob.updates(), threads, cpu);
}

/// The training pair: a forward that saves the chunk states (ScanCpuOptions::chunk_states), then the backward that
/// restarts from them (ScanBackwardOptions::chunk_states). Args: l, threads, d. The two share one Problem so the
/// saved states are those of the inputs; the label says which half is timed.
void BM_ScanForwardSavingStates(benchmark::State& state) {
  const index_t l = state.range(0), d = state.range(2);
  const int threads = static_cast<int>(state.range(1));
  Problem prob(1, d, l, 16);
  const index_t chunks = ssm::ChunkStates::count(l, ssm::kCpuScanChunkLen);
  std::vector<float> saved(static_cast<std::size_t>(d * chunks * 16));  // (1, d, chunks, n = 16)
  ssm::cpu::ScanCpuOptions opt;
  opt.num_threads = threads;
  opt.chunk_states = {saved.data(), chunks, ssm::kCpuScanChunkLen};
  ssm::cpu::ScanRun ran;
  const CpuClock cpu;
  for (auto _ : state) {
    ran = ssm::cpu::selective_scan_forward<float>(prob.p, opt);
    benchmark::ClobberMemory();
  }
  state.SetLabel(ran.name + (ran.saved_chunk_states ? " saving states" : " (states not saved)"));
  set_counters(state, prob.updates(), threads, cpu);
}

void BM_ScanBackwardFromSavedStates(benchmark::State& state) {
  const index_t l = state.range(0), d = state.range(2);
  const int threads = static_cast<int>(state.range(1));
  Problem prob(1, d, l, 16);
  prob.p.last_state = nullptr;
  const index_t chunks = ssm::ChunkStates::count(l, ssm::kCpuScanChunkLen);
  std::vector<float> saved(static_cast<std::size_t>(d * chunks * 16));  // (1, d, chunks, n = 16)
  ssm::cpu::ScanCpuOptions fo;
  fo.num_threads = threads;
  fo.path = ssm::ScanPath::sequential;
  fo.chunk_states = {saved.data(), chunks, ssm::kCpuScanChunkLen};
  ssm::cpu::selective_scan_forward<float>(prob.p, fo);
  Grads g(prob);
  ssm::cpu::ScanBackwardOptions opt;
  opt.num_threads = threads;
  opt.chunk_states = {saved.data(), chunks, ssm::kCpuScanChunkLen};
  std::string path;
  const CpuClock cpu;
  for (auto _ : state) {
    path = ssm::cpu::selective_scan_backward<float>(prob.p, g.gp, opt).name;
    benchmark::ClobberMemory();
  }
  state.SetLabel(path + " from saved states");
  set_counters(state, prob.updates(), threads, cpu);
}

void BM_ScanBackwardReference(benchmark::State& state) {
  const index_t l = state.range(0), d = state.range(2);
  Problem prob(1, d, l, 16);
  prob.p.last_state = nullptr;
  Grads g(prob);
  const CpuClock cpu;
  for (auto _ : state) {
    ssm::reference::selective_scan_backward<float>(prob.p, g.gp);
    benchmark::ClobberMemory();
  }
  state.SetLabel("reference");
  set_counters(state, prob.updates(), 1, cpu);
}

// ---- the one-token step ------------------------------------------------------------------------------------

/// heads = 0: the Mamba-1 form, state (1, d, n), A (d, n), dt / D / dt_bias per channel; heads > 0: Mamba-2's,
/// state (1, heads, d, n), A / D / dt_bias / dt per head. Both with z, D, dt_bias and the softplus, as the blocks run.
void BM_StateUpdate(benchmark::State& state) {
  const index_t h = state.range(0), d = state.range(1), n = state.range(2), rows = std::max<index_t>(h, 1);
  const bool heads = h > 0;
  const index_t per = heads ? h : d;  // dt, D, dt_bias: per head or per channel
  const ssm::Dims xs = heads ? ssm::Dims{1, h, d} : ssm::Dims{1, d};       // x, z, out
  const ssm::Dims bc = heads ? ssm::Dims{1, 1, n} : ssm::Dims{1, n};       // B, C
  std::mt19937_64 rng(5);
  const auto uniform = [&](const ssm::Dims& shape, double lo, double hi) {
    return conformance::uniform(rng, shape, ssm::DType::f32, lo, hi);
  };
  ssm::Tensor st = uniform(heads ? ssm::Dims{1, h, d, n} : ssm::Dims{1, d, n}, -1, 1);
  const ssm::Tensor x = uniform(xs, -1, 1), z = uniform(xs, -2, 2), dt = uniform({1, per}, -2, 1);
  const ssm::Tensor A = uniform(heads ? ssm::Dims{h} : ssm::Dims{d, n}, -1.5, -0.05);
  const ssm::Tensor B = uniform(bc, -1, 1), C = uniform(bc, -1, 1), D = uniform({per}, -1, 1);
  const ssm::Tensor bias = uniform({per}, -1, 0.5);
  ssm::Tensor out = ssm::Tensor::empty(xs, ssm::DType::f32);
  ssm::SelectiveStateUpdateInputs in;
  in.state = st.view(), in.x = x.view(), in.z = z.view(), in.dt = dt.view(), in.A = A.view();
  in.B = B.view(), in.C = C.view(), in.D = D.view(), in.dt_bias = bias.view();
  in.dt_softplus = true;
  const CpuClock cpu;
  for (auto _ : state) {
    ssm::selective_state_update(in, out.view());
    benchmark::ClobberMemory();
  }
  set_counters(state, static_cast<double>(rows * d * n), 1, cpu);
}

void MambaShapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"l", "threads", "d"});
  for (index_t l : {512, 2048, 8192})
    for (index_t t : {1, 2}) b->Args({l, t, 1536});
  b->Args({1 << 20, 1, 16});  // long-thin
  b->Args({1 << 20, 2, 16});
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}

}  // namespace

BENCHMARK(BM_ScanForward)->Apply(MambaShapes);
BENCHMARK(BM_ScanBackward)->Apply(MambaShapes);
BENCHMARK(BM_ScanForwardSavingStates)->Apply(MambaShapes);
BENCHMARK(BM_ScanBackwardFromSavedStates)->Apply(MambaShapes);
// The reference is ~50x slower: shorter sequences, one iteration, the rate is per update all the same.
BENCHMARK(BM_ScanForwardReference)
    ->ArgNames({"l", "threads", "d"})
    ->Args({512, 1, 1536})
    ->Args({65536, 1, 16})
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ScanBackwardReference)
    ->ArgNames({"l", "threads", "d"})
    ->Args({512, 1, 1536})
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_StateUpdate)
    ->ArgNames({"heads", "d", "n"})
    ->Args({0, 1536, 16})   // Mamba-130m
    ->Args({0, 5120, 16})   // Mamba-2.8b
    ->Args({24, 64, 128})   // Mamba2-130m
    ->Args({80, 64, 128})   // Mamba2-2.7b
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ScanForwardAccuracy)
    ->ArgNames({"l", "threads", "d"})
    ->Args({2048, 2, 1536})
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
