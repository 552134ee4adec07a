// The one TTT-Linear problem generator of the tests and benchmarks (ops/ttt_linear.hpp): random inputs of every form
// the op takes (mini-batch sizes and starting positions, position weights, initial states and pending sums,
// cu_seqlens, every input dtype, strided rows) as host tensors, and the op's inputs over them. q, k, v and the common
// options come from qkv_problem.hpp with one key group per head (g = h) and dk = dv = d, the inner model's width.
#pragma once

#include <random>
#include <string>
#include <vector>

#include "qkv_problem.hpp"
#include "ssm/ops/ttt_linear.hpp"

namespace ttt_linear_problem {

using qkv_problem::uniform;
using ssm::DType;
using ssm::index_t;
using ssm::Tensor;
using ssm::TensorView;

struct TttCase : qkv_problem::QkvCase {
  index_t m = 4;              // the mini-batch size
  index_t start = 0;          // the first token's mini-batch position
  bool has_tau = false;       // position weights τ_i = 1 / (i + 1) (the paper's code), else none (every τ_i = 1)
  bool has_pending = false;   // an initial pending sum A (needs has_init)
  double eta_max = 0.5;       // η in [0, eta_max)

  std::string describe() const {
    return QkvCase::describe(" m=" + std::to_string(m) + (start ? " start=" + std::to_string(start) : "") +
                             (has_tau ? " tau" : "") + (has_pending ? " pending" : ""));
  }
};

struct TttData : qkv_problem::QkvData {
  TttCase cs;
  Tensor eta, ln_weight, ln_bias, tau, initial_state, initial_pending;  // (b, l, h), (h, d) x2, (m), (rows, h, d + 1, d) x2
  Tensor eta_pad;
  TensorView eta_v;

  ssm::TttLinearInputs inputs() const {
    ssm::TttLinearInputs in;
    in.q = q_v, in.k = k_v, in.v = v_v, in.eta = eta_v, in.ln_weight = ln_weight.view(), in.ln_bias = ln_bias.view();
    if (cs.has_tau) in.position_weights = tau.view();
    if (cs.has_init) in.initial_state = initial_state.view();
    if (cs.has_pending) in.initial_pending = initial_pending.view();
    if (!cs.cu.empty()) in.cu_seqlens = cu_seqlens.view();
    return in;
  }
  ssm::TttLinearOptions options() const {
    ssm::TttLinearOptions o;
    o.mini_batch_size = cs.m, o.start = cs.start;
    return o;
  }
};

/// Values: q, k, v in [-1, 1); η in [0, eta_max); γ in [0.5, 1.5), β in [-0.5, 0.5); the initial state in
/// [-0.5, 0.5) and the pending sum in [-0.2, 0.2). cs.g is set to cs.h and cs.dv to cs.dk. eta with cs.pad is a view
/// with every other element of a (b, l, 2 h) tensor.
inline TttData make_data(TttCase cs) {
  cs.g = cs.h, cs.dv = cs.dk;
  std::mt19937_64 rng(cs.seed);
  TttData d;
  d.cs = cs;
  qkv_problem::make_qkv(cs, rng, -1, -1, 1, d);
  const DType pt = ssm::compute_dtype(cs.dtype);
  d.eta = uniform(rng, {cs.b, cs.l, cs.h}, cs.dtype, 0, cs.eta_max);
  d.ln_weight = uniform(rng, {cs.h, cs.dk}, pt, 0.5, 1.5);
  d.ln_bias = uniform(rng, {cs.h, cs.dk}, pt, -0.5, 0.5);
  d.tau = Tensor::empty({cs.m}, pt);
  for (index_t i = 0; i < cs.m; ++i) conformance::set_element(d.tau, i, 1.0 / static_cast<double>(i + 1));
  d.initial_state = uniform(rng, {cs.rows(), cs.h, cs.dk + 1, cs.dk}, pt, -0.5, 0.5);
  d.initial_pending = uniform(rng, {cs.rows(), cs.h, cs.dk + 1, cs.dk}, pt, -0.2, 0.2);
  if (cs.pad) {
    d.eta_pad = Tensor::empty({cs.b, cs.l, 2 * cs.h}, cs.dtype);
    d.eta_v = TensorView(d.eta_pad.data(), cs.dtype, ssm::Device::cpu(), {cs.b, cs.l, cs.h},
                         {cs.l * 2 * cs.h, 2 * cs.h, 2});
    ssm::copy(d.eta_v, d.eta.view());
  } else {
    d.eta_v = d.eta.view();
  }
  return d;
}

}  // namespace ttt_linear_problem
