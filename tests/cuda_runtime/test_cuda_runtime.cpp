// ssm::cuda linked: without a usable GPU every CUDA entry point is an ssm::Error carrying the runtime's
// message; with one, tensors round-trip between host and device (and through DLPack) unchanged.
#include <gtest/gtest.h>

#include <string>

#include <ssm/ssm.hpp>

namespace {

bool gpu_usable() { return ssm::backends().cuda_usable; }

TEST(CudaRuntime, BuildLinksTheBackend) {
  // Registered at program start by the library's registrar (cuda/src/backend.cu), kept by the link option.
  EXPECT_TRUE(ssm::cuda_linked());
  EXPECT_TRUE(ssm::backends().cuda_linked);
  EXPECT_EQ(ssm::backends().cuda_name, "cuda");
}

TEST(CudaRuntime, WithoutGpuErrorsCarryTheRuntimeMessage) {
  if (gpu_usable()) GTEST_SKIP() << "a GPU is usable here: " << ssm::backends().cuda_status;
  // The runtime's own words must reach the user, e.g. "CUDA driver version is insufficient" (code 35)
  // or "no CUDA-capable device is detected" (code 100).
  const std::string status = ssm::backends().cuda_status;
  EXPECT_NE(status.find("code"), std::string::npos) << status;
  try {
    (void)ssm::Tensor::empty({16}, ssm::DType::f32, ssm::Device::cuda(0));
    FAIL() << "expected ssm::Error";
  } catch (const ssm::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("CUDA runtime error in cudaGetDeviceCount"), std::string::npos) << msg;
  }
  float x = 0;
  ssm::TensorView g(&x, ssm::DType::f32, ssm::Device::cuda(0), ssm::Dims{1});
  try {
    (void)ssm::dispatch_device(ssm::Checker("my_op"), {{"g", g}});
    FAIL() << "expected ssm::Error";
  } catch (const ssm::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("my_op: the tensors are on cuda:0 but CUDA is unusable"), std::string::npos) << msg;
  }
}

TEST(CudaRuntime, HostDeviceRoundTrip) {
  if (!gpu_usable()) GTEST_SKIP() << "no usable GPU: " << ssm::backends().cuda_status;
  const std::vector<float> values = {1, 2, 3, 4, 5, 6};
  ssm::Tensor host = ssm::Tensor::from_vector({2, 3}, values);
  ssm::Tensor dev = host.to(ssm::Device::cuda(0));
  EXPECT_EQ(dev.device(), ssm::Device::cuda(0));
  EXPECT_EQ(dev.to_vector<float>(), values);
  ssm::Tensor z = ssm::Tensor::zeros({5}, ssm::DType::f64, ssm::Device::cuda(0));
  EXPECT_EQ(z.to_vector<double>(), std::vector<double>(5, 0.0));
  DLManagedTensor* m = ssm::to_dlpack(dev);
  EXPECT_EQ(m->dl_tensor.device.device_type, kDLCUDA);
  ssm::Tensor back = ssm::from_dlpack(m);
  EXPECT_EQ(back.data(), dev.data());
  EXPECT_EQ(back.to_vector<float>(), values);
  EXPECT_THROW((void)ssm::Tensor::empty({4}, ssm::DType::f32, ssm::Device::cuda(99)), ssm::Error);
}

}  // namespace
