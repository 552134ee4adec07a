// The dense ops layers are made of: linear, rms_norm (with its fused residual add), layer_norm, rotary, embedding,
// and the one-token selective state update. Each fast CPU path against its reference (plain loops in double) on awkward shapes:
// one row and many, widths that are not a multiple of the vector width, strided rows, 16-bit weights, thread
// counts; the CUDA dispatch through the backend table; every bad argument named in the error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "ssm/ops/embedding.hpp"
#include "ssm/ops/layer_norm.hpp"
#include "ssm/ops/linear.hpp"
#include "ssm/ops/rms_norm.hpp"
#include "ssm/ops/rotary.hpp"
#include "ssm/ops/selective_scan.hpp"
#include "ssm/ops/selective_state_update.hpp"
#include "ssm/ops/ssd.hpp"
#include "support/golden.hpp"

namespace {

using ssm::DType;
using ssm::Tensor;
using ssm::TensorView;
using ssm::index_t;

template <class T>
std::vector<T> randn(std::size_t n, std::uint64_t seed, double scale = 1.0) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> N(0.0, scale);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(N(g));
  return v;
}

using ssm::test::expect_error;

/// A (rows, cols) view into a buffer of row stride ld >= cols, the padding filled with NaN so that a write
/// outside the view or a read of it shows.
template <class T>
struct Strided {
  std::vector<T> buf;
  index_t rows, cols, ld;
  Strided(index_t r, index_t c, index_t pad) : buf(static_cast<std::size_t>(r * (c + pad)), std::numeric_limits<T>::quiet_NaN()), rows(r), cols(c), ld(c + pad) {}
  TensorView view() { return TensorView(buf.data(), ssm::dtype_of<T>(), ssm::Device::cpu(), {rows, cols}, {ld, 1}); }
  T& at(index_t i, index_t j) { return buf[static_cast<std::size_t>(i * ld + j)]; }
  bool padding_untouched() const {
    for (index_t i = 0; i < rows; ++i)
      for (index_t j = cols; j < ld; ++j)
        if (!std::isnan(static_cast<double>(buf[static_cast<std::size_t>(i * ld + j)]))) return false;
    return true;
  }
};

// ---- linear ----------------------------------------------------------------------------------------------------

/// The weights in `dtype` (f32 x) or f64, from f64 values (rounded once); also their values as the op reads them.
Tensor weight_tensor(const std::vector<double>& w, index_t out, index_t in, DType dtype) {
  Tensor t = Tensor::empty({out, in}, dtype);
  for (std::size_t i = 0; i < w.size(); ++i) ssm::reference::store_real(t.data(), dtype, static_cast<std::int64_t>(i), w[i]);
  return t;
}

template <class T>
void check_linear_case(index_t rows, index_t in, index_t out, DType wdt, bool bias, int threads, index_t pad) {
  SCOPED_TRACE(::testing::Message() << "rows " << rows << " in " << in << " out " << out << " W " << ssm::name(wdt)
                                    << " bias " << bias << " threads " << threads << " pad " << pad);
  const auto wv = randn<double>(static_cast<std::size_t>(out * in), 1 + rows + 7 * in + 13 * out, 0.5);
  const Tensor W = weight_tensor(wv, out, in, wdt);
  const auto bv = randn<T>(static_cast<std::size_t>(out), 3 + out);
  Strided<T> x(rows, in, pad);
  const auto xv = randn<T>(static_cast<std::size_t>(rows * in), 5 + rows * in);
  for (index_t i = 0; i < rows; ++i)
    for (index_t k = 0; k < in; ++k) x.at(i, k) = xv[static_cast<std::size_t>(i * in + k)];
  ssm::LinearInputs li;
  li.x = x.view();
  li.weight = W;
  if (bias) li.bias = TensorView::of(bv.data(), {out});
  Strided<T> fast(rows, out, pad), ref(rows, out, pad);
  ssm::LinearOptions opt;
  opt.num_threads = threads;
  const std::string path = ssm::linear_into(li, fast.view(), opt);
  if (wdt == DType::f16 || wdt == DType::bf16)
    EXPECT_EQ(path, std::string(rows < ssm::cpu::kLinearPanelRows ? "cpu-gemv-" : "cpu-panel-") + std::string(ssm::name(wdt)));
  else
    EXPECT_EQ(path, "cpu-eigen");
  opt.path = ssm::LinearPath::reference;
  EXPECT_EQ(ssm::linear_into(li, ref.view(), opt), "reference");
  EXPECT_TRUE(fast.padding_untouched());
  // Error bound of a sum of `in` products accumulated in T: a few ulp of Σ|x_k w_k| (+ |bias|).
  const double eps = std::is_same_v<T, double> ? 1e-15 : 1e-6;
  for (index_t i = 0; i < rows; ++i)
    for (index_t j = 0; j < out; ++j) {
      double mag = bias ? std::abs(double(bv[static_cast<std::size_t>(j)])) : 0.0;
      for (index_t k = 0; k < in; ++k)
        mag += std::abs(double(x.at(i, k)) * ssm::reference::load_real(W.data(), wdt, j * in + k));
      ASSERT_NEAR(double(fast.at(i, j)), double(ref.at(i, j)), 4 * eps * (mag + 1) * std::sqrt(double(in) + 1))
          << "at (" << i << ", " << j << ")";
    }
}

TEST(Linear, FastPathsMatchTheReferenceOnAwkwardShapes) {
  for (index_t rows : {1, 2, 3, 7, 8, 9, 33})
    for (index_t in : {1, 5, 16, 17, 63})
      for (index_t out : {1, 3, 16, 17, 41}) {
        const bool bias = (rows + in + out) % 2 == 0;
        const int threads = out > 16 ? 3 : 1;
        const index_t pad = rows % 3;
        check_linear_case<float>(rows, in, out, DType::f32, bias, threads, pad);
        check_linear_case<float>(rows, in, out, DType::bf16, !bias, threads, pad);
        check_linear_case<float>(rows, in, out, DType::f16, bias, 1, pad);
        check_linear_case<double>(rows, in, out, DType::f64, bias, threads, pad);
      }
}

TEST(Linear, HalfPrecisionWeightsSpanningSeveralPanelsMatchTheReference) {
  // Prefill converts W in panels of panel_features(in) output features: here three, the last one partial, on one
  // thread and split over two (each thread's share starts its own panels).
  const index_t in = 4096, pw = ssm::cpu::linear_detail::panel_features(in);
  ASSERT_EQ(pw, 64);
  for (int threads : {1, 2}) {
    check_linear_case<float>(9, in, 2 * pw + 22, DType::bf16, true, threads, 1);
    check_linear_case<float>(8, in, 2 * pw + 22, DType::f16, false, threads, 0);
  }
}

TEST(Linear, LargerProductsOverThreadsMatchOneThread) {
  // The output features split into blocks over the threads. Eigen's blocking of the sum over `in` depends on the
  // width of a block, so the split changes the rounding, never more.
  const index_t rows = 20, in = 96, out = 200;
  for (DType wdt : {DType::f32, DType::bf16}) {
    const auto wv = randn<double>(static_cast<std::size_t>(out * in), 11);
    const Tensor W = weight_tensor(wv, out, in, wdt);
    const auto xv = randn<float>(static_cast<std::size_t>(rows * in), 12);
    ssm::LinearInputs li{TensorView::of(xv.data(), {rows, in}), W, std::nullopt};
    ssm::LinearOptions one, four;
    four.num_threads = 4;
    const Tensor a = ssm::linear(li, one);
    const std::int64_t workers_before = ssm::cpu::worker_threads_run();
    const Tensor b = ssm::linear(li, four);
    EXPECT_GT(ssm::cpu::worker_threads_run(), workers_before) << "no second thread ran";
    const auto av = a.to_vector<float>(), bv = b.to_vector<float>();
    for (std::size_t i = 0; i < av.size(); ++i) ASSERT_NEAR(av[i], bv[i], 1e-5 * (1 + std::abs(av[i]))) << i;
  }
}

TEST(Linear, BadArgumentsAreNamed) {
  std::vector<float> x(6), w(6), b(3), y(9);
  std::vector<double> xd(6);
  auto in = [&] { return ssm::LinearInputs{TensorView::of(x.data(), {2, 3}), TensorView::of(w.data(), {2, 3}), std::nullopt}; };
  const TensorView y22 = TensorView::of(y.data(), {2, 2});
  expect_error([&] { auto i = in(); i.x = TensorView::of(x.data(), {6}); ssm::linear_into(i, y22); }, "linear: argument 'x': expected rank 2");
  expect_error([&] { auto i = in(); i.weight = TensorView::of(w.data(), {3, 2}); ssm::linear_into(i, TensorView::of(y.data(), {2, 3})); }, "argument 'weight': expected shape (*, 3)");
  expect_error([&] { auto i = in(); i.bias = TensorView::of(b.data(), {3}); ssm::linear_into(i, y22); }, "argument 'bias': expected shape (2)");
  expect_error([&] { auto i = in(); i.x = TensorView::of(xd.data(), {2, 3}); ssm::linear_into(i, y22); }, "argument 'weight': expected dtype f64");
  expect_error([&] { ssm::linear_into(in(), TensorView::of(y.data(), {2, 3})); }, "argument 'y': expected shape (2, 2)");
  expect_error([&] { auto i = in(); i.x = TensorView(x.data(), DType::f32, ssm::Device::cpu(), {2, 3}, {1, 2}); ssm::linear_into(i, y22); }, "argument 'x': expected stride 1 in dimension 1");
  expect_error([&] { auto i = in(); i.weight = TensorView(w.data(), DType::f32, ssm::Device::cpu(), {2, 3}, {1, 2}); ssm::linear_into(i, y22); }, "argument 'weight': expected a contiguous tensor");
  expect_error([&] { ssm::LinearOptions o; o.num_threads = -1; ssm::linear_into(in(), y22, o); }, "argument 'num_threads'");
  std::vector<std::int32_t> wi(6);
  expect_error([&] { auto i = in(); i.weight = TensorView::of(wi.data(), {2, 3}); ssm::linear_into(i, y22); }, "argument 'weight': expected dtype in {f32, f16, bf16}, got i32");
}

// ---- rms_norm --------------------------------------------------------------------------------------------------

template <class T>
void check_rms_norm_case(index_t rows, index_t dim, bool weight, bool residual, index_t pad, bool in_place) {
  SCOPED_TRACE(::testing::Message() << "rows " << rows << " dim " << dim << " weight " << weight << " residual "
                                    << residual << " pad " << pad << " in place " << in_place);
  const auto xv = randn<T>(static_cast<std::size_t>(rows * dim), 21 + rows * dim, 2.0);
  const auto rv = randn<T>(static_cast<std::size_t>(rows * dim), 22 + rows * dim);
  const auto wv = randn<T>(static_cast<std::size_t>(dim), 23 + dim);
  Strided<T> x_fast(rows, dim, pad), x_ref(rows, dim, pad), r_fast(rows, dim, pad), r_ref(rows, dim, pad);
  for (index_t i = 0; i < rows; ++i)
    for (index_t k = 0; k < dim; ++k) {
      x_fast.at(i, k) = x_ref.at(i, k) = xv[static_cast<std::size_t>(i * dim + k)];
      r_fast.at(i, k) = r_ref.at(i, k) = rv[static_cast<std::size_t>(i * dim + k)];
    }
  Strided<T> y_fast(rows, dim, pad), y_ref(rows, dim, pad);
  auto inputs = [&](Strided<T>& x, Strided<T>& r) {
    ssm::RmsNormInputs in;
    in.x = x.view();
    if (weight) in.weight = TensorView::of(wv.data(), {dim});
    if (residual) in.residual = r.view();
    in.eps = 1e-5;
    return in;
  };
  EXPECT_EQ(ssm::rms_norm_into(inputs(x_fast, r_fast), in_place ? x_fast.view() : y_fast.view()), "cpu");
  EXPECT_EQ(ssm::rms_norm_into(inputs(x_ref, r_ref), y_ref.view(), ssm::RmsNormPath::reference), "reference");
  Strided<T>& out = in_place ? x_fast : y_fast;
  const double tol = std::is_same_v<T, double> ? 1e-13 : 2e-6 * std::sqrt(double(dim));
  for (index_t i = 0; i < rows; ++i)
    for (index_t k = 0; k < dim; ++k) {
      const double scale = weight ? std::abs(double(wv[static_cast<std::size_t>(k)])) + 1 : 1.0;
      ASSERT_NEAR(double(out.at(i, k)), double(y_ref.at(i, k)), tol * scale) << i << ", " << k;
      if (residual) {
        ASSERT_EQ(r_fast.at(i, k), r_ref.at(i, k)) << "residual at " << i << ", " << k;  // one rounded add each
        ASSERT_EQ(r_fast.at(i, k), static_cast<T>(xv[static_cast<std::size_t>(i * dim + k)] + rv[static_cast<std::size_t>(i * dim + k)]));
      }
    }
  EXPECT_TRUE(out.padding_untouched());
  EXPECT_TRUE(r_fast.padding_untouched());
}

TEST(RmsNorm, CpuMatchesTheReference) {
  for (index_t rows : {1, 2, 5})
    for (index_t dim : {1, 7, 16, 33})
      for (int mask = 0; mask < 8; ++mask) {
        const bool weight = mask & 1, residual = mask & 2, in_place = mask & 4;
        check_rms_norm_case<float>(rows, dim, weight, residual, dim % 3, in_place);
        check_rms_norm_case<double>(rows, dim, weight, residual, 1, in_place);
      }
}

TEST(RmsNorm, NormalizesToUnitRootMeanSquare) {
  // An independent check of the formula: without weight the output rows have mean(y²) = ms / (ms + eps).
  const index_t rows = 3, dim = 10;
  auto x = randn<double>(rows * dim, 31, 3.0);
  const Tensor y = ssm::rms_norm({TensorView::of(x.data(), {rows, dim}), std::nullopt, std::nullopt, 1e-3});
  for (index_t i = 0; i < rows; ++i) {
    double ms = 0, my = 0;
    for (index_t k = 0; k < dim; ++k) {
      ms += x[static_cast<std::size_t>(i * dim + k)] * x[static_cast<std::size_t>(i * dim + k)] / dim;
      my += y.data_as<double>()[i * dim + k] * y.data_as<double>()[i * dim + k] / dim;
    }
    EXPECT_NEAR(my, ms / (ms + 1e-3), 1e-12);
  }
}

TEST(RmsNorm, BadArgumentsAreNamed) {
  std::vector<float> x(6), w(3), r(6), y(6);
  std::vector<double> wd(3);
  auto in = [&] { return ssm::RmsNormInputs{TensorView::of(x.data(), {2, 3}), std::nullopt, std::nullopt, 1e-5}; };
  const TensorView yv = TensorView::of(y.data(), {2, 3});
  expect_error([&] { auto i = in(); i.eps = 0; ssm::rms_norm_into(i, yv); }, "rms_norm: argument 'eps': must be finite and > 0");
  expect_error([&] { auto i = in(); i.weight = TensorView::of(w.data(), {2}); ssm::rms_norm_into(i, yv); }, "argument 'weight': expected shape (3)");
  expect_error([&] { auto i = in(); i.weight = TensorView::of(wd.data(), {3}); ssm::rms_norm_into(i, yv); }, "argument 'weight': expected dtype f32");
  expect_error([&] { auto i = in(); i.residual = TensorView::of(r.data(), {3, 2}); ssm::rms_norm_into(i, yv); }, "argument 'residual': expected shape (2, 3)");
  expect_error([&] { auto i = in(); i.residual = i.x; ssm::rms_norm_into(i, yv); }, "argument 'residual': must not be x itself");
  expect_error([&] { ssm::rms_norm_into(in(), TensorView::of(y.data(), {3, 2})); }, "argument 'y': expected shape (2, 3)");
  expect_error([&] { auto i = in(); i.x = TensorView::of(x.data(), {6}); ssm::rms_norm_into(i, yv); }, "argument 'x': expected rank 2");
}

// ---- layer_norm, rotary (the conformance registry compares their CPU paths with their references) ----------------

TEST(LayerNorm, RowsHaveMeanZeroAndTheExpectedVariance) {
  // An independent check of the formula: without weight and bias a row has mean 0 and mean(y²) = var / (var + eps);
  // with them, y = w ⊙ (that row) + b.
  const index_t rows = 3, dim = 10;
  auto x = randn<double>(rows * dim, 33, 3.0);
  const auto w = randn<double>(dim, 34), b = randn<double>(dim, 35);
  const TensorView xv = TensorView::of(x.data(), {rows, dim});
  const Tensor y = ssm::layer_norm({xv, std::nullopt, std::nullopt, 1e-3});
  const Tensor yw = ssm::layer_norm({xv, TensorView::of(w.data(), {dim}), TensorView::of(b.data(), {dim}), 1e-3});
  for (index_t i = 0; i < rows; ++i) {
    double mean = 0, var = 0, my = 0, m1 = 0;
    for (index_t k = 0; k < dim; ++k) mean += x[static_cast<std::size_t>(i * dim + k)] / dim;
    for (index_t k = 0; k < dim; ++k) {
      const double yk = y.data_as<double>()[i * dim + k];
      var += std::pow(x[static_cast<std::size_t>(i * dim + k)] - mean, 2) / dim;
      m1 += yk / dim, my += yk * yk / dim;
      EXPECT_NEAR(yw.data_as<double>()[i * dim + k], w[static_cast<std::size_t>(k)] * yk + b[static_cast<std::size_t>(k)],
                  1e-12);
    }
    EXPECT_NEAR(m1, 0.0, 1e-12);
    EXPECT_NEAR(my, var / (var + 1e-3), 1e-12);
  }
}

TEST(LayerNorm, BadArgumentsAreNamed) {
  std::vector<float> x(6), w(3), y(6);
  std::vector<double> bd(3);
  auto in = [&] { return ssm::LayerNormInputs{TensorView::of(x.data(), {2, 3}), std::nullopt, std::nullopt, 1e-5}; };
  const TensorView yv = TensorView::of(y.data(), {2, 3});
  expect_error([&] { auto i = in(); i.eps = std::numeric_limits<double>::quiet_NaN(); ssm::layer_norm_into(i, yv); },
               "layer_norm: argument 'eps': must be finite and > 0");
  expect_error([&] { auto i = in(); i.weight = TensorView::of(w.data(), {2}); ssm::layer_norm_into(i, yv); },
               "argument 'weight': expected shape (3)");
  expect_error([&] { auto i = in(); i.bias = TensorView::of(bd.data(), {3}); ssm::layer_norm_into(i, yv); },
               "argument 'bias': expected dtype f32");
  expect_error([&] { ssm::layer_norm_into(in(), TensorView::of(y.data(), {3, 2})); }, "argument 'y': expected shape (2, 3)");
  expect_error([&] { auto i = in(); i.x = TensorView::of(x.data(), {6}); ssm::layer_norm_into(i, yv); },
               "argument 'x': expected rank 2");
}

TEST(Rotary, RotatesPairsSoThatScoresDependOnlyOnTheOffset) {
  // Independent checks: position 0 is the identity; each pair keeps its length; and ⟨R_p q, R_p' k⟩ depends only on
  // p − p' (the property RoPE is built for), for interleaved and split pairs.
  const index_t l = 9, d = 8;
  const auto q = randn<double>(d, 36), k = randn<double>(d, 37);
  std::vector<double> qs(static_cast<std::size_t>(l * d)), ks(qs.size());
  for (index_t t = 0; t < l; ++t)
    for (index_t j = 0; j < d; ++j)
      qs[static_cast<std::size_t>(t * d + j)] = q[static_cast<std::size_t>(j)],
      ks[static_cast<std::size_t>(t * d + j)] = k[static_cast<std::size_t>(j)];
  for (bool interleaved : {true, false}) {
    ssm::RotaryOptions o;
    o.interleaved = interleaved;
    const Tensor rq = ssm::rotary(TensorView::of(qs.data(), {1, l, 1, d}), o);
    const Tensor rk = ssm::rotary(TensorView::of(ks.data(), {1, l, 1, d}), o);
    auto at = [&](const Tensor& t, index_t p, index_t j) { return t.data_as<double>()[p * d + j]; };
    for (index_t j = 0; j < d; ++j) EXPECT_EQ(at(rq, 0, j), q[static_cast<std::size_t>(j)]);
    for (index_t p = 0; p < l; ++p)
      for (index_t i = 0; i < d / 2; ++i) {
        const index_t a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + d / 2;
        EXPECT_NEAR(std::hypot(at(rq, p, a), at(rq, p, b)),
                    std::hypot(q[static_cast<std::size_t>(a)], q[static_cast<std::size_t>(b)]), 1e-12);
      }
    auto score = [&](index_t p, index_t pk) {
      double s = 0;
      for (index_t j = 0; j < d; ++j) s += at(rq, p, j) * at(rk, pk, j);
      return s;
    };
    EXPECT_NEAR(score(5, 2), score(4, 1), 1e-12);
    EXPECT_NEAR(score(8, 3), score(5, 0), 1e-12);
    EXPECT_GT(std::abs(score(5, 2) - score(5, 3)), 1e-6);  // and it does depend on the offset
  }
}

// The inverse rotation undoes the rotation (Rᵀ R = I), and is the rotation's adjoint: ⟨R x, y⟩ = ⟨x, Rᵀ y⟩, so it is
// the backward; with an offset and a period (TTT's positions), interleaved and split pairs.
TEST(Rotary, TheInverseIsTheTransposeAndUndoesTheRotation) {
  const index_t b = 2, l = 11, h = 3, d = 6, n = b * l * h * d;
  const auto x = randn<double>(static_cast<std::size_t>(n), 40), y = randn<double>(static_cast<std::size_t>(n), 41);
  for (bool interleaved : {true, false}) {
    ssm::RotaryOptions o;
    o.interleaved = interleaved, o.position_offset = 3, o.period = 5;
    const Tensor rx = ssm::rotary(TensorView::of(x.data(), {b, l, h, d}), o);
    ssm::RotaryOptions inv = o;
    inv.inverse = true;
    const Tensor back = ssm::rotary(rx, inv);
    const Tensor ty = ssm::rotary(TensorView::of(y.data(), {b, l, h, d}), inv);
    double lhs = 0, rhs = 0, err = 0;
    for (index_t i = 0; i < n; ++i) {
      lhs += rx.data_as<double>()[i] * y[static_cast<std::size_t>(i)];
      rhs += x[static_cast<std::size_t>(i)] * ty.data_as<double>()[i];
      err = std::max(err, std::abs(back.data_as<double>()[i] - x[static_cast<std::size_t>(i)]));
    }
    EXPECT_LT(err, 1e-14);
    EXPECT_NEAR(lhs, rhs, 1e-12 * std::abs(lhs));
    EXPECT_GT(std::abs(rx.data_as<double>()[d] - x[static_cast<std::size_t>(d)]), 1e-3);  // it did rotate
  }
}

TEST(Rotary, BadArgumentsAreNamed) {
  std::vector<float> x(2 * 3 * 4), y(x.size());
  std::vector<double> yd(x.size());
  const TensorView xv = TensorView::of(x.data(), {1, 2, 3, 4});
  expect_error([&] { ssm::rotary_into(TensorView::of(x.data(), {1, 2, 4, 3}), TensorView::of(y.data(), {1, 2, 4, 3})); },
               "rotary: argument 'x': expected an even last dimension");
  expect_error([&] { ssm::rotary_into(xv, TensorView::of(yd.data(), {1, 2, 3, 4})); }, "argument 'y'");
  expect_error([&] { ssm::rotary_into(xv, TensorView::of(y.data(), {1, 3, 2, 4})); }, "argument 'y'");
  expect_error([&] { ssm::rotary_into(TensorView::of(x.data(), {2, 3, 4}), TensorView::of(y.data(), {2, 3, 4})); },
               "argument 'x': expected rank 4");
  ssm::RotaryOptions o;
  o.base = 1;
  expect_error([&] { ssm::rotary_into(xv, TensorView::of(y.data(), {1, 2, 3, 4}), o); }, "argument 'base'");
  o = {}, o.period = -1;
  expect_error([&] { ssm::rotary_into(xv, TensorView::of(y.data(), {1, 2, 3, 4}), o); }, "argument 'period'");
  o = {}, o.position_offset = -2;
  expect_error([&] { ssm::rotary_into(xv, TensorView::of(y.data(), {1, 2, 3, 4}), o); }, "argument 'position_offset'");
}

// ---- embedding -------------------------------------------------------------------------------------------------

template <class Id>
void check_embedding_case(DType table_dtype, index_t vocab, index_t dim, std::vector<Id> ids) {
  SCOPED_TRACE(::testing::Message() << ssm::name(table_dtype) << " vocab " << vocab << " dim " << dim);
  const auto tv = randn<double>(static_cast<std::size_t>(vocab * dim), 41 + vocab * dim);
  const Tensor table = weight_tensor(tv, vocab, dim, table_dtype);
  const TensorView idv = TensorView::of(ids.data(), {static_cast<index_t>(ids.size())});
  const Tensor fast = ssm::embedding(idv, table), ref = ssm::embedding(idv, table, ssm::EmbeddingPath::reference);
  ASSERT_EQ(fast.dtype(), ssm::compute_dtype(table_dtype));
  ASSERT_EQ(fast.shape(), (ssm::Dims{static_cast<index_t>(ids.size()), dim}));
  // Exact: a 16-bit value converts to f32 exactly, and a copy is a copy.
  for (index_t r = 0; r < fast.size(0); ++r)
    for (index_t k = 0; k < dim; ++k) {
      const double want = ssm::reference::load_real(table.data(), table_dtype, ids[static_cast<std::size_t>(r)] * dim + k);
      ASSERT_EQ(ssm::reference::load_real(fast.data(), fast.dtype(), r * dim + k), want);
      ASSERT_EQ(ssm::reference::load_real(ref.data(), ref.dtype(), r * dim + k), want);
    }
}

TEST(Embedding, RowsOfTheTableInEveryDtype) {
  for (DType t : {DType::f32, DType::f64, DType::f16, DType::bf16})
    for (index_t dim : {1, 17, 64}) {
      check_embedding_case<std::int64_t>(t, 9, dim, {0, 8, 3, 3, 5});
      check_embedding_case<std::int32_t>(t, 9, dim, {8});
      check_embedding_case<std::int32_t>(t, 9, dim, {});
    }
}

TEST(Embedding, BadArgumentsAreNamed) {
  std::vector<float> table(12), y(8);
  std::vector<std::int64_t> ids{0, 3};
  std::vector<std::int64_t> bad{1, 4}, neg{-1, 0};
  std::vector<float> fids(2);
  const TensorView tv = TensorView::of(table.data(), {4, 3});
  expect_error([&] { ssm::embedding(TensorView::of(bad.data(), {2}), tv); }, "embedding: argument 'ids': token id 4 at position 1 is outside [0, 4)");
  expect_error([&] { ssm::embedding(TensorView::of(neg.data(), {2}), tv); }, "argument 'ids': token id -1 at position 0");
  expect_error([&] { ssm::embedding(TensorView::of(fids.data(), {2}), tv); }, "argument 'ids': expected dtype in {i32, i64}, got f32");
  expect_error([&] { ssm::embedding(TensorView::of(ids.data(), {2}), TensorView::of(table.data(), {12})); }, "argument 'table': expected rank 2");
  expect_error([&] { ssm::embedding_into(TensorView::of(ids.data(), {2}), tv, TensorView::of(y.data(), {2, 4})); }, "argument 'y': expected shape (2, 3)");
}

// ---- selective_state_update ------------------------------------------------------------------------------------

struct SsuCase {
  index_t b, d, n;
  bool D, z, bias, softplus;
};

template <class T>
void check_ssu_case(const SsuCase& s) {
  SCOPED_TRACE(::testing::Message() << "b " << s.b << " d " << s.d << " n " << s.n << " D " << s.D << " z " << s.z
                                    << " bias " << s.bias << " softplus " << s.softplus);
  const index_t b = s.b, d = s.d, n = s.n;
  // x and z are the two halves of one (b, 2d) buffer and B, C columns of one (b, 2n + 1) buffer, as in the block.
  const auto xz = randn<T>(static_cast<std::size_t>(b * 2 * d), 51 + b * d);
  const auto bc = randn<T>(static_cast<std::size_t>(b * (2 * n + 1)), 52 + b * n);
  auto dt = randn<T>(static_cast<std::size_t>(b * d), 53 + d, 0.5);
  if (!s.softplus)
    for (auto& v : dt) v = std::abs(v) + T(0.01);  // Δ itself: positive
  auto A = randn<T>(static_cast<std::size_t>(d * n), 54 + d * n);
  for (auto& a : A) a = -std::abs(a) - T(0.1);
  const auto D = randn<T>(static_cast<std::size_t>(d), 55);
  const auto bias = randn<T>(static_cast<std::size_t>(d), 56, 0.3);
  const auto h0 = randn<T>(static_cast<std::size_t>(b * d * n), 57);
  const DType dt_ = ssm::dtype_of<T>();
  const ssm::Device cpu = ssm::Device::cpu();
  std::vector<T> h_fast = h0, h_ref = h0, out_fast(static_cast<std::size_t>(b * d)), out_ref(out_fast.size());
  auto inputs = [&](std::vector<T>& h) {
    ssm::SelectiveStateUpdateInputs in;
    in.state = TensorView::of(h.data(), {b, d, n});
    in.x = TensorView(const_cast<T*>(xz.data()), dt_, cpu, {b, d}, {2 * d, 1});
    in.dt = TensorView::of(dt.data(), {b, d});
    in.A = TensorView::of(A.data(), {d, n});
    in.B = TensorView(const_cast<T*>(bc.data()) + 1, dt_, cpu, {b, n}, {2 * n + 1, 1});
    in.C = TensorView(const_cast<T*>(bc.data()) + 1 + n, dt_, cpu, {b, n}, {2 * n + 1, 1});
    if (s.D) in.D = TensorView::of(D.data(), {d});
    if (s.z) in.z = TensorView(const_cast<T*>(xz.data()) + d, dt_, cpu, {b, d}, {2 * d, 1});
    if (s.bias) in.dt_bias = TensorView::of(bias.data(), {d});
    in.dt_softplus = s.softplus;
    return in;
  };
  EXPECT_EQ(ssm::selective_state_update(inputs(h_fast), TensorView::of(out_fast.data(), {b, d})), "cpu");
  EXPECT_EQ(ssm::selective_state_update(inputs(h_ref), TensorView::of(out_ref.data(), {b, d}),
                                        ssm::StateUpdatePath::reference),
            "reference");
  const double tol = std::is_same_v<T, double> ? 1e-12 : 2e-5;
  for (std::size_t i = 0; i < h_fast.size(); ++i) ASSERT_NEAR(h_fast[i], h_ref[i], tol * (1 + std::abs(h_ref[i]))) << "h " << i;
  for (std::size_t i = 0; i < out_fast.size(); ++i) ASSERT_NEAR(out_fast[i], out_ref[i], tol * (1 + std::abs(out_ref[i]))) << "out " << i;

  // The same update as the selective scan op's reference over a sequence of one token (an independent oracle).
  ssm::SelectiveScanInputs si;
  std::vector<T> u(static_cast<std::size_t>(b * d)), zz(u.size()), Bv(static_cast<std::size_t>(b * n)), Cv(Bv.size());
  for (index_t bi = 0; bi < b; ++bi) {
    for (index_t c = 0; c < d; ++c) {
      u[static_cast<std::size_t>(bi * d + c)] = xz[static_cast<std::size_t>(bi * 2 * d + c)];
      zz[static_cast<std::size_t>(bi * d + c)] = xz[static_cast<std::size_t>(bi * 2 * d + d + c)];
    }
    for (index_t k = 0; k < n; ++k) {
      Bv[static_cast<std::size_t>(bi * n + k)] = bc[static_cast<std::size_t>(bi * (2 * n + 1) + 1 + k)];
      Cv[static_cast<std::size_t>(bi * n + k)] = bc[static_cast<std::size_t>(bi * (2 * n + 1) + 1 + n + k)];
    }
  }
  si.u = TensorView::of(u.data(), {b, d, 1});
  si.delta = TensorView::of(dt.data(), {b, d, 1});
  si.A = TensorView::of(A.data(), {d, n});
  si.B = TensorView::of(Bv.data(), {b, n, 1});
  si.C = TensorView::of(Cv.data(), {b, n, 1});
  if (s.D) si.D = TensorView::of(D.data(), {d});
  if (s.z) si.z = TensorView::of(zz.data(), {b, d, 1});
  if (s.bias) si.delta_bias = TensorView::of(bias.data(), {d});
  si.delta_softplus = s.softplus;
  si.initial_state = TensorView::of(h0.data(), {b, d, n});
  std::vector<T> out_scan(out_fast.size()), h_scan(h0.size());
  ssm::SelectiveScanOptions so;
  so.path = ssm::ScanPath::reference;
  ssm::selective_scan_into(si, TensorView::of(out_scan.data(), {b, d, 1}), TensorView::of(h_scan.data(), {b, d, n}), so);
  for (std::size_t i = 0; i < h_fast.size(); ++i) ASSERT_NEAR(h_fast[i], h_scan[i], tol * (1 + std::abs(h_scan[i]))) << "h " << i;
  for (std::size_t i = 0; i < out_fast.size(); ++i) ASSERT_NEAR(out_fast[i], out_scan[i], tol * (1 + std::abs(out_scan[i]))) << "out " << i;
}

TEST(SelectiveStateUpdate, CpuMatchesTheReferenceAndTheScanOfOneToken) {
  for (index_t b : {1, 3})
    for (index_t d : {1, 5, 33, 150})  // 150: two blocks of the CPU path's 64 channels and a ragged one
      for (index_t n : {1, 4, 16})
        for (int mask = 0; mask < 16; mask += (b == 1 ? 1 : 5)) {
          const SsuCase s{b, d, n, (mask & 1) != 0, (mask & 2) != 0, (mask & 4) != 0, (mask & 8) != 0};
          check_ssu_case<float>(s);
          check_ssu_case<double>(s);
        }
}

TEST(SelectiveStateUpdate, BadArgumentsAreNamed) {
  const index_t b = 2, d = 3, n = 4;
  std::vector<float> h(b * d * n), x(b * d), dt(b * d), A(d * n), B(b * n), C(b * n), D(d), out(b * d);
  std::vector<double> hd(b * d * n);
  auto in = [&] {
    ssm::SelectiveStateUpdateInputs i;
    i.state = TensorView::of(h.data(), {b, d, n});
    i.x = TensorView::of(x.data(), {b, d});
    i.dt = TensorView::of(dt.data(), {b, d});
    i.A = TensorView::of(A.data(), {d, n});
    i.B = TensorView::of(B.data(), {b, n});
    i.C = TensorView::of(C.data(), {b, n});
    return i;
  };
  const TensorView o = TensorView::of(out.data(), {b, d});
  EXPECT_EQ(ssm::selective_state_update(in(), o), "cpu");
  expect_error([&] { auto i = in(); i.A = TensorView::of(A.data(), {n, d}); ssm::selective_state_update(i, o); }, "selective_state_update: argument 'A': expected shape (3, 4)");
  expect_error([&] { auto i = in(); i.B = TensorView::of(B.data(), {b, d}); ssm::selective_state_update(i, o); }, "argument 'B': expected shape (2, 4)");
  expect_error([&] { auto i = in(); i.D = TensorView::of(D.data(), {2}); ssm::selective_state_update(i, o); }, "argument 'D': expected shape (3)");
  expect_error([&] { auto i = in(); i.z = TensorView::of(D.data(), {1, d}); ssm::selective_state_update(i, o); }, "argument 'z': expected shape (2, 3)");
  expect_error([&] { auto i = in(); i.state = TensorView::of(hd.data(), {b, d, n}); ssm::selective_state_update(i, o); }, "argument 'x': expected dtype f64");
  expect_error([&] { auto i = in(); i.x = TensorView(x.data(), DType::f32, ssm::Device::cpu(), {b, d}, {1, b}); ssm::selective_state_update(i, o); }, "argument 'x': expected stride 1 in dimension 1");
  expect_error([&] { ssm::selective_state_update(in(), TensorView::of(out.data(), {d, b})); }, "argument 'out': expected shape (2, 3)");
}

// The Mamba-2 form (state (b, h, p, n), dt / A / D / dt_bias per head, B and C per group): T tokens of the update,
// on the CPU path and the reference, against the SSD op's token loop over the same T tokens from the same initial
// state (an independent oracle: reference/ssd.hpp).
template <class T>
void check_ssu_heads(index_t b, index_t h, index_t hd, index_t g, index_t n, bool limit, bool gates) {
  SCOPED_TRACE(::testing::Message() << "b " << b << " h " << h << " p " << hd << " g " << g << " n " << n << " limit "
                                    << limit << " gates " << gates);
  const index_t steps = 5;
  const DType dt_ = ssm::dtype_of<T>();
  const auto x = randn<T>(static_cast<std::size_t>(b * steps * h * hd), 61 + h);  // (b, l, h, p)
  const auto z = randn<T>(x.size(), 62 + hd);
  const auto dt = randn<T>(static_cast<std::size_t>(b * steps * h), 63 + g);      // (b, l, h)
  const auto B = randn<T>(static_cast<std::size_t>(b * steps * g * n), 64 + n);   // (b, l, g, n)
  const auto C = randn<T>(B.size(), 65 + n);
  auto A = randn<T>(static_cast<std::size_t>(h), 66);
  for (auto& a : A) a = -std::abs(a) - T(0.1);
  const auto D = randn<T>(static_cast<std::size_t>(h), 67);
  const auto bias = randn<T>(static_cast<std::size_t>(h), 68, 0.3);
  const auto h0 = randn<T>(static_cast<std::size_t>(b * h * hd * n), 69);
  const std::pair<double, double> lim{0.3, 0.9};
  // The SSD token loop over all steps.
  std::vector<T> out_ssd(x.size()), h_ssd(h0.size());
  {
    ssm::SsdInputs si;
    si.x = TensorView::of(x.data(), {b, steps, h, hd});
    si.dt = TensorView::of(dt.data(), {b, steps, h});
    si.A = TensorView::of(A.data(), {h});
    si.B = TensorView::of(B.data(), {b, steps, g, n});
    si.C = TensorView::of(C.data(), {b, steps, g, n});
    if (gates) {
      si.D = TensorView::of(D.data(), {h});
      si.z = TensorView::of(z.data(), {b, steps, h, hd});
      si.dt_bias = TensorView::of(bias.data(), {h});
    }
    si.dt_softplus = true;
    if (limit) si.dt_limit = lim;
    si.initial_state = TensorView::of(h0.data(), {b, h, hd, n});
    ssm::SsdOptions so;
    so.path = ssm::SsdPath::reference;
    ssm::ssd_into(si, TensorView::of(out_ssd.data(), {b, steps, h, hd}), TensorView::of(h_ssd.data(), {b, h, hd, n}), so);
  }
  const double tol = std::is_same_v<T, double> ? 1e-12 : 2e-5;
  for (auto path : {ssm::StateUpdatePath::automatic, ssm::StateUpdatePath::reference}) {
    std::vector<T> state = h0, out(x.size());
    const ssm::Device cpu = ssm::Device::cpu();
    for (index_t t = 0; t < steps; ++t) {
      // The step's tokens as strided views of the (b, l, ...) buffers.
      auto at = [&](const std::vector<T>& v, std::initializer_list<index_t> shape, std::initializer_list<index_t> strides,
                    index_t offset) { return TensorView(const_cast<T*>(v.data()) + offset, dt_, cpu, shape, strides); };
      ssm::SelectiveStateUpdateInputs in;
      in.state = TensorView::of(state.data(), {b, h, hd, n});
      in.x = at(x, {b, h, hd}, {steps * h * hd, hd, 1}, t * h * hd);
      in.dt = at(dt, {b, h}, {steps * h, 1}, t * h);
      in.A = TensorView::of(A.data(), {h});
      in.B = at(B, {b, g, n}, {steps * g * n, n, 1}, t * g * n);
      in.C = at(C, {b, g, n}, {steps * g * n, n, 1}, t * g * n);
      if (gates) {
        in.D = TensorView::of(D.data(), {h});
        in.z = at(z, {b, h, hd}, {steps * h * hd, hd, 1}, t * h * hd);
        in.dt_bias = TensorView::of(bias.data(), {h});
      }
      in.dt_softplus = true;
      if (limit) in.dt_limit = lim;
      ssm::selective_state_update(in, at(out, {b, h, hd}, {steps * h * hd, hd, 1}, t * h * hd), path);
    }
    for (std::size_t i = 0; i < state.size(); ++i) ASSERT_NEAR(state[i], h_ssd[i], tol * (1 + std::abs(h_ssd[i]))) << "h " << i;
    for (std::size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], out_ssd[i], tol * (1 + std::abs(out_ssd[i]))) << "out " << i;
  }
}

TEST(SelectiveStateUpdate, HeadFormMatchesTheSsdTokenLoop) {
  for (bool gates : {false, true})
    for (bool limit : {false, true}) {
      check_ssu_heads<double>(2, 4, 8, 2, 16, limit, gates);
      check_ssu_heads<float>(2, 4, 8, 2, 16, limit, gates);
    }
  check_ssu_heads<double>(1, 6, 5, 3, 7, true, true);
  check_ssu_heads<float>(3, 3, 1, 1, 33, false, true);
  check_ssu_heads<double>(1, 1, 1, 1, 1, true, true);
  check_ssu_heads<float>(1, 2, 70, 1, 20, true, true);  // a head past the CPU path's block of 64 channels
}

// A NaN step size (a NaN dt, as an overflow upstream makes) reaches out and the state of its own channel (Mamba-1 form)
// or head (Mamba-2 form) on every path, also through the softplus and the dt limit (vector max / min would turn it into
// 0 or dt_min), and nothing else.
TEST(SelectiveStateUpdate, NanStepReachesItsChannelOnly) {
  for (bool per_head : {false, true})
    for (bool limit : {false, true})
      for (auto path : {ssm::StateUpdatePath::automatic, ssm::StateUpdatePath::reference}) {
        SCOPED_TRACE(::testing::Message() << "per_head " << per_head << " limit " << limit);
        const index_t h = per_head ? 3 : 1, hd = 70, n = 16, bad = 1;  // the NaN: head 1, or channel 1 of 70
        std::vector<float> st(h * hd * n, 0.5f), x(h * hd, 1.0f), dt(per_head ? h : hd, 0.3f), out(x.size());
        std::vector<float> A(per_head ? h : hd * n, -0.7f), B(n, 0.25f), C(n, 0.5f), D(per_head ? h : hd, 1.0f);
        dt[bad] = std::numeric_limits<float>::quiet_NaN();
        ssm::SelectiveStateUpdateInputs in;
        in.state = per_head ? TensorView::of(st.data(), {1, h, hd, n}) : TensorView::of(st.data(), {1, hd, n});
        in.x = per_head ? TensorView::of(x.data(), {1, h, hd}) : TensorView::of(x.data(), {1, hd});
        in.dt = per_head ? TensorView::of(dt.data(), {1, h}) : TensorView::of(dt.data(), {1, hd});
        in.A = per_head ? TensorView::of(A.data(), {h}) : TensorView::of(A.data(), {hd, n});
        in.B = per_head ? TensorView::of(B.data(), {1, 1, n}) : TensorView::of(B.data(), {1, n});
        in.C = per_head ? TensorView::of(C.data(), {1, 1, n}) : TensorView::of(C.data(), {1, n});
        in.D = per_head ? TensorView::of(D.data(), {h}) : TensorView::of(D.data(), {hd});
        in.z = in.x;
        in.dt_softplus = true;
        if (limit) in.dt_limit = std::pair<double, double>{0.1, 0.9};
        const TensorView o = per_head ? TensorView::of(out.data(), {1, h, hd}) : TensorView::of(out.data(), {1, hd});
        ssm::selective_state_update(in, o, path);
        for (index_t c = 0; c < h * hd; ++c) {
          const bool nan = per_head ? c / hd == bad : c == bad;
          EXPECT_EQ(std::isnan(out[static_cast<std::size_t>(c)]), nan) << "out " << c;
          for (index_t k = 0; k < n; ++k)
            EXPECT_EQ(std::isnan(st[static_cast<std::size_t>(c * n + k)]), nan) << "state " << c << ", " << k;
        }
      }
}

TEST(SelectiveStateUpdate, HeadFormBadArgumentsAreNamed) {
  const index_t b = 2, h = 4, hd = 3, n = 5;
  std::vector<float> st(b * h * hd * n), x(b * h * hd), dt(b * h), A(h), B(b * 2 * n), C(B.size()), out(x.size());
  auto in = [&] {
    ssm::SelectiveStateUpdateInputs i;
    i.state = TensorView::of(st.data(), {b, h, hd, n});
    i.x = TensorView::of(x.data(), {b, h, hd});
    i.dt = TensorView::of(dt.data(), {b, h});
    i.A = TensorView::of(A.data(), {h});
    i.B = TensorView::of(B.data(), {b, 2, n});
    i.C = TensorView::of(C.data(), {b, 2, n});
    return i;
  };
  const TensorView o = TensorView::of(out.data(), {b, h, hd});
  EXPECT_EQ(ssm::selective_state_update(in(), o), "cpu");
  expect_error([&] { auto i = in(); i.B = TensorView::of(B.data(), {b, 3, 1}); ssm::selective_state_update(i, o); }, "argument 'B': n_groups = 3 (its dimension 1) does not divide the number of heads h = 4");
  expect_error([&] { auto i = in(); i.A = TensorView::of(A.data(), {h - 1}); ssm::selective_state_update(i, o); }, "argument 'A': expected shape (4)");
  expect_error([&] { auto i = in(); i.dt = TensorView::of(dt.data(), {h, b}); ssm::selective_state_update(i, o); }, "argument 'dt': expected shape (2, 4)");
  expect_error([&] { auto i = in(); i.C = TensorView::of(C.data(), {b, 1, 2 * n}); ssm::selective_state_update(i, o); }, "argument 'C': expected shape (2, 2, 5)");
  expect_error([&] { auto i = in(); i.dt_limit = std::pair<double, double>{1.0, 0.5}; ssm::selective_state_update(i, o); }, "argument 'dt_limit'");
  expect_error([&] { ssm::selective_state_update(in(), TensorView::of(out.data(), {b, hd, h})); }, "argument 'out': expected shape (2, 4, 3)");
}

// ---- CUDA tensors go to the backend's entries ------------------------------------------------------------------

namespace fake {
int linear_calls = 0;
ssm::LinearParams last_linear;
void linear_forward(const ssm::LinearParams& p, void*) {
  ++linear_calls;
  last_linear = p;
}
int device_count() { return 1; }
void ensure_device(int) {}
std::string status() { return "1 fake device"; }
}  // namespace fake

// A fake CUDA backend over host memory: the ops must call its entry with their argument block, and an entry it
// leaves null must be an error naming the op, never a call through a null pointer.
struct WithFakeBackend {
  ssm::DeviceBackend b;
  const ssm::DeviceBackend* previous;
  WithFakeBackend() {
    b.name = "fake";
    b.device_count = &fake::device_count;
    b.ensure_device = &fake::ensure_device;
    b.status = &fake::status;
    b.linear_forward = &fake::linear_forward;
    previous = ssm::register_backend(ssm::DeviceType::cuda, &b);
  }
  ~WithFakeBackend() { ssm::register_backend(ssm::DeviceType::cuda, previous); }
};

TEST(DenseOpsDispatch, CudaTensorsCallTheBackendEntryOrSayItIsMissing) {
  WithFakeBackend fb;
  const ssm::Device gpu = ssm::Device::cuda(0);
  std::vector<float> x(6), w(8), bias(4), y(8), h(12), r(6);
  std::vector<std::int64_t> ids(2);
  auto on_gpu = [&](auto* data, ssm::Dims shape) { return TensorView(data, ssm::dtype_of<std::remove_pointer_t<decltype(data)>>(), gpu, shape); };
  ssm::LinearInputs li{on_gpu(x.data(), {2, 3}), TensorView(w.data(), DType::bf16, gpu, {4, 3}), on_gpu(bias.data(), {4})};
  EXPECT_EQ(ssm::linear_into(li, on_gpu(y.data(), {2, 4})), "cuda");
  ASSERT_EQ(fake::linear_calls, 1);
  EXPECT_EQ(fake::last_linear.rows, 2);
  EXPECT_EQ(fake::last_linear.in, 3);
  EXPECT_EQ(fake::last_linear.out, 4);
  EXPECT_EQ(fake::last_linear.weight_dtype, DType::bf16);
  EXPECT_EQ(fake::last_linear.y, y.data());
  EXPECT_EQ(fake::last_linear.bias, bias.data());
  // Mixed devices are named, not copied.
  li.bias = TensorView::of(bias.data(), {4});
  expect_error([&] { ssm::linear_into(li, on_gpu(y.data(), {2, 4})); }, "linear: argument 'bias': is on cpu but 'x' is on cuda:0");
  expect_error([&] { ssm::rms_norm_into({on_gpu(x.data(), {2, 3}), std::nullopt, on_gpu(r.data(), {2, 3}), 1e-5}, on_gpu(y.data(), {2, 3})); },
               "rms_norm: not implemented on cuda yet");
  expect_error([&] { ssm::embedding_into(on_gpu(ids.data(), {2}), on_gpu(w.data(), {2, 4}), on_gpu(y.data(), {2, 4})); },
               "embedding: not implemented on cuda yet");
  ssm::SelectiveStateUpdateInputs si;
  si.state = on_gpu(h.data(), {1, 3, 4});
  si.x = si.dt = on_gpu(x.data(), {1, 3});
  si.A = on_gpu(h.data(), {3, 4});
  si.B = si.C = on_gpu(w.data(), {1, 4});
  expect_error([&] { ssm::selective_state_update(si, on_gpu(y.data(), {1, 3})); }, "selective_state_update: not implemented on cuda yet");
  fb.b.linear_forward = nullptr;
  expect_error([&] { ssm::linear_into(li, on_gpu(y.data(), {2, 4})); }, "linear: argument 'bias'");
  li.bias = std::nullopt;
  expect_error([&] { ssm::linear_into(li, on_gpu(y.data(), {2, 4})); }, "linear: not implemented on cuda yet");
}

}  // namespace
