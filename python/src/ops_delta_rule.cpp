// delta_rule and delta_rule_backward (ssm/ops/delta_rule.hpp): DeltaNet's and Gated DeltaNet's recurrence; arrays in
// as views, results out as capsules.
#include <nanobind/stl/string.h>

#include "arrays.hpp"
#include "bindings.hpp"
#include "options.hpp"
#include "ssm/ops/delta_rule.hpp"

namespace ssm::python {

namespace {

using namespace nb::literals;

DeltaRuleInputs rule_inputs(const char* op, const Array& q, const Array& k, const Array& v, const Array& beta,
                            const OptArray& g, const OptArray& initial_state, const OptArray& cu_seqlens) {
  DeltaRuleInputs in;
  in.q = view(op, "q", q);
  in.k = view(op, "k", k);
  in.v = view(op, "v", v);
  in.beta = view(op, "beta", beta);
  in.g = view(op, "g", g);
  in.initial_state = view(op, "initial_state", initial_state);
  in.cu_seqlens = view(op, "cu_seqlens", cu_seqlens);
  return in;
}

DeltaRuleOptions rule_options(const char* op, bool l2_normalize, double norm_eps, double scale, index_t chunk_size,
                              const std::string& path, int threads) {
  DeltaRuleOptions opt;
  opt.l2_normalize = l2_normalize;
  opt.norm_eps = norm_eps;
  opt.scale = scale;
  opt.chunk_size = chunk_size;
  opt.path = choice<DeltaRulePath>(op, "path", path,
                                   {{"automatic", DeltaRulePath::automatic},
                                    {"reference", DeltaRulePath::reference},
                                    {"chunked", DeltaRulePath::chunked},
                                    {"recurrent", DeltaRulePath::recurrent}});
  opt.threads = threads;
  return opt;
}

nb::tuple forward(const Array& q, const Array& k, const Array& v, const Array& beta, const OptArray& g,
                  const OptArray& initial_state, const OptArray& cu_seqlens, bool l2_normalize, double norm_eps,
                  double scale, bool return_final_state, index_t chunk_size, const std::string& path, int threads) {
  const char* op = "delta_rule";
  const DeltaRuleInputs in = rule_inputs(op, q, k, v, beta, g, initial_state, cu_seqlens);
  DeltaRuleOptions opt = rule_options(op, l2_normalize, norm_eps, scale, chunk_size, path, threads);
  opt.return_final_state = return_final_state;
  DeltaRuleOutputs r;
  {
    nb::gil_scoped_release unlocked;
    r = delta_rule(in, opt);
  }
  return nb::make_tuple(capsule(r.out), capsule(r.final_state), r.path);
}

nb::tuple backward(const Array& q, const Array& k, const Array& v, const Array& beta, const Array& grad_out,
                   const OptArray& g, const OptArray& initial_state, const OptArray& cu_seqlens,
                   const OptArray& grad_final_state, bool l2_normalize, double norm_eps, double scale,
                   index_t chunk_size, const std::string& path, int threads) {
  const char* op = "delta_rule_backward";
  const DeltaRuleInputs in = rule_inputs(op, q, k, v, beta, g, initial_state, cu_seqlens);
  const DeltaRuleOptions opt = rule_options(op, l2_normalize, norm_eps, scale, chunk_size, path, threads);
  const TensorView go = view(op, "grad_out", grad_out);
  const std::optional<TensorView> gs = view(op, "grad_final_state", grad_final_state);
  DeltaRuleGrads r;
  {
    nb::gil_scoped_release unlocked;
    r = delta_rule_backward(in, go, gs, opt);
  }
  return nb::make_tuple(capsule(r.grad_q), capsule(r.grad_k), capsule(r.grad_v), capsule(r.grad_beta),
                        capsule(r.grad_g), capsule(r.grad_initial_state), r.path);
}

}  // namespace

void bind_delta_rule(nb::module_& m) {
  m.def("delta_rule", &forward, "q"_a, "k"_a, "v"_a, "beta"_a, nb::kw_only(), "g"_a = nb::none(),
        "initial_state"_a = nb::none(), "cu_seqlens"_a = nb::none(), "l2_normalize"_a = true, "norm_eps"_a = 1e-6,
        "scale"_a = 1.0, "return_final_state"_a = false, "chunk_size"_a = 64, "path"_a = "automatic",
        "threads"_a = 0,
        "The delta rule (DeltaNet; with g, Gated DeltaNet). q, k (b, l, g, dk); v (b, l, h, dv); beta, g (b, l, h). "
        "Returns (out, final_state, path).");
  m.def("delta_rule_backward", &backward, "q"_a, "k"_a, "v"_a, "beta"_a, "grad_out"_a, nb::kw_only(),
        "g"_a = nb::none(), "initial_state"_a = nb::none(), "cu_seqlens"_a = nb::none(),
        "grad_final_state"_a = nb::none(), "l2_normalize"_a = true, "norm_eps"_a = 1e-6, "scale"_a = 1.0,
        "chunk_size"_a = 64, "path"_a = "automatic", "threads"_a = 0,
        "Gradients of delta_rule for grad_out (v's shape). Returns (grad_q, grad_k, grad_v, grad_beta, grad_g, "
        "grad_initial_state, path).");
}

}  // namespace ssm::python
