// Memory capacity without training: store N key/value pairs in a sequence mixer, read each back with its key, and
// measure how far the recalled value is from the stored one (docs/memory_capacity.md).
//
// A recurrent mixer keeps a fixed state S (dk, dv). Linear attention adds every pair, S = Σ_i k_i v_iᵀ, so a read
// Sᵀ k_j = v_j + Σ_{i≠j} (k_iᵀ k_j) v_i carries crosstalk from every other pair: for random unit keys each k_iᵀ k_j
// has variance 1/dk, so the relative error grows like √((N − 1) / dk) once N passes dk. The delta rule (DeltaNet)
// writes β k (v − Sᵀk)ᵀ: it replaces what the key held instead of adding to it, so it is exact for orthonormal
// keys and degrades more slowly. A decay α (Gated DeltaNet, Mamba-2) forgets old pairs. Softmax attention keeps
// every pair (its state grows with N) and reads by a sharp weighted average.
//
// Every mixer runs through the library's own op, in f64, with one head (b = 1, h = 1):
//   linear attention  ssm::linear_attention: N writes (k_i, v_i) then N reads (q = k_j, k = 0, v = 0), one sequence;
//   DeltaNet          ssm::delta_rule (β = 1; the keys are unit already, so the op's own L2 normalization, whose ε
//                     would leave |k̂|² = 1 / (1 + ε), is off) to the final state S, then read as below;
//   Gated DeltaNet    the same with g = ln α per step;
//   Mamba-2 (SSD)     ssm::ssd: N writes (B = k_i, x = v_i, Δ = 1, A = ln α) then N reads (C = k_j, x = 0, Δ = 0:
//                     no decay and no write), one sequence;
//   softmax attention ssm::attention_forward, not causal, queries k_j over the N stored keys, with the scale √dk
//                     (the usual 1/√dk for keys of norm √dk: these are unit keys) and a sharper dk.
// A read of a final state S goes through ssm::linear_attention with initial_state = S and k = v = 0, which returns
// Sᵀ q exactly: the read is an op call, not a loop written here.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <utility>
#include <string>
#include <vector>

#include <ssm/ssm.hpp>

namespace memory_capacity {

using ssm::DType;
using ssm::index_t;
using ssm::Tensor;

enum class Mixer { linear_attention, deltanet, gated_deltanet, mamba2, softmax, softmax_sharp };

inline const std::vector<Mixer>& all_mixers() {
  static const std::vector<Mixer> list = {Mixer::linear_attention, Mixer::deltanet, Mixer::gated_deltanet,
                                          Mixer::mamba2,           Mixer::softmax,  Mixer::softmax_sharp};
  return list;
}

/// A short name without spaces or commas (CSV, test names).
inline const char* id(Mixer m) {
  switch (m) {
    case Mixer::linear_attention: return "linear_attention";
    case Mixer::deltanet: return "deltanet";
    case Mixer::gated_deltanet: return "gated_deltanet";
    case Mixer::mamba2: return "mamba2";
    case Mixer::softmax: return "softmax";
    case Mixer::softmax_sharp: return "softmax_sharp";
  }
  return "?";
}

inline const char* name(Mixer m) {
  switch (m) {
    case Mixer::linear_attention: return "linear attention";
    case Mixer::deltanet: return "DeltaNet (beta=1)";
    case Mixer::gated_deltanet: return "Gated DeltaNet";
    case Mixer::mamba2: return "Mamba-2 (SSD)";
    case Mixer::softmax: return "softmax, scale sqrt(dk)";
    case Mixer::softmax_sharp: return "softmax, scale dk";
  }
  return "?";
}

struct Options {
  double alpha = 0.99;  // the decay per step of Gated DeltaNet and Mamba-2, in (0, 1]
};

// ---- keys and values --------------------------------------------------------------------------------------------

/// n rows of dimension d drawn uniformly on the unit sphere, as (1, n, 1, d) f64 (b, l, heads, d).
inline Tensor random_unit_rows(std::mt19937_64& rng, index_t n, index_t d) {
  ssm::Checker c("memory_capacity::random_unit_rows");
  c.require(n > 0, "n", "must be > 0, got ", n).require(d > 0, "d", "must be > 0, got ", d);
  std::normal_distribution<double> normal(0.0, 1.0);
  Tensor t = Tensor::empty({1, n, 1, d}, DType::f64);
  double* x = t.data_as<double>();
  for (index_t i = 0; i < n; ++i) {
    double norm2 = 0;
    for (index_t j = 0; j < d; ++j) {
      x[i * d + j] = normal(rng);
      norm2 += x[i * d + j] * x[i * d + j];
    }
    for (index_t j = 0; j < d; ++j) x[i * d + j] /= std::sqrt(norm2);
  }
  return t;
}

/// n ≤ d orthonormal rows (Gram-Schmidt, twice, of random unit rows), as (1, n, 1, d) f64.
inline Tensor orthonormal_rows(std::mt19937_64& rng, index_t n, index_t d) {
  ssm::Checker("memory_capacity::orthonormal_rows").require(n <= d, "n", "at most d = ", d, " orthonormal rows, got ", n);
  Tensor t = random_unit_rows(rng, n, d);
  double* x = t.data_as<double>();
  for (index_t i = 0; i < n; ++i) {
    for (int pass = 0; pass < 2; ++pass)
      for (index_t p = 0; p < i; ++p) {
        double dot = 0;
        for (index_t j = 0; j < d; ++j) dot += x[i * d + j] * x[p * d + j];
        for (index_t j = 0; j < d; ++j) x[i * d + j] -= dot * x[p * d + j];
      }
    double norm2 = 0;
    for (index_t j = 0; j < d; ++j) norm2 += x[i * d + j] * x[i * d + j];
    for (index_t j = 0; j < d; ++j) x[i * d + j] /= std::sqrt(norm2);
  }
  return t;
}

// ---- storing and recalling --------------------------------------------------------------------------------------

namespace detail {

/// (1, a + b, 1, d): the rows of x (1, a, 1, d) followed by those of y (1, b, 1, d); y empty: b zero rows.
inline Tensor concat_rows(const Tensor& x, const Tensor& y, index_t zero_rows = 0) {
  const index_t a = x.size(1), b = y.defined() ? y.size(1) : zero_rows;
  Tensor r = Tensor::zeros({1, a + b, 1, x.size(3)}, DType::f64);
  ssm::copy(r.view().narrow(1, 0, a), x);
  if (y.defined()) ssm::copy(r.view().narrow(1, a, b), y);
  return r;
}

/// Rows [from, from + n) of x (1, l, 1, d), as a new (1, n, 1, d) tensor.
inline Tensor rows(const Tensor& x, index_t from, index_t n) {
  Tensor r = Tensor::empty({1, n, 1, x.size(3)}, DType::f64);
  ssm::copy(r, x.view().narrow(1, from, n));
  return r;
}

/// A (1, l, 1) f64 tensor: `first` for the first n steps, `rest` after.
inline Tensor per_step(index_t l, index_t n, double first, double rest) {
  Tensor t = Tensor::empty({1, l, 1}, DType::f64);
  for (index_t i = 0; i < l; ++i) t.data_as<double>()[i] = i < n ? first : rest;
  return t;
}

/// Sᵀ q for each query through ssm::linear_attention: initial state S (1, 1, dk, dv), q (1, m, 1, dk), k = v = 0.
inline Tensor read_state(const Tensor& S, const Tensor& q) {
  const index_t m = q.size(1), dk = q.size(3), dv = S.size(3);
  const Tensor zero_k = Tensor::zeros({1, m, 1, dk}, DType::f64), zero_v = Tensor::zeros({1, m, 1, dv}, DType::f64);
  ssm::LinearAttentionInputs in;
  in.q = q, in.k = zero_k, in.v = zero_v, in.initial_state = S;
  return ssm::linear_attention(in).out;  // (1, m, 1, dv)
}

}  // namespace detail

/// The values the mixer recalls for queries q (1, m, 1, dk) after storing the pairs k (1, n, 1, dk) -> v
/// (1, n, 1, dv) in order: (1, m, 1, dv) f64.
inline Tensor recall(Mixer mixer, const Tensor& k, const Tensor& v, const Tensor& q, const Options& opt = {}) {
  ssm::Checker c("memory_capacity::recall");
  const std::pair<const char*, const Tensor*> args[] = {{"k", &k}, {"v", &v}, {"q", &q}};
  for (const auto& [nm, t] : args) {
    c.require(t->defined(), nm, "is undefined");
    c.dtype(nm, *t, DType::f64).rank(nm, *t, 4);
    c.require(t->size(0) == 1 && t->size(2) == 1 && t->size(1) > 0 && t->view().is_contiguous(), nm,
              "expected a contiguous (1, rows > 0, 1, d), got ", t->shape().str());
  }
  c.require(v.size(1) == k.size(1), "v", "one value per key: ", k.size(1), " keys, ", v.size(1), " values");
  c.require(q.size(3) == k.size(3), "q", "the keys' dimension ", k.size(3), ", got ", q.size(3));
  c.require(opt.alpha > 0 && opt.alpha <= 1, "alpha", "a decay in (0, 1], got ", opt.alpha);
  const index_t n = k.size(1), m = q.size(1), dv = v.size(3);
  switch (mixer) {
    case Mixer::linear_attention: {  // writes, then reads with k = v = 0 (S unchanged), in one sequence
      const Tensor qs = detail::concat_rows(Tensor::zeros({1, n, 1, q.size(3)}, DType::f64), q);
      const Tensor ks = detail::concat_rows(k, Tensor(), m), vs = detail::concat_rows(v, Tensor(), m);
      ssm::LinearAttentionInputs in;
      in.q = qs, in.k = ks, in.v = vs;
      return detail::rows(ssm::linear_attention(in).out, n, m);
    }
    case Mixer::deltanet:
    case Mixer::gated_deltanet: {
      const Tensor beta = detail::per_step(n, n, 1.0, 1.0);
      const Tensor g = detail::per_step(n, n, std::log(opt.alpha), 0.0);
      ssm::DeltaRuleInputs in;
      in.q = k, in.k = k, in.v = v, in.beta = beta;  // the outputs during the writes are not used
      if (mixer == Mixer::gated_deltanet) in.g = g;
      ssm::DeltaRuleOptions o;
      o.l2_normalize = false;  // the keys are unit vectors already (the op's ε would leave |k̂|² = 1 / (1 + ε))
      o.return_final_state = true;
      return detail::read_state(ssm::delta_rule(in, o).final_state, q);
    }
    case Mixer::mamba2: {  // writes (Δ = 1), then reads (Δ = 0, x = 0: no decay, no write), in one sequence
      const Tensor x = detail::concat_rows(v, Tensor(), m);
      const Tensor B = detail::concat_rows(k, Tensor(), m);
      const Tensor C = detail::concat_rows(Tensor::zeros({1, n, 1, q.size(3)}, DType::f64), q);
      const Tensor dt = detail::per_step(n + m, n, 1.0, 0.0);
      const Tensor A = Tensor::from_vector<double>({1}, {std::log(opt.alpha)});
      ssm::SsdInputs in;
      in.x = x, in.dt = dt, in.A = A, in.B = B, in.C = C;
      return detail::rows(ssm::ssd(in).out, n, m);
    }
    case Mixer::softmax:
    case Mixer::softmax_sharp: {
      ssm::AttentionOptions o;
      o.causal = false;
      // The usual 1/√dk assumes keys with |k|² ≈ dk; these keys are unit vectors, so the same logits need √dk.
      const double dk = static_cast<double>(k.size(3));
      o.scale = mixer == Mixer::softmax ? std::sqrt(dk) : dk;
      c.require(dv == k.size(3), "v", "softmax attention here needs dv == dk, got ", dv, " and ", k.size(3));
      return ssm::attention_forward(q, k, v, o).out;
    }
  }
  ssm::fail("memory_capacity::recall: unknown mixer");
}

/// Mean over rows of |v̂_i − v_i| / |v_i|, for v̂ and v of one shape (1, n, 1, dv).
inline double recall_error(const Tensor& v_hat, const Tensor& v) {
  ssm::Checker("memory_capacity::recall_error")
      .require(v_hat.shape() == v.shape(), "v_hat", "expected v's shape ", v.shape().str(), ", got ", v_hat.shape().str());
  const index_t n = v.size(1), dv = v.size(3);
  double sum = 0;
  for (index_t i = 0; i < n; ++i) {
    double err2 = 0, ref2 = 0;
    for (index_t j = 0; j < dv; ++j) {
      const double a = v_hat.data_as<double>()[i * dv + j], b = v.data_as<double>()[i * dv + j];
      err2 += (a - b) * (a - b), ref2 += b * b;
    }
    sum += std::sqrt(err2 / ref2);
  }
  return sum / static_cast<double>(n);
}

// ---- the sweep ----------------------------------------------------------------------------------------------------

struct Point {
  Mixer mixer;
  index_t n;     // pairs stored
  double load;   // n / dk
  double error;  // mean recall error over pairs and seeds
};

/// Loads N / dk = 1/8 ... 8 (doubling) for dk (dv = dk), random unit keys and values, `seeds` draws each: every
/// pair stored, then every key read back.
inline std::vector<Point> sweep(index_t dk, int seeds, const Options& opt = {}) {
  ssm::Checker c("memory_capacity::sweep");
  c.require(dk >= 8, "dk", "must be >= 8 (the smallest load is dk / 8 pairs), got ", dk);
  c.require(seeds > 0, "seeds", "must be > 0, got ", seeds);
  std::vector<Point> points;
  for (Mixer mixer : all_mixers())
    for (index_t n = dk / 8; n <= 8 * dk; n *= 2) {
      double total = 0;
      for (int s = 0; s < seeds; ++s) {
        std::mt19937_64 rng(1000 * static_cast<std::uint64_t>(n) + static_cast<std::uint64_t>(s));
        const Tensor k = random_unit_rows(rng, n, dk), v = random_unit_rows(rng, n, dk);
        total += recall_error(recall(mixer, k, v, k, opt), v);
      }
      points.push_back({mixer, n, static_cast<double>(n) / static_cast<double>(dk), total / seeds});
    }
  return points;
}

}  // namespace memory_capacity
