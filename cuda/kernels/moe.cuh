// The mixture of experts' forward on CUDA (docs/moe.md "CUDA"; the formulas in core/params/moe.hpp). Per slice of
// tokens, six launches (kernels/launch/moe.cuh):
//   1. moe_gemm_kernel<plain>:   logits (t, E) = x W_rᵀ (the router; one group, no gather)
//   2. moe_route_kernel:         per token the softmax, the top k (ties to the lower index) and their weights, into
//                                pair_expert / pair_weight (t·k), pair j·k + i being token j's i-th choice
//   3. moe_group_kernel:         per expert its pairs in pair order: sorted (t·k) and offsets (E + 1), a counting sort
//                                (block e counts the pairs of experts < e, then ranks its own by a block scan; no
//                                atomics, so the order and the bits do not depend on how blocks run)
//   4. moe_gemm_kernel<swiglu>:  per expert, the gathered rows x[token(pair)] times its gate and up rows, epilogue
//                                a = act(g) ⊙ u into a (t·k, I), row = the pair's place in sorted
//   5. moe_gemm_kernel<scatter>: per expert, a's rows times W_down[e], epilogue o[pair] = w_pair · (W_down a)
//   6. moe_combine_kernel:       out[j] = Σ_i o[j·k + i] in choice order (the CPU path's order)
// T is the compute and activation type (f32, or f64 with f64 weights), W the weights' (T, or f16 / bf16 for f32).
#pragma once

#include <cstdint>

#include "common.cuh"
#include "ssm/core/params/moe.hpp"

namespace ssm::kernels {

/// Device pointers of one slice (kernels/launch/moe.cuh lays them out in one workspace). logits (t, E) T: the router's
/// outputs (the caller's router_logits rows when it asked for them); pair_expert (t·k) int32 and pair_weight (t·k) T:
/// the routing; sorted (t·k) int32: the pairs grouped by expert, in pair order within each; offsets (E + 1) int32:
/// expert e owns sorted[offsets[e], offsets[e + 1]); a (t·k, I) T: the experts' hidden rows in sorted order; o (t·k,
/// H) T: each pair's weighted expert output, in pair order.
struct MoeWorkspace {
  void* logits = nullptr;
  std::int32_t* pair_expert = nullptr;
  void* pair_weight = nullptr;
  std::int32_t* sorted = nullptr;
  std::int32_t* offsets = nullptr;
  void* a = nullptr;
  void* o = nullptr;
};

/// One slice of tokens: rows [0, tokens) of x and out from these pointers (the launches step them along the rows).
struct MoeSlice {
  const void* x = nullptr;
  void* out = nullptr;
  std::int64_t tokens = 0;
};

// ---- the tiled GEMM with a gather and an epilogue ----------------------------------------------------------------

/// What moe_gemm_kernel's epilogue does with acc[r, n] = Σ_c A[row(r), c] W[n, c] (and, for swiglu, the up half).
enum class MoeGemmMode {
  plain,    // C[r, n] = acc: the router logits (rows = tokens, one group)
  swiglu,   // a[r, n] = act(acc_gate) · acc_up: rows = expert e's pairs in sorted order, A rows gathered by token
  scatter,  // o[sorted[r], n] = w_pair · acc: rows = expert e's rows of a, written to their pair's row
};

/// Tile of one block: kMoeTileM rows × kMoeTileN columns, the reduction staged kMoeTileK at a time; kMoeThreads =
/// 16 × 16 threads, each owning 4 × 4 outputs (row ty + 16 i, column tx + 16 j). Shared rows padded by one element.
inline constexpr int kMoeTileM = 64;
inline constexpr int kMoeTileN = 64;
inline constexpr int kMoeTileK = 16;
inline constexpr int kMoeThreads = 256;
inline constexpr int kMoeSub = 4;  // outputs per thread along each side
inline constexpr int kMoePitchM = kMoeTileM + 1;
inline constexpr int kMoePitchN = kMoeTileN + 1;
/// The GEMM's minimum resident blocks (__launch_bounds__): caps ptxas at 65536 / (256 · 2) = 128 registers (the f64
/// gate/up GEMM holds 2 × 16 accumulators of 8 bytes and uses all 128, with no spills).
inline constexpr int kMoeMinBlocks = 2;
/// Threads of the routing, grouping and combining kernels.
inline constexpr int kMoeRouteThreads = 128;
inline constexpr int kMoeGroupThreads = 256;
inline constexpr int kMoeCombineThreads = 128;
static_assert(kMoeThreads == 16 * 16 && kMoeTileM == 16 * kMoeSub && kMoeTileN == 16 * kMoeSub,
              "moe_gemm_kernel: 16 × 16 threads, each owning kMoeSub × kMoeSub outputs of the tile");
static_assert((kMoeGroupThreads & (kMoeGroupThreads - 1)) == 0 && kMoeGroupThreads % 32 == 0,
              "moe_group_kernel: a power-of-two block of whole warps (its tree reduction)");

/// The operands of one moe_gemm_kernel launch. Group g (blockIdx.z) is an expert, or the router's single group.
struct MoeGemmArgs {
  const void* A = nullptr;  // rows of K elements (T): x (row stride lda) or a (lda = K)
  std::int64_t lda = 0;
  const void* W = nullptr;  // per group (n_rows_w, K) W-typed, contiguous; group g at W + g · w_group_stride
  std::int64_t w_group_stride = 0;
  std::int64_t N = 0, K = 0;  // output columns (for swiglu: d_ff, W holding 2 N rows) and the reduction length
  std::int64_t rows = 0;      // plain: the rows (tokens); the others read them from offsets
  const std::int32_t* offsets = nullptr;  // (groups + 1): group g's rows are [offsets[g], offsets[g + 1])
  const std::int32_t* sorted = nullptr;   // (t·k): the pair of each sorted row
  const void* pair_weight = nullptr;      // scatter: (t·k) T
  int top_k = 1;                          // swiglu: a sorted row's token is sorted[r] / top_k
  MoeActivation act = MoeActivation::silu;
  void* C = nullptr;  // plain: (rows, ldc); swiglu: a (t·k, ldc); scatter: o (t·k, ldc)
  std::int64_t ldc = 0;
};

/// Grid (ceil(N / kMoeTileN), row tiles, groups), block kMoeThreads. A group's row tiles are blockIdx.y, + gridDim.y,
/// ... (a grid sized for the largest group; the tiles past a group's rows return at once, before any barrier).
template <class T, class W, MoeGemmMode kMode>
__global__ void __launch_bounds__(kMoeThreads, kMoeMinBlocks) moe_gemm_kernel(MoeGemmArgs g) {
  constexpr int kHalves = kMode == MoeGemmMode::swiglu ? 2 : 1;  // gate and up
  static_assert((kMoeTileK * kMoePitchM + kHalves * kMoeTileK * kMoePitchN) * sizeof(T) <= 32 * 1024,
                "moe_gemm_kernel: static shared memory over its 32 KiB budget");
  SSM_SHARED(T, As, kMoeTileK * kMoePitchM);            // (c, row) the A tile, transposed
  SSM_SHARED(T, Ws, kHalves * kMoeTileK * kMoePitchN);  // (half, c, n) the W tiles, transposed
  const int tid = static_cast<int>(threadIdx.x), ty = tid / 16, tx = tid % 16;
  const index_t group = blockIdx.z;
  const index_t n0 = static_cast<index_t>(blockIdx.x) * kMoeTileN;
  const index_t first = g.offsets != nullptr ? g.offsets[group] : 0;
  const index_t count = g.offsets != nullptr ? g.offsets[group + 1] - first : g.rows;
  const W* Wg = static_cast<const W*>(g.W) + group * g.w_group_stride;  // (kHalves N, K)
  const T* A = static_cast<const T*>(g.A);
  for (index_t r0 = static_cast<index_t>(blockIdx.y) * kMoeTileM; r0 < count;
       r0 += static_cast<index_t>(gridDim.y) * kMoeTileM) {
    T acc[kHalves][kMoeSub][kMoeSub];
    SSM_UNROLL
    for (int h = 0; h < kHalves; ++h)
      SSM_UNROLL
      for (int i = 0; i < kMoeSub; ++i)
        SSM_UNROLL
        for (int j = 0; j < kMoeSub; ++j) acc[h][i][j] = T(0);
    for (index_t c0 = 0; c0 < g.K; c0 += kMoeTileK) {
      // A tile: element e is (row e / kMoeTileK, column e % kMoeTileK): 16 consecutive elements of a row per 16 threads.
      for (int e = tid; e < kMoeTileM * kMoeTileK; e += kMoeThreads) {
        const int rr = e / kMoeTileK, cc = e % kMoeTileK;
        const index_t r = r0 + rr, c = c0 + cc;
        T v = T(0);
        if (r < count && c < g.K) {
          index_t src = first + r;  // plain: the token; scatter: the row of a
          if constexpr (kMode == MoeGemmMode::swiglu) src = g.sorted[first + r] / g.top_k;  // the pair's token
          v = A[src * g.lda + c];
        }
        As[cc * kMoePitchM + rr] = v;
      }
      for (int e = tid; e < kHalves * kMoeTileN * kMoeTileK; e += kMoeThreads) {
        const int h = e / (kMoeTileN * kMoeTileK), nn = (e / kMoeTileK) % kMoeTileN, cc = e % kMoeTileK;
        const index_t n = n0 + nn, c = c0 + cc;
        T v = T(0);
        if (n < g.N && c < g.K) {
          const W* w = Wg + (h * g.N + n) * g.K + c;
          if constexpr (std::is_same_v<W, T>) v = *w;
          else v = static_cast<T>(load_float(w));
        }
        Ws[(h * kMoeTileK + cc) * kMoePitchN + nn] = v;
      }
      __syncthreads();
      for (int cc = 0; cc < kMoeTileK; ++cc) {
        T a[kMoeSub];
        SSM_UNROLL
        for (int i = 0; i < kMoeSub; ++i) a[i] = As[cc * kMoePitchM + ty + 16 * i];
        SSM_UNROLL
        for (int h = 0; h < kHalves; ++h)
          SSM_UNROLL
          for (int j = 0; j < kMoeSub; ++j) {
            const T w = Ws[(h * kMoeTileK + cc) * kMoePitchN + tx + 16 * j];
            SSM_UNROLL
            for (int i = 0; i < kMoeSub; ++i) acc[h][i][j] += a[i] * w;
          }
      }
      __syncthreads();  // the next tiles overwrite As and Ws
    }
    T* C = static_cast<T*>(g.C);
    SSM_UNROLL
    for (int i = 0; i < kMoeSub; ++i) {
      const index_t r = r0 + ty + 16 * i;
      if (r >= count) continue;
      SSM_UNROLL
      for (int j = 0; j < kMoeSub; ++j) {
        const index_t n = n0 + tx + 16 * j;
        if (n >= g.N) continue;
        if constexpr (kMode == MoeGemmMode::plain) {
          C[r * g.ldc + n] = acc[0][i][j];
        } else if constexpr (kMode == MoeGemmMode::swiglu) {
          C[(first + r) * g.ldc + n] = moe_activate(g.act, acc[0][i][j]) * acc[kHalves - 1][i][j];
        } else {
          const index_t pair = g.sorted[first + r];
          C[pair * g.ldc + n] = static_cast<const T*>(g.pair_weight)[pair] * acc[0][i][j];
        }
      }
    }
  }
}

// ---- routing, grouping, combining -----------------------------------------------------------------------------------

/// Grid (ceil(t / kMoeRouteThreads)), block kMoeRouteThreads: one token per thread. p = softmax(logits) in T; choice i
/// is the largest logit not yet chosen (strictly larger wins: ties go to the lower index, as moe_route), its weight p;
/// with normalize_topk the k weights are divided by their sum. Never picks an expert twice (NaN logits included: a
/// comparison with NaN is false, so the first expert not yet taken is kept), so an expert has at most t pairs.
template <class T>
__global__ void __launch_bounds__(kMoeRouteThreads) moe_route_kernel(MoeParams p, MoeWorkspace ws, std::int64_t tokens) {
  const index_t token = static_cast<index_t>(blockIdx.x) * kMoeRouteThreads + threadIdx.x;
  if (token >= tokens) return;
  const index_t E = p.experts, k = p.top_k;
  const T* l = static_cast<const T*>(ws.logits) + token * E;  // (E)
  std::int32_t* expert = ws.pair_expert + token * k;          // (k)
  T* weight = static_cast<T*>(ws.pair_weight) + token * k;     // (k)
  T m = l[0];
  for (index_t e = 1; e < E; ++e) m = l[e] > m ? l[e] : m;
  T z = T(0);
  for (index_t e = 0; e < E; ++e) z += scalar::exp(l[e] - m);
  T sum = T(0);
  for (index_t i = 0; i < k; ++i) {
    index_t best = -1;
    for (index_t e = 0; e < E; ++e) {
      bool taken = false;
      for (index_t j = 0; j < i; ++j) taken = taken || expert[j] == e;
      if (!taken && (best < 0 || l[e] > l[best])) best = e;
    }
    expert[i] = static_cast<std::int32_t>(best);
    weight[i] = scalar::exp(l[best] - m) / z;
    sum += weight[i];
  }
  if (p.normalize_topk)
    for (index_t i = 0; i < k; ++i) weight[i] = weight[i] / sum;
}

/// Sum of two counts (the block scan's operator).
struct MoeCountSum {
  __device__ __forceinline__ int operator()(int a, int b) const { return a + b; }
};

/// The block scan's running prefix: the pairs of this expert in earlier tiles.
struct MoeCountPrefix {
  int running;
  __device__ __forceinline__ int operator()(int block_aggregate) {
    const int prefix = running;
    running += block_aggregate;
    return prefix;
  }
};

/// Grid (E), block kMoeGroupThreads: block e writes offsets[e] (the pairs of experts < e; offsets[E] = t·k from the
/// last block) and places expert e's pairs, in pair order, at sorted[offsets[e] ...]. Each pass reads every pair: E·t·k
/// reads in all, small beside the GEMMs (E ≤ a few hundred).
__global__ void __launch_bounds__(kMoeGroupThreads) moe_group_kernel(MoeParams p, MoeWorkspace ws, std::int64_t tokens) {
  using BlockScanT = BlockScan<int, kMoeGroupThreads>;
  SSM_SHARED(typename BlockScanT::TempStorage, scan_storage, 1);
  SSM_SHARED(int, before, kMoeGroupThreads);  // per thread: pairs of experts < e, then the tree
  const int tid = static_cast<int>(threadIdx.x);
  const int e = static_cast<int>(blockIdx.x);
  const index_t n_pairs = tokens * p.top_k;
  int mine = 0;
  for (index_t i = tid; i < n_pairs; i += kMoeGroupThreads) mine += ws.pair_expert[i] < e ? 1 : 0;
  before[tid] = mine;
  __syncthreads();
  for (int s = kMoeGroupThreads / 2; s > 0; s >>= 1) {
    if (tid < s) before[tid] = before[tid] + before[tid + s];
    __syncthreads();
  }
  const int offset = before[0];
  MoeCountPrefix prefix{0};
  for (index_t i0 = 0; i0 < n_pairs; i0 += kMoeGroupThreads) {
    const index_t i = i0 + tid;
    int flag[1] = {i < n_pairs && ws.pair_expert[i] == e ? 1 : 0};
    int rank[1];
    BlockScanT(scan_storage[0]).InclusiveScan(flag, rank, MoeCountSum{}, prefix);
    if (flag[0]) ws.sorted[offset + rank[0] - 1] = static_cast<std::int32_t>(i);
    __syncthreads();  // the scan storage is reused by the next tile
  }
  if (tid == 0) {
    ws.offsets[e] = offset;
    if (e == p.experts - 1) ws.offsets[p.experts] = static_cast<std::int32_t>(n_pairs);
  }
}

/// Grid (t), block kMoeCombineThreads: out[j, n] = Σ_i o[j·k + i, n], the k choices added in order.
template <class T>
__global__ void __launch_bounds__(kMoeCombineThreads) moe_combine_kernel(MoeParams p, MoeWorkspace ws, MoeSlice s) {
  const index_t token = blockIdx.x, H = p.d_model, k = p.top_k;
  const T* o = static_cast<const T*>(ws.o) + token * k * H;                // (k, H)
  T* out = static_cast<T*>(s.out) + token * p.out_row_stride;              // (H)
  for (index_t n = threadIdx.x; n < H; n += kMoeCombineThreads) {
    T y = o[n];
    for (index_t i = 1; i < k; ++i) y += o[i * H + n];
    out[n] = y;
  }
}

}  // namespace ssm::kernels
