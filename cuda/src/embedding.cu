// ssm::cuda::embedding_forward: the id check and the gather of kernels/launch/embedding.cuh on a stream.
#include <cuda_runtime.h>

#include "../kernels/launch/embedding.cuh"
#include "ssm/cuda/dense.hpp"
#include "stream_executor.cuh"

namespace ssm::cuda {

void embedding_forward(const EmbeddingParams& p, void* stream) {
  detail::StreamExecutor exec{static_cast<cudaStream_t>(stream)};
  kernels::embedding_launches(exec, p, "ssm::cuda::embedding_forward");
}

}  // namespace ssm::cuda
