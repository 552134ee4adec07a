// Mamba language model throughput on the CPU for a Mamba-130m-shaped model (d_model 768, 24 layers,
// vocab 50280, d_state 16, random weights; docs/math.md §6): prefill tokens/s, decode tokens/s, and decode
// time and memory per token as the context grows (the recurrent state has a fixed size).
//
//   bench_mamba                                  # short default run (contexts 1 and 2048)
//   SSM_BENCH_FULL=1 bench_mamba --benchmark_filter=DecodeAtContext   # contexts up to 64K (minutes)
//   bench_mamba --benchmark_filter='Weights.*/dtype:bf16'    # 16-bit weights kept (LoadOptions): memory, speed
//
// The Weights benchmarks load a bf16 checkpoint of that model (written once to
// /tmp/ssm_bench_mamba130m_bf16 by a child process, so that this process never holds the f32 original) with
// its bf16 weights kept (dtype:bf16) or converted to f32 (dtype:f32), and report prefill / decode tokens/s and
// the resident memory: file_bytes (model.safetensors), weight_bytes (MambaLM::weight_bytes), rss_bytes (VmRSS
// growth from before the load to after a first prefill, which reads every weight) and VmHWM (the process's
// peak; meaningful when one dtype is run per process, as the filter above does). The decode benchmarks add
// read_bw (the machine's read bandwidth on the same threads, bench/bandwidth.hpp) and bw_fraction = weight_bytes
// x tokens/s / read_bw: a decoding step streams every weight once, so 1 is the ceiling. The probe's 512 MiB
// buffer is freed after it, but VmHWM counts it from the first decode benchmark on.
#include <benchmark/benchmark.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <system_error>

#include "bandwidth.hpp"
#include "ssm/models.hpp"

using ssm::index_t;
using ssm::models::MambaCache;
using ssm::models::MambaLM;

namespace {

const MambaLM& model_130m() {
  static const MambaLM m = [] {
    ssm::models::MambaConfig c;  // defaults are the 130m shape, with the vocab of the released checkpoint
    c.d_model = 768;
    c.n_layer = 24;
    c.vocab_size = 50280;
    c.d_state = 16;
    c.d_conv = 4;
    c.expand = 2;
    return MambaLM::init(c, 0);
  }();
  return m;
}

std::vector<std::int64_t> random_ids(index_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
  for (auto& x : ids) x = static_cast<std::int64_t>(rng() % 50280);
  return ids;
}

// Resident set size of this process in bytes (Linux /proc/self/statm).
double rss_bytes() {
  std::ifstream is("/proc/self/statm");
  long pages = 0, resident = 0;
  is >> pages >> resident;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE));
}

MambaCache prefill_context(const MambaLM& m, index_t ctx);

// The timed loop of a prefill benchmark: `l` random tokens of one sequence per iteration (items_per_second =
// prefill tokens/s).
void time_prefill(benchmark::State& state, const MambaLM& m, index_t l) {
  const auto ids = random_ids(l, 1);
  MambaCache cache;
  for (auto _ : state) {
    auto logits = m.prefill(ssm::TensorView::of(ids.data(), {1, l}), cache);
    benchmark::DoNotOptimize(logits.data());
  }
  state.SetItemsProcessed(state.iterations() * l);
}

// The timed loop of a decode benchmark: one token per iteration after 16 tokens of context (items_per_second =
// decode tokens/s). Returns the cache.
MambaCache time_decode(benchmark::State& state, const MambaLM& m) {
  MambaCache cache = prefill_context(m, 16);
  std::int64_t id = 42;
  for (auto _ : state) {
    auto logits = m.step(std::span<const std::int64_t>(&id, 1), cache);
    benchmark::DoNotOptimize(logits.data());
  }
  state.SetItemsProcessed(state.iterations());
  return cache;
}

// A field of /proc/self/status ("VmRSS", "VmHWM") in bytes.
double proc_status_bytes(const std::string& key) {
  std::ifstream is("/proc/self/status");
  std::string line;
  while (std::getline(is, line))
    if (line.rfind(key + ":", 0) == 0) return std::atof(line.c_str() + key.size() + 1) * 1024.0;
  return 0;
}

const char* kHalfDir = "/tmp/ssm_bench_mamba130m_bf16";

// Writes the bf16 checkpoint of model_130m()'s shape and weights in a child process (before any thread starts),
// into a temporary directory renamed to kHalfDir once complete (an interrupted write is not reused).
void write_bf16_checkpoint() {
  namespace fs = std::filesystem;
  if (fs::exists(std::string(kHalfDir) + "/model.safetensors")) return;
  const std::string tmp = std::string(kHalfDir) + ".tmp" + std::to_string(getpid());
  const pid_t pid = fork();
  if (pid == 0) {
    try {
      model_130m().save(tmp, ssm::DType::bf16);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_mamba: writing %s: %s\n", tmp.c_str(), e.what());
      _exit(1);
    }
    _exit(0);
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "bench_mamba: could not write the bf16 checkpoint %s\n", kHalfDir);
    std::exit(1);
  }
  std::error_code ec;
  fs::rename(tmp, kHalfDir, ec);  // another process may have made it meanwhile: keep that one
  fs::remove_all(tmp, ec);
}

struct LoadedModel {
  std::unique_ptr<MambaLM> model;
  double file_bytes = 0, rss_bytes = 0;
};

// The bf16 checkpoint loaded with its weights in `dtype` (kept for bf16, converted for f32), loaded once; the
// resident growth is measured across the load and a first prefill.
const LoadedModel& loaded(ssm::DType dtype) {
  static std::map<ssm::DType, LoadedModel> models;
  auto it = models.find(dtype);
  if (it != models.end()) return it->second;
  LoadedModel& m = models[dtype];
  const double rss0 = proc_status_bytes("VmRSS");
  ssm::models::LoadOptions opt;
  opt.weight_dtype = dtype;
  m.model = std::make_unique<MambaLM>(MambaLM::load(kHalfDir, opt));
  const auto ids = random_ids(8, 3);
  MambaCache cache;
  m.model->prefill(ssm::TensorView::of(ids.data(), {1, 8}), cache);
  m.rss_bytes = proc_status_bytes("VmRSS") - rss0;
  m.file_bytes = static_cast<double>(std::filesystem::file_size(std::string(kHalfDir) + "/model.safetensors"));
  return m;
}

void memory_counters(benchmark::State& state, const LoadedModel& m) {
  state.counters["file_bytes"] = m.file_bytes;
  state.counters["weight_bytes"] = static_cast<double>(m.model->weight_bytes());
  state.counters["rss_bytes"] = m.rss_bytes;
  state.counters["VmHWM"] = proc_status_bytes("VmHWM");
}

// Prefill of 128 tokens with the weights in `dtype` on `threads` threads.
void BM_MambaWeightsPrefill(benchmark::State& state, ssm::DType dtype, int threads) {
  const LoadedModel& lm = loaded(dtype);
  MambaLM& m = *lm.model;
  m.set_threads(threads);
  time_prefill(state, m, 128);
  memory_counters(state, lm);
}

// Decode (one sequence, one token per step) with the weights in `dtype` on `threads` threads.
void BM_MambaWeightsDecode(benchmark::State& state, ssm::DType dtype, int threads) {
  const LoadedModel& lm = loaded(dtype);
  MambaLM& m = *lm.model;
  m.set_threads(threads);
  time_decode(state, m);
  memory_counters(state, lm);
  const double bw = ssm_bench::read_bandwidth(threads);
  state.counters["read_bw"] = bw;
  state.counters["bw_fraction"] = benchmark::Counter(static_cast<double>(m.weight_bytes()) / bw,
                                                     benchmark::Counter::kIsIterationInvariantRate);
}

void register_weights() {
  for (bool prefill : {true, false})
    for (ssm::DType dtype : {ssm::DType::f32, ssm::DType::bf16})
      for (int threads : {1, 2}) {
        const std::string nm = std::string(prefill ? "BM_MambaWeightsPrefill" : "BM_MambaWeightsDecode") +
                               "/dtype:" + std::string(ssm::name(dtype)) + "/threads:" + std::to_string(threads);
        auto* b = prefill ? benchmark::RegisterBenchmark(nm.c_str(), BM_MambaWeightsPrefill, dtype, threads)
                          : benchmark::RegisterBenchmark(nm.c_str(), BM_MambaWeightsDecode, dtype, threads);
        b->Unit(benchmark::kMillisecond)->UseRealTime();
      }
}

// Prefills `ctx` tokens into a fresh cache for one sequence, in chunks of 1024 (bounded activations).
MambaCache prefill_context(const MambaLM& m, index_t ctx) {
  MambaCache cache = m.make_cache(1);
  const index_t chunk = 1024;
  const auto ids = random_ids(ctx, 7);
  for (index_t s = 0; s < ctx; s += chunk) {
    const index_t len = std::min(chunk, ctx - s);
    m.prefill(ssm::TensorView::of(ids.data() + s, {1, len}), cache, /*resume=*/s > 0);
  }
  return cache;
}

void BM_MambaPrefill(benchmark::State& state) {
  const MambaLM& m = model_130m();
  const index_t l = state.range(0);
  time_prefill(state, m, l);
  state.counters["tokens"] = static_cast<double>(l);
}
BENCHMARK(BM_MambaPrefill)->Arg(128)->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_MambaDecode(benchmark::State& state) {
  const MambaLM& m = model_130m();
  const MambaCache cache = time_decode(state, m);
  state.counters["cache_bytes"] = static_cast<double>(cache.nbytes());
}
BENCHMARK(BM_MambaDecode)->Unit(benchmark::kMillisecond)->UseRealTime();

// Decode after `ctx` tokens of context: time per token, the cache size, and how much the resident set
// grows per decoded token (0 for a constant-memory decoder; allocator noise aside).
void BM_MambaDecodeAtContext(benchmark::State& state) {
  const MambaLM& m = model_130m();
  const index_t ctx = state.range(0);
  MambaCache cache = prefill_context(m, ctx);
  std::int64_t id = 42;
  for (int i = 0; i < 8; ++i) {  // warm up the allocator so that steady-state growth is what is measured
    auto logits = m.step(std::span<const std::int64_t>(&id, 1), cache);
    benchmark::DoNotOptimize(logits.data());
  }
  const double rss0 = rss_bytes();
  for (auto _ : state) {
    auto logits = m.step(std::span<const std::int64_t>(&id, 1), cache);
    benchmark::DoNotOptimize(logits.data());
  }
  const double rss1 = rss_bytes();
  state.SetItemsProcessed(state.iterations());
  state.counters["context"] = static_cast<double>(ctx);
  state.counters["cache_bytes"] = static_cast<double>(cache.nbytes());
  state.counters["rss_growth_bytes_per_token"] = (rss1 - rss0) / static_cast<double>(state.iterations());
  state.counters["rss_MB"] = rss1 / 1e6;
}

void register_context_sweep() {
  const bool full = std::getenv("SSM_BENCH_FULL") != nullptr;
  auto* b = benchmark::RegisterBenchmark("BM_MambaDecodeAtContext", BM_MambaDecodeAtContext);
  if (full) {
    for (index_t ctx : {1, 1024, 4096, 16384, 65536}) b->Arg(ctx);
  } else {
    b->Arg(1)->Arg(2048);
  }
  b->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(64);
}

}  // namespace

int main(int argc, char** argv) {
  write_bf16_checkpoint();
  register_context_sweep();
  register_weights();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
