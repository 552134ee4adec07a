// TTT-Linear's backward on the CPU (docs/ttt_linear.md; the forward in cpu/ttt_linear.hpp): the dual form's, one
// mini-batch at a time in reverse, threads over (sequence, head). A forward pass keeps every mini-batch's starting
// weights Ŵ′ and final pending sum ((d + 1) d numbers each) and its rows' inner gradients G with what their
// derivative needs (3 d numbers and one more per token); each mini-batch then recomputes E = diag(η) G,
// P = tril(Q̂K̂ᵀ), R = P E + Q̂ A_0 and Ẑ = Q̂Ŵ′ − diag(τ) R, and, with Ẑ̄ = LN'(ḡO),
// M = diag(τ) Ẑ̄, C the gradient of the pending sum the mini-batch leaves (−τ_{m−1} Ŵ̄′_next when it ends, else the
// carried Ā) and the carried Ŵ̄′:
//   Q̂̄ = Ẑ̄ Ŵ′ᵀ − tril(M Eᵀ) K̂ − M A_0ᵀ          Ē = K̂ C − Pᵀ M            K̂̄ = −tril(M Eᵀ)ᵀ Q̂ + E Cᵀ
//   Ŵ̄′ += Q̂ᵀ Ẑ̄                                  Ā_0 = C − Q̂ᵀ M (first)     τ̄_i −= Ẑ̄_t · R_t
// then η̄ = rowdot(G, Ē), Ḡ = diag(η) Ē through the inner gradient's derivative to Z̄ and v − k, and Z = K̂Ŵ′:
// K̂̄ += Z̄ Ŵ′ᵀ, Ŵ̄′ += K̂ᵀ Z̄. The layer-norm weights' and position weights' gradients are summed per task, then over
// the tasks.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "ssm/core/instances.hpp"
#include "ssm/core/params/ttt_linear.hpp"
#include "ssm/cpu/convert.hpp"
#include "ssm/cpu/layer_norm.hpp"
#include "ssm/cpu/linear_attention.hpp"
#include "ssm/cpu/ssd/chunks.hpp"
#include "ssm/cpu/threads.hpp"
#include "ssm/cpu/ttt_linear.hpp"

namespace ssm::cpu {

namespace ttt_linear {

/// The backward of inner_gradient for Ḡ, from what the forward left: ẑ (zhat), e and G of the row and 1 / σ. z̄ and r̄
/// (the gradient of r = v − k) written, γ̄ and β̄ added (zbar and rbar alias no input; rbar holds ḡ first). G is linear
/// in g = γ ⊙ e with the symmetric derivative (I − 11ᵀ/d − ẑẑᵀ/d) / σ; ẑ also enters G directly and through e, and σ
/// directly.
template <class T>
void inner_gradient_backward(const T* zhat, const T* e, const T* G, T inv_sigma, const T* gamma, const T* Gbar,
                             std::int64_t d, T* zbar, T* rbar, T* gamma_bar, T* beta_bar) {
  using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
  using CArr = Eigen::Map<const Arr>;
  using MArr = Eigen::Map<Arr>;
  const T dn = static_cast<T>(d);
  const CArr zh(zhat, d), Gb(Gbar, d), gm(gamma, d), em(e, d);
  const T mGb = reduce::sum(Gbar, d) / dn, mGbz = reduce::dot(Gbar, zhat, d) / dn, GbG = reduce::dot(Gbar, G, d);
  const T mgz =
      reduce::sum_of<T>(d, [&](auto read, std::int64_t j) { return read(gamma, j) * read(e, j) * read(zhat, j); }) / dn;
  const T sigma_bar = -GbG * inv_sigma;
  MArr gb(rbar, d), zb(zbar, d);  // ḡ, the gradient of g = γ ⊙ e, first held in r̄ (no temporary row)
  gb = (Gb - mGb - zh * mGbz) * inv_sigma;
  MArr(gamma_bar, d) += gb * (em + gm * zh);
  MArr(beta_bar, d) += gb * gm;
  zb = -(mgz * Gb + gm * em * mGbz) * inv_sigma + gb * gm * gm;  // ẑ̄
  gb *= -gm;                                                     // r̄ = −γ ⊙ ḡ
  const T mzb = reduce::sum(zbar, d) / dn, mzbz = reduce::dot(zbar, zhat, d) / dn;
  zb = (zb - mzb - zh * mzbz) * inv_sigma + (sigma_bar / dn) * zh;
}

template <class In>
void backward_dual(const TttLinearParams& p, const TttLinearGradParams& gr, int threads) {
  using T = compute_t<In>;
  using M = ssd::Matrix<T>;
  const std::int64_t h = p.nheads, d = p.d, m = p.mini_batch, l = p.seqlen, size = p.state_size();
  const std::int64_t tasks = p.rows() * h;
  const std::vector<T> tau = position_weights<T>(p);
  const T eps = static_cast<T>(p.ln_eps);
  // per task: γ̄ (d), β̄ (d), τ̄ (m), summed after the threads
  std::vector<T> partial(static_cast<std::size_t>(tasks * (2 * d + m)), T(0));
  parallel_for(tasks, threads, [&](std::int64_t task) {
    const std::int64_t s = task / h, hh = task % h, bi = p.seq_row(s);
    const std::int64_t t_begin = p.seq_begin(s), t_end = p.seq_end(s);
    T* gb = partial.data() + task * (2 * d + m);
    T* bb = gb + d;
    T* taub = bb + d;
    const T* gamma = static_cast<const T*>(p.ln_weight) + hh * d;
    const T* beta = static_cast<const T*>(p.ln_bias) + hh * d;
    M W(d + 1, d), A0(d + 1, d);
    load_state(p, task, W.data(), A0.data());
    const bool pending_in = p.initial_pending != nullptr;
    // the mini-batches: first token, length, first position; each one's starting Ŵ′
    struct Batch {
      std::int64_t t0, n, i0;
    };
    std::vector<Batch> batches;
    for (std::int64_t t0 = t_begin, i0 = p.start; t0 < t_end; i0 = 0) {
      batches.push_back({t0, std::min(m - i0, t_end - t0), i0});
      t0 += batches.back().n;
    }
    // per mini-batch, from the forward pass: the starting Ŵ′, A_end, and the rows' ẑ, e, Gu and 1 / σ
    std::vector<M> Ws(batches.size()), Aends(batches.size()), Us(batches.size()), Es(batches.size()), Gs(batches.size());
    std::vector<std::vector<T>> inv_sigmas(batches.size());
    M Qh, Kh, V, Z, U, Ee, Gu, E, P, R, Zq, Uq, Zqb, Mt, Qhb, Khb, Eb, Pb, Zb, Aend, C, Wb, Ab, A0b;  // n × (d + 1) | d, n × n
    std::vector<T> eta, inv_sigma, Gbar(static_cast<std::size_t>(d));
    // rows of one mini-batch in the compute type: Q̂, K̂ (n, d + 1), V (n, d), η (n)
    auto load_batch = [&](const Batch& b) { load_minibatch<In>(p, bi, hh, b.t0, b.n, Qh, Kh, V, eta); };
    // Z = K̂Ŵ′; the rows' inner gradients Gu (ẑ in U, e in Ee, 1 / σ); E = diag(η) Gu; A_end = [A_0 +] K̂ᵀE
    auto inner = [&](const Batch& b, const M& Wstart, bool with_a0) {
      Z.noalias() = Kh * Wstart;
      U.resize(b.n, d), Ee.resize(b.n, d), Gu.resize(b.n, d), inv_sigma.resize(static_cast<std::size_t>(b.n));
      for (std::int64_t r = 0; r < b.n; ++r)
        inv_sigma[static_cast<std::size_t>(r)] =
            inner_gradient(&Z(r, 0), &Kh(r, 0), &V(r, 0), gamma, beta, d, eps, &U(r, 0), &Ee(r, 0), &Gu(r, 0));
      E = Gu;
      for (std::int64_t r = 0; r < b.n; ++r) E.row(r) *= eta[static_cast<std::size_t>(r)];
      Aend.noalias() = Kh.transpose() * E;
      if (with_a0) Aend += A0;
    };
    // forward: every mini-batch's starting Ŵ′
    {
      M Wcur = W;
      for (std::size_t bk = 0; bk < batches.size(); ++bk) {
        const Batch& b = batches[bk];
        Ws[bk] = Wcur;
        load_batch(b);
        inner(b, Wcur, bk == 0 && pending_in);
        Aends[bk] = Aend, Us[bk] = U, Es[bk] = Ee, Gs[bk] = Gu, inv_sigmas[bk] = inv_sigma;
        if (b.i0 + b.n == m) Wcur.noalias() -= tau[static_cast<std::size_t>(m - 1)] * Aend;
      }
    }
    Wb = M::Zero(d + 1, d), Ab = M::Zero(d + 1, d);  // the gradients of the state the current mini-batch leaves
    if (gr.grad_final_state) Wb = Eigen::Map<const M>(static_cast<const T*>(gr.grad_final_state) + task * size, d + 1, d);
    if (gr.grad_final_pending) Ab = Eigen::Map<const M>(static_cast<const T*>(gr.grad_final_pending) + task * size, d + 1, d);
    std::vector<T> go(static_cast<std::size_t>(d)), out_row(static_cast<std::size_t>(d));
    for (std::size_t bk = batches.size(); bk-- > 0;) {
      const Batch& b = batches[bk];
      const M& Wst = Ws[bk];
      const bool with_a0 = bk == 0 && pending_in;
      load_batch(b);
      Aend.swap(Aends[bk]), U.swap(Us[bk]), Ee.swap(Es[bk]), Gu.swap(Gs[bk]), inv_sigma.swap(inv_sigmas[bk]);
      E = Gu;
      for (std::int64_t r = 0; r < b.n; ++r) E.row(r) *= eta[static_cast<std::size_t>(r)];
      P.noalias() = Qh * Kh.transpose();
      P.template triangularView<Eigen::StrictlyUpper>().setZero();
      R.noalias() = P * E;
      if (with_a0) R.noalias() += Qh * A0;
      Zq.noalias() = Qh * Wst;
      for (std::int64_t r = 0; r < b.n; ++r) Zq.row(r) -= tau[static_cast<std::size_t>(b.i0 + r)] * R.row(r);
      // Ẑ̄ = LN'(ḡo), row by row
      Zqb.resize(b.n, d), Uq.resize(b.n, d);
      for (std::int64_t r = 0; r < b.n; ++r) {
        const T inv_s = layer_norm_row(&Zq(r, 0), gamma, beta, d, eps, &Uq(r, 0), out_row.data());
        load_row(static_cast<const In*>(gr.grad_out) + ((bi * l + b.t0 + r) * h + hh) * d, d, go.data());
        layer_norm_row_backward(&Uq(r, 0), inv_s, gamma, go.data(), d, &Zqb(r, 0), gb, bb);
      }
      // C: the gradient of the pending sum the mini-batch leaves
      if (b.i0 + b.n == m) {
        taub[m - 1] -= (Aend.array() * Wb.array()).sum();
        C = -tau[static_cast<std::size_t>(m - 1)] * Wb;
      } else {
        C = Ab;
      }
      Mt = Zqb;  // M = diag(τ) Ẑ̄
      for (std::int64_t r = 0; r < b.n; ++r) {
        taub[b.i0 + r] -= Zqb.row(r).dot(R.row(r));
        Mt.row(r) *= tau[static_cast<std::size_t>(b.i0 + r)];
      }
      Pb.noalias() = Mt * E.transpose();  // tril(M Eᵀ) = −P̄
      Pb.template triangularView<Eigen::StrictlyUpper>().setZero();
      Qhb.noalias() = Zqb * Wst.transpose();
      Qhb.noalias() -= Pb * Kh;
      if (with_a0) Qhb.noalias() -= Mt * A0.transpose();
      Eb.noalias() = Kh * C;
      Eb.noalias() -= P.transpose() * Mt;
      Khb.noalias() = E * C.transpose();
      Khb.noalias() -= Pb.transpose() * Qh;
      Wb.noalias() += Qh.transpose() * Zqb;
      if (bk == 0) {  // Ā_0 matters for the first mini-batch only (every earlier one ended with A = 0)
        A0b = C;
        A0b.noalias() -= Qh.transpose() * Mt;
      }
      // through E = diag(η) Gu (η̄ = Gu · Ē, Ḡ = η Ē) and the inner gradient to Z̄ and r̄ = v̄ (into V, free now)
      Zb.resize(b.n, d);
      for (std::int64_t r = 0; r < b.n; ++r) {
        const std::size_t rr = static_cast<std::size_t>(r);
        if (gr.grad_eta) {
          const T eb = Gu.row(r).dot(Eb.row(r));
          store_row(&eb, 1, static_cast<In*>(gr.grad_eta) + (bi * l + b.t0 + r) * h + hh);
        }
        for (std::int64_t j = 0; j < d; ++j) Gbar[static_cast<std::size_t>(j)] = eta[rr] * Eb(r, j);
        inner_gradient_backward(&U(r, 0), &Ee(r, 0), &Gu(r, 0), inv_sigma[rr], gamma, Gbar.data(), d, &Zb(r, 0),
                                &V(r, 0), gb, bb);
      }
      Khb.noalias() += Zb * Wst.transpose();
      Wb.noalias() += Kh.transpose() * Zb;
      for (std::int64_t r = 0; r < b.n; ++r) {
        const std::int64_t off = ((bi * l + b.t0 + r) * h + hh) * d;
        load_row(static_cast<const In*>(gr.grad_out) + off, d, go.data());
        for (std::int64_t j = 0; j < d; ++j) {
          Qhb(r, j) += go[static_cast<std::size_t>(j)];  // the residual q + LN(·)
          Khb(r, j) -= V(r, j);                          // r = v − k
        }
        if (gr.grad_q) store_row(&Qhb(r, 0), d, static_cast<In*>(gr.grad_q) + off);
        if (gr.grad_k) store_row(&Khb(r, 0), d, static_cast<In*>(gr.grad_k) + off);
        if (gr.grad_v) store_row(&V(r, 0), d, static_cast<In*>(gr.grad_v) + off);
      }
    }
    if (!batches.empty()) Ab = A0b;  // else the final pending sum's gradient passes through
    if (gr.grad_initial_state) std::copy_n(Wb.data(), size, static_cast<T*>(gr.grad_initial_state) + task * size);
    if (gr.grad_initial_pending) std::copy_n(Ab.data(), size, static_cast<T*>(gr.grad_initial_pending) + task * size);
  });
  // the layer-norm weights' and position weights' gradients: summed over the tasks in order
  std::vector<T> gamma_sum(static_cast<std::size_t>(h * d), T(0)), beta_sum(gamma_sum.size(), T(0));
  std::vector<T> tau_sum(static_cast<std::size_t>(m), T(0));
  for (std::int64_t task = 0; task < tasks; ++task) {
    const T* src = partial.data() + task * (2 * d + m);
    const std::int64_t hh = task % h;
    for (std::int64_t j = 0; j < d; ++j)
      gamma_sum[static_cast<std::size_t>(hh * d + j)] += src[j], beta_sum[static_cast<std::size_t>(hh * d + j)] += src[d + j];
    for (std::int64_t i = 0; i < m; ++i) tau_sum[static_cast<std::size_t>(i)] += src[2 * d + i];
  }
  if (gr.grad_ln_weight) std::copy(gamma_sum.begin(), gamma_sum.end(), static_cast<T*>(gr.grad_ln_weight));
  if (gr.grad_ln_bias) std::copy(beta_sum.begin(), beta_sum.end(), static_cast<T*>(gr.grad_ln_bias));
  if (gr.grad_position_weights) std::copy(tau_sum.begin(), tau_sum.end(), static_cast<T*>(gr.grad_position_weights));
}

}  // namespace ttt_linear

/// The dual form's backward over p and g (validated by the op, ops/ttt_linear.hpp), on `threads` threads (0: by the
/// work).
inline void ttt_linear_backward_dual(const TttLinearParams& p, const TttLinearGradParams& g, int threads) {
  const int t = cpu_threads(threads, p.batch * p.seqlen * p.nheads * p.d * p.d);
  linear_attention::by_dtype(p, "ttt_linear_backward",
                             [&](auto tag) { ttt_linear::backward_dual<decltype(tag)>(p, g, t); });
}

}  // namespace ssm::cpu

/// The kernels' entry points for one input type In, compiled once where SSM_EXTERN_INSTANCES is set
/// (core/instances.hpp, src/instances/).
#define SSM_CPU_TTT_LINEAR_BACKWARD_INSTANCES(PREFIX, In)                            \
  PREFIX void ssm::cpu::ttt_linear::backward_dual<In>(const ::ssm::TttLinearParams&, \
                                                      const ::ssm::TttLinearGradParams&, int);
#if SSM_EXTERN_INSTANCES
SSM_FOR_EACH_INPUT(SSM_CPU_TTT_LINEAR_BACKWARD_INSTANCES, extern template)
#endif
