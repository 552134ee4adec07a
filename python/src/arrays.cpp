// Arrays in (nanobind ndarray -> ssm::TensorView) and out (ssm::Tensor -> DLPack capsule); see arrays.hpp.
#include "arrays.hpp"

#include <dlpack/dlpack.h>

#include <string>
#include <vector>

#include "bindings.hpp"

namespace ssm::python {

TensorView view(const char* op, const char* name, const Array& a) {
  // nanobind holds the producer's DLTensor; this is the same description, read by the library's own DLPack reader.
  DLTensor t{};
  t.data = const_cast<void*>(a.data());  // data() includes the producer's byte_offset
  t.byte_offset = 0;
  t.device.device_type = static_cast<DLDeviceType>(a.device_type());
  t.device.device_id = a.device_id();
  t.ndim = static_cast<std::int32_t>(a.ndim());
  t.dtype.code = a.dtype().code;
  t.dtype.bits = a.dtype().bits;
  t.dtype.lanes = a.dtype().lanes;
  t.shape = const_cast<std::int64_t*>(a.shape_ptr());
  t.strides = const_cast<std::int64_t*>(a.stride_ptr());
  try {
    return view_of(t);
  } catch (const Error& e) {
    throw Error(std::string(op) + ": argument '" + name + "': " + e.what());
  }
}

std::optional<TensorView> view(const char* op, const char* name, const OptArray& a) {
  if (!a) return std::nullopt;
  return view(op, name, *a);
}

namespace {
constexpr const char* kName = "dltensor";

// Runs when the capsule is collected: a consumer that took the tensor renamed the capsule ("used_dltensor") and
// owns it now; otherwise nobody did, and the tensor is released here.
void release_unconsumed(PyObject* cap) noexcept {
  if (PyCapsule_IsValid(cap, kName)) {
    auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap, kName));
    if (m != nullptr && m->deleter != nullptr) m->deleter(m);
  }
}
}  // namespace

nb::object capsule(const Tensor& t) {
  if (!t.defined()) return nb::none();
  DLManagedTensor* m = to_dlpack(t);
  PyObject* c = PyCapsule_New(m, kName, release_unconsumed);
  if (c == nullptr) {
    m->deleter(m);
    throw nb::python_error();
  }
  return nb::steal(c);
}

nb::object to_numpy(nb::handle cap) {
  if (!PyCapsule_IsValid(cap.ptr(), kName))
    throw Error("to_numpy: argument 'capsule': expected an unconsumed DLPack capsule named 'dltensor'");
  auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap.ptr(), kName));
  const DLTensor& t = m->dl_tensor;
  if (t.device.device_type != kDLCPU)
    throw Error("to_numpy: argument 'capsule': the tensor is not in host memory (DLPack device type " +
                std::to_string(static_cast<int>(t.device.device_type)) + ")");
  std::vector<std::size_t> shape(static_cast<std::size_t>(t.ndim));
  for (std::size_t i = 0; i < shape.size(); ++i) shape[i] = static_cast<std::size_t>(t.shape[i]);
  // The owner runs the producer's deleter when NumPy releases the array.
  nb::capsule owner(m, [](void* p) noexcept {
    auto* mt = static_cast<DLManagedTensor*>(p);
    if (mt->deleter != nullptr) mt->deleter(mt);
  });
  PyCapsule_SetName(cap.ptr(), "used_dltensor");  // consumed: its own destructor leaves the tensor alone now
  const nb::dlpack::dtype dtype{t.dtype.code, t.dtype.bits, t.dtype.lanes};
  nb::ndarray<nb::numpy> a(static_cast<char*>(t.data) + t.byte_offset, shape.size(), shape.data(), owner, t.strides,
                           dtype, nb::device::cpu::value, 0);
  return a.cast();
}

void bind_arrays(nb::module_& m) {
  m.def("to_numpy", &to_numpy, nb::arg("capsule"),
        "A writable numpy.ndarray over the memory of a DLPack capsule returned by this module, without a copy; "
        "the capsule is consumed.");
}

}  // namespace ssm::python
