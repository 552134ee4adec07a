// ssm._ext: the compiled part of the Python package `ssm`. The public API is the Python package (python/ssm), which
// turns the DLPack capsules returned here into arrays of the caller's framework.
#include "bindings.hpp"

NB_MODULE(_ext, m) {
  m.doc() = "ssm._ext: nanobind bindings of the ssm C++ library. Array arguments are taken without copies through "
            "DLPack or the buffer protocol; arrays the library allocates are returned as DLPack capsules that own "
            "their memory. The package `ssm` wraps these functions.";
  using namespace ssm::python;
  bind_errors(m);
  bind_arrays(m);
  bind_backends(m);
  bind_selective_scan(m);
  bind_ssd(m);
  bind_linear_attention(m);
  bind_delta_rule(m);
  bind_hyena(m);
  bind_moe(m);
  bind_rwkv4(m);
  bind_rwkv7(m);
  bind_ttt_linear(m);
  bind_dense(m);
  bind_layers(m);
  bind_models(m);
  bind_tokenizer(m);
  bind_train(m);
  bind_inspect(m);
}
