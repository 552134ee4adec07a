// Consumer of the installed (or add_subdirectory'd) package: includes the library, runs a tensor
// round trip, and checks that linking ssm::cuda turns the CUDA backend on.
#include <cstdio>

#include <ssm/ssm.hpp>

int main() {
  ssm::Tensor x = ssm::Tensor::from_vector<float>({2, 2}, {1, 2, 3, 4});
  ssm::Tensor y = ssm::from_dlpack(ssm::to_dlpack(x));
  if (y.data() != x.data()) return 1;
#if defined(CONSUMER_EXPECTS_CUDA)
  if (!ssm::cuda_compiled()) return 2;
  const ssm::BackendInfo info = ssm::backends();  // calls into the compiled library
  std::printf("cuda: %s\n", info.cuda_status.c_str());
#else
  if (ssm::cuda_compiled()) return 3;
#endif
  std::printf("consumer ok (simd %s)\n", ssm::simd_level());
  return 0;
}
