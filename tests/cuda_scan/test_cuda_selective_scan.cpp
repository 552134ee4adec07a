// ssm::cuda::selective_scan_forward (the fused kernel's host API): what it rejects (with ssm::Error naming the
// limit), the runtime's message when no GPU is usable, and, on a GPU, the kernel against the double loop for
// f32 / f16 / bf16, ragged lengths, groups, fixed B / C, packed sequences, chunk-boundary states.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <ssm/ssm.hpp>

#include "../conformance/scan_problem.hpp"
#include "ssm/cuda/causal_conv1d.hpp"
#include "ssm/ops/selective_scan.hpp"
#include "ssm/cuda/runtime.hpp"
#include "ssm/cuda/selective_scan.hpp"

namespace {

using conformance::normalized_error;
using conformance::to_doubles;
using scan_problem::ScanCase;
using scan_problem::ScanData;
using ssm::DType;
using ssm::Tensor;
using ssm::TensorView;
using index_t = std::int64_t;

using scan_problem::Scan;
using scan_problem::make_scan;

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
  const Scan prob = make_scan(scan_problem::kernel_case(10));
  EXPECT_NE(error_of(prob.prepared.p, ssm::DType::f64).find("input dtype must be f32, f16 or bf16 on CUDA, got f64"),
            std::string::npos)
      << error_of(prob.prepared.p, ssm::DType::f64);
  ssm::ScanParams p = prob.prepared.p;
  p.is_complex = true;
  EXPECT_NE(error_of(p, ssm::DType::f32).find("complex A"), std::string::npos);
  p = prob.prepared.p;
  p.dstate = 257;
  EXPECT_NE(error_of(p, ssm::DType::f32).find("state size n must be in [1, 256], got 257"), std::string::npos);
  p = prob.prepared.p;
  p.n_groups = 3;
  EXPECT_NE(error_of(p, ssm::DType::f32).find("multiple of the number of groups g (3)"), std::string::npos);
  p = prob.prepared.p;
  p.out = nullptr;
  EXPECT_NE(error_of(p, ssm::DType::f32).find("must be set"), std::string::npos);
  p = prob.prepared.p;
  std::vector<std::int64_t> cu = {0, 5, 10};
  p.cu_seqlens = cu.data();
  p.n_seqs = 2;
  EXPECT_NE(error_of(p, ssm::DType::f32).find("cu_seqlens needs b == 1, got b = 2"), std::string::npos);
  p = prob.prepared.p;
  p.seqlen = index_t{1} << 31;
  EXPECT_NE(error_of(p, ssm::DType::f32).find("l must be below 2^31"), std::string::npos);
}

TEST(CudaSelectiveScan, BackwardRejectsWhatItDoesNotSupport) {
  const Scan prob = make_scan(scan_problem::kernel_case(10));
  float dummy = 0;
  ssm::ScanDeviceGradParams g;
  g.grad_out = g.grad_u = g.grad_delta = g.grad_z = &dummy;
  g.grad_A = g.grad_B = g.grad_C = &dummy;
  g.chunk_states = {&dummy, 1, 128};  // l = 10: one chunk of the 128-token configuration
  auto error = [&](const ssm::ScanParams& p, const ssm::ScanDeviceGradParams& gg) -> std::string {
    try {
      ssm::cuda::selective_scan_backward(p, ssm::DType::f32, gg);
    } catch (const ssm::Error& e) {
      return e.what();
    }
    return "no error";
  };
  ssm::ScanParams p = prob.prepared.p;
  std::vector<std::int64_t> cu = {0, 10};
  p.cu_seqlens = cu.data();
  p.n_seqs = 1;
  p.batch = 1;
  g.max_seqlen = 11;
  EXPECT_NE(error(p, g).find("max_seqlen must be in [0, l = 10] (0: l), got 11"), std::string::npos)
      << error(p, g);
  g.max_seqlen = 10;
  p.batch = 2;
  EXPECT_NE(error(p, g).find("cu_seqlens needs b == 1, got b = 2"), std::string::npos) << error(p, g);
  g.max_seqlen = 0;
  ssm::ScanDeviceGradParams g2 = g;
  g2.chunk_states.n_chunks = 3;
  EXPECT_NE(error(prob.prepared.p, g2).find("'chunk_states': the kernel's chunks for sequences of up to 10 tokens are "
                                            "1 of 128 steps (selective_scan_chunk_states(10)), got n_chunks = 3, "
                                            "chunk_len = 128"),
            std::string::npos)
      << error(prob.prepared.p, g2);
  g2 = g;
  g2.chunk_states.chunk_len = 1024;  // one chunk, but of another configuration
  EXPECT_NE(error(prob.prepared.p, g2).find("got n_chunks = 1, chunk_len = 1024"), std::string::npos)
      << error(prob.prepared.p, g2);
  g2 = g;
  g2.grad_z = nullptr;
  EXPECT_NE(error(prob.prepared.p, g2).find("grad_z must be set when z is given"), std::string::npos);
  // Valid arguments pass the checks and reach the runtime. Only without a GPU: on one, these host pointers would be
  // handed to a kernel (the first GPU run found this test faulting the context for the tests after it).
  if (!gpu_usable()) {
    EXPECT_NE(error(prob.prepared.p, g).find("CUDA runtime error"), std::string::npos);
  }
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
  const Scan prob = make_scan(scan_problem::kernel_case(10));
  const std::string msg = error_of(prob.prepared.p, ssm::DType::f32);
  EXPECT_NE(msg.find("CUDA runtime error in cudaGetDeviceCount"), std::string::npos) << msg;
}

TEST(CudaSelectiveScan, ChunkGeometry) {
  EXPECT_EQ(ssm::cuda::selective_scan_chunk_len(1), 128);
  EXPECT_EQ(ssm::cuda::selective_scan_chunk_len(129), 1024);
  EXPECT_EQ(ssm::cuda::selective_scan_chunk_len(5000), 2048);
  EXPECT_EQ(ssm::cuda::selective_scan_chunk_count(0), 1);
  EXPECT_EQ(ssm::cuda::selective_scan_chunk_count(4096), 2);
  EXPECT_EQ(ssm::cuda::selective_scan_chunk_count(4097), 3);
  const ssm::ChunkStates layout = ssm::cuda::selective_scan_chunk_states(4097);
  EXPECT_EQ(layout.data, nullptr);
  EXPECT_EQ(layout.n_chunks, 3);
  EXPECT_EQ(layout.chunk_len, 2048);
}

// The fused forward through ssm::cuda with the launcher's own chunking: out, the last state and the states saved at
// chunk ends against the reference (every sum in double, output rounded to the input dtype: up to one unit in the
// last place of the largest output apart for f16 / bf16).
void run_on_gpu(const ScanCase& c) {
  SCOPED_TRACE(c.describe());
  const Scan scan = make_scan(c, ssm::Device::cuda(0));
  index_t max_len = c.l;
  if (!c.cu.empty()) {
    max_len = 0;
    for (std::size_t i = 1; i < c.cu.size(); ++i) max_len = std::max<index_t>(max_len, c.cu[i] - c.cu[i - 1]);
  }
  const index_t chunk = ssm::cuda::selective_scan_chunk_len(max_len);
  const index_t n_chunks = ssm::cuda::selective_scan_chunk_count(max_len);
  const Tensor saved = Tensor::zeros({scan.s.state_rows(), c.d, n_chunks, c.n}, DType::f32, ssm::Device::cuda(0));
  ssm::ScanForwardOptions opt;
  opt.chunk_states = {saved.data(), n_chunks, chunk};
  opt.max_seqlen = max_len;
  EXPECT_EQ(ssm::cuda::selective_scan_forward(scan.prepared.p, c.dtype, opt), "cuda-fused");
  const double tol = c.dtype == DType::f32 ? 1e-5 : 1e-5 + std::ldexp(1.0, c.dtype == DType::f16 ? -10 : -7);
  const auto ref = scan_problem::reference_forward(scan.s);
  const double worst = normalized_error(to_doubles(scan.out.to(ssm::Device::cpu())), to_doubles(ref.out));
  EXPECT_LE(worst, tol) << "out";
  EXPECT_LE(normalized_error(to_doubles(scan.last.to(ssm::Device::cpu())), to_doubles(ref.last_state)), 1e-5)
      << "last state";
  const std::vector<double> got = to_doubles(saved.to(ssm::Device::cpu()));
  const std::vector<double> want = scan_problem::reference_chunk_states(scan.s, chunk, n_chunks);
  std::vector<double> got_present, want_present;  // the chunks a shorter packed sequence has not are not compared
  for (std::size_t i = 0; i < want.size(); ++i)
    if (!std::isnan(want[i])) {
      got_present.push_back(got[i]);
      want_present.push_back(want[i]);
    }
  EXPECT_LE(normalized_error(got_present, want_present), 1e-5) << "the states saved at chunk ends";
  std::printf("%s: worst |out - reference| / max |reference| %.3g\n", c.describe().c_str(), worst);
}

// Forward with saved chunk states, then backward, against the reference backward (grads <= 1e-4 of the largest
// reference entry, as in the emulated tests).
void run_backward_on_gpu(const ScanCase& c) {
  SCOPED_TRACE(c.describe() + " backward");
  const ssm::Device gpu = ssm::Device::cuda(0);
  const Scan scan = make_scan(c, gpu);
  const ssm::ChunkStates layout = ssm::cuda::selective_scan_chunk_states(c.l);
  const Tensor saved = Tensor::zeros({c.b, c.d, layout.n_chunks, c.n}, DType::f32, gpu);
  ssm::ScanForwardOptions opt;
  opt.chunk_states = {saved.data(), layout.n_chunks, layout.chunk_len};
  (void)ssm::cuda::selective_scan_forward(scan.prepared.p, DType::f32, opt);
  const scan_problem::KernelGrads grads = scan_problem::make_kernel_grads(c, gpu);
  ssm::cuda::selective_scan_backward(scan.prepared.p, DType::f32,
                                     grads.params(saved, layout.n_chunks, layout.chunk_len));
  for (const auto& [name, error] : grads.errors_against_reference(scan.s)) EXPECT_LE(error, 1e-4) << name;
}

TEST(CudaSelectiveScan, BackwardMatchesTheReferenceOnTheGpu) {
  if (!gpu_usable()) GTEST_SKIP() << "no usable GPU: " << ssm::backends().cuda_status;
  for (index_t l : {1, 2049, 5000}) run_backward_on_gpu(scan_problem::kernel_case(l));
}

TEST(CudaSelectiveScan, MatchesTheReferenceOnTheGpu) {
  if (!gpu_usable()) GTEST_SKIP() << "no usable GPU: " << ssm::backends().cuda_status;
  for (index_t l : {1, 31, 2047, 2048, 2049, 5000}) run_on_gpu(scan_problem::kernel_case(l));
  for (index_t n : {1, 64}) {
    ScanCase c = scan_problem::kernel_case(1000);
    c.n = n;
    run_on_gpu(c);
  }
  ScanCase fixed = scan_problem::kernel_case(300);
  fixed.var_B = fixed.var_C = false;
  fixed.has_z = fixed.has_init = false;
  run_on_gpu(fixed);
  ScanCase packed = scan_problem::kernel_case(2647);
  packed.b = 1;
  packed.cu = {0, 1, 131, 2390, 2647};
  run_on_gpu(packed);
  for (DType t : {DType::f16, DType::bf16}) run_on_gpu(scan_problem::kernel_case(3000, t));
}

}  // namespace
