// selective_scan and selective_scan_backward (ssm/ops/selective_scan.hpp): arrays in as views, results out as capsules.
#include <nanobind/stl/string.h>

#include "arrays.hpp"
#include "bindings.hpp"
#include "options.hpp"
#include "ssm/ops/selective_scan.hpp"

namespace ssm::python {

namespace {

using namespace nb::literals;

SelectiveScanInputs scan_inputs(const char* op, const Array& u, const Array& delta, const Array& A, const Array& B,
                                const Array& C, const OptArray& D, const OptArray& z, const OptArray& delta_bias,
                                bool delta_softplus, const OptArray& initial_state, const OptArray& cu_seqlens) {
  SelectiveScanInputs in;
  in.u = view(op, "u", u);
  in.delta = view(op, "delta", delta);
  in.A = view(op, "A", A);
  in.B = view(op, "B", B);
  in.C = view(op, "C", C);
  in.D = view(op, "D", D);
  in.z = view(op, "z", z);
  in.delta_bias = view(op, "delta_bias", delta_bias);
  in.delta_softplus = delta_softplus;
  in.initial_state = view(op, "initial_state", initial_state);
  in.cu_seqlens = view(op, "cu_seqlens", cu_seqlens);
  return in;
}

SelectiveScanOptions scan_options(const char* op, const std::string& path, int num_threads, index_t chunk_len) {
  SelectiveScanOptions opt;
  opt.path = choice<ScanPath>(op, "path", path,
                              {{"automatic", ScanPath::automatic},
                               {"reference", ScanPath::reference},
                               {"sequential", ScanPath::sequential},
                               {"chunked", ScanPath::chunked}});
  opt.num_threads = num_threads;
  opt.chunk_len = chunk_len;
  return opt;
}

nb::tuple forward(const Array& u, const Array& delta, const Array& A, const Array& B, const Array& C, const OptArray& D,
                  const OptArray& z, const OptArray& delta_bias, bool delta_softplus, const OptArray& initial_state,
                  const OptArray& cu_seqlens, bool return_last_state, bool save_chunk_states, const std::string& path,
                  int num_threads, index_t chunk_len) {
  const char* op = "selective_scan";
  const SelectiveScanInputs in =
      scan_inputs(op, u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, cu_seqlens);
  SelectiveScanOptions opt = scan_options(op, path, num_threads, chunk_len);
  opt.return_last_state = return_last_state;
  opt.save_chunk_states = save_chunk_states;
  SelectiveScanOutputs r;
  {
    nb::gil_scoped_release unlocked;
    r = selective_scan(in, opt);
  }
  return nb::make_tuple(capsule(r.out), capsule(r.last_state), capsule(r.chunk_states), r.path);
}

nb::tuple backward(const Array& u, const Array& delta, const Array& A, const Array& B, const Array& C,
                   const Array& grad_out, const OptArray& D, const OptArray& z, const OptArray& delta_bias,
                   bool delta_softplus, const OptArray& initial_state, const OptArray& cu_seqlens,
                   const OptArray& grad_last_state, const OptArray& chunk_states, const std::string& path,
                   int num_threads, index_t chunk_len) {
  const char* op = "selective_scan_backward";
  const SelectiveScanInputs in =
      scan_inputs(op, u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, cu_seqlens);
  SelectiveScanOptions opt = scan_options(op, path, num_threads, chunk_len);
  if (chunk_states) opt.chunk_states = view(op, "chunk_states", *chunk_states);
  const TensorView g = view(op, "grad_out", grad_out);
  const std::optional<TensorView> gl = view(op, "grad_last_state", grad_last_state);
  SelectiveScanGrads r;
  {
    nb::gil_scoped_release unlocked;
    r = selective_scan_backward(in, g, gl, opt);
  }
  return nb::make_tuple(capsule(r.grad_u), capsule(r.grad_delta), capsule(r.grad_A), capsule(r.grad_B),
                        capsule(r.grad_C), capsule(r.grad_D), capsule(r.grad_z), capsule(r.grad_delta_bias),
                        capsule(r.grad_initial_state), r.path);
}

}  // namespace

void bind_selective_scan(nb::module_& m) {
  m.def("selective_scan", &forward, "u"_a, "delta"_a, "A"_a, "B"_a, "C"_a, nb::kw_only(), "D"_a = nb::none(),
        "z"_a = nb::none(), "delta_bias"_a = nb::none(), "delta_softplus"_a = false, "initial_state"_a = nb::none(),
        "cu_seqlens"_a = nb::none(), "return_last_state"_a = false, "save_chunk_states"_a = false,
        "path"_a = "automatic", "num_threads"_a = 0, "chunk_len"_a = 0,
        "Selective scan (Mamba's S6). u, delta (b, d, l); A (d, n); B, C (b, g, n, l), (b, n, l) or (d, n). "
        "Returns (out, last_state, chunk_states, path): capsules (None when not asked for) and the path that ran.");
  m.def("selective_scan_backward", &backward, "u"_a, "delta"_a, "A"_a, "B"_a, "C"_a, "grad_out"_a, nb::kw_only(),
        "D"_a = nb::none(), "z"_a = nb::none(), "delta_bias"_a = nb::none(), "delta_softplus"_a = false,
        "initial_state"_a = nb::none(), "cu_seqlens"_a = nb::none(), "grad_last_state"_a = nb::none(),
        "chunk_states"_a = nb::none(), "path"_a = "automatic", "num_threads"_a = 0, "chunk_len"_a = 0,
        "Gradients of selective_scan for grad_out (b, d, l). Returns (grad_u, grad_delta, grad_A, grad_B, grad_C, "
        "grad_D, grad_z, grad_delta_bias, grad_initial_state, path); a gradient is None when its input was absent.");
}

}  // namespace ssm::python
