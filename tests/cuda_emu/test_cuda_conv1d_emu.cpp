// The causal conv1d kernels (cuda/kernels/causal_conv1d.cuh) under the host emulation: the sequence kernel
// against a plain double loop (widths 2..4, lengths 0, 1, 3, 511, 512, 513, 2049, with / without bias, SiLU,
// initial state, f32 / bf16, every thread order), and the one-token update run token by token equal to it
// (the recurrent and parallel views of the same convolution); the backward kernel against the double-loop
// gradients, which are themselves checked against central differences of the double-loop forward.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/causal_conv1d.cuh"

namespace {

using ssm::emu::LaunchConfig;
using ssm::emu::Order;
using index_t = std::int64_t;

struct ConvCase {
  index_t b = 2, d = 3, l = 100, w = 4;
  bool bias = true, silu = true, init = true;
  bool step = true;  // also run the update kernel token by token (one emulated launch per token)
};

template <class In>
void run_conv(const ConvCase& c, Order order) {
  SCOPED_TRACE("l " + std::to_string(c.l) + " w " + std::to_string(c.w) + (c.bias ? "" : " no-bias") +
               (c.silu ? "" : " no-silu") + (c.init ? "" : " no-init") + " order " + ssm::emu::name(order));
  std::mt19937 rng(static_cast<unsigned>(c.l * 5 + c.w));
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const index_t b = c.b, d = c.d, l = c.l, w = c.w;
  std::vector<In> x(static_cast<std::size_t>(b * d * l));  // (b, d, l)
  for (auto& v : x) v = ssm::from_float<In>(dist(rng));
  std::vector<float> weight(static_cast<std::size_t>(d * w)), bias(static_cast<std::size_t>(d)),
      h0(static_cast<std::size_t>(b * d * (w - 1)));  // (d, w), (d), (b, d, w-1)
  for (auto& v : weight) v = dist(rng);
  for (auto& v : bias) v = dist(rng);
  for (auto& v : h0) v = dist(rng);
  std::vector<In> out(x.size(), ssm::from_float<In>(-9.0f));
  std::vector<float> final_state(h0.size(), -9.0f);
  ssm::CausalConv1dParams p;
  p.batch = b;
  p.dim = d;
  p.seqlen = l;
  p.width = w;
  p.x = x.data();
  p.x_batch_stride = d * l;
  p.x_d_stride = l;
  p.weight = weight.data();
  p.weight_d_stride = w;
  p.bias = c.bias ? bias.data() : nullptr;
  p.silu = c.silu;
  p.initial_state = c.init ? h0.data() : nullptr;
  p.final_state = final_state.data();
  p.out = out.data();
  p.out_batch_stride = d * l;
  p.out_d_stride = l;
  using Cfg = ssm::kernels::ConvFwdConfig;
  const unsigned tiles = static_cast<unsigned>(std::max<index_t>(1, (l + Cfg::kThreads * Cfg::kItems - 1) /
                                                                         (Cfg::kThreads * Cfg::kItems)));
  LaunchConfig cfg{ssm::emu::dim3(tiles, static_cast<unsigned>(d), static_cast<unsigned>(b)),
                   ssm::emu::dim3(Cfg::kThreads), order, 17};
  auto report = ssm::emu::launch(cfg, ssm::kernels::causal_conv1d_fwd_kernel<In, Cfg::kThreads, Cfg::kItems>, p);
  ASSERT_TRUE(report.ok()) << report.summary();

  // f32: a sum of at most 5 products, a few ulp: 1e-6 relative to the sum of |terms|. bf16: one output rounding.
  const double tol = std::is_same_v<In, float> ? 1e-6 : std::ldexp(1.0, -8);
  auto input = [&](index_t bb, index_t ch, index_t t) -> double {
    if (t >= 0) return static_cast<double>(ssm::to_float(x[static_cast<std::size_t>((bb * d + ch) * l + t)]));
    return c.init ? h0[static_cast<std::size_t>((bb * d + ch) * (w - 1) + (w - 1 + t))] : 0.0;
  };
  // The update kernel, token by token from the initial state, must give the same outputs.
  std::vector<float> conv_state(static_cast<std::size_t>(b * d * w), 0.0f);  // (b, d, w)
  for (index_t bb = 0; bb < b; ++bb)
    for (index_t ch = 0; ch < d; ++ch)
      for (index_t k = 1; k < w; ++k)
        conv_state[static_cast<std::size_t>((bb * d + ch) * w + k)] = static_cast<float>(input(bb, ch, k - w));
  ssm::CausalConv1dUpdateParams up;
  up.batch = b;
  up.dim = d;
  up.width = w;
  up.conv_state = conv_state.data();
  up.weight = weight.data();
  up.weight_d_stride = w;
  up.bias = p.bias;
  up.silu = c.silu;
  std::vector<In> x_t(static_cast<std::size_t>(b * d)), out_t(static_cast<std::size_t>(b * d));  // (b, d)
  up.x = x_t.data();
  up.out = out_t.data();
  for (index_t t = 0; t < l; ++t) {
    if (c.step) {
      for (index_t bb = 0; bb < b; ++bb)
        for (index_t ch = 0; ch < d; ++ch)
          x_t[static_cast<std::size_t>(bb * d + ch)] = x[static_cast<std::size_t>((bb * d + ch) * l + t)];
      LaunchConfig ucfg{ssm::emu::dim3(1, static_cast<unsigned>(b)), ssm::emu::dim3(32), order, 3};
      report = ssm::emu::launch(ucfg, ssm::kernels::causal_conv1d_update_kernel<In>, up);
      ASSERT_TRUE(report.ok()) << report.summary();
    }
    for (index_t bb = 0; bb < b; ++bb)
      for (index_t ch = 0; ch < d; ++ch) {
        double acc = c.bias ? bias[static_cast<std::size_t>(ch)] : 0.0, scale = std::fabs(acc);
        for (index_t k = 0; k < w; ++k) {
          const double term = weight[static_cast<std::size_t>(ch * w + k)] * input(bb, ch, t - (w - 1) + k);
          acc += term;
          scale += std::fabs(term);
        }
        if (c.silu) {
          const double g = 1.0 / (1.0 + std::exp(-acc));
          scale *= std::fabs(g) + std::fabs(acc * g * (1 - g));
          acc *= g;
        }
        const double got = ssm::to_float(out[static_cast<std::size_t>((bb * d + ch) * l + t)]);
        ASSERT_NEAR(got, acc, tol * (scale + 1e-3)) << "b " << bb << " ch " << ch << " t " << t;
        if (!c.step) continue;
        const double got_step = ssm::to_float(out_t[static_cast<std::size_t>(bb * d + ch)]);
        ASSERT_NEAR(got_step, acc, tol * (scale + 1e-3)) << "update, b " << bb << " ch " << ch << " t " << t;
      }
  }
  for (index_t bb = 0; bb < b; ++bb)
    for (index_t ch = 0; ch < d; ++ch)
      for (index_t k = 0; k < w - 1; ++k) {
        const double ref = input(bb, ch, l - (w - 1) + k);
        EXPECT_EQ(final_state[static_cast<std::size_t>((bb * d + ch) * (w - 1) + k)], static_cast<float>(ref))
            << "final state b " << bb << " ch " << ch << " k " << k;
        if (c.step) {
          EXPECT_EQ(conv_state[static_cast<std::size_t>((bb * d + ch) * w + k + 1)], static_cast<float>(ref))
              << "update state b " << bb << " ch " << ch << " k " << k;
        }
      }
}

TEST(CudaConv1dEmu, MatchesTheDoubleLoopAndTheUpdate) {
  for (index_t l : {0, 1, 3, 511, 512, 513, 2049})
    for (Order o : {Order::forward, Order::reverse, Order::random}) {
      ConvCase c;
      c.l = l;
      c.step = l <= 513 && o == Order::forward;  // stepping costs one emulated launch per token
      run_conv<float>(c, o);
    }
  for (index_t w : {2, 3}) {
    ConvCase c;
    c.w = w;
    c.l = 100;
    run_conv<float>(c, Order::random);
  }
  ConvCase plain;
  plain.l = 100;
  plain.bias = plain.silu = plain.init = false;
  run_conv<float>(plain, Order::forward);
  ConvCase low;
  low.l = 700;
  low.step = false;
  run_conv<ssm::bfloat16>(low, Order::reverse);
}

// ---- backward ------------------------------------------------------------------------------------------------

/// The double-loop forward and its gradients for one (batch, channel) row: x (l), h0 (w-1) or empty, weight (w).
struct ConvRow {
  index_t l = 0, w = 4;
  std::vector<double> x, h0, weight;
  double bias = 0;
  bool silu = true;

  double input(index_t t) const { return t >= 0 ? x[static_cast<std::size_t>(t)] : (h0.empty() ? 0.0 : h0[static_cast<std::size_t>(w - 1 + t)]); }
  double pre(index_t s) const {
    double acc = bias;
    for (index_t k = 0; k < w; ++k) acc += weight[static_cast<std::size_t>(k)] * input(s - (w - 1) + k);
    return acc;
  }
  /// L = sum_s go_s out_s + sum_j gfs_j final_state_j
  double loss(const std::vector<double>& go, const std::vector<double>& gfs) const {
    double L = 0;
    for (index_t s = 0; s < l; ++s) {
      const double v = pre(s);
      L += go[static_cast<std::size_t>(s)] * (silu ? v / (1 + std::exp(-v)) : v);
    }
    for (index_t j = 0; j < w - 1; ++j) L += gfs[static_cast<std::size_t>(j)] * input(l - (w - 1) + j);
    return L;
  }
  struct Grads {
    std::vector<double> x, h0, weight;
    double bias = 0;
  };
  Grads grads(const std::vector<double>& go, const std::vector<double>& gfs) const {
    Grads r;
    r.x.assign(static_cast<std::size_t>(l), 0.0);
    r.h0.assign(static_cast<std::size_t>(w - 1), 0.0);
    r.weight.assign(static_cast<std::size_t>(w), 0.0);
    auto add_input = [&](index_t t, double v) {
      if (t >= 0) r.x[static_cast<std::size_t>(t)] += v;
      else r.h0[static_cast<std::size_t>(w - 1 + t)] += v;
    };
    for (index_t s = 0; s < l; ++s) {
      const double v = pre(s), sg = 1 / (1 + std::exp(-v));
      const double g = go[static_cast<std::size_t>(s)] * (silu ? sg * (1 + v * (1 - sg)) : 1.0);
      r.bias += g;
      for (index_t k = 0; k < w; ++k) {
        r.weight[static_cast<std::size_t>(k)] += g * input(s - (w - 1) + k);
        add_input(s - (w - 1) + k, g * weight[static_cast<std::size_t>(k)]);
      }
    }
    for (index_t j = 0; j < w - 1; ++j) add_input(l - (w - 1) + j, gfs[static_cast<std::size_t>(j)]);
    return r;
  }
};

TEST(CudaConv1dEmu, BackwardReferenceMatchesFiniteDifferences) {
  // The double-loop gradients used below, against central differences of the double-loop forward
  // (step 1e-6: truncation ~1e-12, rounding ~1e-10 relative): every input, weight, bias and initial state, for a
  // sequence longer and one shorter than the kernel width.
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  for (index_t l : {7, 2}) {
    ConvRow r;
    r.l = l, r.w = 4;
    r.x.resize(static_cast<std::size_t>(l)), r.h0.resize(3), r.weight.resize(4);
    for (auto* v : {&r.x, &r.h0, &r.weight})
      for (auto& e : *v) e = dist(rng);
    r.bias = dist(rng);
    std::vector<double> go(static_cast<std::size_t>(l)), gfs(3);
    for (auto& e : go) e = dist(rng);
    for (auto& e : gfs) e = dist(rng);
    const auto gr = r.grads(go, gfs);
    auto check = [&](double& param, double analytic, const char* what) {
      const double h = 1e-6, p0 = param;
      param = p0 + h;
      const double lp = r.loss(go, gfs);
      param = p0 - h;
      const double lm = r.loss(go, gfs);
      param = p0;
      EXPECT_NEAR(analytic, (lp - lm) / (2 * h), 1e-7) << what << " l " << l;
    };
    for (std::size_t i = 0; i < r.x.size(); ++i) check(r.x[i], gr.x[i], "x");
    for (std::size_t i = 0; i < r.h0.size(); ++i) check(r.h0[i], gr.h0[i], "h0");
    for (std::size_t i = 0; i < r.weight.size(); ++i) check(r.weight[i], gr.weight[i], "weight");
    check(r.bias, gr.bias, "bias");
  }
}

template <class In>
void run_conv_backward(const ConvCase& c, bool with_gfs, Order order) {
  SCOPED_TRACE("backward l " + std::to_string(c.l) + " w " + std::to_string(c.w) + (c.bias ? "" : " no-bias") +
               (c.silu ? "" : " no-silu") + (c.init ? "" : " no-init") + (with_gfs ? " grad-final" : "") + " order " +
               ssm::emu::name(order));
  std::mt19937 rng(static_cast<unsigned>(c.l * 7 + c.w));
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const index_t b = c.b, d = c.d, l = c.l, w = c.w;
  std::vector<In> x(static_cast<std::size_t>(b * d * l)), go(x.size());  // (b, d, l)
  for (auto& v : x) v = ssm::from_float<In>(dist(rng));
  for (auto& v : go) v = ssm::from_float<In>(dist(rng));
  std::vector<float> weight(static_cast<std::size_t>(d * w)), bias(static_cast<std::size_t>(d)),
      h0(static_cast<std::size_t>(b * d * (w - 1))), gfs(h0.size());  // (d, w), (d), (b, d, w-1) x2
  for (auto* v : {&weight, &bias, &h0, &gfs})
    for (auto& e : *v) e = dist(rng);
  std::vector<In> gx(x.size(), ssm::from_float<In>(-9.0f));
  std::vector<float> gw(weight.size(), 0.0f), gb(bias.size(), 0.0f), gh0(h0.size(), -9.0f);
  ssm::CausalConv1dParams p;
  p.batch = b, p.dim = d, p.seqlen = l, p.width = w;
  p.x = x.data(), p.x_batch_stride = d * l, p.x_d_stride = l;
  p.weight = weight.data(), p.weight_d_stride = w;
  p.bias = c.bias ? bias.data() : nullptr;
  p.silu = c.silu;
  p.initial_state = c.init ? h0.data() : nullptr;
  ssm::CausalConv1dGradParams g;
  g.grad_out = go.data(), g.grad_out_batch_stride = d * l, g.grad_out_d_stride = l;
  g.grad_final_state = with_gfs ? gfs.data() : nullptr;
  g.grad_x = gx.data(), g.grad_x_batch_stride = d * l, g.grad_x_d_stride = l;
  g.grad_weight = gw.data();
  g.grad_bias = c.bias ? gb.data() : nullptr;
  g.grad_initial_state = gh0.data();
  using Cfg = ssm::kernels::ConvFwdConfig;
  const unsigned tiles = static_cast<unsigned>(std::max<index_t>(1, (l + Cfg::kThreads * Cfg::kItems - 1) /
                                                                         (Cfg::kThreads * Cfg::kItems)));
  LaunchConfig cfg{ssm::emu::dim3(tiles, static_cast<unsigned>(d), static_cast<unsigned>(b)),
                   ssm::emu::dim3(Cfg::kThreads), order, 19};
  auto report = ssm::emu::launch(cfg, ssm::kernels::causal_conv1d_bwd_kernel<In, Cfg::kThreads, Cfg::kItems>, p, g);
  ASSERT_TRUE(report.ok()) << report.summary();

  // Reference in double from the same (rounded) inputs. Tolerance relative to the largest gradient entry: f32
  // sums of up to b l products (1e-5, the gradient bound is 1e-4); bf16 grad_x is rounded on output.
  const double tol_x = std::is_same_v<In, float> ? 1e-5 : std::ldexp(1.0, -7);
  std::vector<double> ref_w(weight.size(), 0.0), ref_b(bias.size(), 0.0);
  double max_x = 1e-30, err_x = 0, max_h = 1e-30, err_h = 0;
  for (index_t bb = 0; bb < b; ++bb)
    for (index_t ch = 0; ch < d; ++ch) {
      ConvRow r;
      r.l = l, r.w = w, r.silu = c.silu, r.bias = c.bias ? bias[static_cast<std::size_t>(ch)] : 0.0;
      const std::size_t row = static_cast<std::size_t>((bb * d + ch) * l), srow = static_cast<std::size_t>((bb * d + ch) * (w - 1));
      r.x.resize(static_cast<std::size_t>(l));
      std::vector<double> gor(static_cast<std::size_t>(l)), gfsr(static_cast<std::size_t>(w - 1), 0.0);
      for (index_t t = 0; t < l; ++t) {
        r.x[static_cast<std::size_t>(t)] = ssm::to_float(x[row + static_cast<std::size_t>(t)]);
        gor[static_cast<std::size_t>(t)] = ssm::to_float(go[row + static_cast<std::size_t>(t)]);
      }
      if (c.init) r.h0.assign(h0.begin() + static_cast<std::ptrdiff_t>(srow), h0.begin() + static_cast<std::ptrdiff_t>(srow + w - 1));
      if (with_gfs) gfsr.assign(gfs.begin() + static_cast<std::ptrdiff_t>(srow), gfs.begin() + static_cast<std::ptrdiff_t>(srow + w - 1));
      r.weight.assign(weight.begin() + ch * w, weight.begin() + (ch + 1) * w);
      const auto gr = r.grads(gor, gfsr);
      for (index_t t = 0; t < l; ++t) {
        max_x = std::max(max_x, std::fabs(gr.x[static_cast<std::size_t>(t)]));
        err_x = std::max(err_x, std::fabs(ssm::to_float(gx[row + static_cast<std::size_t>(t)]) - gr.x[static_cast<std::size_t>(t)]));
      }
      for (index_t j = 0; j < w - 1; ++j) {
        max_h = std::max(max_h, std::fabs(gr.h0[static_cast<std::size_t>(j)]));
        err_h = std::max(err_h, std::fabs(gh0[srow + static_cast<std::size_t>(j)] - gr.h0[static_cast<std::size_t>(j)]));
      }
      for (index_t k = 0; k < w; ++k) ref_w[static_cast<std::size_t>(ch * w + k)] += gr.weight[static_cast<std::size_t>(k)];
      ref_b[static_cast<std::size_t>(ch)] += gr.bias;
    }
  EXPECT_LE(err_x, tol_x * max_x) << "grad_x";
  EXPECT_LE(err_h, 1e-5 * max_h) << "grad_initial_state";
  double max_w = 1e-30, err_w = 0, max_b = 1e-30, err_b = 0;
  for (std::size_t i = 0; i < ref_w.size(); ++i) {
    max_w = std::max(max_w, std::fabs(ref_w[i]));
    err_w = std::max(err_w, std::fabs(gw[i] - ref_w[i]));
  }
  for (std::size_t i = 0; i < ref_b.size(); ++i) {
    max_b = std::max(max_b, std::fabs(ref_b[i]));
    err_b = std::max(err_b, c.bias ? std::fabs(gb[i] - ref_b[i]) : std::fabs(static_cast<double>(gb[i])));
  }
  EXPECT_LE(err_w, 1e-5 * max_w) << "grad_weight";
  if (c.bias) {
    EXPECT_LE(err_b, 1e-5 * max_b) << "grad_bias";
  }
}

TEST(CudaConv1dEmu, BackwardMatchesTheDoubleLoop) {
  for (index_t l : {0, 1, 3, 511, 512, 513, 2049})
    for (Order o : {Order::forward, Order::reverse, Order::random}) {
      ConvCase c;
      c.l = l;
      run_conv_backward<float>(c, /*with_gfs=*/true, o);
    }
  for (index_t w : {2, 3}) {
    ConvCase c;
    c.w = w;
    c.l = 100;
    run_conv_backward<float>(c, true, Order::random);
  }
  ConvCase plain;
  plain.l = 100;
  plain.bias = plain.silu = plain.init = false;
  run_conv_backward<float>(plain, false, Order::forward);
  ConvCase low;
  low.l = 700;
  run_conv_backward<ssm::bfloat16>(low, true, Order::reverse);
}

}  // namespace
