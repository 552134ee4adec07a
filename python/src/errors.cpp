// ssm::Error -> ssm.Error, a subclass of ValueError whose message is the library's (it names the op and the argument).
#include "bindings.hpp"
#include "ssm/core/error.hpp"

namespace ssm::python {

void bind_errors(nanobind::module_& m) {
  nanobind::exception<Error> error(m, "Error", PyExc_ValueError);
  error.attr("__doc__") =
      "Bad input to the ssm library (shape, dtype, device, layout, option, file): the message names the operation, "
      "the argument, what was expected and what came.";
}

}  // namespace ssm::python
