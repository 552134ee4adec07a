// The scan-versus-attention suite (issue 8; docs/math.md §5, §6, §7): at matched width (d_model 768, 12 heads of
// 64; Mamba block d_state 16, expand 2), f32, one sequence, 1 and 2 threads:
//   forward/<mixer>/l:<l>/threads:<t>     mixer forward time and peak memory against sequence length;
//   decode/<mixer>/ctx:<c>/threads:<t>    per-token decode latency and state memory against context length;
//   train/<mixer>/l:<l>/threads:<t>       forward + backward (every gradient) time and peak memory, mamba_block and
//                                         attention_tiled: the training-cost comparison (in --ssm_mode=full or with
//                                         --ssm_lengths only; tools/bench_report.py does not chart it);
//   scan_throughput/threads:<t>           state updates per second against this machine's limit, the one
//                                         bench_selective_scan uses (bench/machine_limit.hpp): t cores of
//                                         1 / (1/E + 3/F) updates / s, E = exp2 / s / core, F = lane-FMAs / s / core.
// Memory: `peak_rss_MB` is the growth of the resident set during the timed loop (VmHWM after the loop minus
// VmRSS before it, with the high-water mark reset through /proc/self/clear_refs), so it counts every
// allocation the mixer makes, inputs excluded (freed heap memory is returned with malloc_trim first); `workspace_MB` / `state_MB` are explicit byte accounting.
// A curve stops (the remaining lengths report an error "stopped: …") after the first length that takes
// longer than --ssm_time_limit_s (60 s), or before a length whose predicted memory exceeds --ssm_mem_gb.
//
// Entries: attention_materialized, attention_tiled (ssm::layers::MultiHeadAttention, ops/attention.hpp); mamba_block
// (ssm::layers::MambaBlock, layers/mamba.hpp: forward as a prefill in chunks of 4096 tokens, decode by step; threaded
// with MambaBlock::set_threads); s4d_layer (ssm::S4DLayer, layers/s4.hpp: h = 768 channels, N = 64 (32 complex
// modes), S4D-Lin, ZOH; its SSM convolution with the D skip and no output mixing; forward = kernel by Vandermonde
// + FFT convolution, decode = the recurrent step); selective_scan_op (ssm::selective_scan, the optimized CPU path)
// in scan_throughput. The chunked-state mixers, each forward as a prefill in chunks of 4096 tokens resumed from its
// state and decode by its one-token step: mamba2_block (ssm::layers::Mamba2Block, layers/mamba2.hpp: d_state 128,
// heads of 64, expand 2: 24 heads); retnet (ssm::layers::LinearAttentionLayer, LinearAttentionConfig::retnet(768,
// 12): dk 64, dv 128); gla (LinearAttentionConfig::gla(768, 4), fla's default 4 heads: dk 96, dv 192);
// gated_deltanet (ssm::layers::DeltaNetLayer, 12 heads of 64, gated); rwkv7 (ssm::layers::Rwkv7Layer, 12 heads of 64,
// the first layer's form, the chunked op); ttt_linear (ssm::layers::TttLinearLayer, 12 heads of 64, mini-batches of
// 16, the dual form); rwkv4 (ssm::layers::Rwkv4Block, RWKV-4's time mixing, attention width 768: the WKV recurrence
// per channel, no chunked form); striped_hyena (ssm::layers::ModalHyenaLayer, StripedHyena's gated convolution at
// width 768: order-2 Hyena with a modal filter of 2 poles per channel, column split over 12 heads; FFT convolutions
// within a chunk, the constant-size modal state across chunks and in decoding). Their workspace_MB is an estimate
// (three projections' width for one chunk, and the state); peak_rss_MB is measured. hyena (ssm::layers::HyenaLayer,
// safari's Hyena operator at width 768, order 2, implicit filters of FFN width 64): forward over the whole sequence
// by FFT (its filters computed for l_max = l before the timed loop; lengths up to 65536), decode by direct sums over
// the history of the convolution's input (no constant-size state: its state_MB and step time grow with the context).
//
// Flags (besides Google Benchmark's): --ssm_mode=short|full, --ssm_lengths=256,1024,…,
// --ssm_contexts=…, --ssm_threads=1,2, --ssm_mem_gb=8, --ssm_time_limit_s=60, --ssm_min_time=0.5.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <malloc.h>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "machine_limit.hpp"
#include "ssm/layers/attention.hpp"
#include "ssm/layers/delta_net.hpp"
#include "ssm/layers/hyena.hpp"
#include "ssm/layers/linear_attention.hpp"
#include "ssm/layers/mamba.hpp"
#include "ssm/layers/mamba2.hpp"
#include "ssm/layers/rwkv4.hpp"
#include "ssm/layers/rwkv7.hpp"
#include "ssm/layers/s4.hpp"
#include "ssm/layers/ttt_linear.hpp"
#include "ssm/models/mamba_mixer.hpp"
#include "ssm/ops/selective_scan.hpp"

namespace {

using ssm::index_t;
using ssm::Tensor;

constexpr index_t kDModel = 768, kHeads = 12, kHeadDim = 64, kExpand = 2;

struct Settings {
  std::string mode = "short";
  std::vector<index_t> lengths, contexts;
  std::vector<int> threads;
  double mem_gb = 8.0, time_limit_s = 60.0, min_time = 0.05;
};
Settings g;

// ---- memory: resident-set growth during the timed loop ------------------------------------------------
long status_kb(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const std::size_t n = std::strlen(key);
  while (std::getline(f, line))
    if (line.compare(0, n, key) == 0) return std::stol(line.substr(n + 1));
  return -1;
}
struct RssProbe {
  long base_kb = -1;
  bool ok = false;
  void reset() {
    // Return freed heap memory to the system first, so the loop's allocations fault in new pages and show.
    malloc_trim(0);
    std::ofstream f("/proc/self/clear_refs");
    f << "5";  // resets VmHWM to the current VmRSS (Linux ≥ 4.0)
    f.close();
    ok = static_cast<bool>(f);
    base_kb = status_kb("VmRSS:");
  }
  double peak_mb() const {
    return ok && base_kb >= 0 ? std::max(0L, status_kb("VmHWM:") - base_kb) / 1024.0 : -1.0;
  }
};

// ---- curves that stop ----------------------------------------------------------------------------------
std::map<std::string, std::string> g_stopped;  // curve → why it stopped

bool skip_if_stopped(benchmark::State& st, const std::string& curve, double predicted_bytes) {
  auto it = g_stopped.find(curve);
  if (it == g_stopped.end() && predicted_bytes > g.mem_gb * 1e9) {
    std::ostringstream os;
    os << "stopped: predicted memory " << predicted_bytes / 1e9 << " GB exceeds the budget of " << g.mem_gb
       << " GB (--ssm_mem_gb)";
    it = g_stopped.emplace(curve, os.str()).first;
  }
  if (it == g_stopped.end()) return false;
  st.SkipWithError(it->second.c_str());
  return true;
}
void stop_if_slow(const std::string& curve, double seconds_per_iteration, index_t l) {
  if (seconds_per_iteration > g.time_limit_s) {
    std::ostringstream os;
    os << "stopped: l = " << l << " took " << seconds_per_iteration << " s > " << g.time_limit_s
       << " s (--ssm_time_limit_s)";
    g_stopped.emplace(curve, os.str());
  }
}

/// Deterministic pseudo-random values in [−1, 1) (fast enough for a 1M × 768 input).
void fill(float* x, std::size_t n, std::uint32_t seed) {
  std::uint32_t s = seed * 2654435761u + 1u;
  for (std::size_t i = 0; i < n; ++i) {
    s = s * 1664525u + 1013904223u;
    x[i] = static_cast<float>(s >> 8) * (2.0f / 16777216.0f) - 1.0f;
  }
}

// ---- mixers --------------------------------------------------------------------------------------------
enum class Mixer {
  attention_materialized, attention_tiled, mamba_block, s4d_layer, mamba2_block, retnet, gla, gated_deltanet, rwkv7,
  ttt_linear, rwkv4, striped_hyena, hyena
};
const char* mixer_name(Mixer m) {
  switch (m) {
    case Mixer::attention_materialized: return "attention_materialized";
    case Mixer::attention_tiled: return "attention_tiled";
    case Mixer::mamba_block: return "mamba_block";
    case Mixer::s4d_layer: return "s4d_layer";
    case Mixer::mamba2_block: return "mamba2_block";
    case Mixer::retnet: return "retnet";
    case Mixer::gla: return "gla";
    case Mixer::gated_deltanet: return "gated_deltanet";
    case Mixer::rwkv7: return "rwkv7";
    case Mixer::ttt_linear: return "ttt_linear";
    case Mixer::rwkv4: return "rwkv4";
    case Mixer::striped_hyena: return "striped_hyena";
    case Mixer::hyena: return "hyena";
  }
  return "?";
}
bool is_chunked_state_mixer(Mixer m) {
  return m == Mixer::mamba2_block || m == Mixer::retnet || m == Mixer::gla || m == Mixer::gated_deltanet ||
         m == Mixer::rwkv7 || m == Mixer::ttt_linear || m == Mixer::rwkv4 || m == Mixer::striped_hyena;
}

constexpr index_t kPrefillChunk = 4096;  // ssm::layers::MambaBlock forward runs in chunks resumed from its cache

constexpr long kS4dStateSize = 64;  // N: 32 complex modes per channel

ssm::S4DLayer<float> make_s4d(int threads) {
  ssm::S4DLayer<float>::Config cfg;
  cfg.h = kDModel, cfg.N = kS4dStateSize, cfg.seed = 1;
  ssm::S4DLayer<float> layer(cfg);
  layer.set_threads(threads);
  return layer;
}

ssm::layers::MambaBlock<float> make_mamba(int threads) {
  ssm::layers::MambaBlockConfig cfg;
  cfg.d_model = kDModel, cfg.d_state = 16, cfg.expand = kExpand;
  auto block = ssm::layers::MambaBlock<float>::init(cfg, 1);
  block.set_threads(threads);
  return block;
}

ssm::layers::MultiHeadAttention<float> make_attention(ssm::AttentionAlgorithm alg, int threads) {
  ssm::layers::MultiHeadAttentionConfig cfg;
  cfg.d_model = kDModel, cfg.n_heads = kHeads, cfg.head_dim = kHeadDim;
  cfg.attention.algorithm = alg;
  cfg.attention.n_threads = threads;
  return ssm::layers::MultiHeadAttention<float>(cfg, 1);
}

ssm::layers::Mamba2Block<float> make_mamba2(int threads) {
  ssm::layers::Mamba2BlockConfig cfg;
  cfg.d_model = kDModel, cfg.d_state = 128, cfg.head_dim = kHeadDim, cfg.expand = kExpand;
  auto block = ssm::layers::Mamba2Block<float>::init(cfg, 1);
  block.set_threads(threads);
  return block;
}

ssm::layers::LinearAttentionLayer<float> make_linear_attention(Mixer m, int threads) {
  using ssm::layers::LinearAttentionConfig;
  auto layer = ssm::layers::LinearAttentionLayer<float>::init(
      m == Mixer::gla ? LinearAttentionConfig::gla(kDModel, 4) : LinearAttentionConfig::retnet(kDModel, kHeads), 1);
  layer.set_threads(threads);
  return layer;
}

ssm::layers::DeltaNetLayer<float> make_deltanet(int threads) {
  ssm::layers::DeltaNetConfig cfg;
  cfg.d_model = kDModel, cfg.heads = kHeads, cfg.gated = true;
  auto layer = ssm::layers::DeltaNetLayer<float>::init(cfg, 1);
  layer.set_threads(threads);
  return layer;
}

ssm::layers::Rwkv7Layer<float> make_rwkv7(int threads) {
  ssm::layers::Rwkv7Config cfg;
  cfg.d_model = kDModel, cfg.head_dim = kHeadDim;
  auto layer = ssm::layers::Rwkv7Layer<float>::init(cfg, 1);
  layer.set_threads(threads);
  return layer;
}

ssm::layers::TttLinearLayer<float> make_ttt_linear(int threads) {
  ssm::layers::TttLinearConfig cfg;
  cfg.d_model = kDModel, cfg.heads = kHeads;
  auto layer = ssm::layers::TttLinearLayer<float>::init(cfg, 1);
  layer.set_threads(threads);
  return layer;
}

ssm::layers::Rwkv4Block make_rwkv4(int threads) {
  ssm::layers::Rwkv4BlockConfig cfg;
  cfg.kind = ssm::layers::Rwkv4Kind::time_mix, cfg.d_model = kDModel, cfg.d_att = kDModel;
  auto block = ssm::layers::Rwkv4Block::init(cfg, 1);
  block.set_threads(threads);
  return block;
}

ssm::layers::ModalHyenaLayer<float> make_striped_hyena(int threads) {
  ssm::layers::ModalHyenaConfig cfg;
  cfg.d_model = kDModel, cfg.heads = kHeads, cfg.state_size = 2, cfg.l_max = kPrefillChunk;
  auto layer = ssm::layers::ModalHyenaLayer<float>::init(cfg, 1);
  layer.set_threads(threads);
  return layer;
}

/// safari's Hyena operator at width 768, order 2, its filters computed for sequences up to l_max.
ssm::layers::HyenaLayer<float> make_hyena(int threads, index_t l_max) {
  ssm::layers::HyenaConfig cfg;
  cfg.d_model = kDModel, cfg.order = 2, cfg.l_max = std::max<index_t>(l_max, 2);
  auto layer = ssm::layers::HyenaLayer<float>::init(cfg, 1);
  layer.set_threads(threads);
  return layer;
}

/// f(layer) with the chunked-state mixer m built for `threads`.
template <class F>
void with_chunked_state_mixer(Mixer m, int threads, F&& f) {
  if (m == Mixer::mamba2_block) f(make_mamba2(threads));
  else if (m == Mixer::gated_deltanet) f(make_deltanet(threads));
  else if (m == Mixer::rwkv7) f(make_rwkv7(threads));
  else if (m == Mixer::ttt_linear) f(make_ttt_linear(threads));
  else if (m == Mixer::rwkv4) f(make_rwkv4(threads));
  else if (m == Mixer::striped_hyena) f(make_striped_hyena(threads));
  else f(make_linear_attention(m, threads));
}

/// The in_proj width per token of a chunked-state mixer (for the workspace estimate).
index_t projection_width(Mixer m) {
  if (m == Mixer::mamba2_block) return make_mamba2(1).config().proj_dim();
  if (m == Mixer::gated_deltanet) return make_deltanet(1).config().proj_dim();
  // RWKV-7 keeps 15 widths of d_model per token in all (six token-shift mixes; r, k, v, log w, a, g; the op's a and b;
  // o), a third of them per the estimate's three widths
  if (m == Mixer::rwkv7) return 5 * kDModel;
  if (m == Mixer::ttt_linear) return make_ttt_linear(1).config().proj_dim();
  // RWKV-4's time mixing keeps 7 widths of d_model per token (three token-shift mixes; k, v, r; wkv)
  if (m == Mixer::rwkv4) return 7 * kDModel / 3;
  // the gated convolution keeps 8 widths per token (the projection and its FIR, 3 each; y; the output)
  if (m == Mixer::striped_hyena) return 8 * kDModel / 3;
  return make_linear_attention(m, 1).config().proj_dim();
}

/// A fresh state of one sequence, and its bytes.
auto fresh_state(const ssm::layers::Mamba2Block<float>& block) {
  return block.make_cache(1);
}
template <class L>
auto fresh_state(const L& layer) { return layer.init_state(1); }
double state_nbytes(const ssm::layers::LinearAttentionState& s) {
  return static_cast<double>(s.S.nbytes() + (s.z.defined() ? s.z.nbytes() : 0));
}
template <class S>
double state_nbytes(const S& s) { return static_cast<double>(s.nbytes()); }

/// The next tokens x (1, t, d_model) from the state: Mamba2Block's forward resumed from its cache (its step takes
/// one token of shape (b, d_model)), the other layers' step.
Tensor advance(const ssm::layers::Mamba2Block<float>& block, const ssm::TensorView& x,
               ssm::layers::Mamba2LayerCache<float>& cache, bool resume) {
  return block.forward(x, &cache, resume);
}
template <class L>
Tensor advance(const L& layer, const ssm::TensorView& x, typename L::State& state, bool) {
  return layer.step(x, state);
}
/// One decoding step of x (1, 1, d_model).
Tensor decode_one(const ssm::layers::Mamba2Block<float>& block, const Tensor& x,
                  ssm::layers::Mamba2LayerCache<float>& cache) {
  return block.step(x.view().reshape({1, kDModel}), cache);
}
template <class L>
Tensor decode_one(const L& layer, const Tensor& x, typename L::State& state) {
  return layer.step(x, state);
}

void set_common_counters(benchmark::State& st, index_t l, int threads, double seconds, RssProbe& rss,
                         double workspace_bytes) {
  st.counters["l"] = static_cast<double>(l);
  st.counters["threads"] = threads;
  st.counters["seconds"] = seconds;
  st.counters["peak_rss_MB"] = rss.peak_mb();
  st.counters["workspace_MB"] = workspace_bytes / 1e6;
  st.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(l), benchmark::Counter::kIsIterationInvariantRate);
}

void bench_forward(benchmark::State& st, Mixer m, index_t l, int threads) {
  const std::string curve = std::string("forward/") + mixer_name(m) + "/threads:" + std::to_string(threads);
  const double io_bytes = 2.0 * static_cast<double>(l * kDModel) * sizeof(float);
  double workspace = 0;
  if (m == Mixer::s4d_layer) {
    // the kernel K (h, l) and, per thread, the FFT buffers of one channel (about 6 l floats)
    workspace = static_cast<double>(kDModel * l + 6 * l * threads) * sizeof(float);
  } else if (m == Mixer::mamba_block) {
    // forward_raw's activations for one chunk: xz, xc, dbc, dt, y, the scan's operands and output, out
    const index_t di = kExpand * kDModel, c = std::min(l, kPrefillChunk);
    workspace = static_cast<double>(c * (2 * di + 3 * di + 48 + 32 + 4 * di + 32 + kDModel)) * sizeof(float);
  } else if (m == Mixer::hyena) {
    // the projection and its short conv (3 widths each), y, the output, and per thread the FFT buffers of a channel
    workspace = static_cast<double>(8 * l * kDModel + 16 * l * threads) * sizeof(float);
  } else if (is_chunked_state_mixer(m)) {
    // an estimate: three copies of one chunk's projection (the projection, the op's packed inputs, its outputs)
    workspace = 3.0 * static_cast<double>(std::min(l, kPrefillChunk) * projection_width(m)) * sizeof(float);
  } else {
    ssm::AttentionOptions opt;
    opt.algorithm = m == Mixer::attention_tiled ? ssm::AttentionAlgorithm::tiled : ssm::AttentionAlgorithm::materialized;
    opt.n_threads = threads;
    // q, k, v, o, the layer's output, lse, and the attention op's own workspace
    workspace = 5.0 * static_cast<double>(l * kDModel) * sizeof(float) + static_cast<double>(kHeads * l) * sizeof(float) +
                static_cast<double>(ssm::attention_forward_workspace_bytes(1, l, l, kHeads, kHeadDim, ssm::DType::f32, opt));
  }
  if (skip_if_stopped(st, curve, io_bytes + workspace)) return;

  Tensor x = Tensor::empty({1, l, kDModel}, ssm::DType::f32);  // (b, l, d_model)
  fill(x.data_as<float>(), static_cast<std::size_t>(x.numel()), 3);
  RssProbe rss;
  double seconds = 0;
  if (m == Mixer::s4d_layer) {
    const auto layer = make_s4d(threads);
    Tensor out = Tensor::empty({1, l, kDModel}, ssm::DType::f32);  // (b, l, d_model)
    rss.reset();
    const auto t0 = std::chrono::steady_clock::now();
    for (auto _ : st) {
      layer.forward(x.data_as<float>(), out.data_as<float>(), 1, static_cast<long>(l));
      benchmark::DoNotOptimize(out.data());
    }
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } else if (m == Mixer::mamba_block) {
    const auto block = make_mamba(threads);
    Tensor out = Tensor::empty({1, l, kDModel}, ssm::DType::f32);  // (b, l, d_model)
    rss.reset();
    const auto t0 = std::chrono::steady_clock::now();
    for (auto _ : st) {
      auto cache = block.make_cache(1);
      for (index_t c0 = 0; c0 < l; c0 += kPrefillChunk) {  // a prefill in chunks: O(chunk) working memory
        const index_t r = std::min(kPrefillChunk, l - c0);
        const Tensor y = block.forward(x.view().narrow(1, c0, r), &cache, c0 > 0);  // (1, r, d_model)
        std::copy_n(y.data_as<float>(), r * kDModel, out.data_as<float>() + c0 * kDModel);
      }
      benchmark::DoNotOptimize(out.data());
    }
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } else if (m == Mixer::hyena) {
    const auto layer = make_hyena(threads, l);  // the implicit filters for l positions, before the timed loop
    rss.reset();
    const auto t0 = std::chrono::steady_clock::now();
    for (auto _ : st) {
      Tensor y = layer.forward(x);  // (1, l, d_model): one FFT convolution per channel over the whole sequence
      benchmark::DoNotOptimize(y.data());
    }
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } else if (is_chunked_state_mixer(m)) {
    with_chunked_state_mixer(m, threads, [&](const auto& layer) {
      Tensor out = Tensor::empty({1, l, kDModel}, ssm::DType::f32);  // (b, l, d_model)
      rss.reset();
      const auto t0 = std::chrono::steady_clock::now();
      for (auto _ : st) {
        auto state = fresh_state(layer);
        for (index_t c0 = 0; c0 < l; c0 += kPrefillChunk) {  // a prefill in chunks: O(chunk) working memory
          const index_t r = std::min(kPrefillChunk, l - c0);
          const Tensor y = advance(layer, x.view().narrow(1, c0, r), state, c0 > 0);  // (1, r, d_model)
          std::copy_n(y.data_as<float>(), r * kDModel, out.data_as<float>() + c0 * kDModel);
        }
        benchmark::DoNotOptimize(out.data());
      }
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    });
  } else {
    const auto layer = make_attention(
        m == Mixer::attention_tiled ? ssm::AttentionAlgorithm::tiled : ssm::AttentionAlgorithm::materialized, threads);
    rss.reset();
    const auto t0 = std::chrono::steady_clock::now();
    for (auto _ : st) {
      Tensor y = layer.forward(x);  // (1, l, d_model)
      benchmark::DoNotOptimize(y.data());
    }
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  seconds /= static_cast<double>(st.iterations());
  set_common_counters(st, l, threads, seconds, rss, workspace);
  stop_if_slow(curve, seconds, l);
}

// Training cost (seed 002's Mamba-versus-Transformer table, its "Training" rows): one forward of the layer over the
// whole sequence and its backward (∂L/∂x and every parameter's gradient; each backward recomputes its forward), time and
// peak memory. mamba_block: MambaBlock::backward holds the full sequence's activations (about 24 d_inner + 4 d_model
// floats a token, the estimate the memory budget is checked against); attention_tiled: MultiHeadAttention::backward
// (tiled attention_backward, O(l) memory: about 14 d_model floats a token).
void bench_train(benchmark::State& st, Mixer m, index_t l, int threads) {
  const std::string curve = std::string("train/") + mixer_name(m) + "/threads:" + std::to_string(threads);
  const double per_token = m == Mixer::mamba_block ? 24.0 * kExpand * kDModel + 4.0 * kDModel : 14.0 * kDModel;
  const double workspace = per_token * static_cast<double>(l) * sizeof(float);
  if (skip_if_stopped(st, curve, workspace)) return;
  Tensor x = Tensor::empty({1, l, kDModel}, ssm::DType::f32), dy = Tensor::empty({1, l, kDModel}, ssm::DType::f32);
  fill(x.data_as<float>(), static_cast<std::size_t>(x.numel()), 3);
  fill(dy.data_as<float>(), static_cast<std::size_t>(dy.numel()), 4);
  RssProbe rss;
  double seconds = 0;
  auto run = [&](const auto& layer) {
    rss.reset();
    const auto t0 = std::chrono::steady_clock::now();
    for (auto _ : st) {
      Tensor y = layer.forward(x);  // (1, l, d_model)
      auto g = layer.backward(x, dy);
      benchmark::DoNotOptimize(y.data());
      benchmark::DoNotOptimize(g.grad_x.data());
    }
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  if (m == Mixer::mamba_block)
    run(ssm::models::MambaMixer<float>(make_mamba(threads)));
  else
    run(make_attention(ssm::AttentionAlgorithm::tiled, threads));
  seconds /= static_cast<double>(st.iterations());
  set_common_counters(st, l, threads, seconds, rss, workspace);
  stop_if_slow(curve, seconds, l);
}

void bench_decode(benchmark::State& st, Mixer m, index_t context, int threads) {
  const std::string curve = std::string("decode/") + mixer_name(m) + "/threads:" + std::to_string(threads);
  const double cache_bytes = m == Mixer::mamba_block || m == Mixer::s4d_layer || is_chunked_state_mixer(m)
                                 ? 0.0
                                 : 2.0 * static_cast<double>((context + 1) * kDModel) * 4;
  if (skip_if_stopped(st, curve, cache_bytes)) return;
  Tensor x = Tensor::empty({1, 1, kDModel}, ssm::DType::f32);  // (b, 1, d_model): one new token
  fill(x.data_as<float>(), kDModel, 5);
  double state_bytes = 0, seconds = 0;
  RssProbe rss;
  if (m == Mixer::s4d_layer) {
    // As for the Mamba block: the state after `context` tokens has the size of any state; one filled stands for it.
    const auto layer = make_s4d(threads);
    auto state = layer.initial_state(1);
    std::vector<float> re(state.state.size() * 2);
    fill(re.data(), re.size(), 7);
    for (std::size_t i = 0; i < state.state.size(); ++i) state.state[i] = {re[2 * i], re[2 * i + 1]};
    std::vector<float> y(kDModel);
    state_bytes = static_cast<double>(state.state.size() * sizeof(std::complex<float>));
    rss.reset();
    const auto t0 = std::chrono::steady_clock::now();
    for (auto _ : st) {
      layer.step(x.data_as<float>(), y.data(), state);
      benchmark::DoNotOptimize(y.data());
    }
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } else if (m == Mixer::mamba_block) {
    // The recurrent state has the same size and the step the same cost whatever the context: a filled cache
    // stands for the state after `context` tokens.
    const auto block = make_mamba(threads);
    auto cache = block.make_cache(1);
    fill(cache.ssm_state.data_as<float>(), static_cast<std::size_t>(cache.ssm_state.numel()), 7);
    fill(cache.conv_state.data_as<float>(), static_cast<std::size_t>(cache.conv_state.numel()), 8);
    Tensor u = Tensor::empty({1, kDModel}, ssm::DType::f32);  // (b, d_model)
    ssm::copy(u, x.view().reshape({1, kDModel}));
    state_bytes = static_cast<double>(cache.nbytes());
    rss.reset();
    const auto t0 = std::chrono::steady_clock::now();
    for (auto _ : st) {
      Tensor y = block.step(u, cache);  // (b, d_model)
      benchmark::DoNotOptimize(y.data());
    }
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } else if (m == Mixer::hyena) {
    // The history of `context` earlier tokens' convolution inputs (their values do not change the cost): each step
    // appends one row and sums over all of them; the state is rewound to `context` after every step.
    const auto layer = make_hyena(threads, context + 1);
    auto state = layer.init_state(1);
    state.capacity = context + 1;
    state.history.resize(static_cast<std::size_t>((context + 1) * kDModel));
    fill(state.history.data(), state.history.size(), 7);
    state.t = context;
    state_bytes = static_cast<double>(state.nbytes());
    rss.reset();
    const auto t0 = std::chrono::steady_clock::now();
    for (auto _ : st) {
      Tensor y = layer.step(x, state);
      benchmark::DoNotOptimize(y.data());
      state.t = context;
    }
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } else if (is_chunked_state_mixer(m)) {
    // The state has one size and the step one cost whatever the context, as for the Mamba block; the step runs
    // from a zero state that every iteration advances.
    with_chunked_state_mixer(m, threads, [&](const auto& layer) {
      auto state = fresh_state(layer);
      state_bytes = state_nbytes(state);
      rss.reset();
      const auto t0 = std::chrono::steady_clock::now();
      for (auto _ : st) {
        Tensor y = decode_one(layer, x, state);
        benchmark::DoNotOptimize(y.data());
      }
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    });
  } else {
    const auto layer = make_attention(ssm::AttentionAlgorithm::tiled, threads);
    auto cache = layer.init_state(1, context + 1);
    {  // the keys and values of `context` earlier tokens (their values do not change the cost)
      const index_t piece = std::min<index_t>(context, 4096);
      Tensor kv = Tensor::empty({1, piece, kHeads, kHeadDim}, ssm::DType::f32);  // (b, piece, h_kv, p)
      fill(kv.data_as<float>(), static_cast<std::size_t>(kv.numel()), 9);
      for (index_t done = 0; done < context; done += piece) {
        const index_t t = std::min(piece, context - done);
        cache.append(kv.view().narrow(1, 0, t), kv.view().narrow(1, 0, t));
      }
    }
    state_bytes = static_cast<double>(cache.bytes());
    rss.reset();
    const auto t0 = std::chrono::steady_clock::now();
    for (auto _ : st) {
      Tensor y = layer.step(x, cache);  // appends one token …
      benchmark::DoNotOptimize(y.data());
      cache.truncate(context);  // … and forgets it, so every iteration sees the same context
    }
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  seconds /= static_cast<double>(st.iterations());
  st.counters["context"] = static_cast<double>(context);
  st.counters["threads"] = threads;
  st.counters["seconds"] = seconds;
  st.counters["state_MB"] = state_bytes / 1e6;
  st.counters["peak_rss_MB"] = rss.peak_mb();
  st.counters["tokens_per_s"] = benchmark::Counter(1.0, benchmark::Counter::kIsIterationInvariantRate);
  stop_if_slow(curve, seconds, context);
}

/// The selective-scan op (ops/selective_scan.hpp, the optimized CPU path) on the block's shapes:
/// u, delta, z (1, d, l), B, C (1, 1, n, l), A (d, n), D, delta_bias (d), softplus on Δ.
void bench_scan_op_throughput(benchmark::State& st, int threads, index_t l) {
  const index_t d = kExpand * kDModel, n = 16;
  auto tensor = [](const ssm::Dims& shape, std::uint32_t seed, float scale, float shift) {
    Tensor t = Tensor::empty(shape, ssm::DType::f32);
    fill(t.data_as<float>(), static_cast<std::size_t>(t.numel()), seed);
    for (index_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = shift + scale * t.data_as<float>()[i];
    return t;
  };
  const Tensor u = tensor({1, d, l}, 31, 1, 0), z = tensor({1, d, l}, 32, 1, 0);
  const Tensor delta = tensor({1, d, l}, 33, 1, -4);  // softplus(−5 … −3): Δ ≈ 0.007 … 0.05
  const Tensor B = tensor({1, 1, n, l}, 34, 1, 0), C = tensor({1, 1, n, l}, 35, 1, 0);
  Tensor A = Tensor::empty({d, n}, ssm::DType::f32);  // (d, n) S4D-Real: −(k + 1)
  for (index_t c = 0; c < d; ++c)
    for (index_t k = 0; k < n; ++k) A.data_as<float>()[c * n + k] = -float(k + 1);
  const Tensor D = tensor({d}, 36, 0, 1), delta_bias = tensor({d}, 37, 0, 0);
  Tensor out = Tensor::empty({1, d, l}, ssm::DType::f32);  // (b, d, l)
  ssm::SelectiveScanInputs in;
  in.u = u, in.delta = delta, in.A = A, in.B = B, in.C = C, in.D = D.view(), in.z = z.view();
  in.delta_bias = delta_bias.view(), in.delta_softplus = true;
  ssm::SelectiveScanOptions opt;
  opt.num_threads = threads;
  std::string path;
  ssm_bench::machine_limit();  // measured once, before the first timed loop
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) {
    path = ssm::selective_scan_into(in, out, std::nullopt, opt);
    benchmark::DoNotOptimize(out.data());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
                         static_cast<double>(st.iterations());
  const double updates_per_s = static_cast<double>(l * d * n) / seconds;
  st.SetLabel(path);
  st.counters["threads"] = threads;
  st.counters["l"] = static_cast<double>(l);
  st.counters["state_updates_per_s"] = updates_per_s;
  ssm_bench::set_limit_counters(st);
  st.counters["frac_of_limit"] = updates_per_s / ssm_bench::limit_for(threads);
}

std::vector<index_t> parse_list(const std::string& s) {
  std::vector<index_t> v;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) v.push_back(std::stoll(item));
  return v;
}

std::vector<index_t> powers_of_two(index_t lo, index_t hi) {
  std::vector<index_t> v;
  for (index_t x = lo; x <= hi; x *= 2) v.push_back(x);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> rest;
  std::string lengths, contexts, threads;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* key) -> const char* {
      const std::size_t n = std::strlen(key);
      return a.compare(0, n, key) == 0 ? argv[i] + n : nullptr;
    };
    if (const char* v = value("--ssm_mode=")) g.mode = v;
    else if (const char* v2 = value("--ssm_lengths=")) lengths = v2;
    else if (const char* v3 = value("--ssm_contexts=")) contexts = v3;
    else if (const char* v4 = value("--ssm_threads=")) threads = v4;
    else if (const char* v5 = value("--ssm_mem_gb=")) g.mem_gb = std::stod(v5);
    else if (const char* v6 = value("--ssm_time_limit_s=")) g.time_limit_s = std::stod(v6);
    else if (const char* v7 = value("--ssm_min_time=")) g.min_time = std::stod(v7);
    else rest.push_back(argv[i]);
  }
  const bool full = g.mode == "full";
  if (!full && g.mode != "short") {
    std::fprintf(stderr, "--ssm_mode must be short or full, got %s\n", g.mode.c_str());
    return 2;
  }
  g.lengths = !lengths.empty() ? parse_list(lengths) : full ? powers_of_two(256, 1 << 20) : std::vector<index_t>{256, 1024, 4096, 16384};
  g.contexts = !contexts.empty() ? parse_list(contexts) : full ? powers_of_two(1024, 1 << 18) : std::vector<index_t>{1024, 4096, 16384, 65536};
  for (index_t t : !threads.empty() ? parse_list(threads) : full ? std::vector<index_t>{1, 2} : std::vector<index_t>{1})
    g.threads.push_back(static_cast<int>(t));
  if (full && g.min_time == 0.05) g.min_time = 0.5;

  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  if (benchmark::ReportUnrecognizedArguments(rest_argc, rest.data())) return 1;
  benchmark::AddCustomContext("ssm_mode", g.mode);
  benchmark::AddCustomContext("ssm_entries", "attention_materialized, attention_tiled (ssm::layers::MultiHeadAttention); "
                                             "mamba_block (ssm::layers::MambaBlock, threaded); "
                                             "s4d_layer (ssm::S4DLayer h 768 N 64, SSM convolution + D, no output mixing, threaded); "
                                             "mamba2_block (ssm::layers::Mamba2Block, d_state 128, 24 heads of 64); "
                                             "retnet (LinearAttentionConfig::retnet(768, 12)); gla (::gla(768, 4)); "
                                             "gated_deltanet (ssm::layers::DeltaNetLayer, 12 heads of 64, gated); "
                                             "rwkv7 (ssm::layers::Rwkv7Layer, 12 heads of 64); "
                                             "ttt_linear (ssm::layers::TttLinearLayer, 12 heads of 64, m 16); "
                                             "rwkv4 (ssm::layers::Rwkv4Block, time mixing, attention width 768); "
                                             "striped_hyena (ssm::layers::ModalHyenaLayer, 2 poles per channel, 12 heads); "
                                             "hyena (ssm::layers::HyenaLayer, order 2, implicit filters; forward l <= 65536); "
                                             "selective_scan_op (ssm::selective_scan, optimized CPU path, threaded); "
                                             "train/: mamba_block and attention_tiled, forward + backward "
                                             "(full mode or --ssm_lengths)");
  benchmark::AddCustomContext("ssm_memory_method",
                              "peak_rss_MB: VmHWM - VmRSS around the timed loop, VmHWM reset via /proc/self/clear_refs; "
                              "workspace_MB/state_MB: explicit byte accounting");
  benchmark::AddCustomContext("ssm_limits", "time " + std::to_string(g.time_limit_s) + " s, memory " +
                                                std::to_string(g.mem_gb) + " GB");
  benchmark::AddCustomContext("ssm_hardware_threads", std::to_string(std::thread::hardware_concurrency()));

  const Mixer mixers[] = {Mixer::mamba_block,     Mixer::mamba2_block,    Mixer::retnet,
                          Mixer::gla,             Mixer::gated_deltanet,  Mixer::rwkv7,
                          Mixer::ttt_linear,      Mixer::rwkv4,           Mixer::striped_hyena,
                          Mixer::hyena,           Mixer::s4d_layer,       Mixer::attention_tiled,
                          Mixer::attention_materialized};
  for (int t : g.threads) {
    for (Mixer m : mixers)
      for (index_t l : g.lengths) {
        if (m == Mixer::hyena && l > 65536) continue;  // its filters for l_max = l take minutes to compute beyond
        const std::string name = std::string("forward/") + mixer_name(m) + "/l:" + std::to_string(l) +
                                 "/threads:" + std::to_string(t);
        benchmark::RegisterBenchmark(name.c_str(), [m, l, t](benchmark::State& st) { bench_forward(st, m, l, t); })
            ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(g.min_time);
      }
    for (Mixer m : {Mixer::mamba_block, Mixer::mamba2_block, Mixer::retnet, Mixer::gla, Mixer::gated_deltanet,
                    Mixer::rwkv7, Mixer::ttt_linear, Mixer::rwkv4, Mixer::striped_hyena, Mixer::hyena,
                    Mixer::s4d_layer, Mixer::attention_tiled})
      for (index_t c : g.contexts) {
        const std::string name = std::string("decode/") + mixer_name(m) + "/ctx:" + std::to_string(c) +
                                 "/threads:" + std::to_string(t);
        benchmark::RegisterBenchmark(name.c_str(), [m, c, t](benchmark::State& st) { bench_decode(st, m, c, t); })
            ->Unit(benchmark::kMicrosecond)->UseRealTime()->MinTime(g.min_time);
      }
    // Training cost: in the full mode or for lengths given with --ssm_lengths (not in the short run of the demo).
    for (Mixer m : {Mixer::mamba_block, Mixer::attention_tiled})
      for (index_t l : full || !lengths.empty() ? g.lengths : std::vector<index_t>{}) {
        const std::string name = std::string("train/") + mixer_name(m) + "/l:" + std::to_string(l) + "/threads:" +
                                 std::to_string(t);
        benchmark::RegisterBenchmark(name.c_str(), [m, l, t](benchmark::State& st) { bench_train(st, m, l, t); })
            ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(g.min_time);
      }
    const index_t scan_l = full ? 8192 : 2048;
    benchmark::RegisterBenchmark(("scan_throughput/selective_scan_op/threads:" + std::to_string(t)).c_str(),
                                 [t, scan_l](benchmark::State& st) { bench_scan_op_throughput(st, t, scan_l); })
        ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(g.min_time);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
