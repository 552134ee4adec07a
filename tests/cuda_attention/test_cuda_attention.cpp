// ssm::attention_forward / attention_backward on CUDA tensors (ssm::cuda, cuda/kernels/attention.cuh). Without a
// GPU: the dispatch's "CUDA is unusable" error, then skip. With one: outputs, lse and gradients against the CPU op
// (f32; the kernels themselves are checked against the double reference under the emulation, tests/cuda_emu).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "ssm/ssm.hpp"

namespace {

bool gpu_usable() { return ssm::backends().cuda_usable; }

ssm::Tensor random(ssm::Dims shape, std::mt19937& rng, float amp) {
  std::uniform_real_distribution<float> dist(-amp, amp);
  std::vector<float> v(static_cast<std::size_t>(shape.product()));
  for (auto& x : v) x = dist(rng);
  return ssm::Tensor::from_vector(shape, v);
}

/// max |a - b| / max(max |b|, 1e-3).
double rel_error(const ssm::Tensor& a, const ssm::Tensor& b) {
  const auto x = a.to(ssm::Device::cpu()).to_vector<float>(), y = b.to(ssm::Device::cpu()).to_vector<float>();
  double err = 0, mag = 1e-3;
  for (std::size_t i = 0; i < y.size(); ++i) {
    err = std::max(err, std::abs(static_cast<double>(x[i]) - y[i]));
    mag = std::max(mag, std::abs(static_cast<double>(y[i])));
  }
  return err / mag;
}

TEST(CudaAttention, OpDispatchesCudaTensors) {
  struct Case {
    ssm::index_t b, l_q, l_k, h, h_kv, p;
    bool causal;
  };
  // Tiled (several query tiles, grouped-query, p padded), split-key decoding (1 and 3 queries), no mask.
  const Case cases[] = {{2, 300, 300, 4, 2, 64, true}, {1, 1, 1000, 4, 1, 128, true}, {1, 3, 513, 2, 2, 40, true},
                        {1, 100, 150, 2, 2, 33, false}};
  std::mt19937 rng(11);
  for (const auto& c : cases) {
    SCOPED_TRACE("l_q " + std::to_string(c.l_q) + " l_k " + std::to_string(c.l_k) + " p " + std::to_string(c.p));
    ssm::Tensor q = random({c.b, c.l_q, c.h, c.p}, rng, 2), k = random({c.b, c.l_k, c.h_kv, c.p}, rng, 2);
    ssm::Tensor v = random({c.b, c.l_k, c.h_kv, c.p}, rng, 1), go = random({c.b, c.l_q, c.h, c.p}, rng, 1);
    ssm::AttentionOptions opt;
    opt.causal = c.causal;
    if (!gpu_usable()) {
      auto on_cuda = [](const ssm::Tensor& t) {
        return ssm::TensorView(t.data(), ssm::DType::f32, ssm::Device::cuda(0), t.shape());
      };
      ssm::Tensor out = ssm::Tensor::empty(q.shape(), ssm::DType::f32);
      ssm::Tensor lse = ssm::Tensor::empty({c.b, c.h, c.l_q}, ssm::DType::f32);
      try {
        ssm::attention_forward(on_cuda(q), on_cuda(k), on_cuda(v), on_cuda(out), on_cuda(lse), opt);
        FAIL() << "expected ssm::Error";
      } catch (const ssm::Error& e) {
        EXPECT_NE(std::string(e.what()).find("CUDA is unusable"), std::string::npos) << e.what();
      }
      GTEST_SKIP() << "no usable GPU: " << ssm::backends().cuda_status;
    }
    const ssm::Device dev = ssm::Device::cuda(0);
    const auto cpu = ssm::attention_forward(q.view(), k.view(), v.view(), opt);
    ssm::Tensor qd = q.to(dev), kd = k.to(dev), vd = v.to(dev), god = go.to(dev);
    const auto gpu = ssm::attention_forward(qd.view(), kd.view(), vd.view(), opt);
    EXPECT_LE(rel_error(gpu.out, cpu.out), 1e-5);
    EXPECT_LE(rel_error(gpu.lse, cpu.lse), 1e-5);
    ssm::Tensor gq = ssm::Tensor::empty(q.shape(), ssm::DType::f32);
    ssm::Tensor gk = ssm::Tensor::empty(k.shape(), ssm::DType::f32), gv = ssm::Tensor::empty(v.shape(), ssm::DType::f32);
    ssm::attention_backward(q.view(), k.view(), v.view(), cpu.out.view(), cpu.lse.view(), go.view(), gq.view(),
                            gk.view(), gv.view(), opt);
    ssm::Tensor gqd = ssm::Tensor::empty(q.shape(), ssm::DType::f32, dev);
    ssm::Tensor gkd = ssm::Tensor::empty(k.shape(), ssm::DType::f32, dev);
    ssm::Tensor gvd = ssm::Tensor::empty(v.shape(), ssm::DType::f32, dev);
    ssm::attention_backward(qd.view(), kd.view(), vd.view(), gpu.out.view(), gpu.lse.view(), god.view(), gqd.view(),
                            gkd.view(), gvd.view(), opt);
    EXPECT_LE(rel_error(gqd, gq), 1e-4) << "grad_q";
    EXPECT_LE(rel_error(gkd, gk), 1e-4) << "grad_k";
    EXPECT_LE(rel_error(gvd, gv), 1e-4) << "grad_v";
  }
  // What the CUDA kernels do not take, named.
  ssm::Tensor q = random({1, 4, 1, 16}, rng, 1).to(ssm::Device::cuda(0));
  ssm::AttentionOptions mat;
  mat.algorithm = ssm::AttentionAlgorithm::materialized;
  try {
    (void)ssm::attention_forward(q.view(), q.view(), q.view(), mat);
    FAIL() << "expected ssm::Error";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("materialized algorithm has no CUDA kernel"), std::string::npos) << e.what();
  }
}

TEST(CudaAttention, KVCacheOnDeviceDecodesLikeTheHostCache) {
  // A KV cache in device memory (one 2D copy per append), decoded token by token through the split-key kernel,
  // against the same steps on a host cache. The dtype rule needs no GPU.
  try {
    ssm::KVCache bad(1, 2, 16, ssm::DType::f64, 0, ssm::Device::cuda(0));
    FAIL() << "expected ssm::Error";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("holds f32"), std::string::npos) << e.what();
  }
  if (!gpu_usable()) GTEST_SKIP() << "no usable GPU: " << ssm::backends().cuda_status;
  const ssm::index_t b = 2, h = 4, h_kv = 2, p = 64, prompt = 200, steps = 5;
  const ssm::Device dev = ssm::Device::cuda(0);
  std::mt19937 rng(5);
  ssm::KVCache host(b, h_kv, p), device(b, h_kv, p, ssm::DType::f32, 16, dev);  // small capacity: regrows
  ssm::Tensor k0 = random({b, prompt, h_kv, p}, rng, 2), v0 = random({b, prompt, h_kv, p}, rng, 1);
  host.append(k0.view(), v0.view());
  device.append(k0.view(), v0.view());  // host tensors appended to a device cache
  for (ssm::index_t s = 0; s < steps; ++s) {
    ssm::Tensor q = random({b, 1, h, p}, rng, 2), k = random({b, 1, h_kv, p}, rng, 2), v = random({b, 1, h_kv, p}, rng, 1);
    host.append(k.view(), v.view());
    ssm::Tensor kd = k.to(dev), vd = v.to(dev), qd = q.to(dev);
    device.append(kd.view(), vd.view());
    ssm::Tensor out = ssm::Tensor::empty(q.shape(), ssm::DType::f32);
    ssm::Tensor outd = ssm::Tensor::empty(q.shape(), ssm::DType::f32, dev);
    ssm::attention_decode(q.view(), host, out.view());
    ssm::attention_decode(qd.view(), device, outd.view());
    EXPECT_LE(rel_error(outd, out), 1e-5) << "step " << s;
  }
  EXPECT_EQ(device.length(), prompt + steps);
}

}  // namespace
