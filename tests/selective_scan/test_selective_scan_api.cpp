// The op's small traps (issue #22), each of which used to be silent: a path that complex A cannot run,
// save_chunk_states where nothing is saved, mamba's interleaved (re, im) layout of complex variable B / C,
// and the backward's options without a grad_last_state. Each now works or is an ssm::Error naming the argument.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <complex>
#include <random>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "scan_test_util.hpp"
#include "support/expect_error.hpp"

namespace {

using ssm_test::expect_error;

using namespace scan_test;
using ssm::ScanPath;
using ssm::SelectiveScanInputs;
using ssm::SelectiveScanOptions;


bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// ---------------------------------------------------------------------------------------------------
// 1. Complex A and the requested path.

TEST(SelectiveScanApi, ComplexAChunkedPathIsRefusedSequentialRuns) {
  ScanCase c;
  c.dtype = DType::f32, c.complex = true, c.b = 2, c.d = 4, c.l = 9, c.n = 3, c.g = 2, c.has_init = true;
  const ScanData s = make_data(c);
  const auto ref = run(s, ScanPath::reference);
  for (ScanPath path : {ScanPath::automatic, ScanPath::sequential}) {  // the complex loop is the sequential scan
    const auto r = run(s, path, 2);
    EXPECT_EQ(r.path, "cpu-scalar-complex");
    EXPECT_LE(rel_err(r.out, ref.out), 1e-5);
  }
  expect_error([&] { run(s, ScanPath::chunked, 2); },
               {"selective_scan: argument 'path'", "complex A", "ScanPath::sequential"});
  SelectiveScanOptions o;
  o.path = ScanPath::chunked;
  expect_error([&] { ssm::selective_scan_backward(s.inputs(), s.u, std::nullopt, o); },
               {"selective_scan_backward: argument 'path'", "complex A", "ScanPath::sequential"});
  o.path = ScanPath::sequential;
  EXPECT_EQ(ssm::selective_scan_backward(s.inputs(), s.u, std::nullopt, o).path, "cpu-per-channel");
}

// ---------------------------------------------------------------------------------------------------
// 2. save_chunk_states: saved wherever asked, or an error.

TEST(SelectiveScanApi, SaveChunkStatesMakesAutomaticRunTheSequentialPath) {
  // One channel block, 8192 steps, 2 threads: automatic alone splits the sequence in time (chunked), which
  // saves nothing; with save_chunk_states it runs the sequential path and returns the states.
  ScanCase c;
  c.dtype = DType::f32, c.b = 1, c.d = 3, c.l = 8192, c.n = 4, c.has_D = c.has_init = true;
  const ScanData s = make_data(c);
  SelectiveScanOptions o;
  o.num_threads = 2;
  ASSERT_TRUE(ends_with(ssm::selective_scan(s.inputs(), o).path, "-chunked"));  // the case this test is about
  o.save_chunk_states = true;
  const auto r = ssm::selective_scan(s.inputs(), o);
  EXPECT_TRUE(ends_with(r.path, "-sequential")) << r.path;
  ASSERT_TRUE(r.chunk_states.defined()) << r.path;
  EXPECT_EQ(r.chunk_states.shape(), (ssm::Dims{1, 3, 64, 4}));
  o.path = ScanPath::sequential;
  const auto seq = ssm::selective_scan(s.inputs(), o);
  EXPECT_EQ(rel_err(r.chunk_states, seq.chunk_states), 0.0);
  // and the backward restarting from them gives the gradients of the one that recomputes them
  SelectiveScanOptions bo;
  bo.num_threads = 2;
  const auto recomputed = ssm::selective_scan_backward(s.inputs(), s.u, std::nullopt, bo);
  bo.chunk_states = r.chunk_states.view();
  const auto g = ssm::selective_scan_backward(s.inputs(), s.u, std::nullopt, bo);
  EXPECT_LE(rel_err(g.grad_u, recomputed.grad_u), 1e-5);
  EXPECT_LE(rel_err(g.grad_A, recomputed.grad_A), 1e-5);
  EXPECT_LE(rel_err(g.grad_B, recomputed.grad_B), 1e-5);
}

TEST(SelectiveScanApi, SaveChunkStatesWhereNothingCanBeSavedIsAnError) {
  SelectiveScanOptions save;
  save.save_chunk_states = true;
  ScanCase cc;
  cc.dtype = DType::f32, cc.complex = true, cc.l = 9;
  const ScanData sc = make_data(cc);
  expect_error([&] { ssm::selective_scan(sc.inputs(), save); }, {"argument 'save_chunk_states'", "complex A"});

  ScanCase rc;
  rc.dtype = DType::f32, rc.b = 1, rc.d = 3, rc.l = 300, rc.n = 4;
  const ScanData sr = make_data(rc);
  for (ScanPath path : {ScanPath::chunked, ScanPath::reference}) {
    SelectiveScanOptions o = save;
    o.path = path;
    expect_error([&] { ssm::selective_scan(sr.inputs(), o); },
                 {"argument 'save_chunk_states'", "ScanPath::sequential or ScanPath::automatic"});
  }
  rc.cu = {0, 100, 300};
  const ScanData sv = make_data(rc);
  expect_error([&] { ssm::selective_scan(sv.inputs(), save); }, {"argument 'save_chunk_states'", "cu_seqlens"});
  // selective_scan_into needs somewhere to put them
  Tensor out = Tensor::empty({1, 3, 300}, DType::f32);
  expect_error([&] { ssm::selective_scan_into(sr.inputs(), out, std::nullopt, save); },
               {"argument 'save_chunk_states'", "chunk_states"});
  Tensor states;
  (void)ssm::selective_scan_into(sr.inputs(), out, std::nullopt, save, &states);
  ASSERT_TRUE(states.defined());
  EXPECT_EQ(states.shape(), (ssm::Dims{1, 3, 3, 4}));
}

// ---------------------------------------------------------------------------------------------------
// 3. mamba's interleaved layout of complex variable B / C: a real (b, g, n, 2l) or (b, n, 2l) tensor of the
// weight dtype with (re, im) of step t at [..., 2t] and [..., 2t + 1] (selective_scan_ref:
// view_as_complex(rearrange(B, "... (L two) -> ... L two", two=2))).

/// The interleaved real form of a contiguous complex tensor (..., l): (..., 2l), built element by element.
Tensor interleave(const Tensor& cx) {
  ssm::Dims shape = cx.shape();
  shape[shape.size() - 1] *= 2;
  const DType real = cx.dtype() == DType::c128 ? DType::f64 : DType::f32;
  Tensor r = Tensor::empty(shape, real);
  const std::vector<double> v = values(cx);  // re, im, re, im, ... in row-major order of cx
  const index_t l = cx.shape()[cx.shape().size() - 1];
  for (index_t i = 0; i < cx.numel(); ++i) {
    const index_t row = i / l, t = i % l;
    set(r, row * 2 * l + 2 * t, v[static_cast<std::size_t>(2 * i)]);
    set(r, row * 2 * l + 2 * t + 1, v[static_cast<std::size_t>(2 * i + 1)]);
  }
  return r;
}

TEST(SelectiveScanApi, InterleavedComplexBCEqualTheComplexTensors) {
  for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
    for (bool rank3 : {false, true}) {
      ScanCase c;
      c.dtype = dt, c.complex = true, c.b = 2, c.d = 4, c.l = 7, c.n = 3, c.g = rank3 ? 1 : 2, c.rank3_BC = rank3;
      c.has_D = c.has_z = c.has_init = c.has_bias = c.softplus = true;
      SCOPED_TRACE(describe(c));
      const ScanData s = make_data(c);
      const Tensor Bi = interleave(s.B), Ci = interleave(s.C);
      SelectiveScanInputs in = s.inputs();
      in.B = Bi;
      in.C = Ci;
      for (ScanPath path : {ScanPath::reference, ScanPath::automatic}) {
        const auto want = run(s, path);
        SelectiveScanOptions o;
        o.path = path;
        o.return_last_state = true;
        const auto got = ssm::selective_scan(in, o);
        EXPECT_EQ(got.path, want.path);
        EXPECT_EQ(rel_err(got.out, want.out), 0.0) << got.path;
        EXPECT_EQ(rel_err(got.last_state, want.last_state), 0.0) << got.path;
        // the backward: gradients of B and C in the layout they came in (real, (.., 2l)), the same numbers
        const auto gw = ssm::selective_scan_backward(s.inputs(), s.u, std::nullopt, o);
        const auto gg = ssm::selective_scan_backward(in, s.u, std::nullopt, o);
        EXPECT_EQ(gg.grad_B.shape(), Bi.shape());
        EXPECT_EQ(gg.grad_B.dtype(), Bi.dtype());
        EXPECT_EQ(gg.grad_C.shape(), Ci.shape());
        EXPECT_EQ(rel_err(gg.grad_B, interleave(gw.grad_B)), 0.0);
        EXPECT_EQ(rel_err(gg.grad_C, interleave(gw.grad_C)), 0.0);
        EXPECT_EQ(rel_err(gg.grad_A, gw.grad_A), 0.0);
        EXPECT_EQ(rel_err(gg.grad_u, gw.grad_u), 0.0);
      }
    }
  }
}

TEST(SelectiveScanApi, InterleavedStridedViewAndBadLayouts) {
  ScanCase c;
  c.dtype = DType::f32, c.complex = true, c.b = 2, c.d = 4, c.l = 5, c.n = 3, c.g = 2, c.has_init = true;
  const ScanData s = make_data(c);
  const auto want = run(s, ScanPath::automatic);
  // B as every other n-row of a (2, 2, 6, 10) interleaved tensor: even strides, unit stride along 2l: accepted.
  const Tensor Bi = interleave(s.B);  // (2, 2, 3, 10)
  Tensor big = Tensor::zeros({2, 2, 6, 10}, DType::f32);
  const ssm::TensorView Bs(big.data(), DType::f32, ssm::Device::cpu(), {2, 2, 3, 10}, {120, 60, 20, 1});
  ssm::copy(Bs, Bi.view());
  const Tensor Ci = interleave(s.C);
  SelectiveScanInputs in = s.inputs();
  in.B = Bs;
  in.C = Ci;
  SelectiveScanOptions o;
  o.return_last_state = true;
  const auto got = ssm::selective_scan(in, o);
  EXPECT_EQ(rel_err(got.out, want.out), 0.0);
  EXPECT_EQ(rel_err(got.last_state, want.last_state), 0.0);

  const auto call = [&](const ssm::TensorView& B) {
    return [&s, B] {
      SelectiveScanInputs bad = s.inputs();
      bad.B = B;
      ssm::selective_scan(bad);
    };
  };
  // an odd stride cannot be seen as complex elements
  Tensor odd = Tensor::zeros({2, 2, 3, 11}, DType::f32);
  const ssm::TensorView Bodd(odd.data(), DType::f32, ssm::Device::cpu(), {2, 2, 3, 10}, {66, 33, 11, 1});
  expect_error(call(Bodd), {"argument 'B'", "interleaved", "even"});
  // the real form of length l (not 2l)
  Tensor half_len = Tensor::zeros({2, 2, 3, 5}, DType::f32);
  expect_error(call(half_len.view()), {"argument 'B'", "interleaved", "2l = 10"});
  // another real dtype than the weight dtype (f32 here): no zero-copy view; the message says how to convert
  Tensor f64 = Tensor::zeros({2, 2, 3, 10}, DType::f64);
  expect_error(call(f64.view()), {"argument 'B'", "c64", "interleaved", "f32"});
}

// ---------------------------------------------------------------------------------------------------
// 4. The backward's options without a grad_last_state.

TEST(SelectiveScanApi, BackwardTakesOptionsWithoutGradLastState) {
  ScanCase c;
  c.dtype = DType::f64, c.b = 1, c.d = 2, c.l = 6, c.n = 2, c.has_D = true;
  const ScanData s = make_data(c);
  SelectiveScanOptions o;
  o.path = ScanPath::reference;
  const auto g = ssm::selective_scan_backward(s.inputs(), s.u, o);
  EXPECT_EQ(g.path, "reference");
  const auto want = ssm::selective_scan_backward(s.inputs(), s.u, std::nullopt, o);
  EXPECT_EQ(rel_err(g.grad_u, want.grad_u), 0.0);
  EXPECT_EQ(rel_err(g.grad_A, want.grad_A), 0.0);
  o.num_threads = -1;  // the options are really used
  expect_error([&] { ssm::selective_scan_backward(s.inputs(), s.u, o); }, {"'num_threads'"});
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Channel-last operands (the Mamba block's time-major activations): u, delta, z, B, C and out as (b, d, l) views with
// unit stride along the channels run the CPU kernels on channel-major copies, so they give exactly the results of
// the same numbers passed channel-major, the initial and last states included.

namespace {

// t (b, k, l) with strides (l · ld, 1, ld): column `offset` on of a time-major buffer (b, l, ld).
ssm::TensorView channel_last(const ssm::Tensor& buf, ssm::index_t offset, ssm::index_t k) {
  const ssm::index_t b = buf.size(0), l = buf.size(1), ld = buf.size(2);
  return ssm::TensorView(buf.data_as<float>() + offset, ssm::DType::f32, ssm::Device::cpu(), {b, k, l}, {l * ld, 1, ld});
}

ssm::Tensor contiguous_copy(const ssm::TensorView& v) {
  ssm::Tensor t = ssm::Tensor::empty(v.shape(), v.dtype());
  ssm::copy(t.view(), v);
  return t;
}

}  // namespace

TEST(SelectiveScanApi, ChannelLastOperandsEqualChannelMajor) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  auto random = [&](ssm::Dims shape) {
    std::vector<float> v(static_cast<std::size_t>(shape.product()));
    for (auto& x : v) x = dist(rng);
    return ssm::Tensor::from_vector(shape, v);
  };
  for (auto [b, d, n, l] : {std::array<ssm::index_t, 4>{2, 70, 4, 300}, {1, 5, 1, 9}, {3, 33, 16, 2}}) {
    SCOPED_TRACE("b " + std::to_string(b) + " d " + std::to_string(d) + " n " + std::to_string(n) + " l " + std::to_string(l));
    // One time-major buffer per role, wider than the operand (as the block's xz and x_proj outputs).
    const ssm::Tensor ux = random({b, l, 2 * d}), dt = random({b, l, d}), bc = random({b, l, 2 * n + 3});
    const ssm::Tensor A = random({d, n}), D = random({d}), bias = random({d}), h0 = random({b, d, n});
    for (ssm::index_t i = 0; i < d * n; ++i) A.data_as<float>()[i] = -0.1f - std::abs(A.data_as<float>()[i]);  // decaying
    SelectiveScanInputs cl;
    cl.u = channel_last(ux, 0, d), cl.z = channel_last(ux, d, d), cl.delta = channel_last(dt, 0, d);
    cl.B = channel_last(bc, 3, n), cl.C = channel_last(bc, 3 + n, n);
    cl.A = A.view(), cl.D = D.view(), cl.delta_bias = bias.view(), cl.delta_softplus = true;
    cl.initial_state = h0.view();
    const ssm::Tensor u = contiguous_copy(cl.u), z = contiguous_copy(*cl.z), delta = contiguous_copy(cl.delta);
    const ssm::Tensor B = contiguous_copy(cl.B), C = contiguous_copy(cl.C);
    SelectiveScanInputs cm = cl;
    cm.u = u.view(), cm.z = z.view(), cm.delta = delta.view(), cm.B = B.view(), cm.C = C.view();
    SelectiveScanOptions opt;
    opt.num_threads = 2;
    opt.return_last_state = true;
    const auto want = ssm::selective_scan(cm, opt);
    ssm::Tensor out_buf = ssm::Tensor::zeros({b, l, d + 1}, ssm::DType::f32);  // out channel-last, one spare column
    ssm::Tensor last = ssm::Tensor::empty({b, d, n}, ssm::DType::f32);
    const std::string path = ssm::selective_scan_into(cl, channel_last(out_buf, 1, d), last.view(), opt);
    EXPECT_EQ(path, want.path);
    const ssm::Tensor out = contiguous_copy(channel_last(out_buf, 1, d));
    EXPECT_EQ(out.to_vector<float>(), want.out.to_vector<float>());
    EXPECT_EQ(last.to_vector<float>(), want.last_state.to_vector<float>());
    for (ssm::index_t i = 0; i < b * l; ++i) ASSERT_EQ(out_buf.data_as<float>()[i * (d + 1)], 0.0f) << "spare column written";
  }
}
