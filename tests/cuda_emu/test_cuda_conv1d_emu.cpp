// The causal conv1d kernels (cuda/kernels/causal_conv1d.cuh) under the host emulation: the sequence kernel
// against a plain double loop (widths 2..4, lengths 0, 1, 3, 511, 512, 513, 2049, with / without bias, SiLU,
// initial state, f32 / bf16, every thread order), and the one-token update run token by token equal to it
// (the recurrent and parallel views of the same convolution).
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
  ssm::cuda::CausalConv1dParams p;
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
  ssm::cuda::CausalConv1dUpdateParams up;
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

}  // namespace
