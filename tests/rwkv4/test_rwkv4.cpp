// The RWKV-4 op (ops/rwkv4.hpp; the WKV recurrence) beyond the conformance registry: the reference's scaled
// recurrence equals the defining sums wkv_t = (Σ e^{(t−1−i) w + k_i} v_i + e^{u+k_t} v_t) / (…) evaluated directly;
// the CPU loop equals the reference on 1 and 2 threads, also where e^k overflows f32; the decode step chained over a
// sequence and a sequence cut anywhere (final state → initial state) equal one pass; the reference backward equals
// central differences (f64) for every input, the final state's max included; bad input is an ssm::Error naming the
// argument.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "../conformance/rwkv4_problem.hpp"
#include "../conformance/values.hpp"
#include "ssm/ops/rwkv4.hpp"
#include "support/central_differences.hpp"
#include "support/expect_error.hpp"

namespace {

using conformance::rel_error;
using rwkv4_problem::Rw4Case;
using rwkv4_problem::Rw4Data;
using ssm::DType;
using ssm::index_t;
using ssm::Rwkv4Path;
using ssm::Tensor;
using ssm_test::expect_arg_error;

ssm::Rwkv4Outputs run(const ssm::Rwkv4Inputs& in, Rwkv4Path path, int threads = 1) {
  ssm::Rwkv4Options o;
  o.path = path, o.threads = threads, o.return_final_state = true;
  return ssm::rwkv4(in, o);
}

/// Element i of a contiguous host tensor as double.
double at(const Tensor& t, index_t i) {
  switch (t.dtype()) {
    case DType::f64: return t.data_as<double>()[i];
    case DType::f32: return t.data_as<float>()[i];
    case DType::bf16: return static_cast<float>(t.data_as<ssm::bfloat16>()[i]);
    default: return static_cast<float>(t.data_as<ssm::half>()[i]);
  }
}

TEST(Rwkv4, ReferenceEqualsTheDefiningSums) {
  // Small keys, so that the plain sums stay in double's range; an initial state stands for A_0 = num e^max,
  // B_0 = den e^max decayed like every earlier token.
  for (bool init : {false, true}) {
    Rw4Case cs;
    cs.b = 2, cs.l = 23, cs.c = 6, cs.has_init = init, cs.seed = 11;
    const Rw4Data d = rwkv4_problem::make_data(cs);
    const auto ref = run(d.inputs(), Rwkv4Path::reference);
    double worst = 0;
    for (index_t bi = 0; bi < cs.b; ++bi)
      for (index_t c = 0; c < cs.c; ++c) {
        const double w = -std::exp(at(d.time_decay, c)), u = at(d.time_first, c);
        double A0 = 0, B0 = 0;
        if (init) {
          const double m = at(d.initial_state, (bi * 3 + 2) * cs.c + c);
          A0 = at(d.initial_state, (bi * 3) * cs.c + c) * std::exp(m);
          B0 = at(d.initial_state, (bi * 3 + 1) * cs.c + c) * std::exp(m);
        }
        for (index_t t = 0; t < cs.l; ++t) {
          double num = A0 * std::exp(t * w), den = B0 * std::exp(t * w);
          for (index_t i = 0; i < t; ++i) {
            const double e = std::exp((t - 1 - i) * w + at(d.k, (bi * cs.l + i) * cs.c + c));
            num += e * at(d.v, (bi * cs.l + i) * cs.c + c), den += e;
          }
          const double kt = at(d.k, (bi * cs.l + t) * cs.c + c), e = std::exp(u + kt);
          const double want = (num + e * at(d.v, (bi * cs.l + t) * cs.c + c)) / (den + e);
          worst = std::max(worst, std::abs(at(ref.out, (bi * cs.l + t) * cs.c + c) - want));
        }
      }
    EXPECT_LE(worst, 1e-13) << (init ? "with" : "without") << " an initial state";
  }
}

TEST(Rwkv4, CpuLoopEqualsTheReference) {
  for (DType dt : {DType::f64, DType::f32, DType::bf16})
    for (double k_hi : {2.0, 90.0})  // 90: e^k overflows f32 (and e^{2k} double's sums would not be far off)
      for (int threads : {1, 2}) {
        Rw4Case cs;
        cs.dtype = dt, cs.b = 3, cs.l = 41, cs.c = 131, cs.has_init = true, cs.seed = 3;
        if (k_hi > 20) cs.k_lo = 30, cs.k_hi = k_hi;
        SCOPED_TRACE(cs.describe() + " threads " + std::to_string(threads));
        const Rw4Data d = rwkv4_problem::make_data(cs);
        const auto ref = run(d.inputs(), Rwkv4Path::reference), got = run(d.inputs(), Rwkv4Path::automatic, threads);
        EXPECT_EQ(got.path, "cpu-recurrent");
        // f32 with keys near 90: every exponent is a difference of numbers near 90 carried in f32 (ulp 7.6e-6), so
        // each factor e^x is off by up to about 1e-5 relative: the representation's limit, not the loop's
        const double f32_tol = k_hi > 20 ? 5e-5 : 1e-5;
        const double tol = dt == DType::f64 ? 1e-12 : dt == DType::f32 ? f32_tol : 8e-3;
        EXPECT_LE(rel_error(got.out, ref.out), tol);
        EXPECT_LE(rel_error(got.final_state, ref.final_state), dt == DType::f64 ? 1e-12 : f32_tol);
        for (index_t i = 0; i < got.out.numel(); ++i) ASSERT_TRUE(std::isfinite(at(got.out, i)));
      }
}

TEST(Rwkv4, StepsAndCutSequencesEqualOnePass) {
  for (DType dt : {DType::f64, DType::f32}) {
    Rw4Case cs;
    cs.dtype = dt, cs.b = 2, cs.l = 19, cs.c = 37, cs.has_init = true, cs.seed = 5;
    const Rw4Data d = rwkv4_problem::make_data(cs);
    const auto whole = run(d.inputs(), Rwkv4Path::automatic);
    const double tol = dt == DType::f64 ? 1e-13 : 1e-6;
    // one token at a time through rwkv4_step, the state updated in place
    Tensor state = conformance::clone(d.initial_state);
    Tensor out = Tensor::empty({cs.b, cs.l, cs.c}, dt);
    for (index_t t = 0; t < cs.l; ++t)
      ssm::rwkv4_step(d.k.view().select(1, t), d.v.view().select(1, t), d.time_decay.view(), d.time_first.view(),
                      state.view(), out.view().select(1, t));
    EXPECT_LE(rel_error(out, whole.out), tol);
    EXPECT_LE(rel_error(state, whole.final_state), tol);
    // cut at every position: the first part's final state starts the second
    for (index_t cut : {1, 7, 18}) {
      SCOPED_TRACE("cut " + std::to_string(cut));
      ssm::Rwkv4Inputs a = d.inputs(), b = d.inputs();
      a.k = d.k.view().narrow(1, 0, cut), a.v = d.v.view().narrow(1, 0, cut);
      const auto first = run(a, Rwkv4Path::automatic);
      b.k = d.k.view().narrow(1, cut, cs.l - cut), b.v = d.v.view().narrow(1, cut, cs.l - cut);
      b.initial_state = first.final_state.view();
      const auto second = run(b, Rwkv4Path::automatic);
      Tensor tail = Tensor::empty({cs.b, cs.l - cut, cs.c}, dt);
      ssm::copy(tail.view(), whole.out.view().narrow(1, cut, cs.l - cut));
      EXPECT_LE(rel_error(second.out, tail), tol);
      EXPECT_LE(rel_error(second.final_state, whole.final_state), tol);
    }
  }
}

TEST(Rwkv4, ReferenceBackwardEqualsCentralDifferences) {
  for (bool packed : {false, true}) {
    Rw4Case cs;
    cs.b = packed ? 1 : 2, cs.l = 9, cs.c = 3, cs.has_init = true, cs.seed = 8;
    if (packed) cs.cu = {0, 4, 9};
    Rw4Data d = rwkv4_problem::make_data(cs);
    // k spread so that the update's max takes both branches (k_t above and below max + w)
    for (index_t i = 0; i < d.k.numel(); ++i) conformance::set_element(d.k, i, 3 * at(d.k, i));
    std::mt19937_64 rng(99);
    const Tensor gy = conformance::uniform(rng, {cs.b, cs.l, cs.c}, DType::f64, -1, 1);
    const Tensor gs = conformance::uniform(rng, {cs.rows(), 3, cs.c}, DType::f64, -1, 1);
    auto loss = [&] {
      const auto r = run(d.inputs(), Rwkv4Path::reference);
      double s = 0;
      for (index_t i = 0; i < r.out.numel(); ++i) s += at(r.out, i) * at(gy, i);
      for (index_t i = 0; i < r.final_state.numel(); ++i) s += at(r.final_state, i) * at(gs, i);
      return s;
    };
    ssm::Rwkv4Options o;
    o.path = Rwkv4Path::reference;
    const ssm::Rwkv4Grads g = ssm::rwkv4_backward(d.inputs(), gy.view(), gs.view(), o);
    EXPECT_EQ(g.path, "reference");
    const std::string what = packed ? "packed " : "";
    ssm_test::expect_central_differences(what + "k", d.k, g.grad_k, loss);
    ssm_test::expect_central_differences(what + "v", d.v, g.grad_v, loss);
    ssm_test::expect_central_differences(what + "time_decay", d.time_decay, g.grad_time_decay, loss);
    ssm_test::expect_central_differences(what + "time_first", d.time_first, g.grad_time_first, loss);
    ssm_test::expect_central_differences(what + "initial_state", d.initial_state, g.grad_initial_state, loss);
    // the CPU backward agrees on this problem too (both branches of every max)
    o.path = Rwkv4Path::automatic, o.checkpoint = 4;
    const ssm::Rwkv4Grads c = ssm::rwkv4_backward(d.inputs(), gy.view(), gs.view(), o);
    EXPECT_EQ(c.path, "cpu-recurrent");
    EXPECT_LE(rel_error(c.grad_k, g.grad_k), 1e-12);
    EXPECT_LE(rel_error(c.grad_time_decay, g.grad_time_decay), 1e-12);
    EXPECT_LE(rel_error(c.grad_initial_state, g.grad_initial_state), 1e-12);
  }
}

TEST(Rwkv4, BadInputIsNamed) {
  Rw4Case cs;
  cs.b = 2, cs.l = 4, cs.c = 3, cs.has_init = true, cs.dtype = DType::f32;
  const Rw4Data d = rwkv4_problem::make_data(cs);
  auto call = [&](ssm::Rwkv4Inputs in, ssm::Rwkv4Options o = {}) { ssm::rwkv4(in, o); };
  ssm::Rwkv4Inputs in = d.inputs();
  const Tensor k64 = Tensor::zeros({2, 4, 3}, DType::f64), short_v = Tensor::zeros({2, 4, 2}, DType::f32);
  in.v = short_v.view();
  expect_arg_error("v", [&] { call(in); });
  in = d.inputs(), in.v = k64.view();
  expect_arg_error("v", [&] { call(in); });
  const Tensor td64 = Tensor::zeros({3}, DType::f64), td4 = Tensor::zeros({4}, DType::f32);
  in = d.inputs(), in.time_decay = td64.view();
  expect_arg_error("time_decay", [&] { call(in); });
  in = d.inputs(), in.time_first = td4.view();
  expect_arg_error("time_first", [&] { call(in); });
  Tensor nan_td = conformance::clone(d.time_decay);
  nan_td.data_as<float>()[1] = std::numeric_limits<float>::quiet_NaN();
  in = d.inputs(), in.time_decay = nan_td.view();
  expect_arg_error("time_decay", [&] { call(in); });
  Tensor bad_state = conformance::clone(d.initial_state);
  bad_state.data_as<float>()[3 + 1] = -1.0f;  // a negative den
  in = d.inputs(), in.initial_state = bad_state.view();
  expect_arg_error("initial_state", [&] { call(in); });
  bad_state = conformance::clone(d.initial_state);
  bad_state.data_as<float>()[6] = std::numeric_limits<float>::infinity();  // an infinite max
  in = d.inputs(), in.initial_state = bad_state.view();
  expect_arg_error("initial_state", [&] { call(in); });
  const Tensor wide_state = Tensor::zeros({2, 2, 3}, DType::f32);
  in = d.inputs(), in.initial_state = wide_state.view();
  expect_arg_error("initial_state", [&] { call(in); });
  const Tensor cu = Tensor::from_vector<std::int64_t>({2}, {0, 4});
  in = d.inputs(), in.cu_seqlens = cu.view();  // b = 2 with cu_seqlens
  expect_arg_error("cu_seqlens", [&] { call(in); });
  ssm::Rwkv4Options o;
  o.checkpoint = 0;
  expect_arg_error("checkpoint", [&] { call(d.inputs(), o); });
  const Tensor gy = Tensor::zeros({2, 4, 3}, DType::f32), gs = Tensor::zeros({2, 3, 3}, DType::f64);
  expect_arg_error("grad_final_state", [&] { ssm::rwkv4_backward(d.inputs(), gy.view(), gs.view()); });
  const Tensor state = ssm::rwkv4_empty_state(2, 3), out = Tensor::empty({2, 3}, DType::f32);
  const Tensor state4 = ssm::rwkv4_empty_state(2, 4);  // 4 channels for k's 3
  expect_arg_error("state", [&] {
    ssm::rwkv4_step(d.k.view().select(1, 0), d.v.view().select(1, 0), d.time_decay.view(), d.time_first.view(),
                    state4.view(), out.view());
  });
  // the empty state is the same as no initial state
  in = d.inputs(), in.initial_state = state.view();
  const auto a = run(in, Rwkv4Path::automatic);
  in.initial_state.reset();
  EXPECT_EQ(rel_error(a.out, run(in, Rwkv4Path::automatic).out), 0.0);
}

}  // namespace
