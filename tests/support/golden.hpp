// Test helpers shared by the model tests: where the committed test data is (SSM_TEST_DATA_DIR), the golden.json
// files the tools/make_*_golden.py scripts write, random token ids, how far a result is from its reference
// (normalized_error: max |got − ref| / max |ref|, since logits near zero make an elementwise relative error
// meaningless), and an expected ssm::Error. Included by tests; the library never includes it.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <iostream>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "support/expect_error.hpp"

namespace ssm::test {

/// The path of `rel` under the committed test data (tests/data).
inline std::string data_dir(const std::string& rel) { return std::string(SSM_TEST_DATA_DIR) + "/" + rel; }

/// dir/file (golden.json unless named) parsed; a missing file is a test failure (the json is then null) naming the
/// script that writes it.
inline nlohmann::json load_golden(const std::string& dir, const std::string& script,
                                  const std::string& file = "golden.json") {
  std::ifstream is(dir + "/" + file);
  EXPECT_TRUE(is.good()) << "no golden data in " << dir << " (run " << script << ")";
  if (!is.good()) return nullptr;
  return nlohmann::json::parse(is);
}

/// A golden.json's rows of logits (l, V) as one flat array.
inline std::vector<float> flat_logits(const nlohmann::json& g) {
  std::vector<float> flat;
  for (const auto& row : g["logits"].get<std::vector<std::vector<float>>>()) flat.insert(flat.end(), row.begin(), row.end());
  return flat;
}

/// max |a − b| / max |b| over n values; a NaN in a makes it infinite.
inline double normalized_error(const float* a, const float* b, std::size_t n) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double d = std::abs(double(a[i]) - double(b[i]));
    num = std::isnan(d) ? std::numeric_limits<double>::infinity() : std::max(num, d);
    den = std::max(den, std::abs(double(b[i])));
  }
  return num / std::max(den, 1e-30);
}

/// normalized_error of two f32 tensors of one shape, either on any device (copied to the host).
inline double normalized_error(const Tensor& got, const Tensor& ref) {
  EXPECT_EQ(got.shape(), ref.shape());
  const Tensor g = got.to(Device::cpu()), r = ref.to(Device::cpu());
  if (g.numel() != r.numel()) return std::numeric_limits<double>::infinity();
  return normalized_error(g.data_as<float>(), r.data_as<float>(), static_cast<std::size_t>(r.numel()));
}

/// count token ids uniform in [0, vocab) from a seeded generator.
inline std::vector<std::int64_t> random_ids(std::int64_t count, std::int64_t vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<std::int64_t> dist(0, vocab - 1);
  std::vector<std::int64_t> ids(static_cast<std::size_t>(count));
  for (auto& v : ids) v = dist(rng);
  return ids;
}

/// f() throws an ssm::Error whose message contains `needle` (or every one of a braced list): support/expect_error.hpp.
using ::ssm_test::expect_error;

/// A language model (MambaLM, Mamba2LM) loaded from a checkpoint against that checkpoint's golden.json (`g`): the
/// logits of every position in parallel, the prompt's prefill then one step per token (each within `tol` of the
/// reference by normalized_error), and the greedy continuation (stopping at the config's end-of-sequence ids when
/// stop_at_eos). `what` names the case in messages.
template <class LM>
void expect_lm_matches_golden(const LM& model, const nlohmann::json& g, const std::string& what, double tol,
                              bool stop_at_eos) {
  ASSERT_FALSE(g.is_null()) << what;
  const auto tokens = g["tokens"].get<std::vector<std::int64_t>>();
  const auto prompt = g["prompt"].get<std::vector<std::int64_t>>();
  const auto continuation = g["continuation"].get<std::vector<std::int64_t>>();
  const auto ref = g["logits"].get<std::vector<std::vector<float>>>();  // (l, V)
  const std::int64_t l = static_cast<std::int64_t>(tokens.size()), V = model.config().padded_vocab();
  ASSERT_EQ(V, static_cast<std::int64_t>(ref[0].size())) << what;
  const std::vector<float> flat = flat_logits(g);
  const Tensor lg = model.logits(TensorView::of(tokens.data(), {1, l}));  // (1, l, V)
  const double err = normalized_error(lg.data_as<float>(), flat.data(), flat.size());
  EXPECT_LE(err, tol) << what;
  std::cout << "[ golden ] " << what << ": parallel logits normalized error " << err << "\n";
  // The recurrent path (prefill + steps) against the same reference.
  typename LM::Cache cache;
  const Tensor last = model.prefill(TensorView::of(prompt.data(), {1, static_cast<std::int64_t>(prompt.size())}), cache);
  double step_err = normalized_error(last.data_as<float>(), ref[prompt.size() - 1].data(), static_cast<std::size_t>(V));
  for (std::size_t t = prompt.size(); t < tokens.size(); ++t) {
    const Tensor s = model.step(std::span<const std::int64_t>(&tokens[t], 1), cache);
    step_err = std::max(step_err, normalized_error(s.data_as<float>(), ref[t].data(), static_cast<std::size_t>(V)));
  }
  EXPECT_LE(step_err, tol) << what;
  std::cout << "[ golden ] " << what << ": prefill + steps normalized error " << step_err << "\n";
  // Greedy continuation identical (the reference's smallest top-2 margin is recorded in golden.json).
  EXPECT_EQ(model.generate_greedy(prompt, static_cast<std::int64_t>(continuation.size()), stop_at_eos), continuation)
      << what;
}

/// The bytes of a language model's cache (b, seqlen, then every layer's conv and SSM state, or keys and values, copied
/// to the host):
/// equal bytes, equal caches.
template <class Cache>
std::vector<unsigned char> cache_bytes(const Cache& cache) {
  std::vector<unsigned char> out;
  auto append = [&](const void* p, std::size_t n) {
    const auto* c = static_cast<const unsigned char*>(p);
    out.insert(out.end(), c, c + n);
  };
  append(&cache.b, sizeof(cache.b));
  append(&cache.seqlen, sizeof(cache.seqlen));
  auto tensor = [&](const TensorView& t) {
    Tensor h = Tensor::empty(t.shape(), t.dtype());
    copy(h.view(), t);
    append(h.data(), h.nbytes());
  };
  for (const auto& layer : cache.layers) {
    if constexpr (requires { layer.conv_state; }) {
      for (const Tensor* t : {&layer.conv_state, &layer.ssm_state})
        if (t->defined()) tensor(t->view());
    } else {  // the hybrids: a Mamba or Hyena layer's states, an attention layer's keys and values
      for (const Tensor* t : {&layer.recurrent.conv_state, &layer.recurrent.ssm_state})
        if (t->defined()) tensor(t->view());
      if (layer.kv) tensor(layer.kv->keys()), tensor(layer.kv->values());
    }
  }
  return out;
}

/// A refused prefill leaves the cache as it was: a model's cache after a good prefill of one sequence, then
/// prefills the model must refuse (an id outside the embedding, ids of another dtype, on another device, a resume
/// for another batch), each an ssm::Error naming its cause, and the cache's bytes unchanged after each.
template <class LM>
void expect_refused_prefill_keeps_cache(const LM& model) {
  const std::int64_t V = model.config().padded_vocab();
  const std::vector<std::int64_t> prompt{1, 2, 3, 4};
  typename LM::Cache cache;
  model.prefill(TensorView::of(prompt.data(), {1, 4}), cache);
  const std::vector<unsigned char> before = cache_bytes(cache);
  const std::vector<std::int64_t> outside{1, V}, negative{-1, 2}, two{1, 2, 3, 4};
  const std::vector<float> floats{1, 2};
  expect_error([&] { model.prefill(TensorView::of(outside.data(), {1, 2}), cache); }, "is outside [0, ");
  EXPECT_EQ(cache_bytes(cache), before) << "an id outside the vocabulary";
  expect_error([&] { model.prefill(TensorView::of(negative.data(), {1, 2}), cache, /*resume=*/true); }, "token id -1");
  EXPECT_EQ(cache_bytes(cache), before) << "a negative id, resumed";
  expect_error([&] { model.prefill(TensorView::of(floats.data(), {1, 2}), cache); }, "expected dtype i32 or i64");
  EXPECT_EQ(cache_bytes(cache), before) << "f32 ids";
  // The pointer is never dereferenced: the argument check stops first.
  expect_error([&] { model.prefill(TensorView::of(prompt.data(), {1, 4}, Device::cuda(0)), cache); },
               "to(Device::cuda(0))");
  EXPECT_EQ(cache_bytes(cache), before) << "ids on another device";
  expect_error([&] { model.prefill(TensorView::of(two.data(), {2, 2}), cache, /*resume=*/true); },
               "resume needs a cache made for 2 sequences");
  EXPECT_EQ(cache_bytes(cache), before) << "a resume for another batch";
  // and a good prefill after them continues as before
  typename LM::Cache fresh;
  const Tensor a = model.prefill(TensorView::of(prompt.data(), {1, 4}), fresh);
  const Tensor b = model.prefill(TensorView::of(prompt.data(), {1, 4}), cache);
  EXPECT_EQ(normalized_error(a, b), 0.0);
}

}  // namespace ssm::test
