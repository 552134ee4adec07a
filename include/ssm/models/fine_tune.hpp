// Fine-tuning a checkpoint language model. A Mamba or Mamba-2 model (MambaLM, Mamba2LM: CausalLM over a block that
// trains) becomes a StackLM with the same weights in f32 (to_trainable), which trains with the library's optimizer
// (train/), and goes back to the checkpoint's model (from_trainable) to generate with or to save() as a Hugging Face
// checkpoint. The two models compute the same function: CausalLM's residual stream and pre-norms are StackLM's
// pre-norm residual layers, its tied lm_head StackLM's tied head. The names map one to one:
//
//   checkpoint (Spec's names; Mamba's shown)      StackLM
//   backbone.embeddings.weight                    embedding
//   backbone.layers.<i>.norm.weight               layers.<i>.norm.weight
//   backbone.layers.<i>.mixer.<name>              layers.<i>.mixer.<name>
//   backbone.norm_f.weight                        norm_f.weight
//   lm_head.weight (untied only)                  lm_head
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/models/causal_lm.hpp"
#include "ssm/models/mamba_mixer.hpp"
#include "ssm/models/safetensors.hpp"
#include "ssm/models/stack_lm.hpp"

namespace ssm::models {

/// The StackLM a CausalLM<Spec> trains as: one BlockMixer over Spec's block per layer, f32.
template <class Spec>
using TrainableOf = StackLM<float, BlockMixer<typename Spec::Block>>;

namespace detail {

/// What a CausalLM needs to train as a StackLM: RMSNorm pre-norms (no LayerNorm, no embedding norm), one eps for every
/// norm (StackLM has one), and a model on the CPU.
template <class Spec>
double checked_norm_eps(const Checker& c, const typename Spec::Config& cfg) {
  static_assert(!Spec::layer_norm && Spec::embedding_norm == nullptr,
                "to_trainable / from_trainable: the model's norms must be RMSNorm pre-norms (Mamba, Mamba-2)");
  const double eps = Spec::norm_eps(cfg, 0);
  for (index_t j = 1; j <= Spec::sublayers(cfg); ++j)
    c.require(Spec::norm_eps(cfg, j) == eps, "config", "has norms with different eps (", Spec::norm_eps(cfg, j), " at ",
              j, ", ", eps, " at 0); a StackLM has one");
  return eps;
}

/// The checkpoint name of a StackLM parameter (the table at the top), or "" for a name outside it.
template <class Spec>
std::string checkpoint_name(const std::string& name) {
  if (name == "embedding") return Spec::embedding;
  if (name == "norm_f.weight") return std::string(Spec::final_norm) + ".weight";
  if (name == "lm_head") return Spec::head;
  const std::string layers = "layers.";
  if (name.compare(0, layers.size(), layers) != 0) return "";
  const std::size_t dot = name.find('.', layers.size());
  if (dot == std::string::npos || dot == layers.size()) return "";
  index_t j = 0;
  for (std::size_t k = layers.size(); k < dot; ++k) {
    if (name[k] < '0' || name[k] > '9') return "";
    j = 10 * j + (name[k] - '0');
  }
  const std::string rest = name.substr(dot + 1);
  if (rest == "norm.weight") return Spec::norm_name(j) + ".weight";
  if (rest.compare(0, 6, "mixer.") == 0) return Spec::block_prefix(j) + rest.substr(6);
  return "";
}

}  // namespace detail

/// lm as a StackLM to train: its weights in f32 (16-bit matrices converted), the same function. lm must be on the CPU.
/// LM: TrainableOf<Spec>, or another StackLM whose mixers include BlockMixer<Spec::Block> (e.g. TrainableLM<float>).
template <class Spec, class LM = TrainableOf<Spec>>
LM to_trainable(const CausalLM<Spec>& lm) {
  using Block = typename Spec::Block;
  const Checker c("to_trainable");
  c.require(lm.device().is_cpu(), "lm", "is on ", lm.device().str(), "; training runs on the CPU: pass the CPU model");
  const auto& cfg = lm.config();
  const double eps = detail::checked_norm_eps<Spec>(c, cfg);
  std::map<std::string, std::vector<float>> w;  // checkpoint name -> f32 values
  lm.for_each_weight([&](const std::string& name, const std::vector<float>& v, const Dims&) { w[name] = v; });
  typename LM::Stack stack(cfg.d_model, eps);
  for (const Block& blk : lm.blocks()) {
    BlockMixer<Block> mixer{Block(blk.config(), blk.full_params())};
    mixer.set_threads(lm.threads());
    stack.add(std::move(mixer));
  }
  LM t(cfg.padded_vocab(), std::move(stack), /*seed=*/0, eps, cfg.tie_embeddings);
  std::size_t used = 0;
  t.for_each([&](const char* name, std::vector<float>& v) {
    const std::string cn = detail::checkpoint_name<Spec>(name);
    const auto it = w.find(cn);
    c.require(it != w.end(), "lm", "has no weight '", cn, "' for the trainable model's '", name, "'");
    c.require(it->second.size() == v.size(), "lm", "weight '", cn, "' has ", it->second.size(), " values, '", name,
              "' ", v.size());
    v = it->second;
    ++used;
  });
  c.require(used == w.size(), "lm", "has ", w.size() - used, " weights the trainable model does not hold");
  return t;
}

/// The checkpoint model of config cfg with t's weights (as to_trainable maps them): to generate with, or save().
/// t must have cfg's layers and sizes (else an ssm::Error naming what differs). LM as to_trainable's.
template <class Spec, class LM = TrainableOf<Spec>>
CausalLM<Spec> from_trainable(const typename Spec::Config& cfg, const LM& t) {
  using Block = typename Spec::Block;
  const Checker c("from_trainable");
  cfg.validate();
  const double eps = detail::checked_norm_eps<Spec>(c, cfg);
  const index_t V = cfg.padded_vocab(), d = cfg.d_model;
  c.require(t.d_model() == d && t.vocab() == V, "t", "has d_model ", t.d_model(), " and vocabulary ", t.vocab(),
            ", the config ", d, " and ", V, " (padded)");
  c.require(t.tie_embeddings() == cfg.tie_embeddings, "t", "has ", t.tie_embeddings() ? "a tied" : "an untied",
            " head, the config ", cfg.tie_embeddings ? "a tied" : "an untied", " one");
  c.require(t.stack().size() == static_cast<std::size_t>(Spec::sublayers(cfg)), "t", "has ", t.stack().size(),
            " layers, the config ", Spec::sublayers(cfg));
  c.require(t.norm_eps() == eps && t.stack().eps() == eps, "t", "has norm eps ", t.norm_eps(), ", the config ", eps);
  std::vector<Tensor> keep;
  std::vector<std::pair<std::string, TensorView>> named;
  auto add = [&](const std::string& name, const std::vector<float>& v, const Dims& shape) {
    c.require(static_cast<index_t>(v.size()) == shape.product(), "t", "parameter for '", name, "' has ", v.size(),
              " values, expected ", shape.product());
    keep.push_back(Tensor::from_vector(shape, v));
    named.emplace_back(name, keep.back().view());
  };
  add(Spec::embedding, t.embedding(), {V, d});
  for (std::size_t j = 0; j < t.stack().size(); ++j) {
    const auto* mixer = std::get_if<BlockMixer<Block>>(&t.stack().layer(j));
    c.require(mixer != nullptr, "t", "layer ", j, " is not a ", Spec::model, " block");
    // The block's own sizes, not only its tensors' (Mamba-2's groups and state size can trade places in every size).
    c.require(mixer->block().config() == cfg.block(), "t", "layer ", j, "'s block has another configuration than the ",
              "config's (its sizes, groups, biases or limits differ)");
    const std::string pre = Spec::block_prefix(static_cast<index_t>(j));
    Spec::save_block(mixer->block(), cfg,
                     [&](const char* name, const std::vector<float>& v, const Dims& s) { add(pre + name, v, s); });
    add(Spec::norm_name(static_cast<index_t>(j)) + ".weight", t.stack().norm_weight(j), {d});
  }
  add(std::string(Spec::final_norm) + ".weight", t.norm_f(), {d});
  if (!cfg.tie_embeddings) add(Spec::head, t.head(), {V, d});
  // Through the checkpoint reader: every tensor's name and shape checked against the config, as a file's would be
  // (serialize, then parse the bytes in place: File::parse keeps the buffer alive for the tensors that view it).
  auto bytes = std::make_shared<const std::string>(safetensors::serialize(named));
  const auto* data = reinterpret_cast<const unsigned char*>(bytes->data());
  const safetensors::File f = safetensors::File::parse(bytes, data, bytes->size(), "from_trainable");
  return CausalLM<Spec>::from_safetensors(cfg, f);
}

}  // namespace ssm::models
