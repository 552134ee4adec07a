// The CUDA consumer: linking ssm::cuda registers the CUDA backend (a GPU need not be present). The strict-flags
// compile of the headers a user instantiates is main.cpp's (the CPU consumer); this file stays small so that the
// package test does not compile all of them twice.
#include <cstdio>

#include <ssm/core.hpp>

int main() {
  if (!ssm::cuda_linked()) return 2;
  const ssm::BackendInfo info = ssm::backends();  // calls into the compiled library
  std::printf("cuda consumer ok: %s\n", info.cuda_status.c_str());
  return 0;
}
