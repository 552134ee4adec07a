// The Mamba LM on a CUDA device: the one MambaLM code path over CUDA tensors (model.to(Device::cuda(0)); every
// block and the head call the ops, which run the kernels of ssm::cuda and cuBLAS). Without a GPU: moving the model
// fails with the runtime's error, and a CPU model refuses CUDA token ids with an error that says to move the model.
// With one: on the committed tiny checkpoints, logits of 37 tokens and a prefill + greedy generation equal the CPU
// model's (1e-4 of the largest logit; the same code runs under the emulation in tests/cuda_emu, every build). The
// Mamba-2 LM likewise on its three committed checkpoints (the chunked SSD kernels, the head-form decode step).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "ssm/core/backend.hpp"
#include "ssm/models/mamba.hpp"
#include "ssm/models/mamba2.hpp"
#include "support/golden.hpp"

namespace {

using index_t = std::int64_t;
const ssm::Device kCuda = ssm::Device::cuda(0);

bool gpu_usable() { return ssm::backends().cuda_usable; }

ssm::models::MambaLM load(const std::string& dir) {
  return ssm::models::MambaLM::load(ssm::test::data_dir(dir));
}

using ssm::test::random_ids;
// max |a - b| / max |b| over two f32 tensors of the same size (either may be on the device).
using ssm::test::normalized_error;

// f32 on both sides, different summation orders (cuBLAS, block trees and scans): 1e-4 of the largest logit.
constexpr double kTol = 1e-4;

using ssm::test::expect_error;

TEST(CudaMambaLM, CpuModelRefusesCudaIdsNamingTheFix) {
  const auto model = load("mamba/tiny");
  std::vector<std::int64_t> ids{1, 2, 3};
  // The pointer is never dereferenced: the argument check stops first.
  const auto view = ssm::TensorView::of(ids.data(), {1, 3}, kCuda);
  expect_error([&] { (void)model.logits(view); }, "MambaLM::logits");
  expect_error([&] { (void)model.logits(view); }, "to(Device::cuda(0))");
}

TEST(CudaMambaLM, WithoutGpuMovingTheModelFailsWithTheRuntimeError) {
  if (gpu_usable()) GTEST_SKIP() << "a GPU is usable here: " << ssm::backends().cuda_status;
  const auto model = load("mamba/tiny");
  expect_error([&] { (void)model.to(kCuda); }, "CUDA");
}

TEST(CudaMambaLM, LogitsEqualCpuModel) {
  if (!gpu_usable()) GTEST_SKIP() << "no usable GPU: " << ssm::backends().cuda_status;
  for (const char* dir : {"mamba/tiny", "falcon_mamba/tiny"}) {
    SCOPED_TRACE(dir);
    const auto model = load(dir);
    const auto dev = model.to(kCuda);
    const index_t b = 2, l = 37;
    const auto ids = random_ids(b * l, model.config().vocab_size, 11);
    const ssm::Tensor ref = model.logits(ssm::TensorView::of(ids.data(), {b, l}));  // (b, l, V) cpu
    const ssm::Tensor ids_dev = ssm::Tensor::from_vector({b, l}, ids).to(kCuda);
    const ssm::Tensor got = dev.logits(ids_dev.view());  // (b, l, V) on the device
    ASSERT_TRUE(got.device().is_cuda());
    const double err = normalized_error(got, ref);
    RecordProperty(std::string("forward_relative_error_") + (dir[0] == 'm' ? "mamba" : "falcon"), std::to_string(err));
    EXPECT_LE(err, kTol);
    // Ids outside the vocabulary are an error, not a read out of bounds.
    std::vector<std::int64_t> bad{0, model.config().padded_vocab()};
    expect_error([&] { (void)dev.logits(ssm::TensorView::of(bad.data(), {1, 2})); }, "is outside [0, ");
  }
}

TEST(CudaMambaLM, PrefillAndGreedyStepsEqualCpuModel) {
  if (!gpu_usable()) GTEST_SKIP() << "no usable GPU: " << ssm::backends().cuda_status;
  const auto model = load("mamba/tiny");
  const auto dev = model.to(kCuda);
  const auto& cfg = model.config();
  const index_t b = 2, l = 5, steps = 16, V = cfg.padded_vocab();
  const auto prompt = random_ids(b * l, cfg.vocab_size, 5);
  ssm::models::MambaCache cpu_cache, dev_cache;
  ssm::Tensor ref = model.prefill(ssm::TensorView::of(prompt.data(), {b, l}), cpu_cache);
  ssm::Tensor got = dev.prefill(ssm::TensorView::of(prompt.data(), {b, l}), dev_cache).to(ssm::Device::cpu());
  EXPECT_LE(normalized_error(got, ref), kTol) << "prefill";
  for (index_t t = 0; t < steps; ++t) {
    std::vector<std::int64_t> next(static_cast<std::size_t>(b)), next_ref(next.size());
    for (index_t s = 0; s < b; ++s) {
      const float* g = got.data_as<float>() + s * V;
      const float* r = ref.data_as<float>() + s * V;
      next[s] = std::max_element(g, g + cfg.vocab_size) - g;
      next_ref[s] = std::max_element(r, r + cfg.vocab_size) - r;
    }
    ASSERT_EQ(next, next_ref) << "greedy tokens differ at step " << t;
    ref = model.step(next_ref, cpu_cache);
    got = dev.step(next, dev_cache).to(ssm::Device::cpu());
    EXPECT_LE(normalized_error(got, ref), kTol) << "step " << t;
  }
  EXPECT_EQ(dev_cache.seqlen, l + steps);
  // generate() on the device model picks the CPU model's tokens.
  const std::vector<std::int64_t> p(prompt.begin(), prompt.begin() + l);
  EXPECT_EQ(dev.generate(p, 12), model.generate(p, 12));
}

// Mamba2LM on the device: every committed tiny checkpoint (head_dim 8 / 16 / 32, one and two groups, bf16
// weights), logits of a length that crosses chunk boundaries, then a prefill and greedy steps, and the final SSM
// states, against the CPU model.
TEST(CudaMamba2LM, LogitsPrefillAndStepsEqualCpuModel) {
  if (!gpu_usable()) GTEST_SKIP() << "no usable GPU: " << ssm::backends().cuda_status;
  for (const char* dir : {"mamba2/groups2", "mamba2/heads4", "mamba2/bf16"}) {
    SCOPED_TRACE(dir);
    const auto model = ssm::models::Mamba2LM::load(ssm::test::data_dir(dir));
    const auto dev = model.to(kCuda);
    const index_t b = 2, l = 37, steps = 8, vocab = model.config().vocab_size;
    const auto ids = random_ids(b * l, vocab, 17);
    const ssm::TensorView ids_view = ssm::TensorView::of(ids.data(), {b, l});
    const ssm::Tensor got = dev.logits(ids_view);
    ASSERT_TRUE(got.device().is_cuda());
    EXPECT_LE(normalized_error(got, model.logits(ids_view)), kTol) << "logits";
    auto cpu_cache = model.make_cache(b), dev_cache = dev.make_cache(b);
    ssm::Tensor ref = model.prefill(ids_view, cpu_cache);
    ssm::Tensor out = dev.prefill(ids_view, dev_cache).to(ssm::Device::cpu());
    EXPECT_LE(normalized_error(out, ref), kTol) << "prefill";
    const index_t V = ref.shape()[ref.shape().size() - 1];
    for (index_t t = 0; t < steps; ++t) {
      std::vector<std::int64_t> next(static_cast<std::size_t>(b)), next_ref(next.size());
      for (index_t s = 0; s < b; ++s) {
        const float* g = out.data_as<float>() + s * V;
        const float* r = ref.data_as<float>() + s * V;
        next[static_cast<std::size_t>(s)] = std::max_element(g, g + vocab) - g;
        next_ref[static_cast<std::size_t>(s)] = std::max_element(r, r + vocab) - r;
      }
      ASSERT_EQ(next, next_ref) << "greedy tokens differ at step " << t;
      ref = model.step(next_ref, cpu_cache);
      out = dev.step(next, dev_cache).to(ssm::Device::cpu());
      EXPECT_LE(normalized_error(out, ref), kTol) << "step " << t;
    }
    for (std::size_t i = 0; i < cpu_cache.layers.size(); ++i)
      EXPECT_LE(normalized_error(dev_cache.layers[i].ssm_state, cpu_cache.layers[i].ssm_state), kTol) << "layer " << i;
  }
}

}  // namespace
