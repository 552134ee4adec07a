// What the library sees of an array, and a probe of exported memory: hooks for the tests of the zero-copy paths
// (the data address an op reads; whether a tensor handed out through DLPack is alive, no copy and no leak).
#include <nanobind/stl/string.h>

#include <memory>

#include "arrays.hpp"
#include "bindings.hpp"

namespace ssm::python {

namespace {
std::weak_ptr<void> probe;  // the storage of the last tensor _export_probe handed out
}

void bind_inspect(nb::module_& m) {
  using namespace nb::literals;
  m.def(
      "view_info",
      [](const Array& a) {
        const TensorView v = view("view_info", "a", a);
        nb::list shape, strides;
        for (index_t s : v.shape()) shape.append(s);
        for (index_t s : v.strides()) strides.append(s);
        return nb::make_tuple(reinterpret_cast<std::uintptr_t>(v.data()), nb::tuple(shape), nb::tuple(strides),
                              std::string(name(v.dtype())), v.device().str());
      },
      "a"_a,
      "What an op reads of array a, without copying it: (data address, shape, strides in elements, dtype, device).");
  m.def(
      "_export_probe",
      [](index_t n) {
        Tensor t = Tensor::zeros({n}, DType::f32);
        probe = t.storage();
        return nb::make_tuple(capsule(t), reinterpret_cast<std::uintptr_t>(t.data()));
      },
      "n"_a, "Test hook: a new f32 tensor of n zeros as (capsule, data address); _probe_alive() tells if it lives.");
  m.def("_probe_alive", [] { return !probe.expired(); }, "Test hook: whether the last _export_probe tensor lives.");
}

}  // namespace ssm::python
