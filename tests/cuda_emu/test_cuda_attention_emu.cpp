// The CUDA attention kernels (cuda/kernels/attention.cuh) under the host emulation, through the same launch
// sequences ssm::cuda::attention_forward / _backward use, against the double reference (reference/attention.hpp):
// the tiled forward (head dims 5 / 33 / 64 / 100 / 128 over the three kernel widths, causal and not, grouped-query,
// l_q < l_k, one query, tiles with ragged tails), the split-key decoding path (1 ... 4 queries over long caches,
// several slices), the backward (delta, grad_k / grad_v, grad_q), in every thread order, with strided q / k / v.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "attention_case.hpp"
#include "emu/executor.hpp"
#include "kernels/attention.cuh"
#include "ssm/reference/attention.hpp"

namespace {

using ssm::emu::Order;
using index_t = std::int64_t;

using emu_test::AttnCase;  // attention_case.hpp

/// A (b, l, heads, p) f32 tensor stored with padded strides (head stride p + 3, row stride heads (p + 3) + 1), so the
/// kernels' stride arithmetic is exercised; `dense` is the same values contiguous in double for the reference.
struct Strided {
  index_t b, l, heads, p, head_stride, seq_stride, batch_stride;
  std::vector<float> data;
  Strided(index_t b_, index_t l_, index_t heads_, index_t p_, float fill = 0.0f)
      : b(b_), l(l_), heads(heads_), p(p_), head_stride(p_ + 3), seq_stride(heads_ * (p_ + 3) + 1),
        batch_stride(l_ * (heads_ * (p_ + 3) + 1) + 5),
        data(static_cast<std::size_t>(std::max<index_t>(1, b_ * (l_ * (heads_ * (p_ + 3) + 1) + 5))), fill) {}
  float& at(index_t bi, index_t t, index_t hi, index_t e) {
    return data[static_cast<std::size_t>(bi * batch_stride + t * seq_stride + hi * head_stride + e)];
  }
  void randomize(std::mt19937& rng, float amp) {
    std::uniform_real_distribution<float> dist(-amp, amp);
    for (index_t bi = 0; bi < b; ++bi)
      for (index_t t = 0; t < l; ++t)
        for (index_t hi = 0; hi < heads; ++hi)
          for (index_t e = 0; e < p; ++e) at(bi, t, hi, e) = dist(rng);
  }
  std::vector<double> dense() {
    std::vector<double> out;
    out.reserve(static_cast<std::size_t>(b * l * heads * p));
    for (index_t bi = 0; bi < b; ++bi)
      for (index_t t = 0; t < l; ++t)
        for (index_t hi = 0; hi < heads; ++hi)
          for (index_t e = 0; e < p; ++e) out.push_back(at(bi, t, hi, e));
    return out;
  }
};

/// max |got - want| / max(max |want|, floor) over the dense layout.
double rel_error(const std::vector<double>& got, const std::vector<double>& want, double floor = 1e-3) {
  double err = 0, mag = floor;
  for (std::size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::abs(got[i] - want[i]));
    mag = std::max(mag, std::abs(want[i]));
  }
  return err / mag;
}

struct Problem {
  AttnCase c;
  Strided q, k, v, out, go, gq, gk, gv;
  std::vector<float> lse, delta, workspace;
  ssm::reference::AttentionDims dims;

  explicit Problem(const AttnCase& c_)
      : c(c_), q(c.b, c.l_q, c.h, c.p), k(c.b, c.l_k, c.h_kv, c.p), v(c.b, c.l_k, c.h_kv, c.p),
        out(c.b, c.l_q, c.h, c.p, -7.0f), go(c.b, c.l_q, c.h, c.p), gq(c.b, c.l_q, c.h, c.p, -7.0f),
        gk(c.b, c.l_k, c.h_kv, c.p, -7.0f), gv(c.b, c.l_k, c.h_kv, c.p, -7.0f),
        lse(static_cast<std::size_t>(c.b * c.h * c.l_q), -7.0f), delta(lse.size(), -7.0f) {
    std::mt19937 rng(static_cast<unsigned>(c.l_q * 131 + c.l_k * 7 + c.p));
    // Logits of a few units (amplitude 2 at p = 64): the softmax is neither flat nor one-hot.
    q.randomize(rng, 2.0f);
    k.randomize(rng, 2.0f);
    v.randomize(rng, 1.0f);
    go.randomize(rng, 1.0f);
    dims = {c.b, c.l_q, c.l_k, c.h, c.h_kv, c.p, 0.0, c.causal};
  }

  ssm::AttentionParams params() {
    ssm::AttentionParams p;
    p.batch = c.b, p.seqlen_q = c.l_q, p.seqlen_k = c.l_k, p.heads = c.h, p.kv_heads = c.h_kv, p.head_dim = c.p;
    p.scale = static_cast<float>(dims.softmax_scale());
    p.causal = c.causal;
    p.q = q.data.data(), p.q_batch_stride = q.batch_stride, p.q_seq_stride = q.seq_stride,
    p.q_head_stride = q.head_stride;
    p.k = k.data.data(), p.k_batch_stride = k.batch_stride, p.k_seq_stride = k.seq_stride,
    p.k_head_stride = k.head_stride;
    p.v = v.data.data(), p.v_batch_stride = v.batch_stride, p.v_seq_stride = v.seq_stride,
    p.v_head_stride = v.head_stride;
    p.out = out.data.data(), p.out_batch_stride = out.batch_stride, p.out_seq_stride = out.seq_stride,
    p.out_head_stride = out.head_stride;
    p.lse = lse.data();
    workspace.assign(static_cast<std::size_t>(std::max<index_t>(1, ssm::cuda::attention_workspace_floats(p))), -7.0f);
    p.workspace = workspace.data();
    return p;
  }
  ssm::AttentionGradParams grad_params() {
    ssm::AttentionGradParams g;
    g.out = out.data.data(), g.out_batch_stride = out.batch_stride, g.out_seq_stride = out.seq_stride,
    g.out_head_stride = out.head_stride;
    g.grad_out = go.data.data(), g.grad_out_batch_stride = go.batch_stride, g.grad_out_seq_stride = go.seq_stride,
    g.grad_out_head_stride = go.head_stride;
    g.grad_q = gq.data.data(), g.grad_q_batch_stride = gq.batch_stride, g.grad_q_seq_stride = gq.seq_stride,
    g.grad_q_head_stride = gq.head_stride;
    g.grad_k = gk.data.data(), g.grad_k_batch_stride = gk.batch_stride, g.grad_k_seq_stride = gk.seq_stride,
    g.grad_k_head_stride = gk.head_stride;
    g.grad_v = gv.data.data(), g.grad_v_batch_stride = gv.batch_stride, g.grad_v_seq_stride = gv.seq_stride,
    g.grad_v_head_stride = gv.head_stride;
    g.delta = delta.data();
    return g;
  }
};

constexpr std::size_t kStack = 128 * 1024;  // per emulated thread (the kernels use little stack)
constexpr Order kOrders[] = {Order::forward, Order::reverse, Order::random};

/// Runs the forward (and with `backward` the backward) under the emulation in each thread order and compares
/// with the double reference: forward 1e-5 of the largest output, lse 1e-5 absolute, gradients 1e-4 of the largest.
void check_case(const AttnCase& c, bool backward) {
  std::vector<double> ref_out, ref_lse, ref_gq, ref_gk, ref_gv;
  {
    Problem pr(c);
    const auto qd = pr.q.dense(), kd = pr.k.dense(), vd = pr.v.dense();
    ssm::reference::attention_forward(pr.dims, qd, kd, vd, ref_out, ref_lse);
    if (backward) ssm::reference::attention_backward(pr.dims, qd, kd, vd, pr.go.dense(), ref_gq, ref_gk, ref_gv);
  }
  for (Order order : kOrders) {
    SCOPED_TRACE(c.str() + " order " + ssm::emu::name(order));
    Problem pr(c);
    ssm::emu::HostExecutor exec(order, 7, kStack);
    const auto p = pr.params();
    ASSERT_NO_THROW(ssm::kernels::attention_forward_launches(exec, p));
    EXPECT_LE(rel_error(pr.out.dense(), ref_out), 1e-5);
    double lse_err = 0;  // relative to max(1, |lse|)
    for (std::size_t i = 0; i < ref_lse.size(); ++i)
      lse_err = std::max(lse_err, std::abs(pr.lse[i] - ref_lse[i]) / std::max(1.0, std::abs(ref_lse[i])));
    EXPECT_LE(lse_err, 1e-5);
    if (!backward) continue;
    ASSERT_NO_THROW(ssm::kernels::attention_backward_launches(exec, p, pr.grad_params()));
    EXPECT_LE(rel_error(pr.gq.dense(), ref_gq), 1e-4) << "grad_q";
    EXPECT_LE(rel_error(pr.gk.dense(), ref_gk), 1e-4) << "grad_k";
    EXPECT_LE(rel_error(pr.gv.dense(), ref_gv), 1e-4) << "grad_v";
  }
}

TEST(CudaAttentionEmu, TiledForwardAndBackwardEqualReference) {
  const AttnCase cases[] = {
      {2, 37, 37, 4, 2, 64, true},    // grouped-query, a ragged query tile (64-wide kernel: 32 rows per block)
      {1, 130, 130, 2, 1, 100, true}, // multi-query, p padded to 128 (16 rows per block, ragged key tile)
      {1, 20, 45, 3, 3, 5, true},     // queries at the end of a longer context, p padded to 32
      {2, 17, 33, 2, 2, 33, false},   // no mask, l_q != l_k
      {1, 5, 5, 1, 1, 128, true},     // the widest head
      {1, 70, 70, 2, 2, 32, false},   // a full 32-wide kernel, two query tiles
  };
  for (const auto& c : cases) check_case(c, true);
}

TEST(CudaAttentionEmu, SplitKeyDecodingEqualsReference) {
  // 1 ... 4 queries take the split-key kernel and the combine: several slices of >= 64 keys, ragged last slice.
  const AttnCase cases[] = {
      {1, 1, 300, 2, 1, 64, true},   // one decoding step, 5 slices
      {2, 3, 200, 2, 2, 40, true},   // three queries: the later slices are partly masked for the earlier queries
      {1, 4, 129, 1, 1, 128, false}, // no mask, the widest head
      {1, 1, 1, 1, 1, 7, true},      // the first token
      {1, 2, 70, 3, 1, 16, true},    // grouped-query decoding
  };
  for (const auto& c : cases) {
    ssm::AttentionParams p;
    p.batch = c.b, p.seqlen_q = c.l_q, p.seqlen_k = c.l_k, p.heads = c.h, p.kv_heads = c.h_kv, p.head_dim = c.p;
    const auto split = ssm::cuda::attention_split(p);
    EXPECT_GE(split.splits, 1) << c.str();  // the split-key path, not the tiled kernel
    if (c.l_k >= 128) {
      EXPECT_GE(split.splits, 2) << c.str();
    }
    check_case(c, true);  // the backward of a few queries over a long context: the tiled backward kernels
  }
}

TEST(CudaAttentionEmu, SplitKeyEqualsTiledKernel) {
  // The same 4 queries through both forward kernels: the decoding path against the tiled one, directly.
  const AttnCase c{1, 4, 257, 2, 1, 64, true};
  Problem a(c), b(c);
  ssm::emu::HostExecutor exec(Order::random, 3, kStack);
  ASSERT_NO_THROW(ssm::kernels::attention_forward_launches(exec, a.params()));
  auto p = b.params();
  using Cfg = ssm::kernels::AttnFwdTile<64>;
  ASSERT_NO_THROW(exec.launch(ssm::kernels::attention_fwd_kernel<64>, ssm::kernels::LaunchDims{1, 2, 1},
                              ssm::kernels::LaunchDims{Cfg::kThreads}, p));
  EXPECT_LE(rel_error(a.out.dense(), b.out.dense()), 1e-6);
  for (std::size_t i = 0; i < a.lse.size(); ++i) EXPECT_NEAR(a.lse[i], b.lse[i], 1e-5);
}

TEST(CudaAttentionEmu, NoQueriesGiveZeroKeyGradients) {
  // l_q = 0: the forward launches nothing; the backward still writes every grad_k / grad_v row (zeros), so a
  // caller never reads uninitialized memory.
  AttnCase c{1, 0, 9, 2, 2, 8, false};
  Problem pr(c);
  ssm::emu::HostExecutor exec(Order::forward, 1, kStack);
  auto p = pr.params();
  ASSERT_NO_THROW(ssm::kernels::attention_forward_launches(exec, p));
  ASSERT_NO_THROW(ssm::kernels::attention_backward_launches(exec, p, pr.grad_params()));
  for (double x : pr.gk.dense()) EXPECT_EQ(x, 0.0);
  for (double x : pr.gv.dense()) EXPECT_EQ(x, 0.0);
}

TEST(CudaAttentionEmu, LaunchesRejectWhatTheKernelsCannotTake) {
  AttnCase c{1, 4, 4, 2, 2, 16, true};
  Problem pr(c);
  ssm::emu::HostExecutor exec;
  auto expect_error = [&](ssm::AttentionParams p, const std::string& needle) {
    try {
      ssm::kernels::attention_forward_launches(exec, p);
      ADD_FAILURE() << "no error for " << needle;
    } catch (const ssm::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto p = pr.params();
  auto bad = p;
  bad.head_dim = 129;
  expect_error(bad, "head_dim must be in [1, 128]");
  bad = p;
  bad.kv_heads = 3;
  expect_error(bad, "kv_heads must divide heads");
  bad = p;
  bad.seqlen_k = 3;
  expect_error(bad, "causal attention needs l_k >= l_q");
  bad = p;
  bad.scale = std::nanf("");
  expect_error(bad, "scale must be finite");
  bad = p;
  bad.lse = nullptr;
  expect_error(bad, "must be set");
  bad = p;
  bad.seqlen_q = 1;
  bad.workspace = nullptr;
  expect_error(bad, "workspace");
}

}  // namespace
