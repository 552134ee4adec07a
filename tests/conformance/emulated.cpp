// The registry's emulated CUDA backend (emulated.hpp): the launch code of cuda/src/ over host memory, once for every
// test (tests/cuda_emu runs its kernels through it too).
#include "emulated.hpp"

#include <algorithm>
#include <cstdint>

#include "emu/executor.hpp"
#include "kernels/attention.cuh"
#include "kernels/causal_conv1d.cuh"
#include "kernels/selective_scan_bwd.cuh"
#include "kernels/selective_scan_fwd.cuh"
#include "ssm/cuda/attention.hpp"
#include "ssm/cuda/selective_scan.hpp"

namespace conformance::emulated {

using ssm::DType;
using ssm::index_t;
using ssm::Tensor;
using ssm::TensorView;
using ssm::kernels::LaunchDims;

namespace {

/// Every launch in a random thread order, seeded by the launch count.
ssm::emu::HostExecutor& executor() {
  static ssm::emu::HostExecutor exec(ssm::emu::Order::random, 1);
  return exec;
}

/// Calls f(float{}), f(half{}) or f(bfloat16{}): the input types of the kernels.
template <class F>
void visit_input(DType t, F&& f) {
  switch (t) {
    case DType::f32: f(float{}); break;
    case DType::f16: f(ssm::half{}); break;
    case DType::bf16: f(ssm::bfloat16{}); break;
    default: ssm::fail("emulated CUDA kernels: input dtype ", ssm::name(t), " is not one the kernels take");
  }
}

unsigned u32(index_t x) { return static_cast<unsigned>(x); }

/// The forward launch of ssm::cuda::selective_scan_forward (cuda/src/selective_scan_fwd_launch.cuh).
void launch_scan_forward(const ssm::ScanParams& p, DType input, float* chunk_states, index_t max_len) {
  SSM_CHECK(!p.is_complex, "emulated selective scan: complex A has no CUDA kernel");
  const index_t sequences = ssm::kernels::fwd_num_sequences(p);
  visit_input(input, [&](auto in) {
    using In = decltype(in);
    ssm::kernels::dispatch_fwd_config(max_len, [&](auto cfg) {
      using Cfg = decltype(cfg);
      const index_t n_chunks = std::max<index_t>(1, (max_len + Cfg::kChunk - 1) / Cfg::kChunk);
      executor().launch(ssm::kernels::selective_scan_fwd_kernel<In, Cfg::kThreads, Cfg::kItems>,
                        LaunchDims{u32(p.dim), u32(sequences)}, LaunchDims{Cfg::kThreads}, p, chunk_states, n_chunks);
    });
  });
}

/// f32 values into a tensor of another float dtype (the device-side cast of ops/selective_scan.hpp).
void cast_into(const Tensor& f32, const TensorView& dst) {
  const float* src = f32.data_as<float>();
  visit_input(dst.dtype(), [&](auto zero) {
    using T = decltype(zero);
    T* d = static_cast<T*>(dst.data());
    for (index_t i = 0; i < f32.numel(); ++i) d[i] = ssm::from_float<T>(src[i]);
  });
}

}  // namespace

std::string selective_scan_into(const ssm::SelectiveScanInputs& in, const TensorView& out,
                                std::optional<TensorView> last_state) {
  const ssm::scan_detail::PreparedScan s = ssm::scan_params(in, out, last_state);
  index_t max_len = s.p.seqlen;
  if (s.p.cu_seqlens) {
    max_len = 0;
    for (std::size_t i = 1; i < s.cu.size(); ++i) max_len = std::max<index_t>(max_len, s.cu[i] - s.cu[i - 1]);
  }
  if (ssm::kernels::fwd_num_sequences(s.p) * s.p.dim > 0) launch_scan_forward(s.p, s.input, nullptr, max_len);
  return "cuda-emulated";
}

void selective_scan_backward(const ssm::SelectiveScanInputs& in, const TensorView& grad_out,
                             std::optional<TensorView> grad_last_state, const ScanGradViews& r) {
  Tensor recomputed = Tensor::empty(in.u.shape(), in.u.dtype());  // (b, d, l): the forward runs once more
  ssm::scan_detail::PreparedScan s = ssm::scan_params(in, recomputed);
  ssm::ScanParams& p = s.p;
  SSM_CHECK(!p.cu_seqlens, "emulated selective scan backward: the kernel has no packed sequences");
  SSM_CHECK(grad_out.is_contiguous() && (!grad_last_state || grad_last_state->is_contiguous()),
            "emulated selective scan backward: grad_out and grad_last_state must be contiguous");
  const index_t chunks = std::max<index_t>(1, (p.seqlen + ssm::kernels::fwd_chunk_len(p.seqlen) - 1) /
                                                  ssm::kernels::fwd_chunk_len(p.seqlen));
  Tensor states = Tensor::empty({p.batch, p.dim, chunks, p.dstate}, DType::f32);  // (b, d, chunks, n)
  launch_scan_forward(p, s.input, states.data_as<float>(), p.seqlen);

  ssm::cuda::ScanGradParams g;
  g.grad_out = grad_out.data();
  g.grad_last_state = grad_last_state ? static_cast<const float*>(grad_last_state->data()) : nullptr;
  g.chunk_states = states.data_as<float>();
  g.n_chunks_max = chunks;
  g.grad_u = r.grad_u.data();
  g.grad_delta = r.grad_delta.data();
  g.grad_z = r.grad_z.data();
  g.grad_A = static_cast<float*>(r.grad_A.data());
  g.grad_D = static_cast<float*>(r.grad_D.data());
  g.grad_delta_bias = static_cast<float*>(r.grad_delta_bias.data());
  g.grad_initial_state = static_cast<float*>(r.grad_initial_state.data());
  // variable grad_B / grad_C of f16 / bf16 inputs accumulate in f32, then are cast
  const bool narrow = s.input != DType::f32;
  Tensor gB32, gC32;
  if (narrow && p.variable_B) gB32 = Tensor::zeros(r.grad_B.shape(), DType::f32);
  if (narrow && p.variable_C) gC32 = Tensor::zeros(r.grad_C.shape(), DType::f32);
  g.grad_B = gB32.defined() ? gB32.data_as<float>() : static_cast<float*>(r.grad_B.data());
  g.grad_C = gC32.defined() ? gC32.data_as<float>() : static_cast<float*>(r.grad_C.data());
  visit_input(s.input, [&](auto zero) {
    using In = decltype(zero);
    ssm::kernels::dispatch_fwd_config(p.seqlen, [&](auto fwd_cfg) {
      using Cfg = ssm::kernels::ScanBwdConfig<decltype(fwd_cfg)>;
      executor().launch(ssm::kernels::selective_scan_bwd_kernel<In, Cfg::kThreads, Cfg::kItems>,
                        LaunchDims{u32(p.dim), u32(p.batch)}, LaunchDims{Cfg::kThreads}, p, g);
    });
  });
  if (gB32.defined()) cast_into(gB32, r.grad_B);
  if (gC32.defined()) cast_into(gC32, r.grad_C);
}

namespace {

/// The sizes of a conv1d call (the op's check_conv1d takes only f32 / f64 for host tensors; the kernels take
/// f32 / f16 / bf16 x, so the host tensors here are checked by the kernel's own limits).
ssm::detail::Conv1dSizes conv_sizes(const ssm::CausalConv1dInputs& in) {
  SSM_CHECK(in.x.rank() == 3 && in.weight.rank() == 2 && in.weight.size(1) >= 2 && in.weight.size(1) <= 4 &&
                in.weight.dtype() == DType::f32,
            "emulated causal_conv1d: x (b, d, l), weight (d, w) f32 with w in 2..4");
  return {in.x.size(0), in.x.size(1), in.x.size(2), in.weight.size(1), in.x.dtype(), DType::f32, ssm::Device::cpu()};
}

LaunchDims conv_grid(const ssm::detail::Conv1dSizes& s) {
  using Cfg = ssm::kernels::ConvFwdConfig;
  constexpr index_t tile = Cfg::kThreads * Cfg::kItems;
  return {u32(std::max<index_t>(1, (s.l + tile - 1) / tile)), u32(s.d), u32(s.b)};
}

}  // namespace

void causal_conv1d_into(const ssm::CausalConv1dInputs& in, const TensorView& out, const TensorView& final_state) {
  const auto s = conv_sizes(in);
  auto p = ssm::detail::cuda_conv1d_params(s, in);
  p.out = out.data(), p.out_batch_stride = out.stride(0), p.out_d_stride = out.stride(1);
  p.final_state = static_cast<float*>(final_state.data());
  if (s.b * s.d == 0) return;
  using Cfg = ssm::kernels::ConvFwdConfig;
  visit_input(s.input, [&](auto zero) {
    executor().launch(ssm::kernels::causal_conv1d_fwd_kernel<decltype(zero), Cfg::kThreads, Cfg::kItems>, conv_grid(s),
                      LaunchDims{Cfg::kThreads}, p);
  });
}

void causal_conv1d_backward(const ssm::CausalConv1dInputs& in, const TensorView& grad_out,
                            std::optional<TensorView> grad_final_state, const TensorView& grad_x,
                            const TensorView& grad_weight, const TensorView& grad_bias,
                            const TensorView& grad_initial_state) {
  const auto s = conv_sizes(in);
  const auto p = ssm::detail::cuda_conv1d_params(s, in);
  ssm::CausalConv1dGradParams g;
  g.grad_out = grad_out.data(), g.grad_out_batch_stride = grad_out.stride(0), g.grad_out_d_stride = grad_out.stride(1);
  g.grad_final_state = grad_final_state ? static_cast<const float*>(grad_final_state->data()) : nullptr;
  g.grad_x = grad_x.data(), g.grad_x_batch_stride = grad_x.stride(0), g.grad_x_d_stride = grad_x.stride(1);
  g.grad_weight = static_cast<float*>(grad_weight.data());
  g.grad_bias = static_cast<float*>(grad_bias.data());
  g.grad_initial_state = static_cast<float*>(grad_initial_state.data());
  if (s.b * s.d == 0) return;
  using Cfg = ssm::kernels::ConvFwdConfig;
  visit_input(s.input, [&](auto zero) {
    executor().launch(ssm::kernels::causal_conv1d_bwd_kernel<decltype(zero), Cfg::kThreads, Cfg::kItems>,
                      conv_grid(s), LaunchDims{Cfg::kThreads}, p, g);
  });
}

void attention_forward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                       const TensorView& lse, const ssm::AttentionOptions& opt) {
  const ssm::Checker c("attention_forward");
  const auto s = ssm::detail::check_attention_inputs(c, q, k, v, opt);
  auto p = ssm::detail::cuda_attention_params(s, opt, q, k, v, out, lse);
  Tensor workspace = Tensor::empty({std::max<index_t>(1, ssm::cuda::attention_workspace_floats(p))}, DType::f32);
  p.workspace = workspace.data_as<float>();
  ssm::kernels::attention_forward_launches(executor(), p);
}

void attention_backward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                        const TensorView& lse, const TensorView& grad_out, const TensorView& grad_q,
                        const TensorView& grad_k, const TensorView& grad_v, const ssm::AttentionOptions& opt) {
  const ssm::Checker c("attention_backward");
  const auto s = ssm::detail::check_attention_inputs(c, q, k, v, opt);
  const auto p = ssm::detail::cuda_attention_params(s, opt, q, k, v, out, lse);
  Tensor delta = Tensor::empty({std::max<index_t>(1, s.b * s.h * s.l_q)}, DType::f32);  // rowsum(grad_out * out)
  ssm::AttentionGradParams g;
  const auto set = [](const TensorView& t, auto& ptr, index_t& bs, index_t& ss, index_t& hs) {
    ptr = static_cast<std::remove_reference_t<decltype(ptr)>>(t.data());
    bs = t.stride(0), ss = t.stride(1), hs = t.stride(2);
  };
  set(out, g.out, g.out_batch_stride, g.out_seq_stride, g.out_head_stride);
  set(grad_out, g.grad_out, g.grad_out_batch_stride, g.grad_out_seq_stride, g.grad_out_head_stride);
  set(grad_q, g.grad_q, g.grad_q_batch_stride, g.grad_q_seq_stride, g.grad_q_head_stride);
  set(grad_k, g.grad_k, g.grad_k_batch_stride, g.grad_k_seq_stride, g.grad_k_head_stride);
  set(grad_v, g.grad_v, g.grad_v_batch_stride, g.grad_v_seq_stride, g.grad_v_head_stride);
  g.delta = delta.data_as<float>();
  ssm::kernels::attention_backward_launches(executor(), p, g);
}

}  // namespace conformance::emulated
