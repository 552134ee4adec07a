// Training from Python: ssm._ext.Trainer, a language model over named mixers (models::TrainableLM<float>: embedding,
// pre-norm residual stack, final RMSNorm, untied head), or a Mamba / Mamba-2 checkpoint's model as one
// (models::to_trainable), with its AdamW optimizer, warmup-cosine schedule and gradient clipping, what example_train
// runs, driven with the caller's batches. The training state (parameters,
// moments, step) goes to and comes from a safetensors file (train::save_training_state), so a run resumes exactly.
#include <nanobind/stl/map.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "arrays.hpp"
#include "bindings.hpp"
#include "ssm/models/fine_tune.hpp"
#include "ssm/models/mamba.hpp"
#include "ssm/models/mamba2.hpp"
#include "ssm/models/trainable_lm.hpp"
#include "ssm/train/adamw.hpp"
#include "ssm/train/param_tree.hpp"
#include "ssm/train/schedule.hpp"
#include "ssm/train/state.hpp"

namespace ssm::python {

namespace {

using namespace nb::literals;
using Model = models::TrainableLM<float>;

/// The sizes and rates a Trainer is made with (the constructor's keyword arguments).
struct TrainerOptions {
  index_t vocab = 0, d_model = 0;
  std::vector<std::string> mixers;  // one name of models::kTrainableMixers per layer
  models::MixerOptions mixer;       // heads, rank, d_state, threads
  std::uint64_t seed = 0;
  double lr = 1e-3, min_lr = -1, weight_decay = 0.01, clip_norm = 1.0;  // min_lr < 0: lr / 10
  std::int64_t warmup = 100, steps = 1000;
  std::string origin;  // "": built from mixers; else the checkpoint model it was made from: "MambaLM <config.json>"

  /// Throws ssm::Error naming the first invalid keyword argument (the mixers' own sizes are add_mixer's checks).
  void validate() const {
    const Checker c("Trainer");
    c.require(vocab >= 1, "vocab", "must be >= 1, got ", vocab);
    c.require(d_model >= 1, "d_model", "must be >= 1, got ", d_model);
    c.require(!mixers.empty(), "mixers", "needs at least one mixer name (", models::kTrainableMixers, ")");
    c.require(std::isfinite(lr) && lr >= 0, "lr", "must be finite and >= 0, got ", lr);
    c.require(min_lr < 0 || (std::isfinite(min_lr) && min_lr <= lr), "min_lr",
              "must be in [0, lr = ", lr, "] (or negative: lr / 10), got ", min_lr);
    c.require(warmup >= 0, "warmup", "must be >= 0, got ", warmup);
    c.require(steps >= 1, "steps", "must be >= 1, got ", steps);
    c.require(std::isfinite(clip_norm) && clip_norm > 0, "clip_norm", "must be finite and > 0, got ", clip_norm);
    c.require(std::isfinite(weight_decay) && weight_decay >= 0, "weight_decay", "must be finite and >= 0, got ",
              weight_decay);
  }

  /// What a saved state must have been trained with to continue this run exactly (the seed and threads aside).
  std::string describe() const {
    std::ostringstream os;
    os.precision(17);
    if (origin.empty()) {
      os << "mixers=";
      for (std::size_t i = 0; i < mixers.size(); ++i) os << (i ? "," : "") << mixers[i];
      os << " vocab=" << vocab << " d_model=" << d_model << " heads=" << mixer.heads << " d_state=" << mixer.d_state
         << " rank=" << mixer.rank << " max_len=" << mixer.max_len;
    } else {
      os << "from=" << origin;  // the model and its whole config: every size and option of its blocks
    }
    os << " lr=" << lr << " min_lr=" << min_lr << " warmup=" << warmup << " steps=" << steps
       << " weight_decay=" << weight_decay << " clip_norm=" << clip_norm;
    return os.str();
  }
};

/// The metadata key under which save() records TrainerOptions::describe().
inline constexpr const char* kTrainerConfigKey = "trainer.config";

Model make_model(const TrainerOptions& o) {
  o.validate();
  Model::Stack stack(o.d_model);
  for (std::size_t i = 0; i < o.mixers.size(); ++i) models::add_mixer(stack, o.mixers[i], o.mixer, o.seed * 1000 + i);
  return Model(o.vocab, std::move(stack), o.seed + 7);
}

/// The checkpoint model a Trainer was made from (Trainer::from_model), by its config: what to_model() rebuilds.
using Origin = std::variant<std::monostate, models::MambaConfig, models::Mamba2Config>;

/// targets as the model takes them, (b l): a contiguous (b, l) array of ids' shape is viewed flat (any other shape
/// goes on as it is, for the model's check to name).
TensorView flat_targets(const TensorView& ids, const TensorView& targets) {
  if (targets.rank() == 2 && ids.rank() == 2 && targets.size(0) == ids.size(0) && targets.size(1) == ids.size(1) &&
      targets.is_contiguous())
    return targets.reshape({targets.numel()});
  return targets;
}

/// The model, its parameter tree (pointers into the model: a Trainer is never moved or copied), the optimizer. Each
/// call holds a mutex while it runs without the GIL: two Python threads on one Trainer take turns.
class Trainer {
 public:
  explicit Trainer(const TrainerOptions& o) : Trainer(o, make_model(o), std::monostate{}) {}
  /// A trainer of `model` (o's rates; its sizes, mixers and origin describe the model), made from `origin`.
  Trainer(const TrainerOptions& o, Model model, Origin origin)
      : model_(std::move(model)),
        opt_(adamw_config(o)),
        rng_(o.seed + 1),
        clip_(o.clip_norm),
        config_(o.describe()),
        origin_(std::move(origin)) {
    o.validate();
    schedule_ = {o.lr, o.min_lr < 0 ? o.lr / 10 : o.min_lr, std::min(o.warmup, o.steps), o.steps};
    schedule_.validate("Trainer: the schedule (lr, min_lr, warmup, steps)");
    params_.add_all("", model_);
  }

  /// A trainer of a checkpoint model (models::to_trainable: the same weights, the same logits), with o's rates.
  template <class Spec>
  static Trainer* from_model(const models::CausalLM<Spec>& lm, TrainerOptions o) {
    const char* mixer = std::is_same_v<Spec, models::MambaSpec> ? "mamba" : "mamba2";  // add_mixer's name of the block
    const auto& cfg = lm.config();
    o.vocab = cfg.padded_vocab(), o.d_model = cfg.d_model;
    o.origin = std::string(Spec::name) + " " + cfg.to_json().dump();
    o.mixers.assign(static_cast<std::size_t>(cfg.n_layer), mixer);
    o.validate();  // the rates, before the copy of the weights
    nb::gil_scoped_release unlocked;  // the copy of the weights (lm stays alive: the caller holds it)
    return new Trainer(o, models::to_trainable<Spec, Model>(lm), cfg);
  }

  /// The checkpoint model with the trained weights (models::from_trainable), for a trainer made by from_model.
  std::variant<models::MambaLM, models::Mamba2LM> to_model() const {
    const Checker c("Trainer::to_model");
    c.require(origin_.index() != 0, "self", "was not made from a checkpoint model (Trainer.from_model / ",
              "from_pretrained); its mixers have no checkpoint layout");
    nb::gil_scoped_release unlocked;
    const std::lock_guard lock(mu_);
    if (const auto* m1 = std::get_if<models::MambaConfig>(&origin_))
      return models::from_trainable<models::MambaSpec, Model>(*m1, model_);
    return models::from_trainable<models::Mamba2Spec, Model>(std::get<models::Mamba2Config>(origin_), model_);
  }
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  /// One step on a batch: the loss and every gradient, the global norm clipped, AdamW at the schedule's rate.
  nb::dict step(const TensorView& ids, const TensorView& targets) {
    Model::StepResult r;
    double norm = 0, lr = 0;
    std::int64_t steps = 0;
    {
      nb::gil_scoped_release unlocked;
      const std::lock_guard lock(mu_);
      Model::Grads g;
      r = model_.step(ids, flat_targets(ids, targets), g);
      train::ParamTree<float> grads;
      grads.add_all("", g);
      norm = train::clip_grad_norm(grads, clip_);
      lr = schedule_(opt_.steps());
      opt_.step(params_, grads, lr);
      steps = opt_.steps();  // this step's count, whatever another thread does next
    }
    nb::dict d = result(r);
    d["lr"] = lr, d["grad_norm"] = norm, d["step"] = steps;
    return d;
  }

  nb::dict evaluate(const TensorView& ids, const TensorView& targets) const {
    Model::StepResult r;
    {
      nb::gil_scoped_release unlocked;
      const std::lock_guard lock(mu_);
      r = model_.evaluate(ids, flat_targets(ids, targets));
    }
    return result(r);
  }

  Tensor logits(const TensorView& ids) const {
    nb::gil_scoped_release unlocked;
    const std::lock_guard lock(mu_);
    return model_.logits(ids);
  }

  /// The training state, with `metadata` and this trainer's options (kTrainerConfigKey).
  void save(const std::string& path, const std::map<std::string, std::string>& metadata) const {
    const Checker c("Trainer::save");
    for (const auto& kv : metadata)
      c.require(kv.first.rfind("trainer.", 0) != 0, "metadata", "key '", kv.first, "' is reserved ('trainer.' keys)");
    std::map<std::string, std::string> extra = metadata;
    extra[kTrainerConfigKey] = config_;
    const std::lock_guard lock(mu_);
    train::save_training_state(path, params_, opt_, rng_, extra);
  }
  /// A state saved by a Trainer of the same options (else an ssm::Error, and nothing changes); returns the caller's
  /// metadata.
  std::map<std::string, std::string> load(const std::string& path) {
    const Checker c("Trainer::load");
    {
      const safetensors::File f = safetensors::File::open(path);  // a malformed file is an error here
      const auto it = f.metadata().find(kTrainerConfigKey);
      c.require(it != f.metadata().end(), "path", "'", path, "' was not saved by a Trainer (no '", kTrainerConfigKey,
                "' metadata)");
      c.require(it->second == config_, "path", "'", path, "' was saved by a Trainer with ", it->second,
                "; this one has ", config_, " (a run continues exactly only with the options it was saved with)");
    }
    std::map<std::string, std::string> extra;
    {
      const std::lock_guard lock(mu_);
      train::load_training_state(path, params_, opt_, rng_, &extra);
    }
    extra.erase(kTrainerConfigKey);
    return extra;
  }

  std::vector<std::string> parameter_names() const {
    const std::lock_guard lock(mu_);
    std::vector<std::string> names;
    for (const auto& e : params_.entries()) names.push_back(e.name);
    return names;
  }
  /// A copy of parameter `name` as a flat f32 tensor.
  Tensor parameter(const std::string& name) const {
    const std::lock_guard lock(mu_);
    for (const auto& e : params_.entries())
      if (e.name == name) {
        Tensor t = Tensor::empty({static_cast<index_t>(e.values->size())}, DType::f32);
        std::copy(e.values->begin(), e.values->end(), t.data_as<float>());
        return t;
      }
    Checker("Trainer::parameter")
        .require(false, "name", "is not a parameter: '", name, "' (parameter_names() lists them)");
    return {};
  }

  std::int64_t steps() const {
    const std::lock_guard lock(mu_);
    return opt_.steps();
  }
  index_t num_parameters() const { return params_.numel(); }
  index_t vocab() const { return model_.vocab(); }
  index_t d_model() const { return model_.d_model(); }
  double lr_at(std::int64_t step) const { return schedule_(step); }

 private:
  static train::AdamWConfig adamw_config(const TrainerOptions& o) {
    train::AdamWConfig a;
    a.weight_decay = o.weight_decay;
    a.decays = train::decays_by_default;
    return a;
  }
  static nb::dict result(const Model::StepResult& r) {
    nb::dict d;
    d["loss"] = r.loss, d["count"] = r.count, d["correct"] = r.correct;
    d["accuracy"] = r.count ? static_cast<double>(r.correct) / static_cast<double>(r.count) : 0.0;
    return d;
  }

  Model model_;
  train::ParamTree<float> params_;
  train::AdamW<float> opt_;
  train::WarmupCosine schedule_;
  std::mt19937_64 rng_;  // saved with the state (the training-state format keeps one); the batches are the caller's
  double clip_;
  std::string config_;     // TrainerOptions::describe()
  Origin origin_;          // the checkpoint model's config (from_model), else none
  mutable std::mutex mu_;  // held by every call that reads or writes the model or the optimizer
};

/// Trainer.from_model for checkpoint models of type LM (MambaLM, Mamba2LM): the sizes come from the model, the rates
/// from the keywords.
template <class LM>
void def_from_model(nb::class_<Trainer>& cls) {
  cls.def_static(
      "from_model",
      [](const LM& lm, double lr, double min_lr, std::int64_t warmup, std::int64_t steps, double weight_decay,
         double clip_norm) {
        TrainerOptions o;
        o.lr = lr, o.min_lr = min_lr, o.warmup = warmup, o.steps = steps, o.weight_decay = weight_decay;
        o.clip_norm = clip_norm;
        return Trainer::from_model(lm, o);
      },
      "lm"_a, nb::kw_only(), "lr"_a = 1e-4, "min_lr"_a = -1.0, "warmup"_a = 100, "steps"_a = 1000,
      "weight_decay"_a = 0.01, "clip_norm"_a = 1.0, nb::rv_policy::take_ownership,
      "A trainer of a loaded MambaLM or Mamba2LM (fine-tuning): its weights in float32, the same logits; the rates as "
      "the constructor's. to_model() gives the checkpoint model back with the trained weights.");
}

}  // namespace

void bind_train(nb::module_& m) {
  nb::class_<Trainer>(m, "Trainer",
                      "A language model over named mixers (embedding, pre-norm residual layers, final RMSNorm, untied "
                      "head), or a Mamba / Mamba-2 checkpoint's model (from_model: its layers, its tied or untied "
                      "head), with AdamW (decoupled weight decay on all but norms, the embedding and S4 kernels), a "
                      "warmup-cosine learning-rate schedule and global-norm gradient clipping: example_train driven "
                      "from Python with the caller's batches. float32 on the CPU.")
      .def(
          "__init__",
          [](Trainer* self, index_t vocab, index_t d_model, const std::vector<std::string>& mixers, index_t heads,
             index_t d_state, index_t rank, index_t max_len, double lr, double min_lr, std::int64_t warmup,
             std::int64_t steps, double weight_decay, double clip_norm, std::uint64_t seed, int threads) {
            TrainerOptions o;
            o.vocab = vocab, o.d_model = d_model, o.mixers = mixers, o.seed = seed;
            o.mixer.heads = heads, o.mixer.d_state = d_state, o.mixer.rank = rank, o.mixer.threads = threads;
            o.mixer.max_len = max_len;
            o.lr = lr, o.min_lr = min_lr, o.warmup = warmup, o.steps = steps, o.weight_decay = weight_decay;
            o.clip_norm = clip_norm;
            new (self) Trainer(o);
          },
          "vocab"_a, "d_model"_a, "mixers"_a, "heads"_a = 2, "d_state"_a = 16, "rank"_a = 8, "max_len"_a = 0,
          "lr"_a = 1e-3, "min_lr"_a = -1.0, "warmup"_a = 100, "steps"_a = 1000, "weight_decay"_a = 0.01,
          "clip_norm"_a = 1.0, "seed"_a = 0, "threads"_a = 0,
          "mixers: one name per layer, of deltanet, gated_deltanet, linear_attention, retnet, gla, ttt, rwkv7, rwkv4, "
          "rwkv4_channel, mamba, mamba_s4d, s6, s4d, mamba2, hyena, striped_hyena, s4d_layer, s4_layer, attention, "
          "moe (8 experts, 2 per token). heads (all but the Mamba-1 family, Hyena, RWKV-4, the S4 layers and moe), "
          "d_state (Mamba, Mamba-2; the S4 layers' N, even; StripedHyena's poles per channel), rank (RWKV-7), max_len "
          "(Hyena: the longest sequence, its filters' length; s4_layer: the longest training length, C~'s; "
          "striped_hyena: its filter's taps, 2048 when 0). The schedule: linear warmup over `warmup` steps to lr, "
          "cosine to min_lr (-1: lr / 10) at `steps`.")
      .def("to_model", &Trainer::to_model,
           "The checkpoint model (MambaLM or Mamba2LM) with the trained weights, for a trainer made by from_model: "
           "generate with it, or save() it as a Hugging Face checkpoint.")
      .def(
          "step",
          [](Trainer& t, const Array& ids, const Array& targets) {
            return t.step(view("Trainer::step", "ids", ids), view("Trainer::step", "targets", targets));
          },
          "ids"_a, "targets"_a,
          "One training step: ids (b, l) int32/int64, targets (b l) or (b, l) int32/int64 (-100: not counted). "
          "Returns {loss, count, correct, accuracy, lr, grad_norm, step} (the loss and accuracy before the update).")
      .def(
          "evaluate",
          [](const Trainer& t, const Array& ids, const Array& targets) {
            return t.evaluate(view("Trainer::evaluate", "ids", ids), view("Trainer::evaluate", "targets", targets));
          },
          "ids"_a, "targets"_a, "The loss and accuracy without a step: {loss, count, correct, accuracy}.")
      .def(
          "logits_capsule",
          [](const Trainer& t, const Array& ids) { return capsule(t.logits(view("Trainer::logits", "ids", ids))); },
          "ids"_a, "Logits (b, l, vocab) float32 for ids (b, l), as a capsule.")
      .def("save", &Trainer::save, "path"_a, "metadata"_a = std::map<std::string, std::string>{},
           "Writes the training state (parameters, AdamW moments, step; and string metadata) to a safetensors file.")
      .def("load", &Trainer::load, "path"_a,
           "Restores a state saved by a Trainer of the same mixers and sizes (else ssm.Error, nothing changed); "
           "returns its metadata.")
      .def("parameter_names", &Trainer::parameter_names, "Every parameter's name, in the optimizer's order.")
      .def(
          "parameter_capsule", [](const Trainer& t, const std::string& name) { return capsule(t.parameter(name)); },
          "name"_a, "A copy of one parameter, flat float32, as a capsule.")
      .def("lr_at", &Trainer::lr_at, "step"_a, "The schedule's learning rate at a step (counted from 0).")
      .def_prop_ro("steps", &Trainer::steps, "Optimizer steps taken.")
      .def_prop_ro("num_parameters", &Trainer::num_parameters)
      .def_prop_ro("vocab", &Trainer::vocab)
      .def_prop_ro("d_model", &Trainer::d_model);
  // from_model: one overload per checkpoint model, the same keywords
  auto cls = nb::borrow<nb::class_<Trainer>>(m.attr("Trainer"));
  def_from_model<models::MambaLM>(cls);
  def_from_model<models::Mamba2LM>(cls);
}

}  // namespace ssm::python
