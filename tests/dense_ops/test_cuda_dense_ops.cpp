// linear, rms_norm (+ residual), embedding and selective_state_update on CUDA tensors (ssm::cuda's entries: cuBLAS,
// cuda/kernels/{linear,rms_norm,embedding,selective_state_update}.cuh) against the same ops on CPU tensors, f32; the
// S4 / S4D layers moved to the GPU against the CPU layers.
// Without a GPU: the entry is registered (the op gets past "not implemented on cuda yet" to the runtime's error),
// then skip. The kernels under the emulation, on every dtype and awkward shapes: tests/conformance (cuda_emulated).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "ssm/ssm.hpp"

namespace {

using ssm::Device;
using ssm::DType;
using ssm::Tensor;

Tensor random(ssm::Dims shape, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<std::size_t>(shape.product()));
  for (auto& x : v) x = dist(rng);
  return Tensor::from_vector(shape, v);
}

/// max |a - b| / max |b| over f32 tensors on any device.
double rel_diff(const Tensor& a, const Tensor& b) {
  const auto x = a.to(Device::cpu()).to_vector<float>(), y = b.to(Device::cpu()).to_vector<float>();
  double e = 0, s = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    e = std::max(e, std::abs(static_cast<double>(x[i]) - y[i]));
    s = std::max(s, std::abs(static_cast<double>(y[i])));
  }
  return s > 0 ? e / s : e;
}

Tensor copy_of(const Tensor& t) {
  Tensor c = Tensor::empty(t.shape(), t.dtype());
  ssm::copy(c, t);
  return c;
}

Tensor bf16_of(const Tensor& t) {
  const auto v = t.to_vector<float>();
  std::vector<ssm::bfloat16> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[i] = ssm::from_float<ssm::bfloat16>(v[i]);
  return Tensor::from_vector(t.shape(), r);
}

bool skip_without_gpu() {
  if (ssm::backends().cuda_usable) return false;
  // The entries are set: the op reaches the runtime, whose error is not "not implemented".
  std::vector<float> x(6), y(6);
  const ssm::TensorView xv(x.data(), DType::f32, Device::cuda(0), {2, 3}), yv(y.data(), DType::f32, Device::cuda(0), {2, 3});
  try {
    (void)ssm::rms_norm_into({xv, std::nullopt, std::nullopt, 1e-5}, yv);
  } catch (const ssm::Error& e) {
    EXPECT_EQ(std::string(e.what()).find("not implemented on cuda yet"), std::string::npos) << e.what();
  }
  return true;
}

TEST(CudaDenseOps, MatchTheCpuOps) {
  if (skip_without_gpu()) GTEST_SKIP() << "no usable GPU: " << ssm::backends().cuda_status;
  const Device dev = Device::cuda(0);
  std::mt19937 rng(5);
  // linear: a GEMM (f32 weights) and the 16-bit weight kernel, with a bias; rows 1 and 33.
  for (std::int64_t rows : {1, 33}) {
    const Tensor x = random({rows, 70}, rng), w = random({45, 70}, rng), bias = random({45}, rng);
    const Tensor xd = x.to(dev), wd = w.to(dev), bd = bias.to(dev);
    EXPECT_LE(rel_diff(ssm::linear({xd, wd, bd}), ssm::linear({x, w, bias})), 1e-5) << "rows " << rows;
    const Tensor wh = bf16_of(w), whd = wh.to(dev);
    EXPECT_LE(rel_diff(ssm::linear({xd, whd, bd}), ssm::linear({x, wh, bias})), 1e-5) << "bf16 W, rows " << rows;
  }
  // rms_norm with the residual add: y and the updated residual.
  {
    const Tensor x = random({5, 300}, rng), wt = random({300}, rng, 0.5f, 1.5f), res = random({5, 300}, rng);
    const Tensor xd = x.to(dev), wd = wt.to(dev), rd = res.to(dev);
    const Tensor rc = copy_of(res);
    const Tensor yc = ssm::rms_norm({x, wt, rc, 1e-5}), yd = ssm::rms_norm({xd, wd, rd, 1e-5});
    EXPECT_LE(rel_diff(yd, yc), 2e-5);
    EXPECT_LE(rel_diff(rd, rc), 0.0);
  }
  // embedding: i64 ids into an f32 and a bf16 table.
  {
    const Tensor table = random({50, 40}, rng), ids = Tensor::from_vector({4}, std::vector<std::int64_t>{0, 49, 7, 7});
    EXPECT_LE(rel_diff(ssm::embedding(ids.to(dev), table.to(dev)), ssm::embedding(ids, table)), 0.0);
    const Tensor th = bf16_of(table);
    EXPECT_LE(rel_diff(ssm::embedding(ids.to(dev), th.to(dev)), ssm::embedding(ids, th)), 0.0);
  }
  // selective_state_update: Mamba's n = 16, every optional input, softplus.
  {
    const std::int64_t b = 2, d = 37, n = 16;
    const Tensor h = random({b, d, n}, rng), x = random({b, d}, rng), dt = random({b, d}, rng, -2, 1);
    const Tensor A = random({d, n}, rng, -1.5f, -0.05f), B = random({b, n}, rng), C = random({b, n}, rng);
    const Tensor D = random({d}, rng), z = random({b, d}, rng), dt_bias = random({d}, rng);
    const Tensor hc = copy_of(h), hd = h.to(dev), out_c = Tensor::empty({b, d}, DType::f32),
                 out_d = Tensor::empty({b, d}, DType::f32, dev);
    ssm::SelectiveStateUpdateInputs ci{hc, x, dt, A, B, C, D, z, dt_bias, true};
    const Tensor xd = x.to(dev), dtd = dt.to(dev), Ad = A.to(dev), Bd = B.to(dev), Cd = C.to(dev), Dd = D.to(dev),
                 zd = z.to(dev), dbd = dt_bias.to(dev);
    ssm::SelectiveStateUpdateInputs di{hd, xd, dtd, Ad, Bd, Cd, Dd, zd, dbd, true};
    ssm::selective_state_update(ci, out_c);
    EXPECT_EQ(ssm::selective_state_update(di, out_d), "cuda");
    EXPECT_LE(rel_diff(out_d, out_c), 1e-5);
    EXPECT_LE(rel_diff(hd, hc), 1e-5);
  }
}

/// The S4D and S4 layers moved to the GPU (long_conv with GELU, linear, glu on the device) against the same layers on
/// the CPU, each output mixing; 37 channels and 300 steps (ragged blocks of the long convolution's kernel).
TEST(CudaDenseOps, S4LayersOnTheGpuMatchTheCpuLayers) {
  if (skip_without_gpu()) GTEST_SKIP() << "no usable GPU: " << ssm::backends().cuda_status;
  const Device dev = Device::cuda(0);
  std::mt19937 rng(7);
  const std::int64_t b = 2, l = 300, h = 37;
  const Tensor x = random({b, l, h}, rng);
  for (auto mix : {ssm::OutputMix::none, ssm::OutputMix::gelu_linear, ssm::OutputMix::gelu_glu}) {
    ssm::S4DLayer<float>::Config dcfg;
    dcfg.h = h, dcfg.N = 16, dcfg.mix = mix, dcfg.seed = 3;
    ssm::S4Layer<float>::Config scfg;
    scfg.h = h, scfg.N = 16, scfg.l_max = l, scfg.mix = mix, scfg.seed = 4;
    auto check = [&](const auto& layer, const char* what) {
      Tensor ref = Tensor::empty({b, l, h}, DType::f32), y = Tensor::empty({b, l, h}, DType::f32, dev);
      layer.forward(x, ref);
      layer.to(dev).forward(x.to(dev), y);
      EXPECT_LE(rel_diff(y, ref), 1e-5) << what << ", mix " << static_cast<int>(mix);
    };
    check(ssm::S4DLayer<float>(dcfg), "S4D");
    check(ssm::S4Layer<float>(scfg), "S4");
  }
}

}  // namespace
