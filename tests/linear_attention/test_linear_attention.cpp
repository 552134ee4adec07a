// The linear-attention op (ops/linear_attention.hpp) beyond the conformance registry: the three forms agree (the
// chunked path and the CPU token loop against the token loop in double, ≤ 1e-12 in f64 and ≤ 1e-5 in f32, at chunk
// sizes that do not divide l, with packed sequences); the decode step chained over a sequence equals the parallel
// form; the reference backward equals central differences (f64); the chunked backward equals the reference
// backward; bad input is an ssm::Error naming the argument.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "../conformance/linear_attention_problem.hpp"
#include "../conformance/registry.hpp"
#include "ssm/ops/linear_attention.hpp"
#include "support/expect_error.hpp"

namespace {

using ssm_test::expect_arg_error;

using linear_attention_problem::LaCase;
using linear_attention_problem::LaData;
using ssm::DType;
using ssm::index_t;
using ssm::LinearAttentionPath;
using ssm::Tensor;
using conformance::clone;
using conformance::rel_error;

ssm::LinearAttentionOutputs run(const LaData& d, LinearAttentionPath path, index_t chunk, int threads = 1) {
  ssm::LinearAttentionOptions o = d.options();
  o.path = path, o.chunk_size = chunk, o.threads = threads, o.return_final_state = true;
  return ssm::linear_attention(d.inputs(), o);
}

/// Every kind of shape: l = 1; l not a multiple of the chunks; groups; φ = elu + 1; the normalizer; decays; a
/// scale; initial states; strided rows; packed sequences of ragged lengths.
std::vector<LaCase> shapes(DType dt) {
  std::vector<LaCase> v;
  LaCase c;
  c.dtype = dt, c.b = 1, c.l = 1, c.h = 1, c.dk = 1, c.dv = 1;
  v.push_back(c);
  c = {};
  c.dtype = dt, c.b = 2, c.l = 37, c.h = 3, c.dk = 5, c.dv = 6, c.seed = 2;  // plain linear attention
  v.push_back(c);
  c.feature_map = ssm::FeatureMap::elu_plus_one, c.normalize = true, c.has_init = true, c.seed = 3;  // Katharopoulos
  v.push_back(c);
  c = {};
  c.dtype = dt, c.b = 1, c.l = 70, c.h = 4, c.g = 2, c.dk = 6, c.dv = 5, c.decay = true, c.scale = 0.4;  // retention
  c.has_init = true, c.pad = 3, c.seed = 4;
  v.push_back(c);
  c = {};
  c.dtype = dt, c.l = 60, c.h = 3, c.dk = 4, c.dv = 3, c.normalize = true, c.decay = true, c.has_init = true;
  c.cu = {0, 1, 20, 21, 60}, c.seed = 5;  // packed, identity φ with the normalizer
  v.push_back(c);
  return v;
}

TEST(LinearAttention, ChunkedAndTokenLoopsEqualTheReference) {
  for (DType dt : {DType::f64, DType::f32})
    for (const LaCase& cs : shapes(dt)) {
      const LaData d = linear_attention_problem::make_data(cs);
      const auto ref = run(d, LinearAttentionPath::reference, 64);
      EXPECT_EQ(ref.path, "reference");
      const double tol = dt == DType::f64 ? 1e-12 : 1e-5;
      for (index_t chunk : {1, 7, 16, 64}) {
        for (int threads : {1, 2}) {
          SCOPED_TRACE(cs.describe() + " chunk " + std::to_string(chunk) + " threads " + std::to_string(threads));
          const auto got = run(d, LinearAttentionPath::chunked, chunk, threads);
          EXPECT_EQ(got.path, "cpu-chunked");
          EXPECT_LE(rel_error(got.out, ref.out), tol);
          EXPECT_LE(rel_error(got.final_state, ref.final_state), tol);
          if (cs.normalize) { EXPECT_LE(rel_error(got.final_normalizer, ref.final_normalizer), tol); }
        }
      }
      SCOPED_TRACE(cs.describe() + " recurrent");
      const auto rec = run(d, LinearAttentionPath::recurrent, 64, 2);
      EXPECT_EQ(rec.path, "cpu-recurrent");
      EXPECT_LE(rel_error(rec.out, ref.out), tol);
      EXPECT_LE(rel_error(rec.final_state, ref.final_state), tol);
      if (cs.normalize) { EXPECT_LE(rel_error(rec.final_normalizer, ref.final_normalizer), tol); }
    }
}

TEST(LinearAttention, RetentionDecaysTheState) {
  // γ < 1 must change the output (a decay the chunked path dropped would otherwise pass the agreement tests only
  // if the reference dropped it too): with and without decay differ, and the chunked path follows the reference.
  LaCase cs;
  cs.l = 20, cs.h = 2, cs.decay = true;
  const LaData d = linear_attention_problem::make_data(cs);
  const auto with = run(d, LinearAttentionPath::chunked, 8);
  LaData plain = d;
  plain.cs.decay = false;
  const auto without = run(plain, LinearAttentionPath::chunked, 8);
  EXPECT_GT(rel_error(with.out, without.out), 1e-3);
}

TEST(LinearAttention, StepChainedOverASequenceEqualsTheParallelForm) {
  for (bool normalize : {false, true}) {
    LaCase cs;
    cs.b = 2, cs.l = 23, cs.h = 4, cs.g = 2, cs.dk = 5, cs.dv = 3, cs.decay = true, cs.has_init = true;
    cs.normalize = normalize, cs.feature_map = ssm::FeatureMap::elu_plus_one, cs.scale = 0.7, cs.seed = 9;
    const LaData d = linear_attention_problem::make_data(cs);
    const auto par = run(d, LinearAttentionPath::chunked, 8);
    Tensor state = clone(d.initial_state), norm = clone(d.initial_normalizer);
    Tensor out = Tensor::empty({cs.b, cs.l, cs.h, cs.dv}, cs.dtype);
    for (index_t t = 0; t < cs.l; ++t) {
      auto at = [&](const Tensor& x) { return x.view().select(1, t); };  // (b, ·, d) of step t
      ssm::linear_attention_step(at(d.q), at(d.k), at(d.v), state.view(),
                                 normalize ? std::optional<ssm::TensorView>(norm.view()) : std::nullopt, at(out),
                                 d.options());
    }
    SCOPED_TRACE(cs.describe());
    EXPECT_LE(rel_error(out, par.out), 1e-12);
    EXPECT_LE(rel_error(state, par.final_state), 1e-12);
    if (normalize) { EXPECT_LE(rel_error(norm, par.final_normalizer), 1e-12); }
  }
}

/// Σ w ⊙ out + Σ wS ⊙ final_state + Σ wz ⊙ final_normalizer, in double, through the reference.
struct Loss {
  Tensor w, wS, wz;
  double operator()(const LaData& d) const {
    const auto r = run(d, LinearAttentionPath::reference, 1);
    double s = 0;
    auto dot = [&](const Tensor& a, const Tensor& b) {
      for (index_t i = 0; i < a.numel(); ++i) s += a.data_as<double>()[i] * b.data_as<double>()[i];
    };
    dot(r.out, w), dot(r.final_state, wS);
    if (d.cs.normalize) dot(r.final_normalizer, wz);
    return s;
  }
};

TEST(LinearAttention, ReferenceBackwardEqualsCentralDifferences) {
  for (int variant = 0; variant < 2; ++variant) {
    LaCase cs;
    cs.b = 1, cs.l = 6, cs.h = 2, cs.g = 1, cs.dk = 3, cs.dv = 2, cs.has_init = true, cs.seed = 11 + variant;
    if (variant == 1) cs.normalize = true, cs.feature_map = ssm::FeatureMap::elu_plus_one, cs.decay = true, cs.scale = 0.6;
    else cs.decay = true, cs.scale = 1.3, cs.h = 4, cs.g = 2;
    LaData d = linear_attention_problem::make_data(cs);
    std::mt19937_64 rng(77);
    Loss loss{linear_attention_problem::uniform(rng, {cs.b, cs.l, cs.h, cs.dv}, DType::f64, -1, 1),
              linear_attention_problem::uniform(rng, {cs.rows(), cs.h, cs.dk, cs.dv}, DType::f64, -1, 1),
              linear_attention_problem::uniform(rng, {cs.rows(), cs.h, cs.dk}, DType::f64, -1, 1)};
    ssm::LinearAttentionOptions o = d.options();
    o.path = LinearAttentionPath::reference;
    const auto g = ssm::linear_attention_backward(d.inputs(), loss.w.view(), loss.wS.view(),
                                                  cs.normalize ? std::optional<ssm::TensorView>(loss.wz.view())
                                                               : std::nullopt,
                                                  o);
    auto check = [&](const char* name, Tensor& x, const Tensor& grad) {
      SCOPED_TRACE(std::string(name) + " " + cs.describe());
      ASSERT_TRUE(grad.defined());
      double max_err = 0, max_g = 0;
      for (index_t i = 0; i < x.numel(); ++i) {
        double& xi = x.data_as<double>()[i];
        const double x0 = xi, e = 1e-6;
        xi = x0 + e;
        const double up = loss(d);
        xi = x0 - e;
        const double down = loss(d);
        xi = x0;
        const double fd = (up - down) / (2 * e), an = grad.data_as<double>()[i];
        max_err = std::max(max_err, std::abs(fd - an)), max_g = std::max(max_g, std::abs(an));
      }
      EXPECT_LE(max_err, 1e-7 * std::max(1.0, max_g));
    };
    check("q", d.q, g.grad_q);
    check("k", d.k, g.grad_k);
    check("v", d.v, g.grad_v);
    check("initial_state", d.initial_state, g.grad_initial_state);
    if (cs.normalize) check("initial_normalizer", d.initial_normalizer, g.grad_initial_normalizer);
  }
}

TEST(LinearAttention, ChunkedBackwardEqualsTheReferenceBackward) {
  for (DType dt : {DType::f64, DType::f32})
    for (const LaCase& cs : shapes(dt)) {
      const LaData d = linear_attention_problem::make_data(cs);
      std::mt19937_64 rng(cs.seed + 100);
      const DType pt = ssm::compute_dtype(dt);
      const Tensor go = linear_attention_problem::uniform(rng, {cs.b, cs.l, cs.h, cs.dv}, dt, -1, 1);
      const Tensor gS = linear_attention_problem::uniform(rng, {cs.rows(), cs.h, cs.dk, cs.dv}, pt, -1, 1);
      const Tensor gz = linear_attention_problem::uniform(rng, {cs.rows(), cs.h, cs.dk}, pt, -1, 1);
      const std::optional<ssm::TensorView> gzv = cs.normalize ? std::optional<ssm::TensorView>(gz.view()) : std::nullopt;
      ssm::LinearAttentionOptions o = d.options();
      o.path = LinearAttentionPath::reference;
      const auto ref = ssm::linear_attention_backward(d.inputs(), go.view(), gS.view(), gzv, o);
      const double tol = dt == DType::f64 ? 1e-10 : 1e-4;
      for (index_t chunk : {1, 7, 64}) {
        SCOPED_TRACE(cs.describe() + " chunk " + std::to_string(chunk));
        o.path = LinearAttentionPath::chunked, o.chunk_size = chunk, o.threads = 2;
        const auto got = ssm::linear_attention_backward(d.inputs(), go.view(), gS.view(), gzv, o);
        EXPECT_EQ(got.path, "cpu-chunked");
        EXPECT_LE(rel_error(got.grad_q, ref.grad_q), tol);
        EXPECT_LE(rel_error(got.grad_k, ref.grad_k), tol);
        EXPECT_LE(rel_error(got.grad_v, ref.grad_v), tol);
        if (cs.has_init) { EXPECT_LE(rel_error(got.grad_initial_state, ref.grad_initial_state), tol); }
        if (cs.has_init && cs.normalize) {
          EXPECT_LE(rel_error(got.grad_initial_normalizer, ref.grad_initial_normalizer), tol);
        }
      }
    }
}


TEST(LinearAttention, BadInputIsAnErrorNamingTheArgument) {
  LaCase cs;
  cs.l = 6, cs.h = 2, cs.normalize = true, cs.has_init = true;
  const LaData d = linear_attention_problem::make_data(cs);
  auto with = [&](const std::function<void(ssm::LinearAttentionInputs&, ssm::LinearAttentionOptions&)>& edit) {
    return [&d, edit] {
      ssm::LinearAttentionInputs in = d.inputs();
      ssm::LinearAttentionOptions o = d.options();
      edit(in, o);
      ssm::linear_attention(in, o);
    };
  };
  for (double bad : {0.0, -0.5, 1.5, std::nan(""), std::numeric_limits<double>::infinity()})
    expect_arg_error("gamma", with([bad](auto&, auto& o) { o.gamma = {0.9, bad}; }));
  expect_arg_error("gamma", with([](auto&, auto& o) { o.gamma = {0.9}; }));  // one per head
  expect_arg_error("chunk_size", with([](auto&, auto& o) { o.chunk_size = 0; }));
  expect_arg_error("chunk_size", with([](auto&, auto& o) { o.chunk_size = -4; }));
  expect_arg_error("eps", with([](auto&, auto& o) { o.eps = -1; }));
  expect_arg_error("scale", with([](auto&, auto& o) { o.scale = std::nan(""); }));
  const Tensor k_short = Tensor::zeros({1, 5, 1, 4}, DType::f64);
  expect_arg_error("k", with([&](auto& in, auto&) { in.k = k_short.view(); }));
  const Tensor k_f32 = Tensor::zeros({1, 6, 1, 4}, DType::f32);
  expect_arg_error("k", with([&](auto& in, auto&) { in.k = k_f32.view(); }));
  const Tensor v_heads = Tensor::zeros({1, 6, 3, 3}, DType::f64);  // 3 heads: q's 2 groups do not divide them
  const Tensor qk_groups = Tensor::zeros({1, 6, 2, 4}, DType::f64);
  expect_arg_error("q", with([&](auto& in, auto& o) {
    in.v = v_heads.view(), in.q = in.k = qk_groups.view(), in.initial_state.reset(), in.initial_normalizer.reset();
    o.gamma.clear();
  }));
  const Tensor s_f32 = Tensor::zeros({1, 2, 4, 3}, DType::f32);
  expect_arg_error("initial_state", with([&](auto& in, auto&) { in.initial_state = s_f32.view(); }));
  const Tensor s_shape = Tensor::zeros({1, 2, 3, 4}, DType::f64);
  expect_arg_error("initial_state", with([&](auto& in, auto&) { in.initial_state = s_shape.view(); }));
  expect_arg_error("initial_normalizer", with([](auto&, auto& o) { o.normalize = false; }));
  double fake = 0;
  const ssm::TensorView v_cuda(&fake, DType::f64, ssm::Device::cuda(0), {1, 6, 2, 3}, {36, 6, 3, 1});
  expect_arg_error("v", [&] {  // into a CPU out: the allocating form would allocate on v's device first
    ssm::LinearAttentionInputs in = d.inputs();
    in.v = v_cuda;
    const Tensor out = Tensor::zeros({1, 6, 2, 3}, DType::f64);
    ssm::linear_attention_into(in, out, std::nullopt, std::nullopt, d.options());
  });
  // the backward and the step check the same way
  expect_arg_error("gamma", [&] {
    ssm::LinearAttentionOptions o = d.options();
    o.gamma = {2.0, 0.5};
    const Tensor go = Tensor::zeros({1, 6, 2, 3}, DType::f64);
    ssm::linear_attention_backward(d.inputs(), go.view(), std::nullopt, std::nullopt, o);
  });
  expect_arg_error("state", [&] {
    const Tensor q = Tensor::zeros({1, 1, 4}, DType::f64), v = Tensor::zeros({1, 2, 3}, DType::f64);
    const Tensor st = Tensor::zeros({1, 2, 4, 4}, DType::f64), out = Tensor::zeros({1, 2, 3}, DType::f64);
    ssm::LinearAttentionOptions o;
    ssm::linear_attention_step(q, q, v, st, std::nullopt, out, o);
  });
}

}  // namespace
