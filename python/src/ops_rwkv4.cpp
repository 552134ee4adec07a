// rwkv4 and rwkv4_backward (ssm/ops/rwkv4.hpp): RWKV-4's WKV recurrence; arrays in as views, results out as
// capsules.
#include <nanobind/stl/string.h>

#include "arrays.hpp"
#include "bindings.hpp"
#include "options.hpp"
#include "ssm/ops/rwkv4.hpp"

namespace ssm::python {

namespace {

using namespace nb::literals;

Rwkv4Inputs rwkv4_inputs(const char* op, const Array& k, const Array& v, const Array& time_decay,
                         const Array& time_first, const OptArray& initial_state, const OptArray& cu_seqlens) {
  Rwkv4Inputs in;
  in.k = view(op, "k", k);
  in.v = view(op, "v", v);
  in.time_decay = view(op, "time_decay", time_decay);
  in.time_first = view(op, "time_first", time_first);
  in.initial_state = view(op, "initial_state", initial_state);
  in.cu_seqlens = view(op, "cu_seqlens", cu_seqlens);
  return in;
}

Rwkv4Options rwkv4_options(const char* op, index_t checkpoint, const std::string& path, int threads) {
  Rwkv4Options opt;
  opt.checkpoint = checkpoint;
  opt.path = choice<Rwkv4Path>(op, "path", path,
                               {{"automatic", Rwkv4Path::automatic},
                                {"reference", Rwkv4Path::reference},
                                {"recurrent", Rwkv4Path::recurrent}});
  opt.threads = threads;
  return opt;
}

nb::tuple forward(const Array& k, const Array& v, const Array& time_decay, const Array& time_first,
                  const OptArray& initial_state, const OptArray& cu_seqlens, bool return_final_state,
                  index_t checkpoint, const std::string& path, int threads) {
  const char* op = "rwkv4";
  const Rwkv4Inputs in = rwkv4_inputs(op, k, v, time_decay, time_first, initial_state, cu_seqlens);
  Rwkv4Options opt = rwkv4_options(op, checkpoint, path, threads);
  opt.return_final_state = return_final_state;
  Rwkv4Outputs r;
  {
    nb::gil_scoped_release unlocked;
    r = rwkv4(in, opt);
  }
  return nb::make_tuple(capsule(r.out), capsule(r.final_state), r.path);
}

nb::tuple backward(const Array& k, const Array& v, const Array& time_decay, const Array& time_first,
                   const Array& grad_out, const OptArray& initial_state, const OptArray& cu_seqlens,
                   const OptArray& grad_final_state, index_t checkpoint, const std::string& path, int threads) {
  const char* op = "rwkv4_backward";
  const Rwkv4Inputs in = rwkv4_inputs(op, k, v, time_decay, time_first, initial_state, cu_seqlens);
  const Rwkv4Options opt = rwkv4_options(op, checkpoint, path, threads);
  const TensorView go = view(op, "grad_out", grad_out);
  const std::optional<TensorView> gs = view(op, "grad_final_state", grad_final_state);
  Rwkv4Grads r;
  {
    nb::gil_scoped_release unlocked;
    r = rwkv4_backward(in, go, gs, opt);
  }
  return nb::make_tuple(capsule(r.grad_k), capsule(r.grad_v), capsule(r.grad_time_decay),
                        capsule(r.grad_time_first), capsule(r.grad_initial_state), r.path);
}

}  // namespace

void bind_rwkv4(nb::module_& m) {
  m.def("rwkv4", &forward, "k"_a, "v"_a, "time_decay"_a, "time_first"_a, nb::kw_only(),
        "initial_state"_a = nb::none(), "cu_seqlens"_a = nb::none(), "return_final_state"_a = false,
        "checkpoint"_a = 64, "path"_a = "automatic", "threads"_a = 0,
        "RWKV-4's WKV recurrence. k, v (b, l, c); time_decay, time_first (c); initial_state (b, 3, c): num, den, max. "
        "Returns (out, final_state, path).");
  m.def("rwkv4_backward", &backward, "k"_a, "v"_a, "time_decay"_a, "time_first"_a, "grad_out"_a, nb::kw_only(),
        "initial_state"_a = nb::none(), "cu_seqlens"_a = nb::none(), "grad_final_state"_a = nb::none(),
        "checkpoint"_a = 64, "path"_a = "automatic", "threads"_a = 0,
        "Gradients of rwkv4 for grad_out (k's shape). Returns (grad_k, grad_v, grad_time_decay, grad_time_first, "
        "grad_initial_state, path).");
}

}  // namespace ssm::python
