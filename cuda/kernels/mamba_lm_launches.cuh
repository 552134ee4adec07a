// The Mamba language model's sequence of launches (Gu & Dao 2023 §3.4, Fig. 3; docs/math.md §6.2), written once over an
// executor so that it runs on a CUDA device (cuBLAS GEMMs, real launches; cuda/src/mamba_lm.cu) and under the host
// emulation on host memory (a host GEMM, ssm::emu::launch; cuda/emu/executor.hpp) in tests:
//   embedding gather → per layer [add + RMSNorm → in_proj (x, z) → conv1d + SiLU → x_proj → dt_proj →
//   fused selective scan (softplus, D, z gate) → out_proj] → add + RMSNorm (norm_f) → lm_head.
// Activations between in_proj and out_proj are channel-major (b, features, l), the layout the conv and scan
// kernels read with unit stride along l; the GEMMs write that layout directly (no transposes). The residual
// stream and the norms are time-major (b·l, d_model).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "causal_conv1d.cuh"
#include "launch/embedding.cuh"
#include "launch/rms_norm.cuh"
#include "mamba_lm.cuh"
#include "ssm/core/params/selective_scan.hpp"
#include "ssm/cuda/mamba_lm.hpp"

namespace ssm::kernels {

/// What the sequence of launches needs from an executor (cuda/src/mamba_lm.cu, cuda/emu/executor.hpp):
///   void* allocate(std::size_t bytes)                      memory owned by the executor until it is destroyed
///   void upload(void* dst, const void* host, std::size_t bytes)
///   void launch(kernel, LaunchDims grid, LaunchDims block, args...)
///   void gemm(trans_A, trans_B, M, N, K, A, lda, stride_A, B, ldb, stride_B, C, ldc, stride_C, batch):
///        row-major C[p] (M, N) = op(A[p]) (M, K) · op(B[p]) (K, N) for p < batch; op(A)(i, k) = trans_A ?
///        A[k lda + i] : A[i lda + k], likewise B; C[p](i, j) at C + p stride_C + i ldc + j; f32, beta 0.
///   void scan(const ScanParams&)                            the fused selective-scan forward, f32
///   void conv(const CausalConv1dParams&), conv_update(const CausalConv1dUpdateParams&)   f32
template <class Exec>
class MambaLMLaunches {
 public:
  using Shape = ::ssm::cuda::MambaLMShape;

  /// Uploads the weights through `exec` (A = -exp(A_log) computed here, in f32 as the CPU block does).
  MambaLMLaunches(Exec& exec, const ::ssm::cuda::MambaLMWeights& w) : exec_(exec), s_(w.shape) {
    // Checked here, before anything is uploaded, so that the device model and the emulated one both refuse it.
    SSM_CHECK(s_.bcdt_rms_eps == 0, "ssm::cuda::MambaLMDevice: FalconMamba (config key mixer_rms_eps = ",
              s_.bcdt_rms_eps, ": RMS normalization of dt, B and C) is not implemented on CUDA; run the model on the CPU");
    const index_t dm = s_.d_model, di = s_.d_inner, n = s_.d_state, r = s_.dt_rank, V = s_.vocab;
    embedding_ = upload(w.embedding, V * dm);
    lm_head_ = w.lm_head ? upload(w.lm_head, V * dm) : embedding_;
    norm_f_ = upload(w.norm_f, dm);
    for (const auto& lw : w.layers) {
      Layer L;
      L.norm = upload(lw.norm, dm);
      L.in_proj_weight = upload(lw.in_proj_weight, 2 * di * dm);
      L.in_proj_bias = s_.bias ? upload(lw.in_proj_bias, 2 * di) : nullptr;
      L.conv_weight = upload(lw.conv_weight, di * s_.d_conv);
      L.conv_bias = s_.conv_bias ? upload(lw.conv_bias, di) : nullptr;
      L.x_proj_weight = upload(lw.x_proj_weight, (r + 2 * n) * di);
      L.dt_proj_weight = upload(lw.dt_proj_weight, di * r);
      L.dt_proj_bias = upload(lw.dt_proj_bias, di);
      std::vector<float> A(static_cast<std::size_t>(di * n));  // (di, n)
      for (std::size_t i = 0; i < A.size(); ++i) A[i] = -std::exp(lw.A_log[i]);
      L.A = upload(A.data(), di * n);
      L.D = upload(lw.D, di);
      L.out_proj_weight = upload(lw.out_proj_weight, dm * di);
      L.out_proj_bias = s_.bias ? upload(lw.out_proj_bias, dm) : nullptr;
      layers_.push_back(L);
    }
  }

  const Shape& shape() const { return s_; }

  /// f32 elements of workspace a call over b sequences of l tokens needs.
  static index_t workspace_floats(const Shape& s, index_t b, index_t l) {
    const index_t rows = b * l, nx = s.dt_rank + 2 * s.d_state;
    return rows * (3 * s.d_model + 5 * s.d_inner + nx) + 64;  // + room to align the ids that follow
  }

  /// Per-layer cache pointers: conv_state (n_layer, b, di, w), ssm_state (n_layer, b, di, n) in executor memory.
  struct Cache {
    float* conv_state = nullptr;
    float* ssm_state = nullptr;
  };

  enum class Mode { logits_all, prefill, step };

  /// Runs b sequences of l tokens. ids (b, l) i64 in executor memory, checked against the vocabulary already;
  /// ws: workspace_floats(b, l) floats. logits_all: logits (b, l, V), cache unused. prefill: the cache is filled
  /// (from zero), logits (b, V) of the last position. step (l = 1): the cache is read and advanced.
  void run(Mode mode, const std::int64_t* ids, index_t b, index_t l, float* ws, Cache cache, float* logits) {
    const index_t dm = s_.d_model, rows = b * l, V = s_.vocab;
    float* res = ws;               // (b, l, dm) residual stream
    float* xn = res + rows * dm;   // (b, l, dm) normalized
    float* out = xn + rows * dm;   // (b, l, dm) a block's output
    float* act = out + rows * dm;  // the block's channel-major activations
    EmbeddingParams ep;  // res = embedding[ids]
    ep.rows = rows, ep.vocab = V, ep.dim = dm;
    ep.ids = ids, ep.ids_dtype = DType::i64, ep.table = embedding_, ep.table_dtype = DType::f32;
    ep.y = res, ep.y_row_stride = dm, ep.dtype = DType::f32;
    embedding_gather_launches(exec_, ep, kOp);
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      // res += out of the previous block (none before the first), xn = RMSNorm(res)
      add_norm(res, i == 0 ? nullptr : out, layers_[i].norm, xn, rows);
      const index_t li = static_cast<index_t>(i);
      block(mode, layers_[i], xn, b, l, act, out,
            cache.conv_state ? cache.conv_state + li * b * s_.d_inner * s_.d_conv : nullptr,
            cache.ssm_state ? cache.ssm_state + li * b * s_.d_inner * s_.d_state : nullptr);
    }
    add_norm(res, out, norm_f_, xn, rows);
    if (mode == Mode::logits_all) {
      // logits (rows, V) = xn (rows, dm) · head^T
      exec_.gemm(false, true, rows, V, dm, xn, dm, 0, lm_head_, dm, 0, logits, V, 0, 1);
    } else {
      // the last position of each sequence: rows l - 1, 2l - 1, ... of xn (row stride l · dm)
      exec_.gemm(false, true, b, V, dm, xn + (l - 1) * dm, l * dm, 0, lm_head_, dm, 0, logits, V, 0, 1);
    }
  }

 private:
  struct Layer {
    float *norm, *in_proj_weight, *in_proj_bias, *conv_weight, *conv_bias, *x_proj_weight, *dt_proj_weight,
        *dt_proj_bias, *A, *D, *out_proj_weight, *out_proj_bias;
  };

  static constexpr const char* kOp = "ssm::cuda::MambaLMDevice";

  // res += delta (when delta is set), then y = RMSNorm(res) ⊙ weight: the rms_norm op's kernel with the residual add
  // (x = delta, residual = res), or without it (x = res).
  void add_norm(float* res, const float* delta, const float* weight, float* y, index_t rows) {
    RmsNormParams p;
    p.rows = rows, p.dim = s_.d_model, p.eps = s_.norm_epsilon, p.dtype = DType::f32;
    p.x = delta != nullptr ? delta : res, p.x_row_stride = s_.d_model;
    if (delta != nullptr) p.residual = res, p.residual_row_stride = s_.d_model;
    p.weight = weight, p.y = y, p.y_row_stride = s_.d_model;
    rms_norm_launches(exec_, p, kOp);
  }

  float* upload(const float* host, index_t count) {
    auto* p = static_cast<float*>(exec_.allocate(static_cast<std::size_t>(count) * sizeof(float)));
    exec_.upload(p, host, static_cast<std::size_t>(count) * sizeof(float));
    return p;
  }

  void add_bias(float* x, const float* bias, index_t total, index_t features, index_t inner) {
    const index_t blocks = std::min<index_t>(4096, (total + kLmElemThreads - 1) / kLmElemThreads);
    exec_.launch(add_bias_kernel, LaunchDims{static_cast<unsigned>(blocks)}, LaunchDims{kLmElemThreads}, x, bias,
                 total, features, inner);
  }

  // One Mamba block: xn (b, l, dm) time-major → out (b, l, dm) time-major. conv_state (b, di, w) and ssm_state
  // (b, di, n) of this layer, or null (logits_all).
  void block(Mode mode, const Layer& L, const float* xn, index_t b, index_t l, float* act, float* out,
             float* conv_state, float* ssm_state) {
    const index_t dm = s_.d_model, di = s_.d_inner, n = s_.d_state, r = s_.dt_rank, w = s_.d_conv;
    const index_t nx = r + 2 * n, rows = b * l;
    float* x = act;              // (b, di, l) in_proj's x half
    float* z = x + rows * di;    // (b, di, l) the gate
    float* xc = z + rows * di;   // (b, di, l) conv1d + SiLU
    float* dbc = xc + rows * di; // (b, r + 2n, l) x_proj: delta_r, B, C
    float* dt = dbc + rows * nx; // (b, di, l) dt_proj (before bias and softplus)
    float* y = dt + rows * di;   // (b, di, l) the scan's gated output
    // in_proj, per sequence: x (di, l) = W[0:di] (di, dm) · xn_b^T, z likewise with W[di:2di].
    exec_.gemm(false, true, di, l, dm, L.in_proj_weight, dm, 0, xn, dm, l * dm, x, l, di * l, b);
    exec_.gemm(false, true, di, l, dm, L.in_proj_weight + di * dm, dm, 0, xn, dm, l * dm, z, l, di * l, b);
    if (L.in_proj_bias) {
      add_bias(x, L.in_proj_bias, rows * di, di, l);
      add_bias(z, L.in_proj_bias + di, rows * di, di, l);
    }
    if (mode == Mode::step) {
      ::ssm::CausalConv1dUpdateParams p;
      p.batch = b;
      p.dim = di;
      p.width = w;
      p.x = x;  // (b, di): l = 1
      p.conv_state = conv_state;
      p.weight = L.conv_weight;
      p.weight_d_stride = w;
      p.bias = L.conv_bias;
      p.silu = true;
      p.out = xc;
      exec_.conv_update(p);
    } else {
      if (mode == Mode::prefill) {
        const index_t blocks = std::min<index_t>(4096, (b * di + kLmElemThreads - 1) / kLmElemThreads);
        exec_.launch(conv_state_from_sequence_kernel, LaunchDims{static_cast<unsigned>(blocks)},
                     LaunchDims{kLmElemThreads}, const_cast<const float*>(x), di * l, l, l, conv_state, b, di,
                     static_cast<int>(w));
      }
      ::ssm::CausalConv1dParams p;
      p.batch = b;
      p.dim = di;
      p.seqlen = l;
      p.width = w;
      p.x = x;
      p.x_batch_stride = di * l;
      p.x_d_stride = l;
      p.weight = L.conv_weight;
      p.weight_d_stride = w;
      p.bias = L.conv_bias;
      p.silu = true;
      p.out = xc;
      p.out_batch_stride = di * l;
      p.out_d_stride = l;
      exec_.conv(p);
    }
    // x_proj: dbc (nx, l) = Wx (nx, di) · xc_b (di, l); dt_proj: dt (di, l) = Wdt (di, r) · dbc_b[0:r] (r, l).
    exec_.gemm(false, false, nx, l, di, L.x_proj_weight, di, 0, xc, l, di * l, dbc, l, nx * l, b);
    exec_.gemm(false, false, di, l, r, L.dt_proj_weight, r, 0, dbc, l, nx * l, dt, l, di * l, b);
    ScanParams sp;
    sp.batch = b;
    sp.dim = di;
    sp.seqlen = l;
    sp.dstate = n;
    sp.n_groups = 1;
    sp.delta_softplus = true;
    sp.u = xc;
    sp.u_batch_stride = di * l;
    sp.u_d_stride = l;
    sp.delta = dt;
    sp.delta_batch_stride = di * l;
    sp.delta_d_stride = l;
    sp.z = z;
    sp.z_batch_stride = di * l;
    sp.z_d_stride = l;
    sp.B = dbc + r * l;
    sp.B_batch_stride = nx * l;
    sp.B_group_stride = 0;
    sp.B_n_stride = l;
    sp.C = dbc + (r + n) * l;
    sp.C_batch_stride = nx * l;
    sp.C_group_stride = 0;
    sp.C_n_stride = l;
    sp.A = L.A;
    sp.A_d_stride = n;
    sp.A_n_stride = 1;
    sp.D = L.D;
    sp.delta_bias = L.dt_proj_bias;
    if (mode == Mode::step) {  // in place: each block reads state s of its channel before it writes it
      sp.initial_state = ssm_state;
      sp.init_batch_stride = di * n;
      sp.init_d_stride = n;
      sp.init_n_stride = 1;
    }
    if (mode != Mode::logits_all) {
      sp.last_state = ssm_state;
      sp.last_batch_stride = di * n;
      sp.last_d_stride = n;
    }
    sp.out = y;
    sp.out_batch_stride = di * l;
    sp.out_d_stride = l;
    exec_.scan(sp);
    // out_proj, per sequence: out_b (l, dm) = y_b^T (l, di) · Wout^T (di, dm), time-major again.
    exec_.gemm(true, true, l, dm, di, y, l, di * l, L.out_proj_weight, di, 0, out, dm, l * dm, b);
    if (L.out_proj_bias) add_bias(out, L.out_proj_bias, rows * dm, dm, 1);
  }

  Exec& exec_;
  Shape s_;
  float* embedding_ = nullptr;  // (V, dm)
  float* lm_head_ = nullptr;    // (V, dm), the embedding when tied
  float* norm_f_ = nullptr;     // (dm)
  std::vector<Layer> layers_;
};

}  // namespace ssm::kernels
