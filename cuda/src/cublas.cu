// The per-thread, per-device cuBLAS handles of cuda/src/cublas.cuh.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <map>

#include "cublas.cuh"
#include "cuda_check.cuh"

namespace ssm::cuda::detail {

cublasHandle_t cublas_handle() {
  // Never destroyed: cublasDestroy at thread or process exit may run after the CUDA runtime has shut down (the
  // handles' memory goes with the process).
  thread_local std::map<int, cublasHandle_t> handles;
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  auto it = handles.find(device);
  if (it != handles.end()) return it->second;
  cublasHandle_t h = nullptr;
  check_cublas(cublasCreate(&h), "cublasCreate");
  check_cublas(cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH), "cublasSetMathMode");
  handles.emplace(device, h);
  return h;
}

}  // namespace ssm::cuda::detail
