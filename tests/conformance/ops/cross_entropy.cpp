// cross_entropy (ops/cross_entropy.hpp): the mean of logsumexp(logits_r) − logits_r[t_r] over rows whose target is not
// ignore_index, with grad_logits = grad_scale · (softmax − onehot) / count. The CPU path against the op's reference
// in double: f64 and f32 logits, i32 and i64 targets, one entry, odd sizes, a 5000-entry vocabulary, logits of ±80
// (exp overflows f32 without the max subtracted), ignored rows, every row ignored, a gradient scale, strided logits
// and gradient, the gradient written over the logits (in place), no rows. The loss is output 0, a (1) tensor of the
// logits' dtype.
#include <string>
#include <vector>

#include "../registry.hpp"
#include "ssm/ops/cross_entropy.hpp"

namespace conformance {
namespace {

struct CeShape {
  index_t rows, vocab;
  double spread;       // logits uniform in ±spread
  int ignored;         // 0: none; 1: every third row; 2: every row
  double grad_scale;
  index_t pad;         // > 0: logits and grad_logits with rows pad elements apart beyond vocab
  bool in_place;       // grad_logits over the logits
};

const CeShape& shape_of(const Case& c) { return *std::any_cast<CeShape>(&c.params); }
constexpr std::int64_t kIgnore = -100;

std::vector<Case> ce_cases() {
  const CeShape shapes[] = {
      {1, 1, 1, 0, 1, 0, false},        // every size 1: loss 0, gradient 0
      {5, 37, 3, 1, 1, 3, false},       // odd sizes, ignored rows, strided
      {3, 5000, 4, 0, 0.5, 0, false},   // a wide vocabulary, a gradient scale
      {6, 11, 80, 0, 1, 0, false},      // logits of ±80
      {4, 9, 2, 2, 1, 0, false},        // every row ignored: loss 0, gradient 0
      {7, 13, 2, 1, 1, 2, true},        // in place, strided
      {0, 5, 1, 0, 1, 0, false},        // no rows
  };
  std::vector<Case> cases;
  std::mt19937_64 rng(41);
  for (const CeShape& s : shapes)
    for (DType dt : {DType::f64, DType::f32})
      for (DType tdt : {DType::i64, DType::i32}) {
        Case c;
        c.name = "rows=" + std::to_string(s.rows) + " vocab=" + std::to_string(s.vocab) + " spread=" +
                 std::to_string(static_cast<int>(s.spread)) + (s.ignored ? " ignored" : "") +
                 (s.pad ? " strided" : "") + (s.in_place ? " in-place" : "") + " " + std::string(ssm::name(dt)) +
                 " targets " + std::string(ssm::name(tdt));
        const Tensor logits = uniform(rng, {s.rows, s.vocab}, dt, -s.spread, s.spread);  // (rows, vocab)
        c.inputs.push_back(s.pad ? strided_arg("logits", logits, s.pad) : dense_arg("logits", logits));
        Tensor targets = Tensor::empty({s.rows}, tdt);  // (rows): 0, vocab − 1, then random; some ignored
        std::uniform_int_distribution<index_t> pick(0, s.vocab - 1);
        for (index_t r = 0; r < s.rows; ++r) {
          std::int64_t t = r == 0 ? 0 : (r == 1 ? s.vocab - 1 : pick(rng));
          if (s.ignored == 2 || (s.ignored == 1 && r % 3 == 2)) t = kIgnore;
          if (tdt == DType::i64) targets.data_as<std::int64_t>()[r] = t;
          else targets.data_as<std::int32_t>()[r] = static_cast<std::int32_t>(t);
        }
        c.inputs.push_back(dense_arg("targets", targets));
        c.outputs.push_back({"loss", {1}, dt});  // the mean loss, rounded to the logits' dtype
        c.outputs.push_back({"grad_logits", {s.rows, s.vocab}, dt, s.pad ? Dims{s.vocab + s.pad, 1} : Dims{}});
        c.params = s;
        cases.push_back(std::move(c));
      }
  return cases;
}

void run(const Case& c, const Views& in, const Views& out, ssm::CrossEntropyOptions::Path path, int threads,
         std::string* ran) {
  const CeShape& s = shape_of(c);
  ssm::CrossEntropyInputs ci;
  ci.logits = in[0], ci.targets = in[1], ci.ignore_index = kIgnore;
  if (s.in_place) {
    ssm::copy(out[1], ci.logits);
    ci.logits = out[1];
  }
  ssm::CrossEntropyOptions opt;
  opt.grad_scale = s.grad_scale, opt.path = path, opt.threads = threads;
  const ssm::CrossEntropyResult r = ssm::cross_entropy(ci, out[1], opt);
  from_doubles(out[0], {r.loss});
  if (ran) *ran = r.path;
}

void ce_forward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  const bool reference = cfg.path == "reference";
  std::string path;
  run(c, in, out.views, reference ? ssm::CrossEntropyOptions::Path::reference : ssm::CrossEntropyOptions::Path::automatic,
      cfg.threads, &path);
  EXPECT_EQ(path, reference ? "reference" : "cpu");
}

void ce_forward_reference(const Case& c, const Views& in, const Views& out) {
  run(c, in, out, ssm::CrossEntropyOptions::Path::reference, 1, nullptr);
}

std::string ce_unsupported(const Case&, const RunConfig& cfg, Pass) {
  return cfg.device.is_cuda() ? "no CUDA kernel yet" : "";
}

/// The loss is summed in double by both; the f32 path subtracts the maximum and exponentiates in f32 for the
/// gradient (one rounding each, about 1e-7 relative): f32 1e-5 of the largest output, f64 1e-12.
double ce_tolerance(DType dt, Pass) { return dt == DType::f64 ? 1e-12 : 1e-5; }

const Register reg{Op{"cross_entropy", {"reference", "fast"}, false, ce_cases, ce_unsupported, ce_forward, nullptr,
                      ce_forward_reference, nullptr, ce_tolerance}};

}  // namespace
}  // namespace conformance
