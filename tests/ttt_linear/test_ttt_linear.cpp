// The TTT-Linear op (ops/ttt_linear.hpp) beyond the conformance registry: the dual form and the CPU token loop equal
// the primal form in double (≤ 1e-12 in f64, ≤ 1e-5 in f32; mini-batch sizes 1, 3, 16 and longer than the sequence,
// starting positions inside a mini-batch, pending sums, position weights, 1 and 2 threads, strided rows, packed
// sequences); the inner model is trained as the paper says, checked with gradients of the inner loss taken by central
// differences of a loss written out in support/ttt_inner.hpp (one mini-batch: every gradient at the starting
// weights; a mini-batch of one token: online gradient descent); a sequence cut anywhere and continued from its final
// state and pending sum is the whole sequence; the decode step chained over a sequence equals the sequence form; the
// backward equals central differences (reference) and the reference (dual); bad input is an ssm::Error naming the
// argument.
#include <gtest/gtest.h>

#include <cmath>
#include <optional>
#include <random>
#include <tuple>
#include <utility>
#include <string>
#include <vector>

#include "../conformance/registry.hpp"
#include "../conformance/ttt_linear_problem.hpp"
#include "ssm/ops/ttt_linear.hpp"
#include "support/central_differences.hpp"
#include "support/expect_error.hpp"
#include "support/ttt_inner.hpp"

namespace {

using conformance::clone;
using conformance::rel_error;
using ssm::DType;
using ssm::index_t;
using ssm::Tensor;
using ssm::TttLinearPath;
using ssm_test::expect_arg_error;
using ttt_linear_problem::TttCase;
using ttt_linear_problem::TttData;
using ttt_inner::Inner;
using ttt_inner::Token;

ssm::TttLinearOutputs run(const TttData& d, TttLinearPath path, int threads = 1) {
  ssm::TttLinearOptions o = d.options();
  o.path = path, o.threads = threads, o.return_final_state = true;
  return ssm::ttt_linear(d.inputs(), o);
}

/// Every kind of shape: l = 1; several heads and rows; mini-batches that do not divide l, of one token, longer than l;
/// a start inside a mini-batch with a pending sum; position weights; strided rows; packed sequences.
std::vector<TttCase> shapes(DType dt) {
  std::vector<TttCase> v;
  TttCase c;
  c.dtype = dt, c.b = 1, c.l = 1, c.h = 1, c.dk = 1, c.m = 1;
  v.push_back(c);
  c = {};
  c.dtype = dt, c.b = 2, c.l = 37, c.h = 3, c.dk = 5, c.m = 3, c.seed = 2;
  v.push_back(c);
  c.has_init = true, c.has_tau = true, c.m = 16, c.seed = 3;
  v.push_back(c);
  c.start = 5, c.has_pending = true, c.seed = 4;  // the call starts at position 5 of an unfinished mini-batch
  v.push_back(c);
  c = {};
  c.dtype = dt, c.b = 1, c.l = 29, c.h = 2, c.dk = 16, c.m = 64, c.has_init = true, c.has_tau = true, c.pad = 3;
  c.seed = 5;  // one ragged mini-batch; strided q, k, v and eta
  v.push_back(c);
  c = {};
  c.dtype = dt, c.l = 60, c.h = 3, c.dk = 4, c.m = 8, c.has_init = true, c.cu = {0, 1, 20, 21, 60}, c.seed = 6;
  c.start = 3, c.has_pending = true;
  v.push_back(c);
  c = {};
  c.dtype = dt, c.b = 1, c.l = 40, c.h = 1, c.dk = 6, c.m = 1, c.eta_max = 2, c.seed = 7;  // online GD, large steps
  v.push_back(c);
  return v;
}

TEST(TttLinear, DualFormAndTokenLoopEqualThePrimalFormInDouble) {
  for (DType dt : {DType::f64, DType::f32})
    for (const TttCase& cs : shapes(dt)) {
      const TttData d = ttt_linear_problem::make_data(cs);
      const auto ref = run(d, TttLinearPath::reference);
      EXPECT_EQ(ref.path, "reference");
      const double tol = dt == DType::f64 ? 1e-12 : 1e-5;
      for (int threads : {1, 2}) {
        SCOPED_TRACE(cs.describe() + " threads " + std::to_string(threads));
        for (TttLinearPath path : {TttLinearPath::automatic, TttLinearPath::recurrent}) {
          const auto got = run(d, path, threads);
          EXPECT_EQ(got.path, path == TttLinearPath::automatic ? "cpu-dual" : "cpu-recurrent");
          EXPECT_LE(rel_error(got.out, ref.out), tol);
          EXPECT_LE(rel_error(got.final_state, ref.final_state), tol);
          // the pending sum is exactly zero where the sequence ends a mini-batch
          if (rel_error(ref.final_pending, Tensor::zeros(ref.final_pending.shape(), ref.final_pending.dtype())) == 0)
            EXPECT_EQ(rel_error(got.final_pending, ref.final_pending), 0.0);
          else
            EXPECT_LE(rel_error(got.final_pending, ref.final_pending), tol);
        }
      }
    }
}

TEST(TttLinear, SixteenBitInputsAreComputedInF32) {
  for (DType dt : {DType::f16, DType::bf16})
    for (const TttCase& cs : shapes(dt)) {
      const TttData d = ttt_linear_problem::make_data(cs);
      const auto ref = run(d, TttLinearPath::reference);
      SCOPED_TRACE(cs.describe());
      for (TttLinearPath path : {TttLinearPath::dual, TttLinearPath::recurrent}) {
        const auto got = run(d, path, 2);
        EXPECT_LE(rel_error(got.out, ref.out), dt == DType::f16 ? 1e-3 : 8e-3);  // one rounding of the output
        EXPECT_LE(rel_error(got.final_state, ref.final_state), 1e-5);           // the states are f32
      }
    }
}

/// One head of one row of an f64 problem, read back as tokens, the inner model and the initial state.
void unpack(const TttData& dd, std::vector<Token>& xs, Inner& f, std::vector<double>& W0) {
  const TttCase& cs = dd.cs;
  const std::vector<double> q = conformance::to_doubles(dd.q.view()), k = conformance::to_doubles(dd.k.view()),
                            v = conformance::to_doubles(dd.v.view()), eta = conformance::to_doubles(dd.eta.view());
  const std::size_t d = static_cast<std::size_t>(cs.dk);
  xs.resize(static_cast<std::size_t>(cs.l));
  for (std::size_t t = 0; t < xs.size(); ++t) {
    xs[t].q.assign(q.begin() + t * d, q.begin() + (t + 1) * d), xs[t].k.assign(k.begin() + t * d, k.begin() + (t + 1) * d);
    xs[t].v.assign(v.begin() + t * d, v.begin() + (t + 1) * d), xs[t].eta = eta[t];
  }
  f.d = cs.dk, f.gamma = conformance::to_doubles(dd.ln_weight.view()), f.beta = conformance::to_doubles(dd.ln_bias.view());
  W0 = conformance::to_doubles(dd.initial_state.view());
}

void expect_near_all(const std::vector<double>& got, const std::vector<double>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double err = 0, scale = 0;
  for (std::size_t i = 0; i < got.size(); ++i) err = std::max(err, std::abs(got[i] - want[i])), scale = std::max(scale, std::abs(want[i]));
  EXPECT_LE(err, tol * std::max(1.0, scale)) << what;
  EXPECT_GT(scale, 0) << what;
}

/// Every path's out and final state against the training written out by Inner::run (central-difference gradients)
/// over the problem's tokens, with its mini-batch size and the position weights tau.
void expect_every_path_trains_as_written_out(const TttData& dd, const std::vector<double>& tau) {
  std::vector<Token> xs;
  Inner f;
  std::vector<double> W;
  unpack(dd, xs, f, W);
  const std::vector<double> out = f.run(W, xs, dd.cs.m, tau);
  for (TttLinearPath path : {TttLinearPath::reference, TttLinearPath::dual, TttLinearPath::recurrent}) {
    const auto r = run(dd, path);
    SCOPED_TRACE(r.path);
    expect_near_all(conformance::to_doubles(r.out.view()), out, 1e-8, "out");
    expect_near_all(conformance::to_doubles(r.final_state.view()), W, 1e-8, "final state");
    // the sequences end their last mini-batch: nothing pending
    EXPECT_EQ(rel_error(r.final_pending, Tensor::zeros(r.final_pending.shape(), DType::f64)), 0.0);
  }
}

TEST(TttLinear, OneMiniBatchTakesEveryGradientAtItsStartingWeights) {
  // l = m = 6, τ_i = 1 / (i + 1): Ŵ_t = Ŵ_0 − τ_t Σ_{s<=t} η_s ∇ℓ_s(Ŵ_0), o_t = f(q_t; Ŵ_t); the last Ŵ_t is the state
  TttCase cs;
  cs.l = 6, cs.m = 6, cs.h = 1, cs.dk = 4, cs.has_init = true, cs.has_tau = true, cs.seed = 31;
  const TttData dd = ttt_linear_problem::make_data(cs);
  expect_every_path_trains_as_written_out(dd, conformance::to_doubles(dd.tau.view()));
}

TEST(TttLinear, MiniBatchesOfOneTokenAreOnlineGradientDescent) {
  // m = 1, no position weights: Ŵ_t = Ŵ_{t−1} − η_t ∇ℓ_t(Ŵ_{t−1}), o_t = f(q_t; Ŵ_t)
  TttCase cs;
  cs.l = 7, cs.m = 1, cs.h = 1, cs.dk = 3, cs.has_init = true, cs.eta_max = 1.5, cs.seed = 32;
  expect_every_path_trains_as_written_out(ttt_linear_problem::make_data(cs), {1.0});
}

TEST(TttLinear, ASequenceCutAnywhereAndContinuedIsTheWholeSequence) {
  for (DType dt : {DType::f64, DType::f32}) {
    TttCase cs;
    cs.dtype = dt, cs.b = 2, cs.l = 23, cs.h = 2, cs.dk = 5, cs.m = 4, cs.has_init = true, cs.has_tau = true;
    cs.seed = 33;
    const TttData d = ttt_linear_problem::make_data(cs);
    const auto whole = run(d, TttLinearPath::dual);
    for (index_t cut : {1, 4, 7, 8, 22}) {
      SCOPED_TRACE(cs.describe() + " cut at " + std::to_string(cut));
      auto part = [&](const Tensor& x, index_t t0, index_t t1) { return x.view().narrow(1, t0, t1 - t0); };
      auto dense_part = [&](const Tensor& x, index_t t0, index_t t1) {  // a contiguous copy of steps [t0, t1)
        const ssm::TensorView src = part(x, t0, t1);
        Tensor r = Tensor::empty(src.shape(), src.dtype());
        ssm::copy(r.view(), src);
        return r;
      };
      ssm::TttLinearInputs a = d.inputs();
      a.q = part(d.q, 0, cut), a.k = part(d.k, 0, cut), a.v = part(d.v, 0, cut), a.eta = part(d.eta, 0, cut);
      ssm::TttLinearOptions o = d.options();
      o.return_final_state = true;
      const auto first = ssm::ttt_linear(a, o);
      ssm::TttLinearInputs b = a;
      b.q = part(d.q, cut, cs.l), b.k = part(d.k, cut, cs.l), b.v = part(d.v, cut, cs.l), b.eta = part(d.eta, cut, cs.l);
      b.initial_state = first.final_state.view(), b.initial_pending = first.final_pending.view();
      o.start = cut % cs.m;
      for (TttLinearPath path : {TttLinearPath::dual, TttLinearPath::recurrent}) {
        o.path = path;
        const auto second = ssm::ttt_linear(b, o);
        const double tol = dt == DType::f64 ? 1e-13 : 2e-6;
        EXPECT_LE(rel_error(first.out, dense_part(whole.out, 0, cut)), tol);
        EXPECT_LE(rel_error(second.out, dense_part(whole.out, cut, cs.l)), tol);
        EXPECT_LE(rel_error(second.final_state, whole.final_state), tol);
        EXPECT_LE(rel_error(second.final_pending, whole.final_pending), tol);
      }
    }
  }
}

TEST(TttLinear, StepChainedOverASequenceEqualsTheSequenceForm) {
  for (DType dt : {DType::f64, DType::f32}) {
    TttCase cs;
    cs.dtype = dt, cs.b = 2, cs.l = 19, cs.h = 3, cs.dk = 4, cs.m = 5, cs.has_init = true, cs.has_tau = true;
    cs.seed = 34;
    const TttData d = ttt_linear_problem::make_data(cs);
    const auto seq = run(d, TttLinearPath::recurrent);
    Tensor state = clone(d.initial_state), pending = Tensor::zeros(state.shape(), state.dtype());
    Tensor out = Tensor::empty({cs.b, cs.l, cs.h, cs.dk}, cs.dtype);
    for (index_t t = 0; t < cs.l; ++t) {
      auto at = [&](const Tensor& x) { return x.view().select(1, t); };  // (b, h, d) of step t; eta (b, h)
      ssm::TttLinearInputs in = d.inputs();
      in.q = at(d.q), in.k = at(d.k), in.v = at(d.v), in.eta = at(d.eta);
      in.initial_state.reset();
      ssm::ttt_linear_step(in, state.view(), pending.view(), t, at(out), d.options());
    }
    SCOPED_TRACE(cs.describe());
    EXPECT_EQ(rel_error(out, seq.out), 0.0);  // the same token loop, step by step
    EXPECT_EQ(rel_error(state, seq.final_state), 0.0);
    EXPECT_EQ(rel_error(pending, seq.final_pending), 0.0);
  }
}

/// Σ w ⊙ out + Σ w_s ⊙ final_state + Σ w_p ⊙ final_pending of the reference forward (f64): the scalar whose gradient
/// ttt_linear_backward computes for grad_out = w and the final states' gradients w_s, w_p.
double weighted_loss(const TttData& d, const ssm::TttLinearInputs& in, const Tensor& w, const Tensor& ws, const Tensor& wp) {
  ssm::TttLinearOptions o = d.options();
  o.path = TttLinearPath::reference, o.return_final_state = true;
  const auto r = ssm::ttt_linear(in, o);
  double s = 0;
  for (const auto& [a, b] : {std::pair{&r.out, &w}, std::pair{&r.final_state, &ws}, std::pair{&r.final_pending, &wp}})
    for (index_t i = 0; i < a->numel(); ++i) s += a->data_as<double>()[i] * b->data_as<double>()[i];
  return s;
}

TEST(TttLinear, ReferenceBackwardEqualsCentralDifferences) {
  // every input, with gradients of out, the final state and the pending sum; shapes: a start inside a mini-batch with
  // a pending sum and a ragged end (pending at the end), and packed sequences
  std::vector<TttCase> cases;
  TttCase c;
  c.b = 2, c.l = 9, c.h = 2, c.dk = 4, c.m = 4, c.has_init = true, c.has_tau = true, c.has_pending = true, c.start = 1;
  c.seed = 41;
  cases.push_back(c);
  c = {};
  c.l = 11, c.h = 1, c.dk = 5, c.m = 3, c.has_init = true, c.has_tau = true, c.cu = {0, 4, 11}, c.seed = 42;
  cases.push_back(c);
  for (const TttCase& cs : cases) {
    TttData d = ttt_linear_problem::make_data(cs);
    std::mt19937_64 rng(cs.seed + 1);
    const Tensor w = conformance::uniform(rng, d.v.shape(), DType::f64, -1, 1);
    const Tensor ws = conformance::uniform(rng, d.initial_state.shape(), DType::f64, -1, 1);
    const Tensor wp = conformance::uniform(rng, d.initial_state.shape(), DType::f64, -1, 1);
    ssm::TttLinearOptions o = d.options();
    o.path = TttLinearPath::reference;
    const ssm::TttLinearGrads g = ssm::ttt_linear_backward(d.inputs(), w, ws.view(), wp.view(), o);
    EXPECT_EQ(g.path, "reference");
    SCOPED_TRACE(cs.describe());
    auto loss = [&] { return weighted_loss(d, d.inputs(), w, ws, wp); };
    ssm_test::expect_central_differences("q", d.q, g.grad_q, loss);
    ssm_test::expect_central_differences("k", d.k, g.grad_k, loss);
    ssm_test::expect_central_differences("v", d.v, g.grad_v, loss);
    ssm_test::expect_central_differences("eta", d.eta, g.grad_eta, loss);
    ssm_test::expect_central_differences("ln_weight", d.ln_weight, g.grad_ln_weight, loss);
    ssm_test::expect_central_differences("ln_bias", d.ln_bias, g.grad_ln_bias, loss);
    ssm_test::expect_central_differences("position_weights", d.tau, g.grad_position_weights, loss);
    ssm_test::expect_central_differences("initial_state", d.initial_state, g.grad_initial_state, loss);
    if (cs.has_pending)
      ssm_test::expect_central_differences("initial_pending", d.initial_pending, g.grad_initial_pending, loss);
  }
}

TEST(TttLinear, DualBackwardEqualsTheReferenceBackward) {
  for (DType dt : {DType::f64, DType::f32})
    for (TttCase cs : shapes(dt)) {
      const TttData d = ttt_linear_problem::make_data(cs);
      std::mt19937_64 rng(cs.seed + 7);
      const ssm::DType pt = ssm::compute_dtype(dt);
      const Tensor go = conformance::uniform(rng, d.v.shape(), dt, -1, 1);
      const Tensor gs = conformance::uniform(rng, {cs.rows(), cs.h, cs.dk + 1, cs.dk}, pt, -1, 1);
      const Tensor gp = conformance::uniform(rng, gs.shape(), pt, -1, 1);
      ssm::TttLinearOptions o = d.options();
      o.path = TttLinearPath::reference;
      const auto ref = ssm::ttt_linear_backward(d.inputs(), go, gs.view(), gp.view(), o);
      const double tol = dt == DType::f64 ? 1e-10 : 1e-4;
      for (int threads : {1, 2}) {
        SCOPED_TRACE(cs.describe() + " threads " + std::to_string(threads));
        o.path = TttLinearPath::automatic, o.threads = threads;
        const auto got = ssm::ttt_linear_backward(d.inputs(), go, gs.view(), gp.view(), o);
        EXPECT_EQ(got.path, "cpu-dual");
        for (const auto& [name, a, b] :
             {std::tuple{"q", &got.grad_q, &ref.grad_q}, std::tuple{"k", &got.grad_k, &ref.grad_k},
              std::tuple{"v", &got.grad_v, &ref.grad_v}, std::tuple{"eta", &got.grad_eta, &ref.grad_eta},
              std::tuple{"ln_weight", &got.grad_ln_weight, &ref.grad_ln_weight},
              std::tuple{"ln_bias", &got.grad_ln_bias, &ref.grad_ln_bias},
              std::tuple{"position_weights", &got.grad_position_weights, &ref.grad_position_weights},
              std::tuple{"initial_state", &got.grad_initial_state, &ref.grad_initial_state},
              std::tuple{"initial_pending", &got.grad_initial_pending, &ref.grad_initial_pending}}) {
          ASSERT_EQ(a->defined(), b->defined()) << name;
          if (a->defined()) {
            EXPECT_LE(rel_error(*a, *b), tol) << name;
          }
        }
      }
    }
}

TEST(TttLinear, BadInputIsAnErrorNamingTheArgument) {
  TttCase cs;
  cs.b = 2, cs.l = 9, cs.h = 2, cs.dk = 3, cs.m = 4, cs.has_init = true, cs.dtype = DType::f32;
  const TttData d = ttt_linear_problem::make_data(cs);
  const ssm::TttLinearOptions o = d.options();
  auto call = [&](const ssm::TttLinearInputs& in, const ssm::TttLinearOptions& opt) { (void)ssm::ttt_linear(in, opt); };
  auto with = [&](auto edit) { ssm::TttLinearInputs in = d.inputs(); edit(in); return in; };
  const Tensor bad_eta = clone(d.eta), nan_eta = clone(d.eta);
  conformance::set_element(bad_eta, 5, -0.1);
  conformance::set_element(nan_eta, 3, std::nan(""));
  expect_arg_error("eta", [&] { call(with([&](auto& in) { in.eta = bad_eta.view(); }), o); });
  expect_arg_error("eta", [&] { call(with([&](auto& in) { in.eta = nan_eta.view(); }), o); });
  const Tensor nan_w = clone(d.ln_weight);
  conformance::set_element(nan_w, 1, INFINITY);
  expect_arg_error("ln_weight", [&] { call(with([&](auto& in) { in.ln_weight = nan_w.view(); }), o); });
  const Tensor f64_b = Tensor::zeros({cs.h, cs.dk}, DType::f64);
  expect_arg_error("ln_bias", [&] { call(with([&](auto& in) { in.ln_bias = f64_b.view(); }), o); });
  const Tensor short_k = Tensor::zeros({cs.b, cs.l, cs.h, cs.dk - 1}, DType::f32);
  expect_arg_error("k", [&] { call(with([&](auto& in) { in.k = short_k.view(); }), o); });
  const Tensor f64_q = Tensor::zeros({cs.b, cs.l, cs.h, cs.dk}, DType::f64);
  expect_arg_error("q", [&] { call(with([&](auto& in) { in.q = f64_q.view(); }), o); });
  const Tensor eta4 = Tensor::zeros({cs.b, cs.l, cs.h, 1}, DType::f32);
  expect_arg_error("eta", [&] { call(with([&](auto& in) { in.eta = eta4.view(); }), o); });
  const Tensor tau3 = Tensor::zeros({cs.m - 1}, DType::f32), neg_tau = Tensor::zeros({cs.m}, DType::f32);
  conformance::set_element(neg_tau, 2, -1);
  expect_arg_error("position_weights", [&] { call(with([&](auto& in) { in.position_weights = tau3.view(); }), o); });
  expect_arg_error("position_weights", [&] { call(with([&](auto& in) { in.position_weights = neg_tau.view(); }), o); });
  const Tensor state_d = Tensor::zeros({cs.b, cs.h, cs.dk, cs.dk}, DType::f32);  // (d, d): the bias row missing
  expect_arg_error("initial_state", [&] { call(with([&](auto& in) { in.initial_state = state_d.view(); }), o); });
  expect_arg_error("initial_pending", [&] { call(with([&](auto& in) { in.initial_pending = state_d.view(); }), o); });
  const Tensor cu = Tensor::from_vector<std::int64_t>({2}, {0, cs.l});
  expect_arg_error("cu_seqlens", [&] { call(with([&](auto& in) { in.cu_seqlens = cu.view(); }), o); });  // b = 2
  ssm::TttLinearOptions bad = o;
  bad.mini_batch_size = 0;
  expect_arg_error("mini_batch_size", [&] { call(d.inputs(), bad); });
  bad = o, bad.start = cs.m;
  expect_arg_error("start", [&] { call(d.inputs(), bad); });
  bad = o, bad.ln_eps = std::nan("");
  expect_arg_error("ln_eps", [&] { call(d.inputs(), bad); });
  // the step
  Tensor state = clone(d.initial_state), pending = Tensor::zeros(state.shape(), state.dtype());
  Tensor out = Tensor::empty({cs.b, cs.h, cs.dk}, cs.dtype);
  ssm::TttLinearInputs step = d.inputs();
  auto at0 = [&](const Tensor& x) { return x.view().select(1, 0); };
  step.q = at0(d.q), step.k = at0(d.k), step.v = at0(d.v), step.eta = at0(d.eta);
  expect_arg_error("in", [&] { ssm::ttt_linear_step(step, state.view(), pending.view(), 0, out.view(), o); });
  step.initial_state.reset();
  expect_arg_error("position", [&] { ssm::ttt_linear_step(step, state.view(), pending.view(), -1, out.view(), o); });
  const Tensor state64 = Tensor::zeros(state.shape(), DType::f64);
  expect_arg_error("initial_state", [&] { ssm::ttt_linear_step(step, state64.view(), pending.view(), 0, out.view(), o); });
  ssm::ttt_linear_step(step, state.view(), pending.view(), 0, out.view(), o);  // and the good call runs
}

}  // namespace
