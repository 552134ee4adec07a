// The delta-rule op (ops/delta_rule.hpp; DeltaNet and Gated DeltaNet) beyond the conformance registry: the three
// forms agree (the chunked WY / UT path and the CPU token loop against the token loop in double, ≤ 1e-12 in f64 and
// ≤ 1e-5 in f32, at chunk sizes 1, 7, 16, 64 that do not divide l, with groups, strided rows, packed sequences); the
// decode step chained over a sequence equals the parallel form; the rule overwrites a key's value; the reference
// backward equals central differences (f64); the chunked and the checkpointed backward equal the reference backward; bad input is
// an ssm::Error naming the argument.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "../conformance/delta_rule_problem.hpp"
#include "../conformance/registry.hpp"
#include "ssm/ops/delta_rule.hpp"
#include "support/central_differences.hpp"
#include "support/expect_error.hpp"

namespace {

using ssm_test::expect_arg_error;

using delta_rule_problem::DrCase;
using delta_rule_problem::DrData;
using ssm::DeltaRulePath;
using ssm::DType;
using ssm::index_t;
using ssm::Tensor;
using conformance::clone;
using conformance::filled;
using conformance::rel_error;

ssm::DeltaRuleOutputs run(const DrData& d, DeltaRulePath path, index_t chunk, int threads = 1) {
  ssm::DeltaRuleOptions o = d.options();
  o.path = path, o.chunk_size = chunk, o.threads = threads, o.return_final_state = true;
  return ssm::delta_rule(d.inputs(), o);
}

/// Every kind of shape: l = 1; l not a multiple of the chunks; groups; the gate; no normalization with a scale;
/// initial states; strided rows; packed sequences of ragged lengths.
std::vector<DrCase> shapes(DType dt) {
  std::vector<DrCase> v;
  DrCase c;
  c.dtype = dt, c.b = 1, c.l = 1, c.h = 1, c.dk = 1, c.dv = 1;
  v.push_back(c);
  c = {};
  c.dtype = dt, c.b = 2, c.l = 37, c.h = 3, c.dk = 5, c.dv = 6, c.seed = 2;  // DeltaNet
  v.push_back(c);
  c.gated = true, c.has_init = true, c.seed = 3;  // Gated DeltaNet
  v.push_back(c);
  c = {};
  c.dtype = dt, c.b = 1, c.l = 70, c.h = 4, c.g = 2, c.dk = 6, c.dv = 5, c.gated = true, c.scale = 0.4;
  c.l2_normalize = false, c.has_init = true, c.pad = 3, c.seed = 4;  // groups, strided, no normalization
  v.push_back(c);
  c = {};
  c.dtype = dt, c.l = 60, c.h = 3, c.dk = 4, c.dv = 3, c.gated = true, c.has_init = true;
  c.cu = {0, 1, 20, 21, 60}, c.seed = 5;  // packed
  v.push_back(c);
  return v;
}

TEST(DeltaRule, ChunkedAndTokenLoopsEqualTheReference) {
  for (DType dt : {DType::f64, DType::f32})
    for (const DrCase& cs : shapes(dt)) {
      const DrData d = delta_rule_problem::make_data(cs);
      const auto ref = run(d, DeltaRulePath::reference, 64);
      EXPECT_EQ(ref.path, "reference");
      const double tol = dt == DType::f64 ? 1e-12 : 1e-5;
      for (index_t chunk : {1, 7, 16, 64}) {
        for (int threads : {1, 2}) {
          SCOPED_TRACE(cs.describe() + " chunk " + std::to_string(chunk) + " threads " + std::to_string(threads));
          const auto got = run(d, DeltaRulePath::chunked, chunk, threads);
          EXPECT_EQ(got.path, "cpu-chunked");
          EXPECT_LE(rel_error(got.out, ref.out), tol);
          EXPECT_LE(rel_error(got.final_state, ref.final_state), tol);
        }
      }
      SCOPED_TRACE(cs.describe() + " recurrent");
      const auto rec = run(d, DeltaRulePath::recurrent, 64, 2);
      EXPECT_EQ(rec.path, "cpu-recurrent");
      EXPECT_LE(rel_error(rec.out, ref.out), tol);
      EXPECT_LE(rel_error(rec.final_state, ref.final_state), tol);
    }
}

TEST(DeltaRule, TheGateAndTheNormalizationChangeTheOutput) {
  // a gate or a normalization the chunked path dropped would pass the agreement tests only if the reference dropped
  // it too: each must change the output, and the chunked path follows the reference in every combination.
  DrCase cs;
  cs.l = 20, cs.h = 2, cs.gated = true, cs.has_init = true;
  const DrData d = delta_rule_problem::make_data(cs);
  const auto gated = run(d, DeltaRulePath::chunked, 8);
  DrData plain = d;
  plain.cs.gated = false;
  EXPECT_GT(rel_error(gated.out, run(plain, DeltaRulePath::chunked, 8).out), 1e-3);
  DrData raw = d;
  raw.cs.l2_normalize = false;
  EXPECT_GT(rel_error(gated.out, run(raw, DeltaRulePath::chunked, 8).out), 1e-3);
  for (const DrData* x : std::vector<const DrData*>{&d, &plain, &raw})
    EXPECT_LE(rel_error(run(*x, DeltaRulePath::chunked, 8).out, run(*x, DeltaRulePath::reference, 8).out), 1e-12);
}

TEST(DeltaRule, TheRuleOverwritesAKeysValue) {
  // β = 1 and a unit key: writing (k, v1) then (k, v2) leaves v2 under k (S_2ᵀ k = v2), where a sum of outer
  // products (linear attention) would return v1 + v2. The third step reads with q = k (β tiny, v = 0 besides).
  for (DeltaRulePath path : {DeltaRulePath::reference, DeltaRulePath::chunked, DeltaRulePath::recurrent}) {
    const index_t dk = 4, dv = 3;
    Tensor q = Tensor::zeros({1, 3, 1, dk}, DType::f64), k = Tensor::zeros({1, 3, 1, dk}, DType::f64);
    Tensor v = Tensor::zeros({1, 3, 1, dv}, DType::f64), beta = Tensor::zeros({1, 3, 1}, DType::f64);
    const double key[dk] = {0.5, -0.5, 0.5, 0.5}, v1[dv] = {1, 2, 3}, v2[dv] = {-4, 0.5, 7};
    for (index_t t = 0; t < 3; ++t)
      for (index_t i = 0; i < dk; ++i) q.data_as<double>()[t * dk + i] = k.data_as<double>()[t * dk + i] = key[i];
    for (index_t j = 0; j < dv; ++j) v.data_as<double>()[j] = v1[j], v.data_as<double>()[dv + j] = v2[j];
    beta.data_as<double>()[0] = beta.data_as<double>()[1] = 1.0, beta.data_as<double>()[2] = 1e-300;
    ssm::DeltaRuleInputs in;
    in.q = q, in.k = k, in.v = v, in.beta = beta;
    ssm::DeltaRuleOptions o;
    o.path = path, o.chunk_size = 2, o.l2_normalize = false;  // |k| = 1 exactly (n(k) would be k / sqrt(1 + eps))
    const Tensor out = ssm::delta_rule(in, o).out;
    for (index_t j = 0; j < dv; ++j) {
      EXPECT_NEAR(out.data_as<double>()[j], v1[j], 1e-12);
      EXPECT_NEAR(out.data_as<double>()[dv + j], v2[j], 1e-12);
      EXPECT_NEAR(out.data_as<double>()[2 * dv + j], v2[j], 1e-12);
    }
  }
}

TEST(DeltaRule, StepChainedOverASequenceEqualsTheParallelForm) {
  for (bool gated : {false, true}) {
    DrCase cs;
    cs.b = 2, cs.l = 23, cs.h = 4, cs.g = 2, cs.dk = 5, cs.dv = 3, cs.gated = gated, cs.has_init = true;
    cs.scale = 0.7, cs.seed = 9;
    const DrData d = delta_rule_problem::make_data(cs);
    const auto par = run(d, DeltaRulePath::chunked, 8);
    Tensor state = clone(d.initial_state);
    Tensor out = Tensor::empty({cs.b, cs.l, cs.h, cs.dv}, cs.dtype);
    for (index_t t = 0; t < cs.l; ++t) {
      auto at = [&](const Tensor& x) { return x.view().select(1, t); };  // (b, ·, d) or (b, h) of step t
      ssm::delta_rule_step(at(d.q), at(d.k), at(d.v), at(d.beta),
                           gated ? std::optional<ssm::TensorView>(at(d.g)) : std::nullopt, state.view(), at(out),
                           d.options());
    }
    SCOPED_TRACE(cs.describe());
    EXPECT_LE(rel_error(out, par.out), 1e-12);
    EXPECT_LE(rel_error(state, par.final_state), 1e-12);
  }
}

/// Σ w ⊙ out + Σ wS ⊙ final_state, in double, through the reference.
struct Loss {
  Tensor w, wS;
  double operator()(const DrData& d) const {
    const auto r = run(d, DeltaRulePath::reference, 1);
    double s = 0;
    auto dot = [&](const Tensor& a, const Tensor& b) {
      for (index_t i = 0; i < a.numel(); ++i) s += a.data_as<double>()[i] * b.data_as<double>()[i];
    };
    dot(r.out, w), dot(r.final_state, wS);
    return s;
  }
};

TEST(DeltaRule, ReferenceBackwardEqualsCentralDifferences) {
  for (int variant = 0; variant < 2; ++variant) {
    DrCase cs;
    cs.b = 1, cs.l = 6, cs.h = 2, cs.g = 1, cs.dk = 3, cs.dv = 2, cs.has_init = true, cs.seed = 11 + variant;
    if (variant == 0) cs.gated = true, cs.scale = 1.3, cs.h = 4, cs.g = 2;
    else cs.l2_normalize = false, cs.scale = 0.6, cs.cu = {0, 2, 6};
    DrData d = delta_rule_problem::make_data(cs);
    std::mt19937_64 rng(77);
    Loss loss{delta_rule_problem::uniform(rng, {cs.b, cs.l, cs.h, cs.dv}, DType::f64, -1, 1),
              delta_rule_problem::uniform(rng, {cs.rows(), cs.h, cs.dk, cs.dv}, DType::f64, -1, 1)};
    ssm::DeltaRuleOptions o = d.options();
    o.path = DeltaRulePath::reference;
    const auto g = ssm::delta_rule_backward(d.inputs(), loss.w.view(), loss.wS.view(), o);
    auto check = [&](const char* name, Tensor& x, const Tensor& grad) {
      ssm_test::expect_central_differences(std::string(name) + " " + cs.describe(), x, grad, [&] { return loss(d); });
    };
    check("q", d.q, g.grad_q);
    check("k", d.k, g.grad_k);
    check("v", d.v, g.grad_v);
    check("beta", d.beta, g.grad_beta);
    if (cs.gated) check("g", d.g, g.grad_g);
    check("initial_state", d.initial_state, g.grad_initial_state);
  }
}

TEST(DeltaRule, AChunkLongerThanTheSequenceIsTheSequence) {
  // chunk_size 2^40 is one chunk per sequence (the result of chunk = l to the bit), forward and both backwards,
  // without a buffer sized by the requested chunk.
  for (const DrCase& cs : shapes(DType::f32)) {
    const DrData d = delta_rule_problem::make_data(cs);
    const auto huge = run(d, DeltaRulePath::chunked, index_t{1} << 40), whole = run(d, DeltaRulePath::chunked, cs.l);
    EXPECT_EQ(rel_error(huge.out, whole.out), 0.0) << cs.describe();
    for (DeltaRulePath path : {DeltaRulePath::chunked, DeltaRulePath::recurrent}) {
      ssm::DeltaRuleOptions o = d.options();
      o.path = path, o.chunk_size = index_t{1} << 40;
      const auto g = ssm::delta_rule_backward(d.inputs(), huge.out, std::nullopt, o);
      o.chunk_size = cs.l;
      const auto w = ssm::delta_rule_backward(d.inputs(), huge.out, std::nullopt, o);
      EXPECT_EQ(rel_error(g.grad_k, w.grad_k), 0.0) << cs.describe();
    }
  }
}

TEST(DeltaRule, ChunkedAndCheckpointedBackwardsEqualTheReferenceBackward) {
  for (DType dt : {DType::f64, DType::f32})
    for (const DrCase& cs : shapes(dt)) {
      const DrData d = delta_rule_problem::make_data(cs);
      std::mt19937_64 rng(cs.seed + 100);
      const DType pt = ssm::compute_dtype(dt);
      const Tensor go = delta_rule_problem::uniform(rng, {cs.b, cs.l, cs.h, cs.dv}, dt, -1, 1);
      const Tensor gS = delta_rule_problem::uniform(rng, {cs.rows(), cs.h, cs.dk, cs.dv}, pt, -1, 1);
      ssm::DeltaRuleOptions o = d.options();
      o.path = DeltaRulePath::reference;
      const auto ref = ssm::delta_rule_backward(d.inputs(), go.view(), gS.view(), o);
      const double tol = dt == DType::f64 ? 1e-10 : 1e-4;
      for (index_t chunk : {1, 7, 64})
        for (DeltaRulePath path : {DeltaRulePath::chunked, DeltaRulePath::recurrent}) {
        const bool chunked = path == DeltaRulePath::chunked;
        SCOPED_TRACE(cs.describe() + " chunk " + std::to_string(chunk) + (chunked ? " chunked" : " checkpointed"));
        o.path = path, o.chunk_size = chunk, o.threads = 2;
        const auto got = ssm::delta_rule_backward(d.inputs(), go.view(), gS.view(), o);
        EXPECT_EQ(got.path, chunked ? "cpu-chunked" : "cpu-recurrent");
        EXPECT_LE(rel_error(got.grad_q, ref.grad_q), tol);
        EXPECT_LE(rel_error(got.grad_k, ref.grad_k), tol);
        EXPECT_LE(rel_error(got.grad_v, ref.grad_v), tol);
        EXPECT_LE(rel_error(got.grad_beta, ref.grad_beta), tol);
        if (cs.gated) { EXPECT_LE(rel_error(got.grad_g, ref.grad_g), tol); }
        if (cs.has_init) { EXPECT_LE(rel_error(got.grad_initial_state, ref.grad_initial_state), tol); }
      }
    }
}


TEST(DeltaRule, BadInputIsAnErrorNamingTheArgument) {
  DrCase cs;
  cs.l = 6, cs.h = 2, cs.gated = true, cs.has_init = true;
  const DrData d = delta_rule_problem::make_data(cs);
  auto with = [&](const std::function<void(ssm::DeltaRuleInputs&, ssm::DeltaRuleOptions&)>& edit) {
    return [&d, edit] {
      ssm::DeltaRuleInputs in = d.inputs();
      ssm::DeltaRuleOptions o = d.options();
      edit(in, o);
      ssm::delta_rule(in, o);
    };
  };
  for (double bad : {0.0, -0.5, 2.5, std::nan(""), std::numeric_limits<double>::infinity()}) {
    Tensor beta = clone(d.beta);
    beta.data_as<double>()[7] = bad;
    expect_arg_error("beta", with([beta](auto& in, auto&) { in.beta = beta.view(); }));
  }
  for (double bad : {0.1, std::nan(""), -std::numeric_limits<double>::infinity()}) {
    Tensor g = clone(d.g);
    g.data_as<double>()[3] = bad;
    expect_arg_error("g", with([g](auto& in, auto&) { in.g = g.view(); }));
  }
  const Tensor beta_shape = filled({1, 6, 3}, DType::f64, 1.0);
  expect_arg_error("beta", with([&](auto& in, auto&) { in.beta = beta_shape.view(); }));
  const Tensor beta_f32 = filled({1, 6, 2}, DType::f32, 1.0);
  expect_arg_error("beta", with([&](auto& in, auto&) { in.beta = beta_f32.view(); }));
  expect_arg_error("chunk_size", with([](auto&, auto& o) { o.chunk_size = 0; }));
  expect_arg_error("norm_eps", with([](auto&, auto& o) { o.norm_eps = 0; }));
  expect_arg_error("scale", with([](auto&, auto& o) { o.scale = std::nan(""); }));
  const Tensor k_short = Tensor::zeros({1, 5, 1, 4}, DType::f64);
  expect_arg_error("k", with([&](auto& in, auto&) { in.k = k_short.view(); }));
  const Tensor k_f32 = Tensor::zeros({1, 6, 1, 4}, DType::f32);
  expect_arg_error("k", with([&](auto& in, auto&) { in.k = k_f32.view(); }));
  const Tensor v_heads = Tensor::zeros({1, 6, 3, 3}, DType::f64);  // 3 heads: q's 2 groups do not divide them
  const Tensor qk_groups = Tensor::zeros({1, 6, 2, 4}, DType::f64);
  expect_arg_error("q", with([&](auto& in, auto&) {
    in.v = v_heads.view(), in.q = in.k = qk_groups.view(), in.initial_state.reset(), in.g.reset();
  }));
  const Tensor k_cols = Tensor::zeros({1, 6, 1, 8}, DType::f64);  // a row with stride 2 along dk
  const ssm::TensorView k_strided(k_cols.data(), DType::f64, ssm::Device::cpu(), {1, 6, 1, 4}, {48, 8, 8, 2});
  expect_arg_error("k", with([&](auto& in, auto&) { in.k = k_strided; }));
  const Tensor s_f32 = Tensor::zeros({1, 2, 4, 3}, DType::f32);
  expect_arg_error("initial_state", with([&](auto& in, auto&) { in.initial_state = s_f32.view(); }));
  const Tensor s_shape = Tensor::zeros({1, 2, 3, 4}, DType::f64);
  expect_arg_error("initial_state", with([&](auto& in, auto&) { in.initial_state = s_shape.view(); }));
  double fake = 0;
  const ssm::TensorView v_cuda(&fake, DType::f64, ssm::Device::cuda(0), {1, 6, 2, 3}, {36, 6, 3, 1});
  expect_arg_error("v", [&] {  // into a CPU out: the allocating form would allocate on v's device first
    ssm::DeltaRuleInputs in = d.inputs();
    in.v = v_cuda;
    const Tensor out = Tensor::zeros({1, 6, 2, 3}, DType::f64);
    ssm::delta_rule_into(in, out, std::nullopt, d.options());
  });
  // the backward and the step check the same way
  expect_arg_error("beta", [&] {
    Tensor beta = clone(d.beta);
    beta.data_as<double>()[0] = 3.0;
    ssm::DeltaRuleInputs in = d.inputs();
    in.beta = beta.view();
    const Tensor go = Tensor::zeros({1, 6, 2, 3}, DType::f64);
    ssm::delta_rule_backward(in, go.view(), std::nullopt, d.options());
  });
  expect_arg_error("state", [&] {
    const Tensor q = Tensor::zeros({1, 1, 4}, DType::f64), v = Tensor::zeros({1, 2, 3}, DType::f64);
    const Tensor b = filled({1, 2}, DType::f64, 1.0);
    const Tensor st = Tensor::zeros({1, 2, 4, 4}, DType::f64), out = Tensor::zeros({1, 2, 3}, DType::f64);
    ssm::delta_rule_step(q, q, v, b, std::nullopt, st, out);
  });
}

}  // namespace
