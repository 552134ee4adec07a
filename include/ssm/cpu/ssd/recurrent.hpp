// The SSD as a recurrence on the CPU (docs/ssd.md): the token loop in the compute type, one state H (p, n) per
// sequence and head, threads over (sequence, head). O(l p n) work like the chunked form but no GEMM: each step reads
// and writes the whole state, so it is bound by the state's traffic; it wins for short sequences and single steps
// (bench/ssd.cpp compares the two).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "ssm/core/instances.hpp"
#include "ssm/core/params/ssd.hpp"
#include "ssm/cpu/ssd/chunk_output.hpp"
#include "ssm/cpu/ssd/chunks.hpp"
#include "ssm/cpu/threads.hpp"

namespace ssm::cpu {

namespace ssd {

template <class In>
void forward_recurrent(const SsdParams& p, int threads) {
  using T = compute_t<In>;
  const std::int64_t h = p.nheads, hd = p.headdim, n = p.dstate, hpg = p.nheads / p.ngroups;
  parallel_for(p.rows() * h, threads, [&](std::int64_t task) {
    const std::int64_t s = task / h, head = task % h, gi = head / hpg, state_off = (s * h + head) * hd * n;
    std::vector<T> H(static_cast<std::size_t>(hd * n), T(0)), b(static_cast<std::size_t>(n)),
        c(static_cast<std::size_t>(n)), zrow;
    if (p.initial_state) {
      const T* h0 = static_cast<const T*>(p.initial_state) + state_off;
      std::copy(h0, h0 + hd * n, H.begin());
    }
    const T A = static_cast<const T*>(p.A)[head];
    const T bias = p.dt_bias ? static_cast<const T*>(p.dt_bias)[head] : T(0);
    const Chunk whole{s, p.seq_row(s), p.seq_begin(s), p.seq_end(s) - p.seq_begin(s), 0, true};
    // One step at a time through the epilogue of chunk_output.hpp: Y, X are one-row matrices.
    Matrix<T> X(1, hd), Y(1, hd);
    for (std::int64_t t = whole.t0; t < whole.t0 + whole.len; ++t) {
      const std::int64_t row = whole.row;
      const T Delta = ssd_delta<T>(
          static_cast<const T*>(p.dt)[row * p.dt_batch_stride + t * p.dt_seq_stride + head * p.dt_head_stride] + bias, p);
      const T decay = std::exp(Delta * A);
      load_row(static_cast<const In*>(p.x) + row * p.x_batch_stride + t * p.x_seq_stride + head * p.x_head_stride, hd,
               X.data());
      load_row(static_cast<const In*>(p.B) + row * p.B_batch_stride + t * p.B_seq_stride + gi * p.B_group_stride, n,
               b.data());
      load_row(static_cast<const In*>(p.C) + row * p.C_batch_stride + t * p.C_seq_stride + gi * p.C_group_stride, n,
               c.data());
      // H = decay H + (Δ x) bᵀ (a rank-1 update), then y = H c: both vectorized by Eigen (a dot product written as a
      // loop would not be, without reassociation).
      Eigen::Map<Matrix<T>> Hm(H.data(), hd, n);
      const Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>> bv(b.data(), n), cv(c.data(), n);
      Hm = decay * Hm + (Delta * X.row(0)).transpose() * bv;
      Y.row(0).noalias() = (Hm * cv.transpose()).transpose();
      const Chunk step{s, row, t, 1, 0, false};
      add_skip(p, head, X, Y);
      store_output<In, T>(p, step, head, Y, zrow);
    }
    if (p.final_state) std::copy(H.begin(), H.end(), static_cast<T*>(p.final_state) + state_off);
  });
}

}  // namespace ssd

/// The SSD forward as a token loop over p (validated by the op), on `threads` threads (0: by the amount of work).
inline void ssd_forward_recurrent(const SsdParams& p, int threads) {
  const int t = cpu_threads(threads, p.batch * p.seqlen * p.nheads * p.headdim * p.dstate);
  switch (p.input_dtype) {
    case DType::f32: ssd::forward_recurrent<float>(p, t); break;
    case DType::f64: ssd::forward_recurrent<double>(p, t); break;
    case DType::f16: ssd::forward_recurrent<half>(p, t); break;
    case DType::bf16: ssd::forward_recurrent<bfloat16>(p, t); break;
    default: fail("ssd: input dtype ", name(p.input_dtype), " has no CPU path");
  }
}

}  // namespace ssm::cpu

/// The kernels' entry points for one input type In, compiled once where SSM_EXTERN_INSTANCES is set
/// (core/instances.hpp, src/instances/).
#define SSM_CPU_SSD_RECURRENT_INSTANCES(PREFIX, In) \
  PREFIX void ssm::cpu::ssd::forward_recurrent<In>(const ::ssm::SsdParams&, int);
#if SSM_EXTERN_INSTANCES
SSM_FOR_EACH_INPUT(SSM_CPU_SSD_RECURRENT_INSTANCES, extern template)
#endif
