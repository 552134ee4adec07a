// Encoding and decoding throughput of ssm::models::Tokenizer (bytes of UTF-8 text per second) on the test
// tokenizer of tests/data/tokenizer/neox (a byte-level BPE set up as GPT-NeoX's, 1247 ids): English-ish text
// with the word cache warm and cold, the multilingual golden text, and decoding.
//
//   bench_tokenizer
//   SSM_TOKENIZER_JSON=/path/to/gpt-neox-20b/tokenizer.json SSM_TOKENIZER_TEXT=/path/to/text.txt bench_tokenizer
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ssm/models/tokenizer.hpp"

using ssm::models::Tokenizer;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream is(path, std::ios::binary);
  if (!is) throw std::runtime_error("bench_tokenizer: cannot open " + path);
  std::ostringstream ss;
  ss << is.rdbuf();
  return ss.str();
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

const nlohmann::json& tokenizer_json() {
  static const nlohmann::json j =
      nlohmann::json::parse(read_file(env_or("SSM_TOKENIZER_JSON", SSM_TOKENIZER_DATA_DIR "/neox/tokenizer.json")));
  return j;
}

/// About 1 MB of English-ish text: Zipf-distributed words from a list of common ones, one word in 20 a random
/// lower-case string (the long tail that misses the word cache), punctuation, digits, contractions and line breaks.
const std::string& english_text() {
  static const std::string text = [] {
    if (const char* path = std::getenv("SSM_TOKENIZER_TEXT"); path && *path) return read_file(path);
    const std::vector<std::string> words = {
        "the",     "of",       "and",      "to",         "in",        "a",         "is",       "that",
        "for",     "it",       "as",       "was",        "with",      "be",        "by",       "on",
        "not",     "he",       "this",     "are",        "or",        "his",       "from",     "at",
        "which",   "but",      "have",     "an",         "had",       "they",      "you",      "were",
        "their",   "one",      "all",      "we",         "can",       "her",       "has",      "there",
        "been",    "if",       "more",     "when",       "will",      "would",     "who",      "so",
        "model",   "sequence", "state",    "space",      "language",  "training",  "memory",   "selective",
        "scan",    "hardware", "attention", "recurrent", "linear",    "time",      "length",   "context",
        "network", "results",  "performance", "however", "therefore", "important", "different", "between",
        "through", "because",  "information", "development", "government", "children", "business", "example"};
    std::mt19937_64 rng(42);
    std::vector<double> weights;
    for (std::size_t i = 0; i < words.size(); ++i) weights.push_back(1.0 / static_cast<double>(i + 1));
    std::discrete_distribution<std::size_t> zipf(weights.begin(), weights.end());
    std::uniform_int_distribution<int> letter('a', 'z'), len(3, 11), pct(0, 99);
    std::string s;
    while (s.size() < (1u << 20)) {
      const int r = pct(rng);
      if (r < 5) {
        for (int k = len(rng); k > 0; --k) s += static_cast<char>(letter(rng));
      } else if (r < 7) {
        s += std::to_string(rng() % 100000);
      } else {
        std::string w = words[zipf(rng)];
        if (pct(rng) < 8) w[0] = static_cast<char>(w[0] - 'a' + 'A');
        s += w;
        if (pct(rng) < 3) s += "'s";
      }
      const int p = pct(rng);
      s += p < 6 ? ", " : p < 11 ? ". " : p < 12 ? ".\n\n" : p < 13 ? "; " : " ";
    }
    return s;
  }();
  return text;
}

void BM_EncodeEnglish(benchmark::State& state) {
  const Tokenizer tok = Tokenizer::from_json(tokenizer_json());
  const std::string& text = english_text();
  std::size_t n_ids = tok.encode(text).size();  // warms the word cache
  for (auto _ : state) {
    auto ids = tok.encode(text);
    n_ids = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * text.size()));
  state.counters["bytes_per_token"] = static_cast<double>(text.size()) / static_cast<double>(n_ids);
}
BENCHMARK(BM_EncodeEnglish)->Unit(benchmark::kMillisecond);

// A fresh tokenizer (empty word cache) for every iteration; its construction is not timed.
void BM_EncodeEnglishColdCache(benchmark::State& state) {
  const std::string& text = english_text();
  for (auto _ : state) {
    state.PauseTiming();
    const Tokenizer tok = Tokenizer::from_json(tokenizer_json());
    state.ResumeTiming();
    auto ids = tok.encode(text);
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_EncodeEnglishColdCache)->Unit(benchmark::kMillisecond);

// The golden test text (scripts, emoji, combining marks that NFC composes, added and special tokens) repeated.
void BM_EncodeMixed(benchmark::State& state) {
  const Tokenizer tok = Tokenizer::from_json(tokenizer_json());
  const std::string one = read_file(SSM_TOKENIZER_DATA_DIR "/text.txt");
  std::string text;
  while (text.size() < (1u << 20)) text += one;
  (void)tok.encode(text);
  for (auto _ : state) {
    auto ids = tok.encode(text);
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_EncodeMixed)->Unit(benchmark::kMillisecond);

// Bytes of decoded text per second.
void BM_DecodeEnglish(benchmark::State& state) {
  const Tokenizer tok = Tokenizer::from_json(tokenizer_json());
  const auto ids = tok.encode(english_text());
  std::size_t bytes = 0;
  for (auto _ : state) {
    const std::string s = tok.decode(ids);
    bytes = s.size();
    benchmark::DoNotOptimize(s.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes));
}
BENCHMARK(BM_DecodeEnglish)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
