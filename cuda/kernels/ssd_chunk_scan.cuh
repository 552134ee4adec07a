// Chunked SSD stage 3, the chunk scan (docs/ssd.md "CUDA"): per (chunk, head) the outputs of the chunk's steps,
//   y_t = exp(cs_t) C_t H_entering  +  Σ_{j<=t} (C_t · B_j) exp(cs_t − cs_j) Δ_j x_j  +  D x_t,   out_t = y_t silu(z_t),
// the inter-chunk term (C by the state entering the chunk) and the intra-chunk one ((C Bᵀ ⊙ L)(Δ x), L the masked
// decay). A block computes a kSsdTile × kSsdTile tile of out (steps × p): the inter term as C (steps × n) by Hᵀ, then
// per tile of earlier steps j (up to the diagonal one) the tile of C Bᵀ (reduced over n), masked and weighted in
// shared memory, by Δ x's tile. Every reduction is staged through shared memory kSsdTile at a time.
#pragma once

#include "ssd_common.cuh"

namespace ssm::kernels {

/// Grid (n_chunks, h, step tiles × p tiles), block kSsdThreads; step tiles cover q, and tiles past a chunk's
/// length return at once (before any barrier). In: x, B, C and z's dtype (f32, f16, bf16), f32 compute; Out: out's
/// (In for the forward; f32 for the backward's y, which it runs with z null to keep y before the gate). With p.y
/// (f32, (b, l, h, p) contiguous) y before the gate is written there too, for the backward.
template <class In, class Out = In>
__global__ void __launch_bounds__(kSsdThreads, kSsdMinBlocks) ssd_chunk_scan_kernel(SsdParams p, SsdWorkspace ws) {
  SSM_SHARED(float, Cs, kSsdTile * kSsdPitch);  // (step t, n)
  SSM_SHARED(float, Ks, kSsdTile * kSsdPitch);  // (p, n) of the entering state, or (step j, n) of B
  SSM_SHARED(float, Ms, kSsdTile * kSsdPitch);  // (t, j): (C Bᵀ ⊙ L) Δ_j
  SSM_SHARED(float, Xs, kSsdTile * kSsdPitch);  // (j, p)
  const int tid = static_cast<int>(threadIdx.x), ty = tid / kSsdHalf, tx = tid % kSsdHalf;
  const index_t c = blockIdx.x, head = blockIdx.y;
  const index_t P = p.headdim, N = p.dstate, p_tiles = (P + kSsdTile - 1) / kSsdTile;
  const index_t r0 = (blockIdx.z / p_tiles) * kSsdTile, p0 = (blockIdx.z % p_tiles) * kSsdTile;
  const auto [row, t0, len] = chunk_row(ws.chunks, c);
  if (r0 >= len) return;  // the whole block
  const index_t group = head / (p.nheads / p.ngroups);
  const double* cs = ws.cs + (c * p.nheads + head) * ws.q;
  const float* Delta = ws.Delta + (c * p.nheads + head) * ws.q;
  const float* H = ws.states + (c * p.nheads + head) * P * N;  // (p, n) entering the chunk
  const In* x = static_cast<const In*>(p.x) + row * p.x_batch_stride + t0 * p.x_seq_stride + head * p.x_head_stride;
  const In* B = static_cast<const In*>(p.B) + row * p.B_batch_stride + t0 * p.B_seq_stride + group * p.B_group_stride;
  const In* C = static_cast<const In*>(p.C) + row * p.C_batch_stride + t0 * p.C_seq_stride + group * p.C_group_stride;

  // (Written out twice below rather than as lambdas: a lambda taking the accumulators by reference left them in
  // local memory for the f16 / bf16 instantiations, 16 bytes of spills.)
  // Inter-chunk: acc (t, p) = exp(cs_t) Σ_n C_t[n] H[p, n].
  float acc[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
  for (index_t k0 = 0; k0 < N; k0 += kSsdTile) {
    for (int e = tid; e < kSsdTile * kSsdTile; e += kSsdThreads) {
      const int tt = e / kSsdTile, kk = e % kSsdTile;  // Cs: C's rows r0.., columns k0..; Ks: H's rows p0..
      const index_t t = r0 + tt;
      Cs[tt * kSsdPitch + kk] = t < len && k0 + kk < N ? load_float(C + t * p.C_seq_stride + k0 + kk) : 0.0f;
      Ks[tt * kSsdPitch + kk] = p0 + tt < P && k0 + kk < N ? H[(p0 + tt) * N + k0 + kk] : 0.0f;
    }
    __syncthreads();
    for (int k = 0; k < kSsdTile; ++k) {
      SSM_UNROLL
      for (int a = 0; a < 2; ++a) {
        const float ca = Cs[(ty + a * kSsdHalf) * kSsdPitch + k];
        SSM_UNROLL
        for (int b = 0; b < 2; ++b) acc[a][b] += ca * Ks[(tx + b * kSsdHalf) * kSsdPitch + k];
      }
    }
    __syncthreads();  // the next columns overwrite Cs and Ks
  }
  SSM_UNROLL
  for (int a = 0; a < 2; ++a) {
    const index_t t = r0 + ty + a * kSsdHalf;
    const float w = t < len ? scalar::exp(static_cast<float>(cs[t])) : 0.0f;
    acc[a][0] *= w, acc[a][1] *= w;
  }

  // Intra-chunk: tiles of earlier steps j0.. up to the diagonal one.
  for (index_t j0 = 0; j0 <= r0; j0 += kSsdTile) {
    float g[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};  // (t, j): C_t · B_j
    for (index_t k0 = 0; k0 < N; k0 += kSsdTile) {
      for (int e = tid; e < kSsdTile * kSsdTile; e += kSsdThreads) {
        const int tt = e / kSsdTile, kk = e % kSsdTile;  // Cs: C's rows r0..; Ks: B's rows j0.. (columns k0..)
        const index_t t = r0 + tt, j = j0 + tt;
        Cs[tt * kSsdPitch + kk] = t < len && k0 + kk < N ? load_float(C + t * p.C_seq_stride + k0 + kk) : 0.0f;
        Ks[tt * kSsdPitch + kk] = j < len && k0 + kk < N ? load_float(B + j * p.B_seq_stride + k0 + kk) : 0.0f;
      }
      __syncthreads();
      for (int k = 0; k < kSsdTile; ++k) {
        SSM_UNROLL
        for (int a = 0; a < 2; ++a) {
          const float ca = Cs[(ty + a * kSsdHalf) * kSsdPitch + k];
          SSM_UNROLL
          for (int b = 0; b < 2; ++b) g[a][b] += ca * Ks[(tx + b * kSsdHalf) * kSsdPitch + k];
        }
      }
      __syncthreads();  // the next columns overwrite Cs and Ks; and orders this tile's Ms, Xs after the last one's reads
    }
    // Mask and weight: j > t (or t past the chunk) is 0 and never exponentiated; else exp(cs_t − cs_j) <= 1.
    SSM_UNROLL
    for (int a = 0; a < 2; ++a)
      SSM_UNROLL
      for (int b = 0; b < 2; ++b) {
        const index_t t = r0 + ty + a * kSsdHalf, j = j0 + tx + b * kSsdHalf;
        float m = 0.0f;
        if (t < len && j <= t) m = g[a][b] * Delta[j] * scalar::exp(static_cast<float>(cs[t] - cs[j]));
        Ms[(ty + a * kSsdHalf) * kSsdPitch + tx + b * kSsdHalf] = m;
      }
    for (int e = tid; e < kSsdTile * kSsdTile; e += kSsdThreads) {
      const int jj = e / kSsdTile, pp = e % kSsdTile;
      const index_t j = j0 + jj;
      Xs[jj * kSsdPitch + pp] = j < len && p0 + pp < P ? load_float(x + j * p.x_seq_stride + p0 + pp) : 0.0f;
    }
    __syncthreads();
    for (int j = 0; j < kSsdTile; ++j) {
      SSM_UNROLL
      for (int a = 0; a < 2; ++a) {
        const float m = Ms[(ty + a * kSsdHalf) * kSsdPitch + j];
        SSM_UNROLL
        for (int b = 0; b < 2; ++b) acc[a][b] += m * Xs[j * kSsdPitch + tx + b * kSsdHalf];
      }
    }
    // No barrier here: the next tile writes Ms and Xs only after the barriers of its C Bᵀ loop (n >= 1).
  }

  // Epilogue: the D skip, the z gate, out in the input dtype.
  const float* D = static_cast<const float*>(p.D);
  const In* z = p.z ? static_cast<const In*>(p.z) + row * p.z_batch_stride + t0 * p.z_seq_stride + head * p.z_head_stride
                    : nullptr;
  Out* out = static_cast<Out*>(p.out) + row * p.out_batch_stride + t0 * p.out_seq_stride + head * p.out_head_stride;
  float* kept = p.y ? static_cast<float*>(p.y) + ((row * p.seqlen + t0) * p.nheads + head) * P : nullptr;
  SSM_UNROLL
  for (int a = 0; a < 2; ++a)
    SSM_UNROLL
    for (int b = 0; b < 2; ++b) {
      const index_t t = r0 + ty + a * kSsdHalf, pp = p0 + tx + b * kSsdHalf;
      if (t >= len || pp >= P) continue;
      float y = acc[a][b];
      if (D) y += D[p.D_per_channel ? head * P + pp : head] * load_float(x + t * p.x_seq_stride + pp);
      if (kept) kept[t * p.nheads * P + pp] = y;
      if (z) y *= scalar::silu(load_float(z + t * p.z_seq_stride + pp));
      store_float(out + t * p.out_seq_stride + pp, y);
    }
}

}  // namespace ssm::kernels
