// hyena and hyena_backward (ssm/ops/hyena.hpp): Hyena's gated long convolutions; arrays in as views, results out as
// capsules.
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "arrays.hpp"
#include "bindings.hpp"
#include "options.hpp"
#include "ssm/ops/hyena.hpp"

namespace ssm::python {

namespace {

using namespace nb::literals;

HyenaInputs hyena_inputs(const char* op, const Array& v, const std::vector<Array>& x, const Array& h, const Array& bias) {
  HyenaInputs in;
  in.v = view(op, "v", v);
  for (const Array& a : x) in.x.push_back(view(op, "x", a));
  in.h = view(op, "h", h);
  in.bias = view(op, "bias", bias);
  return in;
}

HyenaOptions hyena_options(const char* op, const std::string& path, int threads) {
  HyenaOptions opt;
  opt.path = choice<HyenaPath>(op, "path", path,
                               {{"automatic", HyenaPath::automatic}, {"reference", HyenaPath::reference},
                                {"fft", HyenaPath::fft}});
  opt.threads = threads;
  return opt;
}

nb::tuple forward(const Array& v, const std::vector<Array>& x, const Array& h, const Array& bias,
                  const std::string& path, int threads) {
  const char* op = "hyena";
  const HyenaInputs in = hyena_inputs(op, v, x, h, bias);
  const HyenaOptions opt = hyena_options(op, path, threads);
  const Tensor out = Tensor::empty(in.v.shape(), in.v.dtype(), in.v.device());  // (b, l, d) on v's device
  std::string ran;
  {
    nb::gil_scoped_release unlocked;
    ran = hyena_into(in, out, opt);
  }
  return nb::make_tuple(capsule(out), ran);  // "cpu-fft", "reference" or "cuda"
}

nb::tuple backward(const Array& v, const std::vector<Array>& x, const Array& h, const Array& bias,
                   const Array& grad_out, const std::string& path, int threads) {
  const char* op = "hyena_backward";
  const HyenaInputs in = hyena_inputs(op, v, x, h, bias);
  const HyenaOptions opt = hyena_options(op, path, threads);
  const TensorView go = view(op, "grad_out", grad_out);
  HyenaGrads r;
  {
    nb::gil_scoped_release unlocked;
    r = hyena_backward(in, go, opt);
  }
  return nb::make_tuple(capsule(r.grad_v), capsule(r.grad_x), capsule(r.grad_h), capsule(r.grad_bias), r.path);
}

}  // namespace

void bind_hyena(nb::module_& m) {
  m.def("hyena", &forward, "v"_a, "x"_a, "h"_a, "bias"_a, nb::kw_only(), "path"_a = "automatic", "threads"_a = 0,
        "Hyena's gated long convolutions of order N = len(x). v and each gate (b, l, d); h (N - 1, d, L >= l); bias "
        "(N - 1, d). Returns (out, path).");
  m.def("hyena_backward", &backward, "v"_a, "x"_a, "h"_a, "bias"_a, "grad_out"_a, nb::kw_only(), "path"_a = "automatic",
        "threads"_a = 0, "Gradients of hyena. Returns (grad_v, grad_x (N, b, l, d), grad_h, grad_bias, path).");
}

}  // namespace ssm::python
