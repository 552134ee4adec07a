// Backend query and dispatch: SIMD level, CUDA availability, mixed devices and missing backends.
#include <gtest/gtest.h>

#include <string>

#include "ssm/core/backend.hpp"

namespace {

TEST(Backend, QueryReportsSimdAndCuda) {
  const ssm::BackendInfo info = ssm::backends();
  EXPECT_TRUE(info.cpu);
  EXPECT_STRNE(info.simd, "");
#if defined(__AVX512F__)
  EXPECT_STREQ(info.simd, "avx512");
#elif defined(__AVX2__)
  EXPECT_EQ(std::string(info.simd).rfind("avx2", 0), 0u);
#endif
  EXPECT_EQ(info.cuda_compiled, ssm::cuda_compiled());
  EXPECT_FALSE(info.cuda_status.empty());
  if (!info.cuda_compiled) {
    EXPECT_FALSE(info.cuda_usable);
  }
}

TEST(Backend, DispatchPicksTheArgumentsDevice) {
  float x = 0;
  ssm::TensorView a(&x, ssm::DType::f32, ssm::Device::cpu(), ssm::Dims{1});
  ssm::Checker c("op");
  EXPECT_EQ(ssm::dispatch_device(c, {{"a", a}, {"b", a}}), ssm::Device::cpu());
}

TEST(Backend, MixedDevicesAreAnError) {
  float x = 0;
  ssm::TensorView a(&x, ssm::DType::f32, ssm::Device::cpu(), ssm::Dims{1});
  ssm::TensorView g(&x, ssm::DType::f32, ssm::Device::cuda(0), ssm::Dims{1});
  ssm::Checker c("my_op");
  try {
    (void)ssm::dispatch_device(c, {{"a", a}, {"g", g}});
    FAIL();
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("my_op: argument 'g': is on cuda:0 but 'a' is on cpu"), std::string::npos)
        << e.what();
  }
}

TEST(Backend, CudaTensorsWithoutUsableCudaAreAnError) {
  float x = 0;
  ssm::TensorView g(&x, ssm::DType::f32, ssm::Device::cuda(0), ssm::Dims{1});
  ssm::Checker c("my_op");
#if !defined(SSM_HAS_CUDA)
  try {
    (void)ssm::dispatch_device(c, {{"g", g}});
    FAIL();
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("link the CMake target ssm::cuda"), std::string::npos) << e.what();
  }
#else
  if (ssm::backends().cuda_usable) GTEST_SKIP() << "a GPU is usable here";
  EXPECT_THROW((void)ssm::dispatch_device(c, {{"g", g}}), ssm::Error);
#endif
}

}  // namespace
