// The Hugging Face byte-level BPE tokenizer (ssm/models/tokenizer.hpp): load tokenizer.json, encode, decode.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>
#include <nanobind/stl/vector.h>

#include "bindings.hpp"
#include "ssm/models/tokenizer.hpp"

namespace ssm::python {

void bind_tokenizer(nanobind::module_& m) {
  namespace nb = nanobind;
  using namespace nb::literals;
  using models::Tokenizer;
  nb::class_<Tokenizer>(m, "Tokenizer", "Hugging Face tokenizer.json (byte-level BPE: GPT-2, GPT-NeoX).")
      .def_static("load", &Tokenizer::load, "path"_a, "Reads a tokenizer.json file.")
      .def("encode", &Tokenizer::encode, "text"_a, "add_special_tokens"_a = true,
           "Token ids of text, as tokenizers' Tokenizer.encode(text).ids.")
      .def("decode", &Tokenizer::decode, "ids"_a, "skip_special_tokens"_a = false, "Text of token ids.")
      .def("token_to_id", &Tokenizer::token_to_id, "token"_a)
      .def("id_to_token", &Tokenizer::id_to_token, "id"_a)
      .def_prop_ro("vocab_size", &Tokenizer::vocab_size);
}

}  // namespace ssm::python
