// Reference causal scaled-dot-product attention (docs/math.md §7; Vaswani et al. 2017), forward and backward,
// as plain loops in double over contiguous row-major buffers: the oracle every attention path is tested
// against. Multi-head and grouped-query (head i reads kv head i / (h / h_kv)); no tiling, no threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "ssm/core/error.hpp"

namespace ssm::reference {

/// Sizes of one attention call. q, out: (b, l_q, h, p); k, v: (b, l_k, h_kv, p); lse: (b, h, l_q).
/// With causal masking query i sits at absolute position l_k − l_q + i and sees keys j ≤ that position
/// (the queries are the last l_q tokens of the l_k-token context: l_q = l_k for a full sequence,
/// l_q = 1 for one decoding step).
struct AttentionDims {
  std::int64_t b = 1, l_q = 1, l_k = 1, h = 1, h_kv = 1, p = 1;
  double scale = 0;  ///< softmax scale; 0 means 1 / sqrt(p)
  bool causal = true;

  double softmax_scale() const { return scale != 0 ? scale : 1.0 / std::sqrt(static_cast<double>(p)); }
  std::int64_t q_index(std::int64_t bi, std::int64_t i, std::int64_t hi, std::int64_t e) const {
    return ((bi * l_q + i) * h + hi) * p + e;
  }
  std::int64_t kv_index(std::int64_t bi, std::int64_t j, std::int64_t hk, std::int64_t e) const {
    return ((bi * l_k + j) * h_kv + hk) * p + e;
  }
  /// Number of keys query i sees (keys 0 .. n−1).
  std::int64_t visible_keys(std::int64_t i) const { return causal ? l_k - l_q + i + 1 : l_k; }
};

/// One row of attention probabilities: P[j] = softmax_j(q_i . k_j · scale) over the n visible keys of
/// query i (head hi, kv head hk, batch bi). Returns the row's log-sum-exp.
inline double probability_row(const AttentionDims& s, const std::vector<double>& q, const std::vector<double>& k,
                              std::int64_t bi, std::int64_t hi, std::int64_t hk, std::int64_t i, std::int64_t n,
                              std::vector<double>& P) {
  const double scale = s.softmax_scale();
  double m = -std::numeric_limits<double>::infinity();
  for (std::int64_t j = 0; j < n; ++j) {
    double dot = 0;
    for (std::int64_t e = 0; e < s.p; ++e)
      dot += q[static_cast<std::size_t>(s.q_index(bi, i, hi, e))] * k[static_cast<std::size_t>(s.kv_index(bi, j, hk, e))];
    P[static_cast<std::size_t>(j)] = dot * scale;
    m = std::max(m, P[static_cast<std::size_t>(j)]);
  }
  double sum = 0;
  for (std::int64_t j = 0; j < n; ++j) sum += std::exp(P[static_cast<std::size_t>(j)] - m);
  for (std::int64_t j = 0; j < n; ++j) P[static_cast<std::size_t>(j)] = std::exp(P[static_cast<std::size_t>(j)] - m) / sum;
  return m + std::log(sum);
}

/// o = softmax(q kᵀ · scale + causal mask) v, and the log-sum-exp of each score row.
/// q: (b, l_q, h, p), k/v: (b, l_k, h_kv, p) → out: (b, l_q, h, p), lse: (b, h, l_q).
inline void attention_forward(const AttentionDims& s, const std::vector<double>& q, const std::vector<double>& k,
                              const std::vector<double>& v, std::vector<double>& out, std::vector<double>& lse) {
  SSM_CHECK(s.h % s.h_kv == 0 && (!s.causal || s.l_k >= s.l_q), "reference::attention_forward: bad sizes");
  const std::int64_t group = s.h / s.h_kv;
  out.assign(static_cast<std::size_t>(s.b * s.l_q * s.h * s.p), 0.0);  // (b, l_q, h, p)
  lse.assign(static_cast<std::size_t>(s.b * s.h * s.l_q), 0.0);        // (b, h, l_q)
  std::vector<double> P(static_cast<std::size_t>(s.l_k));               // (l_k) one probability row
  for (std::int64_t bi = 0; bi < s.b; ++bi)
    for (std::int64_t hi = 0; hi < s.h; ++hi) {
      const std::int64_t hk = hi / group;
      for (std::int64_t i = 0; i < s.l_q; ++i) {
        const std::int64_t n = s.visible_keys(i);
        lse[static_cast<std::size_t>((bi * s.h + hi) * s.l_q + i)] = probability_row(s, q, k, bi, hi, hk, i, n, P);
        for (std::int64_t j = 0; j < n; ++j)
          for (std::int64_t e = 0; e < s.p; ++e)
            out[static_cast<std::size_t>(s.q_index(bi, i, hi, e))] +=
                P[static_cast<std::size_t>(j)] * v[static_cast<std::size_t>(s.kv_index(bi, j, hk, e))];
      }
    }
}

/// Gradients of a scalar loss L through attention_forward, given grad_out = ∂L/∂out (b, l_q, h, p).
/// With P the attention probabilities and dP = grad_out vᵀ:
///   grad_v = Pᵀ grad_out,  grad_S = P ⊙ (dP − rowsum(P ⊙ dP)),  grad_q = scale grad_S k,
///   grad_k = scale grad_Sᵀ q  (grad_k, grad_v summed over the heads sharing a kv head).
inline void attention_backward(const AttentionDims& s, const std::vector<double>& q, const std::vector<double>& k,
                               const std::vector<double>& v, const std::vector<double>& grad_out,
                               std::vector<double>& grad_q, std::vector<double>& grad_k,
                               std::vector<double>& grad_v) {
  SSM_CHECK(s.h % s.h_kv == 0 && (!s.causal || s.l_k >= s.l_q), "reference::attention_backward: bad sizes");
  const std::int64_t group = s.h / s.h_kv;
  const double scale = s.softmax_scale();
  grad_q.assign(q.size(), 0.0);
  grad_k.assign(k.size(), 0.0);
  grad_v.assign(v.size(), 0.0);
  std::vector<double> P(static_cast<std::size_t>(s.l_k)), dP(static_cast<std::size_t>(s.l_k));  // (l_k)
  for (std::int64_t bi = 0; bi < s.b; ++bi)
    for (std::int64_t hi = 0; hi < s.h; ++hi) {
      const std::int64_t hk = hi / group;
      for (std::int64_t i = 0; i < s.l_q; ++i) {
        const std::int64_t n = s.visible_keys(i);
        (void)probability_row(s, q, k, bi, hi, hk, i, n, P);
        double row = 0;  // Σ_j P_ij dP_ij
        for (std::int64_t j = 0; j < n; ++j) {
          double d = 0;
          for (std::int64_t e = 0; e < s.p; ++e)
            d += grad_out[static_cast<std::size_t>(s.q_index(bi, i, hi, e))] *
                 v[static_cast<std::size_t>(s.kv_index(bi, j, hk, e))];
          dP[static_cast<std::size_t>(j)] = d;
          row += P[static_cast<std::size_t>(j)] * d;
        }
        for (std::int64_t j = 0; j < n; ++j) {
          const double Pj = P[static_cast<std::size_t>(j)];
          const double grad_S = Pj * (dP[static_cast<std::size_t>(j)] - row);
          for (std::int64_t e = 0; e < s.p; ++e) {
            const auto qi = static_cast<std::size_t>(s.q_index(bi, i, hi, e));
            const auto kj = static_cast<std::size_t>(s.kv_index(bi, j, hk, e));
            grad_v[kj] += Pj * grad_out[qi];
            grad_q[qi] += scale * grad_S * k[kj];
            grad_k[kj] += scale * grad_S * q[qi];
          }
        }
      }
    }
}

}  // namespace ssm::reference
