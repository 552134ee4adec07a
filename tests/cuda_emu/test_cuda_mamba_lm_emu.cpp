// The Mamba language model's CUDA sequence of launches (cuda/kernels/mamba_lm_launches.cuh) under the host
// emulation: every kernel (embedding, add + RMSNorm, conv1d, conv1d update, selective scan, conv state) runs as
// emulated CUDA threads on host memory, the GEMMs as a host loop. On the committed tiny checkpoint
// (tests/data/mamba/tiny, 2 layers, d_model 64) the logits must equal the CPU model's (ssm::models::MambaLM) for a
// forward over 37 tokens, and a prefill + greedy generation token by token must pick the same tokens.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "emu/executor.hpp"
#include "ssm/models/mamba.hpp"

namespace {

using index_t = std::int64_t;
using Launches = ssm::kernels::MambaLMLaunches<ssm::emu::HostExecutor>;

ssm::models::MambaLM tiny_model() { return ssm::models::MambaLM::load(std::string(SSM_TEST_DATA_DIR) + "/mamba/tiny"); }

// max |a - b| / max |b|: the logits' scale is the reference's largest entry.
double relative_error(const float* a, const float* b, std::size_t count) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < count; ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return diff / std::max(scale, 1e-30);
}

// f32 throughout on both sides; the paths differ only in summation order (GEMM loops, the norm's tree, the
// scan's block scan), a few ulp per operation over 2 layers: 1e-4 of the largest logit (the bound).
constexpr double kTol = 1e-4;

std::vector<std::int64_t> random_ids(index_t count, index_t vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<std::int64_t> dist(0, vocab - 1);
  std::vector<std::int64_t> ids(static_cast<std::size_t>(count));
  for (auto& v : ids) v = dist(rng);
  return ids;
}

struct EmulatedLM {
  ssm::emu::HostExecutor exec;
  Launches lm;
  // 128 KiB stacks: ample for these kernels (a guard page faults on overflow); the 1 MiB ASan default made each
  // launch map and unmap (and shadow) up to 128 MiB.
  EmulatedLM(const ssm::models::MambaLM& m, ssm::emu::Order order)
      : exec(order, 3, std::size_t{128} << 10), lm(exec, m.weights()) {}

  std::vector<float> run(Launches::Mode mode, const std::vector<std::int64_t>& ids, index_t b, index_t l,
                         Launches::Cache cache) {
    auto* ws = static_cast<float*>(exec.allocate(sizeof(float) * static_cast<std::size_t>(
                                                                     Launches::workspace_floats(lm.shape(), b, l))));
    auto* dids = static_cast<std::int64_t*>(exec.allocate(ids.size() * sizeof(std::int64_t)));
    exec.upload(dids, ids.data(), ids.size() * sizeof(std::int64_t));
    const index_t rows = mode == Launches::Mode::logits_all ? b * l : b;
    std::vector<float> logits(static_cast<std::size_t>(rows * lm.shape().vocab), -7.0f);
    auto* dlogits = static_cast<float*>(exec.allocate(logits.size() * sizeof(float)));
    lm.run(mode, dids, b, l, ws, cache, dlogits);
    exec.download(logits.data(), dlogits, logits.size() * sizeof(float));
    return logits;
  }
};

TEST(CudaMambaLMEmu, ForwardEqualsCpuModel) {
  const auto model = tiny_model();
  const index_t b = 2, l = 37, V = model.config().padded_vocab();
  const auto ids = random_ids(b * l, model.config().vocab_size, 11);
  const ssm::Tensor ref = model.logits(ssm::TensorView::of(ids.data(), {b, l}));  // (b, l, V)
  for (ssm::emu::Order order : {ssm::emu::Order::forward, ssm::emu::Order::random}) {
    SCOPED_TRACE(ssm::emu::name(order));
    EmulatedLM emu(model, order);
    const auto got = emu.run(Launches::Mode::logits_all, ids, b, l, {});  // (b, l, V)
    ASSERT_EQ(static_cast<index_t>(got.size()), b * l * V);
    const double err = relative_error(got.data(), ref.data_as<float>(), got.size());
    RecordProperty("forward_relative_error", std::to_string(err));
    EXPECT_LE(err, kTol);
  }
}

TEST(CudaMambaLMEmu, PrefillAndGreedyStepsEqualCpuModel) {
  const auto model = tiny_model();
  const auto& cfg = model.config();
  const index_t b = 2, l = 5, steps = 8, V = cfg.padded_vocab();
  const index_t di = model.weights().shape.d_inner;
  const auto prompt = random_ids(b * l, cfg.vocab_size, 5);
  EmulatedLM emu(model, ssm::emu::Order::reverse);
  Launches::Cache cache;
  const std::size_t conv_n = static_cast<std::size_t>(cfg.n_layer * b * di * cfg.d_conv);
  const std::size_t ssm_n = static_cast<std::size_t>(cfg.n_layer * b * di * cfg.d_state);
  cache.conv_state = static_cast<float*>(emu.exec.allocate(conv_n * sizeof(float)));
  cache.ssm_state = static_cast<float*>(emu.exec.allocate(ssm_n * sizeof(float)));
  // The prefill must overwrite whatever the cache held.
  std::fill_n(cache.conv_state, conv_n, 123.0f);
  std::fill_n(cache.ssm_state, ssm_n, -55.0f);

  ssm::models::MambaCache cpu_cache;
  ssm::Tensor ref = model.prefill(ssm::TensorView::of(prompt.data(), {b, l}), cpu_cache);  // (b, V)
  std::vector<float> got = emu.run(Launches::Mode::prefill, prompt, b, l, cache);       // (b, V)
  double worst = relative_error(got.data(), ref.data_as<float>(), got.size());
  EXPECT_LE(worst, kTol) << "prefill";
  for (index_t t = 0; t < steps; ++t) {
    // Greedy tokens of both paths, over the real vocabulary.
    std::vector<std::int64_t> next(static_cast<std::size_t>(b)), next_ref(next.size());
    for (index_t s = 0; s < b; ++s) {
      const float* g = got.data() + s * V;
      const float* r = ref.data_as<float>() + s * V;
      next[s] = std::max_element(g, g + cfg.vocab_size) - g;
      next_ref[s] = std::max_element(r, r + cfg.vocab_size) - r;
    }
    ASSERT_EQ(next, next_ref) << "greedy tokens differ at step " << t;
    ref = model.step(next_ref, cpu_cache);
    got = emu.run(Launches::Mode::step, next, b, 1, cache);
    const double err = relative_error(got.data(), ref.data_as<float>(), got.size());
    worst = std::max(worst, err);
    EXPECT_LE(err, kTol) << "step " << t;
  }
  RecordProperty("step_worst_relative_error", std::to_string(worst));
  // The device cache holds the same SSM state as the CPU model's (layer 0, both sequences).
  const auto h_cpu = cpu_cache.layers[0].ssm_state.to_vector<float>();  // (b, di, n)
  EXPECT_LE(relative_error(cache.ssm_state, h_cpu.data(), h_cpu.size()), kTol);
}

}  // namespace

TEST(CudaMambaLMEmu, FalconMambaIsRejectedNotComputedAsMamba) {
  // The device path has no normalization of dt, B and C: it must refuse a FalconMamba model, naming the key.
  ssm::models::MambaConfig cfg;
  cfg.d_model = 32;
  cfg.n_layer = 1;
  cfg.vocab_size = 50;
  cfg.mixer_rms_eps = 1e-6;
  const auto model = ssm::models::MambaLM::init(cfg, 1);
  try {
    EmulatedLM emu(model, ssm::emu::Order::forward);
    ADD_FAILURE() << "a FalconMamba model was accepted";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("mixer_rms_eps"), std::string::npos) << e.what();
  }
}
