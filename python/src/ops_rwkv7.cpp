// rwkv7 and rwkv7_backward (ssm/ops/rwkv7.hpp): RWKV-7's generalized delta rule; arrays in as views, results out as
// capsules.
#include <nanobind/stl/string.h>

#include "arrays.hpp"
#include "bindings.hpp"
#include "options.hpp"
#include "ssm/ops/rwkv7.hpp"

namespace ssm::python {

namespace {

using namespace nb::literals;

Rwkv7Inputs rwkv7_inputs(const char* op, const Array& q, const Array& k, const Array& v, const Array& log_w,
                         const Array& a, const Array& b, const OptArray& initial_state, const OptArray& cu_seqlens) {
  Rwkv7Inputs in;
  in.q = view(op, "q", q);
  in.k = view(op, "k", k);
  in.v = view(op, "v", v);
  in.log_w = view(op, "log_w", log_w);
  in.a = view(op, "a", a);
  in.b = view(op, "b", b);
  in.initial_state = view(op, "initial_state", initial_state);
  in.cu_seqlens = view(op, "cu_seqlens", cu_seqlens);
  return in;
}

Rwkv7Options rwkv7_options(const char* op, double scale, index_t chunk_size, const std::string& path, int threads) {
  Rwkv7Options opt;
  opt.scale = scale;
  opt.chunk_size = chunk_size;
  opt.path = choice<Rwkv7Path>(op, "path", path,
                               {{"automatic", Rwkv7Path::automatic},
                                {"reference", Rwkv7Path::reference},
                                {"chunked", Rwkv7Path::chunked},
                                {"recurrent", Rwkv7Path::recurrent}});
  opt.threads = threads;
  return opt;
}

nb::tuple forward(const Array& q, const Array& k, const Array& v, const Array& log_w, const Array& a, const Array& b,
                  const OptArray& initial_state, const OptArray& cu_seqlens, double scale, bool return_final_state,
                  index_t chunk_size, const std::string& path, int threads) {
  const char* op = "rwkv7";
  const Rwkv7Inputs in = rwkv7_inputs(op, q, k, v, log_w, a, b, initial_state, cu_seqlens);
  Rwkv7Options opt = rwkv7_options(op, scale, chunk_size, path, threads);
  opt.return_final_state = return_final_state;
  Rwkv7Outputs r;
  {
    nb::gil_scoped_release unlocked;
    r = rwkv7(in, opt);
  }
  return nb::make_tuple(capsule(r.out), capsule(r.final_state), r.path);
}

nb::tuple backward(const Array& q, const Array& k, const Array& v, const Array& log_w, const Array& a, const Array& b,
                   const Array& grad_out, const OptArray& initial_state, const OptArray& cu_seqlens,
                   const OptArray& grad_final_state, double scale, index_t chunk_size, const std::string& path,
                   int threads) {
  const char* op = "rwkv7_backward";
  const Rwkv7Inputs in = rwkv7_inputs(op, q, k, v, log_w, a, b, initial_state, cu_seqlens);
  const Rwkv7Options opt = rwkv7_options(op, scale, chunk_size, path, threads);
  const TensorView go = view(op, "grad_out", grad_out);
  const std::optional<TensorView> gs = view(op, "grad_final_state", grad_final_state);
  Rwkv7Grads r;
  {
    nb::gil_scoped_release unlocked;
    r = rwkv7_backward(in, go, gs, opt);
  }
  return nb::make_tuple(capsule(r.grad_q), capsule(r.grad_k), capsule(r.grad_v), capsule(r.grad_log_w),
                        capsule(r.grad_a), capsule(r.grad_b), capsule(r.grad_initial_state), r.path);
}

}  // namespace

void bind_rwkv7(nb::module_& m) {
  m.def("rwkv7", &forward, "q"_a, "k"_a, "v"_a, "log_w"_a, "a"_a, "b"_a, nb::kw_only(),
        "initial_state"_a = nb::none(), "cu_seqlens"_a = nb::none(), "scale"_a = 1.0, "return_final_state"_a = false,
        "chunk_size"_a = 32, "path"_a = "automatic", "threads"_a = 0,
        "RWKV-7's generalized delta rule. q, k, log_w, a, b (b, l, h, dk); v (b, l, h, dv). Returns (out, "
        "final_state, path).");
  m.def("rwkv7_backward", &backward, "q"_a, "k"_a, "v"_a, "log_w"_a, "a"_a, "b"_a, "grad_out"_a, nb::kw_only(),
        "initial_state"_a = nb::none(), "cu_seqlens"_a = nb::none(), "grad_final_state"_a = nb::none(),
        "scale"_a = 1.0, "chunk_size"_a = 32, "path"_a = "automatic", "threads"_a = 0,
        "Gradients of rwkv7 for grad_out (v's shape). Returns (grad_q, grad_k, grad_v, grad_log_w, grad_a, grad_b, "
        "grad_initial_state, path).");
}

}  // namespace ssm::python
