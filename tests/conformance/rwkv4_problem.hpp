// The one RWKV-4 problem generator of the tests and benchmarks (ops/rwkv4.hpp): random inputs of every form the op
// takes (initial states, cu_seqlens, every input dtype, strided rows, keys large enough that e^k overflows f32) as
// host tensors, and the op's inputs over them.
#pragma once

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "values.hpp"
#include "ssm/ops/rwkv4.hpp"

namespace rwkv4_problem {

using ssm::DType;
using ssm::index_t;
using ssm::Tensor;
using ssm::TensorView;

struct Rw4Case {
  index_t b = 1, l = 5, c = 4;
  double k_lo = -2, k_hi = 2;  // k uniform in [k_lo, k_hi)
  bool has_init = false;
  std::vector<std::int64_t> cu;  // empty: no cu_seqlens (else b == 1)
  DType dtype = DType::f64;
  unsigned seed = 1;
  index_t pad = 0;  // > 0: k, v and out as views with `pad` extra elements per row

  index_t rows() const { return cu.empty() ? b : static_cast<index_t>(cu.size()) - 1; }
  std::string describe() const {
    return "b=" + std::to_string(b) + " l=" + std::to_string(l) + " c=" + std::to_string(c) +
           (k_hi > 20 ? " large-k" : "") + (has_init ? " init" : "") + (cu.empty() ? "" : " cu_seqlens") +
           (pad ? " strided" : "") + " " + std::string(ssm::name(dtype));
  }
};

struct Rw4Data {
  Rw4Case cs;
  Tensor k, v, time_decay, time_first, initial_state, cu_seqlens;  // contiguous values
  Tensor k_pad, v_pad;                                             // with cs.pad: the strided copies' storage
  TensorView k_v, v_v;                                             // what the op reads

  ssm::Rwkv4Inputs inputs() const {
    ssm::Rwkv4Inputs in;
    in.k = k_v, in.v = v_v, in.time_decay = time_decay.view(), in.time_first = time_first.view();
    if (cs.has_init) in.initial_state = initial_state.view();
    if (!cs.cu.empty()) in.cu_seqlens = cu_seqlens.view();
    return in;
  }
};

/// Values: k in [k_lo, k_hi), v in [-1, 1); time_decay in [-3, 2) (decays e^{−e^{time_decay}} from 0.95 to 6e-4 per
/// step), time_first in [-1, 1); an initial state reached by running the recurrence over a random prefix of 6 tokens
/// (so num / den is a weighted mean of values, den > 0, and max is what the recurrence makes).
inline Rw4Data make_data(const Rw4Case& cs) {
  std::mt19937_64 rng(cs.seed);
  const DType pt = ssm::compute_dtype(cs.dtype);
  Rw4Data d;
  d.cs = cs;
  d.k = conformance::uniform(rng, {cs.b, cs.l, cs.c}, cs.dtype, cs.k_lo, cs.k_hi);  // (b, l, c)
  d.v = conformance::uniform(rng, {cs.b, cs.l, cs.c}, cs.dtype, -1, 1);             // (b, l, c)
  d.time_decay = conformance::uniform(rng, {cs.c}, pt, -3, 2);                      // (c)
  d.time_first = conformance::uniform(rng, {cs.c}, pt, -1, 1);                      // (c)
  {
    ssm::Rwkv4Inputs pre;  // the prefix: (rows, 6, c) in the param dtype
    const Tensor pk = conformance::uniform(rng, {cs.rows(), 6, cs.c}, pt, cs.k_lo, cs.k_hi);
    const Tensor pv = conformance::uniform(rng, {cs.rows(), 6, cs.c}, pt, -1, 1);
    pre.k = pk.view(), pre.v = pv.view(), pre.time_decay = d.time_decay.view(), pre.time_first = d.time_first.view();
    ssm::Rwkv4Options o;
    o.path = ssm::Rwkv4Path::reference, o.return_final_state = true;
    d.initial_state = ssm::rwkv4(pre, o).final_state;  // (rows, 3, c)
  }
  if (!cs.cu.empty()) d.cu_seqlens = Tensor::from_vector<std::int64_t>({static_cast<index_t>(cs.cu.size())}, cs.cu);
  d.k_v = cs.pad ? conformance::padded_copy(d.k, cs.pad, d.k_pad) : d.k.view();
  d.v_v = cs.pad ? conformance::padded_copy(d.v, cs.pad, d.v_pad) : d.v.view();
  return d;
}

}  // namespace rwkv4_problem
