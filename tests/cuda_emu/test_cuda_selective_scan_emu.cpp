// The fused selective-scan kernels (cuda/kernels/selective_scan_{fwd,bwd}.cuh) under the host emulation with a
// small configuration (32 threads x 4 items: 128-token chunks), which the launcher never picks for long sequences:
// many chunks at a modest emulation cost, so the state carried from chunk to chunk (forward) and the gradient
// carried back (backward) are checked over up to 40 chunks with ragged tails, in every thread order. The problems
// come from the one generator (tests/conformance/scan_problem.hpp), their ScanParams from ssm::scan_params, and the
// oracle is the library's reference (ScanPath::reference, every sum in double); the saved chunk states are checked
// against the reference's last state of each prefix. The launcher's own configurations, shapes, groups, optional
// inputs, dtypes and packed sequences are tested through the op (test_cuda_ops_emu.cpp, test_conformance).
// The buffers the kernels write live in guarded memory registered with the emulation's global shadow, so a write
// past either end, or a byte two blocks both change other than through atomicAdd (a lost update on a GPU), fails
// the launch, in every block order.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <utility>
#include <string>
#include <vector>

#include "../conformance/scan_problem.hpp"
#include "kernels/launch/selective_scan.cuh"
#include "kernels/selective_scan_bwd.cuh"
#include "kernels/selective_scan_fwd.cuh"

namespace {

using conformance::normalized_error;
using conformance::to_doubles;
using scan_problem::ScanCase;
using scan_problem::ScanData;
using ssm::DType;
using ssm::Tensor;
using ssm::emu::LaunchConfig;
using ssm::emu::Order;
using index_t = std::int64_t;

// The kernels compute in f32 (expf, a tree-shaped scan inside a chunk), the reference in double: 1e-5 of the
// largest |out| (the bound); gradients are sums over up to l tokens and over a group's channels: 1e-4.
constexpr double kOutTolerance = 1e-5, kGradTolerance = 1e-4;

// A host tensor of NaN: an element the kernel does not write fails the comparison.
Tensor nan_tensor(const ssm::Dims& shape) {
  Tensor t = Tensor::empty(shape, DType::f32);
  std::memset(t.data(), 0xff, t.nbytes());
  return t;
}

float* f32(const Tensor& t) { return t.data_as<float>(); }

// t's elements moved into guarded memory registered with the emulation's global shadow
// (cuda/emu/global_memory.hpp) for the new tensor's lifetime: a kernel writing past either end, or two blocks
// changing one byte other than through atomicAdd, fails the launch.
Tensor guarded(const Tensor& t, const char* name) {
  void* p = ssm::emu::allocate_guarded(t.nbytes(), name);
  if (p == nullptr) throw std::bad_alloc();
  std::memcpy(p, t.data(), t.nbytes());
  return Tensor::adopt(ssm::TensorView(p, t.dtype(), ssm::Device::cpu(), t.shape(), t.strides()),
                       std::shared_ptr<void>(p, ssm::emu::FreeGuarded{}));
}

// Runs the forward kernel on one case and checks out, the last state and the saved chunk states against the
// reference; returns the worst normalized error of out.
template <class Cfg>
double run_case(const ScanCase& c, Order order, std::uint64_t seed) {
  SCOPED_TRACE(c.describe() + " order " + ssm::emu::name(order) + " seed " + std::to_string(seed) + " threads " +
               std::to_string(Cfg::kThreads) + " items " + std::to_string(Cfg::kItems));
  scan_problem::Scan scan = scan_problem::make_scan(c);
  const ScanData& s = scan.s;
  const index_t rows = s.state_rows(), n_chunks = std::max<index_t>(1, (c.l + Cfg::kChunk - 1) / Cfg::kChunk);
  const Tensor saved = guarded(nan_tensor({rows, c.d, n_chunks, c.n}), "chunk_states");  // (rows, d, n_chunks, n)
  scan.out = guarded(scan.out, "out");
  scan.last = guarded(scan.last, "last_state");
  scan.prepared.p.out = scan.out.data();
  scan.prepared.p.last_state = scan.last.data();
  LaunchConfig cfg{ssm::emu::dim3(static_cast<unsigned>(c.d), static_cast<unsigned>(rows)), ssm::emu::dim3(Cfg::kThreads),
                   order, seed};
  const auto report = ssm::emu::launch(cfg, ssm::kernels::selective_scan_fwd_kernel<float, Cfg::kThreads, Cfg::kItems>,
                                       scan.prepared.p, ssm::ChunkStates{f32(saved), n_chunks, Cfg::kChunk});
  EXPECT_TRUE(report.ok()) << report.summary();
  if (!report.ok()) return INFINITY;
  const auto ref = scan_problem::reference_forward(s);
  const double worst = normalized_error(to_doubles(scan.out), to_doubles(ref.out));
  EXPECT_LE(worst, kOutTolerance) << "out";
  EXPECT_LE(normalized_error(to_doubles(scan.last), to_doubles(ref.last_state)), kOutTolerance) << "last state";
  // The chunks a shorter packed sequence does not have (NaN in the reference) are not compared.
  const std::vector<double> ref_saved = scan_problem::reference_chunk_states(s, Cfg::kChunk, n_chunks);
  const std::vector<double> all_saved = to_doubles(saved);
  std::vector<double> got_saved, want_saved;
  for (std::size_t i = 0; i < ref_saved.size(); ++i)
    if (!std::isnan(ref_saved[i])) {
      got_saved.push_back(all_saved[i]);
      want_saved.push_back(ref_saved[i]);
    }
  EXPECT_LE(normalized_error(got_saved, want_saved), kOutTolerance) << "the states saved at chunk ends";
  ::testing::Test::RecordProperty("worst_relative_error", std::to_string(worst));
  return worst;
}

using Small = ssm::kernels::ScanFwdConfig<32, 4>;  // 128-token chunks: many chunks at modest emulation cost

const Order kOrders[] = {Order::forward, Order::reverse, Order::random};

TEST(CudaSelectiveScanEmu, LengthsAcrossChunkBoundaries) {
  for (index_t l : {1, 31, 2047, 2048, 2049, 5000}) {
    ScanCase c = scan_problem::kernel_case(l);
    c.b = 1;  // batch > 1 and several channels are covered below and through the op; this keeps the ASan run short
    c.d = 1;
    c.g = 1;
    for (Order o : kOrders) run_case<Small>(c, o, 7);
  }
}

TEST(CudaSelectiveScanEmu, BatchGroupsAndPackedSequences) {
  run_case<Small>(scan_problem::kernel_case(300), Order::random, 3);  // b = 2, d = 4, g = 2
  ScanCase c = scan_problem::kernel_case(700);
  c.b = 1;
  c.cu = {0, 1, 129, 300, 700};  // a one-token sequence, one ending on a chunk boundary, ragged tails
  for (Order o : kOrders) run_case<Small>(c, o, 11);
}

// The saved states are ChunkStates on the device as on the CPU: a launch given states of another chunk length or
// count than its configuration's (the CPU's 128-step chunks at l = 300, where the kernel takes 1024) is an error
// naming chunk_states, in both directions, before anything is written.
TEST(CudaSelectiveScanEmu, ChunkStatesOfAnotherLayoutAreRefused) {
  const scan_problem::Scan scan = scan_problem::make_scan(scan_problem::kernel_case(300));
  float dummy = 0;
  const ssm::ChunkStates device = ssm::kernels::scan_chunk_layout(300);
  EXPECT_EQ(device.n_chunks, 1);
  EXPECT_EQ(device.chunk_len, 1024);
  const auto error = [&](const ssm::ChunkStates& cs, bool forward) -> std::string {
    try {
      if (forward) {
        ssm::ScanForwardOptions o;
        o.chunk_states = cs;
        (void)ssm::kernels::check_scan_forward(scan.prepared.p, DType::f32, o, "forward");
      } else {
        ssm::ScanDeviceGradParams g;
        g.grad_out = g.grad_u = g.grad_delta = g.grad_z = &dummy;
        g.grad_A = g.grad_B = g.grad_C = &dummy;
        g.chunk_states = cs;
        (void)ssm::kernels::check_scan_backward(scan.prepared.p, DType::f32, g, "backward");
      }
    } catch (const ssm::Error& e) {
      return e.what();
    }
    return "no error";
  };
  const ssm::ChunkStates cpu{&dummy, ssm::ChunkStates::count(300, ssm::kCpuScanChunkLen), ssm::kCpuScanChunkLen};
  for (bool forward : {true, false}) {
    EXPECT_EQ(error({&dummy, device.n_chunks, device.chunk_len}, forward), "no error");
    const std::string e = error(cpu, forward);
    EXPECT_NE(e.find("argument 'chunk_states': the kernel's chunks for sequences of up to 300 tokens are 1 of 1024 "
                     "steps (selective_scan_chunk_states(300)), got n_chunks = 3, chunk_len = 128"),
              std::string::npos)
        << e;
    EXPECT_NE(error({&dummy, 1, 128}, forward).find("got n_chunks = 1, chunk_len = 128"), std::string::npos);
  }
  EXPECT_NE(error({}, false).find("'chunk_states': the states the forward saved are needed"), std::string::npos);
  EXPECT_EQ(error({}, true), "no error");  // the forward saves none
}

// ---- backward ----

// Runs the forward then the backward kernel on one case; every gradient against the reference backward. Returns
// the worst normalized gradient error.
template <class Cfg>
double run_backward_case(const ScanCase& c, Order order, std::uint64_t seed) {
  using Bwd = ssm::kernels::ScanBwdConfig<Cfg>;
  static_assert(Bwd::kChunk == Cfg::kChunk);
  SCOPED_TRACE(c.describe() + " backward, order " + ssm::emu::name(order) + " threads " + std::to_string(Bwd::kThreads));
  scan_problem::Scan scan = scan_problem::make_scan(c);
  const index_t b = c.b, d = c.d, l = c.l, n = c.n;
  const index_t n_chunks = std::max<index_t>(1, (l + Cfg::kChunk - 1) / Cfg::kChunk);
  const Tensor saved = guarded(nan_tensor({b, d, n_chunks, n}), "chunk_states");
  scan.out = guarded(scan.out, "out");
  scan.last = guarded(scan.last, "last_state");
  scan.prepared.p.out = scan.out.data();
  scan.prepared.p.last_state = scan.last.data();
  LaunchConfig fwd{ssm::emu::dim3(static_cast<unsigned>(d), static_cast<unsigned>(b)), ssm::emu::dim3(Cfg::kThreads),
                   order, seed};
  auto report = ssm::emu::launch(fwd, ssm::kernels::selective_scan_fwd_kernel<float, Cfg::kThreads, Cfg::kItems>,
                                 scan.prepared.p, ssm::ChunkStates{f32(saved), n_chunks, Cfg::kChunk});
  EXPECT_TRUE(report.ok()) << report.summary();
  if (!report.ok()) return INFINITY;

  scan_problem::KernelGrads grads = scan_problem::make_kernel_grads(c, ssm::Device::cpu());
  for (auto [t, name] : {std::pair{&grads.u, "grad_u"}, {&grads.delta, "grad_delta"}, {&grads.z, "grad_z"},
                         {&grads.A, "grad_A"}, {&grads.B, "grad_B"}, {&grads.C, "grad_C"}, {&grads.D, "grad_D"},
                         {&grads.delta_bias, "grad_delta_bias"}, {&grads.initial_state, "grad_initial_state"}})
    *t = guarded(*t, name);
  LaunchConfig bwd{ssm::emu::dim3(static_cast<unsigned>(d), static_cast<unsigned>(b)), ssm::emu::dim3(Bwd::kThreads),
                   order, seed};
  report = ssm::emu::launch(bwd, ssm::kernels::selective_scan_bwd_kernel<float, Bwd::kThreads, Bwd::kItems>,
                            scan.prepared.p, grads.params(saved, n_chunks, Cfg::kChunk));
  EXPECT_TRUE(report.ok()) << report.summary();
  if (!report.ok()) return INFINITY;

  double worst = 0;
  for (const auto& [name, error] : grads.errors_against_reference(scan.s)) {
    EXPECT_LE(error, kGradTolerance) << name;
    worst = std::max(worst, error);
  }
  ::testing::Test::RecordProperty("worst_grad_relative_error", std::to_string(worst));
  return worst;
}

TEST(CudaSelectiveScanEmuBackward, LengthsAndStateSizes) {
  for (index_t l : {1, 31, 2047, 2048, 2049, 5000}) {
    ScanCase c = scan_problem::kernel_case(l);
    c.b = 1;
    c.d = 1;
    c.g = 1;
    c.n = l > 2049 ? 4 : 16;
    for (Order o : kOrders) {
      // 2047, 2048 and 5000 in one (random) order: the ASan run's time budget; the other lengths in all three.
      if ((l == 2047 || l == 2048 || l > 2049) && o != Order::random) continue;
      run_backward_case<Small>(c, o, 7);
    }
  }
  for (index_t n : {1, 64}) {
    ScanCase c = scan_problem::kernel_case(300);
    c.n = n;
    c.d = 2;
    c.g = 2;
    run_backward_case<Small>(c, Order::random, 5);
  }
  // Two channels per group and two batch rows: the blocks of a group add into one grad_B / grad_C row and the blocks
  // of a channel into one grad_A / grad_D entry (atomicAdd on a GPU), in all three block orders.
  for (Order o : kOrders) run_backward_case<Small>(scan_problem::kernel_case(200), o, 9);
}

}  // namespace
