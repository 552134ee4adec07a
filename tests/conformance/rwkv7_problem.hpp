// The one RWKV-7 problem generator of the tests and benchmarks (ops/rwkv7.hpp): random inputs of every form the op
// takes (a scale, initial states, cu_seqlens, every input dtype, strided rows) as host tensors, and the op's inputs
// over them. q (the receptance), k, v and the common options come from qkv_problem.hpp, with one key group per head
// (RWKV-7 has no shared keys: g = h). The transition is drawn as RWKV-7 forms it: a = −κ̂, b = κ̂ ⊙ a_icl with κ̂ a
// random unit vector and a_icl ∈ [0.05, 0.95), so that diag(w) + b aᵀ is a contraction as in the model.
#pragma once

#include <cmath>
#include <random>
#include <string>

#include "qkv_problem.hpp"
#include "ssm/ops/rwkv7.hpp"

namespace rwkv7_problem {

using qkv_problem::uniform;
using ssm::DType;
using ssm::index_t;
using ssm::Tensor;
using ssm::TensorView;

struct Rw7Case : qkv_problem::QkvCase {
  double log_w_min = -1.0;  // log_w in [log_w_min, -0.01)

  std::string describe() const { return QkvCase::describe(""); }
};

struct Rw7Data : qkv_problem::QkvData {
  Rw7Case cs;
  Tensor log_w, a, b, initial_state;  // (b, l, h, dk) x3, (rows, h, dk, dv)
  Tensor log_w_pad, a_pad, b_pad;     // with cs.pad: the strided copies' storage
  TensorView log_w_v, a_v, b_v;       // what the op reads

  ssm::Rwkv7Inputs inputs() const {
    ssm::Rwkv7Inputs in;
    in.q = q_v, in.k = k_v, in.v = v_v, in.log_w = log_w_v, in.a = a_v, in.b = b_v;
    if (cs.has_init) in.initial_state = initial_state.view();
    if (!cs.cu.empty()) in.cu_seqlens = cu_seqlens.view();
    return in;
  }
  ssm::Rwkv7Options options() const {
    ssm::Rwkv7Options o;
    o.scale = cs.scale;
    return o;
  }
};

/// Values: q, k, v in [-1, 1); log_w in [log_w_min, -0.01); a = −κ̂, b = κ̂ ⊙ a_icl as above; the initial state in
/// [-1, 1). cs.g is set to cs.h.
inline Rw7Data make_data(Rw7Case cs) {
  cs.g = cs.h;
  std::mt19937_64 rng(cs.seed);
  Rw7Data d;
  d.cs = cs;
  qkv_problem::make_qkv(cs, rng, -1, -1, 1, d);
  d.log_w = uniform(rng, {cs.b, cs.l, cs.h, cs.dk}, cs.dtype, cs.log_w_min, -0.01);
  // κ̂ and a_icl drawn in double, then a and b rounded once to the input dtype
  const Tensor kappa = uniform(rng, {cs.b, cs.l, cs.h, cs.dk}, DType::f64, -1, 1);
  const Tensor icl = uniform(rng, {cs.b, cs.l, cs.h, cs.dk}, DType::f64, 0.05, 0.95);
  d.a = Tensor::empty({cs.b, cs.l, cs.h, cs.dk}, cs.dtype), d.b = Tensor::empty(d.a.shape(), cs.dtype);
  const double* kp = static_cast<const double*>(kappa.data());
  const double* ip = static_cast<const double*>(icl.data());
  for (index_t r = 0; r < cs.b * cs.l * cs.h; ++r) {
    double n2 = 0;
    for (index_t i = 0; i < cs.dk; ++i) n2 += kp[r * cs.dk + i] * kp[r * cs.dk + i];
    const double inv = 1.0 / std::sqrt(n2 + 1e-12);
    for (index_t i = 0; i < cs.dk; ++i) {
      const double kh = kp[r * cs.dk + i] * inv;
      conformance::set_element(d.a, r * cs.dk + i, -kh, 0);
      conformance::set_element(d.b, r * cs.dk + i, kh * ip[r * cs.dk + i], 0);
    }
  }
  d.initial_state = uniform(rng, {cs.rows(), cs.h, cs.dk, cs.dv}, ssm::compute_dtype(cs.dtype), -1, 1);
  d.log_w_v = qkv_problem::view_of(cs, d.log_w, d.log_w_pad);
  d.a_v = qkv_problem::view_of(cs, d.a, d.a_pad);
  d.b_v = qkv_problem::view_of(cs, d.b, d.b_pad);
  return d;
}

}  // namespace rwkv7_problem
