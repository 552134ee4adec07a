// Trains a small language model (ssm::models::StackLM: an embedding, pre-norm residual layers of one mixer, a final
// norm and a head) on a synthetic task with AdamW, gradient clipping at 1 and a warmup + cosine schedule. It prints
// loss, accuracy, tokens/s and an ETA as it goes, and writes the run as JSON and its loss curve as an SVG
// (docs/training.md).
//
// Usage: example_train [--mixer M] [--task T] [--layers N] [--d D] [--heads H] [--vocab V] [--len L] [--batch B]
//                      [--steps S] [--lr LR] [--warmup W] [--seed S] [--threads T] [--out DIR] [--save F] [--resume F]
//                      [--stop N] [--eval-lens L1,L2,...] [--eval-batches N]
//   mixer  deltanet | gated_deltanet (default) | linear_attention | retnet | gla | ttt | rwkv7 | rwkv4 |
//          rwkv4_channel | mamba | mamba_s4d | s6 | s4d | mamba2 | hyena | striped_hyena | s4d_layer | s4_layer |
//          attention | moe  (moe: 8 SwiGLU experts, 2 per token, a feed-forward with no token mixing; rwkv4,
//          rwkv4_channel: RWKV-4's time and channel mixing; striped_hyena: StripedHyena's gated convolution, 16 poles
//          per channel; mamba_s4d, s6, s4d: the Mamba block without selection, without the gate, without both;
//          s4d_layer, s4_layer: the S4D and S4 layers, state size 16; the filters of hyena and striped_hyena and S4's C̃
//          are as long as the longest of --len and --eval-lens) (models/trainable_lm.hpp; attention is softmax
//          attention with RoPE)
//   task   copy (default: each target the token before it)
//          selective_copy (Mamba §4.1.1: data tokens among noise, to repeat in order after the markers)
//          induction (Mamba §4.1.2: after a trigger token, the token that followed its first occurrence)
//          mqar (Zoology: key-value pairs, then queries of the keys, each answered with its value)
//   out    write DIR/train.json and DIR/loss.svg (default: the working directory)
//   save / resume   a training state (parameters, AdamW, step, the data generator) written at the end / read first
//   stop   end after step N of the S (the schedule still spans S): with --save, a run to --resume later, which then
//          continues exactly as the run that never stopped
//   eval-lens  after training, the accuracy on eval-batches (default 4) fresh batches of the task at each of these
//          lengths (the induction heads' extrapolation: train at one length, test at longer ones)
// With no arguments: 2 Gated DeltaNet layers of width 32 on the copy task, 100 steps at lr 1e-2 (about a second).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ssm/models/trainable_lm.hpp"
#include "ssm/train.hpp"

namespace {

using ssm::index_t;
using ssm::Tensor;
using Model = ssm::models::TrainableLM<float>;
constexpr std::int64_t kIgnore = -100;

struct Options {
  std::string mixer = "gated_deltanet", task = "copy", out = ".", save, resume;
  index_t layers = 2, d = 32, heads = 2, vocab = 16, len = 32, batch = 8, steps = 100, warmup = 10, stop = 0;
  std::vector<index_t> eval_lens;
  index_t eval_batches = 4;
  double lr = 1e-2;
  std::uint64_t seed = 0;
  int threads = 0;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    SSM_CHECK(i + 1 < argc, "example_train: ", a, " needs a value");
    const std::string v = argv[++i];
    // The whole of `text` (the value, or one item of it) as a number of the option's type (std::stoll / std::stod),
    // or an error naming the option and showing its value.
    auto parse_as = [&](const std::string& text, auto convert, const char* what) {
      std::size_t used = 0;
      decltype(convert(text, &used)) n{};
      try {
        n = convert(text, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      SSM_CHECK(used == text.size() && !text.empty(), "example_train: ", a, " expects ", what, ", got '", v, "'");
      return n;
    };
    auto num = [&] {
      return parse_as(v, [](const std::string& t, std::size_t* u) { return std::stoll(t, u); }, "an integer");
    };
    if (a == "--mixer") o.mixer = v;
    else if (a == "--task") o.task = v;
    else if (a == "--layers") o.layers = num();
    else if (a == "--d") o.d = num();
    else if (a == "--heads") o.heads = num();
    else if (a == "--vocab") o.vocab = num();
    else if (a == "--len") o.len = num();
    else if (a == "--batch") o.batch = num();
    else if (a == "--steps") o.steps = num();
    else if (a == "--warmup") o.warmup = num();
    else if (a == "--lr")
      o.lr = parse_as(v, [](const std::string& t, std::size_t* u) { return std::stod(t, u); }, "a number");
    else if (a == "--seed") o.seed = static_cast<std::uint64_t>(num());
    else if (a == "--threads") o.threads = static_cast<int>(num());
    else if (a == "--out") o.out = v;
    else if (a == "--save") o.save = v;
    else if (a == "--resume") o.resume = v;
    else if (a == "--stop") o.stop = num();
    else if (a == "--eval-batches") o.eval_batches = num();
    else if (a == "--eval-lens") {
      o.eval_lens.clear();  // the last --eval-lens counts
      for (std::size_t from = 0; from <= v.size();) {  // comma-separated integers, each parsed whole
        const std::size_t to = std::min(v.find(',', from), v.size());
        const std::string item = v.substr(from, to - from);
        o.eval_lens.push_back(
            parse_as(item, [](const std::string& t, std::size_t* u) { return std::stoll(t, u); }, "lengths separated by commas"));
        from = to + 1;
      }
    }
    else ssm::fail("example_train: unknown option '", a, "' (see the usage at the top of examples/train.cpp)");
  }
  SSM_CHECK(o.layers >= 1 && o.d >= 2 && o.heads >= 1 && o.len >= 4 && o.batch >= 1 && o.steps >= 1 && o.vocab >= 8 &&
                o.eval_batches >= 1,
            "example_train: expected layers, heads, batch, steps, eval-batches >= 1, d >= 2, len >= 4 and vocab >= 8");
  // A batch's tokens, at the training length and at each evaluation length, checked here rather than after training.
  constexpr index_t kMaxTokens = index_t(1) << 26;
  for (const index_t L : o.eval_lens)
    SSM_CHECK(L >= 4 && L <= kMaxTokens, "example_train: --eval-lens expects lengths in [4, 2^26], got ", L);
  for (const index_t L : o.eval_lens)
    SSM_CHECK(o.batch <= kMaxTokens / L, "example_train: --batch ", o.batch, " × --eval-lens ", L,
              " exceeds 2^26 tokens a batch");
  SSM_CHECK(o.len <= kMaxTokens && o.batch <= kMaxTokens / o.len, "example_train: --batch ", o.batch, " × --len ",
            o.len, " exceeds 2^26 tokens a batch");
  return o;
}

/// The longest sequence the model sees, --len or an --eval-lens length: Hyena's l_max (its filters' length and the
/// scale of its positions t / (l_max − 1), so it is part of the model).
index_t max_len(const Options& o) {
  index_t m = o.len;
  for (const index_t L : o.eval_lens) m = std::max(m, L);
  return m;
}

/// What a training state records of the run (train::save_training_state's extra metadata), so that a resume with
/// other options is refused rather than continued with other semantics.
std::map<std::string, std::string> run_options(const Options& o) {
  auto str = [](auto v) { return std::to_string(v); };
  return {{"example_train.mixer", o.mixer},          {"example_train.task", o.task},
          {"example_train.layers", str(o.layers)},   {"example_train.d", str(o.d)},
          {"example_train.heads", str(o.heads)},     {"example_train.vocab", str(o.vocab)},
          {"example_train.len", str(o.len)},         {"example_train.batch", str(o.batch)},
          {"example_train.steps", str(o.steps)},     {"example_train.warmup", str(o.warmup)},
          {"example_train.lr", str(o.lr)},           {"example_train.seed", str(o.seed)},
          {"example_train.max_len", str(max_len(o))}};
}

/// Appends one layer of the chosen mixer, width d, from seed.
void add_layer(Model::Stack& stack, const Options& o, std::uint64_t seed) {
  ssm::models::MixerOptions mo;
  mo.heads = o.heads, mo.threads = o.threads;
  mo.max_len = max_len(o);  // hyena's filters and S4's C̃ cover the longest sequence it will see
  ssm::models::add_mixer(stack, o.mixer, mo, seed);
}

/// A batch of the task: ids (batch, L) and targets (batch L), kIgnore where nothing is asked (L: o.len, or an evaluation
/// length).
void make_batch(const Options& o, std::mt19937_64& rng, Tensor& ids, Tensor& targets, index_t L) {
  const index_t B = o.batch, V = o.vocab;
  ids = Tensor::empty({B, L}, ssm::DType::i64), targets = Tensor::empty({B * L}, ssm::DType::i64);
  std::int64_t* x = ids.data_as<std::int64_t>();
  std::int64_t* y = targets.data_as<std::int64_t>();
  std::fill_n(y, B * L, kIgnore);
  auto pick = [&](std::int64_t lo, std::int64_t hi) { return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng); };
  for (index_t b = 0; b < B; ++b) {
    std::int64_t* xs = x + b * L;
    std::int64_t* ys = y + b * L;
    if (o.task == "copy") {
      for (index_t t = 0; t < L; ++t) xs[t] = pick(0, V - 1), ys[t] = t > 0 ? xs[t - 1] : kIgnore;
    } else if (o.task == "selective_copy") {  // noise 0, data in [1, V − 2], markers V − 1
      const index_t M = std::max<index_t>(1, L / 8);
      std::vector<index_t> where(static_cast<std::size_t>(L - M));
      for (index_t t = 0; t < L - M; ++t) where[t] = t;
      std::shuffle(where.begin(), where.end(), rng);
      where.resize(static_cast<std::size_t>(M));
      std::sort(where.begin(), where.end());
      std::fill_n(xs, L - M, 0);
      for (index_t j = 0; j < M; ++j) {
        xs[where[j]] = pick(1, V - 2);
        xs[L - M + j] = V - 1;
        ys[L - M + j] = xs[where[j]];  // at marker j, the j-th data token
      }
    } else if (o.task == "induction") {  // trigger V − 1, then X; at the end the trigger again: predict X
      for (index_t t = 0; t < L; ++t) xs[t] = pick(0, V - 2);
      const index_t p = pick(0, L / 2 - 2);
      xs[p] = V - 1;
      xs[L - 1] = V - 1;
      ys[L - 1] = xs[p + 1];
    } else if (o.task == "mqar") {  // keys in [0, V/2), values in [V/2, V): pairs, then queries of the keys
      const index_t K = L / 4, Q = L - 2 * K;
      std::vector<std::int64_t> keys(static_cast<std::size_t>(V / 2));
      for (index_t k = 0; k < V / 2; ++k) keys[k] = k;
      std::shuffle(keys.begin(), keys.end(), rng);
      std::map<std::int64_t, std::int64_t> value;
      for (index_t j = 0; j < K; ++j) {
        const std::int64_t k = keys[static_cast<std::size_t>(j % (V / 2))], v = pick(V / 2, V - 1);
        xs[2 * j] = k, xs[2 * j + 1] = v, value[k] = v;
      }
      for (index_t q = 0; q < Q; ++q) {
        const std::int64_t k = xs[2 * pick(0, K - 1)];
        xs[2 * K + q] = k;
        ys[2 * K + q] = value[k];
      }
    } else {
      ssm::fail("example_train: unknown task '", o.task, "' (copy, selective_copy, induction, mqar)");
    }
  }
}

/// The loss curve as an SVG: loss against step, the chance level ln V dashed.
void write_svg(const std::string& path, const std::vector<double>& loss, double chance, const std::string& title) {
  const double W = 640, H = 360, left = 60, right = 20, top = 30, bottom = 40;
  double hi = chance;
  for (double l : loss) hi = std::max(hi, l);
  const double n = static_cast<double>(std::max<std::size_t>(loss.size(), 2) - 1);
  auto X = [&](double s) { return left + (W - left - right) * s / n; };
  auto Y = [&](double l) { return top + (H - top - bottom) * (1 - l / hi); };
  std::ofstream os(path);
  SSM_CHECK(os.good(), "example_train: cannot write '", path, "'");
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\">\n"
     << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
     << "<text x=\"" << left << "\" y=\"20\" font-family=\"sans-serif\" font-size=\"14\">" << title << "</text>\n"
     << "<line x1=\"" << left << "\" y1=\"" << H - bottom << "\" x2=\"" << W - right << "\" y2=\"" << H - bottom
     << "\" stroke=\"black\"/>\n<line x1=\"" << left << "\" y1=\"" << top << "\" x2=\"" << left << "\" y2=\""
     << H - bottom << "\" stroke=\"black\"/>\n"
     << "<text x=\"" << (W - right) << "\" y=\"" << H - 10 << "\" text-anchor=\"end\" font-family=\"sans-serif\" "
     << "font-size=\"12\">step " << loss.size() << "</text>\n"
     << "<text x=\"5\" y=\"" << top + 5 << "\" font-family=\"sans-serif\" font-size=\"12\">" << hi << "</text>\n"
     << "<text x=\"5\" y=\"" << H - bottom << "\" font-family=\"sans-serif\" font-size=\"12\">0</text>\n"
     << "<line x1=\"" << left << "\" y1=\"" << Y(chance) << "\" x2=\"" << W - right << "\" y2=\"" << Y(chance)
     << "\" stroke=\"gray\" stroke-dasharray=\"4 4\"/>\n"
     << "<text x=\"" << W - right << "\" y=\"" << Y(chance) - 4 << "\" text-anchor=\"end\" font-family=\"sans-serif\" "
     << "font-size=\"11\" fill=\"gray\">ln V (chance)</text>\n<polyline fill=\"none\" stroke=\"steelblue\" points=\"";
  for (std::size_t s = 0; s < loss.size(); ++s) os << X(static_cast<double>(s)) << "," << Y(loss[s]) << " ";
  os << "\"/>\n</svg>\n";
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options o = parse(argc, argv);
    Model::Stack stack(o.d);
    for (index_t i = 0; i < o.layers; ++i) add_layer(stack, o, o.seed * 1000 + static_cast<std::uint64_t>(i));
    Model model(o.vocab, std::move(stack), o.seed + 7);
    ssm::train::ParamTree<float> params;
    params.add_all("", model);
    ssm::train::AdamWConfig acfg;
    acfg.weight_decay = 0.01;
    acfg.decays = ssm::train::decays_by_default;
    ssm::train::AdamW<float> opt(acfg);
    const ssm::train::WarmupCosine schedule{o.lr, o.lr / 10, std::min(o.warmup, o.steps), o.steps};
    schedule.validate("example_train: the schedule (--lr, --warmup, --steps)");
    const std::int64_t last = o.stop > 0 ? std::min(o.stop, o.steps) : o.steps;
    std::mt19937_64 data(o.seed + 1);
    if (!o.resume.empty()) {
      {  // the run's options first: a state of other sizes would otherwise fail on the first parameter that differs
        const ssm::safetensors::File f = ssm::safetensors::File::open(o.resume);
        const auto& saved = f.metadata();
        for (const auto& [key, value] : run_options(o)) {
          const auto it = saved.find(key);
          SSM_CHECK(it != saved.end() && it->second == value, "example_train: ", o.resume, " was saved with ", key,
                    " = ", it != saved.end() ? it->second : std::string("(none)"), ", this run has ", value,
                    " (resume with the options it was saved with)");
        }
      }
      ssm::train::load_training_state(o.resume, params, opt, data);
      std::printf("resumed from %s at step %lld\n", o.resume.c_str(), static_cast<long long>(opt.steps()));
    }
    std::printf("%s x %lld, d %lld, %lld parameters; task %s, vocab %lld, length %lld, batch %lld, %lld steps\n",
                o.mixer.c_str(), static_cast<long long>(o.layers), static_cast<long long>(o.d),
                static_cast<long long>(params.numel()), o.task.c_str(), static_cast<long long>(o.vocab),
                static_cast<long long>(o.len), static_cast<long long>(o.batch), static_cast<long long>(o.steps));
    struct Logged {
      std::int64_t step;
      double loss, accuracy, lr, grad_norm;
    };
    std::vector<Logged> logged;  // every step's figures (JSON only at the end: no small allocations between steps)
    logged.reserve(static_cast<std::size_t>(std::max<std::int64_t>(0, last - opt.steps())));
    std::vector<double> losses;
    losses.reserve(logged.capacity());
    const auto start = std::chrono::steady_clock::now();
    const std::int64_t first = opt.steps();
    double acc_sum = 0, loss_sum = 0;
    index_t window = 0;
    const std::int64_t every = std::max<std::int64_t>(1, o.steps / 20);
    while (opt.steps() < last) {
      Tensor ids, targets;
      make_batch(o, data, ids, targets, o.len);
      Model::Grads g;
      const auto r = model.step(ids, targets, g);
      ssm::train::ParamTree<float> grads;
      grads.add_all("", g);
      const double norm = ssm::train::clip_grad_norm(grads, 1.0);
      const double lr = schedule(opt.steps());
      opt.step(params, grads, lr);
      const double acc = r.count ? static_cast<double>(r.correct) / static_cast<double>(r.count) : 0.0;
      losses.push_back(r.loss);
      logged.push_back({opt.steps(), r.loss, acc, lr, norm});
      loss_sum += r.loss, acc_sum += acc, ++window;
      if (opt.steps() % every == 0 || opt.steps() == last) {
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        const double done = static_cast<double>(opt.steps() - first);
        const double tps = done * static_cast<double>(o.batch * o.len) / secs;
        const double eta = secs / done * static_cast<double>(last - opt.steps());
        std::printf("step %6lld  loss %.4f  accuracy %.3f  lr %.2e  %8.0f tokens/s  ETA %6.1f s\n",
                    static_cast<long long>(opt.steps()), loss_sum / window, acc_sum / window, lr, tps, eta);
        std::fflush(stdout);
        loss_sum = acc_sum = 0, window = 0;
      }
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    nlohmann::json log = nlohmann::json::array();
    for (const Logged& e : logged)
      log.push_back({{"step", e.step}, {"loss", e.loss}, {"accuracy", e.accuracy}, {"lr", e.lr}, {"grad_norm", e.grad_norm}});
    // Evaluation at other lengths, on batches of a generator of its own (the training data's is left as it was).
    nlohmann::json evals = nlohmann::json::array();
    std::mt19937_64 eval_data(o.seed + 0x9E3779B97F4A7C15ull);
    for (const index_t L : o.eval_lens) {
      index_t count = 0, correct = 0;
      double loss = 0;
      for (index_t i = 0; i < o.eval_batches; ++i) {
        Tensor ids, targets;
        make_batch(o, eval_data, ids, targets, L);
        const auto r = model.evaluate(ids, targets);
        count += r.count, correct += r.correct, loss += r.loss * static_cast<double>(r.count);
      }
      const double acc = count ? static_cast<double>(correct) / static_cast<double>(count) : 0.0;
      std::printf("eval length %6lld  loss %.4f  accuracy %.3f  (%lld targets)\n", static_cast<long long>(L),
                  count ? loss / static_cast<double>(count) : 0.0, acc, static_cast<long long>(count));
      evals.push_back({{"length", L}, {"accuracy", acc}, {"targets", count},
                       {"loss", count ? loss / static_cast<double>(count) : 0.0}});
    }
    std::filesystem::create_directories(o.out);
    const std::string json_path = o.out + "/train.json", svg_path = o.out + "/loss.svg";
    nlohmann::json run = {{"mixer", o.mixer}, {"task", o.task}, {"layers", o.layers}, {"d_model", o.d},
                          {"heads", o.heads}, {"vocab", o.vocab}, {"length", o.len}, {"batch", o.batch},
                          {"steps", o.steps}, {"lr", o.lr}, {"warmup", o.warmup}, {"seed", o.seed},
                          {"parameters", params.numel()}, {"seconds", secs}, {"eval", evals}, {"log", log}};
    std::ofstream(json_path) << run.dump(1) << "\n";
    write_svg(svg_path, losses, std::log(static_cast<double>(o.vocab)),
              o.mixer + " on " + o.task + " (" + std::to_string(o.layers) + " layers, d " + std::to_string(o.d) + ")");
    if (!o.save.empty()) ssm::train::save_training_state(o.save, params, opt, data, run_options(o));
    std::printf("%.1f s; wrote %s and %s%s%s\n", secs, json_path.c_str(), svg_path.c_str(),
                o.save.empty() ? "" : " and ", o.save.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
