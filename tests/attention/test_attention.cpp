// Tests of the attention op (ops/attention.hpp): both algorithms against the naive double reference on
// awkward shapes (l = 1, 7, 65, 130; p = 1, 16, 64; multi-head, grouped-query, multi-query), gradients
// against finite differences, tiled against materialized, KV-cache decoding against the full forward,
// strided views, thread counts, and the error paths.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "ssm/cpu/threads.hpp"
#include "ssm/ops/attention.hpp"
#include "ssm/reference/attention.hpp"

namespace {

using ssm::AttentionAlgorithm;
using ssm::AttentionOptions;
using ssm::DType;
using ssm::Tensor;
using ssm::index_t;
using Dims = ssm::reference::AttentionDims;

std::vector<double> random_values(std::size_t n, unsigned seed, double scale = 1.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(0.0, scale);
  std::vector<double> x(n);
  for (auto& e : x) e = dist(gen);
  return x;
}

template <class T>
Tensor make(const ssm::Dims& shape, const std::vector<double>& x) {
  return Tensor::from_vector<T>(shape, std::vector<T>(x.begin(), x.end()));
}

template <class T>
std::vector<double> values(const Tensor& t) {
  const auto v = t.to_vector<T>();
  return {v.begin(), v.end()};
}

/// max |a − b| / max(1, max |b|): the error normalized by the size of the reference values.
double normalized_error(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double err = 0, scale = 1;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    err = std::max(err, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return err / scale;
}

/// Tolerances against the double reference. f32: the scores are p-term dot products and the outputs
/// l_k-term weighted sums, each rounding at eps = 1.2e-7 per term relative to the partial sums; with
/// p, l ≤ 130 and unit-variance inputs that stays below ~1e-5 of the value scale; 1e-4 leaves a margin
/// and is still 100x below the error of a wrong mask or a dropped block (≥ 1e-2). f64: same reasoning at
/// eps = 2.2e-16.
template <class T>
double tolerance() {
  return std::is_same_v<T, float> ? 1e-4 : 1e-11;
}

struct Case {
  index_t b, l, h, h_kv, p;
};

template <class T>
struct Inputs {
  Dims dims;
  std::vector<double> q, k, v, grad_out;  // (b, l_q, h, p), (b, l_k, h_kv, p) ×2, (b, l_q, h, p)
  Tensor tq, tk, tv, tgrad_out;
};

template <class T>
Inputs<T> make_inputs(const Dims& d, unsigned seed) {
  Inputs<T> in;
  in.dims = d;
  const auto nq = static_cast<std::size_t>(d.b * d.l_q * d.h * d.p);
  const auto nk = static_cast<std::size_t>(d.b * d.l_k * d.h_kv * d.p);
  // Scores of a few units: softmax neither uniform nor one-hot, so masking and weighting both matter.
  in.q = random_values(nq, seed, 1.5);
  in.k = random_values(nk, seed + 1, 1.5);
  in.v = random_values(nk, seed + 2);
  in.grad_out = random_values(nq, seed + 3);
  // Round through T so the reference sees exactly the op's inputs.
  in.tq = make<T>({d.b, d.l_q, d.h, d.p}, in.q);
  in.tk = make<T>({d.b, d.l_k, d.h_kv, d.p}, in.k);
  in.tv = make<T>({d.b, d.l_k, d.h_kv, d.p}, in.v);
  in.tgrad_out = make<T>({d.b, d.l_q, d.h, d.p}, in.grad_out);
  in.q = values<T>(in.tq), in.k = values<T>(in.tk), in.v = values<T>(in.tv), in.grad_out = values<T>(in.tgrad_out);
  return in;
}

struct Outputs {
  Tensor out, lse, grad_q, grad_k, grad_v;
};

template <class T>
Outputs run(const Inputs<T>& in, const AttentionOptions& opt, bool backward = true) {
  Outputs o;
  auto r = ssm::attention_forward(in.tq, in.tk, in.tv, opt);
  o.out = r.out, o.lse = r.lse;
  if (backward) {
    o.grad_q = Tensor::empty(in.tq.shape(), in.tq.dtype());
    o.grad_k = Tensor::empty(in.tk.shape(), in.tk.dtype());
    o.grad_v = Tensor::empty(in.tv.shape(), in.tv.dtype());
    ssm::attention_backward(in.tq, in.tk, in.tv, o.out, o.lse, in.tgrad_out, o.grad_q, o.grad_k, o.grad_v, opt);
  }
  return o;
}

AttentionOptions options(AttentionAlgorithm alg, int block_q = 64, int block_k = 64, int threads = 2) {
  AttentionOptions o;
  o.algorithm = alg;
  o.block_q = block_q;
  o.block_k = block_k;
  o.n_threads = threads;
  return o;
}

template <class T>
class AttentionTyped : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(AttentionTyped, Types);

// Forward and backward of both algorithms (and two block shapes for the tiled one: blocks that do and do
// not divide l, and a query block taller than the key block so the diagonal crosses several key blocks)
// against the reference, over every awkward length, head dimension and head grouping.
TYPED_TEST(AttentionTyped, MatchesReferenceOnAwkwardShapes) {
  using T = TypeParam;
  const std::vector<Case> heads = {{2, 0, 2, 2, 0}, {1, 0, 6, 2, 0}, {1, 0, 3, 1, 0}};  // MHA, GQA, MQA
  unsigned seed = 10;
  for (index_t l : {1, 7, 65, 130})
    for (index_t p : {1, 16, 64})
      for (const Case& hc : heads) {
        Dims d;
        d.b = hc.b, d.l_q = l, d.l_k = l, d.h = hc.h, d.h_kv = hc.h_kv, d.p = p;
        const auto in = make_inputs<T>(d, seed += 7);
        std::vector<double> out, lse, grad_q, grad_k, grad_v;
        ssm::reference::attention_forward(d, in.q, in.k, in.v, out, lse);
        ssm::reference::attention_backward(d, in.q, in.k, in.v, in.grad_out, grad_q, grad_k, grad_v);
        for (const auto& opt : {options(AttentionAlgorithm::materialized), options(AttentionAlgorithm::tiled),
                                options(AttentionAlgorithm::tiled, 16, 8, 3)}) {
          SCOPED_TRACE("l=" + std::to_string(l) + " p=" + std::to_string(p) + " h=" + std::to_string(d.h) +
                       " h_kv=" + std::to_string(d.h_kv) + " " + ssm::name(opt.algorithm) +
                       " block_q=" + std::to_string(opt.block_q));
          const auto o = run(in, opt);
          EXPECT_LE(normalized_error(values<T>(o.out), out), tolerance<T>());
          EXPECT_LE(normalized_error(values<T>(o.lse), lse), tolerance<T>());
          EXPECT_LE(normalized_error(values<T>(o.grad_q), grad_q), tolerance<T>());
          EXPECT_LE(normalized_error(values<T>(o.grad_k), grad_k), tolerance<T>());
          EXPECT_LE(normalized_error(values<T>(o.grad_v), grad_v), tolerance<T>());
        }
      }
}

// Non-causal attention and fewer queries than keys (the queries are the last l_q tokens).
TYPED_TEST(AttentionTyped, NonCausalAndShortQueriesMatchReference) {
  using T = TypeParam;
  for (bool causal : {true, false}) {
    Dims d;
    d.b = 2, d.l_q = 9, d.l_k = 70, d.h = 4, d.h_kv = 2, d.p = 16, d.causal = causal;
    const auto in = make_inputs<T>(d, causal ? 101u : 202u);
    std::vector<double> out, lse, grad_q, grad_k, grad_v;
    ssm::reference::attention_forward(d, in.q, in.k, in.v, out, lse);
    ssm::reference::attention_backward(d, in.q, in.k, in.v, in.grad_out, grad_q, grad_k, grad_v);
    for (auto opt : {options(AttentionAlgorithm::materialized), options(AttentionAlgorithm::tiled, 4, 16)}) {
      SCOPED_TRACE(std::string(ssm::name(opt.algorithm)) + (causal ? " causal" : " non-causal"));
      opt.causal = causal;
      const auto o = run(in, opt);
      EXPECT_LE(normalized_error(values<T>(o.out), out), tolerance<T>());
      EXPECT_LE(normalized_error(values<T>(o.lse), lse), tolerance<T>());
      EXPECT_LE(normalized_error(values<T>(o.grad_q), grad_q), tolerance<T>());
      EXPECT_LE(normalized_error(values<T>(o.grad_k), grad_k), tolerance<T>());
      EXPECT_LE(normalized_error(values<T>(o.grad_v), grad_v), tolerance<T>());
    }
  }
}

// The two algorithms are equivalent views of one function: in f32 they agree to rounding (they sum in
// different orders, so not bitwise; 2e-5 is ~100 ulps of the unit-size values).
TEST(Attention, TiledEqualsMaterialized) {
  Dims d;
  d.b = 2, d.l_q = 130, d.l_k = 130, d.h = 4, d.h_kv = 2, d.p = 64;
  const auto in = make_inputs<float>(d, 7);
  const auto m = run(in, options(AttentionAlgorithm::materialized));
  const auto t = run(in, options(AttentionAlgorithm::tiled, 32, 48));
  EXPECT_LE(normalized_error(values<float>(t.out), values<float>(m.out)), 2e-5);
  EXPECT_LE(normalized_error(values<float>(t.lse), values<float>(m.lse)), 2e-5);
  EXPECT_LE(normalized_error(values<float>(t.grad_q), values<float>(m.grad_q)), 2e-5);
  EXPECT_LE(normalized_error(values<float>(t.grad_k), values<float>(m.grad_k)), 2e-5);
  EXPECT_LE(normalized_error(values<float>(t.grad_v), values<float>(m.grad_v)), 2e-5);
}

// Each task's arithmetic does not depend on which thread runs it: 1 and 3 threads agree bitwise. Equal results
// cannot tell whether a second thread ran, so the pool's count of the threads it ran besides the caller's must
// stay put for 1 thread and grow for 3.
TEST(Attention, ThreadCountDoesNotChangeResults) {
  Dims d;
  d.b = 2, d.l_q = 65, d.l_k = 65, d.h = 3, d.h_kv = 3, d.p = 16;
  const auto in = make_inputs<float>(d, 8);
  for (auto alg : {AttentionAlgorithm::materialized, AttentionAlgorithm::tiled}) {
    const std::int64_t before = ssm::cpu::worker_threads_run();
    const auto one = run(in, options(alg, 16, 16, 1));
    EXPECT_EQ(ssm::cpu::worker_threads_run(), before) << "1 thread requested, a second one ran";
    const auto three = run(in, options(alg, 16, 16, 3));
    EXPECT_GT(ssm::cpu::worker_threads_run(), before) << "3 threads requested, all the work ran on the caller's";
    EXPECT_EQ(one.out.to_vector<float>(), three.out.to_vector<float>());
    EXPECT_EQ(one.grad_q.to_vector<float>(), three.grad_q.to_vector<float>());
    EXPECT_EQ(one.grad_k.to_vector<float>(), three.grad_k.to_vector<float>());
  }
}

// Gradients against central finite differences of L = Σ out ⊙ W, in double, for the reference and both
// algorithms (so the oracle itself is checked). Step 1e-6: truncation error O(eps²·f''') ~ 1e-12 and
// rounding O(1e-16 / 1e-6) = 1e-10, so 1e-7 relative separates a right gradient from a wrong one.
TEST(Attention, GradientsMatchFiniteDifferences) {
  Dims d;
  d.b = 1, d.l_q = 7, d.l_k = 7, d.h = 4, d.h_kv = 2, d.p = 3;
  auto in = make_inputs<double>(d, 21);
  const auto loss = [&](const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v) {
    std::vector<double> out, lse;
    ssm::reference::attention_forward(d, q, k, v, out, lse);
    double L = 0;
    for (std::size_t i = 0; i < out.size(); ++i) L += out[i] * in.grad_out[i];
    return L;
  };
  std::vector<double> ref_q, ref_k, ref_v;
  ssm::reference::attention_backward(d, in.q, in.k, in.v, in.grad_out, ref_q, ref_k, ref_v);
  const double eps = 1e-6;
  auto fd = [&](std::vector<double>* x) {
    std::vector<double> g(x->size());
    for (std::size_t i = 0; i < x->size(); ++i) {
      const double x0 = (*x)[i];
      (*x)[i] = x0 + eps;
      const double up = loss(in.q, in.k, in.v);
      (*x)[i] = x0 - eps;
      const double down = loss(in.q, in.k, in.v);
      (*x)[i] = x0;
      g[i] = (up - down) / (2 * eps);
    }
    return g;
  };
  const auto fd_q = fd(&in.q), fd_k = fd(&in.k), fd_v = fd(&in.v);
  EXPECT_LE(normalized_error(ref_q, fd_q), 1e-7);
  EXPECT_LE(normalized_error(ref_k, fd_k), 1e-7);
  EXPECT_LE(normalized_error(ref_v, fd_v), 1e-7);
  for (auto alg : {AttentionAlgorithm::materialized, AttentionAlgorithm::tiled}) {
    const auto o = run(in, options(alg, 2, 3));
    EXPECT_LE(normalized_error(values<double>(o.grad_q), fd_q), 1e-7) << ssm::name(alg);
    EXPECT_LE(normalized_error(values<double>(o.grad_k), fd_k), 1e-7) << ssm::name(alg);
    EXPECT_LE(normalized_error(values<double>(o.grad_v), fd_v), 1e-7) << ssm::name(alg);
  }
}

// Token-by-token decoding with a KV cache (which grows from capacity 0 by doubling) reproduces the rows
// of the full causal forward; so does a prefill of several tokens followed by single steps.
TEST(Attention, KVCacheDecodeEqualsFullForward) {
  Dims d;
  d.b = 2, d.l_q = 37, d.l_k = 37, d.h = 4, d.h_kv = 2, d.p = 16;
  const auto in = make_inputs<float>(d, 31);
  const auto full = run(in, options(AttentionAlgorithm::tiled), false);
  const auto full_out = values<float>(full.out);  // (b, l, h, p)
  for (index_t prefill : {1, 5}) {
    ssm::KVCache cache(d.b, d.h_kv, d.p, DType::f32);
    Tensor decoded = Tensor::zeros({d.b, d.l_q, d.h, d.p}, DType::f32);  // (b, l, h, p)
    for (index_t t0 = 0; t0 < d.l_q;) {
      const index_t t = t0 == 0 ? prefill : 1;
      cache.append(in.tk.view().narrow(1, t0, t), in.tv.view().narrow(1, t0, t));
      ssm::attention_decode(in.tq.view().narrow(1, t0, t), cache, decoded.view().narrow(1, t0, t));
      t0 += t;
    }
    EXPECT_EQ(cache.length(), d.l_q);
    EXPECT_GE(cache.capacity(), d.l_q);
    // Same arithmetic up to the block boundaries of the online softmax: f32 rounding, ~10 ulps.
    EXPECT_LE(normalized_error(values<float>(decoded), full_out), 2e-6) << "prefill " << prefill;
    // Rewind to 20 tokens and decode the rest again as one block of 17 queries: same rows.
    cache.truncate(20);
    EXPECT_EQ(cache.length(), 20);
    cache.append(in.tk.view().narrow(1, 20, d.l_q - 20), in.tv.view().narrow(1, 20, d.l_q - 20));
    Tensor again = Tensor::zeros({d.b, d.l_q, d.h, d.p}, DType::f32);  // (b, l, h, p)
    ssm::attention_decode(in.tq.view().narrow(1, 20, d.l_q - 20), cache, again.view().narrow(1, 20, d.l_q - 20));
    const auto again_v = values<float>(again);
    double err = 0;
    for (std::size_t i = 0; i < again_v.size(); ++i)
      if ((i / static_cast<std::size_t>(d.h * d.p)) % static_cast<std::size_t>(d.l_q) >= 20)
        err = std::max(err, std::abs(again_v[i] - full_out[i]));
    EXPECT_LE(err, 2e-6);
    EXPECT_THROW(cache.truncate(d.l_q + 1), ssm::Error);
    EXPECT_THROW(cache.truncate(-1), ssm::Error);
  }
}

// q, k, v as column slices of one packed (b, l, 3h, p) projection output: strided views give the same
// results as contiguous copies.
TEST(Attention, StridedViewsEqualContiguous) {
  const index_t b = 2, l = 33, h = 3, p = 8;
  Tensor qkv = make<float>({b, l, 3 * h, p}, random_values(static_cast<std::size_t>(b * l * 3 * h * p), 5));
  const auto q = qkv.view().narrow(2, 0, h), k = qkv.view().narrow(2, h, h), v = qkv.view().narrow(2, 2 * h, h);
  for (auto alg : {AttentionAlgorithm::materialized, AttentionAlgorithm::tiled}) {
    const auto opt = options(alg, 8, 8);
    const auto strided = ssm::attention_forward(q, k, v, opt);
    Tensor qc = Tensor::empty(q.shape(), DType::f32), kc = Tensor::empty(k.shape(), DType::f32),
           vc = Tensor::empty(v.shape(), DType::f32);
    ssm::copy(qc, q), ssm::copy(kc, k), ssm::copy(vc, v);
    const auto contiguous = ssm::attention_forward(qc, kc, vc, opt);
    EXPECT_EQ(strided.out.to_vector<float>(), contiguous.out.to_vector<float>()) << ssm::name(alg);
  }
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const ssm::Error& e) {
    return e.what();
  }
  return "";
}

TEST(Attention, BadArgumentsThrowNamingTheArgument) {
  const Tensor q = Tensor::zeros({1, 4, 4, 8}, DType::f32), k = Tensor::zeros({1, 4, 2, 8}, DType::f32);
  const auto has = [](const std::string& msg, const std::string& part) {
    return msg.find(part) != std::string::npos;
  };
  // rank
  EXPECT_TRUE(has(error_of([&] { ssm::attention_forward(Tensor::zeros({4, 4, 8}, DType::f32), k, k); }), "'q'"));
  // kv heads must divide the query heads
  EXPECT_TRUE(has(error_of([&] { ssm::attention_forward(q, Tensor::zeros({1, 4, 3, 8}, DType::f32),
                                                        Tensor::zeros({1, 4, 3, 8}, DType::f32)); }), "divide"));
  // head dimension and batch of k
  EXPECT_TRUE(has(error_of([&] { ssm::attention_forward(q, Tensor::zeros({1, 4, 2, 7}, DType::f32), k); }), "'k'"));
  EXPECT_TRUE(has(error_of([&] { ssm::attention_forward(q, Tensor::zeros({2, 4, 2, 8}, DType::f32), k); }), "'k'"));
  // v must match k
  EXPECT_TRUE(has(error_of([&] { ssm::attention_forward(q, k, Tensor::zeros({1, 5, 2, 8}, DType::f32)); }), "'v'"));
  // dtypes: mixed, and unsupported
  EXPECT_TRUE(has(error_of([&] { ssm::attention_forward(q, k, Tensor::zeros({1, 4, 2, 8}, DType::f64)); }), "'v'"));
  EXPECT_TRUE(has(error_of([&] {
                    ssm::attention_forward(Tensor::zeros({1, 4, 4, 8}, DType::f16), Tensor::zeros({1, 4, 2, 8}, DType::f16),
                                           Tensor::zeros({1, 4, 2, 8}, DType::f16));
                  }), "f16"));
  // causal needs l_k >= l_q
  EXPECT_TRUE(has(error_of([&] { ssm::attention_forward(q, k.view().narrow(1, 0, 3), k.view().narrow(1, 0, 3)); }),
                  "causal"));
  // no keys at all
  AttentionOptions non_causal;
  non_causal.causal = false;
  EXPECT_TRUE(has(error_of([&] { ssm::attention_forward(q, k.view().narrow(1, 0, 0), k.view().narrow(1, 0, 0), non_causal); }),
                  "at least one key"));
  // p not unit-stride
  Tensor wide = Tensor::zeros({1, 4, 2, 16}, DType::f32);
  const ssm::TensorView strided_k(wide.data(), DType::f32, ssm::Device::cpu(), {1, 4, 2, 8}, {128, 32, 16, 2});
  EXPECT_TRUE(has(error_of([&] { ssm::attention_forward(q, strided_k, k); }), "stride"));
  // hyperparameters
  AttentionOptions bad;
  bad.scale = std::nan("");
  EXPECT_TRUE(has(error_of([&] { ssm::attention_forward(q, k, k, bad); }), "scale"));
  bad = {};
  bad.block_q = 0;
  EXPECT_TRUE(has(error_of([&] { ssm::attention_forward(q, k, k, bad); }), "block_q"));
  bad = {};
  bad.n_threads = -1;
  EXPECT_TRUE(has(error_of([&] { ssm::attention_forward(q, k, k, bad); }), "n_threads"));
  // outputs of the wrong shape
  Tensor lse = Tensor::zeros({1, 4, 4}, DType::f32);
  EXPECT_TRUE(has(error_of([&] { ssm::attention_forward(q, k, k, Tensor::zeros({1, 4, 4, 7}, DType::f32), lse); }),
                  "'out'"));
  EXPECT_TRUE(has(error_of([&] { ssm::attention_forward(q, k, k, q, Tensor::zeros({1, 4, 5}, DType::f32)); }),
                  "'lse'"));
  // backward: gradient shapes
  Tensor out = Tensor::zeros(q.shape(), DType::f32), gq = Tensor::zeros(q.shape(), DType::f32);
  Tensor gk = Tensor::zeros(k.shape(), DType::f32);
  EXPECT_TRUE(has(error_of([&] { ssm::attention_backward(q, k, k, out, lse, out, gq, gk, q); }), "'grad_v'"));
  EXPECT_TRUE(has(error_of([&] { ssm::attention_backward(q, k, k, out, lse, gk, gq, gk, gk); }), "'grad_out'"));
  // KV cache
  ssm::KVCache cache(1, 2, 8);
  EXPECT_TRUE(has(error_of([&] { cache.append(Tensor::zeros({1, 1, 3, 8}, DType::f32), Tensor::zeros({1, 1, 3, 8}, DType::f32)); }),
                  "'k_new'"));
  EXPECT_TRUE(has(error_of([&] { cache.append(k, Tensor::zeros({1, 3, 2, 8}, DType::f32)); }), "'v_new'"));
  EXPECT_TRUE(has(error_of([&] { ssm::attention_decode(q.view().narrow(1, 0, 1), cache, out.view().narrow(1, 0, 1)); }),
                  "append"));
  EXPECT_TRUE(has(error_of([&] { ssm::KVCache(1, 0, 8); }), "h_kv"));
}

}  // namespace
