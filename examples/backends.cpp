// Prints what this build of ssm can run on, and shows a zero-copy DLPack round trip.
#include <cstdio>

#include <ssm/ssm.hpp>

int main() {
  const ssm::BackendInfo info = ssm::backends();
  std::printf("ssm backends\n  cpu: yes (SIMD: %s)\n  cuda: %s\n", info.simd,
              info.cuda_linked ? info.cuda_status.c_str() : "not linked (link ssm::cuda)");

  ssm::Tensor x = ssm::Tensor::from_vector<float>({2, 3}, {1, 2, 3, 4, 5, 6});  // (2, 3)
  DLManagedTensor* exported = ssm::to_dlpack(x);  // what a PyTorch or CuPy consumer would receive
  ssm::Tensor back = ssm::from_dlpack(exported);  // zero-copy: same memory, one deleter call later
  std::printf("DLPack round trip: shape %s, same memory: %s\n", back.shape().str().c_str(),
              back.data() == x.data() ? "yes" : "no");
  return 0;
}
