// The one linear-attention problem generator of the tests and benchmarks (ops/linear_attention.hpp): random inputs
// of every form the op takes (groups, φ, the normalizer, decays per head, a scale, initial states, cu_seqlens, every
// input dtype, strided rows) as host tensors, and the op's inputs and options over them.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "ssm/core.hpp"
#include "ssm/ops/linear_attention.hpp"
#include "values.hpp"

namespace linear_attention_problem {

using ssm::DType;
using ssm::index_t;
using ssm::Tensor;
using ssm::TensorView;

struct LaCase {
  index_t b = 1, l = 5, h = 2, g = 1, dk = 4, dv = 3;
  ssm::FeatureMap feature_map = ssm::FeatureMap::identity;
  bool normalize = false;
  bool decay = false;  // γ_i = 0.5 + 0.5 (i + 1) / h: from about 0.5 up to exactly 1 (retention)
  double scale = 1.0;
  bool has_init = false;
  std::vector<std::int64_t> cu;  // empty: no cu_seqlens (else b == 1)
  DType dtype = DType::f64;
  unsigned seed = 1;
  index_t pad = 0;  // > 0: q, k, v as views with `pad` extra elements per row

  index_t rows() const { return cu.empty() ? b : static_cast<index_t>(cu.size()) - 1; }
  std::vector<double> gammas() const {
    std::vector<double> v;
    if (decay)
      for (index_t i = 0; i < h; ++i) v.push_back(0.5 + 0.5 * static_cast<double>(i + 1) / static_cast<double>(h));
    return v;
  }
  std::string describe() const {
    return "b=" + std::to_string(b) + " l=" + std::to_string(l) + " h=" + std::to_string(h) + " g=" + std::to_string(g) +
           " dk=" + std::to_string(dk) + " dv=" + std::to_string(dv) +
           (feature_map == ssm::FeatureMap::elu_plus_one ? " elu+1" : "") + (normalize ? " normalize" : "") +
           (decay ? " decay" : "") + (scale != 1.0 ? " scale" : "") + (has_init ? " init" : "") +
           (cu.empty() ? "" : " cu_seqlens") + (pad ? " strided" : "") + " " + std::string(ssm::name(dtype));
  }
};

struct LaData {
  LaCase cs;
  Tensor q, k, v, initial_state, initial_normalizer, cu_seqlens;  // contiguous values
  Tensor q_pad, k_pad, v_pad;                                      // with cs.pad: the strided copies' storage
  TensorView q_v, k_v, v_v;                                        // what the op reads

  ssm::LinearAttentionInputs inputs() const {
    ssm::LinearAttentionInputs in;
    in.q = q_v, in.k = k_v, in.v = v_v;
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

inline Tensor uniform(std::mt19937_64& rng, const ssm::Dims& shape, DType dt, double lo, double hi) {
  return conformance::uniform(rng, shape, dt, lo, hi);
}

/// Values: v in [-1, 1); q, k in [-1, 1), or in [0.05, 1) with the normalizer and φ = identity (so that the
/// denominator stays away from zero); the initial state in [-1, 1), the initial normalizer in [0.1, 1).
inline LaData make_data(const LaCase& cs) {
  std::mt19937_64 rng(cs.seed);
  const DType pt = ssm::compute_dtype(cs.dtype);
  const bool positive = cs.normalize && cs.feature_map == ssm::FeatureMap::identity;
  LaData d;
  d.cs = cs;
  d.q = uniform(rng, {cs.b, cs.l, cs.g, cs.dk}, cs.dtype, positive ? 0.05 : -1, 1);
  d.k = uniform(rng, {cs.b, cs.l, cs.g, cs.dk}, cs.dtype, positive ? 0.05 : -1, 1);
  d.v = uniform(rng, {cs.b, cs.l, cs.h, cs.dv}, cs.dtype, -1, 1);
  d.initial_state = uniform(rng, {cs.rows(), cs.h, cs.dk, cs.dv}, pt, -1, 1);
  d.initial_normalizer = uniform(rng, {cs.rows(), cs.h, cs.dk}, pt, 0.1, 1);
  if (!cs.cu.empty()) {
    d.cu_seqlens = Tensor::empty({static_cast<index_t>(cs.cu.size())}, DType::i64);
    for (std::size_t i = 0; i < cs.cu.size(); ++i) d.cu_seqlens.data_as<std::int64_t>()[i] = cs.cu[i];
  }
  if (cs.pad) {
    d.q_v = conformance::padded_copy(d.q, cs.pad, d.q_pad);
    d.k_v = conformance::padded_copy(d.k, cs.pad, d.k_pad);
    d.v_v = conformance::padded_copy(d.v, cs.pad, d.v_pad);
  } else {
    d.q_v = d.q.view(), d.k_v = d.k.view(), d.v_v = d.v.view();
  }
  return d;
}

}  // namespace linear_attention_problem
