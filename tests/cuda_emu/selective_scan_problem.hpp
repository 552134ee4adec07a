// A selective-scan problem for the CUDA kernel tests (emulated and on a GPU): random inputs of a given shape
// and feature set, the ScanParams pointing at them, and the check of a kernel's outputs against a plain
// double-precision loop of MATH.md §5 (the oracle until the reference of branch `scan` is merged).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "ssm/core/dtype.hpp"
#include "ssm/core/params/selective_scan.hpp"

namespace ssm_test {

using ssm::ScanParams;
using index_t = std::int64_t;

struct Case {
  index_t b = 2, d = 4, l = 100, n = 16, g = 2;
  bool variable_B = true, variable_C = true;
  bool has_z = true, has_D = true, has_bias = true, softplus = true, has_init = true;
  float delta_offset = 0;                // added to every delta: large values make exp(Delta A) << 1
  std::vector<std::int64_t> cu_seqlens;  // non-empty: b = 1, packed sequences
  std::string name() const {
    std::string s = "b" + std::to_string(b) + " d" + std::to_string(d) + " l" + std::to_string(l) + " n" +
                    std::to_string(n) + " g" + std::to_string(g);
    if (!variable_B) s += " fixedB";
    if (!variable_C) s += " fixedC";
    if (!has_z) s += " no-z";
    if (!has_D) s += " no-D";
    if (!has_bias) s += " no-bias";
    if (!softplus) s += " no-softplus";
    if (!has_init) s += " no-init";
    if (!cu_seqlens.empty()) s += " varlen";
    if (delta_offset != 0) s += " delta+" + std::to_string(delta_offset);
    return s;
  }
};

template <class In>
std::vector<In> random_inputs(std::mt19937& rng, std::size_t count, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<In> v(count);
  for (auto& x : v) x = ssm::from_float<In>(dist(rng));
  return v;
}

double to_d(float x) { return x; }
template <class In>
double to_d(In x) {
  return static_cast<double>(ssm::to_float(x));
}

// Tolerances: the kernel computes in f32 (expf, a tree-shaped scan instead of the sequential one), the
// reference in double on the same (rounded) inputs. With A <= -0.5 and Delta >= 0.05 each state forgets within
// ~40 steps, so f32 rounding stays at a few ulp of the magnitude of the terms summed into y (that magnitude,
// sum_n |C h| + |D u|, is the scale): 1e-5 relative to it, the bound. f16 / bf16 add one rounding of
// the output: half an ulp, 2^-11 and 2^-8 relative.
template <class In>
double out_tolerance() {
  if constexpr (std::is_same_v<In, float>) return 1e-5;
  else if constexpr (std::is_same_v<In, ssm::half>) return 1e-5 + std::ldexp(1.0, -11);
  else return 1e-5 + std::ldexp(1.0, -8);
}

template <class In>
struct ScanProblem {
  Case c;
  bool varlen = false;
  index_t seqs = 0, max_len = 0;
  std::vector<In> u, delta, z, B_var, C_var;
  std::vector<float> B_fix, C_fix, D, bias, h0, A;
  ScanParams p;  // host pointers into the vectors above; out and last_state point at out / last
  std::vector<float> last;
  std::vector<In> out;

  explicit ScanProblem(const Case& c_) : c(c_) {
    varlen = !c.cu_seqlens.empty();
    const index_t b = c.b, d = c.d, l = c.l, n = c.n, g = c.g;
    seqs = varlen ? static_cast<index_t>(c.cu_seqlens.size()) - 1 : b;
    std::mt19937 rng(static_cast<unsigned>(1234 + l * 7 + n * 13 + g));
    u = random_inputs<In>(rng, static_cast<std::size_t>(b * d * l), -1.0f, 1.0f);       // (b, d, l)
    delta = random_inputs<In>(rng, static_cast<std::size_t>(b * d * l), -3.0f, -0.5f);  // (b, d, l)
    z = random_inputs<In>(rng, static_cast<std::size_t>(b * d * l), -2.0f, 2.0f);       // (b, d, l)
    B_var = random_inputs<In>(rng, static_cast<std::size_t>(b * g * n * l), -1.0f, 1.0f);  // (b, g, n, l)
    C_var = random_inputs<In>(rng, static_cast<std::size_t>(b * g * n * l), -1.0f, 1.0f);  // (b, g, n, l)
    B_fix = random_inputs<float>(rng, static_cast<std::size_t>(d * n), -1.0f, 1.0f);       // (d, n)
    C_fix = random_inputs<float>(rng, static_cast<std::size_t>(d * n), -1.0f, 1.0f);       // (d, n)
    D = random_inputs<float>(rng, static_cast<std::size_t>(d), -1.0f, 1.0f);               // (d)
    bias = random_inputs<float>(rng, static_cast<std::size_t>(d), 0.0f, 0.5f);             // (d)
    h0 = random_inputs<float>(rng, static_cast<std::size_t>(seqs * d * n), -1.0f, 1.0f);   // (seqs, d, n)
    A.assign(static_cast<std::size_t>(d * n), 0.0f);                                      // (d, n)
    {
      std::uniform_real_distribution<float> jitter(0.5f, 1.5f);
      for (index_t i = 0; i < d; ++i)
        for (index_t s = 0; s < n; ++s) A[static_cast<std::size_t>(i * n + s)] = -static_cast<float>(s + 1) * jitter(rng);
    }
    // Without softplus delta is used as given: keep it positive.
    if (!c.softplus)
      for (auto& x : delta) x = ssm::from_float<In>(0.05f + std::fabs(ssm::to_float(x)) * 0.2f);
    if (c.delta_offset != 0)
      for (auto& x : delta) x = ssm::from_float<In>(ssm::to_float(x) + c.delta_offset);

    p.batch = b;
    p.dim = d;
    p.seqlen = l;
    p.dstate = n;
    p.n_groups = g;
    p.variable_B = c.variable_B;
    p.variable_C = c.variable_C;
    p.delta_softplus = c.softplus;
    p.u = u.data();
    p.u_batch_stride = d * l;
    p.u_d_stride = l;
    p.delta = delta.data();
    p.delta_batch_stride = d * l;
    p.delta_d_stride = l;
    if (c.has_z) {
      p.z = z.data();
      p.z_batch_stride = d * l;
      p.z_d_stride = l;
    }
    if (c.variable_B) {
      p.B = B_var.data();
      p.B_batch_stride = g * n * l;
      p.B_group_stride = n * l;
      p.B_n_stride = l;
    } else {
      p.B = B_fix.data();
      p.B_group_stride = n;
      p.B_n_stride = 1;
    }
    if (c.variable_C) {
      p.C = C_var.data();
      p.C_batch_stride = g * n * l;
      p.C_group_stride = n * l;
      p.C_n_stride = l;
    } else {
      p.C = C_fix.data();
      p.C_group_stride = n;
      p.C_n_stride = 1;
    }
    p.A = A.data();
    p.A_d_stride = n;
    p.A_n_stride = 1;
    if (c.has_D) p.D = D.data();
    if (c.has_bias) p.delta_bias = bias.data();
    if (c.has_init) {
      p.initial_state = h0.data();
      p.init_batch_stride = d * n;
      p.init_d_stride = n;
      p.init_n_stride = 1;
    }
    last.assign(static_cast<std::size_t>(seqs * d * n), -99.0f);  // (seqs, d, n)
    p.last_state = last.data();
    p.last_batch_stride = d * n;
    p.last_d_stride = n;
    if (varlen) {
      p.cu_seqlens = c.cu_seqlens.data();
      p.n_seqs = seqs;
    }
    out.assign(static_cast<std::size_t>(b * d * l), ssm::from_float<In>(-77.0f));  // (b, d, l)
    p.out = out.data();
    p.out_batch_stride = d * l;
    p.out_d_stride = l;

    max_len = l;
    if (varlen) {
      max_len = 0;
      for (index_t s = 0; s < seqs; ++s)
        max_len = std::max<index_t>(max_len, c.cu_seqlens[static_cast<std::size_t>(s + 1)] - c.cu_seqlens[static_cast<std::size_t>(s)]);
    }
  }

  /// Checks out (b, d, l), last (seqs, d, n) and, when given, the chunk-end states saved (seqs, d, n_chunks_max, n)
  /// against the double loop; returns the worst |out - reference| / scale.
  double check(const std::vector<In>& got_out, const std::vector<float>& got_last, const std::vector<float>* saved,
               index_t chunk_len, index_t n_chunks_max) const {
    const index_t b = c.b, d = c.d, l = c.l, n = c.n, g = c.g;
    (void)b;
    // Reference: MATH.md §5 in double, token by token.
    const double tol = out_tolerance<In>();
    double worst = 0;
    for (index_t q = 0; q < seqs; ++q) {
      const index_t bb = varlen ? 0 : q;
      const index_t start = varlen ? c.cu_seqlens[static_cast<std::size_t>(q)] : 0;
      const index_t len = varlen ? c.cu_seqlens[static_cast<std::size_t>(q + 1)] - start : l;
      for (index_t ch = 0; ch < d; ++ch) {
        const index_t grp = ch / (d / g);
        std::vector<double> h(static_cast<std::size_t>(n));  // (n)
        for (index_t s = 0; s < n; ++s) h[static_cast<std::size_t>(s)] = c.has_init ? h0[static_cast<std::size_t>((q * d + ch) * n + s)] : 0.0;
        for (index_t t = 0; t < len; ++t) {
          const index_t pos = start + t;
          const std::size_t x = static_cast<std::size_t>((bb * d + ch) * l + pos);
          double Delta = to_d(delta[x]) + (c.has_bias ? bias[static_cast<std::size_t>(ch)] : 0.0);
          if (c.softplus) Delta = Delta <= 20.0 ? std::log1p(std::exp(Delta)) : Delta;
          const double u_t = to_d(u[x]);
          double y = 0, scale = 0;
          for (index_t s = 0; s < n; ++s) {
            const std::size_t bc = static_cast<std::size_t>(((bb * g + grp) * n + s) * l + pos);
            const double B_t = c.variable_B ? to_d(B_var[bc]) : B_fix[static_cast<std::size_t>(ch * n + s)];
            const double C_t = c.variable_C ? to_d(C_var[bc]) : C_fix[static_cast<std::size_t>(ch * n + s)];
            double& hs = h[static_cast<std::size_t>(s)];
            hs = std::exp(Delta * A[static_cast<std::size_t>(ch * n + s)]) * hs + Delta * B_t * u_t;
            y += C_t * hs;
            scale += std::fabs(C_t * hs);
          }
          if (c.has_D) {
            y += D[static_cast<std::size_t>(ch)] * u_t;
            scale += std::fabs(D[static_cast<std::size_t>(ch)] * u_t);
          }
          if (c.has_z) {
            const double z_t = to_d(z[x]);
            const double gate = z_t / (1.0 + std::exp(-z_t));
            y *= gate;
            scale *= std::fabs(gate);
          }
          const double err = std::fabs(to_d(got_out[x]) - y);
          const double bound = tol * (scale + 1e-30) + 1e-30;
          worst = std::max(worst, err / (scale + 1e-30));
          if (!(err <= bound)) {
            ADD_FAILURE() << "out[seq " << q << ", ch " << ch << ", t " << t << "] = " << to_d(got_out[x]) << ", reference "
                          << y << ", scale " << scale;
            return worst;
          }
          // The state at each chunk end (and at the sequence end) is what the backward pass restarts from.
          if (saved && ((t + 1) % chunk_len == 0 || t + 1 == len)) {
            const index_t chunk = t / chunk_len;
            for (index_t s = 0; s < n; ++s) {
              const double ref = h[static_cast<std::size_t>(s)];
              const float got = (*saved)[static_cast<std::size_t>(((q * d + ch) * n_chunks_max + chunk) * n + s)];
              EXPECT_NEAR(got, ref, 1e-5 * (1.0 + std::fabs(ref))) << "chunk state " << chunk << " s " << s;
            }
          }
        }
        // Output positions outside this sequence stay untouched (varlen: other sequences write them).
        for (index_t s = 0; s < n; ++s) {
          const double ref = h[static_cast<std::size_t>(s)];
          const float got = got_last[static_cast<std::size_t>((q * d + ch) * n + s)];
          EXPECT_NEAR(got, ref, 1e-5 * (1.0 + std::fabs(ref))) << "last state seq " << q << " ch " << ch << " s " << s;
        }
      }
    }
    return worst;
  }

  /// Gradients of sum(grad_out * out) + sum(grad_last * last_state) by the plain double loop (MATH.md §5,
  /// "Backward"): shapes as ScanGradParams (grad_B / grad_C variable (b, g, n, l) or fixed (d, n)).
  struct Grads {
    std::vector<double> u, delta, z, A, B, C, D, bias, h0;
  };
  Grads reference_grads(const std::vector<float>& grad_out, const std::vector<float>& grad_last) const {
    const index_t b = c.b, d = c.d, l = c.l, n = c.n, g = c.g;
    Grads r;
    r.u.assign(static_cast<std::size_t>(b * d * l), 0.0);
    r.delta = r.u;
    r.z = r.u;
    r.A.assign(static_cast<std::size_t>(d * n), 0.0);
    r.B.assign(c.variable_B ? static_cast<std::size_t>(b * g * n * l) : static_cast<std::size_t>(d * n), 0.0);
    r.C.assign(c.variable_C ? static_cast<std::size_t>(b * g * n * l) : static_cast<std::size_t>(d * n), 0.0);
    r.D.assign(static_cast<std::size_t>(d), 0.0);
    r.bias = r.D;
    r.h0.assign(static_cast<std::size_t>(b * d * n), 0.0);
    for (index_t bb = 0; bb < b; ++bb)
      for (index_t ch = 0; ch < d; ++ch) {
        const index_t grp = ch / (d / g);
        std::vector<double> H(static_cast<std::size_t>(l * n)), Bt(static_cast<std::size_t>(l * n)),
            Ct(static_cast<std::size_t>(l * n)), bt(static_cast<std::size_t>(l * n)), Dl(static_cast<std::size_t>(l)),
            Y(static_cast<std::size_t>(l));
        std::vector<double> h(static_cast<std::size_t>(n));
        for (index_t s = 0; s < n; ++s) h[static_cast<std::size_t>(s)] = c.has_init ? h0[static_cast<std::size_t>((bb * d + ch) * n + s)] : 0.0;
        auto at = [&](index_t t, index_t s) { return static_cast<std::size_t>(t * n + s); };
        for (index_t t = 0; t < l; ++t) {
          const std::size_t x = static_cast<std::size_t>((bb * d + ch) * l + t);
          double Delta = to_d(delta[x]) + (c.has_bias ? bias[static_cast<std::size_t>(ch)] : 0.0);
          if (c.softplus) Delta = Delta <= 20.0 ? std::log1p(std::exp(Delta)) : Delta;
          Dl[static_cast<std::size_t>(t)] = Delta;
          double y = c.has_D ? D[static_cast<std::size_t>(ch)] * to_d(u[x]) : 0.0;
          for (index_t s = 0; s < n; ++s) {
            const std::size_t bc = static_cast<std::size_t>(((bb * g + grp) * n + s) * l + t);
            Bt[at(t, s)] = c.variable_B ? to_d(B_var[bc]) : B_fix[static_cast<std::size_t>(ch * n + s)];
            Ct[at(t, s)] = c.variable_C ? to_d(C_var[bc]) : C_fix[static_cast<std::size_t>(ch * n + s)];
            bt[at(t, s)] = Delta * Bt[at(t, s)] * to_d(u[x]);
            double& hs = h[static_cast<std::size_t>(s)];
            hs = std::exp(Delta * A[static_cast<std::size_t>(ch * n + s)]) * hs + bt[at(t, s)];
            H[at(t, s)] = hs;
            y += Ct[at(t, s)] * hs;
          }
          Y[static_cast<std::size_t>(t)] = y;
        }
        std::vector<double> G(static_cast<std::size_t>(n));  // a_{t+1} g_{t+1}, flowing backwards
        for (index_t s = 0; s < n; ++s) G[static_cast<std::size_t>(s)] = grad_last[static_cast<std::size_t>((bb * d + ch) * n + s)];
        for (index_t t = l - 1; t >= 0; --t) {
          const std::size_t x = static_cast<std::size_t>((bb * d + ch) * l + t);
          const double Delta = Dl[static_cast<std::size_t>(t)], u_t = to_d(u[x]);
          double dy = grad_out[x];
          if (c.has_z) {
            const double z_t = to_d(z[x]), sig = 1.0 / (1.0 + std::exp(-z_t));
            dy = grad_out[x] * z_t * sig;
            r.z[x] = grad_out[x] * Y[static_cast<std::size_t>(t)] * sig * (1.0 + z_t * (1.0 - sig));
          }
          double grad_Delta = 0.0;
          r.u[x] += (c.has_D ? D[static_cast<std::size_t>(ch)] : 0.0) * dy;
          for (index_t s = 0; s < n; ++s) {
            const double A_s = A[static_cast<std::size_t>(ch * n + s)];
            const double gs = G[static_cast<std::size_t>(s)] + Ct[at(t, s)] * dy;
            const double a_h_prev = H[at(t, s)] - bt[at(t, s)];
            r.u[x] += gs * Delta * Bt[at(t, s)];
            grad_Delta += gs * (A_s * a_h_prev + Bt[at(t, s)] * u_t);
            r.A[static_cast<std::size_t>(ch * n + s)] += gs * Delta * a_h_prev;
            const std::size_t bc = static_cast<std::size_t>(((bb * g + grp) * n + s) * l + t);
            (c.variable_B ? r.B[bc] : r.B[static_cast<std::size_t>(ch * n + s)]) += gs * Delta * u_t;
            (c.variable_C ? r.C[bc] : r.C[static_cast<std::size_t>(ch * n + s)]) += dy * H[at(t, s)];
            G[static_cast<std::size_t>(s)] = std::exp(Delta * A_s) * gs;
          }
          if (c.softplus) {
            const double xr = to_d(delta[x]) + (c.has_bias ? bias[static_cast<std::size_t>(ch)] : 0.0);
            if (xr <= 20.0) grad_Delta /= 1.0 + std::exp(-xr);
          }
          r.delta[x] = grad_Delta;
          r.bias[static_cast<std::size_t>(ch)] += grad_Delta;
          r.D[static_cast<std::size_t>(ch)] += dy * u_t;
        }
        for (index_t s = 0; s < n; ++s) r.h0[static_cast<std::size_t>((bb * d + ch) * n + s)] = G[static_cast<std::size_t>(s)];
      }
    return r;
  }
};

}  // namespace ssm_test
