// Element access for the references of the dense ops: a real element of any floating dtype read as double, and
// one written rounded to its dtype. Slow on purpose (a switch per element): the references are oracles.
#pragma once

#include <cstdint>
#include <type_traits>

#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"

namespace ssm::reference {

/// Element i of the buffer p of dtype t (f32, f64, f16, bf16), as double.
inline double load_real(const void* p, DType t, std::int64_t i) {
  return visit_floating(t, "reference::load_real", [&](auto tag) -> double {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, double>) return static_cast<const double*>(p)[i];
    else return static_cast<double>(to_float(static_cast<const T*>(p)[i]));
  });
}

/// Element i of the buffer p of dtype t (f32, f64, f16, bf16) = v, rounded to t.
inline void store_real(void* p, DType t, std::int64_t i, double v) {
  visit_floating(t, "reference::store_real", [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, double>) static_cast<double*>(p)[i] = v;
    else static_cast<T*>(p)[i] = from_float<T>(static_cast<float>(v));
  });
}

}  // namespace ssm::reference
