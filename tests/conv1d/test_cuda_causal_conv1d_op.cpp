// ssm::causal_conv1d / _backward / _update on CUDA tensors (the kernels of cuda/kernels/causal_conv1d.cuh). Without
// a GPU: the dispatch's "CUDA is unusable" error, then skip. With one: every output and gradient against the CPU op.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "ssm/ssm.hpp"

namespace {

ssm::Tensor random(ssm::Dims shape, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(static_cast<std::size_t>(shape.product()));
  for (auto& x : v) x = dist(rng);
  return ssm::Tensor::from_vector(shape, v);
}

double max_abs_diff(const ssm::Tensor& a, const ssm::Tensor& b) {
  const auto x = a.to(ssm::Device::cpu()).to_vector<float>(), y = b.to(ssm::Device::cpu()).to_vector<float>();
  double e = 0;
  for (std::size_t i = 0; i < x.size(); ++i) e = std::max(e, std::abs(static_cast<double>(x[i]) - y[i]));
  return e;
}

TEST(CudaCausalConv1dOp, DispatchesCudaTensors) {
  const ssm::index_t b = 2, d = 5, l = 1100, w = 4;
  std::mt19937 rng(9);
  ssm::Tensor x = random({b, d, l}, rng), wt = random({d, w}, rng), bias = random({d}, rng);
  ssm::Tensor h0 = random({b, d, w - 1}, rng), go = random({b, d, l}, rng), gf = random({b, d, w - 1}, rng);
  ssm::CausalConv1dInputs in;
  in.x = x.view(), in.weight = wt.view(), in.bias = bias.view(), in.initial_state = h0.view();
  if (!ssm::backends().cuda_usable) {
    ssm::CausalConv1dInputs gin = in;
    gin.x = ssm::TensorView(x.data(), ssm::DType::f32, ssm::Device::cuda(0), x.shape());
    gin.weight = ssm::TensorView(wt.data(), ssm::DType::f32, ssm::Device::cuda(0), wt.shape());
    gin.bias.reset();
    gin.initial_state.reset();
    try {
      (void)ssm::causal_conv1d(gin);
      FAIL() << "expected ssm::Error";
    } catch (const ssm::Error& e) {
      EXPECT_NE(std::string(e.what()).find("CUDA is unusable"), std::string::npos) << e.what();
    }
    GTEST_SKIP() << "no usable GPU: " << ssm::backends().cuda_status;
  }
  const ssm::Device dev = ssm::Device::cuda(0);
  ssm::Tensor xd = x.to(dev), wd = wt.to(dev), bd = bias.to(dev), hd = h0.to(dev), god = go.to(dev), gfd = gf.to(dev);
  ssm::CausalConv1dInputs gin = in;
  gin.x = xd.view(), gin.weight = wd.view(), gin.bias = bd.view(), gin.initial_state = hd.view();
  const auto cpu = ssm::causal_conv1d(in), gpu = ssm::causal_conv1d(gin);
  EXPECT_EQ(gpu.path, "cuda");
  EXPECT_LE(max_abs_diff(gpu.out, cpu.out), 1e-5);
  EXPECT_LE(max_abs_diff(gpu.final_state, cpu.final_state), 0.0);
  const auto gc = ssm::causal_conv1d_backward(in, go.view(), gf.view());
  const auto gg = ssm::causal_conv1d_backward(gin, god.view(), gfd.view());
  EXPECT_LE(max_abs_diff(gg.grad_x, gc.grad_x), 1e-5);
  EXPECT_LE(max_abs_diff(gg.grad_weight, gc.grad_weight), 1e-3);  // sums over b · l = 2200 terms
  EXPECT_LE(max_abs_diff(gg.grad_bias, gc.grad_bias), 1e-3);
  EXPECT_LE(max_abs_diff(gg.grad_initial_state, gc.grad_initial_state), 1e-5);
  // One token through the update kernel and the CPU update.
  ssm::Tensor st = random({b, d, w}, rng), xs = random({b, d}, rng), o = ssm::Tensor::empty({b, d}, ssm::DType::f32);
  ssm::Tensor std_ = st.to(dev), xsd = xs.to(dev), od = ssm::Tensor::empty({b, d}, ssm::DType::f32, dev);
  ssm::causal_conv1d_update(xs.view(), st.view(), wt.view(), bias.view(), o.view());
  ssm::causal_conv1d_update(xsd.view(), std_.view(), wd.view(), bd.view(), od.view());
  EXPECT_LE(max_abs_diff(od, o), 1e-5);
  EXPECT_LE(max_abs_diff(std_, st), 0.0);
}

}  // namespace
