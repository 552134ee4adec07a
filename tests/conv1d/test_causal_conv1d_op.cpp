// ssm::causal_conv1d / causal_conv1d_backward / causal_conv1d_update on CPU tensors: the channel-major op equals the
// layers' time-major conv1d (the Mamba block's), the update run token by token equals the sequence form, every
// gradient equals central differences in f64, and bad arguments are ssm::Error naming them.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "ssm/layers/conv1d.hpp"
#include "ssm/ops/causal_conv1d.hpp"

namespace {

using ssm::index_t;

template <class T>
ssm::Tensor random(ssm::Dims shape, std::mt19937& rng, double amp = 1.0) {
  std::uniform_real_distribution<double> dist(-amp, amp);
  std::vector<T> v(static_cast<std::size_t>(shape.product()));
  for (auto& x : v) x = static_cast<T>(dist(rng));
  return ssm::Tensor::from_vector(shape, v);
}

struct Case {
  index_t b, d, l, w;
  bool bias, init, silu;
};

TEST(CausalConv1dOp, ForwardEqualsTheLayersTimeMajorConv) {
  const Case cases[] = {{2, 5, 37, 4, true, true, true}, {1, 3, 2, 4, false, true, false},  // l < w - 1
                        {3, 4, 1, 2, true, false, true},  {1, 2, 0, 3, true, true, true},   // empty sequence
                        {1, 6, 50, 7, false, false, true}};
  std::mt19937 rng(1);
  for (const auto& c : cases) {
    SCOPED_TRACE("l " + std::to_string(c.l) + " w " + std::to_string(c.w));
    ssm::Tensor x = random<float>({c.b, c.d, c.l}, rng), wt = random<float>({c.d, c.w}, rng);
    ssm::Tensor bias = random<float>({c.d}, rng), h0 = random<float>({c.b, c.d, c.w - 1}, rng);
    ssm::CausalConv1dInputs in;
    in.x = x.view(), in.weight = wt.view(), in.silu = c.silu;
    if (c.bias) in.bias = bias.view();
    if (c.init) in.initial_state = h0.view();
    const auto r = ssm::causal_conv1d(in);
    EXPECT_EQ(r.path, "cpu-loops");
    ssm::layers::Conv1dArgs<float> a;
    a.l = c.l, a.d = c.d, a.w = c.w, a.weight = wt.data_as<float>(), a.bias = c.bias ? bias.data_as<float>() : nullptr;
    a.silu = c.silu;
    const auto xv = x.to_vector<float>(), h0v = h0.to_vector<float>(), out = r.out.to_vector<float>();
    const auto fs = r.final_state.to_vector<float>();
    for (index_t bi = 0; bi < c.b; ++bi) {
      std::vector<float> xt(static_cast<std::size_t>(c.l * c.d)), st(static_cast<std::size_t>((c.w - 1) * c.d), 0.0f);
      for (index_t t = 0; t < c.l; ++t)
        for (index_t ch = 0; ch < c.d; ++ch) xt[static_cast<std::size_t>(t * c.d + ch)] = xv[static_cast<std::size_t>((bi * c.d + ch) * c.l + t)];
      if (c.init)
        for (index_t j = 0; j < c.w - 1; ++j)
          for (index_t ch = 0; ch < c.d; ++ch)
            st[static_cast<std::size_t>(j * c.d + ch)] = h0v[static_cast<std::size_t>((bi * c.d + ch) * (c.w - 1) + j)];
      std::vector<float> ot(xt.size()), st_out(st.size());
      ssm::layers::conv1d_forward(a, xt.data(), st.data(), ot.data(), st_out.data());
      for (index_t t = 0; t < c.l; ++t)
        for (index_t ch = 0; ch < c.d; ++ch)
          EXPECT_NEAR(out[static_cast<std::size_t>((bi * c.d + ch) * c.l + t)], ot[static_cast<std::size_t>(t * c.d + ch)], 1e-6);
      for (index_t j = 0; j < c.w - 1; ++j)
        for (index_t ch = 0; ch < c.d; ++ch)
          EXPECT_EQ(fs[static_cast<std::size_t>((bi * c.d + ch) * (c.w - 1) + j)], st_out[static_cast<std::size_t>(j * c.d + ch)]);
    }
  }
}

TEST(CausalConv1dOp, UpdateTokenByTokenEqualsTheSequence) {
  const index_t b = 2, d = 3, l = 9, w = 4;
  std::mt19937 rng(2);
  ssm::Tensor x = random<double>({b, d, l}, rng), wt = random<double>({d, w}, rng), bias = random<double>({d}, rng);
  ssm::Tensor h0 = random<double>({b, d, w - 1}, rng);
  ssm::CausalConv1dInputs in;
  in.x = x.view(), in.weight = wt.view(), in.bias = bias.view(), in.initial_state = h0.view();
  const auto seq = ssm::causal_conv1d(in);
  // The update's state holds the last w inputs: start from (0, h0) — its oldest entry drops out at the first shift.
  std::vector<double> state(static_cast<std::size_t>(b * d * w), 0.0);
  const auto h0v = h0.to_vector<double>(), xv = x.to_vector<double>(), out = seq.out.to_vector<double>();
  for (index_t r = 0; r < b * d; ++r)
    for (index_t j = 0; j < w - 1; ++j) state[static_cast<std::size_t>(r * w + 1 + j)] = h0v[static_cast<std::size_t>(r * (w - 1) + j)];
  ssm::Tensor st = ssm::Tensor::from_vector({b, d, w}, state);
  for (index_t t = 0; t < l; ++t) {
    std::vector<double> xt(static_cast<std::size_t>(b * d));
    for (index_t r = 0; r < b * d; ++r) xt[static_cast<std::size_t>(r)] = xv[static_cast<std::size_t>(r * l + t)];
    ssm::Tensor xs = ssm::Tensor::from_vector({b, d}, xt), o = ssm::Tensor::empty({b, d}, ssm::DType::f64);
    ssm::causal_conv1d_update(xs.view(), st.view(), wt.view(), bias.view(), o.view());
    const auto ov = o.to_vector<double>();
    for (index_t r = 0; r < b * d; ++r) EXPECT_NEAR(ov[static_cast<std::size_t>(r)], out[static_cast<std::size_t>(r * l + t)], 1e-14);
  }
  // After the sequence the update's state ends with the op's final state.
  const auto sv = st.to_vector<double>(), fs = seq.final_state.to_vector<double>();
  for (index_t r = 0; r < b * d; ++r)
    for (index_t j = 0; j < w - 1; ++j)
      EXPECT_EQ(sv[static_cast<std::size_t>(r * w + 1 + j)], fs[static_cast<std::size_t>(r * (w - 1) + j)]);
}

TEST(CausalConv1dOp, GradientsEqualCentralDifferences) {
  // L = Σ out · G + Σ final_state · F for fixed random G, F; every input perturbed by ±1e-6 in f64.
  for (const Case c : {Case{2, 3, 11, 4, true, true, true}, Case{1, 2, 2, 4, true, true, false}}) {
    SCOPED_TRACE("l " + std::to_string(c.l));
    std::mt19937 rng(3);
    ssm::Tensor x = random<double>({c.b, c.d, c.l}, rng), wt = random<double>({c.d, c.w}, rng);
    ssm::Tensor bias = random<double>({c.d}, rng), h0 = random<double>({c.b, c.d, c.w - 1}, rng);
    ssm::Tensor G = random<double>({c.b, c.d, c.l}, rng), F = random<double>({c.b, c.d, c.w - 1}, rng);
    ssm::CausalConv1dInputs in;
    in.x = x.view(), in.weight = wt.view(), in.bias = bias.view(), in.initial_state = h0.view(), in.silu = c.silu;
    const auto g = ssm::causal_conv1d_backward(in, G.view(), F.view());
    auto loss = [&] {
      const auto r = ssm::causal_conv1d(in);
      double s = 0;
      const auto o = r.out.to_vector<double>(), fs = r.final_state.to_vector<double>();
      const auto gv = G.to_vector<double>(), fv = F.to_vector<double>();
      for (std::size_t i = 0; i < o.size(); ++i) s += o[i] * gv[i];
      for (std::size_t i = 0; i < fs.size(); ++i) s += fs[i] * fv[i];
      return s;
    };
    auto check = [&](ssm::Tensor& t, const ssm::Tensor& grad, const char* name) {
      double* p = t.data_as<double>();
      const auto gv = grad.to_vector<double>();
      for (index_t i = 0; i < t.numel(); ++i) {
        const double keep = p[i];
        p[i] = keep + 1e-6;
        const double up = loss();
        p[i] = keep - 1e-6;
        const double down = loss();
        p[i] = keep;
        const double fd = (up - down) / 2e-6;
        EXPECT_NEAR(gv[static_cast<std::size_t>(i)], fd, 1e-6 * std::max(1.0, std::abs(fd))) << name << "[" << i << "]";
      }
    };
    check(x, g.grad_x, "x");
    check(wt, g.grad_weight, "weight");
    check(bias, g.grad_bias, "bias");
    check(h0, g.grad_initial_state, "initial_state");
  }
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ssm::Error& e) {
    return e.what();
  }
  return "no error";
}

// The channel-last layout (x (b, l, d) as a column slice of a wider time-major buffer, states (b, w - 1, d)), on one
// and on three threads, equals the channel-major op on the same numbers; its final state may be its initial state.
TEST(CausalConv1dOp, ChannelLastEqualsChannelMajor) {
  const Case cases[] = {{2, 5, 200, 4, true, true, true}, {1, 3, 2, 4, false, true, false},  // l < w - 1
                        {3, 4, 1, 2, true, true, true}, {2, 9, 130, 3, true, false, true}, {1, 1, 70, 4, true, true, true}};
  std::mt19937 rng(5);
  for (const auto& c : cases)
    for (int threads : {1, 3}) {
      SCOPED_TRACE("l " + std::to_string(c.l) + " d " + std::to_string(c.d) + " threads " + std::to_string(threads));
      const index_t ld = 2 * c.d + 1;  // x's row stride: a column slice of a wider buffer
      ssm::Tensor buf = random<float>({c.b, c.l, ld}, rng), wt = random<float>({c.d, c.w}, rng);
      ssm::Tensor bias = random<float>({c.d}, rng), h0 = random<float>({c.b, c.w - 1, c.d}, rng);
      // The same numbers channel-major: x (b, d, l), h0 (b, d, w - 1).
      ssm::Tensor x_cm = ssm::Tensor::empty({c.b, c.d, c.l}, ssm::DType::f32);
      ssm::Tensor h0_cm = ssm::Tensor::empty({c.b, c.d, c.w - 1}, ssm::DType::f32);
      for (index_t bi = 0; bi < c.b; ++bi)
        for (index_t ch = 0; ch < c.d; ++ch) {
          for (index_t t = 0; t < c.l; ++t)
            x_cm.data_as<float>()[(bi * c.d + ch) * c.l + t] = buf.data_as<float>()[(bi * c.l + t) * ld + 1 + ch];
          for (index_t j = 0; j < c.w - 1; ++j)
            h0_cm.data_as<float>()[(bi * c.d + ch) * (c.w - 1) + j] = h0.data_as<float>()[(bi * (c.w - 1) + j) * c.d + ch];
        }
      ssm::CausalConv1dInputs cm;
      cm.x = x_cm.view(), cm.weight = wt.view(), cm.silu = c.silu;
      if (c.bias) cm.bias = bias.view();
      if (c.init) cm.initial_state = h0_cm.view();
      const auto want = ssm::causal_conv1d(cm);
      ssm::CausalConv1dInputs cl = cm;
      cl.x = ssm::TensorView(buf.data_as<float>() + 1, ssm::DType::f32, ssm::Device::cpu(), {c.b, c.l, c.d},
                             {c.l * ld, ld, 1});
      cl.channel_last = true;
      cl.num_threads = threads;
      if (c.init) cl.initial_state = h0.view();
      ssm::Tensor out = ssm::Tensor::empty({c.b, c.l, c.d}, ssm::DType::f32);
      ssm::Tensor fs = ssm::Tensor::empty({c.b, c.w - 1, c.d}, ssm::DType::f32);
      // With an initial state, the final state overwrites it (in place, as decoding does).
      const ssm::TensorView final_state = c.init ? h0.view() : fs.view();
      EXPECT_EQ(ssm::causal_conv1d_into(cl, out, final_state), "cpu-channel-last");
      for (index_t bi = 0; bi < c.b; ++bi)
        for (index_t ch = 0; ch < c.d; ++ch) {
          for (index_t t = 0; t < c.l; ++t)
            ASSERT_NEAR(out.data_as<float>()[(bi * c.l + t) * c.d + ch],
                        want.out.data_as<float>()[(bi * c.d + ch) * c.l + t], 1e-5)
                << "b " << bi << " channel " << ch << " t " << t;
          for (index_t j = 0; j < c.w - 1; ++j)
            ASSERT_EQ(final_state.data_as<float>()[(bi * (c.w - 1) + j) * c.d + ch],
                      want.final_state.data_as<float>()[(bi * c.d + ch) * (c.w - 1) + j])
                << "final state, b " << bi << " channel " << ch << " j " << j;
        }
      // Channel-last states in the channel-major shape are refused by name.
      if (c.init && c.d != c.w - 1) {
        cl.initial_state = h0_cm.view();
        EXPECT_NE(error_of([&] { (void)ssm::causal_conv1d(cl); }).find("argument 'initial_state': expected shape"),
                  std::string::npos);
      }
    }
}

TEST(CausalConv1dOp, BadArgumentsNameTheArgument) {
  std::mt19937 rng(4);
  ssm::Tensor x = random<float>({2, 3, 8}, rng), wt = random<float>({3, 4}, rng), w64 = random<double>({3, 4}, rng);
  ssm::Tensor bias5 = random<float>({5}, rng), h0bad = random<float>({2, 3, 2}, rng), x16 = ssm::Tensor::empty({2, 3, 8}, ssm::DType::f16);
  ssm::Tensor w1 = random<float>({3, 1}, rng);
  auto fwd = [&](ssm::CausalConv1dInputs in) { return [in] { (void)ssm::causal_conv1d(in); }; };
  ssm::CausalConv1dInputs in;
  in.x = x.view(), in.weight = wt.view();
  auto with = [&](auto edit) {
    ssm::CausalConv1dInputs c = in;
    edit(c);
    return c;
  };
  EXPECT_NE(error_of(fwd(with([&](auto& c) { c.weight = w64.view(); }))).find("argument 'weight': expected dtype f32"), std::string::npos);
  EXPECT_NE(error_of(fwd(with([&](auto& c) { c.bias = bias5.view(); }))).find("argument 'bias': expected shape (3)"), std::string::npos);
  EXPECT_NE(error_of(fwd(with([&](auto& c) { c.initial_state = h0bad.view(); }))).find("argument 'initial_state'"), std::string::npos);
  EXPECT_NE(error_of(fwd(with([&](auto& c) { c.x = x16.view(); }))).find("argument 'x': expected dtype in {f32, f64}"), std::string::npos);
  EXPECT_NE(error_of(fwd(with([&](auto& c) { c.weight = w1.view(); }))).find("width w >= 2"), std::string::npos);
  EXPECT_NE(error_of(fwd(with([&](auto& c) { c.x = ssm::TensorView(x.data(), ssm::DType::f32, ssm::Device::cpu(), {2, 3, 4}, {24, 8, 2}); }))).find("argument 'x'"), std::string::npos);
  EXPECT_NE(error_of([&] { (void)ssm::causal_conv1d_backward(in, x.view().narrow(2, 0, 4)); }).find("argument 'grad_out'"), std::string::npos);
  ssm::Tensor st = ssm::Tensor::zeros({2, 3, 3}, ssm::DType::f32), xs = random<float>({2, 3}, rng), o = ssm::Tensor::empty({2, 3}, ssm::DType::f32);
  EXPECT_NE(error_of([&] { ssm::causal_conv1d_update(xs.view(), st.view(), wt.view(), std::nullopt, o.view()); }).find("argument 'conv_state': expected shape (2, 3, 4)"), std::string::npos);
}

}  // namespace
