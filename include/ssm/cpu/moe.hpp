// The CPU path of the sparse mixture of experts (ops/moe.hpp; the formulas in core/params/moe.hpp): the router as one
// GEMM over all tokens, the routing per token (moe_route), then the tokens grouped by expert and each expert's SwiGLU
// as two GEMMs over its gathered rows (cpu::linear_forward: Eigen, or the 16-bit weight kernels), so an expert's
// weights are streamed once per call, not once per token. Each (token, choice) pair has its own output row, summed
// per token in choice order at the end: the result does not depend on the thread count or the grouping. Threads go
// across experts when at least as many experts are active as threads (prefill, or decoding with k ≥ threads), else
// into each expert's GEMMs. The backward recomputes each expert's hidden and runs its four gradient GEMMs (Eigen) on
// the same grouping.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "ssm/core/instances.hpp"
#include "ssm/core/params/dense.hpp"
#include "ssm/core/params/moe.hpp"
#include "ssm/cpu/linear.hpp"
#include "ssm/cpu/threads.hpp"

namespace ssm::cpu {

namespace moe_detail {

/// y (rows, out; row stride ldy) = x (rows, in; row stride ldx) Wᵀ for W (out, in) in p.weight_dtype: the linear op's
/// CPU path.
template <class T>
void product(const MoeParams& p, const T* x, std::int64_t ldx, const void* W, T* y, std::int64_t ldy, std::int64_t rows,
             std::int64_t in, std::int64_t out, int threads) {
  LinearParams lp;
  lp.rows = rows, lp.in = in, lp.out = out;
  lp.x = x, lp.x_row_stride = ldx, lp.weight = W, lp.weight_dtype = p.weight_dtype;
  lp.y = y, lp.y_row_stride = ldy, lp.dtype = p.dtype;
  linear_forward(lp, threads);
}

/// The routing of every token and the (token, choice) pairs grouped by expert in token order: pair i = r k + j has
/// its own row slot[i], expert e's rows are [first[e], first[e + 1]), token_of[row] is the row's token.
struct Routing {
  std::vector<std::int64_t> chosen, slot, first, token_of, active;  // active: the experts with at least one pair
  std::vector<double> weight, probs;                                // (t, k), and (t, E) when asked for

  template <class T>
  Routing(const MoeParams& p, const T* logits, bool with_probs) {
    const std::int64_t t = p.tokens, E = p.experts, k = p.top_k;
    chosen.resize(static_cast<std::size_t>(t * k)), slot.resize(chosen.size()), weight.resize(chosen.size());
    if (with_probs) probs.resize(static_cast<std::size_t>(t * E));
    std::vector<double> row(static_cast<std::size_t>(E));
    for (std::int64_t r = 0; r < t; ++r) {
      for (std::int64_t e = 0; e < E; ++e) row[e] = static_cast<double>(logits[r * E + e]);
      moe_route(row.data(), E, k, p.normalize_topk, chosen.data() + r * k, weight.data() + r * k,
                with_probs ? probs.data() + r * E : nullptr);
    }
    first.assign(static_cast<std::size_t>(E + 1), 0);
    for (const std::int64_t e : chosen) ++first[e + 1];
    for (std::int64_t e = 0; e < E; ++e) first[e + 1] += first[e];
    token_of.resize(chosen.size());
    std::vector<std::int64_t> fill(first.begin(), first.end() - 1);
    for (std::int64_t i = 0; i < t * k; ++i) {
      slot[i] = fill[chosen[i]]++;
      token_of[slot[i]] = i / k;
    }
    for (std::int64_t e = 0; e < E; ++e)
      if (first[e + 1] > first[e]) active.push_back(e);
  }
};

/// Runs expert(e, threads for its GEMMs) for every active expert: across experts when at least as many are active as
/// threads, else one expert at a time with the threads inside.
template <class F>
void for_each_expert(const Routing& R, int threads, F&& expert) {
  const bool across = static_cast<std::int64_t>(R.active.size()) >= threads;
  parallel_for(static_cast<std::int64_t>(R.active.size()), across ? threads : 1,
               [&](std::int64_t task) { expert(R.active[task], across ? 1 : threads); });
}

/// X (n, H) = the rows of x of expert e's pairs; G (n, 2I) = X W_gate_upᵀ; then G's gate half = act(g) ⊙ u (a) unless
/// keep_g (then a goes to A (n, I) and G is kept).
template <class T>
void expert_hidden(const MoeParams& p, const Routing& R, std::int64_t e, int threads, std::vector<T>& X,
                   std::vector<T>& G, std::vector<T>* A) {
  const std::int64_t H = p.d_model, I = p.d_ff, r0 = R.first[e], n = R.first[e + 1] - r0;
  const T* x = static_cast<const T*>(p.x);
  X.resize(static_cast<std::size_t>(n * H)), G.resize(static_cast<std::size_t>(n * 2 * I));
  for (std::int64_t r = 0; r < n; ++r) std::copy_n(x + R.token_of[r0 + r] * p.x_row_stride, H, X.data() + r * H);
  product(p, X.data(), H, static_cast<const char*>(p.w_gate_up) + e * 2 * I * H * size_of(p.weight_dtype), G.data(),
          2 * I, n, H, 2 * I, threads);
  T* out = G.data();
  if (A) A->resize(static_cast<std::size_t>(n * I)), out = A->data();
  for (std::int64_t r = 0; r < n; ++r) {
    const T* g = G.data() + r * 2 * I;
    T* a = out + r * (A ? I : 2 * I);
    for (std::int64_t i = 0; i < I; ++i) a[i] = moe_activate(p.act, g[i]) * g[I + i];
  }
}

template <class T>
void forward(const MoeParams& p, int threads) {
  const std::int64_t t = p.tokens, H = p.d_model, I = p.d_ff, E = p.experts, k = p.top_k;
  if (t == 0) return;
  threads = cpu_threads(threads, t * k * 3 * I * H + t * E * H);
  const T* x = static_cast<const T*>(p.x);

  // The router: logits (t, E).
  std::vector<T> own_logits;
  T* logits = static_cast<T*>(p.router_logits);
  if (logits == nullptr) own_logits.resize(static_cast<std::size_t>(t * E)), logits = own_logits.data();
  product(p, x, p.x_row_stride, p.router, logits, E, t, H, E, threads);
  const Routing R(p, logits, false);

  // Each active expert: [g | u] = X W_gate_upᵀ, a = act(g) ⊙ u, Y = a W_downᵀ into its rows.
  std::vector<T> Y(static_cast<std::size_t>(t * k * H));  // (t k, H) by slot
  for_each_expert(R, threads, [&](std::int64_t e, int inner) {
    std::vector<T> X, G;
    expert_hidden(p, R, e, inner, X, G, static_cast<std::vector<T>*>(nullptr));
    const std::int64_t r0 = R.first[e], n = R.first[e + 1] - r0;
    product(p, G.data(), 2 * I, static_cast<const char*>(p.w_down) + e * H * I * size_of(p.weight_dtype),
            Y.data() + r0 * H, H, n, I, H, inner);
  });

  // out[r] = Σ_j w_j Y[slot(r, j)], in choice order.
  T* out = static_cast<T*>(p.out);
  for (std::int64_t r = 0; r < t; ++r) {
    T* o = out + r * p.out_row_stride;
    std::fill_n(o, H, T(0));
    for (std::int64_t j = 0; j < k; ++j) {
      const T w = static_cast<T>(R.weight[r * k + j]);
      const T* y = Y.data() + R.slot[r * k + j] * H;
      for (std::int64_t h = 0; h < H; ++h) o[h] += w * y[h];
    }
  }
}

/// The backward (MoeGradParams' formulas) with the weights in T, by the same grouping: per expert the hidden is
/// recomputed, then ḡW_down[e] = (w ḡY)ᵀ A, ḡA = (w ḡY) W_down[e], ḡW_gate_up[e] = [ḡG | ḡU]ᵀ X and that expert's rows
/// of ḡx = [ḡG | ḡU] W_gate_up[e] as Eigen GEMMs; then the routing per token and the router's two GEMMs.
template <class T>
void backward(const MoeParams& p, const MoeGradParams& g, int threads) {
  using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using CMap = Eigen::Map<const Mat>;
  using MMap = Eigen::Map<Mat>;
  const std::int64_t t = p.tokens, H = p.d_model, I = p.d_ff, E = p.experts, k = p.top_k;
  threads = cpu_threads(threads, t * k * 9 * I * H + 3 * t * E * H);
  const T* x = static_cast<const T*>(p.x);
  const T* gy = static_cast<const T*>(g.grad_out);
  std::vector<T> gx(static_cast<std::size_t>(t * H), T(0)), ggu(static_cast<std::size_t>(E * 2 * I * H), T(0)),
      gdn(static_cast<std::size_t>(E * H * I), T(0)), gr(static_cast<std::size_t>(E * H), T(0));
  if (t > 0) {
    std::vector<T> logits(static_cast<std::size_t>(t * E));
    product(p, x, p.x_row_stride, p.router, logits.data(), E, t, H, E, threads);
    const Routing R(p, logits.data(), true);
    std::vector<T> GX(static_cast<std::size_t>(t * k * H));  // (t k, H) by slot: each pair's part of ḡx
    std::vector<double> gw(static_cast<std::size_t>(t * k));  // by slot: ⟨ḡy, o⟩
    std::vector<double> wslot(gw.size());
    for (std::int64_t i = 0; i < t * k; ++i) wslot[R.slot[i]] = R.weight[i];
    for_each_expert(R, threads, [&](std::int64_t e, int) {
      std::vector<T> X, G, A;
      expert_hidden(p, R, e, 1, X, G, &A);
      const std::int64_t r0 = R.first[e], n = R.first[e + 1] - r0;
      const CMap Wgu(static_cast<const T*>(p.w_gate_up) + e * 2 * I * H, 2 * I, H);
      const CMap Wd(static_cast<const T*>(p.w_down) + e * H * I, H, I);
      const CMap Am(A.data(), n, I);
      Mat O = Am * Wd.transpose();  // (n, H) the expert's outputs
      Mat GY(n, H);                 // (n, H) w ḡy
      for (std::int64_t r = 0; r < n; ++r) {
        const T* gyr = gy + R.token_of[r0 + r] * g.grad_out_row_stride;
        double dot = 0;
        for (std::int64_t h = 0; h < H; ++h) dot += double(gyr[h]) * double(O(r, h)), GY(r, h) = T(wslot[r0 + r]) * gyr[h];
        gw[r0 + r] = dot;
      }
      MMap(gdn.data() + e * H * I, H, I).noalias() = GY.transpose() * Am;
      const Mat GA = GY * Wd;  // (n, I)
      Mat GG(n, 2 * I);        // (n, 2I) [ḡg | ḡu]
      for (std::int64_t r = 0; r < n; ++r)
        for (std::int64_t i = 0; i < I; ++i) {
          const T gv = G[r * 2 * I + i], uv = G[r * 2 * I + I + i];
          GG(r, i) = GA(r, i) * uv * moe_activate_grad(p.act, gv);
          GG(r, I + i) = GA(r, i) * moe_activate(p.act, gv);
        }
      MMap(ggu.data() + e * 2 * I * H, 2 * I, H).noalias() = GG.transpose() * CMap(X.data(), n, H);
      MMap(GX.data() + r0 * H, n, H).noalias() = GG * Wgu;
    });
    // Per token: the experts' parts of ḡx in choice order, and the routing's gradient of the logits.
    Mat GL(t, E);
    std::vector<double> gp(static_cast<std::size_t>(E));
    for (std::int64_t r = 0; r < t; ++r) {
      T* gxr = gx.data() + r * H;
      double wgw = 0, S = 0;
      std::fill(gp.begin(), gp.end(), 0.0);
      for (std::int64_t j = 0; j < k; ++j) {
        const std::int64_t i = r * k + j, sl = R.slot[i];
        const T* part = GX.data() + sl * H;
        for (std::int64_t h = 0; h < H; ++h) gxr[h] += part[h];
        wgw += R.weight[i] * gw[sl], S += R.probs[r * E + R.chosen[i]];
      }
      for (std::int64_t j = 0; j < k; ++j) {
        const std::int64_t i = r * k + j;
        gp[R.chosen[i]] = p.normalize_topk ? (gw[R.slot[i]] - wgw) / S : gw[R.slot[i]];
      }
      const double* pr = R.probs.data() + r * E;
      double pgp = 0;
      for (std::int64_t e = 0; e < E; ++e) pgp += pr[e] * gp[e];
      for (std::int64_t e = 0; e < E; ++e) {
        double v = pr[e] * (gp[e] - pgp);
        if (g.grad_router_logits) v += double(static_cast<const T*>(g.grad_router_logits)[r * E + e]);
        GL(r, e) = T(v);
      }
    }
    Eigen::Map<const Mat, 0, Eigen::OuterStride<>> Xm(x, t, H, Eigen::OuterStride<>(p.x_row_stride));
    const CMap Wr(static_cast<const T*>(p.router), E, H);
    MMap(gr.data(), E, H).noalias() = GL.transpose() * Xm;
    MMap(gx.data(), t, H).noalias() += GL * Wr;
  }
  auto put = [](void* dst, const std::vector<T>& v) {
    if (dst) std::copy(v.begin(), v.end(), static_cast<T*>(dst));
  };
  put(g.grad_x, gx), put(g.grad_router, gr), put(g.grad_w_gate_up, ggu), put(g.grad_w_down, gdn);
}

}  // namespace moe_detail

/// The mixture of experts for a validated p (dtype f32 or f64) on up to `threads` threads (0: by the work).
inline void moe_forward(const MoeParams& p, int threads) {
  if (p.dtype == DType::f64) moe_detail::forward<double>(p, threads);
  else moe_detail::forward<float>(p, threads);
}

/// Its backward for a validated p whose weights are in the dtype (f32 or f64).
inline void moe_backward(const MoeParams& p, const MoeGradParams& g, int threads) {
  if (p.dtype == DType::f64) moe_detail::backward<double>(p, g, threads);
  else moe_detail::backward<float>(p, g, threads);
}

}  // namespace ssm::cpu

/// The kernels' entry points for one input type In, compiled once where SSM_EXTERN_INSTANCES is set
/// (core/instances.hpp, src/instances/).
#define SSM_CPU_MOE_INSTANCES(PREFIX, In)                                      \
  PREFIX void ssm::cpu::moe_detail::forward<In>(const ::ssm::MoeParams&, int); \
  PREFIX void ssm::cpu::moe_detail::backward<In>(const ::ssm::MoeParams&, const ::ssm::MoeGradParams&, int);
#if SSM_EXTERN_INSTANCES
SSM_FOR_EACH_COMPUTE(SSM_CPU_MOE_INSTANCES, extern template)
#endif
