// The attention op (docs/math.md §7): causal scaled-dot-product attention, multi-head and grouped-query, with
// argument checks and dispatch; materialized (O(l²) memory) and tiled online-softmax (FlashAttention, O(l)
// memory) algorithms, forward and backward; a KV cache for token-by-token decoding.
//
// Layout (unit stride along p; any strides elsewhere):
//   q, out, grad_out, grad_q : (b, l_q, h, p)      k, v, grad_k, grad_v : (b, l_k, h_kv, p)
//   lse (log-sum-exp of each score row, saved by the forward for the backward) : (b, h, l_q)
// Query head i reads kv head i / (h / h_kv) (h_kv = h: multi-head; h_kv = 1: multi-query). Causal masking
// aligns the queries with the END of the keys: query i sits at position l_k − l_q + i, so l_q = l_k is a
// full sequence and l_q = 1 over a cache of l_k keys is one decoding step.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <thread>

#include "ssm/core/backend.hpp"
#include "ssm/core/check.hpp"
#include "ssm/core/params/attention.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/attention.hpp"


namespace ssm {

enum class AttentionAlgorithm {
  materialized,  ///< the (b, h, l_q, l_k) score tensor is formed: O(l²) memory
  tiled,         ///< blocks of queries × keys with an online softmax: O(l) memory
};

inline const char* name(AttentionAlgorithm a) { return a == AttentionAlgorithm::tiled ? "tiled" : "materialized"; }

struct AttentionOptions {
  AttentionAlgorithm algorithm = AttentionAlgorithm::tiled;
  bool causal = true;
  double scale = 0;    ///< softmax scale; 0 means 1 / sqrt(p)
  int n_threads = 0;   ///< 0: the hardware threads
  // Tiles of 256 x 256: at l = 4096, 12 heads of 64, one thread, the op took 268 ms against 346 ms with
  // 64 x 64 (fewer, larger GEMMs; Eigen's packing is amortized over more work).
  int block_q = 256;   ///< tiled: queries per block
  int block_k = 256;   ///< tiled: keys per block
};

namespace detail {

inline int attention_threads(int n_threads) {
  if (n_threads > 0) return n_threads;
  return static_cast<int>(cpu::hardware_threads());
}

/// Calls f(float{}) or f(double{}) for the dtypes the CPU kernels take (checked before).
template <class F>
void visit_attention_dtype(DType t, F&& f) {
  if (t == DType::f64)
    f(double{});
  else
    f(float{});
}

struct AttentionSizes {
  index_t b, l_q, l_k, h, h_kv, p;
};

/// Checks q, k, v (and the options) and returns the sizes.
inline AttentionSizes check_attention_inputs(const Checker& c, const TensorView& q, const TensorView& k,
                                             const TensorView& v, const AttentionOptions& opt) {
  c.defined("q", q).defined("k", k).defined("v", v);
  c.rank("q", q, 4).rank("k", k, 4).rank("v", v, 4);
  c.dtype_in("q", q, {DType::f32, DType::f64});
  c.same_dtype("k", k, "q", q).same_dtype("v", v, "q", q);
  const AttentionSizes s{q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3)};
  c.shape("k", k, {s.b, kAny, kAny, s.p});
  c.shape("v", v, {s.b, s.l_k, s.h_kv, s.p});
  c.require(s.h_kv >= 1, "k", "expected at least one kv head, got shape ", k.shape().str());
  c.require(s.h % s.h_kv == 0, "k", "the number of kv heads (", s.h_kv, ") must divide the number of query heads (",
            s.h, ") of 'q'");
  c.require(s.p >= 1, "q", "expected a head dimension p >= 1, got shape ", q.shape().str());
  c.require(s.l_q == 0 || s.l_k >= 1, "k", "expected at least one key for ", s.l_q, " queries, got shape ",
            k.shape().str());
  c.require(!opt.causal || s.l_k >= s.l_q, "k", "causal attention needs at least as many keys as queries (l_q = ",
            s.l_q, "), got l_k = ", s.l_k);
  c.unit_stride("q", q, 3).unit_stride("k", k, 3).unit_stride("v", v, 3);
  c.require(opt.scale == 0 || (std::isfinite(opt.scale) && opt.scale > 0), "scale",
            "must be 0 (meaning 1/sqrt(p)) or finite and > 0, got ", opt.scale);
  c.require(opt.n_threads >= 0, "n_threads", "must be >= 0 (0: all hardware threads), got ", opt.n_threads);
  c.require(opt.block_q >= 1 && opt.block_k >= 1, "block_q/block_k", "must be >= 1, got ", opt.block_q, " and ",
            opt.block_k);
  return s;
}

template <class T>
cpu::AttentionArgs<T> make_args(const AttentionSizes& s, const AttentionOptions& opt, const TensorView& q,
                                const TensorView& k, const TensorView& v) {
  cpu::AttentionArgs<T> a;
  a.b = s.b, a.l_q = s.l_q, a.l_k = s.l_k, a.h = s.h, a.h_kv = s.h_kv, a.p = s.p;
  a.scale = static_cast<T>(opt.scale != 0 ? opt.scale : 1.0 / std::sqrt(static_cast<double>(s.p)));
  a.causal = opt.causal;
  a.n_threads = attention_threads(opt.n_threads);
  a.block_q = opt.block_q, a.block_k = opt.block_k;
  a.q = q.as<const T, 4>("q"), a.k = k.as<const T, 4>("k"), a.v = v.as<const T, 4>("v");
  return a;
}

/// The CUDA kernels' arguments for validated q, k, v, out, lse (f32, tiled, lse contiguous: checked by the caller).
inline ::ssm::AttentionParams cuda_attention_params(const AttentionSizes& s, const AttentionOptions& opt,
                                                          const TensorView& q, const TensorView& k,
                                                          const TensorView& v, const TensorView& out,
                                                          const TensorView& lse) {
  ::ssm::AttentionParams p;
  p.batch = s.b, p.seqlen_q = s.l_q, p.seqlen_k = s.l_k, p.heads = s.h, p.kv_heads = s.h_kv, p.head_dim = s.p;
  p.scale = static_cast<float>(opt.scale != 0 ? opt.scale : 1.0 / std::sqrt(static_cast<double>(s.p)));
  p.causal = opt.causal;
  p.q = static_cast<const float*>(q.data()), p.q_batch_stride = q.stride(0), p.q_seq_stride = q.stride(1);
  p.q_head_stride = q.stride(2);
  p.k = static_cast<const float*>(k.data()), p.k_batch_stride = k.stride(0), p.k_seq_stride = k.stride(1);
  p.k_head_stride = k.stride(2);
  p.v = static_cast<const float*>(v.data()), p.v_batch_stride = v.stride(0), p.v_seq_stride = v.stride(1);
  p.v_head_stride = v.stride(2);
  p.out = static_cast<float*>(out.data()), p.out_batch_stride = out.stride(0), p.out_seq_stride = out.stride(1);
  p.out_head_stride = out.stride(2);
  p.lse = static_cast<float*>(lse.data());
  return p;
}

/// What the CUDA kernels take besides what check_attention_inputs checked: f32, the tiled algorithm, p <= 128,
/// lse contiguous.
inline void check_cuda_attention(const Checker& c, const AttentionSizes& s, const TensorView& q,
                                 const AttentionOptions& opt, const TensorView& lse) {
  c.require(q.dtype() == DType::f32, "q", "attention on CUDA takes f32 tensors, got ", name(q.dtype()));
  c.require(opt.algorithm == AttentionAlgorithm::tiled, "algorithm",
            "the materialized algorithm has no CUDA kernel: use AttentionAlgorithm::tiled (the default)");
  c.require(s.p <= ::ssm::kAttentionMaxHeadDim, "q", "the CUDA kernels take head dimensions up to ",
            ::ssm::kAttentionMaxHeadDim, ", got p = ", s.p);
  c.require(lse.is_contiguous(), "lse", "must be contiguous on CUDA, got strides ", lse.strides().str());
}

}  // namespace detail

/// Bytes of working memory attention_forward allocates besides its arguments: the (b, h, l_q, l_k)
/// scores for the materialized algorithm; per-thread block buffers (block_q × (block_k + p) + 2 block_q
/// elements) for the tiled one. Explicit accounting for the benchmarks' memory figures.
inline std::size_t attention_forward_workspace_bytes(index_t b, index_t l_q, index_t l_k, index_t h, index_t p,
                                                     DType dtype, const AttentionOptions& opt = {}) {
  const auto es = static_cast<std::size_t>(size_of(dtype));
  if (opt.algorithm == AttentionAlgorithm::materialized)
    return static_cast<std::size_t>(b * h * l_q * l_k) * es;
  const auto threads = static_cast<std::size_t>(detail::attention_threads(opt.n_threads));
  return threads * static_cast<std::size_t>(opt.block_q * (opt.block_k + p) + 2 * opt.block_q) * es;
}

/// Causal scaled-dot-product attention, out = softmax(q kᵀ · scale + mask) v.
/// q: (b, l_q, h, p); k, v: (b, l_k, h_kv, p), h_kv dividing h; writes out: (b, l_q, h, p) and
/// lse: (b, h, l_q), the log-sum-exp of each score row (what the backward needs). f32 or f64 on the CPU; CUDA
/// tensors (with ssm::cuda linked) run the fused kernels: f32, tiled, p <= 128, lse contiguous.
inline void attention_forward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                              const TensorView& lse, const AttentionOptions& opt = {}) {
  Checker c("attention_forward");
  const auto s = detail::check_attention_inputs(c, q, k, v, opt);
  c.defined("out", out).defined("lse", lse);
  c.same_dtype("out", out, "q", q).shape("out", out, {s.b, s.l_q, s.h, s.p}).unit_stride("out", out, 3);
  c.same_dtype("lse", lse, "q", q).shape("lse", lse, {s.b, s.h, s.l_q});
  const Device dev = dispatch_device(c, {{"q", q}, {"k", k}, {"v", v}, {"out", out}, {"lse", lse}});
  if (dev.is_cuda()) {
    detail::check_cuda_attention(c, s, q, opt, lse);
    auto p = detail::cuda_attention_params(s, opt, q, k, v, out, lse);
    const DeviceBackend& backend = backend_for(c.op(), dev);
    Tensor workspace = Tensor::empty({backend.attention_workspace_floats(p)}, DType::f32, dev);  // split keys
    p.workspace = workspace.numel() > 0 ? workspace.data_as<float>() : nullptr;
    backend.attention_forward(p, nullptr);
    return;  // the workspace is freed after the kernels (freeing device memory waits for them)
  }
  detail::visit_attention_dtype(q.dtype(), [&](auto zero) {
    using T = decltype(zero);
    {
      auto a = detail::make_args<T>(s, opt, q, k, v);
      a.out = out.as<T, 4>("out");
      a.lse = lse.as<T, 3>("lse");
      if (opt.algorithm == AttentionAlgorithm::tiled) {
        cpu::attention_forward_tiled(a);
      } else {
        Tensor scores = Tensor::empty({s.b, s.h, s.l_q, s.l_k}, q.dtype());  // (b, h, l_q, l_k)
        cpu::attention_forward_materialized(a, scores.data_as<T>());
      }
    }
  });
}

/// The outputs of attention_forward as new tensors.
struct AttentionResult {
  Tensor out;  // (b, l_q, h, p)
  Tensor lse;  // (b, h, l_q)
};

/// Allocating form of attention_forward.
inline AttentionResult attention_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                                         const AttentionOptions& opt = {}) {
  Checker("attention_forward").rank("q", q, 4);
  AttentionResult r{Tensor::empty(q.shape(), q.dtype(), q.device()),
                    Tensor::empty({q.size(0), q.size(2), q.size(1)}, q.dtype(), q.device())};
  attention_forward(q, k, v, r.out, r.lse, opt);
  return r;
}

/// Gradients of attention: given the forward's q, k, v, out, lse and grad_out = ∂L/∂out (b, l_q, h, p),
/// writes grad_q (b, l_q, h, p) and grad_k, grad_v (b, l_k, h_kv, p) (overwritten, not accumulated).
/// The tiled algorithm recomputes the probabilities block by block from lse (O(l) memory); the
/// materialized one forms the (l_q, l_k) probability and gradient matrices of one head per thread.
inline void attention_backward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                               const TensorView& lse, const TensorView& grad_out, const TensorView& grad_q,
                               const TensorView& grad_k, const TensorView& grad_v, const AttentionOptions& opt = {}) {
  Checker c("attention_backward");
  const auto s = detail::check_attention_inputs(c, q, k, v, opt);
  for (const NamedView nv : {NamedView{"out", out}, NamedView{"grad_out", grad_out}, NamedView{"grad_q", grad_q}})
    c.defined(nv.name, nv.view).same_dtype(nv.name, nv.view, "q", q).shape(nv.name, nv.view, {s.b, s.l_q, s.h, s.p})
        .unit_stride(nv.name, nv.view, 3);
  for (const NamedView nv : {NamedView{"grad_k", grad_k}, NamedView{"grad_v", grad_v}})
    c.defined(nv.name, nv.view).same_dtype(nv.name, nv.view, "q", q).shape(nv.name, nv.view, {s.b, s.l_k, s.h_kv, s.p})
        .unit_stride(nv.name, nv.view, 3);
  c.defined("lse", lse).same_dtype("lse", lse, "q", q).shape("lse", lse, {s.b, s.h, s.l_q});
  const Device dev = dispatch_device(c, {{"q", q}, {"k", k}, {"v", v}, {"out", out}, {"lse", lse},
                                         {"grad_out", grad_out}, {"grad_q", grad_q}, {"grad_k", grad_k},
                                         {"grad_v", grad_v}});
  if (dev.is_cuda()) {
    detail::check_cuda_attention(c, s, q, opt, lse);
    const auto p = detail::cuda_attention_params(s, opt, q, k, v, out, lse);
    Tensor delta = Tensor::empty({s.b, s.h, s.l_q}, DType::f32, dev);  // rowsum(grad_out * out)
    ::ssm::AttentionGradParams g;
    g.out = static_cast<const float*>(out.data());
    g.out_batch_stride = out.stride(0), g.out_seq_stride = out.stride(1), g.out_head_stride = out.stride(2);
    g.grad_out = static_cast<const float*>(grad_out.data());
    g.grad_out_batch_stride = grad_out.stride(0), g.grad_out_seq_stride = grad_out.stride(1);
    g.grad_out_head_stride = grad_out.stride(2);
    g.grad_q = static_cast<float*>(grad_q.data());
    g.grad_q_batch_stride = grad_q.stride(0), g.grad_q_seq_stride = grad_q.stride(1);
    g.grad_q_head_stride = grad_q.stride(2);
    g.grad_k = static_cast<float*>(grad_k.data());
    g.grad_k_batch_stride = grad_k.stride(0), g.grad_k_seq_stride = grad_k.stride(1);
    g.grad_k_head_stride = grad_k.stride(2);
    g.grad_v = static_cast<float*>(grad_v.data());
    g.grad_v_batch_stride = grad_v.stride(0), g.grad_v_seq_stride = grad_v.stride(1);
    g.grad_v_head_stride = grad_v.stride(2);
    g.delta = delta.numel() > 0 ? delta.data_as<float>() : nullptr;
    backend_for(c.op(), dev).attention_backward(p, g, nullptr);
    return;
  }
  detail::visit_attention_dtype(q.dtype(), [&](auto zero) {
    using T = decltype(zero);
    {
      auto a = detail::make_args<T>(s, opt, q, k, v);
      a.out_in = out.as<const T, 4>("out");
      a.grad_out = grad_out.as<const T, 4>("grad_out");
      a.lse_in = lse.as<const T, 3>("lse");
      a.grad_q = grad_q.as<T, 4>("grad_q");
      a.grad_k = grad_k.as<T, 4>("grad_k");
      a.grad_v = grad_v.as<T, 4>("grad_v");
      if (opt.algorithm == AttentionAlgorithm::tiled)
        cpu::attention_backward_tiled(a);
      else
        cpu::attention_backward_materialized(a);
    }
  });
}

/// The keys and values of the tokens seen so far, for decoding one token (or a few) at a time:
/// storage (b, capacity, h_kv, p) ×2 grows by doubling; keys()/values() are the (b, length, h_kv, p) views.
/// Memory grows linearly with the context: 2 · b · length · h_kv · p elements. The storage lives on `device`
/// (a CUDA device with ssm::cuda linked: f32, appended from tensors on any device, read by the CUDA kernels).
class KVCache {
 public:
  KVCache(index_t b, index_t h_kv, index_t p, DType dtype = DType::f32, index_t capacity = 0,
          Device device = Device::cpu())
      : b_(b), h_kv_(h_kv), p_(p), dtype_(dtype), device_(device) {
    Checker c("KVCache");
    c.require(b >= 1 && h_kv >= 1 && p >= 1, "b/h_kv/p", "must all be >= 1, got ", b, ", ", h_kv, ", ", p);
    c.require(dtype == DType::f32 || dtype == DType::f64, "dtype", "expected f32 or f64, got ", ssm::name(dtype));
    c.require(capacity >= 0, "capacity", "must be >= 0, got ", capacity);
    c.require(device.is_cpu() || dtype == DType::f32, "dtype", "a KV cache on ", device.str(), " holds f32, got ",
              ssm::name(dtype));
    reserve(capacity);
  }

  index_t length() const { return length_; }
  index_t capacity() const { return capacity_; }
  index_t batch() const { return b_; }
  index_t kv_heads() const { return h_kv_; }
  index_t head_dim() const { return p_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  /// Bytes held by the cache storage (capacity, not length).
  std::size_t bytes() const { return k_.nbytes() + v_.nbytes(); }
  TensorView keys() const { return k_.view().narrow(1, 0, length_); }    // (b, length, h_kv, p)
  TensorView values() const { return v_.view().narrow(1, 0, length_); }  // (b, length, h_kv, p)
  void clear() { length_ = 0; }
  /// Forgets the tokens after the first `length` (e.g. rejected draft tokens); keeps the storage.
  void truncate(index_t length) {
    Checker("KVCache::truncate").require(length >= 0 && length <= length_, "length", "must be in [0, ", length_,
                                         "], got ", length);
    length_ = length;
  }

  /// Makes room for `capacity` tokens without reallocating later.
  void reserve(index_t capacity) {
    if (capacity <= capacity_) return;
    Tensor k = Tensor::empty({b_, capacity, h_kv_, p_}, dtype_, device_);  // (b, capacity, h_kv, p)
    Tensor v = Tensor::empty({b_, capacity, h_kv_, p_}, dtype_, device_);  // (b, capacity, h_kv, p)
    if (length_ > 0) {
      copy(k.view().narrow(1, 0, length_), keys());
      copy(v.view().narrow(1, 0, length_), values());
    }
    k_ = std::move(k);
    v_ = std::move(v);
    capacity_ = capacity;
  }

  /// Appends the keys and values of t new tokens: k_new, v_new (b, t, h_kv, p).
  void append(const TensorView& k_new, const TensorView& v_new) {
    Checker c("KVCache::append");
    c.defined("k_new", k_new).defined("v_new", v_new);
    c.dtype("k_new", k_new, dtype_).dtype("v_new", v_new, dtype_);
    c.shape("k_new", k_new, {b_, kAny, h_kv_, p_}).shape("v_new", v_new, {b_, k_new.size(1), h_kv_, p_});
    if (device_.is_cpu()) c.device("k_new", k_new, Device::cpu()).device("v_new", v_new, Device::cpu());
    const index_t t = k_new.size(1);
    if (length_ + t > capacity_) reserve(std::max(length_ + t, 2 * capacity_));
    // On a device: b rows of t · h_kv · p elements (one 2D copy); a strided host source is gathered first.
    auto put = [&](const Tensor& store, const TensorView& src) {
      const TensorView dst = store.view().narrow(1, length_, t);
      if (!device_.is_cpu() && src.device().is_cpu() && !src.is_contiguous()) {
        Tensor packed = Tensor::empty(src.shape(), src.dtype());
        copy(packed.view(), src);
        copy(dst, packed.view());
      } else {
        copy(dst, src);
      }
    };
    put(k_, k_new);
    put(v_, v_new);
    length_ += t;
  }

 private:
  index_t b_, h_kv_, p_;
  DType dtype_;
  Device device_;
  index_t length_ = 0, capacity_ = 0;
  Tensor k_, v_;
};

/// Attention of the newest t tokens' queries q (b, t, h, p) over every token in the cache (append their
/// keys and values first): out (b, t, h, p). Equals rows l − t … l − 1 of the full causal forward.
/// Per-token cost and memory grow linearly with cache.length().
inline void attention_decode(const TensorView& q, const KVCache& cache, const TensorView& out,
                             const AttentionOptions& opt = {}) {
  Checker c("attention_decode");
  c.rank("q", q, 4);
  c.require(q.size(1) <= cache.length(), "q", "has ", q.size(1),
            " new tokens but the cache holds only ", cache.length(), " (append the new keys and values first)");
  Tensor lse = Tensor::empty({q.size(0), q.size(2), q.size(1)}, q.dtype(), q.device());  // (b, h, t)
  attention_forward(q, cache.keys(), cache.values(), out, lse, opt);
}

}  // namespace ssm
