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
                  bool save_for_backward, index_t chunk_size, index_t head_dim, const std::string& path, int threads) {
  const char* op = "ssd";
  const SsdInputs in = ssd_inputs(op, x, dt, A, B, C, D, z, dt_bias, dt_softplus, dt_limit, initial_state, cu_seqlens);
  SsdOptions opt = ssd_options(op, chunk_size, head_dim, path, threads);
  opt.return_final_state = return_final_state;
  opt.save_for_backward = save_for_backward;
  SsdOutputs r;
  {
    nb::gil_scoped_release unlocked;
    r = ssd(in, opt);
  }
  nb::object saved = nb::none();
  if (save_for_backward)
    saved = nb::make_tuple(capsule(r.saved.chunk_states), capsule(r.saved.y), r.saved.chunk_size);
  return nb::make_tuple(capsule(r.out), capsule(r.final_state), r.path, saved);
}

/// A forward's SsdSaved from its arrays (alive for the call: Python holds them), or none without chunk states.
std::optional<SsdSaved> saved_of(const char* op, const OptArray& states, const OptArray& y, index_t chunk_size) {
  if (!states) return std::nullopt;
  auto tensor = [](const TensorView& v) { return Tensor::adopt(v, std::shared_ptr<void>(v.data(), [](void*) {})); };
  SsdSaved s;
  s.chunk_states = tensor(*view(op, "saved_states", states));
  if (y) s.y = tensor(*view(op, "saved_y", y));
  s.chunk_size = chunk_size;
  return s;
}

nb::tuple backward(const Array& x, const Array& dt, const Array& A, const Array& B, const Array& C,
                   const Array& grad_out, const OptArray& D, const OptArray& z, const OptArray& dt_bias,
                   bool dt_softplus, const Limit& dt_limit, const OptArray& initial_state, const OptArray& cu_seqlens,
                   const OptArray& grad_final_state, const OptArray& saved_states, const OptArray& saved_y,
                   index_t saved_chunk_size, index_t chunk_size, index_t head_dim, const std::string& path,
                   int threads) {
  const char* op = "ssd_backward";
  const SsdInputs in = ssd_inputs(op, x, dt, A, B, C, D, z, dt_bias, dt_softplus, dt_limit, initial_state, cu_seqlens);
  const SsdOptions opt = ssd_options(op, chunk_size, head_dim, path, threads);
  const TensorView g = view(op, "grad_out", grad_out);
  const std::optional<TensorView> gf = view(op, "grad_final_state", grad_final_state);
  const std::optional<SsdSaved> saved = saved_of(op, saved_states, saved_y, saved_chunk_size);
  SsdGrads r;
  {
    nb::gil_scoped_release unlocked;
    r = ssd_backward(in, g, gf, opt, saved ? &*saved : nullptr);
  }
  return nb::make_tuple(capsule(r.grad_x), capsule(r.grad_dt), capsule(r.grad_A), capsule(r.grad_B),
                        capsule(r.grad_C), capsule(r.grad_D), capsule(r.grad_z), capsule(r.grad_dt_bias),
                        capsule(r.grad_initial_state), r.path);
}

}  // namespace

void bind_ssd(nb::module_& m) {
  m.def("ssd", &forward, "x"_a, "dt"_a, "A"_a, "B"_a, "C"_a, nb::kw_only(), "D"_a = nb::none(), "z"_a = nb::none(),
        "dt_bias"_a = nb::none(), "dt_softplus"_a = false, "dt_limit"_a = nb::none(), "initial_state"_a = nb::none(),
        "cu_seqlens"_a = nb::none(), "return_final_state"_a = false, "save_for_backward"_a = false,
        "chunk_size"_a = 256, "head_dim"_a = 0, "path"_a = "automatic", "threads"_a = 0,
        "SSD, Mamba-2's scan. x (b, l, h, p); dt (b, l, h); A (h); B, C (b, l, g, n). Returns (out, final_state, "
        "path, saved): saved, with save_for_backward (CPU chunked path, or CUDA), is (chunk_states, y, chunk_size) for "
        "ssd_backward's saved_states, saved_y and saved_chunk_size, else None.");
  m.def("ssd_backward", &backward, "x"_a, "dt"_a, "A"_a, "B"_a, "C"_a, "grad_out"_a, nb::kw_only(),
        "D"_a = nb::none(), "z"_a = nb::none(), "dt_bias"_a = nb::none(), "dt_softplus"_a = false,
        "dt_limit"_a = nb::none(), "initial_state"_a = nb::none(), "cu_seqlens"_a = nb::none(),
        "grad_final_state"_a = nb::none(), "saved_states"_a = nb::none(), "saved_y"_a = nb::none(),
        "saved_chunk_size"_a = 0, "chunk_size"_a = 256, "head_dim"_a = 0, "path"_a = "automatic", "threads"_a = 0,
        "Gradients of ssd for grad_out (x's shape); with saved_states (and saved_y with z) from ssd's saved, the "
        "chunked path reads them instead of recomputing. Returns (grad_x, grad_dt, grad_A, grad_B, grad_C, "
        "grad_D, grad_z, grad_dt_bias, grad_initial_state, path).");
}

}  // namespace ssm::python
