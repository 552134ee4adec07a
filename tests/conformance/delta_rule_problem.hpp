// The one delta-rule problem generator of the tests and benchmarks (ops/delta_rule.hpp): random inputs of every form
// the op takes (groups, DeltaNet or Gated DeltaNet, with or without the L2 normalization, a scale, initial states,
// cu_seqlens, every input dtype, strided rows) as host tensors, and the op's inputs and options over them. The
// queries, keys, values and common options come from qkv_problem.hpp.
#pragma once

#include <cmath>
#include <random>
#include <string>

#include "qkv_problem.hpp"
#include "ssm/ops/delta_rule.hpp"

namespace delta_rule_problem {

using qkv_problem::uniform;
using ssm::DType;
using ssm::index_t;
using ssm::Tensor;
using ssm::TensorView;

struct DrCase : qkv_problem::QkvCase {
  bool gated = false;        // Gated DeltaNet: g in [-0.5, 0)
  bool l2_normalize = true;  // off: k scaled by dk^(−1/2) so that β |k|² <= 2 keeps the recurrence bounded

  std::string describe() const {
    return QkvCase::describe(std::string(gated ? " gated" : "") + (l2_normalize ? "" : " no-l2"));
  }
};

struct DrData : qkv_problem::QkvData {
  DrCase cs;
  Tensor beta, g, initial_state;  // (b, l, h), (b, l, h), (rows, h, dk, dv)
  Tensor beta_pad, g_pad;         // with cs.pad: the strided copies' storage
  TensorView beta_v, g_v;         // what the op reads

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

/// Values: q, v in [-1, 1); k in [-1, 1) (times dk^(−1/2) without the normalization); β in [0.1, 1.9); g in
/// [-0.5, 0); the initial state in [-1, 1).
inline DrData make_data(const DrCase& cs) {
  std::mt19937_64 rng(cs.seed);
  DrData d;
  d.cs = cs;
  const double kmax = cs.l2_normalize ? 1.0 : 1.0 / std::sqrt(static_cast<double>(cs.dk));
  qkv_problem::make_qkv(cs, rng, -1, -kmax, kmax, d);
  d.beta = uniform(rng, {cs.b, cs.l, cs.h}, cs.dtype, 0.1, 1.9);
  d.g = uniform(rng, {cs.b, cs.l, cs.h}, cs.dtype, -0.5, -0.001);
  d.initial_state = uniform(rng, {cs.rows(), cs.h, cs.dk, cs.dv}, ssm::compute_dtype(cs.dtype), -1, 1);
  d.beta_v = qkv_problem::view_of(cs, d.beta, d.beta_pad);
  d.g_v = qkv_problem::view_of(cs, d.g, d.g_pad);
  return d;
}

}  // namespace delta_rule_problem
