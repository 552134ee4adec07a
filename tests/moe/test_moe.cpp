// The sparse mixture-of-experts op (ops/moe.hpp): the reference equals the definition evaluated independently (every
// expert's SwiGLU on every token, softmax, the k largest by sorting); the grouped CPU path equals the reference with
// and without renormalized weights, for every k, 1 and 2 threads, strided rows and 16-bit weights; a dense SwiGLU is
// the op with one expert; the load-balancing loss equals transformers' load_balancing_loss_func (golden values written
// by tools/make_moe_golden.py) and its gradient equals central differences; bad input is an ssm::Error naming the
// argument.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "ssm/ops/moe.hpp"
#include "support/central_differences.hpp"
#include "support/expect_error.hpp"
#include "support/golden.hpp"

namespace {

using ssm::DType;
using ssm::index_t;
using ssm::Tensor;
using ssm::TensorView;
using ssm_test::expect_arg_error;
using ssm_test::expect_error;

Tensor random(std::mt19937_64& rng, const ssm::Dims& shape, DType dt, double scale = 1.0) {
  std::uniform_real_distribution<double> U(-scale, scale);
  Tensor f = Tensor::empty(shape, DType::f64);
  for (index_t i = 0; i < f.numel(); ++i) f.data_as<double>()[i] = U(rng);
  if (dt == DType::f64) return f;
  Tensor t = Tensor::empty(shape, dt);
  for (index_t i = 0; i < f.numel(); ++i) {
    const float v = static_cast<float>(f.data_as<double>()[i]);
    if (dt == DType::f32) t.data_as<float>()[i] = v;
    if (dt == DType::f16) t.data_as<ssm::half>()[i] = ssm::half(v);
    if (dt == DType::bf16) t.data_as<ssm::bfloat16>()[i] = ssm::bfloat16(v);
  }
  return t;
}

struct Problem {
  index_t t, H, I, E;
  Tensor x, router, gate_up, down;
  Problem(index_t t_, index_t H_, index_t I_, index_t E_, DType x_dt, DType w_dt, unsigned seed)
      : t(t_), H(H_), I(I_), E(E_) {
    std::mt19937_64 rng(seed);
    x = random(rng, {t, H}, x_dt), router = random(rng, {E, H}, w_dt);
    gate_up = random(rng, {E, 2 * I, H}, w_dt), down = random(rng, {E, H, I}, w_dt);
  }
  ssm::MoeInputs inputs() const { return {x.view(), router.view(), gate_up.view(), down.view()}; }
};

double at(const Tensor& t, index_t i) {
  switch (t.dtype()) {
    case DType::f64: return t.data_as<double>()[i];
    case DType::f16: return static_cast<double>(static_cast<float>(t.data_as<ssm::half>()[i]));
    case DType::bf16: return static_cast<double>(static_cast<float>(t.data_as<ssm::bfloat16>()[i]));
    default: return t.data_as<float>()[i];
  }
}

// The definition, written out without the library's routing: every expert on every token, the probabilities sorted.
std::vector<double> definition(const Problem& p, index_t k, bool normalize) {
  std::vector<double> y(static_cast<std::size_t>(p.t * p.H), 0.0);
  for (index_t r = 0; r < p.t; ++r) {
    std::vector<double> logit(static_cast<std::size_t>(p.E));
    for (index_t e = 0; e < p.E; ++e)
      for (index_t h = 0; h < p.H; ++h) logit[e] += at(p.router, e * p.H + h) * at(p.x, r * p.H + h);
    const double m = *std::max_element(logit.begin(), logit.end());
    double z = 0;
    for (double v : logit) z += std::exp(v - m);
    std::vector<index_t> order(static_cast<std::size_t>(p.E));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) { return logit[a] > logit[b]; });
    double wsum = 0;
    for (index_t j = 0; j < k; ++j) wsum += std::exp(logit[order[j]] - m) / z;
    for (index_t j = 0; j < k; ++j) {
      const index_t e = order[j];
      const double w = std::exp(logit[e] - m) / z / (normalize ? wsum : 1.0);
      std::vector<double> a(static_cast<std::size_t>(p.I));
      for (index_t i = 0; i < p.I; ++i) {
        double g = 0, u = 0;
        for (index_t h = 0; h < p.H; ++h) {
          g += at(p.gate_up, (e * 2 * p.I + i) * p.H + h) * at(p.x, r * p.H + h);
          u += at(p.gate_up, (e * 2 * p.I + p.I + i) * p.H + h) * at(p.x, r * p.H + h);
        }
        a[i] = g / (1 + std::exp(-g)) * u;
      }
      for (index_t h = 0; h < p.H; ++h) {
        double s = 0;
        for (index_t i = 0; i < p.I; ++i) s += at(p.down, (e * p.H + h) * p.I + i) * a[i];
        y[r * p.H + h] += w * s;
      }
    }
  }
  return y;
}

double max_rel(const Tensor& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < want.size(); ++i)
    num = std::max(num, std::abs(at(got, static_cast<index_t>(i)) - want[i])), den = std::max(den, std::abs(want[i]));
  return num / std::max(den, 1e-300);
}

TEST(Moe, ReferenceEqualsTheDefinition) {
  const Problem p(9, 7, 5, 4, DType::f64, DType::f64, 1);
  for (index_t k : {1, 2, 4})
    for (bool norm : {false, true}) {
      ssm::MoeOptions o;
      o.top_k = k, o.normalize_topk = norm, o.path = ssm::MoePath::reference;
      const ssm::MoeOutputs r = ssm::moe(p.inputs(), o);
      EXPECT_EQ(r.path, "reference");
      EXPECT_LE(max_rel(r.out, definition(p, k, norm)), 1e-13) << "k " << k << " normalize " << norm;
    }
}

TEST(Moe, GroupedEqualsTheReference) {
  struct Types {
    DType x, w;
    double tol;
  };
  for (const Types ty : {Types{DType::f64, DType::f64, 1e-12}, Types{DType::f32, DType::f32, 2e-6},
                         Types{DType::f32, DType::bf16, 2e-6}, Types{DType::f32, DType::f16, 2e-6}})
    for (index_t t : {1, 3, 37})
      for (index_t k : {1, 2, 6})
        for (bool norm : {false, true})
          for (int threads : {1, 2}) {
            const Problem p(t, 20, 11, 6, ty.x, ty.w, static_cast<unsigned>(t * 7 + k));
            ssm::MoeOptions o;
            o.top_k = k, o.normalize_topk = norm, o.threads = threads;
            const ssm::MoeOutputs fast = ssm::moe(p.inputs(), o);
            o.path = ssm::MoePath::reference;
            const ssm::MoeOutputs ref = ssm::moe(p.inputs(), o);
            EXPECT_EQ(fast.path, "cpu-grouped");
            std::vector<double> want(static_cast<std::size_t>(ref.out.numel())), lw(static_cast<std::size_t>(t * 6));
            for (index_t i = 0; i < ref.out.numel(); ++i) want[i] = at(ref.out, i);
            for (index_t i = 0; i < t * 6; ++i) lw[i] = at(ref.router_logits, i);
            EXPECT_LE(max_rel(fast.out, want), ty.tol) << ssm::name(ty.w) << " t " << t << " k " << k << " " << threads;
            EXPECT_LE(max_rel(fast.router_logits, lw), ty.tol);
          }
}

// Rows of x and out with a stride; the result does not depend on the thread count at all (each (token, choice) pair
// has its own row, summed in choice order).
TEST(Moe, StridedRowsAndThreadsGiveTheSameBits) {
  const Problem p(25, 16, 8, 5, DType::f32, DType::f32, 3);
  std::vector<float> xs(static_cast<std::size_t>(25 * 20)), out(xs.size(), -7.0f);
  for (index_t r = 0; r < 25; ++r) std::copy_n(p.x.data_as<float>() + r * 16, 16, xs.data() + r * 20);
  ssm::MoeInputs in = p.inputs();
  in.x = TensorView(xs.data(), DType::f32, ssm::Device::cpu(), {25, 16}, {20, 1});
  ssm::MoeOptions o;
  o.threads = 1;
  ssm::moe_into(in, TensorView(out.data(), DType::f32, ssm::Device::cpu(), {25, 16}, {20, 1}), std::nullopt, o);
  o.threads = 2;
  const ssm::MoeOutputs two = ssm::moe(p.inputs(), o);
  for (index_t r = 0; r < 25; ++r) {
    for (index_t h = 0; h < 16; ++h) EXPECT_EQ(out[r * 20 + h], two.out.data_as<float>()[r * 16 + h]);
    for (index_t h = 16; h < 20; ++h) EXPECT_EQ(out[r * 20 + h], -7.0f);  // the gaps are not written
  }
}

// A dense SwiGLU MLP (down (silu(gate x) ⊙ up x)) is the op with one expert: its probability is exactly 1.
TEST(Moe, OneExpertIsADenseSwiGlu) {
  Problem p(6, 9, 4, 1, DType::f64, DType::f64, 4);
  ssm::MoeOptions o;
  o.top_k = 1;
  EXPECT_LE(max_rel(ssm::moe(p.inputs(), o).out, definition(p, 1, false)), 1e-13);
}

nlohmann::json aux_golden() {
  std::ifstream is(ssm::test::data_dir("moe/aux_loss.json"));
  return nlohmann::json::parse(is);
}

TEST(MoeAuxLoss, EqualsTransformersLoadBalancingLoss) {
  const nlohmann::json g = aux_golden();
  ASSERT_TRUE(g.contains("cases"));
  for (const auto& [name, c] : g["cases"].items()) {
    SCOPED_TRACE(name);
    std::vector<Tensor> layers;
    std::vector<TensorView> views;
    for (const auto& l : c["logits"]) {
      const index_t t = static_cast<index_t>(l.size()), E = static_cast<index_t>(l[0].size());
      Tensor x = Tensor::empty({t, E}, DType::f64);
      for (index_t i = 0; i < t; ++i)
        for (index_t e = 0; e < E; ++e) x.data_as<double>()[i * E + e] = l[i][e].get<double>();
      layers.push_back(x);
    }
    for (const Tensor& l : layers) views.push_back(l.view());
    std::optional<TensorView> mask;
    std::vector<double> m;
    if (!c["mask"].is_null()) {
      for (const auto& row : c["mask"])
        for (const auto& v : row) m.push_back(v.get<double>());
      mask = TensorView::of(m.data(), {static_cast<index_t>(m.size())});
    }
    const index_t k = c["top_k"].get<index_t>();
    const ssm::MoeAuxLoss r = ssm::moe_load_balancing_loss(views, k, mask, true);
    // transformers' function sums in f32 (loss, grad); the script also writes its formula in f64 (loss_f64, grad_f64)
    EXPECT_NEAR(r.loss, c["loss"].get<double>(), 1e-6);
    EXPECT_NEAR(r.loss, c["loss_f64"].get<double>(), 1e-12);
    index_t row = 0;
    for (const auto& l : c["grad_f64"])
      for (const auto& gr : l) {
        for (std::size_t e = 0; e < gr.size(); ++e)
          EXPECT_NEAR(r.grad.data_as<double>()[row * static_cast<index_t>(gr.size()) + static_cast<index_t>(e)],
                      gr[e].get<double>(), 1e-12);
        ++row;
      }
  }
}

TEST(MoeAuxLoss, GradientEqualsCentralDifferencesAndBalancedRoutingGivesK) {
  std::mt19937_64 rng(9);
  Tensor a = random(rng, {7, 5}, DType::f64, 2.0), b = random(rng, {7, 5}, DType::f64, 2.0);
  const std::vector<double> mask{1, 0, 1, 1, 0.5, 1, 1};
  const auto m = TensorView::of(mask.data(), {7});
  const ssm::MoeAuxLoss r = ssm::moe_load_balancing_loss({a.view(), b.view()}, 2, m, true);
  Tensor ga = Tensor::empty({7, 5}, DType::f64), gb = Tensor::empty({7, 5}, DType::f64);
  std::copy_n(r.grad.data_as<double>(), 35, ga.data_as<double>());
  std::copy_n(r.grad.data_as<double>() + 35, 35, gb.data_as<double>());
  auto loss = [&] { return ssm::moe_load_balancing_loss({a.view(), b.view()}, 2, m).loss; };
  ssm_test::expect_central_differences("layer 0", a, ga, loss, 1e-6, 1e-7);
  ssm_test::expect_central_differences("layer 1", b, gb, loss, 1e-6, 1e-7);
  // equal logits: every probability 1 / E, the top k the first k experts for every token: the loss is k
  Tensor flat = Tensor::zeros({4, 6}, DType::f32);
  for (index_t k = 1; k <= 6; ++k) EXPECT_NEAR(ssm::moe_load_balancing_loss({flat.view()}, k).loss, double(k), 1e-12);
  EXPECT_EQ(ssm::moe_load_balancing_loss({}, 2).loss, 0.0);
  const std::vector<double> none(7, 0.0);
  EXPECT_EQ(ssm::moe_load_balancing_loss({a.view()}, 2, TensorView::of(none.data(), {7})).loss, 0.0);
}

TEST(Moe, BadInputIsNamed) {
  const Problem p(4, 6, 3, 3, DType::f32, DType::f32, 5);
  ssm::MoeOptions o;
  o.top_k = 4;
  expect_arg_error("top_k", [&] { ssm::moe(p.inputs(), o); });
  o.top_k = 0;
  expect_arg_error("top_k", [&] { ssm::moe(p.inputs(), o); });
  o = {};
  ssm::MoeInputs in = p.inputs();
  in.w_down = p.gate_up.view();  // (E, 2I, H) where (E, H, I) is expected
  expect_arg_error("w_down", [&] { ssm::moe(in, o); });
  const Problem p64(4, 6, 3, 3, DType::f64, DType::f64, 5);
  in = p.inputs(), in.router = p64.router.view();
  expect_arg_error("router", [&] { ssm::moe(in, o); });
  in = p.inputs(), in.w_gate_up = p64.gate_up.view();
  expect_arg_error("w_gate_up", [&] { ssm::moe(in, o); });
  in = p.inputs(), in.x = p.x.view().reshape({2, 2, 6});
  expect_arg_error("x", [&] { ssm::moe(in, o); });
  Tensor small = Tensor::empty({3, 6}, DType::f32);
  expect_arg_error("out", [&] { ssm::moe_into(p.inputs(), small.view()); });
  o.threads = -1;
  expect_arg_error("threads", [&] { ssm::moe(p.inputs(), o); });
  // the aux loss: a NaN logit, a layer of another shape, a negative mask weight, k out of range
  Tensor l = Tensor::zeros({4, 3}, DType::f32), other = Tensor::zeros({5, 3}, DType::f32);
  l.data_as<float>()[5] = std::nanf("");
  expect_error([&] { ssm::moe_load_balancing_loss({l.view()}, 2); }, "must be finite");
  l.data_as<float>()[5] = 0;
  expect_arg_error("router_logits[1]", [&] { ssm::moe_load_balancing_loss({l.view(), other.view()}, 2); });
  const std::vector<double> neg{1, -1, 1, 1};
  expect_arg_error("mask", [&] { ssm::moe_load_balancing_loss({l.view()}, 2, TensorView::of(neg.data(), {4})); });
  expect_arg_error("top_k", [&] { ssm::moe_load_balancing_loss({l.view()}, 4); });
}

}  // namespace

namespace {

// The backward: the reference against central differences of the reference forward (every input, both weightings,
// with a router-logit gradient), and the grouped path against the reference.
double moe_loss(const Problem& p, const std::vector<double>& gy, const std::vector<double>& gl, index_t k, bool norm) {
  ssm::MoeOptions o;
  o.top_k = k, o.normalize_topk = norm, o.path = ssm::MoePath::reference;
  const ssm::MoeOutputs r = ssm::moe(p.inputs(), o);
  double s = 0;
  for (index_t i = 0; i < r.out.numel(); ++i) s += gy[i] * r.out.data_as<double>()[i];
  for (index_t i = 0; i < r.router_logits.numel(); ++i) s += gl[i] * r.router_logits.data_as<double>()[i];
  return s;
}

TEST(MoeBackward, ReferenceEqualsCentralDifferences) {
  for (index_t k : {1, 2, 3})
    for (bool norm : {false, true}) {
      SCOPED_TRACE("k " + std::to_string(k) + (norm ? " normalized" : ""));
      Problem p(5, 6, 4, 4, DType::f64, DType::f64, static_cast<unsigned>(11 + k));
      std::mt19937_64 rng(k);
      const Tensor gy = random(rng, {5, 6}, DType::f64), gl = random(rng, {5, 4}, DType::f64);
      const std::vector<double> gyv(gy.data_as<double>(), gy.data_as<double>() + 30),
          glv(gl.data_as<double>(), gl.data_as<double>() + 20);
      ssm::MoeOptions o;
      o.top_k = k, o.normalize_topk = norm, o.path = ssm::MoePath::reference;
      const ssm::MoeGrads g = ssm::moe_backward(p.inputs(), gy.view(), gl.view(), o);
      EXPECT_EQ(g.path, "reference");
      auto loss = [&] { return moe_loss(p, gyv, glv, k, norm); };
      ssm_test::expect_central_differences("x", p.x, g.grad_x, loss, 1e-6, 1e-6);
      ssm_test::expect_central_differences("router", p.router, g.grad_router, loss, 1e-6, 1e-6);
      ssm_test::expect_central_differences("w_gate_up", p.gate_up, g.grad_w_gate_up, loss, 1e-6, 1e-6);
      ssm_test::expect_central_differences("w_down", p.down, g.grad_w_down, loss, 1e-6, 1e-6);
    }
}

TEST(MoeBackward, GroupedEqualsTheReference) {
  for (DType dt : {DType::f64, DType::f32})
    for (index_t t : {1, 4, 41})
      for (index_t k : {1, 2, 5})
        for (bool norm : {false, true})
          for (int threads : {1, 2}) {
            const Problem p(t, 18, 7, 5, dt, dt, static_cast<unsigned>(t + 3 * k));
            std::mt19937_64 rng(t * 5 + k);
            const Tensor gy = random(rng, {t, 18}, dt), gl = random(rng, {t, 5}, dt);
            ssm::MoeOptions o;
            o.top_k = k, o.normalize_topk = norm, o.threads = threads;
            const ssm::MoeGrads fast = ssm::moe_backward(p.inputs(), gy.view(), gl.view(), o);
            o.path = ssm::MoePath::reference;
            const ssm::MoeGrads ref = ssm::moe_backward(p.inputs(), gy.view(), gl.view(), o);
            EXPECT_EQ(fast.path, "cpu-grouped");
            const double tol = dt == DType::f64 ? 1e-12 : 5e-6;
            for (const auto& [got, want, name] : {std::tuple{&fast.grad_x, &ref.grad_x, "x"},
                                                  std::tuple{&fast.grad_router, &ref.grad_router, "router"},
                                                  std::tuple{&fast.grad_w_gate_up, &ref.grad_w_gate_up, "w_gate_up"},
                                                  std::tuple{&fast.grad_w_down, &ref.grad_w_down, "w_down"}}) {
              std::vector<double> w(static_cast<std::size_t>(want->numel()));
              for (index_t i = 0; i < want->numel(); ++i) w[i] = at(*want, i);
              EXPECT_LE(max_rel(*got, w), tol) << name << " " << ssm::name(dt) << " t " << t << " k " << k;
            }
          }
}

TEST(MoeBackward, BadInputIsNamed) {
  const Problem p(4, 6, 3, 3, DType::f32, DType::bf16, 5);
  const Tensor gy = Tensor::zeros({4, 6}, DType::f32);
  expect_arg_error("router", [&] { ssm::moe_backward(p.inputs(), gy.view()); });  // 16-bit weights
  const Problem q(4, 6, 3, 3, DType::f32, DType::f32, 5);
  const Tensor wrong = Tensor::zeros({4, 5}, DType::f32);
  expect_arg_error("grad_out", [&] { ssm::moe_backward(q.inputs(), wrong.view()); });
  expect_arg_error("grad_router_logits", [&] { ssm::moe_backward(q.inputs(), gy.view(), wrong.view()); });
}

}  // namespace
