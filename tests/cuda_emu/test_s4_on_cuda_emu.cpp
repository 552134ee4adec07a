// The S4D and S4 layers moved to a device (to()): their forward on CUDA tensors, under the host emulation, against the
// same layers on the CPU. On the device the kernel K is computed on the CPU and copied over, then the long convolution
// (with the skip term, and GELU before mixing), the output linear map and GLU run as ops there.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "emu/backend.hpp"
#include "ssm/layers/s4.hpp"
#include "support/expect_error.hpp"

namespace {

using ssm::Device;
using ssm::index_t;
using ssm::OutputMix;
using ssm::Tensor;
using ssm_test::expect_error;

const Device kCuda = Device::cuda(0);

/// max |got − ref| / max |ref| over two tensors of T of one shape (got may be on the device).
template <class T>
double relative_error(const Tensor& got, const Tensor& ref) {
  const Tensor g = got.to(Device::cpu());
  double diff = 0, scale = 0;
  for (index_t i = 0; i < ref.numel(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(g.data_as<T>()[i]) - static_cast<double>(ref.data_as<T>()[i])));
    scale = std::max(scale, std::abs(static_cast<double>(ref.data_as<T>()[i])));
  }
  EXPECT_GT(scale, 0.0);
  return diff / scale;
}

/// x (b, l, h) of uniform values in [−1, 1).
template <class T>
Tensor random_input(index_t b, index_t l, index_t h, unsigned seed) {
  Tensor x = Tensor::empty({b, l, h}, ssm::dtype_of<T>());
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  for (index_t i = 0; i < x.numel(); ++i) x.data_as<T>()[i] = static_cast<T>(dist(rng));
  return x;
}

/// The layer's forward on the device against the layer itself on the CPU. 37 channels and 70 steps: two blocks of the
/// long convolution's kernel along each (32 channels × 64 steps), both ragged; two batch rows.
template <class Layer, class T>
void expect_device_forward_equals_cpu(const Layer& cpu, double tol, const char* what) {
  const auto dev = cpu.to(kCuda);
  ASSERT_EQ(dev.device(), kCuda);
  EXPECT_EQ(cpu.device(), Device::cpu());
  const index_t b = 2, l = 70, h = cpu.channels();
  const Tensor x = random_input<T>(b, l, h, 9);
  Tensor ref = Tensor::empty({b, l, h}, ssm::dtype_of<T>());
  cpu.forward(x, ref);
  Tensor y = Tensor::empty({b, l, h}, ssm::dtype_of<T>(), kCuda);
  dev.forward(x.to(kCuda), y);
  EXPECT_LE(relative_error<T>(y, ref), tol) << what;
  // What stays on the CPU works on the moved layer: the forward on host pointers and the backward on CPU tensors.
  Tensor host = Tensor::empty({b, l, h}, ssm::dtype_of<T>());
  dev.forward(x.data_as<const T>(), host.data_as<T>(), b, l);
  EXPECT_EQ(relative_error<T>(host, ref), 0.0) << what;
  const auto g_dev = dev.backward(x, ref), g_cpu = cpu.backward(x, ref);
  EXPECT_EQ(g_dev.grad_x, g_cpu.grad_x) << what;
  // x and y on the CPU for a layer on the device are refused before anything is read.
  expect_error([&] { dev.forward(x, ref); }, {"'x'", "is on cpu but must be on cuda:0"});
  expect_error([&] { dev.forward(x.to(kCuda), ref); }, {"'y'", "is on cpu but must be on cuda:0"});
  expect_error([&] { (void)dev.backward(x.to(kCuda), ref); }, {"'x'", "the backward runs on the CPU"});
}

/// f32: the CPU convolves by direct sums (l = 70) and mixes in double (Eigen), the device sums in blocks of taps and
/// mixes in f32 (the cuBLAS stand-in); f64: reassociated sums only. Measured: at most 2.5e-7 (f32) and 4.2e-16 (f64).
template <class T>
double tolerance() {
  return std::is_same_v<T, float> ? 2e-6 : 1e-14;
}

template <class T>
void expect_s4d_on_device(OutputMix mix, const char* what) {
  typename ssm::S4DLayer<T>::Config cfg;
  cfg.h = 37, cfg.N = 8, cfg.mix = mix, cfg.seed = 3;
  expect_device_forward_equals_cpu<ssm::S4DLayer<T>, T>(ssm::S4DLayer<T>(cfg), tolerance<T>(), what);
}

template <class T>
void expect_s4_on_device(OutputMix mix, const char* what) {
  typename ssm::S4Layer<T>::Config cfg;
  cfg.h = 37, cfg.N = 8, cfg.l_max = 80, cfg.mix = mix, cfg.seed = 4;
  expect_device_forward_equals_cpu<ssm::S4Layer<T>, T>(ssm::S4Layer<T>(cfg), tolerance<T>(), what);
}

TEST(S4LayersOnCudaEmu, ForwardEqualsCpuLayerForEveryMixing) {
  ssm::emu::ScopedEmulatedCuda guard(ssm::emu::Order::random, 14);
  const std::pair<OutputMix, const char*> mixes[] = {
      {OutputMix::none, "none"}, {OutputMix::gelu_linear, "gelu_linear"}, {OutputMix::gelu_glu, "gelu_glu"}};
  for (const auto& [mix, name] : mixes) {
    expect_s4d_on_device<float>(mix, name);
    expect_s4d_on_device<double>(mix, name);
    expect_s4_on_device<float>(mix, name);
    expect_s4_on_device<double>(mix, name);
  }
}

}  // namespace
