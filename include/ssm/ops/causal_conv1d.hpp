// The causal depthwise conv1d op of the Mamba block (Mamba §3.4; docs/math.md §6.1), in the channel-major layout
// of the reference `causal_conv1d_fn` (x (b, d, l)): out_t = act(bias + Σ_k weight[k] · x_{t-(w-1)+k}), with
// x_{t<0} taken from an optional initial state (the w - 1 inputs before t = 0, oldest first) or zero, act = SiLU or
// the identity; the final state (the last w - 1 inputs) out. Its backward, and the one-token update for
// generation (a state of the last w inputs, shifted in place, as `causal_conv1d_update`). CPU tensors run plain
// loops here (f32, f64); CUDA tensors (with ssm::cuda linked) run the kernels of cuda/kernels/causal_conv1d.cuh
// (x f32 / f16 / bf16, weight and states f32, w in 2..4).
//
// The channel-last (time-major) layout, x (b, l, d) (CausalConv1dInputs::channel_last), is what the Mamba block runs:
// its activations are time-major on every device so that the projections are plain GEMMs; the CPU convolves them
// with vector multiply-adds over the channels (cpu/causal_conv1d.hpp), CUDA with one thread per channel.
#pragma once

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "ssm/core/backend.hpp"
#include "ssm/core/check.hpp"
#include "ssm/core/params/causal_conv1d.hpp"
#include "ssm/core/scalar.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/causal_conv1d.hpp"
#include "ssm/cpu/threads.hpp"

namespace ssm {

struct CausalConv1dInputs {
  TensorView x{};                             // (b, d, l)      f32 | f64 (CPU), f32 | f16 | bf16 (CUDA); unit stride along l
  TensorView weight{};                        // (d, w)         the weight dtype: f64 for f64 x, f32 otherwise
  std::optional<TensorView> bias{};           // (d)            weight dtype
  std::optional<TensorView> initial_state{};  // (b, d, w - 1)  weight dtype, contiguous: the inputs before t = 0
  bool silu = true;                           // act = SiLU (else the identity)
  /// The channel-last (time-major) layout: x (b, l, d) and out (b, l, d) with unit stride along d and any stride
  /// along l (x may be a column slice of a wider buffer, as the Mamba block's in_proj output), the states
  /// (b, w - 1, d) contiguous. The CPU runs it with vector multiply-adds over the channels, threads splitting the
  /// time axis; CUDA with one thread per channel (cuda/kernels/causal_conv1d.cuh). final_state may be
  /// initial_state itself (updated in place, as in decoding). Forward only (the backward takes (b, d, l)).
  bool channel_last = false;
  int num_threads = 1;                        // channel-last CPU path: 0 = automatic (cpu::cpu_threads)
};

struct CausalConv1dOutputs {
  Tensor out;          // (b, d, l) x's dtype
  Tensor final_state;  // (b, d, w - 1) weight dtype: the last w - 1 inputs (from the initial state when l < w - 1)
  std::string path;    // "cpu-loops" or "cuda"
};

struct CausalConv1dGrads {
  Tensor grad_x;              // (b, d, l) x's dtype
  Tensor grad_weight;         // (d, w)
  Tensor grad_bias;           // (d), when bias was given
  Tensor grad_initial_state;  // (b, d, w - 1), when initial_state was given
};

namespace detail {

struct Conv1dSizes {
  index_t b, d, l, w;
  DType input, weight;
  Device device;
};

/// The shape of the conv states: (b, d, w - 1), or (b, w - 1, d) in the channel-last layout.
inline Dims state_shape(const CausalConv1dInputs& in, const Conv1dSizes& s) {
  return in.channel_last ? Dims{s.b, s.w - 1, s.d} : Dims{s.b, s.d, s.w - 1};
}
/// Checks a conv state's shape: (b, d, w - 1), or (b, w - 1, d) in the channel-last layout.
inline void check_state_shape(const Checker& c, const char* name, const TensorView& t, const CausalConv1dInputs& in,
                              const Conv1dSizes& s) {
  if (in.channel_last) c.shape(name, t, {s.b, s.w - 1, s.d});
  else c.shape(name, t, {s.b, s.d, s.w - 1});
}
/// The shape of x and out: (b, d, l), or (b, l, d) in the channel-last layout.
inline Dims io_shape(const CausalConv1dInputs& in, const Conv1dSizes& s) {
  return in.channel_last ? Dims{s.b, s.l, s.d} : Dims{s.b, s.d, s.l};
}

/// The channel-last CPU path: per sequence, time chunks of cpu::conv1d_forward_rows on the threads, then the final
/// state (after every chunk has read the initial state, which it may overwrite).
template <class T>
void conv1d_forward_channel_last(const Conv1dSizes& s, const CausalConv1dInputs& in, const TensorView& out,
                                 const TensorView& final_state) {
  const cpu::Conv1dArgs<T> a{s.l, s.d, s.w, static_cast<const T*>(in.weight.data()),
                             in.bias ? static_cast<const T*>(in.bias->data()) : nullptr, in.silu};
  const T* x = static_cast<const T*>(in.x.data());
  T* o = static_cast<T*>(out.data());
  const T* h0 = in.initial_state ? static_cast<const T*>(in.initial_state->data()) : nullptr;
  T* fs = static_cast<T*>(final_state.data());
  const index_t sd = (s.w - 1) * s.d;  // a state's elements
  const int nt = cpu::cpu_threads(in.num_threads, s.b * s.l * s.d * s.w);
  // Chunks of at least 64 rows; the chunks of one sequence read only the inputs before them, so they are independent.
  const index_t chunk = std::max<index_t>(64, (s.l + nt - 1) / nt);
  const index_t chunks = (s.l + chunk - 1) / chunk;
  cpu::parallel_for(s.b * chunks, nt, [&](index_t task) {
    const index_t bi = task / chunks, t0 = (task % chunks) * chunk;
    cpu::conv1d_forward_rows(a, x + bi * in.x.stride(0), in.x.stride(1), h0 ? h0 + bi * sd : nullptr,
                             o + bi * out.stride(0), t0, std::min(s.l, t0 + chunk), out.stride(1));
  });
  for (index_t bi = 0; bi < s.b; ++bi)
    cpu::conv1d_next_state(a, x + bi * in.x.stride(0), in.x.stride(1), h0 ? h0 + bi * sd : nullptr, fs + bi * sd);
}

inline Conv1dSizes check_conv1d(const Checker& c, const CausalConv1dInputs& in) {
  c.defined("x", in.x).defined("weight", in.weight).rank("x", in.x, 3).rank("weight", in.weight, 2);
  const int ld = in.channel_last ? 1 : 2, dd = in.channel_last ? 2 : 1;  // the dims of l and d in x
  Conv1dSizes s{in.x.size(0), in.x.size(dd), in.x.size(ld), in.weight.size(1), in.x.dtype(), DType::f32, in.x.device()};
  // Absent optional tensors stand in as x itself, which is always on x's device.
  s.device = dispatch_device(c, {{"x", in.x}, {"weight", in.weight}, {"bias", in.bias.value_or(in.x)},
                                 {"initial_state", in.initial_state.value_or(in.x)}});
  if (s.device.is_cpu()) c.dtype_in("x", in.x, {DType::f32, DType::f64});
  else c.dtype_in("x", in.x, {DType::f32, DType::f16, DType::bf16});
  s.weight = compute_dtype(s.input);
  c.dtype("weight", in.weight, s.weight).shape("weight", in.weight, {s.d, kAny}).unit_stride("weight", in.weight, 1);
  c.require(s.w >= 2, "weight", "expected a kernel width w >= 2, got shape ", in.weight.shape().str());
  c.require(s.device.is_cpu() || s.w <= 4, "weight", "the CUDA kernels take widths 2..4, got w = ", s.w);
  c.unit_stride("x", in.x, 2);
  c.require(in.num_threads >= 0, "num_threads", "must be >= 0 (0: automatic), got ", in.num_threads);
  if (in.bias) c.defined("bias", *in.bias).dtype("bias", *in.bias, s.weight).shape("bias", *in.bias, {s.d}).unit_stride("bias", *in.bias, 0);
  if (in.initial_state)
    c.defined("initial_state", *in.initial_state).dtype("initial_state", *in.initial_state, s.weight)
        .contiguous("initial_state", *in.initial_state);
  if (in.initial_state) check_state_shape(c, "initial_state", *in.initial_state, in, s);
  return s;
}

/// The input at time t of row (bi, ch): x for t >= 0, the initial state (or 0) before.
template <class T>
T conv1d_extended(const View<const T, 3>& x, const T* h0, index_t w, index_t bi, index_t ch, index_t t, index_t d) {
  if (t >= 0) return x(bi, ch, t);
  return h0 ? h0[(bi * d + ch) * (w - 1) + (w - 1 + t)] : T(0);
}

template <class T>
void conv1d_forward_cpu(const Conv1dSizes& s, const CausalConv1dInputs& in, const TensorView& out,
                        const TensorView& final_state) {
  const auto x = in.x.as<const T, 3>("x");
  const auto wt = in.weight.as<const T, 2>("weight");
  const T* bias = in.bias ? static_cast<const T*>(in.bias->data()) : nullptr;
  const T* h0 = in.initial_state ? static_cast<const T*>(in.initial_state->data()) : nullptr;
  auto o = out.as<T, 3>("out");
  T* fs = static_cast<T*>(final_state.data());
  for (index_t bi = 0; bi < s.b; ++bi)
    for (index_t ch = 0; ch < s.d; ++ch) {
      for (index_t t = 0; t < s.l; ++t) {
        T acc = bias ? bias[ch] : T(0);
        for (index_t k = 0; k < s.w; ++k) acc += wt(ch, k) * conv1d_extended(x, h0, s.w, bi, ch, t - (s.w - 1) + k, s.d);
        o(bi, ch, t) = in.silu ? scalar::silu(acc) : acc;
      }
      for (index_t j = 0; j < s.w - 1; ++j)
        fs[(bi * s.d + ch) * (s.w - 1) + j] = conv1d_extended(x, h0, s.w, bi, ch, s.l - (s.w - 1) + j, s.d);
    }
}

/// With e the extended input (w - 1 state entries, then x): pre_t = bias + Σ_k weight[k] e[t + k], out_t = act(pre_t),
/// final_state[j] = e[l + j]. So ∂e[t + k] += weight[k] g_t with g_t = ∂out_t act'(pre_t), ∂e[l + j] += ∂final[j].
template <class T>
void conv1d_backward_cpu(const Conv1dSizes& s, const CausalConv1dInputs& in, const TensorView& grad_out,
                         const T* grad_final, CausalConv1dGrads& r) {
  const auto x = in.x.as<const T, 3>("x");
  const auto wt = in.weight.as<const T, 2>("weight");
  const auto go = grad_out.as<const T, 3>("grad_out");
  const T* bias = in.bias ? static_cast<const T*>(in.bias->data()) : nullptr;
  const T* h0 = in.initial_state ? static_cast<const T*>(in.initial_state->data()) : nullptr;
  auto gx = r.grad_x.view().as<T, 3>("grad_x");
  T* gw = r.grad_weight.data_as<T>();
  T* gb = r.grad_bias.defined() ? r.grad_bias.data_as<T>() : nullptr;
  T* gh0 = r.grad_initial_state.defined() ? r.grad_initial_state.data_as<T>() : nullptr;
  const index_t w = s.w, ext = s.l + w - 1;
  std::vector<T> ge(static_cast<std::size_t>(ext)), g(static_cast<std::size_t>(s.l));
  for (index_t bi = 0; bi < s.b; ++bi)
    for (index_t ch = 0; ch < s.d; ++ch) {
      std::fill(ge.begin(), ge.end(), T(0));
      for (index_t t = 0; t < s.l; ++t) {
        T pre = bias ? bias[ch] : T(0);
        for (index_t k = 0; k < w; ++k) pre += wt(ch, k) * conv1d_extended(x, h0, w, bi, ch, t - (w - 1) + k, s.d);
        T act_grad = T(1);
        if (in.silu) {
          const T sig = T(1) / (T(1) + std::exp(-pre));
          act_grad = sig * (T(1) + pre * (T(1) - sig));
        }
        const T gt = go(bi, ch, t) * act_grad;
        g[static_cast<std::size_t>(t)] = gt;
        for (index_t k = 0; k < w; ++k) {
          ge[static_cast<std::size_t>(t + k)] += wt(ch, k) * gt;
          gw[ch * w + k] += gt * conv1d_extended(x, h0, w, bi, ch, t - (w - 1) + k, s.d);
        }
        if (gb) gb[ch] += gt;
      }
      if (grad_final)
        for (index_t j = 0; j < w - 1; ++j)
          ge[static_cast<std::size_t>(s.l + j)] += grad_final[(bi * s.d + ch) * (w - 1) + j];
      for (index_t t = 0; t < s.l; ++t) gx(bi, ch, t) = ge[static_cast<std::size_t>(w - 1 + t)];
      if (gh0)
        for (index_t j = 0; j < w - 1; ++j) gh0[(bi * s.d + ch) * (w - 1) + j] = ge[static_cast<std::size_t>(j)];
    }
}

/// The kernels' argument block for validated inputs (out and final_state left unset).
inline ::ssm::CausalConv1dParams cuda_conv1d_params(const Conv1dSizes& s, const CausalConv1dInputs& in) {
  ::ssm::CausalConv1dParams p;
  p.batch = s.b, p.dim = s.d, p.seqlen = s.l, p.width = s.w;
  p.channel_last = in.channel_last;
  const int ld = in.channel_last ? 1 : 2, dd = in.channel_last ? 2 : 1;  // the dims of l and d in x
  p.x = in.x.data(), p.x_batch_stride = in.x.stride(0), p.x_d_stride = in.x.stride(dd), p.x_l_stride = in.x.stride(ld);
  p.weight = static_cast<const float*>(in.weight.data()), p.weight_d_stride = in.weight.stride(0);
  p.bias = in.bias ? static_cast<const float*>(in.bias->data()) : nullptr;
  p.silu = in.silu;
  p.initial_state = in.initial_state ? static_cast<const float*>(in.initial_state->data()) : nullptr;
  return p;
}

/// Checks out (b, d, l) (x's dtype, unit stride along l) and final_state (b, d, w - 1) (weight dtype, contiguous);
/// in the channel-last layout out (b, l, d) with unit stride along d and final_state (b, w - 1, d).
inline void check_conv1d_outputs(const Checker& c, const CausalConv1dInputs& in, const Conv1dSizes& s,
                                 const TensorView& out, const TensorView& final_state) {
  c.defined("out", out).dtype("out", out, s.input).unit_stride("out", out, 2);
  if (in.channel_last) c.shape("out", out, {s.b, s.l, s.d});
  else c.shape("out", out, {s.b, s.d, s.l});
  c.device("out", out, s.device);
  c.defined("final_state", final_state).dtype("final_state", final_state, s.weight);
  c.contiguous("final_state", final_state);
  check_state_shape(c, "final_state", final_state, in, s);
  c.device("final_state", final_state, s.device);
}

}  // namespace detail

/// The causal depthwise conv1d over whole sequences into caller-provided outputs (channel-last: see
/// CausalConv1dInputs::channel_last): out (b, d, l) in x's dtype, unit
/// stride along l; final_state (b, d, w - 1) in the weight dtype, contiguous. Returns the path that ran.
inline std::string causal_conv1d_into(const CausalConv1dInputs& in, const TensorView& out, const TensorView& final_state) {
  Checker c("causal_conv1d");
  const auto s = detail::check_conv1d(c, in);
  detail::check_conv1d_outputs(c, in, s, out, final_state);
  if (s.device.is_cuda()) {
    auto p = detail::cuda_conv1d_params(s, in);
    const int ld = in.channel_last ? 1 : 2, dd = in.channel_last ? 2 : 1;  // the dims of l and d in out
    p.out = out.data(), p.out_batch_stride = out.stride(0), p.out_d_stride = out.stride(dd);
    p.out_l_stride = out.stride(ld);
    // final_state may be initial_state itself (decoding updates the cache in place). The channel-last kernel reads
    // each thread's own state entries before overwriting them, which is safe when one block covers the sequence
    // (l == 1); otherwise, and always for the channel-major kernel (whose threads read their neighbours' state
    // entries), the final state goes through a separate buffer.
    Tensor separate;  // (b, w - 1, d) or (b, d, w - 1)
    const bool in_place = in.initial_state && in.initial_state->data() == final_state.data() &&
                          (s.l > 1 || !in.channel_last);
    if (in_place) separate = Tensor::empty(final_state.shape(), final_state.dtype(), s.device);
    p.final_state = static_cast<float*>(in_place ? separate.data() : final_state.data());
    backend_for(c.op(), s.device).causal_conv1d_forward(p, s.input, nullptr);
    if (in_place) copy(final_state, separate);
    return "cuda";
  }
  if (in.channel_last) {
    if (s.input == DType::f64) detail::conv1d_forward_channel_last<double>(s, in, out, final_state);
    else detail::conv1d_forward_channel_last<float>(s, in, out, final_state);
    return "cpu-channel-last";
  }
  if (s.input == DType::f64) detail::conv1d_forward_cpu<double>(s, in, out, final_state);
  else detail::conv1d_forward_cpu<float>(s, in, out, final_state);
  return "cpu-loops";
}

/// The causal depthwise conv1d over whole sequences: out (b, d, l) and the final state (b, d, w - 1).
inline CausalConv1dOutputs causal_conv1d(const CausalConv1dInputs& in) {
  Checker c("causal_conv1d");
  const auto s = detail::check_conv1d(c, in);
  CausalConv1dOutputs r;
  r.out = Tensor::empty(detail::io_shape(in, s), s.input, s.device);                // (b, d, l) or (b, l, d)
  r.final_state = Tensor::empty(detail::state_shape(in, s), s.weight, s.device);   // (b, d, w - 1) or (b, w - 1, d)
  r.path = causal_conv1d_into(in, r.out, r.final_state);
  return r;
}

/// Gradients of causal_conv1d given grad_out = ∂L/∂out (b, d, l) and optionally ∂L/∂final_state (b, d, w - 1).
/// grad_bias / grad_initial_state are returned when bias / initial_state were given.
inline CausalConv1dGrads causal_conv1d_backward(const CausalConv1dInputs& in, const TensorView& grad_out,
                                                const std::optional<TensorView>& grad_final_state = {}) {
  Checker c("causal_conv1d_backward");
  const auto s = detail::check_conv1d(c, in);
  c.require(!in.channel_last, "channel_last", "the backward of the channel-last layout is not implemented yet");
  c.defined("grad_out", grad_out).same_dtype("grad_out", grad_out, "x", in.x).shape("grad_out", grad_out, {s.b, s.d, s.l})
      .unit_stride("grad_out", grad_out, 2).device("grad_out", grad_out, s.device);
  if (grad_final_state)
    c.defined("grad_final_state", *grad_final_state).dtype("grad_final_state", *grad_final_state, s.weight)
        .shape("grad_final_state", *grad_final_state, {s.b, s.d, s.w - 1})
        .contiguous("grad_final_state", *grad_final_state).device("grad_final_state", *grad_final_state, s.device);
  CausalConv1dGrads r;
  r.grad_x = Tensor::empty({s.b, s.d, s.l}, s.input, s.device);
  r.grad_weight = Tensor::zeros({s.d, s.w}, s.weight, s.device);  // accumulated
  if (in.bias) r.grad_bias = Tensor::zeros({s.d}, s.weight, s.device);
  if (in.initial_state) r.grad_initial_state = Tensor::empty({s.b, s.d, s.w - 1}, s.weight, s.device);
  if (s.device.is_cuda()) {
    const auto p = detail::cuda_conv1d_params(s, in);
    ::ssm::CausalConv1dGradParams g;
    g.grad_out = grad_out.data(), g.grad_out_batch_stride = grad_out.stride(0), g.grad_out_d_stride = grad_out.stride(1);
    g.grad_final_state = grad_final_state ? static_cast<const float*>(grad_final_state->data()) : nullptr;
    g.grad_x = r.grad_x.data(), g.grad_x_batch_stride = s.d * s.l, g.grad_x_d_stride = s.l;
    g.grad_weight = r.grad_weight.data_as<float>();
    g.grad_bias = r.grad_bias.defined() ? r.grad_bias.data_as<float>() : nullptr;
    g.grad_initial_state = r.grad_initial_state.defined() ? r.grad_initial_state.data_as<float>() : nullptr;
    backend_for(c.op(), s.device).causal_conv1d_backward(p, g, s.input, nullptr);
    return r;
  }
  if (s.input == DType::f64)
    detail::conv1d_backward_cpu<double>(
        s, in, grad_out, grad_final_state ? static_cast<const double*>(grad_final_state->data()) : nullptr, r);
  else
    detail::conv1d_backward_cpu<float>(
        s, in, grad_out, grad_final_state ? static_cast<const float*>(grad_final_state->data()) : nullptr, r);
  return r;
}

/// One token: x (b, d); conv_state (b, d, w) contiguous, the last w inputs oldest first, shifted left in place with
/// x appended; out (b, d) = act(bias + Σ_k weight[k] conv_state[k]) after the shift. Equals causal_conv1d over the
/// sequence one token at a time (with conv_state[1..w) as the initial state of the next token).
inline void causal_conv1d_update(const TensorView& x, const TensorView& conv_state, const TensorView& weight,
                                 const std::optional<TensorView>& bias, const TensorView& out, bool silu = true) {
  Checker c("causal_conv1d_update");
  c.defined("x", x).defined("conv_state", conv_state).defined("weight", weight).defined("out", out);
  c.rank("x", x, 2).rank("weight", weight, 2);
  const index_t b = x.size(0), d = x.size(1), w = weight.size(1);
  const Device dev = dispatch_device(c, {{"x", x}, {"conv_state", conv_state}, {"weight", weight}, {"out", out},
                                         {"bias", bias.value_or(x)}});  // an absent bias stands in as x
  if (dev.is_cpu()) c.dtype_in("x", x, {DType::f32, DType::f64});
  else c.dtype_in("x", x, {DType::f32, DType::f16, DType::bf16});
  const DType wdt = compute_dtype(x.dtype());
  c.dtype("weight", weight, wdt).shape("weight", weight, {d, kAny}).unit_stride("weight", weight, 1);
  c.require(w >= 2 && (dev.is_cpu() || w <= 4), "weight", "expected a kernel width w in [2, ",
            dev.is_cpu() ? "any" : "4", "], got shape ", weight.shape().str());
  c.contiguous("x", x).same_dtype("out", out, "x", x).shape("out", out, {b, d}).contiguous("out", out);
  c.dtype("conv_state", conv_state, wdt).shape("conv_state", conv_state, {b, d, w}).contiguous("conv_state", conv_state);
  if (bias) c.defined("bias", *bias).dtype("bias", *bias, wdt).shape("bias", *bias, {d}).unit_stride("bias", *bias, 0);
  if (dev.is_cuda()) {
    ::ssm::CausalConv1dUpdateParams p;
    p.batch = b, p.dim = d, p.width = w, p.x = x.data(), p.conv_state = static_cast<float*>(conv_state.data());
    p.weight = static_cast<const float*>(weight.data()), p.weight_d_stride = weight.stride(0);
    p.bias = bias ? static_cast<const float*>(bias->data()) : nullptr, p.silu = silu, p.out = out.data();
    backend_for(c.op(), dev).causal_conv1d_update(p, x.dtype(), nullptr);
    return;
  }
  auto run = [&](auto zero) {
    using T = decltype(zero);
    const T* xs = static_cast<const T*>(x.data());
    T* st = static_cast<T*>(conv_state.data());
    const auto wt = weight.as<const T, 2>("weight");
    const T* bs = bias ? static_cast<const T*>(bias->data()) : nullptr;
    T* o = static_cast<T*>(out.data());
    for (index_t bi = 0; bi < b; ++bi)
      for (index_t ch = 0; ch < d; ++ch) {
        T* row = st + (bi * d + ch) * w;
        std::copy(row + 1, row + w, row);
        row[w - 1] = xs[bi * d + ch];
        T acc = bs ? bs[ch] : T(0);
        for (index_t k = 0; k < w; ++k) acc += wt(ch, k) * row[k];
        o[bi * d + ch] = silu ? scalar::silu(acc) : acc;
      }
  };
  if (x.dtype() == DType::f64) run(double{});
  else run(float{});
}

}  // namespace ssm
