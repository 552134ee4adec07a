// The launch logic of the mixture of experts' forward (kernels/moe.cuh), written once over an executor
// (`exec.launch(kernel, LaunchDims grid, LaunchDims block, args...)`): the kernels' limits, the workspace's layout
// (plan_moe, on the host), the slices of tokens and the dtype dispatch. ssm::cuda runs it on a stream
// (cuda/src/moe.cu), the host emulation with emu::HostExecutor (cuda/emu/backend_entries.hpp). The caller allocates
// plan.bytes of device memory and passes its base.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "../moe.cuh"
#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"

namespace ssm::kernels {

/// The workspace one slice of tokens uses, and how many tokens a slice holds: as many as fit the budget (plan.bytes
/// <= budget, unless one token alone is over it: the experts' hidden rows a and outputs o take k (d_ff + d_model)
/// elements per token, 0.6 GB for Jamba's 4096 tokens at once, so long prompts run in slices, each slice all six
/// launches), at least one token.
struct MoePlan {
  std::int64_t slice_tokens = 0;
  std::size_t logits_offset = 0, pair_expert_offset = 0, pair_weight_offset = 0, sorted_offset = 0,
              offsets_offset = 0, a_offset = 0, o_offset = 0, bytes = 0;
};

/// The default workspace budget of one call: 256 MiB.
inline constexpr std::size_t kMoeWorkspaceBudget = std::size_t{256} << 20;

inline std::size_t moe_align(std::size_t bytes) { return (bytes + 255) / 256 * 256; }

/// Checks p against the kernels' limits (the op, ops/moe.hpp, has checked shapes and dtypes) and lays out the
/// workspace of one slice.
inline MoePlan plan_moe(const MoeParams& p, const char* op, std::size_t budget = kMoeWorkspaceBudget) {
  SSM_CHECK(p.dtype == DType::f32 || p.dtype == DType::f64, op, ": x must be f32 or f64 on CUDA, got ", name(p.dtype));
  const bool w16 = p.dtype == DType::f32 && (p.weight_dtype == DType::f16 || p.weight_dtype == DType::bf16);
  SSM_CHECK(p.weight_dtype == p.dtype || w16, op, ": ", name(p.weight_dtype), " weights with ", name(p.dtype),
            " x: the weights must be in x's dtype, or f16 / bf16 for f32 x");
  SSM_CHECK(p.tokens >= 0 && p.d_model >= 1 && p.d_ff >= 1 && p.experts >= 1 && p.experts <= 65535, op,
            ": need t >= 0, d_model, d_ff >= 1 and E in [1, 65535], got t = ", p.tokens, ", d_model = ", p.d_model,
            ", d_ff = ", p.d_ff, ", E = ", p.experts);
  SSM_CHECK(p.top_k >= 1 && p.top_k <= p.experts, op, ": top_k must be in [1, ", p.experts, "], got ", p.top_k);
  SSM_CHECK(p.tokens <= 1 || (p.x_row_stride >= p.d_model && p.out_row_stride >= p.d_model), op,
            ": the rows of x and out may not overlap on CUDA (row strides >= d_model = ", p.d_model, "), got ",
            p.x_row_stride, " and ", p.out_row_stride);
  SSM_CHECK(p.x && p.router && p.w_gate_up && p.w_down && p.out, op, ": x, router, w_gate_up, w_down and out must be set");
  const std::size_t s = size_of(p.dtype);
  const std::size_t k = static_cast<std::size_t>(p.top_k), E = static_cast<std::size_t>(p.experts);
  const std::size_t per_token = E * s + k * (2 * sizeof(std::int32_t) + s) +
                                k * static_cast<std::size_t>(p.d_ff + p.d_model) * s;
  // What does not grow with the tokens: the offsets and up to 255 bytes of alignment after each of the 7 regions.
  const std::size_t fixed = 7 * 255 + (E + 1) * sizeof(std::int32_t);
  constexpr std::int64_t kMaxSlice = std::int64_t{65535} * kMoeTileM;  // the GEMMs' row tiles on grid.y
  MoePlan plan;
  plan.slice_tokens = std::clamp<std::int64_t>(static_cast<std::int64_t>(budget > fixed ? (budget - fixed) / per_token : 0),
                                               1, std::max<std::int64_t>(p.tokens, 1));
  plan.slice_tokens = std::min({plan.slice_tokens, kMaxSlice, std::int64_t{0x7fffffff} / p.top_k});
  const std::size_t t = static_cast<std::size_t>(plan.slice_tokens), pairs = t * k;
  plan.logits_offset = 0;
  plan.pair_expert_offset = moe_align(t * E * s);
  plan.pair_weight_offset = plan.pair_expert_offset + moe_align(pairs * sizeof(std::int32_t));
  plan.sorted_offset = plan.pair_weight_offset + moe_align(pairs * s);
  plan.offsets_offset = plan.sorted_offset + moe_align(pairs * sizeof(std::int32_t));
  plan.a_offset = plan.offsets_offset + moe_align((E + 1) * sizeof(std::int32_t));
  plan.o_offset = plan.a_offset + moe_align(pairs * static_cast<std::size_t>(p.d_ff) * s);
  plan.bytes = plan.o_offset + moe_align(pairs * static_cast<std::size_t>(p.d_model) * s);
  return plan;
}

namespace moe_detail {

inline unsigned tiles(std::int64_t n, int tile) { return static_cast<unsigned>((n + tile - 1) / tile); }

/// One slice's six launches with activations T and weights W.
template <class T, class W, class Exec>
void slice_launches(Exec& exec, const MoeParams& p, const MoeWorkspace& ws, const MoeSlice& s) {
  const std::int64_t t = s.tokens, E = p.experts, H = p.d_model, I = p.d_ff;
  const LaunchDims gemm_block{static_cast<unsigned>(kMoeThreads)};
  MoeGemmArgs router;  // logits (t, E) = x W_rᵀ
  router.A = s.x, router.lda = p.x_row_stride, router.W = p.router, router.N = E, router.K = H, router.rows = t;
  router.C = ws.logits, router.ldc = E;
  exec.launch(moe_gemm_kernel<T, W, MoeGemmMode::plain>, LaunchDims{tiles(E, kMoeTileN), tiles(t, kMoeTileM), 1},
              gemm_block, router);
  exec.launch(moe_route_kernel<T>, LaunchDims{tiles(t, kMoeRouteThreads)}, LaunchDims{unsigned{kMoeRouteThreads}}, p,
              ws, t);
  exec.launch(moe_group_kernel, LaunchDims{static_cast<unsigned>(E)}, LaunchDims{unsigned{kMoeGroupThreads}}, p, ws, t);
  // An expert has at most t pairs (a token picks it once): t rows of tiles cover the largest group.
  MoeGemmArgs up;  // a (sorted pair, I) = act(x W_gateᵀ) ⊙ x W_upᵀ, x's rows gathered by the pair's token
  up.A = s.x, up.lda = p.x_row_stride, up.W = p.w_gate_up, up.w_group_stride = 2 * I * H, up.N = I, up.K = H;
  up.offsets = ws.offsets, up.sorted = ws.sorted, up.top_k = static_cast<int>(p.top_k), up.act = p.act;
  up.C = ws.a, up.ldc = I;
  exec.launch(moe_gemm_kernel<T, W, MoeGemmMode::swiglu>,
              LaunchDims{tiles(I, kMoeTileN), tiles(t, kMoeTileM), static_cast<unsigned>(E)}, gemm_block, up);
  MoeGemmArgs down;  // o (pair, H) = w_pair · a W_downᵀ
  down.A = ws.a, down.lda = I, down.W = p.w_down, down.w_group_stride = H * I, down.N = H, down.K = I;
  down.offsets = ws.offsets, down.sorted = ws.sorted, down.pair_weight = ws.pair_weight;
  down.C = ws.o, down.ldc = H;
  exec.launch(moe_gemm_kernel<T, W, MoeGemmMode::scatter>,
              LaunchDims{tiles(H, kMoeTileN), tiles(t, kMoeTileM), static_cast<unsigned>(E)}, gemm_block, down);
  exec.launch(moe_combine_kernel<T>, LaunchDims{static_cast<unsigned>(t)}, LaunchDims{unsigned{kMoeCombineThreads}}, p,
              ws, s);
}

}  // namespace moe_detail

/// Every slice of p.tokens, in order, through the workspace at base (plan.bytes of device memory).
template <class Exec>
void moe_forward_launches(Exec& exec, const MoeParams& p, const MoePlan& plan, void* base) {
  char* b = static_cast<char*>(base);
  const std::size_t s = size_of(p.dtype);
  MoeWorkspace ws;
  ws.pair_expert = reinterpret_cast<std::int32_t*>(b + plan.pair_expert_offset);
  ws.pair_weight = b + plan.pair_weight_offset;
  ws.sorted = reinterpret_cast<std::int32_t*>(b + plan.sorted_offset);
  ws.offsets = reinterpret_cast<std::int32_t*>(b + plan.offsets_offset);
  ws.a = b + plan.a_offset;
  ws.o = b + plan.o_offset;
  for (std::int64_t t0 = 0; t0 < p.tokens; t0 += plan.slice_tokens) {
    MoeSlice slice;
    slice.tokens = std::min(plan.slice_tokens, p.tokens - t0);
    slice.x = static_cast<const char*>(p.x) + static_cast<std::size_t>(t0 * p.x_row_stride) * s;
    slice.out = static_cast<char*>(p.out) + static_cast<std::size_t>(t0 * p.out_row_stride) * s;
    ws.logits = p.router_logits != nullptr
                    ? static_cast<void*>(static_cast<char*>(p.router_logits) + static_cast<std::size_t>(t0 * p.experts) * s)
                    : static_cast<void*>(b + plan.logits_offset);
    if (p.dtype == DType::f64) moe_detail::slice_launches<double, double>(exec, p, ws, slice);
    else if (p.weight_dtype == DType::f16) moe_detail::slice_launches<float, ::ssm::half>(exec, p, ws, slice);
    else if (p.weight_dtype == DType::bf16) moe_detail::slice_launches<float, ::ssm::bfloat16>(exec, p, ws, slice);
    else moe_detail::slice_launches<float, float>(exec, p, ws, slice);
  }
}

}  // namespace ssm::kernels
