// linear_attention and linear_attention_backward (ssm/ops/linear_attention.hpp): linear attention, RetNet
// retention and GLA's log gate; arrays in as views, results out as capsules.
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "arrays.hpp"
#include "bindings.hpp"
#include "options.hpp"
#include "ssm/ops/linear_attention.hpp"

namespace ssm::python {

namespace {

using namespace nb::literals;

LinearAttentionInputs attention_inputs(const char* op, const Array& q, const Array& k, const Array& v,
                                       const OptArray& log_gate, const OptArray& initial_state,
                                       const OptArray& initial_normalizer, const OptArray& cu_seqlens) {
  LinearAttentionInputs in;
  in.q = view(op, "q", q);
  in.k = view(op, "k", k);
  in.v = view(op, "v", v);
  in.log_gate = view(op, "log_gate", log_gate);
  in.initial_state = view(op, "initial_state", initial_state);
  in.initial_normalizer = view(op, "initial_normalizer", initial_normalizer);
  in.cu_seqlens = view(op, "cu_seqlens", cu_seqlens);
  return in;
}

LinearAttentionOptions attention_options(const char* op, const std::string& feature_map, bool normalize, double eps,
                                         double scale, const std::optional<std::vector<double>>& gamma,
                                         index_t chunk_size, const std::string& path, int threads) {
  LinearAttentionOptions opt;
  opt.feature_map = feature_map_choice(op, feature_map);
  opt.normalize = normalize;
  opt.eps = eps;
  opt.scale = scale;
  if (gamma) opt.gamma = *gamma;
  opt.chunk_size = chunk_size;
  opt.path = choice<LinearAttentionPath>(op, "path", path,
                                         {{"automatic", LinearAttentionPath::automatic},
                                          {"reference", LinearAttentionPath::reference},
                                          {"chunked", LinearAttentionPath::chunked},
                                          {"recurrent", LinearAttentionPath::recurrent}});
  opt.threads = threads;
  return opt;
}

nb::tuple forward(const Array& q, const Array& k, const Array& v, const OptArray& log_gate, const OptArray& initial_state,
                  const OptArray& initial_normalizer, const OptArray& cu_seqlens, const std::string& feature_map,
                  bool normalize, double eps, double scale, const std::optional<std::vector<double>>& gamma,
                  bool return_final_state, index_t chunk_size, const std::string& path, int threads) {
  const char* op = "linear_attention";
  const LinearAttentionInputs in =
      attention_inputs(op, q, k, v, log_gate, initial_state, initial_normalizer, cu_seqlens);
  LinearAttentionOptions opt = attention_options(op, feature_map, normalize, eps, scale, gamma, chunk_size, path, threads);
  opt.return_final_state = return_final_state;
  LinearAttentionOutputs r;
  {
    nb::gil_scoped_release unlocked;
    r = linear_attention(in, opt);
  }
  return nb::make_tuple(capsule(r.out), capsule(r.final_state), capsule(r.final_normalizer), r.path);
}

nb::tuple backward(const Array& q, const Array& k, const Array& v, const Array& grad_out, const OptArray& log_gate,
                   const OptArray& initial_state, const OptArray& initial_normalizer, const OptArray& cu_seqlens,
                   const OptArray& grad_final_state, const OptArray& grad_final_normalizer,
                   const std::string& feature_map, bool normalize, double eps, double scale,
                   const std::optional<std::vector<double>>& gamma, index_t chunk_size, const std::string& path,
                   int threads) {
  const char* op = "linear_attention_backward";
  const LinearAttentionInputs in =
      attention_inputs(op, q, k, v, log_gate, initial_state, initial_normalizer, cu_seqlens);
  const LinearAttentionOptions opt =
      attention_options(op, feature_map, normalize, eps, scale, gamma, chunk_size, path, threads);
  const TensorView g = view(op, "grad_out", grad_out);
  const std::optional<TensorView> gs = view(op, "grad_final_state", grad_final_state);
  const std::optional<TensorView> gz = view(op, "grad_final_normalizer", grad_final_normalizer);
  LinearAttentionGrads r;
  {
    nb::gil_scoped_release unlocked;
    r = linear_attention_backward(in, g, gs, gz, opt);
  }
  return nb::make_tuple(capsule(r.grad_q), capsule(r.grad_k), capsule(r.grad_v), capsule(r.grad_initial_state),
                        capsule(r.grad_initial_normalizer), capsule(r.grad_log_gate), r.path);
}

}  // namespace

void bind_linear_attention(nb::module_& m) {
  m.def("linear_attention", &forward, "q"_a, "k"_a, "v"_a, nb::kw_only(), "log_gate"_a = nb::none(),
        "initial_state"_a = nb::none(),
        "initial_normalizer"_a = nb::none(), "cu_seqlens"_a = nb::none(), "feature_map"_a = "identity",
        "normalize"_a = false, "eps"_a = 1e-6, "scale"_a = 1.0, "gamma"_a = nb::none(),
        "return_final_state"_a = false, "chunk_size"_a = 64, "path"_a = "automatic", "threads"_a = 0,
        "Linear attention / retention / GLA. q, k (b, l, g, dk); v (b, l, h, dv); log_gate (b, l, h, dk) <= 0. "
        "Returns (out, final_state, final_normalizer, path).");
  m.def("linear_attention_backward", &backward, "q"_a, "k"_a, "v"_a, "grad_out"_a, nb::kw_only(),
        "log_gate"_a = nb::none(), "initial_state"_a = nb::none(), "initial_normalizer"_a = nb::none(), "cu_seqlens"_a = nb::none(),
        "grad_final_state"_a = nb::none(), "grad_final_normalizer"_a = nb::none(), "feature_map"_a = "identity",
        "normalize"_a = false, "eps"_a = 1e-6, "scale"_a = 1.0, "gamma"_a = nb::none(), "chunk_size"_a = 64,
        "path"_a = "automatic", "threads"_a = 0,
        "Gradients of linear_attention for grad_out (v's shape). Returns (grad_q, grad_k, grad_v, "
        "grad_initial_state, grad_initial_normalizer, grad_log_gate, path).");
}

}  // namespace ssm::python
