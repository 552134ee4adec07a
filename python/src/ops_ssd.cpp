// ssd and ssd_backward (ssm/ops/ssd.hpp, Mamba-2's scan in chunks): arrays in as views, results out as capsules.
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>

#include "arrays.hpp"
#include "bindings.hpp"
#include "options.hpp"
#include "ssm/ops/ssd.hpp"

namespace ssm::python {

namespace {

using namespace nb::literals;
using Limit = std::optional<std::pair<double, double>>;

SsdInputs ssd_inputs(const char* op, const Array& x, const Array& dt, const Array& A, const Array& B, const Array& C,
                     const OptArray& D, const OptArray& z, const OptArray& dt_bias, bool dt_softplus,
                     const Limit& dt_limit, const OptArray& initial_state, const OptArray& cu_seqlens) {
  SsdInputs in;
  in.x = view(op, "x", x);
  in.dt = view(op, "dt", dt);
  in.A = view(op, "A", A);
  in.B = view(op, "B", B);
  in.C = view(op, "C", C);
  in.D = view(op, "D", D);
  in.z = view(op, "z", z);
  in.dt_bias = view(op, "dt_bias", dt_bias);
  in.dt_softplus = dt_softplus;
  in.dt_limit = dt_limit;
  in.initial_state = view(op, "initial_state", initial_state);
  in.cu_seqlens = view(op, "cu_seqlens", cu_seqlens);
  return in;
}

SsdOptions ssd_options(const char* op, index_t chunk_size, index_t head_dim, const std::string& path, int threads) {
  SsdOptions opt;
  opt.chunk_size = chunk_size;
  opt.head_dim = head_dim;
  opt.path = choice<SsdPath>(op, "path", path,
                             {{"automatic", SsdPath::automatic},
                              {"reference", SsdPath::reference},
                              {"chunked", SsdPath::chunked},
                              {"recurrent", SsdPath::recurrent}});
  opt.threads = threads;
  return opt;
}

nb::tuple forward(const Array& x, const Array& dt, const Array& A, const Array& B, const Array& C, const OptArray& D,
                  const OptArray& z, const OptArray& dt_bias, bool dt_softplus, const Limit& dt_limit,
                  const OptArray& initial_state, const OptArray& cu_seqlens, bool return_final_state,
                  index_t chunk_size, index_t head_dim, const std::string& path, int threads) {
  const char* op = "ssd";
  const SsdInputs in = ssd_inputs(op, x, dt, A, B, C, D, z, dt_bias, dt_softplus, dt_limit, initial_state, cu_seqlens);
  SsdOptions opt = ssd_options(op, chunk_size, head_dim, path, threads);
  opt.return_final_state = return_final_state;
  SsdOutputs r;
  {
    nb::gil_scoped_release unlocked;
    r = ssd(in, opt);
  }
  return nb::make_tuple(capsule(r.out), capsule(r.final_state), r.path);
}

nb::tuple backward(const Array& x, const Array& dt, const Array& A, const Array& B, const Array& C,
                   const Array& grad_out, const OptArray& D, const OptArray& z, const OptArray& dt_bias,
                   bool dt_softplus, const Limit& dt_limit, const OptArray& initial_state, const OptArray& cu_seqlens,
                   const OptArray& grad_final_state, index_t chunk_size, index_t head_dim, const std::string& path,
                   int threads) {
  const char* op = "ssd_backward";
  const SsdInputs in = ssd_inputs(op, x, dt, A, B, C, D, z, dt_bias, dt_softplus, dt_limit, initial_state, cu_seqlens);
  const SsdOptions opt = ssd_options(op, chunk_size, head_dim, path, threads);
  const TensorView g = view(op, "grad_out", grad_out);
  const std::optional<TensorView> gf = view(op, "grad_final_state", grad_final_state);
  SsdGrads r;
  {
    nb::gil_scoped_release unlocked;
    r = ssd_backward(in, g, gf, opt);
  }
  return nb::make_tuple(capsule(r.grad_x), capsule(r.grad_dt), capsule(r.grad_A), capsule(r.grad_B),
                        capsule(r.grad_C), capsule(r.grad_D), capsule(r.grad_z), capsule(r.grad_dt_bias),
                        capsule(r.grad_initial_state), r.path);
}

}  // namespace

void bind_ssd(nb::module_& m) {
  m.def("ssd", &forward, "x"_a, "dt"_a, "A"_a, "B"_a, "C"_a, nb::kw_only(), "D"_a = nb::none(), "z"_a = nb::none(),
        "dt_bias"_a = nb::none(), "dt_softplus"_a = false, "dt_limit"_a = nb::none(), "initial_state"_a = nb::none(),
        "cu_seqlens"_a = nb::none(), "return_final_state"_a = false, "chunk_size"_a = 256, "head_dim"_a = 0,
        "path"_a = "automatic", "threads"_a = 0,
        "SSD, Mamba-2's scan. x (b, l, h, p); dt (b, l, h); A (h); B, C (b, l, g, n). Returns (out, final_state, "
        "path).");
  m.def("ssd_backward", &backward, "x"_a, "dt"_a, "A"_a, "B"_a, "C"_a, "grad_out"_a, nb::kw_only(),
        "D"_a = nb::none(), "z"_a = nb::none(), "dt_bias"_a = nb::none(), "dt_softplus"_a = false,
        "dt_limit"_a = nb::none(), "initial_state"_a = nb::none(), "cu_seqlens"_a = nb::none(),
        "grad_final_state"_a = nb::none(), "chunk_size"_a = 256, "head_dim"_a = 0, "path"_a = "automatic",
        "threads"_a = 0,
        "Gradients of ssd for grad_out (x's shape). Returns (grad_x, grad_dt, grad_A, grad_B, grad_C, grad_D, "
        "grad_z, grad_dt_bias, grad_initial_state, path).");
}

}  // namespace ssm::python
