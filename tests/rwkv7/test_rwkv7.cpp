// The RWKV-7 op (ops/rwkv7.hpp; the generalized delta rule) beyond the conformance registry: the chunked form and the
// CPU token loop equal the token loop in double (≤ 1e-12 in f64, ≤ 1e-5 in f32, chunk sizes 1, 7, 16, 64 that do not
// divide l, 1 and 2 threads, strided rows, packed sequences, decays of e^-40 per step);
// the decode step chained over a sequence equals the sequence form; with a = b = 0 the op is GLA (ssm::linear_attention
// with a log gate), and with w = α, a = −k, b = αβ k and β k as the key it is Gated DeltaNet (ssm::delta_rule): two
// other ops of the library computing the same recurrence; the reference backward equals central differences (f64);
// the chunked and the checkpointed backwards equal the reference backward, and the chunked decay gradient stays
// accurate over 4096 f32 steps; with no steps the states and their gradients pass through; bad input is an ssm::Error
// naming the argument.
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
#include "../conformance/rwkv7_problem.hpp"
#include "ssm/ops/delta_rule.hpp"
#include "ssm/ops/linear_attention.hpp"
#include "ssm/ops/rwkv7.hpp"
#include "support/central_differences.hpp"
#include "support/expect_error.hpp"

namespace {

using ssm_test::expect_arg_error;

using conformance::clone;
using conformance::filled;
using conformance::rel_error;
using rwkv7_problem::Rw7Case;
using rwkv7_problem::Rw7Data;
using ssm::DType;
using ssm::index_t;
using ssm::Rwkv7Path;
using ssm::Tensor;

ssm::Rwkv7Outputs run(const Rw7Data& d, Rwkv7Path path, int threads = 1, index_t chunk = 64) {
  ssm::Rwkv7Options o = d.options();
  o.path = path, o.threads = threads, o.return_final_state = true, o.chunk_size = chunk;
  return ssm::rwkv7(d.inputs(), o);
}

/// Every kind of shape: l = 1; several heads and batch rows; initial states with a scale and fast decays; strided
/// rows; packed sequences of ragged lengths.
std::vector<Rw7Case> shapes(DType dt) {
  std::vector<Rw7Case> v;
  Rw7Case c;
  c.dtype = dt, c.b = 1, c.l = 1, c.h = 1, c.dk = 1, c.dv = 1;
  v.push_back(c);
  c = {};
  c.dtype = dt, c.b = 2, c.l = 37, c.h = 3, c.dk = 5, c.dv = 6, c.seed = 2;
  v.push_back(c);
  c.has_init = true, c.scale = 0.4, c.log_w_min = -5, c.seed = 3;
  v.push_back(c);
  c = {};
  c.dtype = dt, c.b = 1, c.l = 70, c.h = 4, c.dk = 16, c.dv = 9, c.has_init = true, c.pad = 3, c.seed = 4;
  v.push_back(c);
  c = {};
  c.dtype = dt, c.l = 60, c.h = 3, c.dk = 4, c.dv = 3, c.has_init = true, c.cu = {0, 1, 20, 21, 60}, c.seed = 5;
  v.push_back(c);
  c = {};
  c.dtype = dt, c.l = 50, c.h = 2, c.dk = 8, c.dv = 4, c.has_init = true, c.log_w_min = -40, c.seed = 6;
  v.push_back(c);  // decays of up to e^-40 per step: spans far beyond one factor of the chunk scores
  return v;
}

TEST(Rwkv7, ChunkedAndTokenLoopsEqualTheReference) {
  for (DType dt : {DType::f64, DType::f32})
    for (const Rw7Case& cs : shapes(dt)) {
      const Rw7Data d = rwkv7_problem::make_data(cs);
      const auto ref = run(d, Rwkv7Path::reference);
      EXPECT_EQ(ref.path, "reference");
      const double tol = dt == DType::f64 ? 1e-12 : 1e-5;
      for (index_t chunk : {1, 7, 16, 64})
        for (int threads : {1, 2}) {
          SCOPED_TRACE(cs.describe() + " chunk " + std::to_string(chunk) + " threads " + std::to_string(threads));
          const auto got = run(d, Rwkv7Path::automatic, threads, chunk);
          EXPECT_EQ(got.path, "cpu-chunked");
          EXPECT_LE(rel_error(got.out, ref.out), tol);
          EXPECT_LE(rel_error(got.final_state, ref.final_state), tol);
        }
      SCOPED_TRACE(cs.describe() + " recurrent");
      const auto rec = run(d, Rwkv7Path::recurrent, 2);
      EXPECT_EQ(rec.path, "cpu-recurrent");
      EXPECT_LE(rel_error(rec.out, ref.out), tol);
      EXPECT_LE(rel_error(rec.final_state, ref.final_state), tol);
    }
}

TEST(Rwkv7, AChunkLongerThanTheSequenceIsTheSequence) {
  for (const Rw7Case& cs : shapes(DType::f32)) {
    const Rw7Data d = rwkv7_problem::make_data(cs);
    const auto huge = run(d, Rwkv7Path::chunked, 1, index_t{1} << 40), whole = run(d, Rwkv7Path::chunked, 1, cs.l);
    EXPECT_EQ(rel_error(huge.out, whole.out), 0.0) << cs.describe();
    EXPECT_EQ(rel_error(huge.final_state, whole.final_state), 0.0) << cs.describe();
  }
}

TEST(Rwkv7, StepChainedOverASequenceEqualsTheSequenceForm) {
  for (DType dt : {DType::f64, DType::f32}) {
    Rw7Case cs;
    cs.dtype = dt, cs.b = 2, cs.l = 23, cs.h = 4, cs.dk = 5, cs.dv = 3, cs.has_init = true, cs.scale = 0.7, cs.seed = 9;
    const Rw7Data d = rwkv7_problem::make_data(cs);
    const auto seq = run(d, Rwkv7Path::recurrent);
    EXPECT_LE(rel_error(run(d, Rwkv7Path::chunked, 1, 8).out, seq.out), dt == DType::f64 ? 1e-12 : 1e-5);
    Tensor state = clone(d.initial_state);
    Tensor out = Tensor::empty({cs.b, cs.l, cs.h, cs.dv}, cs.dtype);
    for (index_t t = 0; t < cs.l; ++t) {
      auto at = [&](const Tensor& x) { return x.view().select(1, t); };  // (b, h, d) of step t
      ssm::rwkv7_step(at(d.q), at(d.k), at(d.v), at(d.log_w), at(d.a), at(d.b), state.view(), at(out), d.options());
    }
    SCOPED_TRACE(cs.describe());
    EXPECT_EQ(rel_error(out, seq.out), 0.0);  // the same token loop, step by step
    EXPECT_EQ(rel_error(state, seq.final_state), 0.0);
  }
}

/// A (b, l, h, d) f64 tensor from f(bi, t, hh, i).
Tensor make4(index_t b, index_t l, index_t h, index_t n, const std::function<double(index_t, index_t, index_t, index_t)>& f) {
  Tensor t = Tensor::empty({b, l, h, n}, DType::f64);
  for (index_t bi = 0; bi < b; ++bi)
    for (index_t ti = 0; ti < l; ++ti)
      for (index_t hh = 0; hh < h; ++hh)
        for (index_t i = 0; i < n; ++i) t.data_as<double>()[((bi * l + ti) * h + hh) * n + i] = f(bi, ti, hh, i);
  return t;
}

TEST(Rwkv7, WithoutTheRankOneUpdateItIsGatedLinearAttention) {
  // a = b = 0: S_t = diag(w_t) S_{t−1} + k_t v_tᵀ, GLA's recurrence (α = exp(log_gate) per key channel), o = Sᵀ (scale q)
  Rw7Case cs;
  cs.b = 2, cs.l = 41, cs.h = 3, cs.dk = 6, cs.dv = 5, cs.has_init = true, cs.scale = 0.8, cs.seed = 21;
  Rw7Data d = rwkv7_problem::make_data(cs);
  d.a = d.b = Tensor::zeros({cs.b, cs.l, cs.h, cs.dk}, DType::f64);
  d.a_v = d.a.view(), d.b_v = d.b.view();
  ssm::LinearAttentionInputs la;
  la.q = d.q, la.k = d.k, la.v = d.v, la.log_gate = d.log_w.view(), la.initial_state = d.initial_state.view();
  ssm::LinearAttentionOptions o;
  o.scale = cs.scale, o.return_final_state = true, o.chunk_size = 16;
  const auto gla = ssm::linear_attention(la, o);
  for (Rwkv7Path path : {Rwkv7Path::reference, Rwkv7Path::recurrent, Rwkv7Path::chunked}) {
    const auto got = run(d, path, 1, 8);
    EXPECT_LE(rel_error(got.out, gla.out), 1e-12);
    EXPECT_LE(rel_error(got.final_state, gla.final_state), 1e-12);
  }
}

TEST(Rwkv7, WithADeltaUpdateItIsGatedDeltaNet) {
  // Gated DeltaNet: S_t = α (I − β k kᵀ) S_{t−1} + β k vᵀ = (α I + (αβ k)(−k)ᵀ) S_{t−1} + (β k) vᵀ, the same for the
  // backward through the chain rule: ḡk_delta = β ḡk_rwkv − ḡa + αβ ḡb, ḡβ = ⟨k, ḡk_rwkv⟩ + α ⟨k, ḡb⟩.
  delta_rule_problem::DrCase dc;
  dc.b = 2, dc.l = 33, dc.h = 2, dc.g = 2, dc.dk = 4, dc.dv = 3, dc.gated = true, dc.l2_normalize = false;
  dc.has_init = true, dc.scale = 0.9, dc.seed = 31;
  const delta_rule_problem::DrData dd = delta_rule_problem::make_data(dc);
  ssm::DeltaRuleOptions dopt = dd.options();
  dopt.return_final_state = true, dopt.chunk_size = 8;
  const auto delta = ssm::delta_rule(dd.inputs(), dopt);

  const index_t b = dc.b, l = dc.l, h = dc.h, dk = dc.dk;
  auto kv = [&](index_t bi, index_t t, index_t hh, index_t i) { return dd.k.data_as<double>()[((bi * l + t) * h + hh) * dk + i]; };
  auto beta = [&](index_t bi, index_t t, index_t hh) { return dd.beta.data_as<double>()[(bi * l + t) * h + hh]; };
  auto g = [&](index_t bi, index_t t, index_t hh) { return dd.g.data_as<double>()[(bi * l + t) * h + hh]; };
  Rw7Case cs;
  cs.b = b, cs.l = l, cs.h = h, cs.dk = dk, cs.dv = dc.dv, cs.has_init = true, cs.scale = dc.scale;
  Rw7Data d = rwkv7_problem::make_data(cs);
  d.q = clone(dd.q), d.v = clone(dd.v), d.initial_state = clone(dd.initial_state);
  d.k = make4(b, l, h, dk, [&](index_t bi, index_t t, index_t hh, index_t i) { return beta(bi, t, hh) * kv(bi, t, hh, i); });
  d.log_w = make4(b, l, h, dk, [&](index_t bi, index_t t, index_t hh, index_t) { return g(bi, t, hh); });
  d.a = make4(b, l, h, dk, [&](index_t bi, index_t t, index_t hh, index_t i) { return -kv(bi, t, hh, i); });
  d.b = make4(b, l, h, dk, [&](index_t bi, index_t t, index_t hh, index_t i) {
    return std::exp(g(bi, t, hh)) * beta(bi, t, hh) * kv(bi, t, hh, i);
  });
  d.q_v = d.q.view(), d.k_v = d.k.view(), d.v_v = d.v.view(), d.log_w_v = d.log_w.view(), d.a_v = d.a.view();
  d.b_v = d.b.view();
  for (Rwkv7Path path : {Rwkv7Path::reference, Rwkv7Path::recurrent, Rwkv7Path::chunked}) {
    const auto got = run(d, path, 1, 8);
    EXPECT_LE(rel_error(got.out, delta.out), 1e-12);
    EXPECT_LE(rel_error(got.final_state, delta.final_state), 1e-12);
  }
  // the backward: v's and the initial state's gradients are the same quantities in both ops; k's through the chain
  std::mt19937_64 rng(5);
  const Tensor go = rwkv7_problem::uniform(rng, {b, l, h, dc.dv}, DType::f64, -1, 1);
  const Tensor gS = rwkv7_problem::uniform(rng, {b, h, dk, dc.dv}, DType::f64, -1, 1);
  const auto gd = ssm::delta_rule_backward(dd.inputs(), go.view(), gS.view(), dopt);
  ssm::Rwkv7Options ro = d.options();
  ro.chunk_size = 5;
  const auto gr = ssm::rwkv7_backward(d.inputs(), go.view(), gS.view(), ro);
  EXPECT_LE(rel_error(gr.grad_q, gd.grad_q), 1e-10);
  EXPECT_LE(rel_error(gr.grad_v, gd.grad_v), 1e-10);
  EXPECT_LE(rel_error(gr.grad_initial_state, gd.grad_initial_state), 1e-10);
  const Tensor gk = make4(b, l, h, dk, [&](index_t bi, index_t t, index_t hh, index_t i) {
    const index_t o = ((bi * l + t) * h + hh) * dk + i;
    return beta(bi, t, hh) * gr.grad_k.data_as<double>()[o] - gr.grad_a.data_as<double>()[o] +
           std::exp(g(bi, t, hh)) * beta(bi, t, hh) * gr.grad_b.data_as<double>()[o];
  });
  EXPECT_LE(rel_error(gk, gd.grad_k), 1e-10);
}

/// Σ w ⊙ out + Σ wS ⊙ final_state, in double, through the reference.
struct Loss {
  Tensor w, wS;
  double operator()(const Rw7Data& d) const {
    const auto r = run(d, Rwkv7Path::reference);
    double s = 0;
    auto dot = [&](const Tensor& x, const Tensor& y) {
      for (index_t i = 0; i < x.numel(); ++i) s += x.data_as<double>()[i] * y.data_as<double>()[i];
    };
    dot(r.out, w), dot(r.final_state, wS);
    return s;
  }
};

TEST(Rwkv7, ReferenceBackwardEqualsCentralDifferences) {
  for (int variant = 0; variant < 2; ++variant) {
    Rw7Case cs;
    cs.b = 1, cs.l = 6, cs.h = 2, cs.dk = 3, cs.dv = 2, cs.has_init = true, cs.seed = 11 + variant;
    if (variant == 0) cs.scale = 1.3, cs.b = 2;
    else cs.scale = 0.6, cs.cu = {0, 2, 6}, cs.log_w_min = -3;
    Rw7Data d = rwkv7_problem::make_data(cs);
    std::mt19937_64 rng(77);
    Loss loss{rwkv7_problem::uniform(rng, {cs.b, cs.l, cs.h, cs.dv}, DType::f64, -1, 1),
              rwkv7_problem::uniform(rng, {cs.rows(), cs.h, cs.dk, cs.dv}, DType::f64, -1, 1)};
    ssm::Rwkv7Options o = d.options();
    o.path = Rwkv7Path::reference;
    const auto g = ssm::rwkv7_backward(d.inputs(), loss.w.view(), loss.wS.view(), o);
    EXPECT_EQ(g.path, "reference");
    auto check = [&](const char* name, Tensor& x, const Tensor& grad) {
      ssm_test::expect_central_differences(std::string(name) + " " + cs.describe(), x, grad, [&] { return loss(d); });
    };
    check("q", d.q, g.grad_q);
    check("k", d.k, g.grad_k);
    check("v", d.v, g.grad_v);
    check("log_w", d.log_w, g.grad_log_w);
    check("a", d.a, g.grad_a);
    check("b", d.b, g.grad_b);
    check("initial_state", d.initial_state, g.grad_initial_state);
  }
}

TEST(Rwkv7, ChunkedAndCheckpointedBackwardsEqualTheReferenceBackward) {
  for (DType dt : {DType::f64, DType::f32})
    for (const Rw7Case& cs : shapes(dt)) {
      const Rw7Data d = rwkv7_problem::make_data(cs);
      std::mt19937_64 rng(cs.seed + 100);
      const DType pt = ssm::compute_dtype(dt);
      const Tensor go = rwkv7_problem::uniform(rng, {cs.b, cs.l, cs.h, cs.dv}, dt, -1, 1);
      const Tensor gS = rwkv7_problem::uniform(rng, {cs.rows(), cs.h, cs.dk, cs.dv}, pt, -1, 1);
      ssm::Rwkv7Options o = d.options();
      o.path = Rwkv7Path::reference;
      const auto ref = ssm::rwkv7_backward(d.inputs(), go.view(), gS.view(), o);
      const double tol = dt == DType::f64 ? 1e-10 : 1e-4;
      for (Rwkv7Path path : {Rwkv7Path::automatic, Rwkv7Path::recurrent})
        for (index_t chunk : {index_t{1}, index_t{7}, index_t{64}, index_t{1} << 40}) {
          const bool chunked = path == Rwkv7Path::automatic;
          SCOPED_TRACE(cs.describe() + (chunked ? " chunk " : " checkpoint interval ") + std::to_string(chunk));
          o.path = path, o.chunk_size = chunk, o.threads = 2;
          const auto got = ssm::rwkv7_backward(d.inputs(), go.view(), gS.view(), o);
          EXPECT_EQ(got.path, chunked ? "cpu-chunked" : "cpu-recurrent");
          EXPECT_LE(rel_error(got.grad_q, ref.grad_q), tol);
          EXPECT_LE(rel_error(got.grad_k, ref.grad_k), tol);
          EXPECT_LE(rel_error(got.grad_v, ref.grad_v), tol);
          EXPECT_LE(rel_error(got.grad_log_w, ref.grad_log_w), tol);
          EXPECT_LE(rel_error(got.grad_a, ref.grad_a), tol);
          EXPECT_LE(rel_error(got.grad_b, ref.grad_b), tol);
          if (cs.has_init) { EXPECT_LE(rel_error(got.grad_initial_state, ref.grad_initial_state), tol); }
        }
    }
}

TEST(Rwkv7, TheChunkedDecayGradientStaysAccurateOverLongSequences) {
  // ḡlog_w sums per chunk (cpu/rwkv7.hpp): in f32 its error must not grow with l as a sum over the sequence would.
  Rw7Case cs;
  cs.dtype = DType::f32, cs.l = 4096, cs.h = 1, cs.dk = 4, cs.dv = 4, cs.log_w_min = -0.05, cs.seed = 9;
  const Rw7Data d = rwkv7_problem::make_data(cs);
  std::mt19937_64 rng(12);
  const Tensor go = rwkv7_problem::uniform(rng, {cs.b, cs.l, cs.h, cs.dv}, DType::f32, -1, 1);
  ssm::Rwkv7Options o = d.options();
  o.path = Rwkv7Path::reference;
  const auto ref = ssm::rwkv7_backward(d.inputs(), go.view(), std::nullopt, o);
  o.path = Rwkv7Path::chunked, o.chunk_size = 32;
  const auto got = ssm::rwkv7_backward(d.inputs(), go.view(), std::nullopt, o);
  const double err = rel_error(got.grad_log_w, ref.grad_log_w);
  EXPECT_LE(err, 1.5e-6);  // 4.1e-7 on an AVX2 machine; one sum over the whole sequence gave 2.8e-6
  EXPECT_LE(rel_error(got.grad_k, ref.grad_k), 2e-6);
}

TEST(Rwkv7, WithNoStepsTheStatesAndTheirGradientsPassThrough) {
  Rw7Case cs;
  cs.dtype = DType::f64, cs.b = 2, cs.l = 0, cs.h = 2, cs.dk = 3, cs.dv = 2, cs.has_init = true;
  const Rw7Data d = rwkv7_problem::make_data(cs);
  std::mt19937_64 rng(11);
  const Tensor go = rwkv7_problem::uniform(rng, {cs.b, cs.l, cs.h, cs.dv}, DType::f64, -1, 1);
  const Tensor gS = rwkv7_problem::uniform(rng, {cs.rows(), cs.h, cs.dk, cs.dv}, DType::f64, -1, 1);
  for (Rwkv7Path path : {Rwkv7Path::automatic, Rwkv7Path::recurrent}) {
    ssm::Rwkv7Options o = d.options();
    o.path = path, o.return_final_state = true;
    const auto fwd = ssm::rwkv7(d.inputs(), o);
    const auto g = ssm::rwkv7_backward(d.inputs(), go.view(), gS.view(), o);
    EXPECT_EQ(g.path, path == Rwkv7Path::automatic ? "cpu-chunked" : "cpu-recurrent");
    EXPECT_EQ(rel_error(fwd.final_state, d.initial_state), 0.0);
    EXPECT_EQ(rel_error(g.grad_initial_state, gS), 0.0);
  }
}

TEST(Rwkv7, BadInputIsAnErrorNamingTheArgument) {
  Rw7Case cs;
  cs.l = 6, cs.h = 2, cs.dk = 4, cs.dv = 3, cs.has_init = true;
  const Rw7Data d = rwkv7_problem::make_data(cs);
  auto with = [&](const std::function<void(ssm::Rwkv7Inputs&, ssm::Rwkv7Options&)>& edit) {
    return [&d, edit] {
      ssm::Rwkv7Inputs in = d.inputs();
      ssm::Rwkv7Options o = d.options();
      edit(in, o);
      ssm::rwkv7(in, o);
    };
  };
  for (double bad : {0.1, std::nan(""), -std::numeric_limits<double>::infinity()}) {
    Tensor w = clone(d.log_w);
    w.data_as<double>()[9] = bad;
    expect_arg_error("log_w", with([w](auto& in, auto&) { in.log_w = w.view(); }));
  }
  for (double bad : {std::nan(""), std::numeric_limits<double>::infinity()}) {
    Tensor a = clone(d.a), b = clone(d.b);
    a.data_as<double>()[5] = bad, b.data_as<double>()[11] = bad;
    expect_arg_error("a", with([a](auto& in, auto&) { in.a = a.view(); }));
    expect_arg_error("b", with([b](auto& in, auto&) { in.b = b.view(); }));
  }
  const Tensor b_shape = Tensor::zeros({1, 6, 2, 5}, DType::f64);
  expect_arg_error("b", with([&](auto& in, auto&) { in.b = b_shape.view(); }));
  const Tensor a_heads = Tensor::zeros({1, 6, 1, 4}, DType::f64);
  expect_arg_error("a", with([&](auto& in, auto&) { in.a = a_heads.view(); }));
  const Tensor k_f32 = Tensor::zeros({1, 6, 2, 4}, DType::f32);
  expect_arg_error("k", with([&](auto& in, auto&) { in.k = k_f32.view(); }));
  const Tensor k_cols = Tensor::zeros({1, 6, 2, 8}, DType::f64);  // a row with stride 2 along dk
  const ssm::TensorView k_strided(k_cols.data(), DType::f64, ssm::Device::cpu(), {1, 6, 2, 4}, {96, 16, 8, 2});
  expect_arg_error("k", with([&](auto& in, auto&) { in.k = k_strided; }));
  expect_arg_error("q", with([](auto& in, auto&) { in.q = ssm::TensorView(); }));
  expect_arg_error("chunk_size", with([](auto&, auto& o) { o.chunk_size = 0; }));
  expect_arg_error("scale", with([](auto&, auto& o) { o.scale = std::nan(""); }));
  const Tensor s_f32 = Tensor::zeros({1, 2, 4, 3}, DType::f32);
  expect_arg_error("initial_state", with([&](auto& in, auto&) { in.initial_state = s_f32.view(); }));
  const Tensor s_shape = Tensor::zeros({1, 2, 3, 4}, DType::f64);
  expect_arg_error("initial_state", with([&](auto& in, auto&) { in.initial_state = s_shape.view(); }));
  const Tensor cu_bad = Tensor::from_vector<std::int64_t>({3}, {0, 4, 3});
  expect_arg_error("cu_seqlens", with([&](auto& in, auto&) { in.cu_seqlens = cu_bad.view(), in.initial_state.reset(); }));
  double fake = 0;
  const ssm::TensorView v_cuda(&fake, DType::f64, ssm::Device::cuda(0), {1, 6, 2, 3}, {36, 6, 3, 1});
  expect_arg_error("v", [&] {  // into a CPU out: the allocating form would allocate on v's device first
    ssm::Rwkv7Inputs in = d.inputs();
    in.v = v_cuda;
    const Tensor out = Tensor::zeros({1, 6, 2, 3}, DType::f64);
    ssm::rwkv7_into(in, out, std::nullopt, d.options());
  });
  // the backward and the step check the same way
  expect_arg_error("log_w", [&] {
    Tensor w = clone(d.log_w);
    w.data_as<double>()[0] = 1.0;
    ssm::Rwkv7Inputs in = d.inputs();
    in.log_w = w.view();
    const Tensor go = Tensor::zeros({1, 6, 2, 3}, DType::f64);
    ssm::rwkv7_backward(in, go.view(), std::nullopt, d.options());
  });
  expect_arg_error("grad_final_state", [&] {
    const Tensor go = Tensor::zeros({1, 6, 2, 3}, DType::f64), gs = Tensor::zeros({1, 2, 3, 4}, DType::f64);
    ssm::rwkv7_backward(d.inputs(), go.view(), gs.view(), d.options());
  });
  expect_arg_error("state", [&] {
    const Tensor q = Tensor::zeros({1, 2, 4}, DType::f64), v = Tensor::zeros({1, 2, 3}, DType::f64);
    const Tensor st = Tensor::zeros({1, 2, 4, 4}, DType::f64), out = Tensor::zeros({1, 2, 3}, DType::f64);
    ssm::rwkv7_step(q, q, v, q, q, q, st, out);
  });
  expect_arg_error("log_w", [&] {
    const Tensor q = Tensor::zeros({1, 2, 4}, DType::f64), v = Tensor::zeros({1, 2, 3}, DType::f64);
    const Tensor w = filled({1, 2, 4}, DType::f64, 0.5);
    const Tensor st = Tensor::zeros({1, 2, 4, 3}, DType::f64), out = Tensor::zeros({1, 2, 3}, DType::f64);
    ssm::rwkv7_step(q, q, v, w, q, q, st, out);
  });
}

}  // namespace
