// The language models MambaLM, Mamba2LM, RwkvLM, JambaLM and StripedHyenaLM (ssm/models): load a checkpoint directory, logits, generate.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "arrays.hpp"
#include "bindings.hpp"
#include "options.hpp"
#include "ssm/models/jamba.hpp"
#include "ssm/models/mamba.hpp"
#include "ssm/models/mamba2.hpp"
#include "ssm/models/rwkv.hpp"
#include "ssm/models/striped_hyena.hpp"

namespace ssm::python {

namespace {

using namespace nb::literals;

template <class LM>
void bind_lm(nb::module_& m, const char* name) {
  const std::string op = name;
  nb::class_<LM>(m, name, "A causal language model over the library's blocks, on the CPU (f32 compute).")
      .def_static(
          "load",
          [op](const std::string& dir, const std::optional<std::string>& weight_dtype) {
            models::LoadOptions opt;
            if (weight_dtype)
              opt.weight_dtype = choice<DType>((op + "::load").c_str(), "weight_dtype", *weight_dtype,
                                               {{"f32", DType::f32}, {"f16", DType::f16}, {"bf16", DType::bf16}});
            nb::gil_scoped_release unlocked;
            return LM::load(dir, opt);
          },
          "dir"_a, "weight_dtype"_a = nb::none(),
          "Loads a checkpoint directory (config.json and model.safetensors, or sharded safetensors). weight_dtype "
          "'f32', 'f16' or 'bf16' converts the large matrices; None keeps the checkpoint's dtype.")
      .def_static(
          "init",
          [op](const std::string& config_json, std::uint64_t seed) {
            nlohmann::json j;
            try {
              j = nlohmann::json::parse(config_json);
            } catch (const nlohmann::json::exception& e) {
              fail(op, "::init: argument 'config_json' is not valid JSON: ", e.what());
            }
            const auto cfg = LM::Config::from_json(j);
            nb::gil_scoped_release unlocked;
            return LM::init(cfg, seed);
          },
          "config_json"_a, "seed"_a = 0,
          "A randomly initialized model of the config (config.json's text, as load reads it), from seed.")
      .def(
          "save",
          [](const LM& lm, const std::string& dir) {
            nb::gil_scoped_release unlocked;
            lm.save(dir);
          },
          "dir"_a, "Writes config.json and model.safetensors (f32) into dir, which load reads back.")
      .def(
          "logits_capsule",
          [op](const LM& lm, const Array& ids) {
            const TensorView v = view((op + "::logits").c_str(), "ids", ids);
            Tensor out;
            {
              nb::gil_scoped_release unlocked;
              out = lm.logits(v);
            }
            return capsule(out);
          },
          "ids"_a, "Logits for every position: ids (b, l) int32 or int64 -> (b, l, padded_vocab) float32 capsule.")
      .def(
          "generate",
          [](const LM& lm, const std::vector<std::int64_t>& prompt, index_t max_new_tokens, double temperature,
             index_t top_k, double top_p, std::uint64_t seed, const std::optional<std::vector<std::int64_t>>& stop_ids,
             index_t prefill_chunk) {
            models::GenerationOptions opt;
            opt.temperature = temperature;
            opt.top_k = top_k;
            opt.top_p = top_p;
            opt.seed = seed;
            opt.stop_ids = stop_ids;
            opt.prefill_chunk = prefill_chunk;
            nb::gil_scoped_release unlocked;
            return lm.generate(prompt, max_new_tokens, opt);
          },
          "prompt"_a, "max_new_tokens"_a, nb::kw_only(), "temperature"_a = 0.0, "top_k"_a = 0, "top_p"_a = 1.0,
          "seed"_a = 0, "stop_ids"_a = nb::none(), "prefill_chunk"_a = 0,
          "Continues one prompt (token ids); returns the new tokens only. temperature 0 is greedy; stop_ids None "
          "stops at the config's end-of-sequence ids, [] never stops early.")
      .def("set_threads", &LM::set_threads, "n"_a, "CPU threads for the forward (0: automatic).")
      .def_prop_ro("threads", &LM::threads)
      .def_prop_ro("vocab_size", [](const LM& lm) { return lm.config().vocab_size; })
      .def_prop_ro("padded_vocab", [](const LM& lm) { return lm.config().padded_vocab(); })
      .def_prop_ro("d_model", [](const LM& lm) { return lm.config().d_model; })
      .def_prop_ro("n_layer", [](const LM& lm) { return lm.config().n_layer; })
      .def_prop_ro("weight_bytes", &LM::weight_bytes);
}

}  // namespace

void bind_models(nb::module_& m) {
  bind_lm<models::MambaLM>(m, "MambaLM");
  bind_lm<models::Mamba2LM>(m, "Mamba2LM");
  bind_lm<models::RwkvLM>(m, "RwkvLM");
  bind_lm<models::JambaLM>(m, "JambaLM");
  bind_lm<models::StripedHyenaLM>(m, "StripedHyenaLM");
}

}  // namespace ssm::python
