// The mixture of experts' CUDA kernels (cuda/kernels/moe.cuh, launches kernels/launch/moe.cuh) under the host
// emulation: the public op on CUDA tensors with the emulated backend installed, against the op's token loop in double
// on CPU tensors. Shapes across the GEMM tiles (64 rows, 64 columns, 16 along the reduction) with ragged tails, experts
// with no tokens, every expert chosen, ties in the routing, strided rows, token slices of the workspace, random thread
// orders (the emulation's race detector sees each launch in that order) and the same bits in every order.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../conformance/values.hpp"
#include "../support/expect_error.hpp"
#include "emu/backend.hpp"
#include "emu/launchers.hpp"
#include "ssm/ops/moe.hpp"

namespace {

using ssm::Device;
using ssm::DType;
using ssm::Tensor;
using ssm::emu::Order;
using ssm::emu::ScopedEmulatedCuda;
using index_t = std::int64_t;

const Device kCuda = Device::cuda(0);

struct MoeCase {
  index_t t, H, I, E, k;
  bool normalize = false;
  DType x = DType::f32, w = DType::f32;
  index_t pad = 0;  // > 0: x and out rows pad elements apart beyond H
  ssm::MoeActivation act = ssm::MoeActivation::silu;
  std::string str() const {
    return "t=" + std::to_string(t) + " H=" + std::to_string(H) + " I=" + std::to_string(I) + " E=" +
           std::to_string(E) + " k=" + std::to_string(k) + (normalize ? " normalized" : "") + " x " + std::string(name(x)) + " W " +
           std::string(name(w)) + (pad ? " strided" : "");
  }
};

/// A (rows, cols) view on `device` over `owner`'s storage with rows cols + pad apart (the strides of a padded_copy).
ssm::TensorView rows_view(const Tensor& owner, Device device, DType dt, index_t rows, index_t cols, index_t pad) {
  return ssm::TensorView(const_cast<void*>(owner.data()), dt, device, {rows, cols}, {cols + pad, 1});
}

std::vector<double> doubles(const Tensor& host) { return conformance::to_doubles(host.view()); }

double rel_err(const std::vector<double>& got, const std::vector<double>& want) {
  return conformance::normalized_error(got, want);
}

struct Problem {
  Tensor x, router, w_gate_up, w_down;
};

Problem make(const MoeCase& c, std::uint32_t seed, double router_scale = 1) {
  using conformance::uniform;
  std::mt19937_64 rng(seed);
  Problem p;
  p.x = uniform(rng, {c.t, c.H}, c.x, -1, 1);                                               // (t, H)
  p.router = router_scale > 0 ? uniform(rng, {c.E, c.H}, c.w, -router_scale, router_scale)  // (E, H)
                              : Tensor::zeros({c.E, c.H}, c.w);
  p.w_gate_up = uniform(rng, {c.E, 2 * c.I, c.H}, c.w, -1, 1);                             // (E, 2I, H)
  p.w_down = uniform(rng, {c.E, c.H, c.I}, c.w, -1, 1);                                    // (E, H, I)
  return p;
}

ssm::MoeOptions options(const MoeCase& c, ssm::MoePath path) {
  ssm::MoeOptions o;
  o.top_k = c.k, o.normalize_topk = c.normalize, o.act = c.act, o.path = path;
  return o;
}

/// The problem's tensors on the emulated device (kept alive by the struct).
struct OnDevice {
  Tensor x, router, w_gate_up, w_down;
  explicit OnDevice(const Problem& p)
      : x(p.x.to(kCuda)), router(p.router.to(kCuda)), w_gate_up(p.w_gate_up.to(kCuda)), w_down(p.w_down.to(kCuda)) {}
  ssm::MoeInputs inputs() const { return {x.view(), router.view(), w_gate_up.view(), w_down.view()}; }
};

struct Result {
  std::vector<double> out, logits;
};

/// The op on CPU tensors on the reference path (loops in double).
Result reference(const MoeCase& c, const Problem& p) {
  Tensor out = Tensor::empty({c.t, c.H}, c.x), logits = Tensor::empty({c.t, c.E}, c.x);
  EXPECT_EQ(ssm::moe_into({p.x.view(), p.router.view(), p.w_gate_up.view(), p.w_down.view()}, out.view(), logits.view(),
                          options(c, ssm::MoePath::reference)),
            "reference");
  return {doubles(out), doubles(logits)};
}

/// The op on emulated CUDA tensors (x and out strided when c.pad), in the given thread order.
Result on_cuda(const MoeCase& c, const Problem& p, Order order, std::uint64_t seed) {
  ScopedEmulatedCuda guard(order, seed);
  Tensor x_owner;
  (void)conformance::padded_copy(p.x, c.pad, x_owner);  // NaN between the rows
  const Tensor x_dev = x_owner.to(kCuda);
  const Tensor router = p.router.to(kCuda), w_gate_up = p.w_gate_up.to(kCuda), w_down = p.w_down.to(kCuda);
  const Tensor out_dev = Tensor::empty({std::max<index_t>(c.t * (c.H + c.pad), 1)}, c.x, kCuda);
  const Tensor logits = Tensor::empty({c.t, c.E}, c.x, kCuda);
  EXPECT_EQ(ssm::moe_into({rows_view(x_dev, kCuda, c.x, c.t, c.H, c.pad), router.view(), w_gate_up.view(), w_down.view()},
                          rows_view(out_dev, kCuda, c.x, c.t, c.H, c.pad), logits.view(),
                          options(c, ssm::MoePath::automatic)),
            "cuda");
  const Tensor out_host = out_dev.to(Device::cpu());
  Tensor out = Tensor::empty({c.t, c.H}, c.x);
  ssm::copy(out.view(), rows_view(out_host, Device::cpu(), c.x, c.t, c.H, c.pad));
  return {doubles(out), doubles(logits.to(Device::cpu()))};
}

/// f32: sums of up to 2I + H products in f32 and the softmax in f32 against double; f64: reassociation only.
double tolerance(DType x) { return x == DType::f64 ? 1e-12 : 2e-5; }

void check(const MoeCase& c, std::uint32_t seed, Order order = Order::random, double router_scale = 1) {
  SCOPED_TRACE(c.str());
  const Problem p = make(c, seed, router_scale);
  const Result want = reference(c, p), got = on_cuda(c, p, order, seed);
  EXPECT_LE(rel_err(got.out, want.out), tolerance(c.x));
  EXPECT_LE(rel_err(got.logits, want.logits), tolerance(c.x));
}

TEST(CudaMoeEmu, ForwardAcrossTiles) {
  // t = 130 with E = 2, k = 2: both experts take all 130 tokens, three row tiles each, and the grouping ranks 260 pairs
  // in two tiles of its block scan; H = 70: two column tiles of the down GEMM and a ragged reduction (70 = 4 · 16 + 6)
  // in the gate/up GEMM; I = 20 one column tile, a ragged reduction.
  check({130, 70, 20, 2, 2, false}, 1);
  check({70, 70, 20, 2, 2, true, DType::f64, DType::f64}, 2);
  // I = 65: the gate/up GEMM's two column tiles (the second one column wide) and the down GEMM's reduction 65.
  check({37, 24, 65, 5, 2, true}, 3);
}

TEST(CudaMoeEmu, SixteenBitWeightsAndActivations) {
  check({29, 40, 18, 6, 2, false, DType::f32, DType::bf16}, 4);
  check({29, 40, 18, 6, 3, true, DType::f32, DType::f16}, 5);
  MoeCase gelu{17, 20, 9, 4, 2, false, DType::f64, DType::f64};
  gelu.act = ssm::MoeActivation::gelu;
  check(gelu, 6);
  gelu.act = ssm::MoeActivation::gelu_tanh, gelu.x = gelu.w = DType::f32;
  check(gelu, 7);
}

TEST(CudaMoeEmu, RoutingEdges) {
  check({1, 19, 13, 4, 2, false, DType::f32, DType::f32, 3}, 8);  // one token (decoding), strided rows
  check({3, 16, 8, 8, 1, true}, 9);                                // top-1 of 8 for 3 tokens: at least 5 experts idle
  check({40, 17, 9, 5, 5, false, DType::f64, DType::f64, 2}, 10);  // every expert chosen, strided
  check({5, 6, 3, 1, 1, false}, 11);                               // one expert: its weight is 1
  // A zero router: every logit 0, every probability 1 / E; the ties go to the lowest experts, as on the CPU.
  check({9, 12, 7, 6, 3, false}, 12, Order::random, 0.0);
}

TEST(CudaMoeEmu, SameBitsInEveryThreadOrder) {
  // No atomics: each output element is written once by one block, with sums in a fixed order, so the thread order
  // (and, on a GPU, the order blocks run) does not change a bit.
  const MoeCase c{45, 33, 21, 7, 3, true};
  const Problem p = make(c, 13);
  const Result a = on_cuda(c, p, Order::forward, 1), b = on_cuda(c, p, Order::reverse, 1),
               r = on_cuda(c, p, Order::random, 99);
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(a.out, r.out);
  EXPECT_EQ(a.logits, r.logits);
}

/// The launches of kernels/launch/moe.cuh run directly over an emulated executor, with the workspace poisoned (0xff:
/// NaN in every float, −1 in every index) so that a slot left unwritten shows.
struct DirectRun {
  ssm::kernels::MoePlan plan;
  std::vector<unsigned char> workspace;  // its bytes after the last slice
  std::int64_t launches = 0;
};

DirectRun run_launches(const ssm::MoeParams& mp, std::size_t budget) {
  DirectRun r;
  r.plan = ssm::kernels::plan_moe(mp, "test", budget);
  ssm::emu::HostExecutor exec(Order::random, 5);
  void* base = exec.allocate(r.plan.bytes);
  std::memset(base, 0xff, r.plan.bytes);
  ssm::kernels::moe_forward_launches(exec, mp, r.plan, base);
  r.launches = exec.launches();
  r.workspace.resize(r.plan.bytes);
  exec.download(r.workspace.data(), base, r.plan.bytes);
  return r;
}

TEST(CudaMoeEmu, RoutingAndGroupingEqualTheCpuRule) {
  // One slice: the routing (pair_expert, pair_weight) against moe_route in double on the same logits, choice by
  // choice in its order; the grouping (sorted, offsets) against a stable counting sort of those choices. E = 70: the
  // router GEMM's second column tile; top-1 of 70 over 300 tokens: sparse flags over two tiles of the grouping's scan.
  for (const MoeCase& c : {MoeCase{300, 24, 8, 70, 1, false}, MoeCase{57, 20, 6, 9, 3, true, DType::f64, DType::f64}}) {
    SCOPED_TRACE(c.str());
    const Problem p = make(c, 21, 3.0);
    ScopedEmulatedCuda guard(Order::random, 6);
    const OnDevice d(p);
    const Tensor out = Tensor::empty({c.t, c.H}, c.x, kCuda), logits = Tensor::empty({c.t, c.E}, c.x, kCuda);
    const ssm::MoeParams mp = ssm::detail::check_moe(ssm::Checker("moe"), d.inputs(), out.view(), logits.view(),
                                                     options(c, ssm::MoePath::automatic));
    const DirectRun r = run_launches(mp, ssm::kernels::kMoeWorkspaceBudget);
    ASSERT_EQ(r.plan.slice_tokens, c.t);
    const std::vector<double> lg = doubles(logits.to(Device::cpu()));
    const auto* expert = reinterpret_cast<const std::int32_t*>(r.workspace.data() + r.plan.pair_expert_offset);
    const auto* sorted = reinterpret_cast<const std::int32_t*>(r.workspace.data() + r.plan.sorted_offset);
    const auto* offsets = reinterpret_cast<const std::int32_t*>(r.workspace.data() + r.plan.offsets_offset);
    const unsigned char* weight = r.workspace.data() + r.plan.pair_weight_offset;
    std::vector<std::vector<std::int32_t>> by_expert(static_cast<std::size_t>(c.E));
    std::vector<std::int64_t> e_ref(static_cast<std::size_t>(c.k));
    std::vector<double> w_ref(static_cast<std::size_t>(c.k));
    for (index_t j = 0; j < c.t; ++j) {
      ssm::moe_route(lg.data() + j * c.E, c.E, c.k, c.normalize, e_ref.data(), w_ref.data());
      for (index_t i = 0; i < c.k; ++i) {
        const index_t pair = j * c.k + i;
        ASSERT_EQ(expert[pair], e_ref[static_cast<std::size_t>(i)]) << "token " << j << " choice " << i;
        double w = 0;
        if (c.x == DType::f64) std::memcpy(&w, weight + pair * 8, 8);
        else {
          float f = 0;
          std::memcpy(&f, weight + pair * 4, 4);
          w = f;
        }
        EXPECT_NEAR(w, w_ref[static_cast<std::size_t>(i)], c.x == DType::f64 ? 1e-14 : 1e-6);
        by_expert[static_cast<std::size_t>(expert[pair])].push_back(static_cast<std::int32_t>(pair));
      }
    }
    std::int32_t at = 0;
    for (index_t e = 0; e < c.E; ++e) {
      ASSERT_EQ(offsets[e], at) << "expert " << e;
      for (std::int32_t pair : by_expert[static_cast<std::size_t>(e)]) ASSERT_EQ(sorted[at++], pair) << "expert " << e;
    }
    EXPECT_EQ(offsets[c.E], c.t * c.k);
    const Result want = reference(c, p);
    EXPECT_LE(rel_err(doubles(out.to(Device::cpu())), want.out), tolerance(c.x));
  }
}

TEST(CudaMoeEmu, TokensInSlicesOfTheWorkspace) {
  // A budget of 2600 bytes: slices of a few tokens, so the 23 tokens take several slices (the last one short), each
  // with its own routing and grouping, written to its rows of out and of the router logits; x and out strided, so a
  // slice that stepped by d_model instead of the row stride would read and write the wrong rows.
  const MoeCase c{23, 10, 6, 3, 2, true, DType::f32, DType::f32, 3};
  const Problem p = make(c, 14);
  const Result want = reference(c, p);
  ScopedEmulatedCuda guard(Order::random, 3);
  const OnDevice d(p);
  Tensor x_owner;
  (void)conformance::padded_copy(p.x, c.pad, x_owner);
  const Tensor x_dev = x_owner.to(kCuda), out_dev = Tensor::empty({c.t * (c.H + c.pad)}, c.x, kCuda);
  const Tensor logits = Tensor::empty({c.t, c.E}, c.x, kCuda);
  const ssm::MoeParams mp = ssm::detail::check_moe(
      ssm::Checker("moe"),
      {rows_view(x_dev, kCuda, c.x, c.t, c.H, c.pad), d.router.view(), d.w_gate_up.view(), d.w_down.view()},
      rows_view(out_dev, kCuda, c.x, c.t, c.H, c.pad), logits.view(), options(c, ssm::MoePath::automatic));
  const DirectRun r = run_launches(mp, 2600);
  ASSERT_GE(r.plan.slice_tokens, 2);
  ASSERT_LT(r.plan.slice_tokens * 3, c.t) << "at least three slices";
  ASSERT_NE(c.t % r.plan.slice_tokens, 0) << "a short last slice";
  EXPECT_LE(r.plan.bytes, 2600u) << "the workspace within its budget";
  EXPECT_EQ(r.launches, 6 * ((c.t + r.plan.slice_tokens - 1) / r.plan.slice_tokens));
  const Tensor out_host = out_dev.to(Device::cpu());
  Tensor out = Tensor::empty({c.t, c.H}, c.x);
  ssm::copy(out.view(), rows_view(out_host, Device::cpu(), c.x, c.t, c.H, c.pad));
  EXPECT_LE(rel_err(doubles(out), want.out), 2e-5);
  EXPECT_LE(rel_err(doubles(logits.to(Device::cpu())), want.logits), 2e-5);
}

TEST(CudaMoeEmu, WithoutRouterLogits) {
  // The default call: the router's outputs go to the workspace instead of the caller's tensor.
  const MoeCase c{41, 18, 11, 6, 2, false};
  const Problem p = make(c, 22);
  const Result want = reference(c, p);
  ScopedEmulatedCuda guard(Order::random, 8);
  const OnDevice d(p);
  const Tensor out = Tensor::empty({c.t, c.H}, c.x, kCuda);
  EXPECT_EQ(ssm::moe_into(d.inputs(), out.view(), std::nullopt, options(c, ssm::MoePath::automatic)), "cuda");
  EXPECT_LE(rel_err(doubles(out.to(Device::cpu())), want.out), 2e-5);
}

TEST(CudaMoeEmu, NoTokensAndTheAllocatingForm) {
  ScopedEmulatedCuda guard(Order::random, 4);
  const MoeCase c{0, 8, 4, 3, 2, false};
  const Problem p = make(c, 15);
  const ssm::MoeOutputs r = ssm::moe(OnDevice(p).inputs(), options(c, ssm::MoePath::automatic));
  EXPECT_EQ(r.path, "cuda");
  EXPECT_EQ(r.out.device(), kCuda);
  EXPECT_EQ(r.out.size(0), 0);
  // The allocating form with tokens: out and the router logits on the device.
  const MoeCase d{6, 8, 4, 3, 2, false};
  const Problem q = make(d, 16);
  const ssm::MoeOutputs s = ssm::moe(OnDevice(q).inputs(), options(d, ssm::MoePath::automatic));
  EXPECT_EQ(s.out.device(), kCuda);
  EXPECT_EQ(s.router_logits.device(), kCuda);
  const Result want = reference(d, q);
  EXPECT_LE(rel_err(doubles(s.out.to(Device::cpu())), want.out), 2e-5);
}

TEST(CudaMoeEmu, RefusesWhatTheKernelsDoNotRun) {
  using ssm_test::expect_arg_error;
  using ssm_test::expect_error;
  ScopedEmulatedCuda guard;
  const MoeCase c{4, 8, 4, 3, 2, false};
  const Problem p = make(c, 17);
  const OnDevice d(p);
  const ssm::MoeInputs in = d.inputs();
  // The reference path is the CPU's.
  expect_arg_error("path", [&] { (void)ssm::moe(in, options(c, ssm::MoePath::reference)); });
  // The backward has no CUDA path: the error names x and says so.
  const Tensor g = Tensor::zeros({c.t, c.H}, DType::f32, kCuda);
  expect_error([&] { (void)ssm::moe_backward(in, g.view(), std::nullopt, options(c, ssm::MoePath::automatic)); },
               {"moe_backward", "argument 'x'", "CUDA"});
  // Tensors on two devices.
  expect_error([&] { (void)ssm::moe({p.x.view(), in.router, in.w_gate_up, in.w_down}, options(c, ssm::MoePath::automatic)); },
               {"moe", "router"});
  // The launcher's own limits, for callers of the backend entry: overlapping rows of out, a dtype it has no kernel for.
  const Tensor out = Tensor::empty({c.t, c.H}, DType::f32, kCuda);
  ssm::MoeParams mp =
      ssm::detail::check_moe(ssm::Checker("moe"), in, out.view(), std::nullopt, options(c, ssm::MoePath::automatic));
  mp.out_row_stride = 1;
  expect_error([&] { (void)ssm::kernels::plan_moe(mp, "ssm::cuda::moe_forward"); }, {"moe_forward", "may not overlap"});
  mp.out_row_stride = c.H, mp.dtype = DType::f16;
  expect_error([&] { (void)ssm::kernels::plan_moe(mp, "ssm::cuda::moe_forward"); }, {"moe_forward", "f32 or f64"});
}

}  // namespace
