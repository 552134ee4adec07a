// The one linear-attention problem generator of the tests and benchmarks (ops/linear_attention.hpp): random inputs
// of every form the op takes (groups, φ, the normalizer, decays per head, GLA's log gate, a scale, initial states,
// cu_seqlens, every input dtype, strided rows) as host tensors, and the op's inputs and options over them. The queries, keys, values and
// common options come from qkv_problem.hpp.
#pragma once

#include <random>
#include <string>
#include <vector>

#include "qkv_problem.hpp"
#include "ssm/ops/linear_attention.hpp"

namespace linear_attention_problem {

using qkv_problem::uniform;
using ssm::DType;
using ssm::index_t;
using ssm::Tensor;
using ssm::TensorView;

struct LaCase : qkv_problem::QkvCase {
  ssm::FeatureMap feature_map = ssm::FeatureMap::identity;
  bool normalize = false;
  bool decay = false;  // γ_i = 0.5 + 0.5 (i + 1) / h: from about 0.5 up to exactly 1 (retention)
  double gate = 0;     // > 0: GLA's log gate (b, l, h, dk) drawn in [−gate, 0); 0: none

  std::vector<double> gammas() const {
    std::vector<double> v;
    if (decay)
      for (index_t i = 0; i < h; ++i) v.push_back(0.5 + 0.5 * static_cast<double>(i + 1) / static_cast<double>(h));
    return v;
  }
  std::string describe() const {
    return QkvCase::describe(std::string(feature_map == ssm::FeatureMap::elu_plus_one ? " elu+1" : "") +
                             (normalize ? " normalize" : "") + (decay ? " decay" : "") +
                             (gate > 0 ? " gate=" + std::to_string(gate).substr(0, 4) : ""));
  }
};

struct LaData : qkv_problem::QkvData {
  LaCase cs;
  Tensor initial_state, initial_normalizer;  // (rows, h, dk, dv), (rows, h, dk)
  Tensor log_gate, log_gate_pad;             // (b, l, h, dk) with cs.gate > 0, and its strided copy's storage
  TensorView log_gate_v;                     // what the op reads

  ssm::LinearAttentionInputs inputs() const {
    ssm::LinearAttentionInputs in;
    in.q = q_v, in.k = k_v, in.v = v_v;
    if (cs.gate > 0) in.log_gate = log_gate_v;
    if (cs.has_init) {
      in.initial_state = initial_state.view();
      if (cs.normalize) in.initial_normalizer = initial_normalizer.view();
    }
    if (!cs.cu.empty()) in.cu_seqlens = cu_seqlens.view();
    return in;
  }
  ssm::LinearAttentionOptions options() const {
    ssm::LinearAttentionOptions o;
    o.feature_map = cs.feature_map, o.normalize = cs.normalize, o.scale = cs.scale, o.gamma = cs.gammas();
    return o;
  }
};

/// Values: v in [-1, 1); q, k in [-1, 1), or in [0.05, 1) with the normalizer and φ = identity (so that the
/// denominator stays away from zero); the initial state in [-1, 1), the initial normalizer in [0.1, 1); the log gate
/// in [−gate, 0).
inline LaData make_data(const LaCase& cs) {
  std::mt19937_64 rng(cs.seed);
  const DType pt = ssm::compute_dtype(cs.dtype);
  const double lo = cs.normalize && cs.feature_map == ssm::FeatureMap::identity ? 0.05 : -1;
  LaData d;
  d.cs = cs;
  qkv_problem::make_qkv(cs, rng, lo, lo, 1, d);
  d.initial_state = uniform(rng, {cs.rows(), cs.h, cs.dk, cs.dv}, pt, -1, 1);
  d.initial_normalizer = uniform(rng, {cs.rows(), cs.h, cs.dk}, pt, 0.1, 1);
  if (cs.gate > 0) {
    d.log_gate = uniform(rng, {cs.b, cs.l, cs.h, cs.dk}, cs.dtype, -cs.gate, 0);
    d.log_gate_v = qkv_problem::view_of(cs, d.log_gate, d.log_gate_pad);
  }
  return d;
}

}  // namespace linear_attention_problem
