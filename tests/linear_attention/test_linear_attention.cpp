// The linear-attention op (ops/linear_attention.hpp) beyond the conformance registry: the three forms agree (the
// chunked path and the CPU token loop against the token loop in double, ≤ 1e-12 in f64 and ≤ 1e-5 in f32, at chunk
// sizes that do not divide l, with packed sequences, with GLA's log gate weak, mixed and strong enough that the
// gated chunk algebra splits blocks down to direct exponents); the decode step chained over a sequence equals the
// parallel form; the reference backward equals central differences (f64, the log gate's gradient too); the chunked
// backward equals the reference backward; bad input is an ssm::Error naming the argument.
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
#include "support/central_differences.hpp"
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
  // GLA: a log gate in [−0.5, 0) (spans of about 16 over 64 steps: one product, or split once in f32), with elu + 1,
  // the normalizer, groups, initial states
  c = {};
  c.dtype = dt, c.b = 2, c.l = 70, c.h = 4, c.g = 2, c.dk = 6, c.dv = 5, c.gate = 0.5, c.has_init = true;
  c.feature_map = ssm::FeatureMap::elu_plus_one, c.normalize = true, c.seed = 6;
  v.push_back(c);
  // a gate in [−3, 0) with retention's γ on top: spans of ~100 per 64 steps, split two or three times
  c = {};
  c.dtype = dt, c.l = 130, c.h = 2, c.dk = 8, c.dv = 4, c.gate = 3, c.decay = true, c.has_init = true, c.pad = 2;
  c.scale = 0.5, c.seed = 7;
  v.push_back(c);
  // a gate in [−30, 0), packed: every block of 8 exceeds the span limits and takes its exponents directly
  c = {};
  c.dtype = dt, c.l = 45, c.h = 3, c.dk = 4, c.dv = 3, c.gate = 30, c.has_init = true, c.cu = {0, 3, 4, 45}, c.seed = 8;
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

TEST(LinearAttention, AChunkLongerThanTheSequenceIsTheSequence) {
  // chunk_size 2^40 is one chunk per sequence (the result of chunk = l to the bit), on the engine and the gated
  // algebra, forward and backward, without a buffer sized by the requested chunk.
  for (const LaCase& cs : shapes(DType::f32)) {
    const LaData d = linear_attention_problem::make_data(cs);
    const auto huge = run(d, LinearAttentionPath::chunked, index_t{1} << 40), whole = run(d, LinearAttentionPath::chunked, cs.l);
    EXPECT_EQ(rel_error(huge.out, whole.out), 0.0) << cs.describe();
    ssm::LinearAttentionOptions o = d.options();
    o.chunk_size = index_t{1} << 40;
    const auto g = ssm::linear_attention_backward(d.inputs(), huge.out, std::nullopt, std::nullopt, o);
    o.chunk_size = cs.l;
    const auto w = ssm::linear_attention_backward(d.inputs(), huge.out, std::nullopt, std::nullopt, o);
    EXPECT_EQ(rel_error(g.grad_q, w.grad_q), 0.0) << cs.describe();
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

TEST(LinearAttention, TheLogGateDecaysEachKeyChannel) {
  // A gate the chunked path dropped, or applied per head instead of per channel, must fail: with the gate, without
  // it, and with every channel given the channels' mean differ; the chunked path follows the reference for each.
  LaCase cs;
  cs.l = 40, cs.h = 2, cs.dk = 6, cs.dv = 3, cs.gate = 1, cs.has_init = true;
  const LaData d = linear_attention_problem::make_data(cs);
  const auto gated = run(d, LinearAttentionPath::chunked, 16);
  EXPECT_LE(rel_error(gated.out, run(d, LinearAttentionPath::reference, 16).out), 1e-12);
  LaData plain = d;
  plain.cs.gate = 0;
  EXPECT_GT(rel_error(gated.out, run(plain, LinearAttentionPath::chunked, 16).out), 1e-2);
  LaData mean = d;
  mean.log_gate = clone(d.log_gate);
  for (index_t r = 0; r < cs.l * cs.h; ++r) {
    double* g = mean.log_gate.data_as<double>() + r * cs.dk;
    double m = 0;
    for (index_t i = 0; i < cs.dk; ++i) m += g[i] / static_cast<double>(cs.dk);
    for (index_t i = 0; i < cs.dk; ++i) g[i] = m;
  }
  mean.log_gate_v = mean.log_gate.view();
  EXPECT_GT(rel_error(gated.out, run(mean, LinearAttentionPath::chunked, 16).out), 1e-2);
}

TEST(LinearAttention, StrongGatesStayFiniteAndExactInF32) {
  // log gates down to −200 per step (α = e^−200 underflows f32): a factorization around a distant reference step
  // would overflow; the split blocks and direct exponents keep every output finite and on the reference.
  LaCase cs;
  cs.dtype = DType::f32, cs.l = 100, cs.h = 2, cs.dk = 5, cs.dv = 4, cs.gate = 200, cs.has_init = true, cs.seed = 21;
  const LaData d = linear_attention_problem::make_data(cs);
  const auto ref = run(d, LinearAttentionPath::reference, 64);
  for (index_t chunk : {16, 64, 100}) {
    const auto got = run(d, LinearAttentionPath::chunked, chunk);
    for (index_t i = 0; i < got.out.numel(); ++i) ASSERT_TRUE(std::isfinite(got.out.data_as<float>()[i]));
    EXPECT_LE(rel_error(got.out, ref.out), 1e-5);
    EXPECT_LE(rel_error(got.final_state, ref.final_state), 1e-5);
  }
}

TEST(LinearAttention, StepChainedOverASequenceEqualsTheParallelForm) {
  for (int variant = 0; variant < 3; ++variant) {
    const bool normalize = variant == 1;
    LaCase cs;
    cs.b = 2, cs.l = 23, cs.h = 4, cs.g = 2, cs.dk = 5, cs.dv = 3, cs.decay = true, cs.has_init = true;
    cs.normalize = normalize, cs.feature_map = ssm::FeatureMap::elu_plus_one, cs.scale = 0.7, cs.seed = 9;
    if (variant == 2) cs.gate = 0.8;  // GLA
    const LaData d = linear_attention_problem::make_data(cs);
    const auto par = run(d, LinearAttentionPath::chunked, 8);
    Tensor state = clone(d.initial_state), norm = clone(d.initial_normalizer);
    Tensor out = Tensor::empty({cs.b, cs.l, cs.h, cs.dv}, cs.dtype);
    for (index_t t = 0; t < cs.l; ++t) {
      auto at = [&](const Tensor& x) { return x.view().select(1, t); };  // (b, ·, d) of step t
      ssm::linear_attention_step(at(d.q), at(d.k), at(d.v), state.view(),
                                 normalize ? std::optional<ssm::TensorView>(norm.view()) : std::nullopt, at(out),
                                 d.options(),
                                 cs.gate > 0 ? std::optional<ssm::TensorView>(at(d.log_gate)) : std::nullopt);
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
  for (int variant = 0; variant < 3; ++variant) {
    LaCase cs;
    cs.b = 1, cs.l = 6, cs.h = 2, cs.g = 1, cs.dk = 3, cs.dv = 2, cs.has_init = true, cs.seed = 11 + variant;
    if (variant == 1) cs.normalize = true, cs.feature_map = ssm::FeatureMap::elu_plus_one, cs.decay = true, cs.scale = 0.6;
    else cs.decay = true, cs.scale = 1.3, cs.h = 4, cs.g = 2;
    if (variant == 2) cs.gate = 1, cs.normalize = true;  // GLA, with the normalizer's z decayed by the gate too
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
      ssm_test::expect_central_differences(std::string(name) + " " + cs.describe(), x, grad, [&] { return loss(d); });
    };
    check("q", d.q, g.grad_q);
    check("k", d.k, g.grad_k);
    check("v", d.v, g.grad_v);
    check("initial_state", d.initial_state, g.grad_initial_state);
    if (cs.normalize) check("initial_normalizer", d.initial_normalizer, g.grad_initial_normalizer);
    if (cs.gate > 0) check("log_gate", d.log_gate, g.grad_log_gate);
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
        if (cs.gate > 0) { EXPECT_LE(rel_error(got.grad_log_gate, ref.grad_log_gate), tol); }
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
  // GLA's log gate: finite, <= 0, (b, l, h, dk), v's dtype
  LaCase gcs = cs;
  gcs.gate = 1;
  const LaData gd = linear_attention_problem::make_data(gcs);
  auto with_gate = [&](const Tensor& gate) {
    return [&gd, &gate] {
      ssm::LinearAttentionInputs in = gd.inputs();
      in.log_gate = gate.view();
      ssm::linear_attention(in, gd.options());
    };
  };
  for (double bad : {0.25, std::nan(""), -std::numeric_limits<double>::infinity()}) {
    Tensor g = clone(gd.log_gate);
    g.data_as<double>()[7] = bad;
    expect_arg_error("log_gate", with_gate(g));
  }
  const Tensor g_shape = Tensor::zeros({1, 6, 2, 3}, DType::f64), g_f32 = Tensor::zeros({1, 6, 2, 4}, DType::f32);
  expect_arg_error("log_gate", with_gate(g_shape));
  expect_arg_error("log_gate", with_gate(g_f32));
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
