// backends(): which backends this build of the library has (the CPU's SIMD level, CUDA linked and usable).
#include <nanobind/stl/string.h>

#include "bindings.hpp"
#include "ssm/core/backend.hpp"

namespace ssm::python {

void bind_backends(nanobind::module_& m) {
  namespace nb = nanobind;
  m.def(
      "backends",
      [] {
        const BackendInfo info = ssm::backends();
        nb::dict d;
        d["cpu"] = info.cpu;
        d["simd"] = std::string(info.simd);
        d["cuda_linked"] = info.cuda_linked;
        d["cuda_name"] = info.cuda_name;
        d["cuda_usable"] = info.cuda_usable;
        d["cuda_status"] = info.cuda_status;
        return d;
      },
      "The backends of this build: {'cpu', 'simd' ('avx512', 'avx2' or 'generic', fixed when the extension was "
      "compiled), 'cuda_linked', 'cuda_name', 'cuda_usable', 'cuda_status'}.");
}

}  // namespace ssm::python
