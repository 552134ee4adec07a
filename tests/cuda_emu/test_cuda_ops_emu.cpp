// The public ops on CUDA tensors with the emulated CUDA backend installed (cuda/emu/backend.hpp): the op code,
// the argument blocks it fills, the launch headers ssm::cuda compiles (checks, configuration, grid, dtype dispatch)
// and the kernels, each launch under the host emulation — against the same op on CPU tensors on the reference
// path (the scan: ScanPath::reference; conv1d: the op's CPU loops in f64; attention: reference/attention.hpp).
// Awkward shapes (l across the launcher's configurations and chunk boundaries, d = 1, odd n, groups), optional
// inputs present and absent, f16 / bf16 where the kernels take them, packed sequences for the scan forward, and
// random thread orders (the emulation's race detector sees each launch in that order).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "../conformance/delta_rule_problem.hpp"
#include "../conformance/linear_attention_problem.hpp"
#include "../conformance/rwkv7_problem.hpp"
#include "../conformance/ssd_problem.hpp"
#include "../conformance/ttt_linear_problem.hpp"
#include "attention_case.hpp"
#include "emu/backend.hpp"
#include "support/expect_error.hpp"
#include "ssm/ops.hpp"
#include "ssm/ops/attention.hpp"
#include "ssm/ops/delta_rule.hpp"
#include "ssm/ops/linear_attention.hpp"
#include "ssm/ops/rwkv7.hpp"
#include "ssm/ops/ssd.hpp"
#include "ssm/ops/ttt_linear.hpp"
#include "ssm/reference/attention.hpp"

namespace {

using ssm::Device;
using ssm::DType;
using ssm::Tensor;
using ssm::emu::Order;
using ssm::emu::ScopedEmulatedCuda;
using ssm::Dims;
using ssm::TensorView;
using ssm_test::expect_error;  // support/expect_error.hpp
using index_t = std::int64_t;

const Device kCuda = Device::cuda(0);

// ---- tensors ---------------------------------------------------------------------------------------------------

/// A CPU tensor of `shape` and dtype `dt` (f32, f64, f16, bf16) with values uniform in [lo, hi).
Tensor random_tensor(const ssm::Dims& shape, DType dt, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<std::size_t>(shape.product()));
  for (float& x : v) x = dist(rng);
  auto as = [&](auto zero) {
    using T = decltype(zero);
    std::vector<T> t(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) t[i] = ssm::from_float<T>(v[i]);
    return Tensor::from_vector(shape, t);
  };
  switch (dt) {
    case DType::f32: return Tensor::from_vector(shape, v);
    case DType::f64: return Tensor::from_vector(shape, std::vector<double>(v.begin(), v.end()));
    case DType::f16: return as(ssm::half{});
    case DType::bf16: return as(ssm::bfloat16{});
    default: ADD_FAILURE() << "random_tensor: dtype " << name(dt); return {};
  }
}

/// The values of any real floating tensor (on any device) in double.
std::vector<double> doubles(const Tensor& t) {
  const Tensor h = t.to(Device::cpu());
  std::vector<double> r(static_cast<std::size_t>(h.numel()));
  auto read = [&](auto zero) {
    using T = decltype(zero);
    const T* p = h.data_as<T>();
    for (std::size_t i = 0; i < r.size(); ++i) r[i] = static_cast<double>(ssm::to_float(p[i]));
  };
  switch (h.dtype()) {
    case DType::f32: for (std::size_t i = 0; i < r.size(); ++i) r[i] = h.data_as<float>()[i]; break;
    case DType::f64: for (std::size_t i = 0; i < r.size(); ++i) r[i] = h.data_as<double>()[i]; break;
    case DType::f16: read(ssm::half{}); break;
    case DType::bf16: read(ssm::bfloat16{}); break;
    default: ADD_FAILURE() << "doubles: dtype " << name(h.dtype());
  }
  return r;
}

/// A copy of a CPU tensor converted to `dt` (through double; f64 keeps f16 / bf16 values exactly).
Tensor converted(const Tensor& t, DType dt) {
  const std::vector<double> v = doubles(t);
  if (dt == DType::f64) return Tensor::from_vector(t.shape(), v);
  return Tensor::from_vector(t.shape(), std::vector<float>(v.begin(), v.end()));
}

/// One rounding of an output of dtype dt, relative.
double ulp(DType dt) { return dt == DType::f16 ? std::ldexp(1.0, -10) : dt == DType::bf16 ? std::ldexp(1.0, -7) : 0.0; }

/// |got - ref| <= scale_tol * max |ref| + elem_tol * |ref| element by element (the sums over tokens make
/// per-element relative bounds meaningless near zero: the scale term; outputs rounded to f16 / bf16 on both sides
/// differ by an ulp of the element: the element term). Returns max |got - ref| / max |ref|.
double expect_close(const std::string& what, const Tensor& got, const std::vector<double>& ref, double scale_tol,
                    double elem_tol = 0) {
  EXPECT_TRUE(got.defined()) << what;
  if (!got.defined()) return 1;
  const std::vector<double> g = doubles(got);
  EXPECT_EQ(g.size(), ref.size()) << what;
  if (g.size() != ref.size()) return 1;
  double scale = 0;
  for (double r : ref) scale = std::max(scale, std::fabs(r));
  double worst = 0;
  std::size_t bad = 0, first_bad = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    const double err = std::fabs(g[i] - ref[i]);
    worst = std::max(worst, err);
    if (!(err <= scale_tol * scale + elem_tol * std::fabs(ref[i]) + 1e-30)) {
      if (bad++ == 0) first_bad = i;
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << g.size() << " elements out of bounds, first at " << first_bad
                     << ": got " << g[first_bad] << ", reference " << ref[first_bad] << " (max |reference| " << scale
                     << ")";
  return scale > 0 ? worst / scale : worst;
}
double expect_close(const std::string& what, const Tensor& got, const Tensor& ref, double scale_tol,
                    double elem_tol = 0) {
  EXPECT_TRUE(ref.defined()) << what << ": no reference";
  if (!ref.defined()) return 1;
  return expect_close(what, got, doubles(ref), scale_tol, elem_tol);
}

// ---- selective scan --------------------------------------------------------------------------------------------

struct ScanCase {
  index_t b = 2, d = 4, l = 100, n = 5, g = 2;
  DType dtype = DType::f32;
  bool variable_B = true, variable_C = true;
  bool z = true, D = true, bias = true, softplus = true, init = true;
  float delta_offset = 0;             // added to delta: large values make exp(Delta A) << 1
  std::vector<std::int64_t> cu;       // non-empty: cu_seqlens (b = 1, sequences packed along l)
  std::string str() const {
    std::string s = std::string(name(dtype)) + " b" + std::to_string(b) + " d" + std::to_string(d) + " l" +
                    std::to_string(l) + " n" + std::to_string(n) + " g" + std::to_string(g);
    if (!variable_B) s += " fixedB";
    if (!variable_C) s += " fixedC";
    if (!z) s += " no-z";
    if (!D) s += " no-D";
    if (!bias) s += " no-bias";
    if (!softplus) s += " no-softplus";
    if (!init) s += " no-init";
    if (!cu.empty()) s += " varlen";
    if (delta_offset != 0) s += " delta+" + std::to_string(delta_offset);
    return s;
  }
  index_t state_rows() const { return cu.empty() ? b : static_cast<index_t>(cu.size()) - 1; }
};

/// The tensors of one scan on one device (optional ones undefined when absent).
struct ScanTensors {
  Tensor u, delta, A, B, C, D, z, bias, h0, cu;

  ScanTensors to(Device dev) const {
    auto mv = [&](const Tensor& t) { return t.defined() ? t.to(dev) : Tensor{}; };
    return {mv(u), mv(delta), mv(A), mv(B), mv(C), mv(D), mv(z), mv(bias), mv(h0), cu};  // cu_seqlens stays on the host
  }
  ssm::SelectiveScanInputs inputs(const ScanCase& c) const {
    ssm::SelectiveScanInputs in;
    in.u = u, in.delta = delta, in.A = A, in.B = B, in.C = C;
    if (D.defined()) in.D = D.view();
    if (z.defined()) in.z = z.view();
    if (bias.defined()) in.delta_bias = bias.view();
    if (h0.defined()) in.initial_state = h0.view();
    if (cu.defined()) in.cu_seqlens = cu.view();
    in.delta_softplus = c.softplus;
    return in;
  }
};

ScanTensors make_scan(const ScanCase& c, std::uint32_t seed) {
  std::mt19937 rng(seed);
  ScanTensors t;
  const DType in = c.dtype, w = DType::f32;
  t.u = random_tensor({c.b, c.d, c.l}, in, rng, -1, 1);  // (b, d, l)
  // delta: (b, d, l); with softplus the raw value (softplus(-3 .. -0.5) = 0.05 .. 0.47), else used as given
  t.delta = c.softplus ? random_tensor({c.b, c.d, c.l}, in, rng, -3.0f + c.delta_offset, -0.5f + c.delta_offset)
                       : random_tensor({c.b, c.d, c.l}, in, rng, 0.05f + c.delta_offset, 0.6f + c.delta_offset);
  {
    std::uniform_real_distribution<float> jitter(0.5f, 1.5f);
    std::vector<float> a(static_cast<std::size_t>(c.d * c.n));  // (d, n): A[ch, s] = -(s + 1) * jitter
    for (index_t i = 0; i < c.d; ++i)
      for (index_t s = 0; s < c.n; ++s) a[static_cast<std::size_t>(i * c.n + s)] = -static_cast<float>(s + 1) * jitter(rng);
    t.A = Tensor::from_vector({c.d, c.n}, a);
  }
  t.B = c.variable_B ? random_tensor({c.b, c.g, c.n, c.l}, in, rng, -1, 1) : random_tensor({c.d, c.n}, w, rng, -1, 1);
  t.C = c.variable_C ? random_tensor({c.b, c.g, c.n, c.l}, in, rng, -1, 1) : random_tensor({c.d, c.n}, w, rng, -1, 1);
  if (c.D) t.D = random_tensor({c.d}, w, rng, -1, 1);
  if (c.z) t.z = random_tensor({c.b, c.d, c.l}, in, rng, -2, 2);
  if (c.bias) t.bias = random_tensor({c.d}, w, rng, -0.5f, 0.5f);
  if (c.init) t.h0 = random_tensor({c.state_rows(), c.d, c.n}, w, rng, -1, 1);  // (b | n_seqs, d, n)
  if (!c.cu.empty()) t.cu = Tensor::from_vector({static_cast<index_t>(c.cu.size())}, c.cu);
  return t;
}

// Output tolerance: the kernel computes in f32 (expf, a tree-shaped scan), the reference in double on the same
// inputs; A <= -0.5 and Delta >= 0.05 forget within ~40 steps, so f32 rounding stays at a few ulp of the largest
// terms. f16 / bf16 outputs: one rounding each side.
constexpr double kScanOutTol = 2e-5;
constexpr double kScanGradTol = 1e-4;

/// The scan forward on emulated CUDA tensors against ScanPath::reference on the CPU; returns the worst relative error.
double check_scan_forward(const ScanCase& c, Order order, std::uint32_t seed) {
  SCOPED_TRACE(c.str() + ", order " + ssm::emu::name(order));
  const ScanTensors host = make_scan(c, seed);
  ssm::SelectiveScanOptions ref_opt;
  ref_opt.path = ssm::ScanPath::reference;
  ref_opt.return_last_state = true;
  const auto ref = ssm::selective_scan(host.inputs(c), ref_opt);

  ScopedEmulatedCuda guard(order, seed);
  const ScanTensors dev = host.to(kCuda);
  ssm::SelectiveScanOptions opt;
  opt.return_last_state = true;
  const auto got = ssm::selective_scan(dev.inputs(c), opt);
  EXPECT_EQ(got.path, "cuda-fused");
  EXPECT_TRUE(got.out.device() == kCuda);
  double worst = expect_close("out", got.out, ref.out, kScanOutTol, ulp(c.dtype));
  worst = std::max(worst, expect_close("last_state", got.last_state, ref.last_state, kScanOutTol));
  return worst;
}

/// The scan backward (the op: forward with saved chunk states, backward kernel, f32 → f16 / bf16 casts) on emulated
/// CUDA tensors against the reference backward on the CPU.
void check_scan_backward(const ScanCase& c, bool grad_last, Order order, std::uint32_t seed) {
  SCOPED_TRACE(c.str() + (grad_last ? " grad_last_state" : "") + ", backward, order " + ssm::emu::name(order));
  const ScanTensors host = make_scan(c, seed);
  std::mt19937 rng(seed + 1000);
  const Tensor grad_out = random_tensor({c.b, c.d, c.l}, c.dtype, rng, -1, 1);         // (b, d, l)
  const Tensor grad_last_state =
      random_tensor({c.state_rows(), c.d, c.n}, DType::f32, rng, -1, 1);  // (b | n_seqs, d, n)
  auto gls = [&](const Tensor& t) { return grad_last ? std::optional<ssm::TensorView>(t.view()) : std::nullopt; };
  ssm::SelectiveScanOptions ref_opt;
  ref_opt.path = ssm::ScanPath::reference;
  const auto ref = ssm::selective_scan_backward(host.inputs(c), grad_out, gls(grad_last_state), ref_opt);

  ScopedEmulatedCuda guard(order, seed);
  const ScanTensors dev = host.to(kCuda);
  const Tensor grad_out_dev = grad_out.to(kCuda), grad_last_dev = grad_last_state.to(kCuda);
  const auto got = ssm::selective_scan_backward(dev.inputs(c), grad_out_dev, gls(grad_last_dev));
  EXPECT_EQ(got.path, "cuda-fused");
  const double e = ulp(c.dtype);
  expect_close("grad_u", got.grad_u, ref.grad_u, kScanGradTol, e);
  expect_close("grad_delta", got.grad_delta, ref.grad_delta, kScanGradTol, e);
  expect_close("grad_A", got.grad_A, ref.grad_A, kScanGradTol);
  expect_close("grad_B", got.grad_B, ref.grad_B, kScanGradTol, c.variable_B ? e : 0);
  expect_close("grad_C", got.grad_C, ref.grad_C, kScanGradTol, c.variable_C ? e : 0);
  EXPECT_EQ(got.grad_z.defined(), c.z);
  if (c.z) expect_close("grad_z", got.grad_z, ref.grad_z, kScanGradTol, e);
  EXPECT_EQ(got.grad_D.defined(), c.D);
  if (c.D) expect_close("grad_D", got.grad_D, ref.grad_D, kScanGradTol);
  EXPECT_EQ(got.grad_delta_bias.defined(), c.bias);
  if (c.bias) expect_close("grad_delta_bias", got.grad_delta_bias, ref.grad_delta_bias, kScanGradTol);
  EXPECT_EQ(got.grad_initial_state.defined(), c.init);
  if (c.init) expect_close("grad_initial_state", got.grad_initial_state, ref.grad_initial_state, kScanGradTol);
}

TEST(CudaOpsEmu, BackendIsInstalledAndRestored) {
  const ssm::DeviceBackend* before = ssm::find_backend(ssm::DeviceType::cuda);
  {
    ScopedEmulatedCuda guard;
    const ssm::DeviceBackend* b = ssm::find_backend(ssm::DeviceType::cuda);
    ASSERT_NE(b, nullptr);
    EXPECT_STREQ(b->name, "cuda (host emulation)");
    EXPECT_EQ(b->device_count(), 1);
    const Tensor x = Tensor::from_vector({2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6});
    const Tensor on = x.to(kCuda);
    EXPECT_TRUE(on.device() == kCuda);
    EXPECT_EQ(on.to_vector<float>(), x.to_vector<float>());
    EXPECT_THROW((void)Tensor::empty({4}, DType::f32, Device::cuda(1)), ssm::Error);  // one device
  }
  EXPECT_EQ(ssm::find_backend(ssm::DeviceType::cuda), before);
}

/// ssm::copy between strided views on the host and the device: one 2D copy per index of the dims before the last
/// strided one, rows of the contiguous trailing dims; a broadcast row (stride 0) one row at a time; a strided last dim
/// in one-element rows. The values against the same copies on the CPU (elementwise there).
TEST(CudaOpsEmu, CopiesStridedViewsToFromAndOnTheDevice) {
  ScopedEmulatedCuda guard;
  const Dims shape{2, 3, 4, 5};  // (b, l, h, d)
  const Dims padded{3 * (4 * 7 + 1) + 2, 4 * 7 + 1, 7, 1};  // d padded to 7, a gap after every token and batch row
  const index_t span = 2 * padded[0];
  std::vector<float> x(static_cast<std::size_t>(2 * 3 * 4 * 5));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i) + 0.5f;
  const TensorView dense = TensorView::of(x.data(), shape);
  auto strided = [&](const Tensor& store) {  // the padded (b, l, h, d) view into store (span elements)
    return TensorView(store.data(), DType::f32, store.device(), shape, padded);
  };
  const Tensor host_store = Tensor::zeros({span}, DType::f32), dev_store = Tensor::zeros({span}, DType::f32, kCuda);
  ssm::copy(strided(host_store), dense);  // on the CPU: what the device copies must equal
  ssm::copy(strided(dev_store), dense);   // host (contiguous) → device (strided)
  EXPECT_EQ(dev_store.to_vector<float>(), host_store.to_vector<float>()) << "host to device: the gaps stay zero";
  const Tensor dev2 = Tensor::zeros({span}, DType::f32, kCuda);
  ssm::copy(strided(dev2), strided(dev_store));  // device → device, both strided
  EXPECT_EQ(dev2.to_vector<float>(), host_store.to_vector<float>()) << "device to device";
  std::vector<float> back(x.size(), -1.0f);
  ssm::copy(TensorView::of(back.data(), shape), strided(dev2));  // device (strided) → host (contiguous)
  EXPECT_EQ(back, x) << "device to host";
  // a row broadcast along dim 0 (stride 0 < a row: one row per 2D copy)
  const Tensor row = Tensor::from_vector({4}, std::vector<float>{1, 2, 3, 4}).to(kCuda);
  const Tensor rows = Tensor::empty({3, 4}, DType::f32, kCuda);
  ssm::copy(rows.view(), TensorView(row.data(), DType::f32, kCuda, {3, 4}, {0, 1}));
  EXPECT_EQ(rows.to_vector<float>(), (std::vector<float>{1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4}));
  // a stride along the last dim: one-element rows (every other element of `wide`, the rest untouched)
  const Tensor wide = Tensor::zeros({8}, DType::f32, kCuda);
  ssm::copy(TensorView(wide.data(), DType::f32, kCuda, {4}, {2}), row.view());
  EXPECT_EQ(wide.to_vector<float>(), (std::vector<float>{1, 0, 2, 0, 3, 0, 4, 0}));
}

TEST(CudaOpsEmu, ScanForwardLengthsAcrossConfigurationsAndChunks) {
  // The launcher's configurations: l <= 128 → 32 x 4, <= 1024 → 128 x 8, else 256 x 8 (2048-token chunks): l = 2049
  // is two chunks, the second one token long; l = 1 and 129 are the edges of the first two.
  for (index_t l : {1, 128, 129, 2049}) {
    ScanCase c;
    c.b = 1, c.d = 1, c.g = 1, c.n = 3;
    c.l = l;
    check_scan_forward(c, Order::forward, 1);
  }
  ScanCase c;
  c.b = 2, c.d = 2, c.g = 1, c.n = 4, c.l = 2100;
  check_scan_forward(c, Order::random, 2);
}

TEST(CudaOpsEmu, ScanForwardStateSizesGroupsAndOptionalInputs) {
  std::vector<ScanCase> cases;
  ScanCase base;  // b 2, d 4, l 100, n 5, g 2
  cases.push_back(base);
  for (index_t n : {1, 17}) {
    ScanCase c = base;
    c.n = n;
    cases.push_back(c);
  }
  {
    ScanCase c = base;
    c.g = 4;  // one channel per group
    cases.push_back(c);
  }
  {
    ScanCase c = base;
    c.variable_B = false;
    c.z = false;
    cases.push_back(c);
  }
  {
    ScanCase c = base;
    c.variable_C = false;
    c.g = 1;
    c.D = c.init = false;
    cases.push_back(c);
  }
  {
    ScanCase c = base;
    c.variable_B = c.variable_C = false;
    c.z = c.D = c.bias = c.softplus = c.init = false;
    cases.push_back(c);
  }
  for (std::size_t i = 0; i < cases.size(); ++i)
    check_scan_forward(cases[i], i % 2 ? Order::random : Order::reverse, static_cast<std::uint32_t>(10 + i));
}

TEST(CudaOpsEmu, ScanForwardPackedSequences) {
  ScanCase c;
  c.b = 1, c.d = 2, c.n = 4, c.g = 1;
  c.cu = {0, 1, 131, 390, 647};  // one token, then sequences over the 128 x 8 configuration's ragged tails
  c.l = c.cu.back();
  check_scan_forward(c, Order::random, 5);
  c.init = c.z = false;
  c.cu = {0, 100, 2200};  // the longest picks the 256 x 8 configuration: two chunks
  c.l = c.cu.back();
  check_scan_forward(c, Order::forward, 6);
}

TEST(CudaOpsEmu, ScanForwardHalfAndBfloat16) {
  for (DType dt : {DType::f16, DType::bf16}) {
    ScanCase c;
    c.dtype = dt;
    c.l = 150;
    check_scan_forward(c, Order::random, 13);
    c.variable_C = false;
    c.init = false;
    c.l = 33;
    check_scan_forward(c, Order::forward, 14);
  }
}

TEST(CudaOpsEmu, ScanBackwardShapes) {
  // l = 300: one 1024-token chunk (backward 256 x 4); l = 2100: two 2048-token chunks (backward 512 x 4); l = 1.
  {
    ScanCase c;
    c.b = 1, c.d = 1, c.g = 1, c.n = 3, c.l = 1;
    check_scan_backward(c, true, Order::forward, 1);
  }
  {
    ScanCase c;  // b 2, d 4, g 2, n 5
    c.l = 300;
    check_scan_backward(c, true, Order::random, 2);
  }
  {
    ScanCase c;
    c.b = 1, c.d = 2, c.g = 1, c.n = 2, c.l = 2100;
    check_scan_backward(c, true, Order::random, 3);
  }
}

// Packed sequences (cu_seqlens): one block per channel and sequence, each from its own start, with its own initial
// state, last-state gradient and initial-state gradient; variable B / C gradients of each sequence land in its steps.
TEST(CudaOpsEmu, ScanBackwardPackedSequences) {
  ScanCase c;
  c.b = 1, c.d = 2, c.n = 4, c.g = 1;
  c.cu = {0, 1, 131, 390, 647};  // one token, then ragged sequences, each one chunk of the 128 x 8 configuration
  c.l = c.cu.back();
  check_scan_backward(c, true, Order::random, 41);
  c.dtype = DType::bf16;  // variable grad_B / grad_C through the f32 accumulators
  c.cu = {0, 5, 6, 140};  // a one-token sequence between two others
  c.l = c.cu.back();
  check_scan_backward(c, true, Order::reverse, 42);
  c.dtype = DType::f32;
  c.cu = {0, 100, 2200};  // the longest picks the 256 x 8 configuration: two chunks, then the states and gradients
  c.l = c.cu.back();      // carried across them with an initial state and a last-state gradient per sequence
  check_scan_backward(c, true, Order::forward, 43);
  c.init = c.z = false;
  check_scan_backward(c, false, Order::random, 44);
}

TEST(CudaOpsEmu, ScanBackwardOptionalInputsAndGroups) {
  ScanCase base;
  base.l = 100;
  ScanCase fixed = base;
  fixed.variable_B = fixed.variable_C = false;
  fixed.z = false;
  ScanCase plain = base;
  plain.D = plain.bias = plain.softplus = plain.init = false;
  ScanCase groups = base;
  groups.g = 1;  // all channels share B and C: their gradients add up
  groups.n = 16;
  ScanCase large = base;
  large.delta_offset = 20;  // exp(Delta A) << 1: a_t h_{t-1} must not be recovered as h_t - b_t (cancellation)
  check_scan_backward(fixed, true, Order::random, 21);
  check_scan_backward(plain, false, Order::reverse, 22);
  check_scan_backward(groups, true, Order::forward, 23);
  check_scan_backward(large, true, Order::random, 24);
}

TEST(CudaOpsEmu, ScanBackwardHalfAndBfloat16) {
  for (DType dt : {DType::f16, DType::bf16}) {
    ScanCase c;
    c.dtype = dt;
    c.l = 150;
    check_scan_backward(c, true, Order::random, 31);  // variable B / C: f32 accumulators cast on the device
    c.variable_B = false;
    check_scan_backward(c, false, Order::forward, 32);
  }
}

TEST(CudaOpsEmu, ScanRejectsWhatTheKernelsCannotTake) {
  ScopedEmulatedCuda guard;
  ScanCase c;
  c.n = 300;  // n > 256
  const ScanTensors dev = make_scan(c, 1).to(kCuda);
  try {
    (void)ssm::selective_scan(dev.inputs(c));
    ADD_FAILURE() << "n = 300 ran";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("state size n must be in [1, 256]"), std::string::npos) << e.what();
  }
}

// ---- causal conv1d ---------------------------------------------------------------------------------------------

struct ConvCase {
  index_t b = 2, d = 3, l = 40, w = 4;
  DType dtype = DType::f32;
  bool bias = true, init = true, silu = true;
  std::string str() const {
    return std::string(name(dtype)) + " b" + std::to_string(b) + " d" + std::to_string(d) + " l" + std::to_string(l) +
           " w" + std::to_string(w) + (bias ? "" : " no-bias") + (init ? "" : " no-init") + (silu ? "" : " identity");
  }
};

struct ConvTensors {
  Tensor x, weight, bias, h0;
  ConvTensors to(Device dev) const {
    auto mv = [&](const Tensor& t) { return t.defined() ? t.to(dev) : Tensor{}; };
    return {mv(x), mv(weight), mv(bias), mv(h0)};
  }
  /// The same values in f64 (the reference's dtype on the CPU).
  ConvTensors f64() const {
    auto cv = [&](const Tensor& t) { return t.defined() ? converted(t, DType::f64) : Tensor{}; };
    return {cv(x), cv(weight), cv(bias), cv(h0)};
  }
  ssm::CausalConv1dInputs inputs(const ConvCase& c) const {
    ssm::CausalConv1dInputs in;
    in.x = x, in.weight = weight, in.silu = c.silu;
    if (bias.defined()) in.bias = bias.view();
    if (h0.defined()) in.initial_state = h0.view();
    return in;
  }
};

ConvTensors make_conv(const ConvCase& c, std::uint32_t seed) {
  std::mt19937 rng(seed);
  ConvTensors t;
  t.x = random_tensor({c.b, c.d, c.l}, c.dtype, rng, -1, 1);            // (b, d, l)
  t.weight = random_tensor({c.d, c.w}, DType::f32, rng, -1, 1);          // (d, w)
  if (c.bias) t.bias = random_tensor({c.d}, DType::f32, rng, -0.5f, 0.5f);  // (d)
  if (c.init) t.h0 = random_tensor({c.b, c.d, c.w - 1}, DType::f32, rng, -1, 1);  // (b, d, w - 1)
  return t;
}

constexpr double kConvTol = 1e-5;

void check_conv(const ConvCase& c, bool grad_final, Order order, std::uint32_t seed) {
  SCOPED_TRACE(c.str() + (grad_final ? " grad_final_state" : "") + ", order " + ssm::emu::name(order));
  const ConvTensors host = make_conv(c, seed), ref_in = host.f64();
  std::mt19937 rng(seed + 7);
  const Tensor grad_out = random_tensor({c.b, c.d, c.l}, c.dtype, rng, -1, 1);              // (b, d, l)
  const Tensor grad_final_state = random_tensor({c.b, c.d, c.w - 1}, DType::f32, rng, -1, 1);  // (b, d, w - 1)
  const auto ref = ssm::causal_conv1d(ref_in.inputs(c));
  const Tensor grad_final64 = converted(grad_final_state, DType::f64);
  const auto ref_g = ssm::causal_conv1d_backward(
      ref_in.inputs(c), converted(grad_out, DType::f64),
      grad_final ? std::optional<ssm::TensorView>(grad_final64.view()) : std::nullopt);

  ScopedEmulatedCuda guard(order, seed);
  const ConvTensors dev = host.to(kCuda);
  const auto got = ssm::causal_conv1d(dev.inputs(c));
  EXPECT_EQ(got.path, "cuda");
  const double e = ulp(c.dtype);
  expect_close("out", got.out, ref.out, kConvTol, e);
  expect_close("final_state", got.final_state, ref.final_state, 0);  // copies of inputs: exact
  const Tensor grad_out_dev = grad_out.to(kCuda), grad_final_dev = grad_final_state.to(kCuda);
  const auto g = ssm::causal_conv1d_backward(
      dev.inputs(c), grad_out_dev, grad_final ? std::optional<ssm::TensorView>(grad_final_dev.view()) : std::nullopt);
  expect_close("grad_x", g.grad_x, ref_g.grad_x, kConvTol, e);
  expect_close("grad_weight", g.grad_weight, ref_g.grad_weight, kConvTol);
  EXPECT_EQ(g.grad_bias.defined(), c.bias);
  if (c.bias) expect_close("grad_bias", g.grad_bias, ref_g.grad_bias, kConvTol);
  EXPECT_EQ(g.grad_initial_state.defined(), c.init);
  if (c.init) expect_close("grad_initial_state", g.grad_initial_state, ref_g.grad_initial_state, kConvTol);
}

TEST(CudaOpsEmu, Conv1dLengthsAcrossTilesInEveryOrder) {
  // Tiles of 128 x 4 = 512 outputs: l = 511, 512, 513 around the first boundary, 2049 five tiles with a one-step
  // tail; l = 1, 3 (< w - 1 and around it); l = 0 (empty outputs, defined although the device returns no memory
  // for 0 bytes, and the final state is the initial one).
  for (index_t l : {0, 1, 3, 511, 512, 513, 2049})
    for (Order o : {Order::forward, Order::reverse, Order::random}) {
      ConvCase c;
      c.l = l;
      c.b = l > 600 ? 1 : 2;
      check_conv(c, true, o, static_cast<std::uint32_t>(40 + l));
    }
}

TEST(CudaOpsEmu, Conv1dWidthsAndOptionalInputs) {
  std::vector<ConvCase> cases;
  for (index_t w : {2, 3}) {
    ConvCase c;
    c.w = w;
    cases.push_back(c);
  }
  {
    ConvCase c;
    c.b = 1, c.d = 1, c.l = 100;
    cases.push_back(c);
  }
  {
    ConvCase c;
    c.l = 2;
    c.bias = false;
    cases.push_back(c);
  }
  {
    ConvCase c;
    c.init = false;
    c.silu = false;
    cases.push_back(c);
  }
  {
    ConvCase c;
    c.bias = c.init = c.silu = false;
    cases.push_back(c);
  }
  for (std::size_t i = 0; i < cases.size(); ++i)
    check_conv(cases[i], i % 2 == 0, i % 2 ? Order::random : Order::reverse, static_cast<std::uint32_t>(30 + i));
}

TEST(CudaOpsEmu, Conv1dHalfAndBfloat16) {
  for (DType dt : {DType::f16, DType::bf16}) {
    ConvCase c;
    c.dtype = dt;
    c.l = 70;
    check_conv(c, true, Order::random, 51);
  }
}

TEST(CudaOpsEmu, Conv1dUpdateTokenByToken) {
  // The update, token by token from a state, against the CPU update in f64 (which the CPU op's tests hold equal
  // to the sequence form): out and the shifted state after every token.
  for (DType dt : {DType::f32, DType::bf16}) {
    for (bool bias : {true, false}) {
      const index_t b = 2, d = 130, w = 4, steps = 3;  // d = 130: two blocks of 128 channels, the second ragged
      SCOPED_TRACE(std::string(name(dt)) + (bias ? " bias" : " no-bias"));
      std::mt19937 rng(61);
      const Tensor weight = random_tensor({d, w}, DType::f32, rng, -1, 1);  // (d, w)
      const Tensor bias_t = random_tensor({d}, DType::f32, rng, -0.5f, 0.5f);
      Tensor state = random_tensor({b, d, w}, DType::f32, rng, -1, 1);     // (b, d, w)
      Tensor state64 = converted(state, DType::f64);
      const Tensor weight64 = converted(weight, DType::f64), bias64 = converted(bias_t, DType::f64);
      ScopedEmulatedCuda guard(Order::random, 3);
      Tensor state_dev = state.to(kCuda);
      const Tensor weight_dev = weight.to(kCuda), bias_dev = bias_t.to(kCuda);
      for (index_t step = 0; step < steps; ++step) {
        const Tensor x = random_tensor({b, d}, dt, rng, -1, 1);  // (b, d)
        const Tensor out64 = Tensor::empty({b, d}, DType::f64);
        ssm::causal_conv1d_update(converted(x, DType::f64), state64, weight64,
                                  bias ? std::optional<ssm::TensorView>(bias64.view()) : std::nullopt, out64);
        const Tensor x_dev = x.to(kCuda);
        const Tensor out_dev = Tensor::empty({b, d}, dt, kCuda);
        ssm::causal_conv1d_update(x_dev, state_dev, weight_dev,
                                  bias ? std::optional<ssm::TensorView>(bias_dev.view()) : std::nullopt, out_dev);
        expect_close("out, step " + std::to_string(step), out_dev, out64, kConvTol, ulp(dt));
        expect_close("conv_state, step " + std::to_string(step), state_dev, state64, 0);
      }
    }
  }
}

// ---- attention -------------------------------------------------------------------------------------------------

using emu_test::AttnCase;  // attention_case.hpp

void check_attention(const AttnCase& c, bool backward, Order order, std::uint32_t seed) {
  SCOPED_TRACE(c.str() + ", order " + ssm::emu::name(order));
  std::mt19937 rng(seed);
  const Tensor q = random_tensor({c.b, c.l_q, c.h, c.p}, DType::f32, rng, -1.5f, 1.5f);     // (b, l_q, h, p)
  const Tensor k = random_tensor({c.b, c.l_k, c.h_kv, c.p}, DType::f32, rng, -1.5f, 1.5f);  // (b, l_k, h_kv, p)
  const Tensor v = random_tensor({c.b, c.l_k, c.h_kv, c.p}, DType::f32, rng, -1, 1);
  const Tensor go = random_tensor({c.b, c.l_q, c.h, c.p}, DType::f32, rng, -1, 1);
  ssm::reference::AttentionDims s;
  s.b = c.b, s.l_q = c.l_q, s.l_k = c.l_k, s.h = c.h, s.h_kv = c.h_kv, s.p = c.p, s.causal = c.causal;
  std::vector<double> out, lse, gq, gk, gv;
  ssm::reference::attention_forward(s, doubles(q), doubles(k), doubles(v), out, lse);

  ScopedEmulatedCuda guard(order, seed);
  ssm::AttentionOptions opt;
  opt.causal = c.causal;
  const Tensor qd = q.to(kCuda), kd = k.to(kCuda), vd = v.to(kCuda);
  const auto r = ssm::attention_forward(qd, kd, vd, opt);
  expect_close("out", r.out, out, 1e-5);
  expect_close("lse", r.lse, lse, 1e-5);
  if (!backward) return;
  ssm::reference::attention_backward(s, doubles(q), doubles(k), doubles(v), doubles(go), gq, gk, gv);
  const Tensor god = go.to(kCuda);
  const Tensor grad_q = Tensor::empty(q.shape(), DType::f32, kCuda), grad_k = Tensor::empty(k.shape(), DType::f32, kCuda),
               grad_v = Tensor::empty(v.shape(), DType::f32, kCuda);
  ssm::attention_backward(qd, kd, vd, r.out, r.lse, god, grad_q, grad_k, grad_v, opt);
  expect_close("grad_q", grad_q, gq, 1e-4);
  expect_close("grad_k", grad_k, gk, 1e-4);
  expect_close("grad_v", grad_v, gv, 1e-4);
}

TEST(CudaOpsEmu, AttentionTiledForwardAndBackward) {
  // Head dims over the three kernel widths (32, 64, 128) with zero padding, grouped-query heads, ragged tiles,
  // causal with l_q < l_k, and non-causal.
  check_attention({2, 37, 37, 4, 2, 33, true}, true, Order::random, 71);
  check_attention({1, 20, 45, 2, 1, 5, true}, true, Order::reverse, 72);
  check_attention({1, 9, 17, 3, 3, 100, false}, true, Order::forward, 73);
}

TEST(CudaOpsEmu, AttentionSplitKeyDecoding) {
  // 1..4 queries take the split-key path (slices of the keys, then the combine); the backward is the tiled one.
  check_attention({2, 1, 300, 2, 1, 64, true}, true, Order::random, 81);
  check_attention({1, 4, 150, 4, 2, 16, true}, false, Order::forward, 82);
}

// ---- the dense ops' CUDA entries: what they refuse ---------------------------------------------------------------
// (Their values against the references: tests/conformance, on the cuda_emulated backend.)

/// An SSD problem's inputs (contiguous, with D, z, dt_bias and initial states) copied to the emulated device;
/// cu_seqlens stays on the host, as the op takes it. Construct it while a ScopedEmulatedCuda is alive.
struct SsdOnDevice {
  Tensor x, dt, A, B, C, D, z, dt_bias, h0;
  ssm::SsdInputs in;
  explicit SsdOnDevice(const ssd_problem::SsdData& host)
      : x(host.x.to(kCuda)), dt(host.dt.to(kCuda)), A(host.A.to(kCuda)), B(host.B.to(kCuda)), C(host.C.to(kCuda)),
        D(host.D.to(kCuda)), z(host.z.to(kCuda)), dt_bias(host.dt_bias.to(kCuda)),
        h0(host.initial_state.to(kCuda)), in(host.inputs()) {
    in.x = x, in.dt = dt, in.A = A, in.B = B, in.C = C, in.D = D.view(), in.z = z.view(), in.dt_bias = dt_bias.view();
    in.initial_state = h0.view();
  }
};

/// The SSD forward on emulated CUDA tensors against the token loop in double (SsdPath::reference). The conformance
/// registry's cases (tests/conformance/ops/ssd.cpp) have p, n < 32; this one has both wider than a kernel tile
/// (kSsdTile = 32) and chunks of two step tiles, a ragged last chunk, and a final state.
TEST(CudaOpsEmu, SsdForwardAcrossTiles) {
  ssd_problem::SsdCase s;
  s.b = 2, s.l = 90, s.h = 2, s.p = 40, s.g = 2, s.n = 36, s.dtype = DType::f32, s.seed = 11;
  s.has_D = s.has_z = s.has_bias = s.softplus = s.has_init = true;
  const ssd_problem::SsdData host = ssd_problem::make_data(s);
  ssm::SsdOptions opt;
  opt.chunk_size = 64;
  opt.return_final_state = true;
  opt.path = ssm::SsdPath::reference;
  const ssm::SsdOutputs ref = ssm::ssd(host.inputs(), opt);

  ScopedEmulatedCuda guard(Order::random, 12);
  const SsdOnDevice dev(host);
  opt.path = ssm::SsdPath::automatic;
  const ssm::SsdOutputs got = ssm::ssd(dev.in, opt);
  EXPECT_EQ(got.path, "cuda");
  expect_close("out", got.out, ref.out, 1e-5);
  expect_close("final_state", got.final_state, ref.final_state, 1e-5);
}

/// The SSD backward on emulated CUDA tensors against reference::ssd_backward (SsdPath::reference) for f32 inputs:
/// p and n wider than a kernel tile, packed sequences (cu_seqlens) with an initial and a final-state gradient each,
/// chunks of one, two and three step tiles with ragged ends (sequence lengths 37 and 113 at chunk 64 and 70), groups
/// of two heads (ḡB, ḡC summed over them), D per channel, z, dt_bias with softplus and a dt limit that clamps.
TEST(CudaOpsEmu, SsdBackwardAcrossTiles) {
  for (const index_t chunk : {64, 70}) {
    ssd_problem::SsdCase s;
    s.b = 1, s.l = 150, s.h = 4, s.p = 40, s.g = 2, s.n = 36, s.dtype = DType::f32, s.seed = 13 + chunk;
    s.has_D = s.D_per_channel = s.has_z = s.has_bias = s.softplus = s.limit = s.has_init = true;
    s.cu = {0, 37, 150};
    const ssd_problem::SsdData host = ssd_problem::make_data(s);
    std::mt19937_64 rng(chunk);
    const Tensor grad_out = ssd_problem::uniform(rng, {s.b, s.l, s.h, s.p}, DType::f32, -1, 1);       // (b, l, h, p)
    const Tensor grad_final = ssd_problem::uniform(rng, {s.rows(), s.h, s.p, s.n}, DType::f32, -1, 1);  // (rows, h, p, n)
    ssm::SsdOptions opt;
    opt.chunk_size = chunk;
    opt.path = ssm::SsdPath::reference;
    const ssm::SsdGrads ref = ssm::ssd_backward(host.inputs(), grad_out, grad_final.view(), opt);

    ScopedEmulatedCuda guard(Order::random, 14 + static_cast<std::uint64_t>(chunk));
    const SsdOnDevice dev(host);
    const Tensor gout = grad_out.to(kCuda), gfin = grad_final.to(kCuda);
    opt.path = ssm::SsdPath::automatic;
    const ssm::SsdGrads got = ssm::ssd_backward(dev.in, gout, gfin.view(), opt);
    EXPECT_EQ(got.path, "cuda");
    const std::string at = " (chunk " + std::to_string(chunk) + ")";
    expect_close("grad_x" + at, got.grad_x, ref.grad_x, 2e-5);
    expect_close("grad_dt" + at, got.grad_dt, ref.grad_dt, 2e-5);
    expect_close("grad_A" + at, got.grad_A, ref.grad_A, 2e-5);
    expect_close("grad_B" + at, got.grad_B, ref.grad_B, 2e-5);
    expect_close("grad_C" + at, got.grad_C, ref.grad_C, 2e-5);
    expect_close("grad_D" + at, got.grad_D, ref.grad_D, 2e-5);
    expect_close("grad_z" + at, got.grad_z, ref.grad_z, 2e-5);
    expect_close("grad_dt_bias" + at, got.grad_dt_bias, ref.grad_dt_bias, 2e-5);
    expect_close("grad_initial_state" + at, got.grad_initial_state, ref.grad_initial_state, 2e-5);
  }
}

/// What the CUDA forward keeps for its backward (SsdSaved): the states entering each chunk and y before the gate, on
/// the device in f32, against what the CPU's chunked forward keeps; the backward that reads them against the
/// reference and against the CUDA backward that recomputes them (the same kernels on the same values: bit for bit
/// where one block writes each element, to rounding where float atomics sum in the order blocks run); and it does
/// read them: zeroed states change ḡC, a zeroed y changes ḡz. Packed sequences (37 and 113 steps, chunk 70: chunks of
/// 37, 70 and 43 steps, two or three step tiles with a ragged last one), p and n wider than a tile, groups, D per
/// channel, z, dt_bias and a dt limit.
TEST(CudaOpsEmu, SsdBackwardFromWhatTheForwardKept) {
  ssd_problem::SsdCase s;
  s.b = 1, s.l = 150, s.h = 4, s.p = 40, s.g = 2, s.n = 36, s.dtype = DType::f32, s.seed = 31;
  s.has_D = s.D_per_channel = s.has_z = s.has_bias = s.softplus = s.limit = s.has_init = true;
  s.cu = {0, 37, 150};
  const ssd_problem::SsdData host = ssd_problem::make_data(s);
  std::mt19937_64 rng(32);
  const Tensor grad_out = ssd_problem::uniform(rng, {s.b, s.l, s.h, s.p}, DType::f32, -1, 1);         // (b, l, h, p)
  const Tensor grad_final = ssd_problem::uniform(rng, {s.rows(), s.h, s.p, s.n}, DType::f32, -1, 1);  // (rows, h, p, n)
  ssm::SsdOptions opt;
  opt.chunk_size = 70;
  opt.path = ssm::SsdPath::reference;
  const ssm::SsdGrads ref = ssm::ssd_backward(host.inputs(), grad_out, grad_final.view(), opt);
  opt.path = ssm::SsdPath::chunked, opt.save_for_backward = true;
  const ssm::SsdOutputs cpu = ssm::ssd(host.inputs(), opt);  // f32 states and y, kept by the CPU path

  ScopedEmulatedCuda guard(Order::random, 33);
  const SsdOnDevice dev(host);
  const Tensor gout = grad_out.to(kCuda), gfin = grad_final.to(kCuda);
  opt.path = ssm::SsdPath::automatic;
  ssm::SsdOutputs fwd = ssm::ssd(dev.in, opt);
  ASSERT_EQ(fwd.path, "cuda");
  ASSERT_TRUE(fwd.saved.chunk_states.defined() && fwd.saved.y.defined());
  EXPECT_TRUE(fwd.saved.chunk_states.device().is_cuda() && fwd.saved.y.device().is_cuda());
  EXPECT_EQ(fwd.saved.chunk_states.dtype(), DType::f32);
  EXPECT_EQ(fwd.saved.chunk_states.shape(), ssm::Dims({1 + 2, s.h, s.p, s.n}));  // 37: one chunk; 113: two
  EXPECT_EQ(fwd.saved.chunk_size, 70);
  expect_close("saved.chunk_states", fwd.saved.chunk_states, cpu.saved.chunk_states, 1e-5);
  expect_close("saved.y", fwd.saved.y, cpu.saved.y, 1e-5);
  expect_close("out", fwd.out, cpu.out, 1e-5);  // the out written beside y

  const ssm::SsdGrads recomputed = ssm::ssd_backward(dev.in, gout, gfin.view(), opt);
  const ssm::SsdGrads kept = ssm::ssd_backward(dev.in, gout, gfin.view(), opt, &fwd.saved);
  EXPECT_EQ(kept.path, "cuda");
  struct Grad {
    const char* name;
    Tensor ssm::SsdGrads::*member;
    bool atomic;  // summed by float atomics (ḡcs and ḡΔ feed ḡdt, ḡA, ḡdt_bias; ḡD directly)
  };
  const Grad grads[] = {{"grad_x", &ssm::SsdGrads::grad_x, false},
                        {"grad_B", &ssm::SsdGrads::grad_B, false},
                        {"grad_C", &ssm::SsdGrads::grad_C, false},
                        {"grad_z", &ssm::SsdGrads::grad_z, false},
                        {"grad_initial_state", &ssm::SsdGrads::grad_initial_state, false},
                        {"grad_dt", &ssm::SsdGrads::grad_dt, true},
                        {"grad_A", &ssm::SsdGrads::grad_A, true},
                        {"grad_D", &ssm::SsdGrads::grad_D, true},
                        {"grad_dt_bias", &ssm::SsdGrads::grad_dt_bias, true}};
  for (const Grad& g : grads) {
    expect_close(std::string(g.name) + " (kept) against the reference", kept.*g.member, ref.*g.member, 2e-5);
    expect_close(std::string(g.name) + " (kept) against recomputing", kept.*g.member, recomputed.*g.member,
                 g.atomic ? 2e-5 : 0.0);
  }

  // It reads them: zeroed entering states change ḡC (its inter-chunk term ḡy_t H_in), a zeroed y changes ḡz.
  const auto max_abs_diff = [](const Tensor& a, const Tensor& b) {
    const std::vector<double> u = doubles(a), v = doubles(b);
    double m = u.size() == v.size() ? 0.0 : INFINITY;
    for (std::size_t i = 0; i < std::min(u.size(), v.size()); ++i) m = std::max(m, std::fabs(u[i] - v[i]));
    return m;
  };
  ssm::SsdSaved zeroed = fwd.saved;
  zeroed.chunk_states = Tensor::zeros(fwd.saved.chunk_states.shape(), DType::f32).to(kCuda);
  const ssm::SsdGrads no_states = ssm::ssd_backward(dev.in, gout, gfin.view(), opt, &zeroed);
  EXPECT_GT(max_abs_diff(no_states.grad_C, kept.grad_C), 1e-2);
  zeroed = fwd.saved;
  zeroed.y = Tensor::zeros(fwd.saved.y.shape(), DType::f32).to(kCuda);
  const ssm::SsdGrads no_y = ssm::ssd_backward(dev.in, gout, gfin.view(), opt, &zeroed);
  EXPECT_GT(max_abs_diff(no_y.grad_z, kept.grad_z), 1e-2);
  expect_close("grad_C with a zeroed y", no_y.grad_C, kept.grad_C, 0.0);  // y enters ḡz only

  // Kept on another device, or in other chunks: an error naming the argument.
  expect_error([&] { (void)ssm::ssd_backward(dev.in, gout, gfin.view(), opt, &cpu.saved); },
               "'saved.chunk_states'");
  ssm::SsdOptions other = opt;
  other.chunk_size = 64;
  expect_error([&] { (void)ssm::ssd_backward(dev.in, gout, gfin.view(), other, &fwd.saved); }, "'saved'");

  // A forward that fails keeps nothing, not tensors that look kept (here past the kernels' 65535 sequences a launch).
  ssd_problem::SsdCase wide;
  wide.b = 65536, wide.l = 1, wide.h = 1, wide.p = 1, wide.n = 1, wide.dtype = DType::f32;
  wide.has_D = wide.has_z = wide.has_bias = wide.has_init = true;
  const SsdOnDevice too_many(ssd_problem::make_data(wide));
  const Tensor wide_out = Tensor::empty(too_many.x.shape(), DType::f32, kCuda);
  ssm::SsdSaved failed = fwd.saved;
  expect_error([&] { (void)ssm::ssd_into(too_many.in, wide_out, std::nullopt, opt, &failed); },
               "at most 65535 sequences");
  EXPECT_FALSE(failed.chunk_states.defined() || failed.y.defined());
  EXPECT_EQ(failed.chunk_size, 0);
}

// ---- linear attention and retention ------------------------------------------------------------------------------

/// Linear attention with the normalizer and a decay per head on emulated CUDA tensors against the token loop in
/// double, forward and backward. The conformance cases (tests/conformance/ops/linear_attention.cpp) have dk, dv < 8;
/// here the engine's value width dv + 1 = 41 and dk = 36 are wider than an SSD kernel tile (32), two groups of two
/// heads share q and k, the chunks of 64 leave a ragged one, and the initial state and normalizer come in, the final
/// ones go out.
TEST(CudaOpsEmu, LinearAttentionAcrossTiles) {
  linear_attention_problem::LaCase s;
  s.b = 2, s.l = 90, s.h = 4, s.g = 2, s.dk = 36, s.dv = 40, s.dtype = DType::f32, s.seed = 21;
  s.feature_map = ssm::FeatureMap::elu_plus_one, s.normalize = s.decay = s.has_init = true, s.scale = 0.25;
  const linear_attention_problem::LaData host = linear_attention_problem::make_data(s);
  std::mt19937_64 rng(22);
  const Tensor grad_out = linear_attention_problem::uniform(rng, {s.b, s.l, s.h, s.dv}, DType::f32, -1, 1);
  const Tensor grad_state = linear_attention_problem::uniform(rng, {s.b, s.h, s.dk, s.dv}, DType::f32, -1, 1);
  const Tensor grad_norm = linear_attention_problem::uniform(rng, {s.b, s.h, s.dk}, DType::f32, -1, 1);
  ssm::LinearAttentionOptions opt = host.options();
  opt.chunk_size = 64, opt.return_final_state = true, opt.path = ssm::LinearAttentionPath::reference;
  const ssm::LinearAttentionOutputs ref = ssm::linear_attention(host.inputs(), opt);
  const ssm::LinearAttentionGrads gref =
      ssm::linear_attention_backward(host.inputs(), grad_out, grad_state.view(), grad_norm.view(), opt);

  ScopedEmulatedCuda guard(Order::random, 23);
  const Tensor q = host.q.to(kCuda), k = host.k.to(kCuda), v = host.v.to(kCuda);
  const Tensor s0 = host.initial_state.to(kCuda), z0 = host.initial_normalizer.to(kCuda);
  ssm::LinearAttentionInputs in;
  in.q = q, in.k = k, in.v = v, in.initial_state = s0.view(), in.initial_normalizer = z0.view();
  opt.path = ssm::LinearAttentionPath::automatic;
  const ssm::LinearAttentionOutputs got = ssm::linear_attention(in, opt);
  EXPECT_EQ(got.path, "cuda");
  expect_close("out", got.out, ref.out, 1e-5);
  expect_close("final_state", got.final_state, ref.final_state, 1e-5);
  expect_close("final_normalizer", got.final_normalizer, ref.final_normalizer, 1e-5);
  const Tensor gout = grad_out.to(kCuda), gstate = grad_state.to(kCuda), gnorm = grad_norm.to(kCuda);
  const ssm::LinearAttentionGrads ggot = ssm::linear_attention_backward(in, gout, gstate.view(), gnorm.view(), opt);
  EXPECT_EQ(ggot.path, "cuda");
  expect_close("grad_q", ggot.grad_q, gref.grad_q, 1e-4);
  expect_close("grad_k", ggot.grad_k, gref.grad_k, 1e-4);
  expect_close("grad_v", ggot.grad_v, gref.grad_v, 1e-4);
  expect_close("grad_initial_state", ggot.grad_initial_state, gref.grad_initial_state, 1e-4);
  expect_close("grad_initial_normalizer", ggot.grad_initial_normalizer, gref.grad_initial_normalizer, 1e-4);
}

/// GLA's forward and backward on emulated CUDA tensors against the token loop in double: dv + 1 = 41 and dk = 36 wider
/// than a block of columns, packed sequences (37 and 113 steps) in chunks of 64, groups, a decay per head, the
/// normalizer, and gradients coming in for out, the final states and normalizers. Gates of up to 40 nats per step (a
/// chunk's total decay far beyond e^-88, f32's smallest normal) stay exact: every exponent the kernels take is <= 0.
/// Then the decode step with the gate, against the CPU's step.
TEST(CudaOpsEmu, GlaForwardBackwardStrongGatesAndStep) {
  for (const double gate : {0.5, 40.0}) {
    linear_attention_problem::LaCase s;
    s.b = 1, s.l = 150, s.h = 4, s.g = 2, s.dk = 36, s.dv = 40, s.dtype = DType::f32, s.seed = 81;
    s.gate = gate, s.normalize = s.decay = s.has_init = true, s.feature_map = ssm::FeatureMap::elu_plus_one;
    s.cu = {0, 37, 150};
    const linear_attention_problem::LaData host = linear_attention_problem::make_data(s);
    ssm::LinearAttentionOptions opt = host.options();
    opt.chunk_size = 64, opt.return_final_state = true, opt.path = ssm::LinearAttentionPath::reference;
    const ssm::LinearAttentionOutputs ref = ssm::linear_attention(host.inputs(), opt);
    std::mt19937_64 grng(85);
    const index_t rows = 2;  // the packed sequences
    const Tensor grad_out = linear_attention_problem::uniform(grng, {s.b, s.l, s.h, s.dv}, DType::f32, -1, 1);
    const Tensor grad_state = linear_attention_problem::uniform(grng, {rows, s.h, s.dk, s.dv}, DType::f32, -1, 1);
    const Tensor grad_norm = linear_attention_problem::uniform(grng, {rows, s.h, s.dk}, DType::f32, -1, 1);
    const ssm::LinearAttentionGrads gref =
        ssm::linear_attention_backward(host.inputs(), grad_out, grad_state.view(), grad_norm.view(), opt);

    ScopedEmulatedCuda guard(Order::random, 82);
    const Tensor q = host.q.to(kCuda), k = host.k.to(kCuda), v = host.v.to(kCuda), g = host.log_gate.to(kCuda);
    const Tensor s0 = host.initial_state.to(kCuda), z0 = host.initial_normalizer.to(kCuda);
    ssm::LinearAttentionInputs in = host.inputs();  // cu_seqlens stays on the host
    in.q = q, in.k = k, in.v = v, in.log_gate = g.view(), in.initial_state = s0.view(),
    in.initial_normalizer = z0.view();
    opt.path = ssm::LinearAttentionPath::automatic;
    const ssm::LinearAttentionOutputs got = ssm::linear_attention(in, opt);
    EXPECT_EQ(got.path, "cuda");
    const std::string at = " (gate " + std::to_string(gate) + ")";
    expect_close("out" + at, got.out, ref.out, 1e-5);
    expect_close("final_state" + at, got.final_state, ref.final_state, 1e-5);
    expect_close("final_normalizer" + at, got.final_normalizer, ref.final_normalizer, 1e-5);
    const Tensor gout = grad_out.to(kCuda), gstate = grad_state.to(kCuda), gnorm = grad_norm.to(kCuda);
    const ssm::LinearAttentionGrads ggot = ssm::linear_attention_backward(in, gout, gstate.view(), gnorm.view(), opt);
    EXPECT_EQ(ggot.path, "cuda");
    expect_close("grad_q" + at, ggot.grad_q, gref.grad_q, 1e-4);
    expect_close("grad_k" + at, ggot.grad_k, gref.grad_k, 1e-4);
    expect_close("grad_v" + at, ggot.grad_v, gref.grad_v, 1e-4);
    expect_close("grad_log_gate" + at, ggot.grad_log_gate, gref.grad_log_gate, 1e-4);
    expect_close("grad_initial_state" + at, ggot.grad_initial_state, gref.grad_initial_state, 1e-4);
    expect_close("grad_initial_normalizer" + at, ggot.grad_initial_normalizer, gref.grad_initial_normalizer, 1e-4);
  }
  const index_t b = 2, h = 4, g = 2, dk = 5, dv = 3;
  std::mt19937 rng(83);
  ssm::LinearAttentionOptions opt;
  opt.normalize = true, opt.feature_map = ssm::FeatureMap::elu_plus_one;
  Tensor state = random_tensor({b, h, dk, dv}, DType::f32, rng, -1, 1),
         norm = random_tensor({b, h, dk}, DType::f32, rng, 0.1f, 1);
  ScopedEmulatedCuda guard(Order::random, 84);
  Tensor dstate = state.to(kCuda), dnorm = norm.to(kCuda);
  for (int t = 0; t < 4; ++t) {
    const Tensor q = random_tensor({b, g, dk}, DType::f32, rng, -1, 1),
                 k = random_tensor({b, g, dk}, DType::f32, rng, -1, 1);
    const Tensor v = random_tensor({b, h, dv}, DType::f32, rng, -1, 1),
                 lg = random_tensor({b, h, dk}, DType::f32, rng, -1, 0);
    Tensor out = Tensor::empty({b, h, dv}, DType::f32), dout = Tensor::empty({b, h, dv}, DType::f32, kCuda);
    ssm::linear_attention_step(q, k, v, state, norm.view(), out, opt, lg.view());
    const Tensor dq = q.to(kCuda), dk_ = k.to(kCuda), dv_ = v.to(kCuda), dlg = lg.to(kCuda);
    ssm::linear_attention_step(dq, dk_, dv_, dstate, dnorm.view(), dout, opt, dlg.view());
    const std::string at = " (step " + std::to_string(t) + ")";
    expect_close("step out" + at, dout, out, 1e-5);
    expect_close("step state" + at, dstate, state, 1e-5);
    expect_close("step normalizer" + at, dnorm, norm, 1e-5);
  }
}

/// With no steps (l = 0) there are no chunks: the kernels that walk the chunks must still hand the initial states on
/// as the final ones (linear attention with the normalizer, GLA, the delta rule, SSD), and the backwards the final
/// states' gradients back as the initial ones'.
TEST(CudaOpsEmu, SequenceOpsWithNoStepsKeepTheirStates) {
  ScopedEmulatedCuda guard;
  std::mt19937 rng(91);
  const index_t b = 2, h = 2, dk = 3, dv = 4;
  const Tensor q = Tensor::empty({b, 0, 1, dk}, DType::f32, kCuda), k = Tensor::empty({b, 0, 1, dk}, DType::f32, kCuda);
  const Tensor v = Tensor::empty({b, 0, h, dv}, DType::f32, kCuda),
               gate = Tensor::empty({b, 0, h, dk}, DType::f32, kCuda);
  const Tensor beta = Tensor::empty({b, 0, h}, DType::f32, kCuda);
  const Tensor s0 = random_tensor({b, h, dk, dv}, DType::f32, rng, -1, 1),
               z0 = random_tensor({b, h, dk}, DType::f32, rng, 0.1f, 1);
  const Tensor ds0 = s0.to(kCuda), dz0 = z0.to(kCuda);
  for (const bool gated : {false, true}) {
    ssm::LinearAttentionInputs in;
    in.q = q, in.k = k, in.v = v, in.initial_state = ds0.view(), in.initial_normalizer = dz0.view();
    if (gated) in.log_gate = gate.view();
    ssm::LinearAttentionOptions opt;
    opt.normalize = opt.return_final_state = true;
    const ssm::LinearAttentionOutputs r = ssm::linear_attention(in, opt);
    expect_close(std::string("linear attention final_state, gated ") + (gated ? "yes" : "no"), r.final_state, s0, 0);
    expect_close(std::string("linear attention final_normalizer, gated ") + (gated ? "yes" : "no"), r.final_normalizer,
                 z0, 0);
    const ssm::LinearAttentionGrads g = ssm::linear_attention_backward(in, v, ds0.view(), dz0.view(), opt);
    expect_close(std::string("linear attention grad_initial_state, gated ") + (gated ? "yes" : "no"),
                 g.grad_initial_state, s0, 0);
    expect_close(std::string("linear attention grad_initial_normalizer, gated ") + (gated ? "yes" : "no"),
                 g.grad_initial_normalizer, z0, 0);
  }
  ssm::DeltaRuleInputs in;
  in.q = q, in.k = k, in.v = v, in.beta = beta, in.initial_state = ds0.view();
  ssm::DeltaRuleOptions opt;
  opt.return_final_state = true;
  expect_close("delta rule final_state", ssm::delta_rule(in, opt).final_state, s0, 0);
  expect_close("delta rule grad_initial_state", ssm::delta_rule_backward(in, v, ds0.view(), opt).grad_initial_state,
               s0, 0);
  ssm::Rwkv7Inputs rin;  // RWKV-7: one head per q row
  const Tensor rq = Tensor::empty({b, 0, h, dk}, DType::f32, kCuda);
  rin.q = rq, rin.k = rq, rin.log_w = rq, rin.a = rq, rin.b = rq, rin.v = v, rin.initial_state = ds0.view();
  ssm::Rwkv7Options ropt;
  ropt.return_final_state = true;
  expect_close("rwkv7 final_state", ssm::rwkv7(rin, ropt).final_state, s0, 0);
  expect_close("rwkv7 grad_initial_state", ssm::rwkv7_backward(rin, v, ds0.view(), ropt).grad_initial_state, s0, 0);
  ssm::TttLinearInputs tin;  // TTT-Linear: d = dk, the state (d + 1, d)
  const Tensor tq = Tensor::empty({b, 0, h, dk}, DType::f32, kCuda), teta = Tensor::empty({b, 0, h}, DType::f32, kCuda);
  const Tensor tw = random_tensor({h, dk}, DType::f32, rng, 0.5f, 1.5f).to(kCuda),
               tb = Tensor::zeros({h, dk}, DType::f32, kCuda);
  const Tensor w0 = random_tensor({b, h, dk + 1, dk}, DType::f32, rng, -1, 1),
               a0 = random_tensor({b, h, dk + 1, dk}, DType::f32, rng, -1, 1);
  const Tensor dw0 = w0.to(kCuda), da0 = a0.to(kCuda);
  tin.q = tq, tin.k = tq, tin.v = tq, tin.eta = teta, tin.ln_weight = tw, tin.ln_bias = tb;
  tin.initial_state = dw0.view(), tin.initial_pending = da0.view();
  ssm::TttLinearOptions topt;
  topt.return_final_state = true;
  const ssm::TttLinearOutputs tr = ssm::ttt_linear(tin, topt);
  expect_close("ttt_linear final_state", tr.final_state, w0, 0);
  expect_close("ttt_linear final_pending", tr.final_pending, a0, 0);
  const ssm::TttLinearGrads tg = ssm::ttt_linear_backward(tin, tq, dw0.view(), da0.view(), topt);
  expect_close("ttt_linear grad_initial_state", tg.grad_initial_state, w0, 0);
  expect_close("ttt_linear grad_initial_pending", tg.grad_initial_pending, a0, 0);
  expect_close("ttt_linear grad_ln_weight", tg.grad_ln_weight, Tensor::zeros({h, dk}, DType::f32), 0);
  expect_close("ttt_linear grad_ln_bias", tg.grad_ln_bias, Tensor::zeros({h, dk}, DType::f32), 0);
  // SSD, whose plan checked its per-step pointers even with no steps
  const Tensor x = Tensor::empty({b, 0, h, dv}, DType::f32, kCuda), dt = Tensor::empty({b, 0, h}, DType::f32, kCuda);
  const Tensor A = random_tensor({h}, DType::f32, rng, -1, -0.1f).to(kCuda);
  const Tensor h0 = random_tensor({b, h, dv, dk}, DType::f32, rng, -1, 1), dh0 = h0.to(kCuda);
  ssm::SsdInputs sin;
  sin.x = x, sin.dt = dt, sin.A = A, sin.B = q, sin.C = k, sin.initial_state = dh0.view();
  ssm::SsdOptions sopt;
  sopt.return_final_state = true;
  expect_close("ssd final_state", ssm::ssd(sin, sopt).final_state, h0, 0);
}

/// The decode step on emulated CUDA tensors, token by token with the state and normalizer updated in place, against
/// the same steps on the CPU (retention with the normalizer, groups, bf16 inputs).
TEST(CudaOpsEmu, LinearAttentionStepTokenByToken) {
  const index_t b = 2, h = 4, g = 2, dk = 5, dv = 3, steps = 6;
  std::mt19937 rng(31);
  ssm::LinearAttentionOptions opt;
  opt.normalize = true, opt.gamma = ssm::retention_gammas(h), opt.feature_map = ssm::FeatureMap::elu_plus_one;
  Tensor state = random_tensor({b, h, dk, dv}, DType::f32, rng, -1, 1);  // (b, h, dk, dv)
  Tensor norm = random_tensor({b, h, dk}, DType::f32, rng, 0.1f, 1);     // (b, h, dk)
  ScopedEmulatedCuda guard(Order::random, 32);
  Tensor dstate = state.to(kCuda), dnorm = norm.to(kCuda);
  for (index_t t = 0; t < steps; ++t) {
    const Tensor q = random_tensor({b, g, dk}, DType::bf16, rng, -1, 1),
                 k = random_tensor({b, g, dk}, DType::bf16, rng, -1, 1);
    const Tensor v = random_tensor({b, h, dv}, DType::bf16, rng, -1, 1);
    Tensor out = Tensor::empty({b, h, dv}, DType::bf16), dout = Tensor::empty({b, h, dv}, DType::bf16, kCuda);
    ssm::linear_attention_step(q, k, v, state, norm.view(), out, opt);
    const Tensor dq = q.to(kCuda), dk_ = k.to(kCuda), dv_ = v.to(kCuda);
    ssm::linear_attention_step(dq, dk_, dv_, dstate, dnorm.view(), dout, opt);
    const std::string at = " (step " + std::to_string(t) + ")";
    expect_close("out" + at, dout, out, 1e-5, ulp(DType::bf16));
    expect_close("state" + at, dstate, state, 1e-5);
    expect_close("normalizer" + at, dnorm, norm, 1e-5);
  }
}

TEST(CudaOpsEmu, LinearAttentionRefusesWhatTheKernelsCannotTake) {
  ScopedEmulatedCuda guard;
  std::mt19937 rng(41);
  const auto on = [&](const ssm::Dims& shape, DType dt) { return random_tensor(shape, dt, rng, -1, 0).to(kCuda); };
  ssm::LinearAttentionInputs in;
  const Tensor q = on({1, 4, 1, 3}, DType::f32), k = on({1, 4, 1, 3}, DType::f32), v = on({1, 4, 2, 2}, DType::f32);
  const Tensor gate = on({1, 4, 2, 3}, DType::f32);
  in.q = q, in.k = k, in.v = v, in.log_gate = gate.view();
  const Tensor bad_gate = random_tensor({1, 4, 2, 3}, DType::f32, rng, 0.1f, 1).to(kCuda);  // checked on the host
  in.log_gate = bad_gate.view();
  expect_error([&] { (void)ssm::linear_attention(in); }, "argument 'log_gate': every log gate must be");
  const Tensor q64 = on({1, 4, 1, 3}, DType::f64), k64 = on({1, 4, 1, 3}, DType::f64),
               v64 = on({1, 4, 2, 2}, DType::f64);
  ssm::LinearAttentionInputs in64;
  in64.q = q64, in64.k = k64, in64.v = v64;
  expect_error([&] { (void)ssm::linear_attention(in64); }, "argument 'v': f64 has no CUDA path");
}

// ---- the delta rule ------------------------------------------------------------------------------------------------

/// Gated DeltaNet's forward and backward on emulated CUDA tensors against the token loop in double. The conformance
/// cases (tests/conformance/ops/delta_rule.cpp) have dv < 32; here dv = 100 spans four blocks of value columns and,
/// with dk = 36, the backward's solve has more columns (136) than a block has threads; packed sequences (37 and 113
/// steps) make chunks of 64 with ragged ends, two groups of two heads share q and k, the initial states come in, the
/// final ones go out, and gradients come in for out and the final states.
TEST(CudaOpsEmu, DeltaRuleAcrossColumnBlocks) {
  delta_rule_problem::DrCase s;
  s.b = 1, s.l = 150, s.h = 4, s.g = 2, s.dk = 36, s.dv = 100, s.dtype = DType::f32, s.seed = 51;
  s.gated = s.has_init = true, s.scale = 0.5, s.cu = {0, 37, 150};
  const delta_rule_problem::DrData host = delta_rule_problem::make_data(s);
  ssm::DeltaRuleOptions opt = host.options();
  opt.chunk_size = 64, opt.return_final_state = true, opt.path = ssm::DeltaRulePath::reference;
  const ssm::DeltaRuleOutputs ref = ssm::delta_rule(host.inputs(), opt);
  std::mt19937_64 grng(53);
  const Tensor grad_out = delta_rule_problem::uniform(grng, {s.b, s.l, s.h, s.dv}, DType::f32, -1, 1);
  const Tensor grad_state = delta_rule_problem::uniform(grng, {2, s.h, s.dk, s.dv}, DType::f32, -1, 1);
  const ssm::DeltaRuleGrads gref = ssm::delta_rule_backward(host.inputs(), grad_out, grad_state.view(), opt);

  ScopedEmulatedCuda guard(Order::random, 52);
  const Tensor q = host.q.to(kCuda), k = host.k.to(kCuda), v = host.v.to(kCuda), beta = host.beta.to(kCuda);
  const Tensor g = host.g.to(kCuda), s0 = host.initial_state.to(kCuda);
  ssm::DeltaRuleInputs in = host.inputs();  // cu_seqlens stays on the host
  in.q = q, in.k = k, in.v = v, in.beta = beta, in.g = g.view(), in.initial_state = s0.view();
  opt.path = ssm::DeltaRulePath::automatic;
  const ssm::DeltaRuleOutputs got = ssm::delta_rule(in, opt);
  EXPECT_EQ(got.path, "cuda");
  expect_close("out", got.out, ref.out, 1e-5);
  expect_close("final_state", got.final_state, ref.final_state, 1e-5);
  const Tensor gout = grad_out.to(kCuda), gstate = grad_state.to(kCuda);
  const ssm::DeltaRuleGrads ggot = ssm::delta_rule_backward(in, gout, gstate.view(), opt);
  EXPECT_EQ(ggot.path, "cuda");
  expect_close("grad_q", ggot.grad_q, gref.grad_q, 1e-4);
  expect_close("grad_k", ggot.grad_k, gref.grad_k, 1e-4);
  expect_close("grad_v", ggot.grad_v, gref.grad_v, 1e-4);
  expect_close("grad_beta", ggot.grad_beta, gref.grad_beta, 1e-4);
  expect_close("grad_g", ggot.grad_g, gref.grad_g, 1e-4);
  expect_close("grad_initial_state", ggot.grad_initial_state, gref.grad_initial_state, 1e-4);
}

/// The decode step on emulated CUDA tensors, token by token with the state updated in place, against the same steps
/// on the CPU (Gated DeltaNet, groups, bf16 inputs).
TEST(CudaOpsEmu, DeltaRuleStepTokenByToken) {
  const index_t b = 2, h = 4, g = 2, dk = 5, dv = 3, steps = 6;
  std::mt19937 rng(61);
  Tensor state = random_tensor({b, h, dk, dv}, DType::f32, rng, -1, 1);  // (b, h, dk, dv)
  ScopedEmulatedCuda guard(Order::random, 62);
  Tensor dstate = state.to(kCuda);
  for (index_t t = 0; t < steps; ++t) {
    const Tensor q = random_tensor({b, g, dk}, DType::bf16, rng, -1, 1),
                 k = random_tensor({b, g, dk}, DType::bf16, rng, -1, 1);
    const Tensor v = random_tensor({b, h, dv}, DType::bf16, rng, -1, 1);
    const Tensor beta = random_tensor({b, h}, DType::bf16, rng, 0.1f, 1.9f),
                 gl = random_tensor({b, h}, DType::bf16, rng, -0.5f, 0);
    Tensor out = Tensor::empty({b, h, dv}, DType::bf16), dout = Tensor::empty({b, h, dv}, DType::bf16, kCuda);
    ssm::delta_rule_step(q, k, v, beta, gl.view(), state, out);
    const Tensor dq = q.to(kCuda), dk_ = k.to(kCuda), dv_ = v.to(kCuda), dbeta = beta.to(kCuda), dg = gl.to(kCuda);
    ssm::delta_rule_step(dq, dk_, dv_, dbeta, dg.view(), dstate, dout);
    const std::string at = " (step " + std::to_string(t) + ")";
    expect_close("out" + at, dout, out, 1e-5, ulp(DType::bf16));
    expect_close("state" + at, dstate, state, 1e-5);
  }
}

TEST(CudaOpsEmu, DeltaRuleRefusesWhatTheKernelsCannotTake) {
  ScopedEmulatedCuda guard;
  std::mt19937 rng(71);
  const auto on = [&](const ssm::Dims& shape, DType dt, float lo, float hi) {
    return random_tensor(shape, dt, rng, lo, hi).to(kCuda);
  };
  const Tensor q = on({1, 4, 1, 3}, DType::f32, -1, 1), k = on({1, 4, 1, 3}, DType::f32, -1, 1);
  const Tensor v = on({1, 4, 2, 2}, DType::f32, -1, 1), beta = on({1, 4, 2}, DType::f32, 0.1f, 1.9f);
  ssm::DeltaRuleInputs in;
  in.q = q, in.k = k, in.v = v, in.beta = beta;
  const Tensor bad_beta = on({1, 4, 2}, DType::f32, 2.5f, 3);  // β's values are checked on the host
  in.beta = bad_beta;
  expect_error([&] { (void)ssm::delta_rule(in); }, "argument 'beta': every β must be in (0, 2]");
  const Tensor q64 = on({1, 4, 1, 3}, DType::f64, -1, 1), k64 = on({1, 4, 1, 3}, DType::f64, -1, 1);
  const Tensor v64 = on({1, 4, 2, 2}, DType::f64, -1, 1), beta64 = on({1, 4, 2}, DType::f64, 0.1f, 1.9f);
  ssm::DeltaRuleInputs in64;
  in64.q = q64, in64.k = k64, in64.v = v64, in64.beta = beta64;
  expect_error([&] { (void)ssm::delta_rule(in64); }, "argument 'v': f64 has no CUDA path");
}

// ---- RWKV-7 -------------------------------------------------------------------------------------------------------

/// One RWKV-7 problem's forward and backward on emulated CUDA tensors against the token loop in double, with a
/// checkpoint interval of 16, initial states in, final states out, and gradients of out and of the final states.
void check_rwkv7_on_emulated_cuda(const rwkv7_problem::Rw7Case& s, std::uint64_t seed) {
  const rwkv7_problem::Rw7Data host = rwkv7_problem::make_data(s);
  ssm::Rwkv7Options opt = host.options();
  opt.chunk_size = 16, opt.return_final_state = true, opt.path = ssm::Rwkv7Path::reference;
  const ssm::Rwkv7Outputs ref = ssm::rwkv7(host.inputs(), opt);
  std::mt19937_64 grng(seed);
  const Tensor grad_out = rwkv7_problem::uniform(grng, {s.b, s.l, s.h, s.dv}, DType::f32, -1, 1);
  const Tensor grad_state = rwkv7_problem::uniform(grng, {s.rows(), s.h, s.dk, s.dv}, DType::f32, -1, 1);
  const ssm::Rwkv7Grads gref = ssm::rwkv7_backward(host.inputs(), grad_out, grad_state.view(), opt);

  ScopedEmulatedCuda guard(Order::random, seed + 1);
  const Tensor q = host.q.to(kCuda), k = host.k.to(kCuda), v = host.v.to(kCuda), lw = host.log_w.to(kCuda);
  const Tensor a = host.a.to(kCuda), b = host.b.to(kCuda), s0 = host.initial_state.to(kCuda);
  ssm::Rwkv7Inputs in = host.inputs();  // cu_seqlens stays on the host
  in.q = q, in.k = k, in.v = v, in.log_w = lw, in.a = a, in.b = b, in.initial_state = s0.view();
  opt.path = ssm::Rwkv7Path::automatic;
  const ssm::Rwkv7Outputs got = ssm::rwkv7(in, opt);
  EXPECT_EQ(got.path, "cuda");
  expect_close("out", got.out, ref.out, 1e-5);
  expect_close("final_state", got.final_state, ref.final_state, 1e-5);
  const Tensor gout = grad_out.to(kCuda), gstate = grad_state.to(kCuda);
  const ssm::Rwkv7Grads ggot = ssm::rwkv7_backward(in, gout, gstate.view(), opt);
  EXPECT_EQ(ggot.path, "cuda");
  expect_close("grad_q", ggot.grad_q, gref.grad_q, 1e-4);
  expect_close("grad_k", ggot.grad_k, gref.grad_k, 1e-4);
  expect_close("grad_v", ggot.grad_v, gref.grad_v, 1e-4);
  expect_close("grad_log_w", ggot.grad_log_w, gref.grad_log_w, 1e-4);
  expect_close("grad_a", ggot.grad_a, gref.grad_a, 1e-4);
  expect_close("grad_b", ggot.grad_b, gref.grad_b, 1e-4);
  expect_close("grad_initial_state", ggot.grad_initial_state, gref.grad_initial_state, 1e-4);
}

/// The conformance cases (tests/conformance/ops/rwkv7.cpp) have dv < 32. Here dv = 70 spans three warps of value
/// columns in the backward's one block per head (the last warp partial, its idle lanes still in the warp's sums), with
/// dk = 24 and packed sequences (37 and 53 steps) whose lengths 16 divides neither, and fast decays; then dv = 140
/// takes two blocks per head (128 + 12 columns), so the blocks' partial sums and their kernel, and dk = 70 two tiles of
/// key channels in the block's sum. (Small enough for the sanitizers' build: every shuffle is emulated.)
TEST(CudaOpsEmu, Rwkv7AcrossColumnBlocks) {
  rwkv7_problem::Rw7Case s;  // one block of three warps per head, the last partial
  s.b = 1, s.l = 90, s.h = 2, s.dk = 24, s.dv = 70, s.dtype = DType::f32, s.seed = 101;
  s.has_init = true, s.scale = 0.5, s.log_w_min = -4, s.cu = {0, 37, 90};
  {
    SCOPED_TRACE("dv = 70: one block per head");
    check_rwkv7_on_emulated_cuda(s, 102);
  }
  s.l = 20, s.h = 1, s.dk = 70, s.dv = 140, s.seed = 104, s.cu = {0, 9, 20};  // two blocks, two tiles of key channels
  SCOPED_TRACE("dv = 140: two blocks and their partial sums");
  check_rwkv7_on_emulated_cuda(s, 105);
}

/// The decode step on emulated CUDA tensors, token by token with the state updated in place, against the same steps on
/// the CPU (bf16 inputs); then the refusals: a positive log decay (checked on a host copy) and f64.
TEST(CudaOpsEmu, Rwkv7StepTokenByTokenAndRefusals) {
  const index_t b = 2, h = 3, dk = 5, dv = 4, steps = 6;
  std::mt19937 rng(111);
  Tensor state = random_tensor({b, h, dk, dv}, DType::f32, rng, -1, 1);  // (b, h, dk, dv)
  ScopedEmulatedCuda guard(Order::random, 112);
  Tensor dstate = state.to(kCuda);
  const auto one = [&](DType dt, float lo, float hi) { return random_tensor({b, h, dk}, dt, rng, lo, hi); };
  for (index_t t = 0; t < steps; ++t) {
    const Tensor q = one(DType::bf16, -1, 1), k = one(DType::bf16, -1, 1), lw = one(DType::bf16, -2, 0);
    const Tensor a = one(DType::bf16, -1, 0), bb = one(DType::bf16, 0, 1);
    const Tensor v = random_tensor({b, h, dv}, DType::bf16, rng, -1, 1);
    Tensor out = Tensor::empty({b, h, dv}, DType::bf16), dout = Tensor::empty({b, h, dv}, DType::bf16, kCuda);
    ssm::rwkv7_step(q, k, v, lw, a, bb, state, out);
    ssm::rwkv7_step(q.to(kCuda), k.to(kCuda), v.to(kCuda), lw.to(kCuda), a.to(kCuda), bb.to(kCuda), dstate, dout);
    const std::string at = " (step " + std::to_string(t) + ")";
    expect_close("out" + at, dout, out, 1e-5, ulp(DType::bf16));
    expect_close("state" + at, dstate, state, 1e-5);
  }
  const auto on = [&](const ssm::Dims& shape, DType dt, float lo, float hi) {
    return random_tensor(shape, dt, rng, lo, hi).to(kCuda);
  };
  for (DType dt : {DType::f32, DType::f64}) {
    const Tensor q = on({1, 4, 2, 3}, dt, -1, 1), k = on({1, 4, 2, 3}, dt, -1, 1), v = on({1, 4, 2, 2}, dt, -1, 1);
    const Tensor lw = on({1, 4, 2, 3}, dt, dt == DType::f32 ? 0.1f : -1, dt == DType::f32 ? 1 : 0);
    const Tensor a = on({1, 4, 2, 3}, dt, -1, 1), bb = on({1, 4, 2, 3}, dt, -1, 1);
    ssm::Rwkv7Inputs in;
    in.q = q, in.k = k, in.v = v, in.log_w = lw, in.a = a, in.b = bb;
    expect_error([&] { (void)ssm::rwkv7(in); }, dt == DType::f32 ? "argument 'log_w': every log decay must be"
                                                                : "argument 'v': f64 has no CUDA path");
  }
}

// ---- TTT-Linear ---------------------------------------------------------------------------------------------------

/// TTT-Linear's forward and backward on emulated CUDA tensors against the primal form in double. The conformance cases
/// (tests/conformance/ops/ttt_linear.cpp) have d < 8; here d = 70 gives the block's 64 threads two columns (and rows)
/// each (the second set partial), packed sequences (19 and 31 steps) cross mini-batches of 8 from position 5, with
/// position weights, an initial state and pending sum in and the final ones out, and incoming gradients of all three
/// outputs; then the decode step token by token against the CPU's step (bf16 inputs), and the refusals.
TEST(CudaOpsEmu, TttLinearForwardBackwardAndStep) {
  ttt_linear_problem::TttCase s;
  s.b = 1, s.l = 50, s.h = 2, s.dk = 70, s.dtype = DType::f32, s.seed = 121;
  s.m = 8, s.start = 5, s.has_tau = s.has_init = s.has_pending = true, s.cu = {0, 19, 50};
  const ttt_linear_problem::TttData host = ttt_linear_problem::make_data(s);
  ssm::TttLinearOptions opt = host.options();
  opt.return_final_state = true, opt.path = ssm::TttLinearPath::reference;
  const ssm::TttLinearOutputs ref = ssm::ttt_linear(host.inputs(), opt);
  {
    ScopedEmulatedCuda guard(Order::random, 122);
    const Tensor q = host.q.to(kCuda), k = host.k.to(kCuda), v = host.v.to(kCuda), eta = host.eta.to(kCuda);
    const Tensor lw = host.ln_weight.to(kCuda), lb = host.ln_bias.to(kCuda), tau = host.tau.to(kCuda);
    const Tensor s0 = host.initial_state.to(kCuda), a0 = host.initial_pending.to(kCuda);
    ssm::TttLinearInputs in = host.inputs();  // cu_seqlens stays on the host
    in.q = q, in.k = k, in.v = v, in.eta = eta, in.ln_weight = lw, in.ln_bias = lb, in.position_weights = tau.view();
    in.initial_state = s0.view(), in.initial_pending = a0.view();
    opt.path = ssm::TttLinearPath::automatic;
    const ssm::TttLinearOutputs got = ssm::ttt_linear(in, opt);
    EXPECT_EQ(got.path, "cuda");
    expect_close("out", got.out, ref.out, 1e-5);
    expect_close("final_state", got.final_state, ref.final_state, 1e-5);
    expect_close("final_pending", got.final_pending, ref.final_pending, 1e-5);
    std::mt19937 brng(125);
    const Tensor grad_out = random_tensor(host.v.shape(), DType::f32, brng, -1, 1);
    const Tensor gfs = random_tensor(ref.final_state.shape(), DType::f32, brng, -1, 1),
                 gfp = random_tensor(ref.final_pending.shape(), DType::f32, brng, -1, 1);
    opt.path = ssm::TttLinearPath::reference;
    const ssm::TttLinearGrads gref = ssm::ttt_linear_backward(host.inputs(), grad_out, gfs.view(), gfp.view(), opt);
    opt.path = ssm::TttLinearPath::automatic;
    const Tensor dgo = grad_out.to(kCuda), dgfs = gfs.to(kCuda), dgfp = gfp.to(kCuda);
    const ssm::TttLinearGrads ggot = ssm::ttt_linear_backward(in, dgo, dgfs.view(), dgfp.view(), opt);
    EXPECT_EQ(ggot.path, "cuda");
    for (const auto& [nm, got, want] :
         {std::tuple{"grad_q", &ggot.grad_q, &gref.grad_q}, std::tuple{"grad_k", &ggot.grad_k, &gref.grad_k},
          std::tuple{"grad_v", &ggot.grad_v, &gref.grad_v}, std::tuple{"grad_eta", &ggot.grad_eta, &gref.grad_eta},
          std::tuple{"grad_ln_weight", &ggot.grad_ln_weight, &gref.grad_ln_weight},
          std::tuple{"grad_ln_bias", &ggot.grad_ln_bias, &gref.grad_ln_bias},
          std::tuple{"grad_position_weights", &ggot.grad_position_weights, &gref.grad_position_weights},
          std::tuple{"grad_initial_state", &ggot.grad_initial_state, &gref.grad_initial_state},
          std::tuple{"grad_initial_pending", &ggot.grad_initial_pending, &gref.grad_initial_pending}})
      expect_close(nm, *got, *want, 1e-4);
    const Tensor bad_eta = random_tensor(host.eta.shape(), DType::f32, brng, -1, -0.1f).to(kCuda);
    in.eta = bad_eta;  // checked on a host copy
    expect_error([&] { (void)ssm::ttt_linear(in, opt); }, "argument 'eta': every learning rate must be");
    ttt_linear_problem::TttCase s64 = s;
    s64.dtype = DType::f64, s64.cu = {}, s64.has_tau = s64.has_init = s64.has_pending = false;
    const ttt_linear_problem::TttData h64 = ttt_linear_problem::make_data(s64);
    const Tensor q64 = h64.q.to(kCuda), k64 = h64.k.to(kCuda), v64 = h64.v.to(kCuda), e64 = h64.eta.to(kCuda);
    const Tensor w64 = h64.ln_weight.to(kCuda), b64 = h64.ln_bias.to(kCuda);
    ssm::TttLinearInputs in64;
    in64.q = q64, in64.k = k64, in64.v = v64, in64.eta = e64, in64.ln_weight = w64, in64.ln_bias = b64;
    expect_error([&] { (void)ssm::ttt_linear(in64, h64.options()); }, "argument 'v': f64 has no CUDA path");
  }
  const index_t b = 2, h = 2, d = 6, m = 3;
  std::mt19937 rng(123);
  Tensor state = random_tensor({b, h, d + 1, d}, DType::f32, rng, -0.5f, 0.5f),
         pending = Tensor::zeros({b, h, d + 1, d}, DType::f32);
  const Tensor lw = random_tensor({h, d}, DType::f32, rng, 0.5f, 1.5f),
               lb = random_tensor({h, d}, DType::f32, rng, -0.5f, 0.5f);
  ScopedEmulatedCuda guard(Order::random, 124);
  Tensor dstate = state.to(kCuda), dpending = pending.to(kCuda);
  const Tensor dlw = lw.to(kCuda), dlb = lb.to(kCuda);
  ssm::TttLinearOptions sopt;
  sopt.mini_batch_size = m;
  for (index_t t = 0; t < 7; ++t) {  // across two mini-batch ends
    const Tensor q = random_tensor({b, h, d}, DType::bf16, rng, -1, 1),
                 k = random_tensor({b, h, d}, DType::bf16, rng, -1, 1);
    const Tensor v = random_tensor({b, h, d}, DType::bf16, rng, -1, 1),
                 eta = random_tensor({b, h}, DType::bf16, rng, 0, 0.5f);
    Tensor out = Tensor::empty({b, h, d}, DType::bf16), dout = Tensor::empty({b, h, d}, DType::bf16, kCuda);
    ssm::TttLinearInputs in;
    in.q = q, in.k = k, in.v = v, in.eta = eta, in.ln_weight = lw, in.ln_bias = lb;
    ssm::ttt_linear_step(in, state, pending, t, out, sopt);
    const Tensor dq = q.to(kCuda), dk_ = k.to(kCuda), dv_ = v.to(kCuda), deta = eta.to(kCuda);
    ssm::TttLinearInputs din;
    din.q = dq, din.k = dk_, din.v = dv_, din.eta = deta, din.ln_weight = dlw, din.ln_bias = dlb;
    ssm::ttt_linear_step(din, dstate, dpending, t, dout, sopt);
    const std::string at = " (step " + std::to_string(t) + ")";
    expect_close("step out" + at, dout, out, 1e-5, ulp(DType::bf16));
    expect_close("step state" + at, dstate, state, 1e-5);
    expect_close("step pending" + at, dpending, pending, 1e-5);
  }
}

TEST(CudaOpsEmu, EmbeddingChecksTheIdsOnTheHost) {
  ScopedEmulatedCuda guard;
  std::mt19937 rng(91);
  const Tensor table = random_tensor({5, 3}, DType::f32, rng, -1, 1).to(kCuda);  // (vocab 5, dim 3)
  for (std::int64_t bad : {5, -1}) {
    const Tensor ids = Tensor::from_vector({3}, std::vector<std::int64_t>{0, bad, 4}).to(kCuda);
    expect_error([&] { (void)ssm::embedding(ids, table); },
                 "argument 'ids': token id " + std::to_string(bad) + " at position 1 is outside [0, 5)");
  }
  const Tensor ids32 = Tensor::from_vector({2}, std::vector<std::int32_t>{4, 7}).to(kCuda);
  expect_error([&] { (void)ssm::embedding(ids32, table); }, "token id 7 at position 1");
}

TEST(CudaOpsEmu, LinearRefusesOverlappingOutputRows) {
  // The op itself takes any row stride; cuBLAS (and the 16-bit weight kernel) write whole rows of out elements.
  ScopedEmulatedCuda guard;
  std::mt19937 rng(92);
  const Tensor x = random_tensor({2, 3}, DType::f32, rng, -1, 1).to(kCuda);
  const Tensor y = Tensor::empty({8}, DType::f32, kCuda);
  const ssm::TensorView y_overlapping(y.data(), DType::f32, kCuda, {2, 4}, {2, 1});  // rows 2 apart, 4 wide
  for (DType w : {DType::f32, DType::bf16}) {
    const Tensor weight = random_tensor({4, 3}, w, rng, -1, 1).to(kCuda);
    expect_error([&] { (void)ssm::linear_into({x, weight, std::nullopt}, y_overlapping); },
                 "y's row stride must be");
  }
}

}  // namespace
