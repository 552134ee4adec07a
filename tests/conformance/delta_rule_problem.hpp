// The one delta-rule problem generator of the tests and benchmarks (ops/delta_rule.hpp): random inputs of every form
// the op takes (groups, DeltaNet or Gated DeltaNet, with or without the L2 normalization, a scale, initial states,
// cu_seqlens, every input dtype, strided rows) as host tensors, and the op's inputs and options over them.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "ssm/core.hpp"
#include "ssm/ops/delta_rule.hpp"
#include "values.hpp"

namespace delta_rule_problem {

using ssm::DType;
using ssm::index_t;
using ssm::Tensor;
using ssm::TensorView;

struct DrCase {
  index_t b = 1, l = 5, h = 2, g = 1, dk = 4, dv = 3;
  bool gated = false;        // Gated DeltaNet: g in [-0.5, 0)
  bool l2_normalize = true;  // off: k scaled by dk^(−1/2) so that β |k|² <= 2 keeps the recurrence bounded
  double scale = 1.0;
  bool has_init = false;
  std::vector<std::int64_t> cu;  // empty: no cu_seqlens (else b == 1)
  DType dtype = DType::f64;
  unsigned seed = 1;
  index_t pad = 0;  // > 0: q, k, v, beta, g as views with `pad` extra elements per row

  index_t rows() const { return cu.empty() ? b : static_cast<index_t>(cu.size()) - 1; }
  std::string describe() const {
    return "b=" + std::to_string(b) + " l=" + std::to_string(l) + " h=" + std::to_string(h) + " g=" + std::to_string(g) +
           " dk=" + std::to_string(dk) + " dv=" + std::to_string(dv) + (gated ? " gated" : "") +
           (l2_normalize ? "" : " no-l2") + (scale != 1.0 ? " scale" : "") + (has_init ? " init" : "") +
           (cu.empty() ? "" : " cu_seqlens") + (pad ? " strided" : "") + " " + std::string(ssm::name(dtype));
  }
};

struct DrData {
  DrCase cs;
  Tensor q, k, v, beta, g, initial_state, cu_seqlens;  // contiguous values
  Tensor q_pad, k_pad, v_pad, beta_pad, g_pad;        // with cs.pad: the strided copies' storage
  TensorView q_v, k_v, v_v, beta_v, g_v;              // what the op reads

  ssm::DeltaRuleInputs inputs() const {
    ssm::DeltaRuleInputs in;
    in.q = q_v, in.k = k_v, in.v = v_v, in.beta = beta_v;
    if (cs.gated) in.g = g_v;
    if (cs.has_init) in.initial_state = initial_state.view();
    if (!cs.cu.empty()) in.cu_seqlens = cu_seqlens.view();
    return in;
  }
  ssm::DeltaRuleOptions options() const {
    ssm::DeltaRuleOptions o;
    o.l2_normalize = cs.l2_normalize, o.scale = cs.scale;
    return o;
  }
};

inline Tensor uniform(std::mt19937_64& rng, const ssm::Dims& shape, DType dt, double lo, double hi) {
  return conformance::uniform(rng, shape, dt, lo, hi);
}

/// Values: q, v in [-1, 1); k in [-1, 1) (times dk^(−1/2) without the normalization); β in [0.1, 1.9); g in
/// [-0.5, 0); the initial state in [-1, 1).
inline DrData make_data(const DrCase& cs) {
  std::mt19937_64 rng(cs.seed);
  const DType pt = ssm::compute_dtype(cs.dtype);
  DrData d;
  d.cs = cs;
  const double kmax = cs.l2_normalize ? 1.0 : 1.0 / std::sqrt(static_cast<double>(cs.dk));
  d.q = uniform(rng, {cs.b, cs.l, cs.g, cs.dk}, cs.dtype, -1, 1);
  d.k = uniform(rng, {cs.b, cs.l, cs.g, cs.dk}, cs.dtype, -kmax, kmax);
  d.v = uniform(rng, {cs.b, cs.l, cs.h, cs.dv}, cs.dtype, -1, 1);
  d.beta = uniform(rng, {cs.b, cs.l, cs.h}, cs.dtype, 0.1, 1.9);
  d.g = uniform(rng, {cs.b, cs.l, cs.h}, cs.dtype, -0.5, -0.001);
  d.initial_state = uniform(rng, {cs.rows(), cs.h, cs.dk, cs.dv}, pt, -1, 1);
  if (!cs.cu.empty()) {
    d.cu_seqlens = Tensor::empty({static_cast<index_t>(cs.cu.size())}, DType::i64);
    for (std::size_t i = 0; i < cs.cu.size(); ++i) d.cu_seqlens.data_as<std::int64_t>()[i] = cs.cu[i];
  }
  if (cs.pad) {
    d.q_v = conformance::padded_copy(d.q, cs.pad, d.q_pad);
    d.k_v = conformance::padded_copy(d.k, cs.pad, d.k_pad);
    d.v_v = conformance::padded_copy(d.v, cs.pad, d.v_pad);
    d.beta_v = conformance::padded_copy(d.beta, cs.pad, d.beta_pad);
    d.g_v = conformance::padded_copy(d.g, cs.pad, d.g_pad);
  } else {
    d.q_v = d.q.view(), d.k_v = d.k.view(), d.v_v = d.v.view(), d.beta_v = d.beta.view(), d.g_v = d.g.view();
  }
  return d;
}

}  // namespace delta_rule_problem
