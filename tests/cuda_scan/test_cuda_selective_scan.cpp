// ssm::cuda::selective_scan_forward (the fused kernel's host API): what it rejects (with ssm::Error naming the
// limit), the runtime's message when no GPU is usable, and, on a GPU, the kernel against the double loop for
// f32 / f16 / bf16, ragged lengths, groups, fixed B / C, packed sequences, chunk-boundary states.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <ssm/ssm.hpp>

#include "selective_scan_problem.hpp"
#include "ssm/cuda/causal_conv1d.hpp"
#include "ssm/ops/selective_scan.hpp"
#include "ssm/cuda/runtime.hpp"
#include "ssm/cuda/selective_scan.hpp"

namespace {

using ssm_test::Case;
using ssm_test::ScanProblem;
using index_t = std::int64_t;

bool gpu_usable() { return ssm::backends().cuda_usable; }

std::string error_of(const ssm::ScanParams& p, ssm::DType t) {
  try {
    (void)ssm::cuda::selective_scan_forward(p, t);
  } catch (const ssm::Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(CudaSelectiveScan, RejectsWhatTheKernelDoesNotSupport) {
  Case c;
  c.l = 10;
  ScanProblem<float> prob(c);
  EXPECT_NE(error_of(prob.p, ssm::DType::f64).find("input dtype must be f32, f16 or bf16 on CUDA, got f64"),
            std::string::npos)
      << error_of(prob.p, ssm::DType::f64);
  ssm::ScanParams p = prob.p;
  p.is_complex = true;
  EXPECT_NE(error_of(p, ssm::DType::f32).find("complex A"), std::string::npos);
  p = prob.p;
  p.dstate = 257;
  EXPECT_NE(error_of(p, ssm::DType::f32).find("state size n must be in [1, 256], got 257"), std::string::npos);
  p = prob.p;
  p.n_groups = 3;
  EXPECT_NE(error_of(p, ssm::DType::f32).find("multiple of the number of groups g (3)"), std::string::npos);
  p = prob.p;
  p.out = nullptr;
  EXPECT_NE(error_of(p, ssm::DType::f32).find("must be set"), std::string::npos);
  p = prob.p;
  std::vector<std::int64_t> cu = {0, 5, 10};
  p.cu_seqlens = cu.data();
  p.n_seqs = 2;
  EXPECT_NE(error_of(p, ssm::DType::f32).find("cu_seqlens needs b == 1, got b = 2"), std::string::npos);
  p = prob.p;
  p.seqlen = index_t{1} << 31;
  EXPECT_NE(error_of(p, ssm::DType::f32).find("l must be below 2^31"), std::string::npos);
}

TEST(CudaSelectiveScan, BackwardRejectsWhatItDoesNotSupport) {
  Case c;
  c.l = 10;
  ScanProblem<float> prob(c);
  float dummy = 0;
  ssm::ScanDeviceGradParams g;
  g.grad_out = g.grad_u = g.grad_delta = g.grad_z = &dummy;
  g.grad_A = g.grad_B = g.grad_C = &dummy;
  g.chunk_states = &dummy;
  g.n_chunks_max = 1;
  auto error = [&](const ssm::ScanParams& p, const ssm::ScanDeviceGradParams& gg) -> std::string {
    try {
      ssm::cuda::selective_scan_backward(p, ssm::DType::f32, gg);
    } catch (const ssm::Error& e) {
      return e.what();
    }
    return "no error";
  };
  ssm::ScanParams p = prob.p;
  std::vector<std::int64_t> cu = {0, 10};
  p.cu_seqlens = cu.data();
  p.n_seqs = 1;
  p.batch = 1;
  EXPECT_NE(error(p, g).find("cu_seqlens) are not supported by the backward kernel"), std::string::npos);
  ssm::ScanDeviceGradParams g2 = g;
  g2.n_chunks_max = 3;
  EXPECT_NE(error(prob.p, g2).find("n_chunks_max = selective_scan_chunk_count(l) = 1 are needed, got n_chunks_max = 3"),
            std::string::npos)
      << error(prob.p, g2);
  g2 = g;
  g2.grad_z = nullptr;
  EXPECT_NE(error(prob.p, g2).find("grad_z must be set when z is given"), std::string::npos);
  EXPECT_NE(error(prob.p, g).find(gpu_usable() ? "no error" : "CUDA runtime error"), std::string::npos);
}

// The conv1d host API (kernels tested under the emulation in test_cuda_emu): its own limits, then the runtime.
TEST(CudaConv1d, RejectsBadArgumentsAndReportsTheRuntime) {
  float buf[64] = {};
  ssm::CausalConv1dParams p;
  p.batch = 1;
  p.dim = 2;
  p.seqlen = 8;
  p.width = 5;
  p.x = buf;
  p.weight = buf;
  p.out = buf;
  auto error = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const ssm::Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_NE(error([&] { ssm::cuda::causal_conv1d_forward(p, ssm::DType::f32); }).find("width must be in [2, 4], got 5"),
            std::string::npos);
  p.width = 4;
  EXPECT_NE(error([&] { ssm::cuda::causal_conv1d_forward(p, ssm::DType::f64); }).find("got f64"), std::string::npos);
  ssm::CausalConv1dUpdateParams up;
  up.batch = 1;
  up.dim = 2;
  up.width = 4;
  up.x = buf;
  up.weight = buf;
  up.out = buf;
  EXPECT_NE(error([&] { ssm::cuda::causal_conv1d_update(up, ssm::DType::f32); }).find("conv_state"), std::string::npos);
  if (!gpu_usable()) {
    EXPECT_NE(error([&] { ssm::cuda::causal_conv1d_forward(p, ssm::DType::f32); }).find("CUDA runtime error"),
              std::string::npos);
  }
}

// The op ssm::selective_scan dispatches CUDA tensors to the fused kernel: without a GPU the dispatch's clear
// error; with one, the same result as the op on CPU tensors (its reference path) and the path "cuda-fused".
TEST(CudaSelectiveScan, OpDispatchesCudaTensors) {
  const ssm::index_t b = 2, d = 4, l = 300, n = 16;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  auto random = [&](ssm::Dims shape, float scale, float offset) {
    std::vector<float> v(static_cast<std::size_t>(shape.product()));
    for (auto& x : v) x = offset + scale * dist(rng);
    return ssm::Tensor::from_vector(shape, v);
  };
  ssm::Tensor u = random({b, d, l}, 1, 0), delta = random({b, d, l}, 1, -1.5f), A = random({d, n}, 0.5f, -1.0f);
  ssm::Tensor B = random({b, 2, n, l}, 1, 0), C = random({b, 2, n, l}, 1, 0), D = random({d}, 1, 0), z = random({b, d, l}, 1, 0);
  ssm::SelectiveScanInputs cpu_in;
  cpu_in.u = u.view();
  cpu_in.delta = delta.view();
  cpu_in.A = A.view();
  cpu_in.B = B.view();
  cpu_in.C = C.view();
  cpu_in.D = D.view();
  cpu_in.z = z.view();
  cpu_in.delta_softplus = true;
  if (!gpu_usable()) {
    // Views that claim cuda:0 (never dereferenced: the dispatch stops first).
    auto on_cuda = [](const ssm::Tensor& t) {
      return ssm::TensorView(t.data(), ssm::DType::f32, ssm::Device::cuda(0), t.shape());
    };
    ssm::SelectiveScanInputs gpu_in = cpu_in;
    gpu_in.u = on_cuda(u);
    gpu_in.delta = on_cuda(delta);
    gpu_in.A = on_cuda(A);
    gpu_in.B = on_cuda(B);
    gpu_in.C = on_cuda(C);
    gpu_in.D = on_cuda(D);
    gpu_in.z = on_cuda(z);
    try {
      (void)ssm::selective_scan(gpu_in);
      FAIL() << "expected ssm::Error";
    } catch (const ssm::Error& e) {
      EXPECT_NE(std::string(e.what()).find("CUDA is unusable"), std::string::npos) << e.what();
    }
    GTEST_SKIP() << "no usable GPU: " << ssm::backends().cuda_status;
  }
  const ssm::Device dev = ssm::Device::cuda(0);
  ssm::Tensor u_d = u.to(dev), delta_d = delta.to(dev), A_d = A.to(dev), B_d = B.to(dev), C_d = C.to(dev),
              D_d = D.to(dev), z_d = z.to(dev);
  ssm::SelectiveScanInputs gpu_in = cpu_in;
  gpu_in.u = u_d.view();
  gpu_in.delta = delta_d.view();
  gpu_in.A = A_d.view();
  gpu_in.B = B_d.view();
  gpu_in.C = C_d.view();
  gpu_in.D = D_d.view();
  gpu_in.z = z_d.view();
  ssm::SelectiveScanOptions opt;
  opt.return_last_state = true;
  const auto on_gpu = ssm::selective_scan(gpu_in, opt);
  opt.path = ssm::ScanPath::reference;
  const auto on_cpu = ssm::selective_scan(cpu_in, opt);
  EXPECT_EQ(on_gpu.path, "cuda-fused");
  const auto got = on_gpu.out.to_vector<float>(), want = on_cpu.out.to_vector<float>();
  double scale = 0, err = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    scale = std::max(scale, static_cast<double>(std::fabs(want[i])));
    err = std::max(err, static_cast<double>(std::fabs(got[i] - want[i])));
  }
  EXPECT_LE(err, 1e-5 * scale) << "max error " << err << " of max |out| " << scale;
  const auto h_got = on_gpu.last_state.to_vector<float>(), h_want = on_cpu.last_state.to_vector<float>();
  for (std::size_t i = 0; i < h_want.size(); ++i) EXPECT_NEAR(h_got[i], h_want[i], 1e-5 * (1 + std::fabs(h_want[i])));
}

TEST(CudaSelectiveScan, OpBackwardDispatchesCudaTensors) {
  // ssm::selective_scan_backward on CUDA tensors runs the fused backward (after a forward that saves the chunk
  // states); without a GPU the dispatch stops with the runtime's state. On a GPU: every gradient against the
  // CPU backward (f32; sums over l = 300 steps and over the channels of a group: 1e-4 of the largest entry).
  const ssm::index_t b = 2, d = 4, l = 300, n = 16;
  std::mt19937 rng(6);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  auto random = [&](ssm::Dims shape, float scale, float offset) {
    std::vector<float> v(static_cast<std::size_t>(shape.product()));
    for (auto& x : v) x = offset + scale * dist(rng);
    return ssm::Tensor::from_vector(shape, v);
  };
  ssm::Tensor u = random({b, d, l}, 1, 0), delta = random({b, d, l}, 1, -1.5f), A = random({d, n}, 0.5f, -1.0f);
  ssm::Tensor B = random({b, 2, n, l}, 1, 0), C = random({b, 2, n, l}, 1, 0), D = random({d}, 1, 0), z = random({b, d, l}, 1, 0);
  ssm::Tensor bias = random({d}, 0.5f, 0), h0 = random({b, d, n}, 1, 0), go = random({b, d, l}, 1, 0), gh = random({b, d, n}, 1, 0);
  ssm::SelectiveScanInputs cpu_in;
  cpu_in.u = u.view(), cpu_in.delta = delta.view(), cpu_in.A = A.view(), cpu_in.B = B.view(), cpu_in.C = C.view();
  cpu_in.D = D.view(), cpu_in.z = z.view(), cpu_in.delta_bias = bias.view(), cpu_in.initial_state = h0.view();
  cpu_in.delta_softplus = true;
  if (!gpu_usable()) {
    auto on_cuda = [](const ssm::Tensor& t) { return ssm::TensorView(t.data(), ssm::DType::f32, ssm::Device::cuda(0), t.shape()); };
    ssm::SelectiveScanInputs gpu_in = cpu_in;
    gpu_in.u = on_cuda(u), gpu_in.delta = on_cuda(delta), gpu_in.A = on_cuda(A), gpu_in.B = on_cuda(B), gpu_in.C = on_cuda(C);
    try {
      (void)ssm::selective_scan_backward(gpu_in, on_cuda(go));
      FAIL() << "expected ssm::Error";
    } catch (const ssm::Error& e) {
      EXPECT_NE(std::string(e.what()).find("CUDA is unusable"), std::string::npos) << e.what();
    }
    GTEST_SKIP() << "no usable GPU: " << ssm::backends().cuda_status;
  }
  const ssm::Device dev = ssm::Device::cuda(0);
  std::vector<ssm::Tensor> keep;
  auto up = [&](const ssm::Tensor& t) {
    keep.push_back(t.to(dev));
    return keep.back().view();
  };
  ssm::SelectiveScanInputs gpu_in = cpu_in;
  gpu_in.u = up(u), gpu_in.delta = up(delta), gpu_in.A = up(A), gpu_in.B = up(B), gpu_in.C = up(C), gpu_in.D = up(D);
  gpu_in.z = up(z), gpu_in.delta_bias = up(bias), gpu_in.initial_state = up(h0);
  const auto g = ssm::selective_scan_backward(gpu_in, up(go), up(gh));
  const auto ref = ssm::selective_scan_backward(cpu_in, go.view(), gh.view());
  EXPECT_EQ(g.path, "cuda-fused");
  auto check = [](const char* what, const ssm::Tensor& got_t, const ssm::Tensor& want_t) {
    const auto got = got_t.to(ssm::Device::cpu()).to_vector<float>(), want = want_t.to_vector<float>();
    ASSERT_EQ(got.size(), want.size()) << what;
    double scale = 0, err = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
      scale = std::max(scale, static_cast<double>(std::fabs(want[i])));
      err = std::max(err, static_cast<double>(std::fabs(got[i] - want[i])));
    }
    EXPECT_LE(err, 1e-4 * scale) << what << ": max error " << err << " of max |grad| " << scale;
  };
  check("u", g.grad_u, ref.grad_u);
  check("delta", g.grad_delta, ref.grad_delta);
  check("A", g.grad_A, ref.grad_A);
  check("B", g.grad_B, ref.grad_B);
  check("C", g.grad_C, ref.grad_C);
  check("D", g.grad_D, ref.grad_D);
  check("z", g.grad_z, ref.grad_z);
  check("delta_bias", g.grad_delta_bias, ref.grad_delta_bias);
  check("initial_state", g.grad_initial_state, ref.grad_initial_state);
}

TEST(CudaSelectiveScan, WithoutGpuTheRuntimeMessage) {
  if (gpu_usable()) GTEST_SKIP() << "a GPU is usable here: " << ssm::backends().cuda_status;
  Case c;
  c.l = 10;
  ScanProblem<float> prob(c);
  const std::string msg = error_of(prob.p, ssm::DType::f32);
  EXPECT_NE(msg.find("CUDA runtime error in cudaGetDeviceCount"), std::string::npos) << msg;
}

TEST(CudaSelectiveScan, ChunkGeometry) {
  EXPECT_EQ(ssm::cuda::selective_scan_chunk_len(1), 128);
  EXPECT_EQ(ssm::cuda::selective_scan_chunk_len(129), 1024);
  EXPECT_EQ(ssm::cuda::selective_scan_chunk_len(5000), 2048);
  EXPECT_EQ(ssm::cuda::selective_scan_chunk_count(0), 1);
  EXPECT_EQ(ssm::cuda::selective_scan_chunk_count(4096), 2);
  EXPECT_EQ(ssm::cuda::selective_scan_chunk_count(4097), 3);
}

// Device copy of a host vector, freed at scope exit.
template <class T>
struct DeviceBuffer {
  T* ptr = nullptr;
  std::size_t count = 0;
  explicit DeviceBuffer(const std::vector<T>& host) : count(host.size()) {
    ptr = static_cast<T*>(ssm::cuda::device_malloc(std::max<std::size_t>(1, count) * sizeof(T), 0));
    ssm::cuda::memcpy(ptr, ssm::Device::cuda(0), host.data(), ssm::Device::cpu(), count * sizeof(T));
  }
  ~DeviceBuffer() { ssm::cuda::device_free(ptr, 0); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  std::vector<T> to_host() const {
    std::vector<T> h(count);
    ssm::cuda::memcpy(h.data(), ssm::Device::cpu(), ptr, ssm::Device::cuda(0), count * sizeof(T));
    return h;
  }
};

template <class In>
void run_on_gpu(const Case& c) {
  SCOPED_TRACE(c.name());
  ScanProblem<In> prob(c);
  DeviceBuffer<In> u(prob.u), delta(prob.delta), z(prob.z), B_var(prob.B_var), C_var(prob.C_var), out(prob.out);
  DeviceBuffer<float> B_fix(prob.B_fix), C_fix(prob.C_fix), D(prob.D), bias(prob.bias), h0(prob.h0), A(prob.A),
      last(prob.last);
  std::vector<std::int64_t> cu_host(c.cu_seqlens);
  DeviceBuffer<std::int64_t> cu(cu_host);
  ssm::ScanParams p = prob.p;
  p.u = u.ptr;
  p.delta = delta.ptr;
  if (p.z) p.z = z.ptr;
  p.B = c.variable_B ? static_cast<const void*>(B_var.ptr) : B_fix.ptr;
  p.C = c.variable_C ? static_cast<const void*>(C_var.ptr) : C_fix.ptr;
  if (p.D) p.D = D.ptr;
  if (p.delta_bias) p.delta_bias = bias.ptr;
  if (p.initial_state) p.initial_state = h0.ptr;
  p.A = A.ptr;
  p.last_state = last.ptr;
  p.out = out.ptr;
  if (p.cu_seqlens) p.cu_seqlens = cu.ptr;
  const index_t chunk = ssm::cuda::selective_scan_chunk_len(prob.max_len);
  const index_t n_chunks = ssm::cuda::selective_scan_chunk_count(prob.max_len);
  DeviceBuffer<float> saved(std::vector<float>(static_cast<std::size_t>(prob.seqs * c.d * n_chunks * c.n), -55.0f));
  ssm::ScanForwardOptions opt;
  opt.chunk_states = saved.ptr;
  opt.max_seqlen = prob.max_len;
  EXPECT_EQ(ssm::cuda::selective_scan_forward(p, ssm::dtype_of<In>(), opt), "cuda-fused");
  const std::vector<float> saved_host = saved.to_host();
  const double worst = prob.check(out.to_host(), last.to_host(), &saved_host, chunk, n_chunks);
  std::printf("%s: worst |out - reference| / scale %.3g\n", c.name().c_str(), worst);
}

// Forward with saved chunk states, then backward, against the double backward loop (grads <= 1e-4 of the
// largest reference entry, as in the emulated tests).
void run_backward_on_gpu(const Case& c) {
  SCOPED_TRACE(c.name() + " backward");
  ScanProblem<float> prob(c);
  const index_t b = c.b, d = c.d, l = c.l, n = c.n, g = c.g;
  std::vector<float> grad_out_h(static_cast<std::size_t>(b * d * l)), grad_last_h(static_cast<std::size_t>(b * d * n));
  std::mt19937 rng(99);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (auto& x : grad_out_h) x = dist(rng);
  for (auto& x : grad_last_h) x = dist(rng);
  DeviceBuffer<float> u(prob.u), delta(prob.delta), z(prob.z), B(prob.B_var), C(prob.C_var), out(prob.out), D(prob.D),
      bias(prob.bias), h0(prob.h0), A(prob.A), last(prob.last), grad_out(grad_out_h), grad_last(grad_last_h);
  const std::size_t bdl = grad_out_h.size(), bgnl = static_cast<std::size_t>(b * g * n * l);
  const std::size_t dn = static_cast<std::size_t>(d * n), dd = static_cast<std::size_t>(d);
  DeviceBuffer<float> grad_u{std::vector<float>(bdl)}, grad_delta{std::vector<float>(bdl)},
      grad_z{std::vector<float>(bdl)}, grad_A{std::vector<float>(dn)}, grad_B{std::vector<float>(bgnl)},
      grad_C{std::vector<float>(bgnl)}, grad_D{std::vector<float>(dd)}, grad_bias{std::vector<float>(dd)},
      grad_h0{std::vector<float>(grad_last_h.size())};
  const index_t n_chunks = ssm::cuda::selective_scan_chunk_count(l);
  DeviceBuffer<float> saved{std::vector<float>(static_cast<std::size_t>(b * d * n_chunks * n))};
  ssm::ScanParams p = prob.p;
  p.u = u.ptr;
  p.delta = delta.ptr;
  p.z = z.ptr;
  p.B = B.ptr;
  p.C = C.ptr;
  p.D = D.ptr;
  p.delta_bias = bias.ptr;
  p.initial_state = h0.ptr;
  p.A = A.ptr;
  p.last_state = last.ptr;
  p.out = out.ptr;
  ssm::ScanForwardOptions opt;
  opt.chunk_states = saved.ptr;
  (void)ssm::cuda::selective_scan_forward(p, ssm::DType::f32, opt);
  ssm::ScanDeviceGradParams gp;
  gp.grad_out = grad_out.ptr;
  gp.grad_last_state = grad_last.ptr;
  gp.chunk_states = saved.ptr;
  gp.n_chunks_max = n_chunks;
  gp.grad_u = grad_u.ptr;
  gp.grad_delta = grad_delta.ptr;
  gp.grad_z = grad_z.ptr;
  gp.grad_A = grad_A.ptr;
  gp.grad_B = grad_B.ptr;
  gp.grad_C = grad_C.ptr;
  gp.grad_D = grad_D.ptr;
  gp.grad_delta_bias = grad_bias.ptr;
  gp.grad_initial_state = grad_h0.ptr;
  ssm::cuda::selective_scan_backward(p, ssm::DType::f32, gp);
  const auto ref = prob.reference_grads(grad_out_h, grad_last_h);
  auto close = [](const char* what, const std::vector<float>& got, const std::vector<double>& r) {
    double scale = 0, err = 0;
    for (std::size_t i = 0; i < r.size(); ++i) {
      scale = std::max(scale, std::fabs(r[i]));
      err = std::max(err, std::fabs(got[i] - r[i]));
    }
    EXPECT_LE(err, 1e-4 * scale + 1e-12) << what << ": max error " << err << ", max |reference| " << scale;
  };
  close("grad_u", grad_u.to_host(), ref.u);
  close("grad_delta", grad_delta.to_host(), ref.delta);
  close("grad_z", grad_z.to_host(), ref.z);
  close("grad_A", grad_A.to_host(), ref.A);
  close("grad_B", grad_B.to_host(), ref.B);
  close("grad_C", grad_C.to_host(), ref.C);
  close("grad_D", grad_D.to_host(), ref.D);
  close("grad_delta_bias", grad_bias.to_host(), ref.bias);
  close("grad_initial_state", grad_h0.to_host(), ref.h0);
}

TEST(CudaSelectiveScan, BackwardMatchesTheDoubleLoopOnTheGpu) {
  if (!gpu_usable()) GTEST_SKIP() << "no usable GPU: " << ssm::backends().cuda_status;
  for (index_t l : {1, 2049, 5000}) {
    Case c;
    c.l = l;
    run_backward_on_gpu(c);
  }
}

TEST(CudaSelectiveScan, MatchesTheDoubleLoopOnTheGpu) {
  if (!gpu_usable()) GTEST_SKIP() << "no usable GPU: " << ssm::backends().cuda_status;
  for (index_t l : {1, 31, 2047, 2048, 2049, 5000}) {
    Case c;
    c.l = l;
    run_on_gpu<float>(c);
  }
  for (index_t n : {1, 64}) {
    Case c;
    c.l = 1000;
    c.n = n;
    run_on_gpu<float>(c);
  }
  Case fixed;
  fixed.l = 300;
  fixed.variable_B = fixed.variable_C = false;
  fixed.has_z = fixed.has_init = false;
  run_on_gpu<float>(fixed);
  Case packed;
  packed.b = 1;
  packed.cu_seqlens = {0, 0, 1, 131, 2390, 2647};
  packed.l = packed.cu_seqlens.back();
  run_on_gpu<float>(packed);
  Case half_case;
  half_case.l = 3000;
  run_on_gpu<ssm::half>(half_case);
  run_on_gpu<ssm::bfloat16>(half_case);
}

}  // namespace
