// ssm-generate: text generation from a Hugging Face checkpoint directory (docs/generate.md).
//
//   ssm-generate --model DIR --prompt "text" [-n 64] [--temperature 0.8 --top-k K --top-p P --seed S]
//                [--threads T] [--weights stored|f32|f16|bf16] [--tokenizer PATH] [--ids "1 2 3"] [--file PATH]
//                [--ignore-eos]
//
// Prints the continuation to stdout as it is generated (one flush per token), then the weights' dtype and size,
// prefill and decode speed, peak and current resident memory and the threads to stderr. Every failure is one
// line on stderr, "ssm-generate: <message>", with exit code 2 for a bad command line and 1 for anything else.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

#include "ssm/cpu/threads.hpp"
#include "ssm/models.hpp"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace {

constexpr const char* kUsage =
    "usage: ssm-generate --model DIR (--prompt TEXT | --file PATH | --ids \"ID ...\") [options]\n"
    "\n"
    "Generates a continuation of the prompt with the Mamba / FalconMamba / Mamba-2 checkpoint in DIR (config.json\n"
    "and model.safetensors or a sharded index; the model from config.json's model_type) and prints it to stdout as\n"
    "it is generated; timings and memory go to stderr.\n"
    "\n"
    "  --model DIR          checkpoint directory (required)\n"
    "  --prompt TEXT        prompt text, encoded with the tokenizer\n"
    "  --file PATH          read the prompt text from a file\n"
    "  --ids \"ID ...\"       prompt as token ids (spaces or commas); without a tokenizer the output is ids too\n"
    "  --tokenizer PATH     tokenizer.json to use (default: DIR/tokenizer.json)\n"
    "  -n, --n-predict N    tokens to generate at most (default 64)\n"
    "  --temperature T      sampling temperature, >= 0; 0 is greedy decoding (default 0)\n"
    "  --top-k K            keep the K most probable tokens, 0 = all (default 0)\n"
    "  --top-p P            nucleus sampling, in (0, 1] (default 1)\n"
    "  --seed S             random seed of the sampler (default 0)\n"
    "  --threads T          CPU threads, 0 = automatic (default 0)\n"
    "  --weights W          dtype of the weight matrices in memory: stored (as in the checkpoint: an f16 / bf16\n"
    "                       checkpoint is read in place, resident memory about its file size), f32, f16 or bf16\n"
    "                       (converted at load); arithmetic is f32 either way (default stored)\n"
    "  --ignore-eos         do not stop at the end-of-sequence token of config.json\n"
    "  -h, --help           print this help\n"
    "\n"
    "Exit status: 0 on success, 1 on an error (missing or malformed file, unsupported model, a prompt the model\n"
    "cannot take), 2 on a bad command line.\n";

/// A bad command line: exit code 2.
struct UsageError : ssm::Error {
  using ssm::Error::Error;
};

struct Options {
  std::string model;
  std::optional<std::string> prompt, file, ids, tokenizer;
  std::vector<std::int64_t> prompt_ids;  // --ids, parsed
  ssm::index_t n_predict = 64;
  ssm::models::GenerationOptions gen;
  int threads = 0;
  ssm::models::LoadOptions load;  // --weights: weight_dtype unset = stored
  bool ignore_eos = false;
};

template <class... Args>
[[noreturn]] void usage_fail(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw UsageError(os.str());
}

// Whole-string numbers: "12x", "", " 1" and out-of-range values are errors naming the option.
long long parse_int(std::string_view opt, const std::string& v, long long lo, long long hi, const char* what) {
  std::size_t used = 0;
  long long x = 0;
  try {
    if (!v.empty() && !std::isspace(static_cast<unsigned char>(v[0]))) x = std::stoll(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != v.size() || x < lo || x > hi) usage_fail(opt, ": expected ", what, ", got '", v, "'");
  return x;
}

double parse_double(std::string_view opt, const std::string& v, const char* what) {
  std::size_t used = 0;
  double x = 0;
  try {
    if (!v.empty() && !std::isspace(static_cast<unsigned char>(v[0]))) x = std::stod(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != v.size() || !std::isfinite(x)) usage_fail(opt, ": expected ", what, ", got '", v, "'");
  return x;
}

// --weights: "stored" (unset: each matrix keeps the checkpoint's dtype) or the dtype to hold them in.
std::optional<ssm::DType> parse_weights(const std::string& v) {
  if (v == "stored") return std::nullopt;
  if (v == "f32") return ssm::DType::f32;
  if (v == "f16") return ssm::DType::f16;
  if (v == "bf16") return ssm::DType::bf16;
  usage_fail("--weights: expected stored, f32, f16 or bf16, got '", v, "'");
}

std::vector<std::int64_t> parse_ids(const std::string& s) {
  std::vector<std::int64_t> ids;
  std::string tok;
  std::istringstream in(s);
  while (in >> tok) {
    std::size_t start = 0;
    while (start <= tok.size()) {  // "1,2" and "1, 2" as well as "1 2"
      const std::size_t comma = tok.find(',', start);
      const std::string part = tok.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      if (!part.empty()) ids.push_back(parse_int("--ids", part, 0, (1LL << 62), "token ids >= 0"));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  if (ids.empty()) usage_fail("--ids: expected token ids separated by spaces or commas, got '", s, "'");
  return ids;
}

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (a == "--ignore-eos") {
      o.ignore_eos = true;
      continue;
    }
    if (a.rfind("-", 0) != 0) usage_fail("unexpected argument '", a, "' (options start with --; see --help)");
    static const std::vector<std::string> valued = {"--model", "--prompt", "--file", "--ids", "--tokenizer", "-n",
                                                    "--n-predict", "--temperature", "--top-k", "--top-p", "--seed",
                                                    "--threads", "--weights"};
    if (std::find(valued.begin(), valued.end(), a) == valued.end()) usage_fail("unknown option '", a, "' (see --help)");
    if (i + 1 >= argc) usage_fail(a, ": missing value");
    const std::string v = argv[++i];
    if (a == "--model") o.model = v;
    else if (a == "--prompt") o.prompt = v;
    else if (a == "--file") o.file = v;
    else if (a == "--ids") o.ids = v;
    else if (a == "--tokenizer") o.tokenizer = v;
    else if (a == "-n" || a == "--n-predict") o.n_predict = parse_int(a, v, 0, 1LL << 40, "a token count >= 0");
    else if (a == "--temperature") o.gen.temperature = parse_double(a, v, "a number >= 0");
    else if (a == "--top-k") o.gen.top_k = parse_int(a, v, 0, 1LL << 40, "an integer >= 0");
    else if (a == "--top-p") o.gen.top_p = parse_double(a, v, "a number in (0, 1]");
    else if (a == "--seed") o.gen.seed = static_cast<std::uint64_t>(parse_int(a, v, 0, 1LL << 62, "an integer >= 0"));
    else if (a == "--threads") o.threads = static_cast<int>(parse_int(a, v, 0, 4096, "a thread count >= 0"));
    else if (a == "--weights") o.load.weight_dtype = parse_weights(v);
  }
  if (o.model.empty()) usage_fail("--model DIR is required (see --help)");
  const int given = int(o.prompt.has_value()) + int(o.file.has_value()) + int(o.ids.has_value());
  if (given != 1) usage_fail("give exactly one of --prompt TEXT, --file PATH, --ids \"ID ...\" (see --help)");
  if (o.gen.temperature < 0) usage_fail("--temperature: expected a number >= 0, got ", o.gen.temperature);
  if (!(o.gen.top_p > 0 && o.gen.top_p <= 1)) usage_fail("--top-p: expected a number in (0, 1], got ", o.gen.top_p);
  if (o.ids) o.prompt_ids = parse_ids(*o.ids);
  if (o.ignore_eos) o.gen.stop_ids = std::vector<std::int64_t>{};
  o.gen.prefill_chunk = 1024;  // bounded prefill memory for a prompt of any length
  return o;
}

std::string read_text(const std::string& path) {
  std::ifstream is(path, std::ios::binary);
  SSM_CHECK(is, "--file: cannot open '", path, "'");
  std::ostringstream ss;
  ss << is.rdbuf();
  return ss.str();
}

// VmHWM (peak resident set) and VmRSS of this process in KiB, from /proc/self/status; -1 where unavailable.
std::pair<long long, long long> resident_kib() {
  long long hwm = -1, rss = -1;
  std::ifstream is("/proc/self/status");
  std::string line;
  while (std::getline(is, line)) {
    if (line.rfind("VmHWM:", 0) == 0) hwm = std::atoll(line.c_str() + 6);
    if (line.rfind("VmRSS:", 0) == 0) rss = std::atoll(line.c_str() + 6);
  }
  return {hwm, rss};
}

void write_out(const std::string& s) {
  if (s.empty()) return;
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

// The model type's name as config.json gives it (mamba_ssm's configs, which have none, are Mamba).
template <class LM>
const char* model_type(const LM& model) {
  if constexpr (std::is_same_v<LM, ssm::models::Mamba2LM>) return "mamba2";
  else if constexpr (std::is_same_v<LM, ssm::models::RwkvLM>) return "rwkv";
  else if constexpr (std::is_same_v<LM, ssm::models::JambaLM>) return "jamba";
  else if constexpr (std::is_same_v<LM, ssm::models::StripedHyenaLM>) return "stripedhyena";
  else return model.config().mixer_rms_eps ? "falcon_mamba" : "mamba";
}

// Loads the checkpoint as an LM (MambaLM, Mamba2LM, RwkvLM, JambaLM or StripedHyenaLM) and generates.
template <class LM>
int run_model(const Options& o) {
  namespace fs = std::filesystem;
  using clock = std::chrono::steady_clock;
  const auto t_load = clock::now();
  LM model = LM::load(o.model, o.load);
  model.set_threads(o.threads);
  const auto& cfg = model.config();

  // The tokenizer: --tokenizer, else DIR/tokenizer.json; none is needed when the prompt is given as ids.
  std::optional<ssm::models::Tokenizer> tok;
  std::string tok_path = o.tokenizer.value_or((fs::path(o.model) / "tokenizer.json").string());
  if (o.tokenizer || !o.ids || fs::exists(tok_path)) {
    SSM_CHECK(o.tokenizer || fs::exists(tok_path), "no tokenizer: '", tok_path,
              "' not found (give --tokenizer PATH, or the prompt as token ids with --ids)");
    tok = ssm::models::Tokenizer::load(tok_path);
  }
  const double load_s = std::chrono::duration<double>(clock::now() - t_load).count();

  std::vector<std::int64_t> prompt;
  if (o.ids) {
    prompt = o.prompt_ids;
  } else {
    const std::string text = o.prompt ? *o.prompt : read_text(*o.file);
    prompt = tok->encode(ssm::models::Tokenizer::sanitize_utf8(text));
    SSM_CHECK(!prompt.empty(), "the prompt is empty: it encodes to no tokens");
  }
  for (std::size_t i = 0; i < prompt.size(); ++i)
    SSM_CHECK(prompt[i] < cfg.vocab_size, "prompt token ", prompt[i], " at position ", i,
              " is outside the model's vocabulary of ", cfg.vocab_size, " ids",
              o.ids ? std::string() : " (is '" + tok_path + "' the tokenizer of this model?)");

  std::optional<ssm::models::DecodeStream> text;
  if (tok) text.emplace(*tok);
  bool first_id = true;
  clock::time_point t_first;
  const auto t0 = clock::now();
  const ssm::index_t n = model.generate_stream(prompt, o.n_predict, o.gen, [&](std::int64_t id) {
    if (first_id) t_first = clock::now();  // the prefill's logits gave this token
    if (text) {
      write_out(text->step(id));
    } else {
      if (!first_id) write_out(" ");
      write_out(std::to_string(id));
    }
    first_id = false;
    return true;
  });
  if (text) write_out(text->finish());
  const auto t_end = clock::now();

  // Report: the prompt's prefill (and the first token's sampling), then each further token's step.
  const double prefill_s = std::chrono::duration<double>((n > 0 ? t_first : t_end) - t0).count();
  const double decode_s = n > 0 ? std::chrono::duration<double>(t_end - t_first).count() : 0.0;
  const long long steps = n > 1 ? n - 1 : 0;
  const auto [hwm, rss] = resident_kib();
  const int threads = o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::fprintf(stderr, "\n");
  std::fprintf(stderr, "ssm-generate: model %s: %s, %lld layers, d_model %lld, vocab %lld, loaded in %.3f s\n",
               o.model.c_str(), model_type(model), static_cast<long long>(cfg.n_layer),
               static_cast<long long>(cfg.d_model), static_cast<long long>(cfg.vocab_size), load_s);
  std::fprintf(stderr, "ssm-generate: weights: %s (%s), %.1f MiB\n",
               std::string(ssm::name(model.weight_dtype())).c_str(), o.load.weight_dtype ? "--weights" : "as stored",
               double(model.weight_bytes()) / (1024.0 * 1024.0));
  std::fprintf(stderr, "ssm-generate: prompt: %zu tokens, prefill %.2f ms (%.1f tokens/s)\n", prompt.size(),
               prefill_s * 1e3, prefill_s > 0 ? double(prompt.size()) / prefill_s : 0.0);
  std::fprintf(stderr, "ssm-generate: generated: %lld tokens, decode %.2f ms for %lld steps (%.1f tokens/s)\n",
               static_cast<long long>(n), decode_s * 1e3, steps, decode_s > 0 ? double(steps) / decode_s : 0.0);
  std::fprintf(stderr, "ssm-generate: memory: peak RSS %.1f MiB, current RSS %.1f MiB; threads: %d%s\n",
               double(hwm) / 1024.0, double(rss) / 1024.0, threads, o.threads > 0 ? "" : " (automatic, at most)");
  return 0;
}

// The LM for config.json's model_type: mamba2 → Mamba2LM; rwkv → RwkvLM; jamba → JambaLM; stripedhyena →
// StripedHyenaLM (the library's own files); mamba, falcon_mamba and mamba_ssm's configs
// (no model_type) → MambaLM; any other type is an ssm::Error naming it.
int run(const Options& o) {
  const nlohmann::json j = ssm::models::read_config_json(o.model, "ssm-generate");
  std::string type;
  if (j.is_object() && j.contains("model_type") && j["model_type"].is_string()) type = j["model_type"].get<std::string>();
  if (type == "mamba2") return run_model<ssm::models::Mamba2LM>(o);
  if (type == "rwkv") return run_model<ssm::models::RwkvLM>(o);
  if (type == "jamba") return run_model<ssm::models::JambaLM>(o);
  if (type == "stripedhyena") return run_model<ssm::models::StripedHyenaLM>(o);
  SSM_CHECK(type.empty() || type == "mamba" || type == "falcon_mamba", "model_type '", type,
            "' is not implemented by this library (supported: mamba, falcon_mamba, mamba2, rwkv, jamba, stripedhyena)");
  return run_model<ssm::models::MambaLM>(o);
}

// One line on stderr whatever the message holds.
int report(const char* what, int code) {
  std::string line = what;
  std::replace(line.begin(), line.end(), '\n', ' ');
  std::fprintf(stderr, "ssm-generate: %s\n", line.c_str());
  return code;
}

/// Keeps freed activation buffers in the heap. Each layer's temporaries are megabytes (a 512-token prompt's in_proj
/// output is 6 MB); by default glibc maps such blocks fresh and unmaps them on free (or trims the heap), so every
/// layer of a prefill paid page faults on new memory. With 16-bit weights kept, nothing large is freed while loading
/// to raise glibc's adaptive threshold: a 512-token prefill of the Mamba-130m shape took 990 ms without this and 796 ms
/// with it (1 thread, this project's AVX-512 machine), with the same peak resident memory (292 and 294 MiB). 32 MiB is
/// the largest threshold every glibc takes (older ones refuse more than half their heap size); the trim threshold is
/// set only when it is, since setting either one turns glibc's adaptive threshold off.
void keep_freed_memory() {
#if defined(__GLIBC__)
  if (mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1) (void)mallopt(M_TRIM_THRESHOLD, 128 << 20);
#endif
}

}  // namespace

int main(int argc, char** argv) {
  keep_freed_memory();
  try {
    return run(parse_args(argc, argv));
  } catch (const UsageError& e) {
    return report(e.what(), 2);
  } catch (const std::exception& e) {
    return report(e.what(), 1);
  }
}
