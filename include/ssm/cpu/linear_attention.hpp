// Linear attention, retention and GLA on the CPU (docs/linear_attention.md): the chunked form on the SSD engine
// (cpu/ssd/) or, with a per-channel log gate (GLA), on its own chunk algebra (cpu/linear_attention_gated.hpp), and the
// token loop in the compute type (the decode step is its one-step case).
//
// Chunked. The engine computes H_t = a_t H_{t−1} + s_t x_t B_tᵀ, y_t = H_t C_t per head with the state (p, n); here
// C = q̃ = scale φ(q), B = k̃ = φ(k), x = v, s = 1 and log a = log γ_h (ssd::FixedDecayGate), so H = Sᵀ (dv, dk).
// The normalizer is one more value column of ones: x = [v, 1] (dv + 1 columns, padded with zero columns to a multiple
// of 16, engine_width) makes row dv of H the normalizer
// z and column dv of y the denominator zᵀ q̃. The inputs are packed into the compute type (φ and the scale applied,
// the column of ones appended), the engine runs on them, and an epilogue divides and converts; the states are
// transposed between the op's (dk, dv) and the engine's (dv + 1, dk). The backward packs the incoming gradient the
// same way (ḡnum = ḡ / d, ḡd = −⟨ḡ, y⟩ / d into the last column), runs the engine's backward and applies φ' and
// the scale to its ḡC, ḡB. With a log gate the gated chunk algebra takes the engine's place on the same packed
// inputs and state layout.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/instances.hpp"
#include "ssm/core/params/linear_attention.hpp"
#include "ssm/core/params/ssd.hpp"
#include "ssm/cpu/convert.hpp"
#include "ssm/cpu/linear_attention_gated.hpp"
#include "ssm/cpu/ssd/backward.hpp"
#include "ssm/cpu/ssd/forward.hpp"
#include "ssm/cpu/ssd/gate.hpp"
#include "ssm/cpu/threads.hpp"

namespace ssm::cpu {

namespace linear_attention {

using ssd::Matrix;

/// An uninitialized buffer of n elements of T.
template <class T>
std::unique_ptr<T[]> buffer(std::int64_t n) {
  return std::unique_ptr<T[]>(new T[static_cast<std::size_t>(std::max<std::int64_t>(n, 1))]);
}

/// dst (n) = mult φ(src) in the compute type; elu + 1 (core/params/linear_attention.hpp: feature_map) on Eigen's
/// vector exp (a scalar exp per element of q and k was most of the chunked forward's extra time with elu + 1).
template <class In, class T>
void load_features(const In* src, std::int64_t n, FeatureMap f, T mult, T* dst) {
  load_row(src, n, dst);
  Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> a(dst, n);
  if (f == FeatureMap::elu_plus_one) a = (a > T(0)).select(a + T(1), a.exp());
  if (mult != T(1)) a *= mult;
}

/// g (n) *= mult φ'(x) (feature_map_grad), x the raw input row.
template <class T>
void times_feature_grad(const T* x, std::int64_t n, FeatureMap f, T mult, T* g) {
  Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> ga(g, n);
  const Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>> xa(x, n);
  if (f == FeatureMap::elu_plus_one) ga *= (xa > T(0)).select(Eigen::Array<T, Eigen::Dynamic, 1>::Ones(n), xa.exp());
  if (mult != T(1)) ga *= mult;
}

/// The engine's value width: dv, or with the normalizer dv + 1 rounded up to 16 (zero columns after the ones): an
/// odd width such as 129 made the engine's GEMMs about half as fast (bench_linear_attention).
inline std::int64_t engine_width(const LinearAttentionParams& p) {
  return p.normalize ? (p.dv + 1 + 15) / 16 * 16 : p.dv;
}

/// The inputs in the engine's layout, compute type, contiguous: q̃, k̃ (b, l, g, dk); [v, 1, 0…] (b, l, h, dv1).
template <class T>
struct Packed {
  std::int64_t dv1 = 0;
  std::unique_ptr<T[]> q, k, v;
};

template <class In, class T>
Packed<T> pack(const LinearAttentionParams& p, int threads) {
  const std::int64_t b = p.batch, l = p.seqlen, g = p.ngroups, h = p.nheads, dk = p.dk, dv = p.dv;
  Packed<T> r;
  r.dv1 = engine_width(p);
  r.q = buffer<T>(b * l * g * dk), r.k = buffer<T>(b * l * g * dk), r.v = buffer<T>(b * l * h * r.dv1);
  parallel_for(b * l, threads, [&](std::int64_t bt) {
    const std::int64_t bi = bt / l, t = bt % l;
    for (std::int64_t gi = 0; gi < g; ++gi) {
      load_features(static_cast<const In*>(p.q) + bi * p.q_batch_stride + t * p.q_seq_stride + gi * p.q_group_stride,
                    dk, p.feature_map, static_cast<T>(p.scale), r.q.get() + (bt * g + gi) * dk);
      load_features(static_cast<const In*>(p.k) + bi * p.k_batch_stride + t * p.k_seq_stride + gi * p.k_group_stride,
                    dk, p.feature_map, T(1), r.k.get() + (bt * g + gi) * dk);
    }
    for (std::int64_t hh = 0; hh < h; ++hh) {
      T* dst = r.v.get() + (bt * h + hh) * r.dv1;
      load_row(static_cast<const In*>(p.v) + bi * p.v_batch_stride + t * p.v_seq_stride + hh * p.v_head_stride, dv, dst);
      if (p.normalize) std::fill(dst + dv, dst + r.dv1, T(0)), dst[dv] = T(1);
    }
  });
  return r;
}

/// An engine argument block over the packed inputs (no D, z, dt, A: the gate is a FixedDecayGate).
template <class T>
SsdParams engine_params(const LinearAttentionParams& p, const Packed<T>& x) {
  SsdParams e;
  e.batch = p.batch, e.seqlen = p.seqlen, e.nheads = p.nheads, e.headdim = x.dv1;
  e.ngroups = p.ngroups, e.dstate = p.dk, e.chunk_size = p.chunk_size;
  e.x = x.v.get(), e.x_batch_stride = p.seqlen * p.nheads * x.dv1, e.x_seq_stride = p.nheads * x.dv1;
  e.x_head_stride = x.dv1;
  e.B = x.k.get(), e.B_batch_stride = p.seqlen * p.ngroups * p.dk, e.B_seq_stride = p.ngroups * p.dk;
  e.B_group_stride = p.dk;
  e.C = x.q.get(), e.C_batch_stride = e.B_batch_stride, e.C_seq_stride = e.B_seq_stride;
  e.C_group_stride = e.B_group_stride;
  e.cu_seqlens = p.cu_seqlens, e.n_seqs = p.n_seqs;
  e.input_dtype = e.param_dtype = std::is_same_v<T, double> ? DType::f64 : DType::f32;
  return e;
}

/// Engine states (rows, h, dv1, dk) from the op's S (rows, h, dk, dv) and z (rows, h, dk) (each may be null: zero;
/// the padding rows zero).
template <class T>
void states_to_engine(const T* S, const T* z, std::int64_t n, std::int64_t dk, std::int64_t dv, std::int64_t dv1,
                      T* H) {
  for (std::int64_t s = 0; s < n; ++s) {
    T* Hs = H + s * dv1 * dk;
    for (std::int64_t i = 0; i < dk; ++i)
      for (std::int64_t j = 0; j < dv; ++j) Hs[j * dk + i] = S ? S[(s * dk + i) * dv + j] : T(0);
    if (dv1 > dv) {
      for (std::int64_t i = 0; i < dk; ++i) Hs[dv * dk + i] = z ? z[s * dk + i] : T(0);
      std::fill(Hs + (dv + 1) * dk, Hs + dv1 * dk, T(0));
    }
  }
}

/// The op's S and z (either may be null: not wanted) from engine states.
template <class T>
void states_from_engine(const T* H, std::int64_t n, std::int64_t dk, std::int64_t dv, std::int64_t dv1, T* S, T* z) {
  for (std::int64_t s = 0; s < n; ++s) {
    const T* Hs = H + s * dv1 * dk;
    if (S)
      for (std::int64_t i = 0; i < dk; ++i)
        for (std::int64_t j = 0; j < dv; ++j) S[(s * dk + i) * dv + j] = Hs[j * dk + i];
    if (z && dv1 > dv)
      for (std::int64_t i = 0; i < dk; ++i) z[s * dk + i] = Hs[dv * dk + i];
  }
}

/// The chunked forward of the packed inputs into e.out (and e.final_state): the SSD engine with a fixed decay per
/// head, or with a log gate the gated chunk algebra.
template <class In, class T>
void run_forward(const LinearAttentionParams& p, const Packed<T>& x, const SsdParams& e, int threads) {
  if (p.log_gate)
    linear_attention_gated::forward<In, T>(p, x.q.get(), x.k.get(), x.v.get(), x.dv1,
                                           static_cast<const T*>(e.initial_state), static_cast<T*>(e.final_state),
                                           static_cast<T*>(e.out), threads);
  else
    ssd::forward_chunked<T>(e, ssd::FixedDecayGate<T>{p.log_gamma}, threads);
}

template <class In>
void forward_chunked(const LinearAttentionParams& p, int threads) {
  using T = compute_t<In>;
  const std::int64_t b = p.batch, l = p.seqlen, h = p.nheads, dk = p.dk, dv = p.dv, rows = p.rows();
  const Packed<T> x = pack<In, T>(p, threads);
  const std::int64_t dv1 = x.dv1, n_states = rows * h;
  SsdParams e = engine_params(p, x);
  std::unique_ptr<T[]> H0, HT, Y = buffer<T>(b * l * h * dv1);
  if (p.initial_state || p.initial_normalizer) {
    H0 = buffer<T>(n_states * dv1 * dk);
    states_to_engine(static_cast<const T*>(p.initial_state), static_cast<const T*>(p.initial_normalizer), n_states,
                     dk, dv, dv1, H0.get());
    e.initial_state = H0.get();
  }
  if (p.final_state || p.final_normalizer) e.final_state = (HT = buffer<T>(n_states * dv1 * dk)).get();
  e.out = Y.get(), e.out_batch_stride = l * h * dv1, e.out_seq_stride = h * dv1, e.out_head_stride = dv1;
  run_forward<In, T>(p, x, e, threads);
  // the epilogue: y / (d + eps), converted
  parallel_for(b * l, threads, [&](std::int64_t bt) {
    const std::int64_t bi = bt / l, t = bt % l;
    for (std::int64_t hh = 0; hh < h; ++hh) {
      T* y = Y.get() + (bt * h + hh) * dv1;
      if (p.normalize) {
        const T inv = T(1) / (y[dv] + static_cast<T>(p.eps));
        for (std::int64_t j = 0; j < dv; ++j) y[j] *= inv;
      }
      store_row(y, dv, static_cast<In*>(p.out) + bi * p.out_batch_stride + t * p.out_seq_stride + hh * p.out_head_stride);
    }
  });
  if (HT)
    states_from_engine(HT.get(), n_states, dk, dv, dv1, static_cast<T*>(p.final_state), static_cast<T*>(p.final_normalizer));
}

template <class In>
void backward_chunked(const LinearAttentionParams& p, const LinearAttentionGradParams& g, int threads) {
  using T = compute_t<In>;
  const std::int64_t b = p.batch, l = p.seqlen, h = p.nheads, ng = p.ngroups, dk = p.dk, dv = p.dv, rows = p.rows();
  const Packed<T> x = pack<In, T>(p, threads);
  const std::int64_t dv1 = x.dv1, n_states = rows * h;
  SsdParams e = engine_params(p, x);
  std::unique_ptr<T[]> H0, GF, GH0, GY = buffer<T>(b * l * h * dv1);
  if (p.initial_state || p.initial_normalizer) {
    H0 = buffer<T>(n_states * dv1 * dk);
    states_to_engine(static_cast<const T*>(p.initial_state), static_cast<const T*>(p.initial_normalizer), n_states,
                     dk, dv, dv1, H0.get());
    e.initial_state = H0.get();
  }
  // the incoming gradient in the engine's layout: with the normalizer, the forward's num and d first
  std::unique_ptr<T[]> Y;
  if (p.normalize) {
    Y = buffer<T>(b * l * h * dv1);
    e.out = Y.get(), e.out_batch_stride = l * h * dv1, e.out_seq_stride = h * dv1, e.out_head_stride = dv1;
    run_forward<In, T>(p, x, e, threads);
    e.out = nullptr, e.out_batch_stride = e.out_seq_stride = e.out_head_stride = 0;
  }
  parallel_for(b * l, threads, [&](std::int64_t bt) {
    for (std::int64_t hh = 0; hh < h; ++hh) {
      T* gy = GY.get() + (bt * h + hh) * dv1;
      load_row(static_cast<const In*>(g.grad_out) + (bt * h + hh) * dv, dv, gy);
      if (!p.normalize) continue;
      const T* y = Y.get() + (bt * h + hh) * dv1;
      const T inv = T(1) / (y[dv] + static_cast<T>(p.eps));
      T gd = 0;
      for (std::int64_t j = 0; j < dv; ++j) gd -= gy[j] * y[j];
      for (std::int64_t j = 0; j < dv; ++j) gy[j] *= inv;
      std::fill(gy + dv, gy + dv1, T(0));
      gy[dv] = gd * inv * inv;
    }
  });
  SsdGradParams eg;
  eg.grad_out = GY.get();
  if (g.grad_final_state || g.grad_final_normalizer) {
    GF = buffer<T>(n_states * dv1 * dk);
    states_to_engine(static_cast<const T*>(g.grad_final_state), static_cast<const T*>(g.grad_final_normalizer),
                     n_states, dk, dv, dv1, GF.get());
    eg.grad_final_state = GF.get();
  }
  std::unique_ptr<T[]> GQ = buffer<T>(b * l * ng * dk), GK = buffer<T>(b * l * ng * dk), GV = buffer<T>(b * l * h * dv1);
  eg.grad_C = GQ.get(), eg.grad_B = GK.get(), eg.grad_x = GV.get();
  if (g.grad_initial_state || g.grad_initial_normalizer)
    eg.grad_initial_state = (GH0 = buffer<T>(n_states * dv1 * dk)).get();
  if (p.log_gate) {
    linear_attention_gated::backward<In, T>(p, x.q.get(), x.k.get(), x.v.get(), dv1, static_cast<const T*>(e.initial_state),
                                            GY.get(), static_cast<const T*>(eg.grad_final_state), GQ.get(), GK.get(),
                                            GV.get(), GH0.get(), g.grad_log_gate, threads);
  } else {
    ssd::FixedDecayGate<T> gate{p.log_gamma};
    ssd::backward_chunked<T>(e, eg, gate, threads);
  }
  // φ' and the scale; v's gradient without the column of ones
  parallel_for(b * l, threads, [&](std::int64_t bt) {
    const std::int64_t bi = bt / l, t = bt % l;
    std::vector<T> raw(static_cast<std::size_t>(dk));
    for (std::int64_t gi = 0; gi < ng; ++gi) {
      const std::int64_t off = (bt * ng + gi) * dk;
      if (g.grad_q) {
        load_row(static_cast<const In*>(p.q) + bi * p.q_batch_stride + t * p.q_seq_stride + gi * p.q_group_stride, dk,
                 raw.data());
        T* gq = GQ.get() + off;
        times_feature_grad(raw.data(), dk, p.feature_map, static_cast<T>(p.scale), gq);
        store_row(gq, dk, static_cast<In*>(g.grad_q) + off);
      }
      if (g.grad_k) {
        load_row(static_cast<const In*>(p.k) + bi * p.k_batch_stride + t * p.k_seq_stride + gi * p.k_group_stride, dk,
                 raw.data());
        T* gk = GK.get() + off;
        times_feature_grad(raw.data(), dk, p.feature_map, T(1), gk);
        store_row(gk, dk, static_cast<In*>(g.grad_k) + off);
      }
    }
    if (g.grad_v)
      for (std::int64_t hh = 0; hh < h; ++hh)
        store_row(GV.get() + (bt * h + hh) * dv1, dv, static_cast<In*>(g.grad_v) + (bt * h + hh) * dv);
  });
  if (GH0)
    states_from_engine(GH0.get(), n_states, dk, dv, dv1, static_cast<T*>(g.grad_initial_state),
                       static_cast<T*>(g.grad_initial_normalizer));
}

/// The token loop in the compute type, one state S (dk, dv) and z (dk) per sequence and head, threads over
/// (sequence, head); each step a rank-1 update and a vector-matrix product. The states are read into a local copy
/// first and written at the end, so initial_state and final_state may be the same buffer (the decode step).
template <class In>
void forward_recurrent(const LinearAttentionParams& p, int threads) {
  using T = compute_t<In>;
  const std::int64_t h = p.nheads, dk = p.dk, dv = p.dv, hpg = h / p.ngroups;
  parallel_for(p.rows() * h, threads, [&](std::int64_t task) {
    const std::int64_t s = task / h, hh = task % h, gi = hh / hpg, bi = p.seq_row(s);
    Matrix<T> S = Matrix<T>::Zero(dk, dv);
    Eigen::Matrix<T, 1, Eigen::Dynamic> z = Eigen::Matrix<T, 1, Eigen::Dynamic>::Zero(dk), q(dk), k(dk), v(dv), y(dv);
    if (p.initial_state) S = Eigen::Map<const Matrix<T>>(static_cast<const T*>(p.initial_state) + task * dk * dv, dk, dv);
    if (p.initial_normalizer)
      z = Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(static_cast<const T*>(p.initial_normalizer) + task * dk, dk);
    const T gamma = static_cast<T>(p.log_gamma ? std::exp(p.log_gamma[hh]) : 1.0);
    const T log_gamma = static_cast<T>(p.log_gamma ? p.log_gamma[hh] : 0.0);
    Eigen::Matrix<T, Eigen::Dynamic, 1> alpha(dk);
    for (std::int64_t t = p.seq_begin(s); t < p.seq_end(s); ++t) {
      load_features(static_cast<const In*>(p.q) + bi * p.q_batch_stride + t * p.q_seq_stride + gi * p.q_group_stride, dk,
                    p.feature_map, static_cast<T>(p.scale), q.data());
      load_features(static_cast<const In*>(p.k) + bi * p.k_batch_stride + t * p.k_seq_stride + gi * p.k_group_stride, dk,
                    p.feature_map, T(1), k.data());
      load_row(static_cast<const In*>(p.v) + bi * p.v_batch_stride + t * p.v_seq_stride + hh * p.v_head_stride, dv,
               v.data());
      if (p.log_gate) {  // α = γ exp(g) per key channel
        load_row(static_cast<const In*>(p.log_gate) + bi * p.gate_batch_stride + t * p.gate_seq_stride +
                     hh * p.gate_head_stride,
                 dk, alpha.data());
        alpha = (alpha.array() + log_gamma).exp().matrix();
        S = alpha.asDiagonal() * S;
        z.array() *= alpha.transpose().array();
      } else if (gamma != T(1)) {
        S *= gamma, z *= gamma;
      }
      S.noalias() += k.transpose() * v;
      y.noalias() = q * S;
      if (p.normalize) {
        z += k;
        y /= z.dot(q) + static_cast<T>(p.eps);
      }
      store_row(y.data(), dv,
                static_cast<In*>(p.out) + bi * p.out_batch_stride + t * p.out_seq_stride + hh * p.out_head_stride);
    }
    if (p.final_state) std::copy(S.data(), S.data() + dk * dv, static_cast<T*>(p.final_state) + task * dk * dv);
    if (p.final_normalizer) std::copy(z.data(), z.data() + dk, static_cast<T*>(p.final_normalizer) + task * dk);
  });
}

/// f(In{}) for p.input_dtype's element type (any argument block with an input_dtype: the delta rule's too).
template <class Params, class F>
void by_dtype(const Params& p, const char* op, F&& f) {
  switch (p.input_dtype) {
    case DType::f32: f(float{}); break;
    case DType::f64: f(double{}); break;
    case DType::f16: f(half{}); break;
    case DType::bf16: f(bfloat16{}); break;
    default: fail(op, ": input dtype ", name(p.input_dtype), " has no CPU path");
  }
}

}  // namespace linear_attention

/// The chunked forward over p (validated by the op, ops/linear_attention.hpp), on `threads` threads (0: by the work).
inline void linear_attention_forward_chunked(const LinearAttentionParams& p, int threads) {
  const int t = cpu_threads(threads, p.batch * p.seqlen * p.nheads * p.dk * p.dv);
  linear_attention::by_dtype(p, "linear_attention",
                             [&](auto tag) { linear_attention::forward_chunked<decltype(tag)>(p, t); });
}

/// The token loop in the compute type (also the decode step: l = 1, the state read and written in place).
inline void linear_attention_forward_recurrent(const LinearAttentionParams& p, int threads) {
  const int t = cpu_threads(threads, p.batch * p.seqlen * p.nheads * p.dk * p.dv);
  linear_attention::by_dtype(p, "linear_attention",
                             [&](auto tag) { linear_attention::forward_recurrent<decltype(tag)>(p, t); });
}

/// The chunked backward over p and g.
inline void linear_attention_backward_chunked(const LinearAttentionParams& p, const LinearAttentionGradParams& g,
                                              int threads) {
  const int t = cpu_threads(threads, p.batch * p.seqlen * p.nheads * p.dk * p.dv);
  linear_attention::by_dtype(p, "linear_attention_backward",
                             [&](auto tag) { linear_attention::backward_chunked<decltype(tag)>(p, g, t); });
}

}  // namespace ssm::cpu

/// The kernels' entry points for one input type In, compiled once where SSM_EXTERN_INSTANCES is set
/// (core/instances.hpp, src/instances/).
#define SSM_CPU_LINEAR_ATTENTION_INSTANCES(PREFIX, In)                                                     \
  PREFIX void ssm::cpu::linear_attention::forward_chunked<In>(const ::ssm::LinearAttentionParams&, int);   \
  PREFIX void ssm::cpu::linear_attention::forward_recurrent<In>(const ::ssm::LinearAttentionParams&, int); \
  PREFIX void ssm::cpu::linear_attention::backward_chunked<In>(const ::ssm::LinearAttentionParams&,        \
                                                               const ::ssm::LinearAttentionGradParams&, int);
#if SSM_EXTERN_INSTANCES
SSM_FOR_EACH_INPUT(SSM_CPU_LINEAR_ATTENTION_INSTANCES, extern template)
#endif
