// TTT-Linear's inner model written out in double for the tests (tests/ttt_linear, tests/mixer_layers): the loss
// ℓ(Ŵ) = ½‖LN(k̂ᵀŴ) − (v − k)‖², its gradient by central differences (no layer-norm backward formula, so the op's is
// checked by something independent of it), the model f(x; Ŵ) = x + LN(x̂ᵀŴ), and mini-batch gradient descent over a
// sequence as the paper states it, building each token's Ŵ_t. Ŵ = [W; bᵀ] is (d + 1, d) row-major.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include "ssm/core/index.hpp"

namespace ttt_inner {

using ssm::index_t;

struct Token {
  std::vector<double> q, k, v;
  double eta = 0;
};

struct Inner {
  index_t d = 0;
  std::vector<double> gamma, beta;  // (d) each
  double eps = 1e-6;

  /// LN(x̂ᵀŴ) (d).
  std::vector<double> ln(const std::vector<double>& W, const std::vector<double>& x) const {
    std::vector<double> z(static_cast<std::size_t>(d));
    for (index_t j = 0; j < d; ++j) {
      double acc = W[static_cast<std::size_t>(d * d + j)];
      for (index_t i = 0; i < d; ++i) acc += x[static_cast<std::size_t>(i)] * W[static_cast<std::size_t>(i * d + j)];
      z[static_cast<std::size_t>(j)] = acc;
    }
    double mean = 0, var = 0;
    for (double e : z) mean += e / static_cast<double>(d);
    for (double e : z) var += (e - mean) * (e - mean) / static_cast<double>(d);
    for (index_t j = 0; j < d; ++j) {
      const std::size_t jj = static_cast<std::size_t>(j);
      z[jj] = gamma[jj] * (z[jj] - mean) / std::sqrt(var + eps) + beta[jj];
    }
    return z;
  }
  double loss(const std::vector<double>& W, const Token& x) const {
    const std::vector<double> y = ln(W, x.k);
    double s = 0;
    for (std::size_t j = 0; j < y.size(); ++j) s += 0.5 * std::pow(y[j] - (x.v[j] - x.k[j]), 2);
    return s;
  }
  /// ∇ℓ(Ŵ) by central differences.
  std::vector<double> gradient(std::vector<double> W, const Token& x) const {
    std::vector<double> g(W.size());
    const double e = 1e-6;
    for (std::size_t i = 0; i < W.size(); ++i) {
      const double w0 = W[i];
      W[i] = w0 + e;
      const double up = loss(W, x);
      W[i] = w0 - e;
      g[i] = (up - loss(W, x)) / (2 * e);
      W[i] = w0;
    }
    return g;
  }
  /// f(q; Ŵ) = q + LN(q̂ᵀŴ).
  std::vector<double> output(const std::vector<double>& W, const Token& x) const {
    std::vector<double> o = ln(W, x.q);
    for (std::size_t j = 0; j < o.size(); ++j) o[j] += x.q[j];
    return o;
  }
  /// Mini-batches of m tokens from the first: inside one that starts with Ŵ′, Ŵ_t = Ŵ′ − τ_i Σ_{s<=t} η_s ∇ℓ_s(Ŵ′)
  /// (i the position in the mini-batch) and o_t = f(q_t; Ŵ_t); at its end Ŵ′ ← Ŵ_t. Returns every o_t, concatenated;
  /// W ends as Ŵ′ after the last complete mini-batch.
  std::vector<double> run(std::vector<double>& W, const std::vector<Token>& xs, index_t m,
                          const std::vector<double>& tau) const {
    std::vector<double> out, sum(W.size(), 0.0);
    for (std::size_t t = 0; t < xs.size(); ++t) {
      const std::size_t i = t % static_cast<std::size_t>(m);
      const std::vector<double> g = gradient(W, xs[t]);
      for (std::size_t e = 0; e < sum.size(); ++e) sum[e] += xs[t].eta * g[e];
      std::vector<double> Wt = W;
      for (std::size_t e = 0; e < sum.size(); ++e) Wt[e] -= tau[i] * sum[e];
      const std::vector<double> o = output(Wt, xs[t]);
      out.insert(out.end(), o.begin(), o.end());
      if (i + 1 == static_cast<std::size_t>(m)) W = Wt, sum.assign(sum.size(), 0.0);
    }
    return out;
  }
};

}  // namespace ttt_inner
