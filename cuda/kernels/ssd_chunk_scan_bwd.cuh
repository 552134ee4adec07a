// Chunked SSD backward, the gradient of x (docs/ssd.md "CUDA backward"; the CPU's chunk_output_backward.hpp,
// chunk_local_backward.hpp and chunk_state_backward.hpp for one head): per (chunk, head), for step j and channel p,
//   ḡx_j = D ḡy_j + Δ_j U_j + w_j P_j,    U_j (p) = Σ_{t>=j} (C_t · B_j) exp(cs_t − cs_j) ḡy_t,    P_j (p) = ḡS B_j,
// with w_j = exp(cs_last − cs_j) Δ_j and ḡS the gradient of the state the chunk leaves (ssd_state_passing_bwd.cuh).
// On the way, the parts of the other gradients that need x's products:
//   ḡΔ_j += ⟨x_j, U_j⟩ + exp(cs_last − cs_j) ⟨x_j, P_j⟩,   q_j = w_j ⟨x_j, P_j⟩: ḡcs_j −= q_j, ḡcs_last += q_j,
//   ḡD += Σ_j ḡy_j ⊙ x_j,   ḡz_j = ḡout_j y_j silu'(z_j) (y from the forward's chunk scan, kept in gw.y).
// A block owns a kSsdTile × kSsdTile tile of ḡx (steps j × p) and computes it like the forward's chunk scan with
// the roles of C and B exchanged: P as B (steps × n) by ḡSᵀ (reduced over n in tiles of 32), then per tile of later
// steps t (from the diagonal one to the chunk's end) the tile of (C Bᵀ)ᵀ, masked (t < j is 0, never exponentiated)
// and weighted by exp(cs_t − cs_j) in shared memory, by the tile of ḡy. The sums over p (ḡΔ, q) are a shuffle sum
// over a row's 16 lanes, then one atomicAdd per row (the p tiles' blocks share them); ḡD's sum over the tile's steps
// goes through shared memory to one atomicAdd per channel (every chunk and step tile shares it).
#pragma once

#include "ssd_common.cuh"

namespace ssm::kernels {

/// Grid (n_chunks, h, step tiles × p tiles), block kSsdThreads; tiles past a chunk's length return at once. Writes
/// g.grad_x and g.grad_z; adds to gw.dDelta, gw.dcs and g.grad_D (zeroed before).
template <class In>
__global__ void __launch_bounds__(kSsdThreads, kSsdMinBlocks)
    ssd_chunk_scan_bwd_kernel(SsdParams p, SsdGradParams g, SsdWorkspace ws, SsdGradWorkspace gw) {
  SSM_SHARED(float, Bs, kSsdTile * kSsdPitch);  // (step j, n) of B
  SSM_SHARED(float, Ks, kSsdTile * kSsdPitch);  // (p, n) of ḡS, or (step t, n) of C
  SSM_SHARED(float, Ms, kSsdTile * kSsdPitch);  // (j, t): (C_t · B_j) exp(cs_t − cs_j), t >= j
  SSM_SHARED(float, Gs, kSsdTile * kSsdPitch);  // (t, p): ḡy
  SSM_SHARED(float, red, kSsdHalf * kSsdTile);  // (thread row, p): ḡD's partial sums
  const int tid = static_cast<int>(threadIdx.x), ty = tid / kSsdHalf, tx = tid % kSsdHalf;
  const index_t c = blockIdx.x, head = blockIdx.y;
  const index_t P = p.headdim, N = p.dstate, p_tiles = (P + kSsdTile - 1) / kSsdTile;
  const index_t r0 = (blockIdx.z / p_tiles) * kSsdTile, p0 = (blockIdx.z % p_tiles) * kSsdTile;
  const auto [row, t0, len] = chunk_row(ws.chunks, c);
  if (r0 >= len) return;  // the whole block
  const index_t group = head / (p.nheads / p.ngroups);
  const double* cs = ws.cs + (c * p.nheads + head) * ws.q;
  const float* Delta = ws.Delta + (c * p.nheads + head) * ws.q;
  const float* dS = gw.dstates + (c * p.nheads + head) * P * N;  // (p, n): ḡS of the state the chunk leaves
  const In* x = static_cast<const In*>(p.x) + row * p.x_batch_stride + t0 * p.x_seq_stride + head * p.x_head_stride;
  const In* B = static_cast<const In*>(p.B) + row * p.B_batch_stride + t0 * p.B_seq_stride + group * p.B_group_stride;
  const In* C = static_cast<const In*>(p.C) + row * p.C_batch_stride + t0 * p.C_seq_stride + group * p.C_group_stride;

  // P (j, p) = Σ_n B_j[n] ḡS[p, n].
  float pacc[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
  for (index_t k0 = 0; k0 < N; k0 += kSsdTile) {
    for (int e = tid; e < kSsdTile * kSsdTile; e += kSsdThreads) {
      const int rr = e / kSsdTile, kk = e % kSsdTile;  // Bs: B's rows r0..; Ks: ḡS's rows p0.. (columns k0..)
      const index_t j = r0 + rr;
      Bs[rr * kSsdPitch + kk] = j < len && k0 + kk < N ? load_float(B + j * p.B_seq_stride + k0 + kk) : 0.0f;
      Ks[rr * kSsdPitch + kk] = p0 + rr < P && k0 + kk < N ? dS[(p0 + rr) * N + k0 + kk] : 0.0f;
    }
    __syncthreads();
    for (int k = 0; k < kSsdTile; ++k) {
      SSM_UNROLL
      for (int a = 0; a < 2; ++a) {
        const float ba = Bs[(ty + a * kSsdHalf) * kSsdPitch + k];
        SSM_UNROLL
        for (int b = 0; b < 2; ++b) pacc[a][b] += ba * Ks[(tx + b * kSsdHalf) * kSsdPitch + k];
      }
    }
    __syncthreads();  // the next columns overwrite Bs and Ks
  }

  // U (j, p) = Σ_{t>=j} (C_t · B_j) exp(cs_t − cs_j) ḡy_t: tiles of later steps from the diagonal one.
  float uacc[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
  for (index_t s0 = r0; s0 < len; s0 += kSsdTile) {
    float gt[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};  // (j, t): B_j · C_t
    for (index_t k0 = 0; k0 < N; k0 += kSsdTile) {
      for (int e = tid; e < kSsdTile * kSsdTile; e += kSsdThreads) {
        const int rr = e / kSsdTile, kk = e % kSsdTile;  // Bs: B's rows r0..; Ks: C's rows s0.. (columns k0..)
        const index_t j = r0 + rr, t = s0 + rr;
        Bs[rr * kSsdPitch + kk] = j < len && k0 + kk < N ? load_float(B + j * p.B_seq_stride + k0 + kk) : 0.0f;
        Ks[rr * kSsdPitch + kk] = t < len && k0 + kk < N ? load_float(C + t * p.C_seq_stride + k0 + kk) : 0.0f;
      }
      __syncthreads();
      for (int k = 0; k < kSsdTile; ++k) {
        SSM_UNROLL
        for (int a = 0; a < 2; ++a) {
          const float ba = Bs[(ty + a * kSsdHalf) * kSsdPitch + k];
          SSM_UNROLL
          for (int b = 0; b < 2; ++b) gt[a][b] += ba * Ks[(tx + b * kSsdHalf) * kSsdPitch + k];
        }
      }
      __syncthreads();  // the next columns overwrite Bs and Ks; and orders this tile's Ms, Gs after the last one's reads
    }
    SSM_UNROLL
    for (int a = 0; a < 2; ++a)
      SSM_UNROLL
      for (int b = 0; b < 2; ++b) {
        const index_t j = r0 + ty + a * kSsdHalf, t = s0 + tx + b * kSsdHalf;
        float m = 0.0f;
        if (t < len && j <= t) m = gt[a][b] * scalar::exp(static_cast<float>(cs[t] - cs[j]));
        Ms[(ty + a * kSsdHalf) * kSsdPitch + tx + b * kSsdHalf] = m;
      }
    for (int e = tid; e < kSsdTile * kSsdTile; e += kSsdThreads) {
      const int tt = e / kSsdTile, pp = e % kSsdTile;
      const index_t t = s0 + tt;
      Gs[tt * kSsdPitch + pp] = t < len && p0 + pp < P ? ssd_grad_y<In>(p, g, row, t0 + t, head, p0 + pp) : 0.0f;
    }
    __syncthreads();
    for (int t = 0; t < kSsdTile; ++t) {
      SSM_UNROLL
      for (int a = 0; a < 2; ++a) {
        const float m = Ms[(ty + a * kSsdHalf) * kSsdPitch + t];
        SSM_UNROLL
        for (int b = 0; b < 2; ++b) uacc[a][b] += m * Gs[t * kSsdPitch + tx + b * kSsdHalf];
      }
    }
    // No barrier here: the next tile writes Ms and Gs only after the barriers of its B Cᵀ loop (n >= 1).
  }

  // Epilogue: ḡx, ḡz, and the parts of ḡΔ, ḡcs and ḡD.
  const float* D = static_cast<const float*>(p.D);
  const double cs_last = cs[len - 1];
  float dsum[2] = {0.0f, 0.0f};  // ḡD over this thread's two steps, per column b
  SSM_UNROLL
  for (int a = 0; a < 2; ++a) {
    const index_t j = r0 + ty + a * kSsdHalf;
    const bool jv = j < len;
    const float dj = jv ? Delta[j] : 0.0f;
    const float decay = jv ? scalar::exp(static_cast<float>(cs_last - cs[jv ? j : 0])) : 0.0f;
    const float w = decay * dj;
    float gd = 0.0f, qv = 0.0f;
    SSM_UNROLL
    for (int b = 0; b < 2; ++b) {
      const index_t pp = p0 + tx + b * kSsdHalf;
      if (!jv || pp >= P) continue;
      const float xv = load_float(x + j * p.x_seq_stride + pp);
      const float gy = ssd_grad_y<In>(p, g, row, t0 + j, head, pp);
      float gx = dj * uacc[a][b] + w * pacc[a][b];
      if (D) {
        gx += D[p.D_per_channel ? head * P + pp : head] * gy;
        dsum[b] += gy * xv;
      }
      gd += xv * (uacc[a][b] + decay * pacc[a][b]);
      qv += w * xv * pacc[a][b];
      const index_t off = ((row * p.seqlen + t0 + j) * p.nheads + head) * P + pp;  // contiguous (b, l, h, p)
      if (g.grad_x) store_float(static_cast<In*>(g.grad_x) + off, gx);
      if (p.z && g.grad_z) {
        const float zv = load_float(static_cast<const In*>(p.z) + row * p.z_batch_stride + (t0 + j) * p.z_seq_stride +
                                    head * p.z_head_stride + pp);
        const float gout = load_float(static_cast<const In*>(g.grad_out) + off);
        store_float(static_cast<In*>(g.grad_z) + off, gout * gw.y[off] * scalar::silu_grad(zv));
      }
    }
    gd = ssd_row_sum16(gd);
    qv = ssd_row_sum16(qv);
    if (tx == 0 && jv) {
      float* dcs = gw.dcs + (c * p.nheads + head) * ws.q;
      atomicAdd(gw.dDelta + (c * p.nheads + head) * ws.q + j, gd);
      atomicAdd(dcs + j, -qv);
      atomicAdd(dcs + len - 1, qv);
    }
  }
  if (D && g.grad_D) {
    SSM_UNROLL
    for (int b = 0; b < 2; ++b) red[ty * kSsdTile + tx + b * kSsdHalf] = dsum[b];
    __syncthreads();
    if (tid < kSsdTile) {  // warp 0: column tid's sum over the 16 thread rows
      float v = 0.0f;
      for (int r = 0; r < kSsdHalf; ++r) v += red[r * kSsdTile + tid];
      const index_t pp = p0 + tid;
      float* gD = static_cast<float*>(g.grad_D);
      if (p.D_per_channel) {
        if (pp < P) atomicAdd(gD + head * P + pp, v);
      } else {
        SSM_UNROLL
        for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
        if (tid == 0) atomicAdd(gD + head, v);
      }
    }
  }
}

}  // namespace ssm::kernels
