// moe, moe_backward and moe_load_balancing_loss (ssm/ops/moe.hpp): the sparse mixture of SwiGLU experts with top-k routing, and the
// load-balancing auxiliary loss over router logits; arrays in as views, results out as capsules.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "arrays.hpp"
#include "bindings.hpp"
#include "options.hpp"
#include "ssm/ops/moe.hpp"

namespace ssm::python {

namespace {

using namespace nb::literals;

MoeOptions options(const char* op, index_t top_k, bool normalize_topk, const std::string& activation,
                   const std::string& path, int threads) {
  MoeOptions opt;
  opt.top_k = top_k;
  opt.normalize_topk = normalize_topk;
  opt.act = choice<MoeActivation>(op, "activation", activation,
                                  {{"silu", MoeActivation::silu}, {"gelu", MoeActivation::gelu},
                                   {"gelu_tanh", MoeActivation::gelu_tanh}});
  opt.path = choice<MoePath>(op, "path", path,
                             {{"automatic", MoePath::automatic}, {"reference", MoePath::reference},
                              {"grouped", MoePath::grouped}});
  opt.threads = threads;
  return opt;
}

nb::tuple forward(const Array& x, const Array& router, const Array& w_gate_up, const Array& w_down, index_t top_k,
                  bool normalize_topk, const std::string& activation, const std::string& path, int threads) {
  const char* op = "moe";
  const MoeInputs in{view(op, "x", x), view(op, "router", router), view(op, "w_gate_up", w_gate_up),
                     view(op, "w_down", w_down)};
  const MoeOptions opt = options(op, top_k, normalize_topk, activation, path, threads);
  MoeOutputs r;
  {
    nb::gil_scoped_release unlocked;
    r = moe(in, opt);
  }
  return nb::make_tuple(capsule(r.out), capsule(r.router_logits), r.path);
}

nb::tuple backward(const Array& x, const Array& router, const Array& w_gate_up, const Array& w_down,
                   const Array& grad_out, const OptArray& grad_router_logits, index_t top_k, bool normalize_topk,
                   const std::string& activation, const std::string& path, int threads) {
  const char* op = "moe_backward";
  const MoeInputs in{view(op, "x", x), view(op, "router", router), view(op, "w_gate_up", w_gate_up),
                     view(op, "w_down", w_down)};
  const MoeOptions opt = options(op, top_k, normalize_topk, activation, path, threads);
  const TensorView go = view(op, "grad_out", grad_out);
  const std::optional<TensorView> gl = view(op, "grad_router_logits", grad_router_logits);
  MoeGrads r;
  {
    nb::gil_scoped_release unlocked;
    r = moe_backward(in, go, gl, opt);
  }
  return nb::make_tuple(capsule(r.grad_x), capsule(r.grad_router), capsule(r.grad_w_gate_up), capsule(r.grad_w_down),
                        r.path);
}

nb::tuple aux_loss(const std::vector<Array>& router_logits, index_t top_k, const OptArray& mask, bool with_grad) {
  const char* op = "moe_load_balancing_loss";
  std::vector<TensorView> views;
  for (const Array& a : router_logits) views.push_back(view(op, "router_logits", a));
  const std::optional<TensorView> m = view(op, "mask", mask);
  MoeAuxLoss r;
  {
    nb::gil_scoped_release unlocked;
    r = moe_load_balancing_loss(views, top_k, m, with_grad);
  }
  return nb::make_tuple(r.loss, capsule(r.grad));
}

}  // namespace

void bind_moe(nb::module_& m) {
  m.def("moe", &forward, "x"_a, "router"_a, "w_gate_up"_a, "w_down"_a, nb::kw_only(), "top_k"_a = 2,
        "normalize_topk"_a = false, "activation"_a = "silu", "path"_a = "automatic", "threads"_a = 0,
        "Sparse mixture of SwiGLU experts. x (t, H); router (E, H); w_gate_up (E, 2I, H), gate rows first; w_down "
        "(E, H, I). Returns (out, router_logits, path).");
  m.def("moe_backward", &backward, "x"_a, "router"_a, "w_gate_up"_a, "w_down"_a, "grad_out"_a, nb::kw_only(),
        "grad_router_logits"_a = nb::none(), "top_k"_a = 2, "normalize_topk"_a = false, "activation"_a = "silu",
        "path"_a = "automatic", "threads"_a = 0,
        "Gradients of moe for grad_out (t, H) and an optional grad_router_logits (t, E); weights in x's dtype. Returns "
        "(grad_x, grad_router, grad_w_gate_up, grad_w_down, path).");
  m.def("moe_load_balancing_loss", &aux_loss, "router_logits"_a, "top_k"_a, nb::kw_only(), "mask"_a = nb::none(),
        "with_grad"_a = false,
        "The load-balancing loss over a list of (t, E) router logits (one per MoE layer), mask (t) optional. "
        "Returns (loss, grad (layers * t, E) or None).");
}

}  // namespace ssm::python
