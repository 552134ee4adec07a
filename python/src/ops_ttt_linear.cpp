// ttt_linear and ttt_linear_backward (ssm/ops/ttt_linear.hpp): TTT-Linear's mini-batch inner training; arrays in as
// views, results out as capsules.
#include <nanobind/stl/string.h>

#include "arrays.hpp"
#include "bindings.hpp"
#include "options.hpp"
#include "ssm/ops/ttt_linear.hpp"

namespace ssm::python {

namespace {

using namespace nb::literals;

TttLinearInputs ttt_inputs(const char* op, const Array& q, const Array& k, const Array& v, const Array& eta,
                           const Array& ln_weight, const Array& ln_bias, const OptArray& position_weights,
                           const OptArray& initial_state, const OptArray& initial_pending, const OptArray& cu_seqlens) {
  TttLinearInputs in;
  in.q = view(op, "q", q);
  in.k = view(op, "k", k);
  in.v = view(op, "v", v);
  in.eta = view(op, "eta", eta);
  in.ln_weight = view(op, "ln_weight", ln_weight);
  in.ln_bias = view(op, "ln_bias", ln_bias);
  in.position_weights = view(op, "position_weights", position_weights);
  in.initial_state = view(op, "initial_state", initial_state);
  in.initial_pending = view(op, "initial_pending", initial_pending);
  in.cu_seqlens = view(op, "cu_seqlens", cu_seqlens);
  return in;
}

TttLinearOptions ttt_options(const char* op, index_t mini_batch_size, index_t start, double ln_eps,
                             const std::string& path, int threads) {
  TttLinearOptions opt;
  opt.mini_batch_size = mini_batch_size, opt.start = start, opt.ln_eps = ln_eps, opt.threads = threads;
  opt.path = choice<TttLinearPath>(op, "path", path,
                                   {{"automatic", TttLinearPath::automatic},
                                    {"reference", TttLinearPath::reference},
                                    {"dual", TttLinearPath::dual},
                                    {"recurrent", TttLinearPath::recurrent}});
  return opt;
}

nb::tuple forward(const Array& q, const Array& k, const Array& v, const Array& eta, const Array& ln_weight,
                  const Array& ln_bias, const OptArray& position_weights, const OptArray& initial_state,
                  const OptArray& initial_pending, const OptArray& cu_seqlens, index_t mini_batch_size, index_t start,
                  double ln_eps, bool return_final_state, const std::string& path, int threads) {
  const char* op = "ttt_linear";
  const TttLinearInputs in = ttt_inputs(op, q, k, v, eta, ln_weight, ln_bias, position_weights, initial_state,
                                        initial_pending, cu_seqlens);
  TttLinearOptions opt = ttt_options(op, mini_batch_size, start, ln_eps, path, threads);
  opt.return_final_state = return_final_state;
  TttLinearOutputs r;
  {
    nb::gil_scoped_release unlocked;
    r = ttt_linear(in, opt);
  }
  return nb::make_tuple(capsule(r.out), capsule(r.final_state), capsule(r.final_pending), r.path);
}

nb::tuple backward(const Array& q, const Array& k, const Array& v, const Array& eta, const Array& ln_weight,
                   const Array& ln_bias, const Array& grad_out, const OptArray& position_weights,
                   const OptArray& initial_state, const OptArray& initial_pending, const OptArray& cu_seqlens,
                   const OptArray& grad_final_state, const OptArray& grad_final_pending, index_t mini_batch_size,
                   index_t start, double ln_eps, const std::string& path, int threads) {
  const char* op = "ttt_linear_backward";
  const TttLinearInputs in = ttt_inputs(op, q, k, v, eta, ln_weight, ln_bias, position_weights, initial_state,
                                        initial_pending, cu_seqlens);
  const TttLinearOptions opt = ttt_options(op, mini_batch_size, start, ln_eps, path, threads);
  const TensorView go = view(op, "grad_out", grad_out);
  const std::optional<TensorView> gs = view(op, "grad_final_state", grad_final_state);
  const std::optional<TensorView> gp = view(op, "grad_final_pending", grad_final_pending);
  TttLinearGrads r;
  {
    nb::gil_scoped_release unlocked;
    r = ttt_linear_backward(in, go, gs, gp, opt);
  }
  return nb::make_tuple(capsule(r.grad_q), capsule(r.grad_k), capsule(r.grad_v), capsule(r.grad_eta),
                        capsule(r.grad_ln_weight), capsule(r.grad_ln_bias), capsule(r.grad_position_weights),
                        capsule(r.grad_initial_state), capsule(r.grad_initial_pending), r.path);
}

}  // namespace

void bind_ttt_linear(nb::module_& m) {
  m.def("ttt_linear", &forward, "q"_a, "k"_a, "v"_a, "eta"_a, "ln_weight"_a, "ln_bias"_a, nb::kw_only(),
        "position_weights"_a = nb::none(), "initial_state"_a = nb::none(), "initial_pending"_a = nb::none(),
        "cu_seqlens"_a = nb::none(), "mini_batch_size"_a = 16, "start"_a = 0, "ln_eps"_a = 1e-6,
        "return_final_state"_a = false, "path"_a = "automatic", "threads"_a = 0,
        "TTT-Linear. q, k, v (b, l, h, d); eta (b, l, h); ln_weight, ln_bias (h, d). Returns (out, final_state, "
        "final_pending, path).");
  m.def("ttt_linear_backward", &backward, "q"_a, "k"_a, "v"_a, "eta"_a, "ln_weight"_a, "ln_bias"_a, "grad_out"_a,
        nb::kw_only(), "position_weights"_a = nb::none(), "initial_state"_a = nb::none(),
        "initial_pending"_a = nb::none(), "cu_seqlens"_a = nb::none(), "grad_final_state"_a = nb::none(),
        "grad_final_pending"_a = nb::none(), "mini_batch_size"_a = 16, "start"_a = 0, "ln_eps"_a = 1e-6,
        "path"_a = "automatic", "threads"_a = 0,
        "Gradients of ttt_linear for grad_out (v's shape). Returns (grad_q, grad_k, grad_v, grad_eta, "
        "grad_ln_weight, grad_ln_bias, grad_position_weights, grad_initial_state, grad_initial_pending, path).");
}

}  // namespace ssm::python
