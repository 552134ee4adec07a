// ssm::cuda runtime helpers: device queries, memory and copies, each turning a CUDA error into an
// ssm::Error that carries the runtime's own message (error 35 on a machine without a usable driver).
#include <cuda_runtime.h>

#include <string>

#include "ssm/core/error.hpp"
#include "ssm/cuda/runtime.hpp"

namespace ssm::cuda {
namespace {
void throw_on_error(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    // Clear the sticky "last error" so later calls report their own status.
    (void)cudaGetLastError();
    fail("CUDA runtime error in ", what, ": ", cudaGetErrorString(err), " (", cudaGetErrorName(err), ", code ",
         static_cast<int>(err), ")");
  }
}
}  // namespace

int device_count() {
  int n = 0;
  throw_on_error(cudaGetDeviceCount(&n), "cudaGetDeviceCount");
  return n;
}

void ensure_device(int index) {
  const int n = device_count();
  SSM_CHECK(index >= 0 && index < n, "CUDA device ", index, " does not exist (", n, " device(s) present)");
}

std::string runtime_status() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return std::string("unusable: ") + cudaGetErrorString(err) + " (code " + std::to_string(static_cast<int>(err)) + ")";
  }
  std::string s = std::to_string(n) + " device(s)";
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) == cudaSuccess)
      s += std::string(i ? ", " : ": ") + p.name + " (sm_" + std::to_string(p.major) + std::to_string(p.minor) + ")";
  }
  return s;
}

void* device_malloc(std::size_t bytes, int index) {
  ensure_device(index);
  throw_on_error(cudaSetDevice(index), "cudaSetDevice");
  void* p = nullptr;
  if (bytes == 0) return nullptr;
  throw_on_error(cudaMalloc(&p, bytes), "cudaMalloc");
  return p;
}

void device_free(void* p, int index) noexcept {
  if (!p) return;
  int current = 0;
  if (cudaGetDevice(&current) == cudaSuccess && current != index) (void)cudaSetDevice(index);
  (void)cudaFree(p);
}

void memcpy(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) {
  if (bytes == 0) return;
  cudaMemcpyKind kind = cudaMemcpyDefault;  // unified addressing works out the direction
  if (dst_device.is_cuda()) ensure_device(dst_device.index);
  if (src_device.is_cuda()) ensure_device(src_device.index);
  throw_on_error(cudaMemcpy(dst, src, bytes, kind), "cudaMemcpy");
}

void memcpy_2d(void* dst, std::size_t dst_pitch, Device dst_device, const void* src, std::size_t src_pitch,
               Device src_device, std::size_t width, std::size_t height) {
  if (width == 0 || height == 0) return;
  if (dst_device.is_cuda()) ensure_device(dst_device.index);
  if (src_device.is_cuda()) ensure_device(src_device.index);
  throw_on_error(cudaMemcpy2D(dst, dst_pitch, src, src_pitch, width, height, cudaMemcpyDefault), "cudaMemcpy2D");
}

void memset_zero(void* p, Device device, std::size_t bytes) {
  if (bytes == 0) return;
  ensure_device(device.index);
  throw_on_error(cudaSetDevice(device.index), "cudaSetDevice");
  throw_on_error(cudaMemset(p, 0, bytes), "cudaMemset");
}

}  // namespace ssm::cuda
