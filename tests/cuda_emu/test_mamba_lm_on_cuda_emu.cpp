// The one Mamba LM code path on CUDA tensors: the same ssm::models::MambaLM moved with to(Device::cuda(0)) while the
// emulated CUDA backend is installed (cuda/emu/backend.hpp: every op's launch code and kernels under the host
// emulation, in a seeded random thread order) against the model on the CPU. The committed tiny checkpoints
// (tests/data/mamba/tiny, tests/data/falcon_mamba/tiny: 2 layers, d_model 64) with their f32 weights and with
// the big matrices held in bf16: logits of every position, prefill then greedy steps, and generate (the bf16 case
// with few tokens), and on the f32 checkpoints a prefill resumed in pieces (the cache updated in place). Also the
// attention layer and the Jamba LM (tests/data/jamba/tiny) moved to the device against themselves on the CPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "emu/backend.hpp"
#include "ssm/models/mamba.hpp"
#include "ssm/layers/attention.hpp"
#include "ssm/models/jamba.hpp"
#include "ssm/models/mamba2.hpp"
#include "support/golden.hpp"

namespace {

using ssm::Device;
using ssm::DType;
using ssm::Tensor;
using ssm::TensorView;
using ssm::index_t;
using ssm::models::MambaLM;

const Device kCuda = Device::cuda(0);

struct Checkpoint {
  std::string dir;                  // under tests/data
  std::optional<DType> weight_dtype;  // LoadOptions::weight_dtype (unset: the checkpoint's f32)
  // Tokens per call. 16-bit weights go through the warp-per-output-feature linear kernel, whose emulation costs
  // about 12x the f32 path per token (4 s a token under ASan): their cases run few tokens. What the weight dtype
  // changes is the products, which the conformance registry covers at every shape; here it is the wiring.
  index_t l = 37;     // the logits test's length (b = 2)
  index_t steps = 6;  // greedy steps after the prefill, and half the generated tokens
};

std::string describe(const Checkpoint& c) {
  return c.dir + (c.weight_dtype ? std::string(" weights ") + std::string(ssm::name(*c.weight_dtype)) : " f32");
}

MambaLM load(const Checkpoint& c) {
  ssm::models::LoadOptions opt;
  opt.weight_dtype = c.weight_dtype;
  return MambaLM::load(ssm::test::data_dir(c.dir), opt);
}

// max |got - ref| / max |ref| (the logits' scale is the reference's largest entry); got may be on the device.
using ssm::test::normalized_error;
using ssm::test::random_ids;

/// Both sides compute in f32 from the same weight values (bf16 matrices are converted inside the products on both
/// devices), so they differ only in summation order (GEMM loops, the norms' trees, the scan's block scan): a few ulp
/// per operation over 2 layers. 16-bit weights take another product on CUDA (the warp-per-feature kernel, its own
/// order), hence a little more room.
double tolerance(const Checkpoint& c) { return c.weight_dtype ? 2e-4 : 1e-4; }

/// The greedy token of each row of logits (b, V) over the real vocabulary.
std::vector<std::int64_t> argmax_rows(const Tensor& logits, index_t vocab) {
  const Tensor host = logits.to(Device::cpu());
  const index_t b = host.shape()[0], V = host.shape()[1];
  std::vector<std::int64_t> r(static_cast<std::size_t>(b));
  for (index_t s = 0; s < b; ++s) {
    const float* row = host.data_as<float>() + s * V;
    r[static_cast<std::size_t>(s)] = std::max_element(row, row + vocab) - row;
  }
  return r;
}

/// A prefill of ids (b, l) on the model on the CPU and on its copy on the device, then `steps` greedy tokens: every
/// output within tol of the CPU's and the same greedy tokens. The caches are left after the last token. Returns the
/// largest normalized error.
template <class LM>
double expect_prefill_and_steps_equal(const LM& cpu, const LM& dev, const TensorView& ids,
                                      typename LM::Cache& cpu_cache, typename LM::Cache& dev_cache, index_t steps,
                                      double tol) {
  const index_t vocab = cpu.config().vocab_size;
  Tensor ref = cpu.prefill(ids, cpu_cache), out = dev.prefill(ids, dev_cache);  // (b, V), out on the device
  double worst = normalized_error(out, ref);
  EXPECT_LE(worst, tol) << "prefill";
  for (index_t t = 0; t < steps; ++t) {
    const auto next = argmax_rows(out, vocab), next_ref = argmax_rows(ref, vocab);
    EXPECT_EQ(next, next_ref) << "greedy tokens differ at step " << t;
    if (next != next_ref) break;
    ref = cpu.step(next_ref, cpu_cache);
    out = dev.step(next, dev_cache);
    const double err = normalized_error(out, ref);
    worst = std::max(worst, err);
    EXPECT_LE(err, tol) << "step " << t;
  }
  return worst;
}

class MambaLMOnCudaEmu : public ::testing::TestWithParam<Checkpoint> {};

TEST_P(MambaLMOnCudaEmu, LogitsEqualCpuModel) {
  const MambaLM cpu = load(GetParam());
  ssm::emu::ScopedEmulatedCuda guard(ssm::emu::Order::random, 7);
  const MambaLM dev = cpu.to(kCuda);
  ASSERT_EQ(dev.device(), kCuda);
  const index_t b = 2, l = GetParam().l;
  const auto ids = random_ids(b * l, cpu.config().vocab_size, 11);
  const TensorView ids_view = TensorView::of(ids.data(), {b, l});
  const Tensor ref = cpu.logits(ids_view);  // (b, l, V)
  const Tensor got = dev.logits(ids_view);  // (b, l, V) on the device
  EXPECT_EQ(got.device(), kCuda);
  const double err = normalized_error(got, ref);
  RecordProperty("logits_relative_error", std::to_string(err));
  EXPECT_LE(err, tolerance(GetParam())) << describe(GetParam());
  // ids already on the device give the same logits (a short prefix: this checks the ids' path, not the products)
  const std::vector<std::int64_t> prefix(ids.begin(), ids.begin() + 3);
  const Tensor ids_dev = Tensor::from_vector({1, 3}, prefix).to(kCuda);
  EXPECT_LE(normalized_error(dev.logits(ids_dev), cpu.logits(TensorView::of(prefix.data(), {1, 3}))),
            tolerance(GetParam()));
}

TEST_P(MambaLMOnCudaEmu, PrefillThenStepsEqualCpuModel) {
  const MambaLM cpu = load(GetParam());
  ssm::emu::ScopedEmulatedCuda guard(ssm::emu::Order::random, 8);
  const MambaLM dev = cpu.to(kCuda);
  const index_t b = 2, l = 5, steps = GetParam().steps, vocab = cpu.config().vocab_size;
  const double tol = tolerance(GetParam());
  const auto prompt = random_ids(b * l, vocab, 5);
  ssm::models::MambaCache cpu_cache, dev_cache;
  const double worst =
      expect_prefill_and_steps_equal(cpu, dev, TensorView::of(prompt.data(), {b, l}), cpu_cache, dev_cache, steps, tol);
  EXPECT_EQ(dev_cache.layers[0].conv_state.device(), kCuda);
  RecordProperty("step_worst_relative_error", std::to_string(worst));
  // The caches hold the same states (every layer).
  for (std::size_t i = 0; i < cpu_cache.layers.size(); ++i) {
    EXPECT_LE(normalized_error(dev_cache.layers[i].conv_state, cpu_cache.layers[i].conv_state), tol) << "layer " << i;
    EXPECT_LE(normalized_error(dev_cache.layers[i].ssm_state, cpu_cache.layers[i].ssm_state), tol) << "layer " << i;
  }
}

// The cache's handling does not depend on the weights' dtype: this runs on the f32 checkpoints (MambaLMPiecesOnCudaEmu).
class MambaLMPiecesOnCudaEmu : public MambaLMOnCudaEmu {};

TEST_P(MambaLMPiecesOnCudaEmu, PrefillResumedInPiecesEqualsOnePrefill) {
  // Pieces of 3, 70 (more than one block of the channel-last conv along l: the cache's conv state is both the
  // initial and the final state) and 1 tokens against one CPU prefill of all 74.
  const MambaLM cpu = load(GetParam());
  ssm::emu::ScopedEmulatedCuda guard(ssm::emu::Order::random, 9);
  const MambaLM dev = cpu.to(kCuda);
  const index_t b = 1, vocab = cpu.config().vocab_size;
  const auto prompt = random_ids(74, vocab, 6);
  ssm::models::MambaCache cpu_cache, dev_cache;
  const Tensor ref = cpu.prefill(TensorView::of(prompt.data(), {b, 74}), cpu_cache);
  Tensor got;
  index_t start = 0;
  for (index_t len : {3, 70, 1}) {
    got = dev.prefill(TensorView::of(prompt.data() + start, {b, len}), dev_cache, /*resume=*/start > 0);
    start += len;
  }
  EXPECT_EQ(dev_cache.seqlen, 74);
  EXPECT_LE(normalized_error(got, ref), tolerance(GetParam()));
  for (std::size_t i = 0; i < cpu_cache.layers.size(); ++i)
    EXPECT_LE(normalized_error(dev_cache.layers[i].conv_state, cpu_cache.layers[i].conv_state), tolerance(GetParam()));
}

TEST_P(MambaLMOnCudaEmu, GenerateEqualsCpuModel) {
  const MambaLM cpu = load(GetParam());
  ssm::emu::ScopedEmulatedCuda guard(ssm::emu::Order::random, 10);
  const MambaLM dev = cpu.to(kCuda);
  const auto prompt = random_ids(9, cpu.config().vocab_size, 12);
  ssm::models::GenerationOptions opt;  // greedy
  opt.stop_ids = std::vector<std::int64_t>{};
  const index_t n = 2 * GetParam().steps;
  EXPECT_EQ(dev.generate(prompt, n, opt), cpu.generate(prompt, n, opt));
}

std::string test_name(const ::testing::TestParamInfo<Checkpoint>& info) {
  std::string n = describe(info.param);
  for (char& ch : n)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n;
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, MambaLMOnCudaEmu,
                         ::testing::Values(Checkpoint{"mamba/tiny", std::nullopt},
                                           Checkpoint{"mamba/tiny", DType::bf16, /*l=*/4, /*steps=*/2},
                                           Checkpoint{"falcon_mamba/tiny", std::nullopt}),
                         test_name);
INSTANTIATE_TEST_SUITE_P(Checkpoints, MambaLMPiecesOnCudaEmu,
                         ::testing::Values(Checkpoint{"mamba/tiny", std::nullopt},
                                           Checkpoint{"falcon_mamba/tiny", std::nullopt}),
                         test_name);

// Mamba2LM is the same LM body: to(Device::cuda(0)) moves every weight there, caches are made there, and the
// forward runs the block's ops on the device (the chunked SSD through its CUDA kernels, the decode step through
// selective_state_update's head form) against the CPU model: logits, then a prefill and greedy steps.
TEST(Mamba2LMOnCudaEmu, LogitsPrefillAndStepsEqualCpuModel) {
  const auto cpu = ssm::models::Mamba2LM::load(ssm::test::data_dir("mamba2/groups2"));
  ssm::emu::ScopedEmulatedCuda guard(ssm::emu::Order::random, 11);
  const auto dev = cpu.to(kCuda);
  ASSERT_EQ(dev.device(), kCuda);
  EXPECT_EQ(dev.blocks()[0].device(), kCuda);
  EXPECT_EQ(cpu.device(), Device::cpu());
  const index_t b = 2, l = 7, vocab = cpu.config().vocab_size;
  const auto ids = random_ids(b * l, vocab, 13);
  const TensorView ids_view = TensorView::of(ids.data(), {b, l});
  const Tensor got = dev.logits(ids_view);
  EXPECT_EQ(got.device(), kCuda);
  EXPECT_LE(normalized_error(got, cpu.logits(ids_view)), 1e-4);

  auto cpu_cache = cpu.make_cache(b), dev_cache = dev.make_cache(b);
  EXPECT_EQ(dev_cache.layers[0].ssm_state.device(), kCuda);
  expect_prefill_and_steps_equal(cpu, dev, ids_view, cpu_cache, dev_cache, 2, 1e-4);
  for (std::size_t i = 0; i < cpu_cache.layers.size(); ++i)
    EXPECT_LE(normalized_error(dev_cache.layers[i].ssm_state, cpu_cache.layers[i].ssm_state), 1e-4) << "layer " << i;
}

/// A contiguous copy of v on the CPU.
Tensor on_cpu(const TensorView& v) {
  Tensor t = Tensor::empty(v.shape(), v.dtype());
  ssm::copy(t.view(), v);
  return t;
}
/// (b, n, d) contiguous on the CPU: tokens [s, s + n) of x (b, l, d).
Tensor tokens(const Tensor& x, index_t s, index_t n) { return on_cpu(x.view().narrow(1, s, n)); }

/// The attention layer moved to the device: the same linear, rotary and attention ops on CUDA tensors (grouped-query
/// heads, rotate-half RoPE). Its forward, then a prefill and steps of one and two tokens through a KV cache on the
/// device (positions continue after the cached tokens), against the layer on the CPU; and its refusals.
TEST(AttentionLayerOnCudaEmu, ForwardPrefillAndStepsEqualCpuLayer) {
  ssm::layers::MultiHeadAttentionConfig cfg;
  cfg.d_model = 40, cfg.n_heads = 4, cfg.n_kv_heads = 2, cfg.rotary = true;  // p = 10
  const ssm::layers::MultiHeadAttention<float> cpu(cfg, 21);
  ssm::emu::ScopedEmulatedCuda guard(ssm::emu::Order::random, 12);
  const auto dev = cpu.to(kCuda);
  ASSERT_EQ(dev.device(), kCuda);
  EXPECT_EQ(cpu.device(), Device::cpu());
  const index_t b = 2, l = 9, d = cfg.d_model;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  Tensor x = Tensor::empty({b, l, d}, DType::f32);  // (b, l, d_model)
  for (index_t i = 0; i < x.numel(); ++i) x.data_as<float>()[i] = dist(rng);
  // f32 on both sides, different summation orders (Eigen's GEMM and the emulated cuBLAS stand-in, the tiled kernel)
  const double tol = 1e-5;
  const Tensor got = dev.forward(x.to(kCuda));
  EXPECT_EQ(got.device(), kCuda);
  EXPECT_LE(normalized_error(got, cpu.forward(x)), tol) << "forward";

  auto cpu_cache = cpu.init_state(b), dev_cache = dev.init_state(b);
  EXPECT_EQ(dev_cache.device(), kCuda);
  const index_t pieces[][2] = {{0, 5}, {5, 1}, {6, 2}, {8, 1}};  // (start, tokens): a prefill, then steps
  Tensor last;  // (b, 1, d_model) the device's output for the last token
  for (const auto& pc : pieces) {
    const Tensor piece = tokens(x, pc[0], pc[1]);
    const Tensor ref = cpu.step(piece, cpu_cache), out = dev.step(piece.to(kCuda), dev_cache);
    EXPECT_EQ(out.device(), kCuda);
    EXPECT_LE(normalized_error(out, ref), tol) << "tokens from " << pc[0];
    last = out;
  }
  EXPECT_EQ(dev_cache.length(), l);
  EXPECT_LE(normalized_error(on_cpu(dev_cache.keys()), on_cpu(cpu_cache.keys())), tol) << "cached keys";
  // the last step equals the device forward's last row: the cache and the positions carried over
  EXPECT_LE(normalized_error(last, tokens(got, 8, 1)), tol);

  ssm::test::expect_error([&] { (void)dev.forward(x); }, {"'x'", "is on cpu but the layer is on cuda:0"});
  ssm::test::expect_error([&] { (void)dev.step(tokens(x, 0, 1).to(kCuda), cpu_cache); },
                          {"'cache'", "on cuda:0", "got f32 on cpu"});
  ssm::test::expect_error([&] { (void)dev.backward(x, x); }, {"'this'", "the backward runs on the CPU"});
  ssm::test::expect_error([&] { (void)ssm::layers::MultiHeadAttention<double>(cfg).to(kCuda); },
                          {"'T'", "f32", "f64"});
  auto materialized = cfg;
  materialized.attention.algorithm = ssm::AttentionAlgorithm::materialized;
  ssm::test::expect_error([&] { (void)ssm::layers::MultiHeadAttention<float>(materialized).to(kCuda); },
                          {"'attention.algorithm'", "tiled"});
}

/// Jamba moved to the device: the same CausalLM over hybrid blocks (Mamba blocks with the Δ / B / C norms, grouped-
/// query attention without RoPE, dense and mixture-of-experts feed-forwards) on CUDA tensors, against the model on the
/// CPU: the tiny checkpoint's logits, a prefill, and greedy steps through the KV caches and Mamba states on the device.
TEST(JambaLMOnCudaEmu, LogitsPrefillAndStepsEqualCpuModel) {
  const auto cpu = ssm::models::JambaLM::load(ssm::test::data_dir("jamba/tiny"));
  ssm::emu::ScopedEmulatedCuda guard(ssm::emu::Order::random, 13);
  const auto dev = cpu.to(kCuda);
  ASSERT_EQ(dev.device(), kCuda);
  for (const auto& blk : dev.blocks()) EXPECT_EQ(blk.device(), kCuda) << name(blk.config().kind);
  const index_t b = 2, l = 6, vocab = cpu.config().vocab_size;
  const auto ids = random_ids(b * l, vocab, 17);
  const TensorView ids_view = TensorView::of(ids.data(), {b, l});
  const Tensor got = dev.logits(ids_view);
  EXPECT_EQ(got.device(), kCuda);
  EXPECT_LE(normalized_error(got, cpu.logits(ids_view)), 1e-4);
  // the load-balancing loss over the routers of the device model (its router logits on the device)
  const ssm::MoeAuxLoss aux = ssm::models::jamba_aux_loss(dev, ids_view);
  const ssm::MoeAuxLoss aux_ref = ssm::models::jamba_aux_loss(cpu, ids_view);
  EXPECT_NEAR(aux.loss, aux_ref.loss, 1e-5 * std::abs(aux_ref.loss));
  // with a padding mask, given on the device (the loss runs on the CPU: it is copied there)
  std::vector<std::int64_t> mask(static_cast<std::size_t>(b * l), 1);
  mask[3] = mask[4] = 0;
  const Tensor mask_cpu = Tensor::from_vector({b * l}, mask), mask_dev = mask_cpu.to(kCuda);
  EXPECT_NEAR(ssm::models::jamba_aux_loss(dev, ids_view, mask_dev.view()).loss,
              ssm::models::jamba_aux_loss(cpu, ids_view, mask_cpu.view()).loss, 1e-5 * std::abs(aux_ref.loss));

  auto cpu_cache = cpu.make_cache(b), dev_cache = dev.make_cache(b);
  expect_prefill_and_steps_equal(cpu, dev, ids_view, cpu_cache, dev_cache, 3, 1e-4);
  int attention_layers = 0;
  for (std::size_t i = 0; i < cpu_cache.layers.size(); ++i) {
    const auto& kv = dev_cache.layers[i].kv;
    if (!kv) continue;
    ++attention_layers;
    EXPECT_EQ(kv->device(), kCuda);
    EXPECT_EQ(kv->length(), l + 3) << "layer " << i;
    EXPECT_LE(normalized_error(on_cpu(kv->values()), on_cpu(cpu_cache.layers[i].kv->values())), 1e-4) << "layer " << i;
  }
  EXPECT_EQ(attention_layers, 1);
}

}  // namespace
