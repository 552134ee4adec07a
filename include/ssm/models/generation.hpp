// Choosing the next token from a language model's logits: greedy (argmax) or sampled with temperature, top-k and
// top-p from a seeded generator (SamplingOptions, sample_token), and the options of a generation (GenerationOptions:
// stop tokens, prefill in chunks). Used by every causal language model (models/causal_lm.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <optional>
#include <random>
#include <span>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/tensor.hpp"

namespace ssm::models {

/// Sampling options for generation. temperature 0 (or top_k 1) is greedy decoding (argmax, lowest id
/// on ties); otherwise logits / temperature → keep the top_k largest (0: all) → keep the smallest set
/// of most probable tokens whose probability reaches top_p (1: all) → sample with the seeded RNG.
struct SamplingOptions {
  double temperature = 0.0;
  index_t top_k = 0;
  double top_p = 1.0;
  std::uint64_t seed = 0;

  void validate() const {
    SSM_CHECK(std::isfinite(temperature) && temperature >= 0, "SamplingOptions: temperature must be finite and >= 0, got ",
              temperature);
    SSM_CHECK(top_k >= 0, "SamplingOptions: top_k must be >= 0 (0 = no limit), got ", top_k);
    SSM_CHECK(std::isfinite(top_p) && top_p > 0 && top_p <= 1, "SamplingOptions: top_p must be in (0, 1], got ", top_p);
  }
};

/// Options of a language model's generate (CausalLM::generate): sampling, and the tokens that end the generation.
struct GenerationOptions : SamplingOptions {
  /// Tokens that end generation. The stop token is the last token returned, as in transformers' generate()
  /// (which appends the eos token, then marks the sequence finished). Unset: the model's end-of-sequence ids
  /// (the config's eos_token_ids, from config.json's eos_token_id); empty: only max_new_tokens ends it.
  std::optional<std::vector<std::int64_t>> stop_ids;
  /// Prefill the prompt in chunks of at most this many tokens (each resumes the cache of the previous one), so
  /// that the prefill's memory stays bounded for a prompt of any length; 0: the whole prompt at once.
  index_t prefill_chunk = 0;

  GenerationOptions() = default;
  /// Sampling options alone (implicit, so that generate(prompt, n, sampling) reads as before).
  GenerationOptions(const SamplingOptions& s) : SamplingOptions(s) {}  // NOLINT(google-explicit-constructor)

  void validate() const {
    SamplingOptions::validate();
    if (stop_ids)
      for (auto id : *stop_ids) SSM_CHECK(id >= 0, "GenerationOptions: stop_ids must be >= 0, got ", id);
    SSM_CHECK(prefill_chunk >= 0, "GenerationOptions: prefill_chunk must be >= 0 (0 = the whole prompt), got ",
              prefill_chunk);
  }
};

/// Picks a token from logits (vocab) under the options; `rng` is advanced only when sampling.
inline index_t sample_token(std::span<const float> logits, const SamplingOptions& opt, std::mt19937_64& rng) {
  SSM_CHECK(!logits.empty(), "sample_token: empty logits");
  const index_t v = static_cast<index_t>(logits.size());
  if (opt.temperature <= 0 || opt.top_k == 1)
    return static_cast<index_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<index_t> order(static_cast<std::size_t>(v));
  std::iota(order.begin(), order.end(), index_t(0));
  std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) { return logits[a] > logits[b]; });
  const index_t k = opt.top_k > 0 ? std::min(opt.top_k, v) : v;
  std::vector<double> p(static_cast<std::size_t>(k));
  const double mx = logits[order[0]];
  double sum = 0;
  for (index_t i = 0; i < k; ++i) sum += (p[i] = std::exp((logits[order[i]] - mx) / opt.temperature));
  index_t keep = k;
  if (opt.top_p < 1) {
    double cum = 0;
    for (index_t i = 0; i < k; ++i) {
      cum += p[i] / sum;
      if (cum >= opt.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double total = 0;
  for (index_t i = 0; i < keep; ++i) total += p[i];
  const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53 * total;  // uniform in [0, total)
  double acc = 0;
  for (index_t i = 0; i < keep; ++i) {
    acc += p[i];
    if (u < acc) return order[i];
  }
  return order[keep - 1];
}

}  // namespace ssm::models
