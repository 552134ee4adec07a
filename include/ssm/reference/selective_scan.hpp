// Reference selective scan (S6; Gu & Dao 2023, "Mamba", Algorithm 2; docs/math.md §5), forward and
// backward: plain loops over a validated ScanParams, every accumulation in double (complex<double>
// for complex A). The oracle every optimized path is tested against; speed is not a goal here.
// Variants: real/complex A, fixed (d, n) or variable (b, g, n, l) B and C, groups, D, z, delta_bias,
// softplus, initial/last state, packed variable-length batches (cu_seqlens).
#pragma once

#include <cmath>
#include <complex>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "ssm/core/dtype.hpp"
#include "ssm/core/instances.hpp"
#include "ssm/core/scalar.hpp"
#include "ssm/core/params/selective_scan_grad.hpp"
#include "ssm/core/params/selective_scan.hpp"

namespace ssm {
namespace scan_detail {

using index_t = std::int64_t;

/// Element types of one selective-scan instance. In: the input dtype (u, delta, z, real variable B/C).
/// W: the real weight/state type (double for double inputs, float otherwise). Wt: weight/state storage
/// (complex<W> when A is complex). BC: storage of variable B/C (In, or complex<W> when complex).
template <class In, bool Complex>
struct ScanTypes {
  using W = compute_t<In>;
  using Wt = std::conditional_t<Complex, std::complex<W>, W>;
  using BC = std::conditional_t<Complex, std::complex<W>, In>;
};

template <class T>
inline double to_double(T x) {
  return static_cast<double>(static_cast<float>(x));
}
inline double to_double(float x) { return x; }
inline double to_double(double x) { return x; }
template <class W>
inline std::complex<double> to_double(std::complex<W> x) {
  return {static_cast<double>(x.real()), static_cast<double>(x.imag())};
}

/// Rounds a double (or complex<double>) accumulator to a storage type.
template <class T>
inline T from_double(double x) {
  if constexpr (std::is_same_v<T, double>) return x;
  else if constexpr (std::is_same_v<T, float>) return static_cast<float>(x);
  else return T(static_cast<float>(x));  // half, bfloat16: via float (one rounding more, below their epsilon)
}
template <class T>
inline T from_double(std::complex<double> x) {
  if constexpr (std::is_same_v<T, std::complex<float>>) return {static_cast<float>(x.real()), static_cast<float>(x.imag())};
  else if constexpr (std::is_same_v<T, std::complex<double>>) return x;
  else return from_double<T>(x.real());
}

inline double re(double x) { return x; }
inline double re(std::complex<double> x) { return x.real(); }
inline double conj_(double x) { return x; }
inline std::complex<double> conj_(std::complex<double> x) { return std::conj(x); }

// softplus (PyTorch's threshold), its derivative and sigmoid: the shared definitions (ssm/core/scalar.hpp), in double.
using scalar::sigmoid;
using scalar::softplus;
using scalar::softplus_grad;

/// One independent recurrence: a (sequence, channel) pair, covering time steps [t0, t1) of batch row bi,
/// with its initial/last state at row `s` of the state tensors.
struct Segment {
  index_t bi, t0, t1, s;
};

/// Calls f(Segment{bi, t0, t1, s}) for each sequence (b rows, or the packed cu_seqlens sequences).
template <class F>
inline void for_each_sequence(const ScanParams& p, F&& f) {
  if (p.cu_seqlens != nullptr) {
    for (index_t s = 0; s < p.n_seqs; ++s) f(Segment{0, p.cu_seqlens[s], p.cu_seqlens[s + 1], s});
  } else {
    for (index_t bi = 0; bi < p.batch; ++bi) f(Segment{bi, 0, p.seqlen, bi});
  }
}

/// Typed accessors over a ScanParams for one instance type; every value returned in double.
template <class In, bool Complex>
struct ScanAccess {
  using T = ScanTypes<In, Complex>;
  using W = typename T::W;
  using Wt = typename T::Wt;
  using BC = typename T::BC;
  using Acc = std::conditional_t<Complex, std::complex<double>, double>;

  const ScanParams& p;
  index_t d_per_group() const { return p.dim / p.n_groups; }

  double u(index_t bi, index_t c, index_t t) const {
    return to_double(static_cast<const In*>(p.u)[bi * p.u_batch_stride + c * p.u_d_stride + t * p.u_l_stride]);
  }
  double delta(index_t bi, index_t c, index_t t) const {
    return to_double(static_cast<const In*>(p.delta)[bi * p.delta_batch_stride + c * p.delta_d_stride + t * p.delta_l_stride]);
  }
  double z(index_t bi, index_t c, index_t t) const {
    return to_double(static_cast<const In*>(p.z)[bi * p.z_batch_stride + c * p.z_d_stride + t * p.z_l_stride]);
  }
  Acc A(index_t c, index_t k) const {
    return to_double(static_cast<const Wt*>(p.A)[c * p.A_d_stride + k * p.A_n_stride]);
  }
  /// B_t[k] of channel c (variable: group c / (d / g); fixed: row c).
  Acc B(index_t bi, index_t c, index_t k, index_t t) const {
    if (p.variable_B)
      return to_double(static_cast<const BC*>(p.B)[bi * p.B_batch_stride + (c / d_per_group()) * p.B_group_stride +
                                                  k * p.B_n_stride + t * p.B_l_stride]);
    return to_double(static_cast<const Wt*>(p.B)[c * p.B_group_stride + k * p.B_n_stride]);
  }
  Acc C(index_t bi, index_t c, index_t k, index_t t) const {
    if (p.variable_C)
      return to_double(static_cast<const BC*>(p.C)[bi * p.C_batch_stride + (c / d_per_group()) * p.C_group_stride +
                                                  k * p.C_n_stride + t * p.C_l_stride]);
    return to_double(static_cast<const Wt*>(p.C)[c * p.C_group_stride + k * p.C_n_stride]);
  }
  double D(index_t c) const { return p.D ? static_cast<double>(static_cast<const W*>(p.D)[c]) : 0.0; }
  double delta_bias(index_t c) const {
    return p.delta_bias ? static_cast<double>(static_cast<const W*>(p.delta_bias)[c]) : 0.0;
  }
  Acc initial_state(index_t s, index_t c, index_t k) const {
    if (!p.initial_state) return Acc(0.0);
    return to_double(static_cast<const Wt*>(
        p.initial_state)[s * p.init_batch_stride + c * p.init_d_stride + k * p.init_n_stride]);
  }
  /// delta + delta_bias, before the softplus.
  double delta_pre(index_t bi, index_t c, index_t t) const { return delta(bi, c, t) + delta_bias(c); }
  double Delta(double pre) const { return p.delta_softplus ? softplus(pre) : pre; }
  /// The real output of the state read-out C_t . h_t: its real part, doubled for complex A (the
  /// conjugate-pair convention of S4D / selective_scan_ref).
  static double readout(Acc y) {
    if constexpr (Complex) return 2.0 * y.real();
    else return y;
  }
};

template <class In, bool Complex>
void selective_scan_forward_impl(const ScanParams& p) {
  using X = ScanAccess<In, Complex>;
  using Acc = typename X::Acc;
  const X x{p};
  const index_t n = p.dstate;
  std::vector<Acc> h(static_cast<std::size_t>(n));  // (n)
  for_each_sequence(p, [&](const Segment& seg) {
    for (index_t c = 0; c < p.dim; ++c) {
      for (index_t k = 0; k < n; ++k) h[static_cast<std::size_t>(k)] = x.initial_state(seg.s, c, k);
      for (index_t t = seg.t0; t < seg.t1; ++t) {
        const double Delta = x.Delta(x.delta_pre(seg.bi, c, t));
        const double u = x.u(seg.bi, c, t);
        Acc y(0.0);
        for (index_t k = 0; k < n; ++k) {
          Acc& hk = h[static_cast<std::size_t>(k)];
          hk = std::exp(Delta * x.A(c, k)) * hk + Delta * x.B(seg.bi, c, k, t) * u;
          y += x.C(seg.bi, c, k, t) * hk;
        }
        double out = X::readout(y) + x.D(c) * u;
        if (p.z) {
          const double zv = x.z(seg.bi, c, t);
          out *= zv * sigmoid(zv);
        }
        static_cast<In*>(p.out)[seg.bi * p.out_batch_stride + c * p.out_d_stride + t * p.out_l_stride] = from_double<In>(out);
      }
      if (p.last_state)
        for (index_t k = 0; k < n; ++k)
          static_cast<typename X::Wt*>(p.last_state)[seg.s * p.last_batch_stride + c * p.last_d_stride + k] =
              from_double<typename X::Wt>(h[static_cast<std::size_t>(k)]);
    }
  });
}

/// Reference backward: stores every state of one (sequence, channel) recurrence (l × n, the oracle's
/// privilege), then runs the reverse scan g_t = C_t dy_t + conj(a_{t+1}) g_{t+1} (docs/math.md §5.3, §5.4).
template <class In, bool Complex>
void selective_scan_backward_impl(const ScanParams& p, const ScanGradParams& gp) {
  using X = ScanAccess<In, Complex>;
  using Acc = typename X::Acc;
  using Wt = typename X::Wt;
  using W = typename X::W;
  using BC = typename X::BC;
  const X x{p};
  const index_t b = p.batch, d = p.dim, l = p.seqlen, n = p.dstate, g = p.n_groups;
  const auto sz = [](index_t v) { return static_cast<std::size_t>(v); };
  const index_t n_state_rows = p.cu_seqlens ? p.n_seqs : b;
  // Accumulators in double, written out once at the end.
  std::vector<double> grad_u(sz(b * d * l)), grad_delta(sz(b * d * l)), grad_z(sz(b * d * l));  // (b, d, l)
  std::vector<Acc> grad_A(sz(d * n));                                                          // (d, n)
  std::vector<Acc> grad_B(sz(p.variable_B ? b * g * n * l : d * n));  // (b, g, n, l) or (d, n)
  std::vector<Acc> grad_C(sz(p.variable_C ? b * g * n * l : d * n));  // (b, g, n, l) or (d, n)
  std::vector<double> grad_D(sz(d)), grad_delta_bias(sz(d));          // (d)
  std::vector<Acc> grad_h0(sz(n_state_rows * d * n));                 // (b | n_seqs, d, n)
  const index_t dg = d / g;
  const auto grad_BC_index = [&](bool variable, index_t bi, index_t c, index_t k, index_t t) {
    return variable ? ((bi * g + c / dg) * n + k) * l + t : c * n + k;
  };

  std::vector<Acc> H;  // (t1 - t0 + 1, n): H[0] = h_{-1}, H[i + 1] = h_{t0 + i}
  std::vector<Acc> G(sz(n));  // (n): dL/dh_t, then carried back as conj(a_t) g_t
  for_each_sequence(p, [&](const Segment& seg) {
    const index_t len = seg.t1 - seg.t0;
    H.assign(sz((len + 1) * n), Acc(0.0));
    for (index_t c = 0; c < d; ++c) {
      for (index_t k = 0; k < n; ++k) H[sz(k)] = x.initial_state(seg.s, c, k);
      for (index_t i = 0; i < len; ++i) {
        const index_t t = seg.t0 + i;
        const double Delta = x.Delta(x.delta_pre(seg.bi, c, t));
        const double u = x.u(seg.bi, c, t);
        for (index_t k = 0; k < n; ++k)
          H[sz((i + 1) * n + k)] = std::exp(Delta * x.A(c, k)) * H[sz(i * n + k)] + Delta * x.B(seg.bi, c, k, t) * u;
      }
      for (index_t k = 0; k < n; ++k) {
        G[sz(k)] = Acc(0.0);
        if (gp.grad_last_state)
          G[sz(k)] = to_double(static_cast<const Wt*>(gp.grad_last_state)[seg.s * gp.grad_last_batch_stride +
                                                                          c * gp.grad_last_d_stride +
                                                                          k * gp.grad_last_n_stride]);
      }
      for (index_t i = len - 1; i >= 0; --i) {
        const index_t t = seg.t0 + i;
        const index_t o = (seg.bi * d + c) * l + t;
        const double pre = x.delta_pre(seg.bi, c, t);
        const double Delta = x.Delta(pre);
        const double u = x.u(seg.bi, c, t);
        // Output side: out = (y + D u) * silu(z).
        double y = 0.0;
        if (p.z) {
          Acc yc(0.0);
          for (index_t k = 0; k < n; ++k) yc += x.C(seg.bi, c, k, t) * H[sz((i + 1) * n + k)];
          y = X::readout(yc);
        }
        const double go =
            to_double(static_cast<const In*>(gp.grad_out)[seg.bi * gp.grad_out_batch_stride + c * gp.grad_out_d_stride + t]);
        double dy = go;
        if (p.z) {
          const double zv = x.z(seg.bi, c, t), sg = sigmoid(zv);
          dy = go * zv * sg;
          grad_z[sz(o)] = go * (y + x.D(c) * u) * sg * (1.0 + zv * (1.0 - sg));
        }
        grad_D[sz(c)] += dy * u;
        double grad_u_t = x.D(c) * dy, grad_Delta = 0.0;
        for (index_t k = 0; k < n; ++k) {
          const Acc h = H[sz((i + 1) * n + k)], h_prev = H[sz(i * n + k)];
          const Acc Ck = x.C(seg.bi, c, k, t), Bk = x.B(seg.bi, c, k, t), Ak = x.A(c, k);
          // dL/dh_t: the read-out (d(2 Re(C h))/dh in PyTorch's convention is 2 conj(C)) plus the carry.
          Acc& gk = G[sz(k)];
          gk += (Complex ? 2.0 : 1.0) * dy * conj_(Ck);
          grad_C[sz(grad_BC_index(p.variable_C, seg.bi, c, k, t))] += (Complex ? 2.0 : 1.0) * dy * conj_(h);
          // h_t = a h_{t-1} + Delta B u, a = exp(Delta A).
          const Acc a = std::exp(Delta * Ak);
          const Acc grad_a = conj_(h_prev) * gk;
          grad_A[sz(c * n + k)] += Delta * conj_(a) * grad_a;
          grad_Delta += re(conj_(Ak * a) * grad_a) + u * re(conj_(Bk) * gk);
          grad_B[sz(grad_BC_index(p.variable_B, seg.bi, c, k, t))] += Delta * u * gk;
          grad_u_t += Delta * re(conj_(Bk) * gk);
          gk = conj_(a) * gk;  // carried to h_{t-1}
        }
        grad_u[sz(o)] = grad_u_t;
        const double grad_pre = p.delta_softplus ? grad_Delta * softplus_grad(pre) : grad_Delta;
        grad_delta[sz(o)] = grad_pre;
        grad_delta_bias[sz(c)] += grad_pre;
      }
      for (index_t k = 0; k < n; ++k) grad_h0[sz((seg.s * d + c) * n + k)] = G[sz(k)];
    }
  });

  const auto write = [](void* dst, const auto& src, auto tag) {
    using T = decltype(tag);
    if (!dst) return;
    for (std::size_t i = 0; i < src.size(); ++i) static_cast<T*>(dst)[i] = from_double<T>(src[i]);
  };
  write(gp.grad_u, grad_u, In{});
  write(gp.grad_delta, grad_delta, In{});
  if (p.z) write(gp.grad_z, grad_z, In{});
  write(gp.grad_A, grad_A, Wt{});
  if (p.variable_B) write(gp.grad_B, grad_B, BC{});
  else write(gp.grad_B, grad_B, Wt{});
  if (p.variable_C) write(gp.grad_C, grad_C, BC{});
  else write(gp.grad_C, grad_C, Wt{});
  if (p.D) write(gp.grad_D, grad_D, W{});
  if (p.delta_bias) write(gp.grad_delta_bias, grad_delta_bias, W{});
  if (p.initial_state) write(gp.grad_initial_state, grad_h0, Wt{});
}

}  // namespace scan_detail

namespace reference {

/// Reference selective-scan forward over a validated ScanParams: writes p.out (b, d, l) and, when
/// p.last_state is set, the last state (b | n_seqs, d, n). In: the input element type (float, double,
/// ssm::half, ssm::bfloat16); the weights and state are double for double inputs, float otherwise.
template <class In>
void selective_scan_forward(const ScanParams& p) {
  if (p.is_complex) scan_detail::selective_scan_forward_impl<In, true>(p);
  else scan_detail::selective_scan_forward_impl<In, false>(p);
}

/// Reference selective-scan backward: fills every non-null gradient output of gp (shapes in
/// ScanGradParams) from grad_out (b, d, l) and the optional grad_last_state (b | n_seqs, d, n).
template <class In>
void selective_scan_backward(const ScanParams& p, const ScanGradParams& gp) {
  if (p.is_complex) scan_detail::selective_scan_backward_impl<In, true>(p, gp);
  else scan_detail::selective_scan_backward_impl<In, false>(p, gp);
}

}  // namespace reference
}  // namespace ssm

/// The reference's entries for one input type In, compiled once where SSM_EXTERN_INSTANCES is set
/// (core/instances.hpp, src/instances/): the tests' oracle, and the op's path = reference.
#define SSM_REFERENCE_SCAN_INSTANCES(PREFIX, In)                                  \
  PREFIX void ssm::reference::selective_scan_forward<In>(const ::ssm::ScanParams&); \
  PREFIX void ssm::reference::selective_scan_backward<In>(const ::ssm::ScanParams&, const ::ssm::ScanGradParams&);
#if SSM_EXTERN_INSTANCES
SSM_FOR_EACH_INPUT(SSM_REFERENCE_SCAN_INSTANCES, extern template)
#endif
