// Tests of the layers (include/ssm/layers.hpp): conv1d update == conv1d forward (and chunked forward
// with a carried state == one forward), every backward vs central finite differences in double, the
// Mamba block's step-by-step == parallel forward, its published initialization and its error paths.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "ssm/cpu/threads.hpp"
#include "ssm/layers.hpp"
#include "ssm/math/s4_kernel.hpp"
#include "ssm/math/causal_conv.hpp"
#include "support/expect_error.hpp"

using namespace ssm;
using namespace ssm::layers;

namespace {

std::vector<double> randn(std::size_t n, std::uint64_t seed, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> N(0.0, scale);
  std::vector<double> v(n);
  for (auto& x : v) x = N(rng);
  return v;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Checks analytic gradient `grad` of loss() w.r.t. every entry of `x` against central differences.
// Double precision, step 1e-6: truncation O(h^2) ~ 1e-12 and rounding ~ 1e-16 / 1e-6 = 1e-10 relative
// to the loss scale, so 1e-6 relative (floor 1e-6 absolute) leaves a wide margin and still catches any
// missing or wrong term (those are O(1) relative).
void expect_grad(const char* what, std::vector<double>& x, const std::vector<double>& grad,
                 const std::function<double()>& loss) {
  ASSERT_EQ(x.size(), grad.size()) << what;
  const double h = 1e-6;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double lp = loss();
    x[i] = x0 - h;
    const double lm = loss();
    x[i] = x0;
    const double fd = (lp - lm) / (2 * h);
    EXPECT_NEAR(grad[i], fd, 1e-6 * std::max(1.0, std::abs(fd))) << what << "[" << i << "]";
  }
}

}  // namespace

// ---- building blocks ---------------------------------------------------------------------------------

TEST(Layers, LinearMatchesLoopsAndGradients) {
  const index_t rows = 3, in = 5, out = 4;
  auto x = randn(rows * in, 1), W = randn(out * in, 2), bias = randn(out, 3), R = randn(rows * out, 4);
  std::vector<double> y(rows * out);
  linear_forward(x.data(), W.data(), bias.data(), y.data(), rows, in, out);
  for (index_t r = 0; r < rows; ++r)
    for (index_t o = 0; o < out; ++o) {
      double s = bias[o];
      for (index_t k = 0; k < in; ++k) s += x[r * in + k] * W[o * in + k];
      EXPECT_NEAR(y[r * out + o], s, 1e-12);
    }
  std::vector<double> one(out);  // the rows == 1 (matrix-vector) path
  linear_forward(x.data() + in, W.data(), bias.data(), one.data(), 1, in, out);
  for (index_t o = 0; o < out; ++o) EXPECT_NEAR(one[o], y[out + o], 1e-12);
  auto loss = [&] {
    linear_forward(x.data(), W.data(), bias.data(), y.data(), rows, in, out);
    return dot(y, R);
  };
  std::vector<double> gx(rows * in), gW(out * in, 0.0), gb(out, 0.0);
  linear_backward(x.data(), W.data(), R.data(), gx.data(), gW.data(), gb.data(), rows, in, out);
  expect_grad("x", x, gx, loss);
  expect_grad("W", W, gW, loss);
  expect_grad("bias", bias, gb, loss);
}

TEST(Layers, RmsNormEmbeddingActivationsGradients) {
  const index_t rows = 3, dim = 7;
  const double eps = 1e-5;
  auto x = randn(rows * dim, 5), w = randn(dim, 6), R = randn(rows * dim, 7);
  std::vector<double> y(rows * dim);
  auto loss = [&] {
    rmsnorm_forward(x.data(), w.data(), y.data(), rows, dim, eps);
    return dot(y, R);
  };
  loss();
  double ms = 0;  // row 0 by hand
  for (index_t k = 0; k < dim; ++k) ms += x[k] * x[k] / dim;
  EXPECT_NEAR(y[2], x[2] / std::sqrt(ms + eps) * w[2], 1e-12);
  std::vector<double> gx(rows * dim), gw(dim, 0.0);
  rmsnorm_backward(x.data(), w.data(), R.data(), gx.data(), gw.data(), rows, dim, eps);
  expect_grad("rmsnorm x", x, gx, loss);
  expect_grad("rmsnorm weight", w, gw, loss);

  // SiLU and softplus, including the softplus threshold (x > 20 returns x).
  auto a = randn(16, 8, 4.0);
  a.push_back(25.0);
  std::vector<double> s(a.size()), gs(a.size()), Ra = randn(a.size(), 9);
  auto loss_silu = [&] {
    silu_forward(a.data(), s.data(), static_cast<index_t>(a.size()));
    return dot(s, Ra);
  };
  silu_backward(a.data(), Ra.data(), gs.data(), static_cast<index_t>(a.size()));
  expect_grad("silu", a, gs, loss_silu);
  auto loss_sp = [&] {
    softplus_forward(a.data(), s.data(), static_cast<index_t>(a.size()));
    return dot(s, Ra);
  };
  softplus_backward(a.data(), Ra.data(), gs.data(), static_cast<index_t>(a.size()));
  expect_grad("softplus", a, gs, loss_sp);
  EXPECT_EQ(softplus(25.0), 25.0);
  EXPECT_NEAR(softplus(0.0), std::log(2.0), 1e-15);

  // Embedding: gather and scatter-add (a repeated id accumulates).
  const index_t vocab = 5, d = 3;
  auto table = randn(vocab * d, 10);
  const std::vector<int> ids = {4, 0, 4};
  std::vector<double> e(ids.size() * d), ge(vocab * d, 0.0), Re = randn(ids.size() * d, 11);
  auto loss_e = [&] {
    embedding_forward(ids.data(), table.data(), e.data(), 3, vocab, d);
    return dot(e, Re);
  };
  embedding_backward(ids.data(), Re.data(), ge.data(), 3, d);
  expect_grad("embedding", table, ge, loss_e);
  const std::vector<int> bad = {5};
  EXPECT_THROW(embedding_forward(bad.data(), table.data(), e.data(), 1, vocab, d), ssm::Error);
}

TEST(Layers, Conv1dUpdateEqualsForwardAnyWidth) {
  for (index_t w : {2, 3, 4, 7}) {
    for (bool act : {false, true}) {
      const index_t l = 9, d = 5;
      auto x = randn(l * d, 20 + w), W = randn(d * w, 30 + w), bias = randn(d, 40), s0 = randn((w - 1) * d, 50);
      const Conv1dArgs<double> a{l, d, w, W.data(), bias.data(), act};
      std::vector<double> out(l * d), state_out((w - 1) * d);
      conv1d_forward(a, x.data(), s0.data(), out.data(), state_out.data());
      // Direct definition at t = 0 (reads the initial state) and t = l − 1.
      for (index_t t : {index_t(0), l - 1})
        for (index_t c = 0; c < d; ++c) {
          double s = bias[c];
          for (index_t k = 0; k < w; ++k) {
            const index_t src = t - (w - 1) + k;
            s += W[c * w + k] * (src >= 0 ? x[src * d + c] : s0[(w - 1 + src) * d + c]);
          }
          EXPECT_NEAR(out[t * d + c], act ? silu(s) : s, 1e-12);
        }
      // Token-by-token updates from the same initial state give the same outputs and final state.
      std::vector<double> state = s0, o(d);
      const Conv1dArgs<double> a1{1, d, w, W.data(), bias.data(), act};
      for (index_t t = 0; t < l; ++t) {
        conv1d_update(a1, x.data() + t * d, state.data(), o.data());
        for (index_t c = 0; c < d; ++c) EXPECT_NEAR(o[c], out[t * d + c], 1e-12) << "w=" << w << " t=" << t;
      }
      for (std::size_t i = 0; i < state.size(); ++i) EXPECT_NEAR(state[i], state_out[i], 1e-15);
      // Two chunks with the state carried (the first shorter than w − 1) equal one forward.
      const index_t l1 = 1;
      Conv1dArgs<double> c1 = a, c2 = a;
      c1.l = l1;
      c2.l = l - l1;
      std::vector<double> o2(l * d), mid((w - 1) * d), fin((w - 1) * d);
      conv1d_forward(c1, x.data(), s0.data(), o2.data(), mid.data());
      conv1d_forward(c2, x.data() + l1 * d, mid.data(), o2.data() + l1 * d, fin.data());
      for (std::size_t i = 0; i < o2.size(); ++i) EXPECT_NEAR(o2[i], out[i], 1e-12);
      for (std::size_t i = 0; i < fin.size(); ++i) EXPECT_NEAR(fin[i], state_out[i], 1e-15);
    }
  }
}

TEST(Layers, Conv1dGradients) {
  for (bool act : {false, true}) {
    const index_t l = 6, d = 3, w = 4;
    auto x = randn(l * d, 60), W = randn(d * w, 61), bias = randn(d, 62), s0 = randn((w - 1) * d, 63);
    auto R = randn(l * d, 64), Rs = randn((w - 1) * d, 65);
    std::vector<double> out(l * d), so((w - 1) * d);
    auto loss = [&] {
      const Conv1dArgs<double> a{l, d, w, W.data(), bias.data(), act};
      conv1d_forward(a, x.data(), s0.data(), out.data(), so.data());
      return dot(out, R) + dot(so, Rs);  // the final state is an output too
    };
    const Conv1dArgs<double> a{l, d, w, W.data(), bias.data(), act};
    std::vector<double> gx(l * d), gs((w - 1) * d), gW(d * w, 0.0), gb(d, 0.0);
    conv1d_backward(a, x.data(), s0.data(), R.data(), Rs.data(), gx.data(), gs.data(), gW.data(), gb.data());
    expect_grad("conv x", x, gx, loss);
    expect_grad("conv state_in", s0, gs, loss);
    expect_grad("conv weight", W, gW, loss);
    expect_grad("conv bias", bias, gb, loss);
  }
}

// ---- Mamba block ---------------------------------------------------------------------------------------

namespace {
MambaBlockConfig small_config(bool bias) {
  MambaBlockConfig cfg;
  cfg.d_model = 5;
  cfg.d_state = 3;
  cfg.d_conv = 3;
  cfg.expand = 2;
  cfg.dt_rank = 2;
  cfg.bias = bias;
  return cfg;
}
}  // namespace

TEST(MambaBlock, PublishedInitialization) {
  MambaBlockConfig cfg;
  cfg.d_model = 40;  // d_inner 80, dt_rank "auto" = ceil(40 / 16) = 3
  auto block = MambaBlock<double>::init(cfg, 7);
  EXPECT_EQ(cfg.rank(), 3);
  const auto& p = block.params();
  EXPECT_EQ(p.A_log.size(), 80u * 16u);
  for (index_t c : {0, 79})
    for (index_t k = 0; k < 16; ++k) EXPECT_DOUBLE_EQ(p.A_log[c * 16 + k], std::log(double(k + 1)));
  for (double D : p.D) EXPECT_EQ(D, 1.0);
  for (double b : p.dt_proj_bias) {
    const double Delta = softplus(b);  // the bias is the inverse softplus of Δ ∈ [dt_min, dt_max]
    EXPECT_GE(Delta, cfg.dt_min * (1 - 1e-12));
    EXPECT_LE(Delta, cfg.dt_max * (1 + 1e-12));
  }
  const double bound = 1.0 / std::sqrt(3.0);
  double mx = 0;
  for (double x : p.dt_proj_weight) mx = std::max(mx, std::abs(x));
  EXPECT_LE(mx, bound);
  EXPECT_GT(mx, 0.8 * bound);  // 240 draws fill the interval
}

TEST(MambaBlock, StepEqualsForwardAndPrefillContinues) {
  // Mamba, FalconMamba, Jamba (weighted δ / B / C norms, perturbed), and the ablations: no gate, S4D-Real (not
  // selective: its step is a one-token forward from the cache), both.
  const char* names[] = {"Mamba", "FalconMamba", "Jamba", "no gate", "not selective", "no gate, not selective"};
  for (int variant = 0; variant < 6; ++variant) {
    SCOPED_TRACE(names[variant]);
    auto cfg = small_config(true);
    if (variant == 1 || variant == 2) cfg.bcdt_rms_eps = 1e-6;
    cfg.bcdt_norm_weights = variant == 2;
    cfg.gated = variant != 3 && variant != 5;
    cfg.selective = variant < 4;
    auto block = MambaBlock<double>::init(cfg, 3);
    for (auto* w : {&block.params().dt_norm_weight, &block.params().b_norm_weight, &block.params().c_norm_weight})
      for (std::size_t i = 0; i < w->size(); ++i) (*w)[i] = 0.5 + 0.1 * double(i);
    const index_t b = 2, l = 11, dm = cfg.d_model;
    auto u = randn(b * l * dm, 70);
    Tensor full = block.forward(TensorView::of(u.data(), {b, l, dm}));  // (b, l, d_model)
    const auto ref = full.to_vector<double>();
    // Token by token from a zero cache.
    auto cache = block.make_cache(b);
    for (index_t t = 0; t < l; ++t) {
      std::vector<double> ut(b * dm);  // (b, d_model)
      for (index_t bi = 0; bi < b; ++bi) std::copy_n(u.data() + (bi * l + t) * dm, dm, ut.data() + bi * dm);
      auto o = block.step(TensorView::of(ut.data(), {b, dm}), cache).to_vector<double>();
      for (index_t bi = 0; bi < b; ++bi)
        for (index_t k = 0; k < dm; ++k) EXPECT_NEAR(o[bi * dm + k], ref[(bi * l + t) * dm + k], 1e-12);
    }
    // Prefill 4 tokens with forward (filling the cache), then step the rest.
    const index_t lp = 4;
    std::vector<double> up(b * lp * dm);
    for (index_t bi = 0; bi < b; ++bi) std::copy_n(u.data() + bi * l * dm, lp * dm, up.data() + bi * lp * dm);
    auto cache2 = block.make_cache(b);
    block.forward(TensorView::of(up.data(), {b, lp, dm}), &cache2);
    for (index_t t = lp; t < l; ++t) {
      std::vector<double> ut(b * dm);
      for (index_t bi = 0; bi < b; ++bi) std::copy_n(u.data() + (bi * l + t) * dm, dm, ut.data() + bi * dm);
      auto o = block.step(TensorView::of(ut.data(), {b, dm}), cache2).to_vector<double>();
      for (index_t bi = 0; bi < b; ++bi)
        for (index_t k = 0; k < dm; ++k) EXPECT_NEAR(o[bi * dm + k], ref[(bi * l + t) * dm + k], 1e-12);
    }
    // The cache after l steps equals the cache after a prefill of all l tokens.
    auto cache3 = block.make_cache(b);
    block.forward(TensorView::of(u.data(), {b, l, dm}), &cache3);
    const auto h3 = cache3.ssm_state.to_vector<double>(), h = cache.ssm_state.to_vector<double>();
    for (std::size_t i = 0; i < h3.size(); ++i) EXPECT_NEAR(h3[i], h[i], 1e-12);
    // The conv state holds in_proj's x outputs: the same products, but in_proj's d_inner rows without the gate take
    // a different GEMM blocking for b rows than for b·l rows, so those agree to rounding only.
    const auto s3 = cache3.conv_state.to_vector<double>(), s = cache.conv_state.to_vector<double>();
    ASSERT_EQ(s3.size(), s.size());
    for (std::size_t i = 0; i < s3.size(); ++i) EXPECT_NEAR(s3[i], s[i], cfg.gated ? 0.0 : 1e-14);
  }
}

TEST(MambaBlock, FalconMambaNormalizesDeltaBC) {
  // The FalconMamba block equals a Mamba block fed δ, B, C normalized by hand: x_proj's rows rescaled per
  // segment is the same as rescaling x_proj's output, so compare against a reference written out here.
  auto cfg = small_config(false);
  cfg.bcdt_rms_eps = 1e-6;
  auto falcon = MambaBlock<double>::init(cfg, 5);
  auto plain_cfg = cfg;
  plain_cfg.bcdt_rms_eps.reset();
  auto plain = MambaBlock<double>(plain_cfg, falcon.params());
  const index_t dm = cfg.d_model;
  const auto u = randn(dm, 3);
  // One token from a zero state, so that a rescaled x_proj row gives exactly the normalized values: find the
  // segment scales from the block's own x_proj output.
  const index_t di = cfg.inner(), r = cfg.rank(), n = cfg.d_state;
  std::vector<double> xz(2 * di), xc(di), dbc(r + 2 * n);
  linear_forward(u.data(), falcon.params().in_proj_weight.data(), static_cast<const double*>(nullptr), xz.data(), 1,
                 dm, 2 * di);  // no in_proj bias in this config
  // conv at t = 0 from a zero state sees only the newest input: weight[:, w - 1] x + bias, then SiLU.
  for (index_t c = 0; c < di; ++c)
    xc[c] = silu(falcon.params().conv_weight[c * cfg.d_conv + cfg.d_conv - 1] * xz[c] + falcon.params().conv_bias[c]);
  linear_forward(xc.data(), falcon.params().x_proj_weight.data(), static_cast<const double*>(nullptr), dbc.data(), 1,
                 di, r + 2 * n);
  auto p = falcon.params();
  for (auto [off, dim] : {std::pair<index_t, index_t>{0, r}, {r, n}, {r + n, n}}) {
    double ms = 0;
    for (index_t k = 0; k < dim; ++k) ms += dbc[off + k] * dbc[off + k];
    const double s = 1 / std::sqrt(ms / dim + 1e-6);
    for (index_t k = off; k < off + dim; ++k)
      for (index_t c = 0; c < di; ++c) p.x_proj_weight[k * di + c] *= s;
  }
  auto rescaled = MambaBlock<double>(plain_cfg, p);
  const auto yf = falcon.forward(TensorView::of(u.data(), {1, 1, dm})).to_vector<double>();
  const auto yr = rescaled.forward(TensorView::of(u.data(), {1, 1, dm})).to_vector<double>();
  const auto yp = plain.forward(TensorView::of(u.data(), {1, 1, dm})).to_vector<double>();
  for (index_t k = 0; k < dm; ++k) EXPECT_NEAR(yf[k], yr[k], 1e-12);
  EXPECT_NE(yf, yp);
  MambaBlockConfig bad = cfg;
  bad.bcdt_rms_eps = 0.0;
  EXPECT_THROW(MambaBlock<double>::init(bad, 1), ssm::Error);
  bad = cfg, bad.bcdt_rms_eps.reset(), bad.bcdt_norm_weights = true;  // weights without their epsilon
  ssm_test::expect_error([&] { MambaBlock<double>::init(bad, 1); }, "bcdt_norm_weights needs bcdt_rms_eps");
}

TEST(MambaBlock, ThreadedForwardEqualsOneThread) {
  // set_threads splits the GEMMs' output features, the conv's time axis (chunks of >= 64 steps, so l = 300
  // gives several, the later ones reading inputs of the earlier), the transposes' channel groups (d_inner 80:
  // a full group of 64 and a ragged one) and the scan's items. Every output element is computed by the same
  // arithmetic, so only GEMM blocking could reorder sums: 1e-12 in double.
  MambaBlockConfig cfg;
  cfg.d_model = 40, cfg.d_state = 5, cfg.d_conv = 4, cfg.expand = 2;
  auto one = MambaBlock<double>::init(cfg, 21), three = MambaBlock<double>::init(cfg, 21);
  one.set_threads(1);
  three.set_threads(3);
  const index_t b = 2, l1 = 300, l2 = 70, dm = cfg.d_model;
  const auto u1 = randn(b * l1 * dm, 80), u2 = randn(b * l2 * dm, 81);
  auto c1 = one.make_cache(b), c3 = three.make_cache(b);
  for (int part = 0; part < 2; ++part) {  // a prefill, then a second piece resumed from the cache
    const auto& u = part == 0 ? u1 : u2;
    const index_t l = part == 0 ? l1 : l2;
    // Equal results cannot tell whether a second thread ran: the pool's count of threads it ran besides the
    // caller's must stay put for 1 thread and grow for 3.
    const std::int64_t before = ssm::cpu::worker_threads_run();
    const auto y1 = one.forward(TensorView::of(u.data(), {b, l, dm}), &c1, part > 0).to_vector<double>();
    EXPECT_EQ(ssm::cpu::worker_threads_run(), before) << "1 thread set, a second one ran";
    const auto y3 = three.forward(TensorView::of(u.data(), {b, l, dm}), &c3, part > 0).to_vector<double>();
    EXPECT_GT(ssm::cpu::worker_threads_run(), before) << "3 threads set, all the work ran on the caller's";
    ASSERT_EQ(y1.size(), y3.size());
    for (std::size_t i = 0; i < y1.size(); ++i) ASSERT_NEAR(y3[i], y1[i], 1e-12) << "part " << part << " at " << i;
    for (auto member : {&MambaLayerCache<double>::ssm_state, &MambaLayerCache<double>::conv_state}) {
      const auto s1 = (c1.*member).to_vector<double>(), s3 = (c3.*member).to_vector<double>();
      ASSERT_EQ(s1.size(), s3.size());
      for (std::size_t i = 0; i < s1.size(); ++i) ASSERT_NEAR(s3[i], s1[i], 1e-12);
    }
  }
  // And the step (its GEMVs split over 3 threads) continues both alike.
  std::vector<double> work1(static_cast<std::size_t>(one.workspace_size(b))), work3(work1.size());
  std::vector<double> o1(b * dm), o3(b * dm);
  one.step_raw(u2.data(), o1.data(), c1, work1.data());
  three.step_raw(u2.data(), o3.data(), c3, work3.data());
  for (std::size_t i = 0; i < o1.size(); ++i) EXPECT_NEAR(o3[i], o1[i], 1e-12);
  EXPECT_THROW(one.set_threads(-1), ssm::Error);
}

namespace {

/// A double block moved away from the initialization's special values (D = 1, A_log = log k) by N(0, 0.3) noise
/// on every parameter, so that no gradient term vanishes.
MambaBlock<double> perturbed_block(const MambaBlockConfig& cfg, std::uint64_t init_seed, std::uint64_t noise_seed) {
  auto block = MambaBlock<double>::init(cfg, init_seed);
  std::mt19937_64 rng(noise_seed);
  std::normal_distribution<double> N(0.0, 0.3);
  block.params().for_each(cfg, [&](const char*, std::vector<double>& v, const Dims&) {
    for (auto& x : v) x += N(rng);
  });
  block.refresh();
  return block;
}

}  // namespace

TEST(MambaBlock, BackwardMatchesFiniteDifferences) {
  // no biases, biases, FalconMamba (δ, B, C normalized), Jamba (their norms with weights), and the ablations: no
  // gate (with biases), not selective (fixed B and C), both
  for (int variant = 0; variant < 7; ++variant) {
    SCOPED_TRACE(variant);
    const bool bias = variant == 1 || variant == 4;
    auto cfg = small_config(bias);
    // A large epsilon (against mean squares ~0.1 to 1) so that its term in the gradient is checked too.
    if (variant == 2 || variant == 3) cfg.bcdt_rms_eps = 0.05;
    cfg.bcdt_norm_weights = variant == 3;
    cfg.gated = variant != 4 && variant != 6;
    cfg.selective = variant < 5;
    auto block = perturbed_block(cfg, 11, 5);
    const index_t b = 2, l = 6, dm = cfg.d_model;
    auto u = randn(b * l * dm, 80);
    auto R = randn(b * l * dm, 81);
    auto grads = block.backward(TensorView::of(u.data(), {b, l, dm}), TensorView::of(R.data(), {b, l, dm}));
    std::vector<double> out(b * l * dm);
    auto loss = [&] {
      block.refresh();
      block.forward_raw(u.data(), b, l, out.data());
      return dot(out, R);
    };
    expect_grad("u", u, grads.grad_u, loss);
    std::vector<std::pair<std::string, std::vector<double>*>> gl;
    grads.params.for_each(cfg, [&](const char* name, std::vector<double>& v, const Dims&) { gl.emplace_back(name, &v); });
    std::size_t i = 0;
    block.params().for_each(cfg, [&](const char* name, std::vector<double>& v, const Dims&) {
      ASSERT_EQ(gl[i].first, name);
      expect_grad(name, v, *gl[i].second, loss);
      ++i;
    });
    // in_proj, conv (2), x_proj, dt_proj (2), A_log, D, out_proj; + 2 biases; + 3 norm weights. Not selective: B and
    // C in place of x_proj and dt_proj.weight.
    EXPECT_EQ(i, bias ? 11u : variant == 3 ? 12u : 9u);
  }
}

// With selective off, the block's scan is an LTI diagonal SSM (S4D-Real): fixed B, C (d, n), Δ = softplus(dt_bias)
// per channel, A = −exp(A_log), D. Its output equals S4D's convolution form: the kernel K_c[k] = 2 Re Σ_n C'_n B'_n
// A_bar_n^k from s4d_kernel_vandermonde (ZOH), convolved by FFT (l = 300 > the direct-convolution limit), plus D u.
// ZOH's B_bar = Δ (exp(ΔA) − 1)/(ΔA) B' is the scan's Δ B when B' = B / expm1_over(ΔA); the kernel's 2 Re is halved
// by C' = C / 2.
TEST(MambaBlock, NotSelectiveScanEqualsS4DConvolution) {
  const index_t b = 2, d = 3, n = 4, l = 300;
  const auto u = randn(b * d * l, 100);
  const auto B = randn(d * n, 101), C = randn(d * n, 102), A_log = randn(d * n, 103, 0.5), D = randn(d, 104);
  const auto dt_bias = randn(d, 105, 0.5);
  std::vector<double> A(d * n), zero(b * d * l, 0.0);
  for (index_t i = 0; i < d * n; ++i) A[i] = -std::exp(A_log[i]);
  SelectiveScanInputs in;
  in.u = TensorView::of(u.data(), {b, d, l});
  in.delta = TensorView::of(zero.data(), {b, d, l});
  in.A = TensorView::of(A.data(), {d, n});
  in.B = TensorView::of(B.data(), {d, n});
  in.C = TensorView::of(C.data(), {d, n});
  in.D = TensorView::of(D.data(), {d});
  in.delta_bias = TensorView::of(dt_bias.data(), {d});
  in.delta_softplus = true;
  const auto y = selective_scan(in).out.to_vector<double>();  // (b, d, l)
  s4::DiagonalSSM p;
  p.A.resize(d, n), p.B.resize(d, n), p.C.resize(d, n), p.Delta.resize(d);
  for (index_t c = 0; c < d; ++c) {
    p.Delta(c) = softplus(dt_bias[c]);
    for (index_t k = 0; k < n; ++k) {
      const index_t i = c * n + k;
      p.A(c, k) = A[i];
      p.B(c, k) = B[i] / ssm::detail::expm1_over(std::complex<double>(p.Delta(c) * A[i]));
      p.C(c, k) = C[i] / 2;
    }
  }
  const auto K = s4::s4d_kernel_vandermonde<double>(p, l, Discretization::zoh);  // (d, l)
  std::vector<double> conv(l);
  for (index_t bi = 0; bi < b; ++bi)
    for (index_t c = 0; c < d; ++c) {
      const double* uc = u.data() + (bi * d + c) * l;
      ssm::causal_conv(uc, K.data() + c * l, conv.data(), l);
      for (index_t t = 0; t < l; ++t) EXPECT_NEAR(y[(bi * d + c) * l + t], conv[t] + D[c] * uc[t], 1e-11);
    }
}

TEST(MambaBlock, BackwardAcrossScanChunksMatchesFiniteDifferences) {
  // l = 300: the scan backward restarts from the chunk states (every 128 steps) that the block's recomputed forward
  // saved; the scan's own parameters and a slice of grad_u against central differences. Mamba, and the block with
  // neither gate nor selection (fixed B and C, also checked).
  for (bool ablated : {false, true}) {
    SCOPED_TRACE(ablated ? "no gate, not selective" : "Mamba");
    auto cfg = small_config(false);
    cfg.gated = cfg.selective = !ablated;
    auto block = perturbed_block(cfg, 12, 6);
    const index_t b = 1, l = 300, dm = cfg.d_model;
    auto u = randn(b * l * dm, 90);
    auto R = randn(b * l * dm, 91);
    auto grads = block.backward(TensorView::of(u.data(), {b, l, dm}), TensorView::of(R.data(), {b, l, dm}));
    std::vector<double> out(b * l * dm);
    auto loss = [&] {
      block.refresh();
      block.forward_raw(u.data(), b, l, out.data());
      return dot(out, R);
    };
    expect_grad("A_log", block.params().A_log, grads.params.A_log, loss);
    expect_grad("D", block.params().D, grads.params.D, loss);
    expect_grad("dt_proj_bias", block.params().dt_proj_bias, grads.params.dt_proj_bias, loss);
    if (ablated) {
      expect_grad("B", block.params().B, grads.params.B, loss);
      expect_grad("C", block.params().C, grads.params.C, loss);
    }
    std::vector<double> head(u.begin(), u.begin() + 4 * dm);  // the first steps: their gradient crosses every chunk
    std::vector<double> grad_head(grads.grad_u.begin(), grads.grad_u.begin() + 4 * dm);
    auto loss_head = [&] {
      std::copy(head.begin(), head.end(), u.begin());
      return loss();
    };
    expect_grad("u[0:4]", head, grad_head, loss_head);
  }
}

// The whole block with selective off, gated and not, against the chain written out here: in_proj, the depthwise
// conv + SiLU, S4D's convolution form of the time-invariant SSM (s4d_kernel_vandermonde with B' = B / E(ΔA),
// C' = C / 2, convolved by FFT at l = 150), D, the gate silu(z), out_proj. Parameters perturbed off the init.
TEST(MambaBlock, NotSelectiveBlockEqualsItsChainWrittenOut) {
  for (bool gated : {false, true}) {
    SCOPED_TRACE(gated ? "gated" : "no gate");
    auto cfg = small_config(true);
    cfg.selective = false, cfg.gated = gated;
    const auto block = perturbed_block(cfg, 13, 7);
    const auto& p = block.params();
    const index_t b = 2, l = 150, dm = cfg.d_model, di = cfg.inner(), n = cfg.d_state, w = cfg.d_conv;
    const index_t wx = gated ? 2 * di : di;
    const auto u = randn(b * l * dm, 110);
    const auto out = block.forward(TensorView::of(u.data(), {b, l, dm})).to_vector<double>();
    s4::DiagonalSSM ssm;
    ssm.A.resize(di, n), ssm.B.resize(di, n), ssm.C.resize(di, n), ssm.Delta.resize(di);
    for (index_t c = 0; c < di; ++c) {
      ssm.Delta(c) = softplus(p.dt_proj_bias[c]);
      for (index_t k = 0; k < n; ++k) {
        const double A = -std::exp(p.A_log[c * n + k]);
        ssm.A(c, k) = A;
        ssm.B(c, k) = p.B[c * n + k] / ssm::detail::expm1_over(std::complex<double>(ssm.Delta(c) * A));
        ssm.C(c, k) = p.C[c * n + k] / 2;
      }
    }
    const auto K = s4::s4d_kernel_vandermonde<double>(ssm, l, Discretization::zoh);  // (di, l)
    auto silu = [](double v) { return v / (1 + std::exp(-v)); };
    std::vector<double> ref(b * l * dm);
    for (index_t bi = 0; bi < b; ++bi) {
      std::vector<double> xz(l * wx);  // (l, wx)
      for (index_t t = 0; t < l; ++t)
        for (index_t o = 0; o < wx; ++o) {
          double acc = p.in_proj_bias[o];
          for (index_t j = 0; j < dm; ++j) acc += p.in_proj_weight[o * dm + j] * u[(bi * l + t) * dm + j];
          xz[t * wx + o] = acc;
        }
      std::vector<double> y(l * di);  // (l, di)
      for (index_t c = 0; c < di; ++c) {
        std::vector<double> xc(l), yc(l);
        for (index_t t = 0; t < l; ++t) {
          double acc = p.conv_bias[c];
          for (index_t k = 0; k < w; ++k) {
            const index_t s = t - (w - 1) + k;
            if (s >= 0) acc += p.conv_weight[c * w + k] * xz[s * wx + c];
          }
          xc[t] = silu(acc);
        }
        ssm::causal_conv(xc.data(), K.data() + c * l, yc.data(), l);
        for (index_t t = 0; t < l; ++t) {
          y[t * di + c] = yc[t] + p.D[c] * xc[t];
          if (gated) y[t * di + c] *= silu(xz[t * wx + di + c]);
        }
      }
      for (index_t t = 0; t < l; ++t)
        for (index_t o = 0; o < dm; ++o) {
          double acc = p.out_proj_bias[o];
          for (index_t c = 0; c < di; ++c) acc += p.out_proj_weight[o * di + c] * y[t * di + c];
          ref[(bi * l + t) * dm + o] = acc;
        }
    }
    double err = 0, mag = 0;
    for (std::size_t i = 0; i < ref.size(); ++i)
      err = std::max(err, std::abs(out[i] - ref[i])), mag = std::max(mag, std::abs(ref[i]));
    EXPECT_GT(mag, 0.1);
    EXPECT_LE(err, 1e-11 * mag);
  }
}

TEST(MambaBlock, Errors) {
  auto cfg = small_config(false);
  auto block = MambaBlock<float>::init(cfg, 1);
  std::vector<float> u(2 * 3 * 5);
  EXPECT_THROW(block.forward(TensorView::of(u.data(), {2, 3, 4})), ssm::Error);  // wrong d_model
  EXPECT_THROW(block.forward(TensorView::of(u.data(), {6, 5})), ssm::Error);     // wrong rank
  std::vector<double> ud(30);
  EXPECT_THROW(block.forward(TensorView::of(ud.data(), {2, 3, 5})), ssm::Error);  // wrong dtype
  auto cache = block.make_cache(2);
  EXPECT_THROW(block.step(TensorView::of(u.data(), {3, 5}), cache), ssm::Error);  // batch != cache.b
  cache.ssm_state = ssm::Tensor::zeros({2, cfg.inner(), cfg.d_state - 1}, ssm::DType::f32);
  EXPECT_THROW(block.step(TensorView::of(u.data(), {2, 5}), cache), ssm::Error);  // damaged cache
  MambaBlockConfig bad = cfg;
  bad.d_conv = 1;
  EXPECT_THROW(MambaBlock<float>::init(bad, 1), ssm::Error);
  bad = cfg;
  bad.dt_min = std::nan("");
  EXPECT_THROW(MambaBlock<float>::init(bad, 1), ssm::Error);
  bad = cfg;
  bad.selective = false;
  bad.bcdt_rms_eps = 1e-5;
  ssm_test::expect_error([&] { MambaBlock<float>::init(bad, 1); }, "selective off");
  auto p = block.params();
  p.D.pop_back();
  EXPECT_THROW(MambaBlock<float>(cfg, p), ssm::Error);
  // Parameters of a selective block given to one that is not: B and C are missing, and with them x_proj and dt_proj
  // are still too many.
  bad = cfg;
  bad.selective = false;
  ssm_test::expect_error([&] { MambaBlock<float>(bad, block.params()); }, "'B'");
  p = block.params();
  p.B.assign(static_cast<std::size_t>(cfg.inner() * cfg.d_state), 1.0f);
  p.C = p.B;
  ssm_test::expect_error([&] { MambaBlock<float>(bad, p); }, "x_proj / dt_proj weights need selective");
}

// ---- weight matrices in f16 / bf16 (layers/weight.hpp) -------------------------------------------------

// linear_forward on a WeightMatrix against a double loop over the same (rounded) weights, on awkward shapes:
// 1, 3, 7 rows (gemv tiles, odd row and feature tails), 8 and 17 rows (converted panels), in not a multiple of
// the vector width, strided x and y (a column slice of wider buffers), bias, 1 and 3 threads. Bound: f32
// accumulation of `in` products (any order) errs by at most in · 2^-24 · Σ|x w| (plus one rounding of the
// bias add); 2^-22 leaves room for that.
TEST(WeightMatrix, LinearMatchesDoubleLoop) {
  std::mt19937_64 rng(3);
  std::normal_distribution<float> N(0.0f, 1.0f);
  for (DType dt : {DType::f32, DType::f16, DType::bf16})
    for (index_t rows : {1, 3, 7, 8, 17})
      for (index_t in : {1, 5, 16, 33, 100})
        for (index_t out : {1, 3, 17, 50})  // one row: 8-feature tiles (prefetching the next), 4, 1
          for (int threads : {1, 3}) {
            const index_t ldx = in + 3, ldy = out + 2;
            std::vector<float> x(static_cast<std::size_t>(rows * ldx)), w(static_cast<std::size_t>(out * in)),
                bias(static_cast<std::size_t>(out)), y(static_cast<std::size_t>(rows * ldy), -7.0f);
            for (auto* v : {&x, &w, &bias})
              for (auto& e : *v) e = N(rng);
            const WeightMatrix W = WeightMatrix::from_f32(w.data(), out, in, dt);
            ASSERT_EQ(W.dtype(), dt);
            const std::vector<float> wr = W.to_f32();  // the rounded weights
            for (std::size_t i = 0; i < w.size(); ++i) {
              const float e = dt == DType::f16    ? static_cast<float>(half(w[i]))
                              : dt == DType::bf16 ? static_cast<float>(bfloat16(w[i]))
                                                  : w[i];
              ASSERT_EQ(wr[i], e);
            }
            const bool with_bias = (rows + out) % 2 == 0;
            linear_forward(x.data(), W, with_bias ? bias.data() : nullptr, y.data(), rows, ldx, ldy, threads);
            for (index_t r = 0; r < rows; ++r) {
              for (index_t j = 0; j < out; ++j) {
                double ref = with_bias ? bias[j] : 0.0, mag = with_bias ? std::abs(bias[j]) : 0.0;
                for (index_t k = 0; k < in; ++k) {
                  ref += double(x[r * ldx + k]) * wr[j * in + k];
                  mag += std::abs(double(x[r * ldx + k]) * wr[j * in + k]);
                }
                ASSERT_NEAR(y[r * ldy + j], ref, (in + 1) * std::ldexp(mag, -22))
                    << name(dt) << " rows " << rows << " in " << in << " out " << out << " threads " << threads;
              }
              for (index_t j = out; j < ldy; ++j) ASSERT_EQ(y[r * ldy + j], -7.0f) << "wrote outside the slice";
            }
          }
}

// Every 16-bit pattern converted by WeightMatrix::to_f32 (cpu::load_row: vectors of cpu::load_f32 and a scalar
// tail) equals the core's scalar conversion bit for bit (infinities, subnormals, -0), NaN as a NaN (F16C quiets
// a signaling f16 NaN, the scalar conversion keeps its payload).
TEST(WeightMatrix, EveryBitPatternConvertsExactly) {
  for (DType dt : {DType::f16, DType::bf16}) {
    Tensor t = Tensor::empty({65536 / 8, 8}, dt);
    for (std::uint32_t i = 0; i < 65536; ++i) {
      const auto b = static_cast<std::uint16_t>(i);
      std::memcpy(static_cast<char*>(t.data()) + 2 * i, &b, 2);
    }
    const std::vector<float> v = WeightMatrix(t).to_f32();
    for (std::uint32_t i = 0; i < 65536; ++i) {
      const auto b = static_cast<std::uint16_t>(i);
      const float e =
          dt == DType::f16 ? static_cast<float>(half::from_bits(b)) : static_cast<float>(bfloat16::from_bits(b));
      std::uint32_t got, want;
      std::memcpy(&got, &v[i], 4);
      std::memcpy(&want, &e, 4);
      if (std::isnan(e))
        ASSERT_TRUE(std::isnan(v[i])) << name(dt) << " bits 0x" << std::hex << i;
      else
        ASSERT_EQ(got, want) << name(dt) << " bits 0x" << std::hex << i;
    }
  }
}

// Inf and NaN weights propagate as in f32 arithmetic, through the gemv tiles (1, 3 rows) and the converted
// panels (9 rows): a row of W holding +inf gives +inf (x > 0), a row holding NaN gives NaN, the others are exact.
TEST(WeightMatrix, InfAndNanPropagate) {
  const index_t in = 40, out = 20;
  std::vector<float> w(static_cast<std::size_t>(out * in), 0.5f);
  w[3 * in + 17] = INFINITY;
  w[11 * in + 39] = NAN;  // in the scalar tail for every vector width
  w[12 * in + 0] = -INFINITY;
  for (DType dt : {DType::f16, DType::bf16})
    for (index_t rows : {1, 3, 9}) {
      std::vector<float> x(static_cast<std::size_t>(rows * in), 1.0f), y(static_cast<std::size_t>(rows * out));
      linear_forward(x.data(), WeightMatrix::from_f32(w.data(), out, in, dt), nullptr, y.data(), rows);
      for (index_t r = 0; r < rows; ++r)
        for (index_t j = 0; j < out; ++j) {
          const float v = y[r * out + j];
          if (j == 3)
            EXPECT_EQ(v, INFINITY) << name(dt) << " rows " << rows;
          else if (j == 11)
            EXPECT_TRUE(std::isnan(v)) << name(dt) << " rows " << rows;
          else if (j == 12)
            EXPECT_EQ(v, -INFINITY) << name(dt) << " rows " << rows;
          else
            EXPECT_EQ(v, 20.0f) << name(dt) << " rows " << rows << " feature " << j;
        }
    }
}

TEST(WeightMatrix, EmbeddingAndErrors) {
  std::vector<float> table(7 * 19);
  for (std::size_t i = 0; i < table.size(); ++i) table[i] = 0.01f * float(i) - 0.3f;
  for (DType dt : {DType::f32, DType::f16, DType::bf16}) {
    const WeightMatrix W = WeightMatrix::from_f32(table.data(), 7, 19, dt);
    EXPECT_EQ(W.nbytes(), 7 * 19 * size_of(dt));
    const std::vector<std::int64_t> ids = {6, 0, 3};
    std::vector<float> y(3 * 19);
    embedding_forward(ids.data(), W, y.data(), 3);
    const auto all = W.to_f32();
    for (index_t r = 0; r < 3; ++r)
      for (index_t k = 0; k < 19; ++k) EXPECT_EQ(y[r * 19 + k], all[ids[r] * 19 + k]);
    const std::vector<std::int64_t> bad = {7};
    EXPECT_THROW(embedding_forward(bad.data(), W, y.data(), 1), ssm::Error);
    EXPECT_TRUE(W.same_values(WeightMatrix::from_f32(all.data(), 7, 19)));
  }
  try {
    (void)WeightMatrix::from_f32(table.data(), 7, 19, DType::i32);
    ADD_FAILURE() << "i32 accepted";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("WeightMatrix::from_f32: dtype is i32, which is not one of f32, f16, bf16"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(WeightMatrix::from_f32(table.data(), 7, 19, DType::f64), ssm::Error);
  EXPECT_THROW(WeightMatrix(Tensor::empty({7}, DType::f16)), ssm::Error);     // not a matrix
  EXPECT_THROW(WeightMatrix(Tensor::empty({2, 3}, DType::i64)), ssm::Error);  // not a weight dtype
  EXPECT_THROW(WeightMatrix::from_f32(table.data(), 7, 19, DType::f16).f32(), ssm::Error);
}

// A block holding bf16 projections: forward and step equal the f32 block of the same (rounded) weights up to
// f32 summation order; backward is refused with an ssm::Error.
TEST(MambaBlock, HalfMatricesForwardStepAndBackwardError) {
  MambaBlockConfig cfg;
  cfg.d_model = 24;
  cfg.d_state = 4;
  cfg.bias = true;
  const auto f32_block = MambaBlock<float>::init(cfg, 9);
  MambaBlockParams<float> p = f32_block.params(), rounded = p;
  MambaBlockMatrices m;
  m.for_each(p, [&](const char* nm, WeightMatrix& w, std::vector<float>& v) {
    const Dims s = nm == std::string("in_proj.weight")   ? Dims{2 * cfg.inner(), cfg.d_model}
                   : nm == std::string("x_proj.weight")  ? Dims{cfg.rank() + 2 * cfg.d_state, cfg.inner()}
                   : nm == std::string("dt_proj.weight") ? Dims{cfg.inner(), cfg.rank()}
                                                         : Dims{cfg.d_model, cfg.inner()};
    w = WeightMatrix::from_f32(v.data(), s[0], s[1], DType::bf16);
    v.clear();
  });
  MambaBlockMatrices m2 = m;
  m2.for_each(rounded, [](const char*, WeightMatrix& w, std::vector<float>& v) { v = w.to_f32(); });
  const MambaBlock<float> half_block(cfg, p, m), ref_block(cfg, rounded);
  EXPECT_EQ(half_block.full_params().in_proj_weight, rounded.in_proj_weight);
  EXPECT_LT(half_block.nbytes(), ref_block.nbytes());
  const index_t b = 2, l = 9;
  std::vector<float> u(static_cast<std::size_t>(b * l * cfg.d_model));
  std::mt19937_64 rng(1);
  std::normal_distribution<float> N(0.0f, 1.0f);
  for (auto& e : u) e = N(rng);
  const auto U = TensorView::of(u.data(), {b, l, cfg.d_model});
  const auto y1 = half_block.forward(U).to_vector<float>(), y0 = ref_block.forward(U).to_vector<float>();
  for (std::size_t i = 0; i < y0.size(); ++i) ASSERT_NEAR(y1[i], y0[i], 1e-5 * (1 + std::abs(y0[i])));
  auto c1 = half_block.make_cache(b), c0 = ref_block.make_cache(b);
  const auto s1 = half_block.step(TensorView::of(u.data(), {b, cfg.d_model}), c1).to_vector<float>();
  const auto s0 = ref_block.step(TensorView::of(u.data(), {b, cfg.d_model}), c0).to_vector<float>();
  for (std::size_t i = 0; i < s0.size(); ++i) ASSERT_NEAR(s1[i], s0[i], 1e-5 * (1 + std::abs(s0[i])));
  EXPECT_THROW(half_block.backward(U, U), ssm::Error);
  EXPECT_NO_THROW(ref_block.backward(U, U));
  // A projection given twice, or with a wrong shape, is refused.
  EXPECT_THROW(MambaBlock<float>(cfg, rounded, m), ssm::Error);
  MambaBlockMatrices bad = m;
  bad.x_proj = bad.dt_proj;
  EXPECT_THROW(MambaBlock<float>(cfg, p, bad), ssm::Error);
}
