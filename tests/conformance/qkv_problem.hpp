// The part shared by the problem generators of the ops that read queries, keys and values (linear_attention_problem,
// delta_rule_problem): the sizes, the options every such op has (a scale, initial states, cu_seqlens, a dtype, strided
// rows), a name for test output, and q (b, l, g, dk), k (b, l, g, dk), v (b, l, h, dv) as host tensors with the views
// the op reads. Each op's generator derives from QkvCase / QkvData and adds its own inputs.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "ssm/core.hpp"
#include "values.hpp"

namespace qkv_problem {

using ssm::DType;
using ssm::index_t;
using ssm::Tensor;
using ssm::TensorView;

struct QkvCase {
  index_t b = 1, l = 5, h = 2, g = 1, dk = 4, dv = 3;  // g: key groups (heads share a group's q and k)
  double scale = 1.0;
  bool has_init = false;
  std::vector<std::int64_t> cu;  // empty: no cu_seqlens (else b == 1)
  DType dtype = DType::f64;
  unsigned seed = 1;
  index_t pad = 0;  // > 0: q, k, v (and the op's other per-token inputs) as views with `pad` extra elements per row

  index_t rows() const { return cu.empty() ? b : static_cast<index_t>(cu.size()) - 1; }
  /// "b=.. l=.. h=.. g=.. dk=.. dv=..", then the op's own `flags`, then the common options and the dtype.
  std::string describe(const std::string& flags) const {
    return "b=" + std::to_string(b) + " l=" + std::to_string(l) + " h=" + std::to_string(h) + " g=" + std::to_string(g) +
           " dk=" + std::to_string(dk) + " dv=" + std::to_string(dv) + flags + (scale != 1.0 ? " scale" : "") +
           (has_init ? " init" : "") + (cu.empty() ? "" : " cu_seqlens") + (pad ? " strided" : "") + " " +
           std::string(ssm::name(dtype));
  }
};

struct QkvData {
  Tensor q, k, v, cu_seqlens;  // contiguous values
  Tensor q_pad, k_pad, v_pad;  // with pad: the strided copies' storage
  TensorView q_v, k_v, v_v;    // what the op reads
};

inline Tensor uniform(std::mt19937_64& rng, const ssm::Dims& shape, DType dt, double lo, double hi) {
  return conformance::uniform(rng, shape, dt, lo, hi);
}

/// The view an op reads of `dense`: itself, or with cs.pad a strided copy whose storage `owner` keeps.
inline TensorView view_of(const QkvCase& cs, const Tensor& dense, Tensor& owner) {
  return cs.pad ? conformance::padded_copy(dense, cs.pad, owner) : dense.view();
}

/// Draws q in [q_lo, 1), k in [k_lo, k_hi) and v in [-1, 1) from rng (in that order), and cu_seqlens from cs.cu.
inline void make_qkv(const QkvCase& cs, std::mt19937_64& rng, double q_lo, double k_lo, double k_hi, QkvData& d) {
  d.q = uniform(rng, {cs.b, cs.l, cs.g, cs.dk}, cs.dtype, q_lo, 1);    // (b, l, g, dk)
  d.k = uniform(rng, {cs.b, cs.l, cs.g, cs.dk}, cs.dtype, k_lo, k_hi);  // (b, l, g, dk)
  d.v = uniform(rng, {cs.b, cs.l, cs.h, cs.dv}, cs.dtype, -1, 1);      // (b, l, h, dv)
  if (!cs.cu.empty()) d.cu_seqlens = Tensor::from_vector<std::int64_t>({static_cast<index_t>(cs.cu.size())}, cs.cu);
  d.q_v = view_of(cs, d.q, d.q_pad), d.k_v = view_of(cs, d.k, d.k_pad), d.v_v = view_of(cs, d.v, d.v_pad);
}

}  // namespace qkv_problem
