// RWKV-7's generalized delta rule on CUDA (docs/rwkv7.md "On CUDA"): S_t = diag(w_t) S_{t−1} + b_t (S_{t−1}ᵀ a_t)ᵀ +
// k_t v_tᵀ, o_t = S_tᵀ (scale q_t), with S (dk, dv) per sequence and head (core/params/rwkv7.hpp).
//
// The transition diag(w) + b aᵀ acts on the key dimension only, so every value column j of the state evolves on its
// own: sa_j = Σ_i a_i S_ij, then S_ij ← w_i S_ij + b_i sa_j + k_i v_j, and o_j = scale Σ_i q_i S_ij. One thread carries
// one column through the whole sequence (the token loop; RWKV-7's own kernel also gives a thread a column, but keeps it
// in registers); the forward has 32 columns to a block and no barrier; the state lives in the workspace. (The CPU's
// chunked form, cpu/rwkv7.hpp, trades this loop for matrix products of chunk size; on a GPU the columns give the
// parallelism, and the per-step vectors q, k, w, a, b are read by the 32 threads of a warp at once.)
//
// The backward (the CPU's checkpointed token loop, cpu/rwkv7.hpp backward_recurrent) in one kernel per column block:
// a forward pass keeps the state every chunk_size steps; then, interval by interval from the last, the interval's
// states are recomputed from its checkpoint and the reverse steps run over them with D, the column of the gradient of
// S_t:
//   D += scale q ḡo_j;  ḡv_j = k · D;  ḡsa_j = b · D;
//   per key channel i (sums over the columns j): ḡq_i = scale Σ_j S_t,ij ḡo_j,  ḡk_i = Σ_j D_ij v_j,
//     ḡb_i = Σ_j D_ij sa_j,  ḡa_i = Σ_j S_{t−1},ij ḡsa_j,  ḡlog_w_i = w_i Σ_j D_ij S_{t−1},ij;
//   D ← w ⊙ D + a ḡsa_j.
// The backward's blocks take up to kRwkv7GradWarps warps (128 columns). The sums over j are a warp's shuffles, then
// the block's warps added in shared memory in warp order; with one block per head (dv <= 128, RWKV-7's heads are 64
// wide) that is the gradient, written directly, else each block writes its partial sums and rwkv7_grad_sum adds the
// blocks' in a fixed order (deterministic).
#pragma once

#include <cstdint>

#include "common.cuh"
#include "ssm/core/params/rwkv7.hpp"

namespace ssm::kernels {

inline constexpr int kRwkv7Columns = 32;            // value columns per warp (the forward's block: one warp)
inline constexpr int kRwkv7SumThreads = 256;        // rwkv7_grad_sum_kernel
inline constexpr std::int64_t kRwkv7SeqFields = 4;  // the sequence table's row: batch row, begin, end, first checkpoint
inline constexpr int kRwkv7Parts = 5;               // ḡq, ḡk, ḡb, ḡa, ḡlog_w
inline constexpr int kRwkv7GradWarps = 4;           // the backward's warps per block, at most
inline constexpr int kRwkv7Tile = 64;               // key channels summed over the block's warps at a time

/// The workspace (kernels/launch/rwkv7.cuh lays it out); per sequence s and head: st = s h + head.
struct Rwkv7Workspace {
  const std::int64_t* seqs = nullptr;  // (rows, 4) the sequence table
  std::int64_t rows = 0;
  float* S = nullptr;     // (rows, h, dk, dv) the running state
  float* ck = nullptr;    // (checkpoints, h, dk, dv) the state at the start of every chunk_size steps (backward)
  float* Sc = nullptr;    // (rows, h, chunk_size + 1, dk, dv) one interval's states (backward)
  float* D = nullptr;     // (rows, h, dk, dv) the running gradient of the state (backward)
  float* part = nullptr;  // (column blocks, b l h, 5, dk) each block's partial sums over its columns (backward, with
                          // more than one block per head)
};

/// Element i of one step's row of a per-token input (b, l, h, d).
template <class In>
__device__ __forceinline__ float rwkv7_at(const TokenRows<const void*>& r, std::int64_t bi, std::int64_t t,
                                          std::int64_t head, std::int64_t i) {
  return load_float(static_cast<const In*>(r.data) + r.at(bi, t, head) + i);
}

/// One step for column j: Sp (S_{t−1}) to St (S_t; may be Sp itself), both at stride dv; returns o_j.
template <class In>
__device__ __forceinline__ float rwkv7_step(const Rwkv7Params& p, std::int64_t bi, std::int64_t t, std::int64_t head,
                                            std::int64_t j, const float* Sp, float* St) {
  const std::int64_t dk = p.dk, dv = p.dv;
  float sa = 0.0f;
  for (std::int64_t i = 0; i < dk; ++i) sa += rwkv7_at<In>(p.a, bi, t, head, i) * Sp[i * dv];
  const float vj = rwkv7_at<In>(p.v, bi, t, head, j);
  float o = 0.0f;
  for (std::int64_t i = 0; i < dk; ++i) {
    const float s = scalar::exp(rwkv7_at<In>(p.log_w, bi, t, head, i)) * Sp[i * dv] +
                    rwkv7_at<In>(p.b, bi, t, head, i) * sa + rwkv7_at<In>(p.k, bi, t, head, i) * vj;
    St[i * dv] = s;
    o += rwkv7_at<In>(p.q, bi, t, head, i) * s;
  }
  return o * static_cast<float>(p.scale);
}

/// The forward, grid (ceil(dv / 32), h, rows), block 32: thread j carries column j of one sequence's state from
/// p.initial_state (or zero) to p.final_state, writing o_j to p.out. Each thread reads its column of the initial state
/// before it writes that column of the final one, so the two may be one buffer (the decode step).
template <class In>
__global__ void __launch_bounds__(kRwkv7Columns) rwkv7_forward_kernel(Rwkv7Params p, Rwkv7Workspace w) {
  const std::int64_t j = static_cast<std::int64_t>(blockIdx.x) * kRwkv7Columns + threadIdx.x;
  const std::int64_t head = blockIdx.y, s = blockIdx.z, dk = p.dk, dv = p.dv;
  if (j >= dv) return;
  const std::int64_t bi = w.seqs[s * kRwkv7SeqFields], t0 = w.seqs[s * kRwkv7SeqFields + 1];
  const std::int64_t t1 = w.seqs[s * kRwkv7SeqFields + 2], state = (s * p.nheads + head) * dk * dv;
  float* S = w.S + state + j;  // column j: S[i dv]
  for (std::int64_t i = 0; i < dk; ++i)
    S[i * dv] = p.initial_state ? static_cast<const float*>(p.initial_state)[state + i * dv + j] : 0.0f;
  for (std::int64_t t = t0; t < t1; ++t) {
    const float o = rwkv7_step<In>(p, bi, t, head, j, S, S);
    if (p.out.data) store_float(static_cast<In*>(p.out.data) + p.out.at(bi, t, head) + j, o);
  }
  if (p.final_state)
    for (std::int64_t i = 0; i < dk; ++i) static_cast<float*>(p.final_state)[state + i * dv + j] = S[i * dv];
}

/// The gradient the key-channel sums of part k go to: ḡq, ḡk, ḡb, ḡa, ḡlog_w (a switch, not an array: k is not
/// known at compile time where the sums are written).
__device__ __forceinline__ void* rwkv7_grad_part(const Rwkv7GradParams& g, std::int64_t k) {
  switch (k) {
    case 0:
      return g.grad_q;
    case 1:
      return g.grad_k;
    case 2:
      return g.grad_b;
    case 3:
      return g.grad_a;
    default:
      return g.grad_log_w;
  }
}

/// The sum of v over the 32 lanes of a warp, in every lane.
__device__ __forceinline__ float rwkv7_warp_sum(float v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

/// The backward, grid (column blocks, h, rows), block 32 × (1 .. kRwkv7GradWarps) (lanes past dv take part in the sums
/// with zeros): ḡv and the initial state's gradient directly; the key-channel gradients directly with one column
/// block, else as this block's partial sums (w.part).
template <class In>
__global__ void __launch_bounds__(kRwkv7Columns* kRwkv7GradWarps)
    rwkv7_backward_kernel(Rwkv7Params p, Rwkv7GradParams g, Rwkv7Workspace w) {
  SSM_SHARED(float, red, kRwkv7GradWarps* kRwkv7Parts* kRwkv7Tile);  // (warp, part, key channel of the tile)
  const std::int64_t j = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int lane = threadIdx.x % kRwkv7Columns, warp = threadIdx.x / kRwkv7Columns;
  const int warps = blockDim.x / kRwkv7Columns;
  const std::int64_t head = blockIdx.y, s = blockIdx.z, h = p.nheads, dk = p.dk, dv = p.dv, Q = p.chunk_size;
  const bool active = j < dv;
  const std::int64_t bi = w.seqs[s * kRwkv7SeqFields], t0 = w.seqs[s * kRwkv7SeqFields + 1];
  const std::int64_t t1 = w.seqs[s * kRwkv7SeqFields + 2], ck0 = w.seqs[s * kRwkv7SeqFields + 3];
  const std::int64_t st = s * h + head, state = st * dk * dv, size = dk * dv, jj = active ? j : 0;
  float* S = w.S + state + jj;                      // the running state, column j
  float* D = w.D + state + jj;                      // the running gradient
  float* Sc = w.Sc + st * (Q + 1) * size + jj;      // the interval's states: state r at Sc[r size + i dv]
  const std::int64_t n_ck = (t1 - t0 + Q - 1) / Q;  // intervals
  const float scale = static_cast<float>(p.scale);
  // 1. the forward, keeping a checkpoint at the start of every interval
  if (active) {
    for (std::int64_t i = 0; i < dk; ++i)
      S[i * dv] = p.initial_state ? static_cast<const float*>(p.initial_state)[state + i * dv + j] : 0.0f;
    for (std::int64_t t = t0; t < t1; ++t) {
      if ((t - t0) % Q == 0) {
        float* ck = w.ck + ((ck0 + (t - t0) / Q) * h + head) * size + j;
        for (std::int64_t i = 0; i < dk; ++i) ck[i * dv] = S[i * dv];
      }
      (void)rwkv7_step<In>(p, bi, t, head, j, S, S);
    }
    for (std::int64_t i = 0; i < dk; ++i)
      D[i * dv] = g.grad_final_state ? static_cast<const float*>(g.grad_final_state)[state + i * dv + j] : 0.0f;
  }
  // 2. the intervals from the last, each recomputed from its checkpoint, then its steps in reverse
  const std::int64_t rows_all = p.batch * p.seqlen;
  for (std::int64_t c = n_ck - 1; c >= 0; --c) {
    const std::int64_t c0 = t0 + c * Q, len = (t1 - c0) < Q ? (t1 - c0) : Q;
    if (active) {
      const float* ck = w.ck + ((ck0 + c) * h + head) * size + j;
      for (std::int64_t i = 0; i < dk; ++i) Sc[i * dv] = ck[i * dv];
      for (std::int64_t r = 0; r < len; ++r)
        (void)rwkv7_step<In>(p, bi, c0 + r, head, j, Sc + r * size, Sc + (r + 1) * size);
    }
    for (std::int64_t r = len - 1; r >= 0; --r) {
      const std::int64_t t = c0 + r, row = bi * p.seqlen + t;
      const float* Sp = Sc + r * size;  // S_{t−1}
      const float* St = Sc + (r + 1) * size;
      float go = 0.0f, vj = 0.0f, sa = 0.0f, gv = 0.0f, gsa = 0.0f;
      if (active) {
        go = load_float(static_cast<const In*>(g.grad_out) + (row * h + head) * dv + j);
        vj = rwkv7_at<In>(p.v, bi, t, head, j);
        for (std::int64_t i = 0; i < dk; ++i) {
          sa += rwkv7_at<In>(p.a, bi, t, head, i) * Sp[i * dv];
          const float d = D[i * dv] + scale * rwkv7_at<In>(p.q, bi, t, head, i) * go;  // the gradient of S_t
          D[i * dv] = d;
          gv += rwkv7_at<In>(p.k, bi, t, head, i) * d;
          gsa += rwkv7_at<In>(p.b, bi, t, head, i) * d;
        }
        if (g.grad_v) store_float(static_cast<In*>(g.grad_v) + (row * h + head) * dv + j, gv);
      }
      float* part = w.part ? w.part + ((blockIdx.x * rows_all + row) * h + head) * kRwkv7Parts * dk : nullptr;
      for (std::int64_t i0 = 0; i0 < dk; i0 += kRwkv7Tile) {  // a tile of key channels
        const std::int64_t n = dk - i0 < kRwkv7Tile ? dk - i0 : kRwkv7Tile;
        for (std::int64_t i = i0; i < i0 + n; ++i) {
          float cq = 0.0f, ckk = 0.0f, cb = 0.0f, ca = 0.0f, cw = 0.0f;  // column j's terms
          float wi = 0.0f;
          if (active) {
            const float d = D[i * dv], sp = Sp[i * dv];
            wi = scalar::exp(rwkv7_at<In>(p.log_w, bi, t, head, i));
            cq = scale * St[i * dv] * go, ckk = d * vj, cb = d * sa, ca = sp * gsa, cw = wi * d * sp;
          }
          cq = rwkv7_warp_sum(cq), ckk = rwkv7_warp_sum(ckk), cb = rwkv7_warp_sum(cb);
          ca = rwkv7_warp_sum(ca), cw = rwkv7_warp_sum(cw);
          if (lane == 0) {  // this warp's sums: red[(warp, part, i − i0)]
            const std::int64_t r = warp * kRwkv7Parts * kRwkv7Tile + (i - i0);
            red[r] = cq, red[r + kRwkv7Tile] = ckk, red[r + 2 * kRwkv7Tile] = cb;
            red[r + 3 * kRwkv7Tile] = ca, red[r + 4 * kRwkv7Tile] = cw;
          }
          if (active) D[i * dv] = wi * D[i * dv] + rwkv7_at<In>(p.a, bi, t, head, i) * gsa;  // to S_{t−1}'s gradient
        }
        __syncthreads();
        for (std::int64_t e = threadIdx.x; e < kRwkv7Parts * n; e += blockDim.x) {  // the warps' sums, in warp order
          const std::int64_t k = e / n, i = i0 + e % n;
          float acc = 0.0f;
          for (int wp = 0; wp < warps; ++wp) acc += red[(wp * kRwkv7Parts + k) * kRwkv7Tile + (i - i0)];
          if (part)
            part[k * dk + i] = acc;
          else if (void* dst = rwkv7_grad_part(g, k))
            store_float(static_cast<In*>(dst) + (row * h + head) * dk + i, acc);
        }
        __syncthreads();  // the next tile rewrites red
      }
    }
  }
  if (active && g.grad_initial_state)
    for (std::int64_t i = 0; i < dk; ++i) static_cast<float*>(g.grad_initial_state)[state + i * dv + j] = D[i * dv];
}

/// ḡq, ḡk, ḡb, ḡa, ḡlog_w (b, l, h, dk) In, contiguous (null ones skipped): the column blocks' partial sums added in
/// block order.
template <class In>
__global__ void __launch_bounds__(kRwkv7SumThreads)
    rwkv7_grad_sum_kernel(Rwkv7Params p, Rwkv7GradParams g, Rwkv7Workspace w, std::int64_t blocks) {
  const std::int64_t dk = p.dk, n = p.batch * p.seqlen * p.nheads * dk;
  void* dst[kRwkv7Parts] = {g.grad_q, g.grad_k, g.grad_b, g.grad_a, g.grad_log_w};
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * kRwkv7SumThreads + threadIdx.x; e < n;
       e += static_cast<std::int64_t>(gridDim.x) * kRwkv7SumThreads) {
    const std::int64_t i = e % dk, rh = e / dk;  // rh = row h + head
    for (int k = 0; k < kRwkv7Parts; ++k) {
      if (!dst[k]) continue;
      float acc = 0.0f;
      for (std::int64_t cb = 0; cb < blocks; ++cb) acc += w.part[(cb * (n / dk) + rh) * kRwkv7Parts * dk + k * dk + i];
      store_float(static_cast<In*>(dst[k]) + e, acc);
    }
  }
}

}  // namespace ssm::kernels
