// String options of the Python API ("automatic", "reference", ...) mapped to the library's enums; an unknown
// string is an ssm::Error naming the argument and the accepted values.
#pragma once

#include <initializer_list>
#include <sstream>
#include <string>
#include <utility>

#include "ssm/core/error.hpp"
#include "ssm/core/params/linear_attention.hpp"

namespace ssm::python {

template <class E>
E choice(const char* op, const char* name, const std::string& value,
         std::initializer_list<std::pair<const char*, E>> accepted) {
  for (const auto& [key, e] : accepted)
    if (value == key) return e;
  std::ostringstream os;
  os << op << ": argument '" << name << "': expected one of";
  for (const auto& a : accepted) os << " '" << a.first << "'";
  os << ", got '" << value << "'";
  throw Error(os.str());
}

/// The linear-attention feature map φ by name, for the op and the layer alike.
inline FeatureMap feature_map_choice(const char* op, const std::string& value) {
  return choice<FeatureMap>(op, "feature_map", value,
                            {{"identity", FeatureMap::identity}, {"elu_plus_one", FeatureMap::elu_plus_one}});
}

}  // namespace ssm::python
