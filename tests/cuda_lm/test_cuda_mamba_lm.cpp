// The Mamba LM on a CUDA device (ssm::cuda::MambaLMDevice; cuBLAS GEMMs and the kernels of cuda/kernels/
// mamba_lm_launches.cuh) and ssm::models::MambaLM's dispatch of CUDA token ids to it. Without a GPU: the dispatch
// and the device model fail with the runtime's error, unsupported shapes are named before any CUDA call. With
// one: on the committed tiny checkpoint, logits of 37 tokens and a prefill + greedy generation equal the CPU
// model's (1e-4 of the largest logit; the same kernels are checked under the emulation in test_cuda_emu).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "ssm/core/backend.hpp"
#include "ssm/cuda/mamba_lm.hpp"
#include "ssm/models/mamba.hpp"

namespace {

using index_t = std::int64_t;

bool gpu_usable() { return ssm::backends().cuda_usable; }

ssm::models::MambaLM tiny_model() { return ssm::models::MambaLM::load(std::string(SSM_TEST_DATA_DIR) + "/mamba/tiny"); }

std::vector<std::int64_t> random_ids(index_t count, index_t vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<std::int64_t> dist(0, vocab - 1);
  std::vector<std::int64_t> ids(static_cast<std::size_t>(count));
  for (auto& v : ids) v = dist(rng);
  return ids;
}

// max |a - b| / max |b| over two CPU f32 tensors of the same size.
double relative_error(const ssm::Tensor& a, const ssm::Tensor& b) {
  EXPECT_EQ(a.numel(), b.numel());
  double diff = 0, scale = 0;
  for (index_t i = 0; i < b.numel(); ++i) {
    diff = std::max(diff, std::abs(double(a.data_as<float>()[i]) - b.data_as<float>()[i]));
    scale = std::max(scale, std::abs(double(b.data_as<float>()[i])));
  }
  return diff / std::max(scale, 1e-30);
}

// f32 on both sides, different summation orders (cuBLAS, block trees and scans): 1e-4 of the largest logit.
constexpr double kTol = 1e-4;

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const ssm::Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(CudaMambaLM, UnsupportedShapesAreNamedBeforeAnyCudaCall) {
  const auto model = tiny_model();
  auto w = model.weights();
  w.shape.d_conv = 5;
  EXPECT_NE(error_of([&] { ssm::cuda::MambaLMDevice d(w); }).find("d_conv must be in [2, 4]"), std::string::npos);
  w = model.weights();
  w.shape.d_state = 300;
  EXPECT_NE(error_of([&] { ssm::cuda::MambaLMDevice d(w); }).find("d_state must be <= 256"), std::string::npos);
  w = model.weights();
  w.layers.pop_back();
  EXPECT_NE(error_of([&] { ssm::cuda::MambaLMDevice d(w); }).find("1 layers of weights for n_layer = 2"),
            std::string::npos);
  w = model.weights();
  w.layers[1].D = nullptr;
  EXPECT_NE(error_of([&] { ssm::cuda::MambaLMDevice d(w); }).find("layer 1 lacks a weight"), std::string::npos);
}

TEST(CudaMambaLM, WithoutGpuTheDispatchFailsWithTheRuntimeError) {
  if (gpu_usable()) GTEST_SKIP() << "a GPU is usable here: " << ssm::backends().cuda_status;
  const auto model = tiny_model();
  std::vector<std::int64_t> ids{1, 2, 3};
  // The pointer is never dereferenced: the dispatch stops first.
  const auto view = ssm::TensorView::of(ids.data(), {1, 3}, ssm::Device::cuda(0));
  const std::string e = error_of([&] { (void)model.logits(view); });
  EXPECT_NE(e.find("MambaLM::logits"), std::string::npos) << e;
  EXPECT_NE(e.find("CUDA is unusable"), std::string::npos) << e;
  EXPECT_NE(error_of([&] { ssm::cuda::MambaLMDevice d(model.weights()); }).find("CUDA runtime error"),
            std::string::npos);
}

TEST(CudaMambaLM, LogitsOfCudaIdsEqualCpuModel) {
  if (!gpu_usable()) GTEST_SKIP() << "no usable GPU: " << ssm::backends().cuda_status;
  const auto model = tiny_model();
  const index_t b = 2, l = 37;
  const auto ids = random_ids(b * l, model.config().vocab_size, 11);
  const ssm::Tensor ref = model.logits(ssm::TensorView::of(ids.data(), {b, l}));  // (b, l, V) cpu
  const ssm::Tensor ids_dev = ssm::Tensor::from_vector({b, l}, ids).to(ssm::Device::cuda(0));
  const ssm::Tensor got = model.logits(ids_dev.view());  // (b, l, V) on the device
  ASSERT_TRUE(got.device().is_cuda());
  const double err = relative_error(got.to(ssm::Device::cpu()), ref);
  RecordProperty("forward_relative_error", std::to_string(err));
  EXPECT_LE(err, kTol);
  // Ids outside the vocabulary are an error, not a read out of bounds.
  std::vector<std::int64_t> bad{0, model.config().padded_vocab()};
  EXPECT_NE(error_of([&] { (void)model.on_cuda().logits(ssm::TensorView::of(bad.data(), {1, 2})); })
                .find("is outside [0, "),
            std::string::npos);
}

TEST(CudaMambaLM, PrefillAndGreedyStepsEqualCpuModel) {
  if (!gpu_usable()) GTEST_SKIP() << "no usable GPU: " << ssm::backends().cuda_status;
  const auto model = tiny_model();
  const auto& cfg = model.config();
  const index_t b = 2, l = 5, steps = 16, V = cfg.padded_vocab();
  const auto prompt = random_ids(b * l, cfg.vocab_size, 5);
  ssm::models::MambaCache cpu_cache;
  ssm::cuda::MambaDeviceCache dev_cache;
  ssm::Tensor ref = model.prefill(ssm::TensorView::of(prompt.data(), {b, l}), cpu_cache);
  ssm::Tensor got = model.prefill(ssm::TensorView::of(prompt.data(), {b, l}), dev_cache).to(ssm::Device::cpu());
  EXPECT_LE(relative_error(got, ref), kTol) << "prefill";
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
    got = model.step(ssm::TensorView::of(next.data(), {b}), dev_cache).to(ssm::Device::cpu());
    EXPECT_LE(relative_error(got, ref), kTol) << "step " << t;
  }
  EXPECT_EQ(dev_cache.seqlen, l + steps);
}

}  // namespace
