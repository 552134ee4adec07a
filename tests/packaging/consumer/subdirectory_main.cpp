// The add_subdirectory consumer: the source tree added to an outside project, linked through ssm::ssm. It checks
// that the target carries the include paths and dependencies (Eigen, DLPack, nlohmann_json, threads) and that the
// CUDA backend stays off without ssm::cuda. The strict-flags compile of everything a user instantiates is main.cpp's,
// under g++ and clang++ against the installed prefix; this file stays small so that the package tests do not compile
// it all a third time.
#include <cstdio>
#include <vector>

#include <ssm/core.hpp>

int main() {
  const ssm::Tensor x = ssm::Tensor::from_vector<float>({2, 3}, {1, 2, 3, 4, 5, 6});
  const ssm::Tensor y = ssm::from_dlpack(ssm::to_dlpack(x));  // (2, 3), sharing x's storage
  if (y.data() != x.data() || y.to_vector<float>() != std::vector<float>{1, 2, 3, 4, 5, 6}) return 1;
  if (ssm::cuda_linked()) return 3;  // only ssm::cuda turns it on
  std::printf("add_subdirectory consumer ok (simd %s, %s)\n", ssm::simd_level(), ssm::backends().cuda_status.c_str());
  return 0;
}
