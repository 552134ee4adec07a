// Arrays across the boundary, with no copies. In: any object that speaks DLPack or the buffer protocol (NumPy,
// PyTorch, JAX, CuPy) arrives as a nanobind ndarray of any dtype, shape, strides and device, and becomes an
// ssm::TensorView of the same memory (the library's own DLPack reader, view_of); the op's Checker then judges it.
// Out: a Tensor the library allocated leaves as a DLPack capsule that owns it (the library's to_dlpack).
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>

#include <optional>
#include <string>

#include "ssm/core.hpp"

namespace ssm::python {

namespace nb = nanobind;

/// An input array: read-only access, no constraint (dtype, shape, layout and device are checked by the op).
using Array = nb::ndarray<nb::ro>;
using OptArray = std::optional<Array>;

/// The view of argument `name` of op `op`; an array the library cannot describe (an unsupported dtype or device)
/// is an ssm::Error naming both.
TensorView view(const char* op, const char* name, const Array& a);
std::optional<TensorView> view(const char* op, const char* name, const OptArray& a);

/// A DLPack capsule ("dltensor") owning `t`: the storage lives until the consumer calls the deleter, or until the
/// capsule is collected unconsumed. None when `t` is empty (an output that was not asked for).
nb::object capsule(const Tensor& t);

/// A writable NumPy array over the memory of an unconsumed DLPack capsule, which it consumes (renamed
/// "used_dltensor"; the producer's deleter runs when the array goes away). No copy. numpy.from_dlpack would do the
/// same but, before NumPy 2, marks every array it imports read-only.
nb::object to_numpy(nb::handle capsule);

}  // namespace ssm::python
