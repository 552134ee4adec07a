// Generates tokens with a Mamba language model from a Hugging Face checkpoint directory
// (config.json + model.safetensors), starting from token ids, and prints prefill and decode speed.
//
//   example_generate tests/data/mamba/tiny --prompt 1,17,42,99 --new 32 [--temperature 0.8 --top-k 40
//                    --top-p 0.95 --seed 1 --threads 2]
// Without --temperature decoding is greedy; it stops after config.json's eos_token_id (printed with the
// rest, as transformers does). (No tokenizer: ids in, ids out. For text in and out, streamed, use the
// command-line program ssm-generate, apps/ssm-generate, docs/generate.md.)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "ssm/models.hpp"

namespace {
std::vector<std::int64_t> parse_ids(const std::string& s) {
  std::vector<std::int64_t> ids;
  std::stringstream ss(s);
  std::string tok;
  while (std::getline(ss, tok, ',')) ids.push_back(std::stoll(tok));
  return ids;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && (std::string(argv[1]) == "-h" || std::string(argv[1]) == "--help")) {
    std::cerr << "usage: " << argv[0]
              << " [checkpoint_dir] [--prompt 1,2,3] [--new N] [--temperature T] [--top-k K] [--top-p P] [--seed S]"
                 " [--threads N]\n"
                 "  checkpoint_dir defaults to the tiny test checkpoint tests/data/mamba/tiny\n";
    return 2;
  }
  try {
    // With no directory, the tiny randomly initialized checkpoint committed as test data.
    const std::string dir = argc >= 2 ? argv[1] : std::string(SSM_SOURCE_DIR) + "/tests/data/mamba/tiny";
    std::vector<std::int64_t> prompt = {1, 17, 42, 99};
    ssm::index_t new_tokens = 32;
    ssm::models::SamplingOptions opt;
    int threads = 0;  // automatic
    for (int i = 2; i + 1 < argc; i += 2) {
      const std::string k = argv[i], v = argv[i + 1];
      if (k == "--prompt") prompt = parse_ids(v);
      else if (k == "--new") new_tokens = std::stoll(v);
      else if (k == "--temperature") opt.temperature = std::stod(v);
      else if (k == "--top-k") opt.top_k = std::stoll(v);
      else if (k == "--top-p") opt.top_p = std::stod(v);
      else if (k == "--seed") opt.seed = std::stoull(v);
      else if (k == "--threads") threads = std::stoi(v);
      else throw ssm::Error("unknown option " + k);
    }
    opt.validate();
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    ssm::models::MambaLM model = ssm::models::MambaLM::load(dir);
    model.set_threads(threads);
    const auto t1 = clock::now();
    const auto& c = model.config();
    std::printf("loaded %s: d_model %lld, %lld layers, vocab %lld (padded %lld), d_state %lld in %.3f s\n", dir.c_str(),
                static_cast<long long>(c.d_model), static_cast<long long>(c.n_layer),
                static_cast<long long>(c.vocab_size), static_cast<long long>(c.padded_vocab()),
                static_cast<long long>(c.d_state), std::chrono::duration<double>(t1 - t0).count());

    // generate_stream prefills the prompt in parallel, then decodes one token at a time from the cache, handing
    // each token over as soon as it is sampled (ssm-generate, the command-line program, prints text this way).
    ssm::models::GenerationOptions gen(opt);
    std::vector<std::int64_t> out;
    clock::time_point p1;
    const auto p0 = clock::now();
    model.generate_stream(prompt, new_tokens, gen, [&](std::int64_t id) {
      if (out.empty()) p1 = clock::now();  // the first token comes from the prefill's logits
      out.push_back(id);
      return true;
    });
    const auto p2 = clock::now();
    if (out.empty()) p1 = p2;
    std::printf("prompt:");
    for (auto id : prompt) std::printf(" %lld", static_cast<long long>(id));
    std::printf("\ngenerated:");
    for (auto id : out) std::printf(" %lld", static_cast<long long>(id));
    const double tp = std::chrono::duration<double>(p1 - p0).count(), td = std::chrono::duration<double>(p2 - p1).count();
    std::printf("\nprefill: %zu tokens in %.4f s (%.1f tokens/s)\n", prompt.size(), tp, double(prompt.size()) / tp);
    // Each token after the first costs one step (the last one is not fed back: nothing would read its state).
    const long long steps = out.size() > 1 ? static_cast<long long>(out.size() - 1) : 0;
    std::printf("decode:  %lld steps in %.4f s (%.1f tokens/s); the cache is constant in the context\n", steps, td,
                steps > 0 ? double(steps) / td : 0.0);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
