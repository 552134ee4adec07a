// TensorView / Tensor / View: shapes, strides, sub-views, typed access and its errors, copies.
#include <gtest/gtest.h>

#include <numeric>

#include "ssm/core/tensor.hpp"

namespace {

using ssm::Device;
using ssm::Dims;
using ssm::DType;
using ssm::Tensor;
using ssm::TensorView;

TEST(Tensor, EmptyIsAlignedContiguousAndSized) {
  Tensor t = Tensor::empty({2, 3, 5}, DType::f32);
  EXPECT_EQ(t.numel(), 30);
  EXPECT_EQ(t.nbytes(), 120u);
  EXPECT_EQ(t.strides(), (Dims{15, 5, 1}));
  EXPECT_TRUE(t.view().is_contiguous());
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t.data()) % 64, 0u);
  EXPECT_THROW(Tensor::empty({2, -1}, DType::f32), ssm::Error);
  EXPECT_THROW(Tensor::empty({1 << 30, 1 << 30, 1 << 30}, DType::f64), ssm::Error);  // size overflow
}

TEST(Tensor, ZerosAndFromVector) {
  Tensor z = Tensor::zeros({4, 4}, DType::f64);
  for (double v : z.to_vector<double>()) EXPECT_EQ(v, 0.0);
  std::vector<float> values(6);
  std::iota(values.begin(), values.end(), 1.0f);
  Tensor t = Tensor::from_vector({2, 3}, values);
  EXPECT_EQ(t.to_vector<float>(), values);
  EXPECT_THROW(Tensor::from_vector({2, 2}, values), ssm::Error);
  EXPECT_THROW(t.to_vector<double>(), ssm::Error);
}

TEST(Tensor, TypedViewIndexesWithStrides) {
  std::vector<float> values(24);
  std::iota(values.begin(), values.end(), 0.0f);
  Tensor t = Tensor::from_vector({2, 3, 4}, values);
  auto v = t.as<float, 3>("x");
  EXPECT_EQ((v(1, 2, 3)), 23.0f);
  EXPECT_EQ((v(0, 1, 2)), 6.0f);
  EXPECT_EQ((*v.ptr(1, 1)), 16.0f);
  // a transposed view: swap the last two dims through strides
  TensorView tv(t.data(), DType::f32, Device::cpu(), Dims{2, 4, 3}, Dims{12, 1, 4});
  EXPECT_FALSE(tv.is_contiguous());
  auto w = tv.as<float, 3>("xt");
  EXPECT_EQ((w(1, 3, 2)), (v(1, 2, 3)));
}

TEST(Tensor, TypedViewErrorsNameTheArgument) {
  Tensor t = Tensor::empty({2, 3}, DType::f32);
  try {
    (void)t.as<double, 2>("delta");
    FAIL() << "expected ssm::Error";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'delta'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("expected dtype f64, got f32"), std::string::npos) << e.what();
  }
  try {
    (void)t.as<float, 3>("u");
    FAIL() << "expected ssm::Error";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected rank 3, got rank 2"), std::string::npos) << e.what();
  }
}

TEST(Tensor, SelectNarrowReshape) {
  std::vector<double> values(24);
  std::iota(values.begin(), values.end(), 0.0);
  Tensor t = Tensor::from_vector({2, 3, 4}, values);
  TensorView s = t.view().select(1, 2);  // (2, 4)
  EXPECT_EQ(s.shape(), (Dims{2, 4}));
  EXPECT_EQ((s.as<double, 2>("s")(1, 1)), 21.0);
  TensorView n = t.view().narrow(2, 1, 2);  // (2, 3, 2)
  EXPECT_EQ((n.as<double, 3>("n")(1, 2, 1)), 22.0);
  EXPECT_FALSE(n.is_contiguous());
  EXPECT_THROW((void)n.reshape({12}), ssm::Error);
  EXPECT_EQ((t.view().reshape({6, 4}).as<double, 2>("r")(5, 3)), 23.0);
  EXPECT_THROW((void)t.view().reshape({5, 5}), ssm::Error);
  EXPECT_THROW((void)t.view().select(3, 0), ssm::Error);
  EXPECT_THROW((void)t.view().narrow(2, 3, 2), ssm::Error);
}

TEST(Tensor, StridedCopyGathers) {
  std::vector<float> values(12);
  std::iota(values.begin(), values.end(), 0.0f);
  Tensor t = Tensor::from_vector({3, 4}, values);
  TensorView cols = t.view().narrow(1, 1, 2);  // (3, 2), strides (4, 1)
  Tensor dst = Tensor::empty({3, 2}, DType::f32);
  ssm::copy(dst, cols);
  EXPECT_EQ(dst.to_vector<float>(), (std::vector<float>{1, 2, 5, 6, 9, 10}));
  Tensor wrong = Tensor::empty({2, 3}, DType::f32);
  EXPECT_THROW(ssm::copy(wrong, cols), ssm::Error);
}

TEST(Tensor, CopiesShareStorage) {
  Tensor a = Tensor::empty({8}, DType::f32);
  {
    Tensor b = a;
    EXPECT_EQ(a.use_count(), 2);
    EXPECT_EQ(b.data(), a.data());
  }
  EXPECT_EQ(a.use_count(), 1);
}

// Whether or not this program links ssm::cuda: with no CUDA backend registered (the registered one, if any, is taken
// out for the test), allocating on a CUDA device names what to link.
TEST(Tensor, CudaWithoutBackendIsAClearError) {
  const ssm::DeviceBackend* linked = ssm::register_backend(ssm::DeviceType::cuda, nullptr);
  std::string what;
  try {
    (void)Tensor::empty({4}, DType::f32, Device::cuda(0));
  } catch (const ssm::Error& e) {
    what = e.what();
  }
  ssm::register_backend(ssm::DeviceType::cuda, linked);
  EXPECT_NE(what.find("ssm::Tensor: cannot allocate: the tensors are on cuda:0 but the CUDA backend is not linked "
                      "(link the CMake target ssm::cuda)"),
            std::string::npos)
      << what;
}

TEST(Dims, FormatsAndLimitsRank) {
  EXPECT_EQ((Dims{2, 16, 100}).str(), "(2, 16, 100)");
  EXPECT_EQ(Dims{}.str(), "()");
  std::vector<ssm::index_t> nine(9, 1);
  EXPECT_THROW(Dims{nine}, ssm::Error);
}

}  // namespace
