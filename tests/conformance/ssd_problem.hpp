// The one SSD problem generator of the tests and benchmarks (ops/ssd.hpp): random inputs of every form the op takes
// (groups, D per head or per channel, z, dt_bias, softplus, a dt limit, an initial state, cu_seqlens, every input
// dtype, strided rows) as host tensors, and the op's SsdInputs over them.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "ssm/core.hpp"
#include "ssm/ops/ssd.hpp"
#include "values.hpp"

namespace ssd_problem {

using ssm::DType;
using ssm::index_t;
using ssm::Tensor;
using ssm::TensorView;

/// The dt limit of cases with `limit`: tight enough that about a fifth of the steps clamp at each end.
inline const std::pair<double, double> kDtLimit{0.1, 0.4};

struct SsdCase {
  index_t b = 1, l = 5, h = 2, p = 3, g = 1, n = 4;
  bool has_D = false, D_per_channel = false, has_z = false, has_bias = false, softplus = false, limit = false;
  bool has_init = false;
  std::vector<std::int64_t> cu;  // empty: no cu_seqlens (else b == 1)
  DType dtype = DType::f64;      // input dtype; the params are ssm::compute_dtype of it
  unsigned seed = 1;
  index_t pad = 0;  // > 0: x, dt, B, C, z as views with `pad` extra elements per row

  index_t rows() const { return cu.empty() ? b : static_cast<index_t>(cu.size()) - 1; }
  std::string describe() const {
    return "b=" + std::to_string(b) + " l=" + std::to_string(l) + " h=" + std::to_string(h) + " p=" + std::to_string(p) +
           " g=" + std::to_string(g) + " n=" + std::to_string(n) + (has_D ? (D_per_channel ? " D(h,p)" : " D(h)") : "") +
           (has_z ? " z" : "") + (has_bias ? " bias" : "") + (softplus ? " softplus" : "") + (limit ? " limit" : "") +
           (has_init ? " init" : "") + (cu.empty() ? "" : " cu_seqlens") + (pad ? " strided" : "") + " " +
           std::string(ssm::name(dtype));
  }
};

struct SsdData {
  SsdCase cs;
  Tensor x, dt, A, B, C, D, z, dt_bias, initial_state, cu_seqlens;  // contiguous values
  Tensor x_pad, dt_pad, B_pad, C_pad, z_pad;                        // with cs.pad: the strided copies' storage
  TensorView x_v, dt_v, B_v, C_v, z_v;                              // what the op reads

  ssm::SsdInputs inputs() const {
    ssm::SsdInputs in;
    in.x = x_v, in.dt = dt_v, in.A = A, in.B = B_v, in.C = C_v;
    if (cs.has_D) in.D = D.view();
    if (cs.has_z) in.z = z_v;
    if (cs.has_bias) in.dt_bias = dt_bias.view();
    in.dt_softplus = cs.softplus;
    if (cs.limit) in.dt_limit = kDtLimit;
    if (cs.has_init) in.initial_state = initial_state.view();
    if (!cs.cu.empty()) in.cu_seqlens = cu_seqlens.view();
    return in;
  }
};

inline Tensor uniform(std::mt19937_64& rng, const ssm::Dims& shape, DType dt, double lo, double hi) {
  Tensor t = Tensor::empty(shape, dt);
  std::uniform_real_distribution<double> u(lo, hi);
  for (index_t i = 0; i < t.numel(); ++i) conformance::set_element(t, i, u(rng));
  return t;
}

/// Values: x, B, C, z, D, the initial state in [-1, 1); A in [-4, -0.5) (decaying); dt in [-3, 0) before a softplus
/// (Δ in about [0.05, 0.7)), else in [0.01, 0.5) (with a bias in [-0.005, 0.005)). So Δ A reaches about −3 per step and
/// a chunk's cumulative decay spans hundreds of e-folds: the segment sums must not overflow.
inline SsdData make_data(const SsdCase& cs) {
  SsdData d;
  d.cs = cs;
  std::mt19937_64 rng(cs.seed);
  const DType it = cs.dtype, pt = ssm::compute_dtype(cs.dtype);
  d.x = uniform(rng, {cs.b, cs.l, cs.h, cs.p}, it, -1, 1);
  d.dt = cs.softplus ? uniform(rng, {cs.b, cs.l, cs.h}, pt, -3, 0) : uniform(rng, {cs.b, cs.l, cs.h}, pt, 0.01, 0.5);
  d.A = uniform(rng, {cs.h}, pt, -4, -0.5);
  d.B = uniform(rng, {cs.b, cs.l, cs.g, cs.n}, it, -1, 1);
  d.C = uniform(rng, {cs.b, cs.l, cs.g, cs.n}, it, -1, 1);
  if (cs.has_D) d.D = cs.D_per_channel ? uniform(rng, {cs.h, cs.p}, pt, -1, 1) : uniform(rng, {cs.h}, pt, -1, 1);
  if (cs.has_z) d.z = uniform(rng, {cs.b, cs.l, cs.h, cs.p}, it, -2, 2);
  if (cs.has_bias) d.dt_bias = uniform(rng, {cs.h}, pt, -0.005, 0.005);
  if (cs.has_init) d.initial_state = uniform(rng, {cs.rows(), cs.h, cs.p, cs.n}, pt, -1, 1);
  if (!cs.cu.empty()) {
    d.cu_seqlens = Tensor::empty({static_cast<index_t>(cs.cu.size())}, DType::i64);
    for (std::size_t i = 0; i < cs.cu.size(); ++i) d.cu_seqlens.data_as<std::int64_t>()[i] = cs.cu[i];
  }
  auto view = [&](const Tensor& t, Tensor& owner) {
    return cs.pad > 0 && t.defined() ? conformance::padded_copy(t, cs.pad, owner) : t.view();
  };
  d.x_v = view(d.x, d.x_pad), d.dt_v = view(d.dt, d.dt_pad), d.B_v = view(d.B, d.B_pad), d.C_v = view(d.C, d.C_pad);
  if (cs.has_z) d.z_v = view(d.z, d.z_pad);
  return d;
}

}  // namespace ssd_problem
