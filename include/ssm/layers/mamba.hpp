// The Mamba block (Gu & Dao 2023, "Mamba", §3.4 and Fig. 3; MATH.md §6): in_proj → causal depthwise
// conv1d → SiLU → x_proj (δ, B, C) → dt_proj → selective scan (D, z gate, softplus Δ) → out_proj.
// Parallel forward over a sequence, step for one token with a per-layer cache (conv state, SSM state),
// and backward (gradients of the input and of every parameter).
//
// Glossary (code name → paper / mamba_simple.py):
//   x, z      the two halves of in_proj(u) (the SSM branch and the gate)      (l, d_inner) each
//   delta_r   the low-rank δ of x_proj, dt_proj(delta_r) + dt_proj.bias = Δ before softplus
//   Delta     softplus(dt_proj(delta_r) + dt_bias)                            (l, d_inner)
//   A         −exp(A_log) (S4D-Real)                                          (d_inner, n)
//   B, C      input-dependent, shared by all channels (one group)             (l, n)
//   h         the SSM state                                                   (d_inner, n)
// Activations are time-major ((b, l, features), row-major), so every projection is one GEMM over b·l
// rows. T = float (inference, fp32 accumulation as in the reference) or double (gradient checks).
#pragma once

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/layers/basic.hpp"
#include "ssm/layers/conv1d.hpp"

namespace ssm::layers {

/// Sizes and options of one Mamba block. Zero d_inner / dt_rank mean the published defaults
/// (expand · d_model, ceil(d_model / 16)).
struct MambaBlockConfig {
  index_t d_model = 0;
  index_t d_state = 16;  // n
  index_t d_conv = 4;    // w, the conv1d kernel width (≥ 2)
  index_t expand = 2;
  index_t d_inner = 0;   // 0: expand · d_model
  index_t dt_rank = 0;   // 0 ("auto"): ceil(d_model / 16)
  bool bias = false;       // in_proj and out_proj biases
  bool conv_bias = true;   // conv1d bias
  // Initialization of Δ (published values).
  double dt_min = 0.001, dt_max = 0.1, dt_init_floor = 1e-4;

  index_t inner() const { return d_inner > 0 ? d_inner : expand * d_model; }
  index_t rank() const { return dt_rank > 0 ? dt_rank : (d_model + 15) / 16; }

  /// Throws ssm::Error naming the first invalid field.
  void validate(const char* op = "MambaBlockConfig") const {
    SSM_CHECK(d_model >= 1, op, ": d_model must be >= 1, got ", d_model);
    SSM_CHECK(d_state >= 1, op, ": d_state must be >= 1, got ", d_state);
    SSM_CHECK(d_conv >= 2, op, ": d_conv (the conv1d width) must be >= 2, got ", d_conv);
    SSM_CHECK(d_inner > 0 || expand >= 1, op, ": expand must be >= 1, got ", expand);
    SSM_CHECK(d_inner >= 0 && dt_rank >= 0, op, ": d_inner and dt_rank must be >= 0 (0 = default), got ",
              d_inner, " and ", dt_rank);
    check_positive(op, "dt_min", dt_min);
    check_positive(op, "dt_max", dt_max);
    SSM_CHECK(dt_min <= dt_max, op, ": dt_min ", dt_min, " exceeds dt_max ", dt_max);
    check_positive(op, "dt_init_floor", dt_init_floor);
  }
};

/// Parameters of one block in PyTorch's layouts (the names of mamba_simple.py / transformers). Also used
/// for their gradients. Optional biases are empty vectors when the config has none.
template <class T>
struct MambaBlockParams {
  std::vector<T> in_proj_weight;   // (2 d_inner, d_model)
  std::vector<T> in_proj_bias;     // (2 d_inner) or empty
  std::vector<T> conv_weight;      // (d_inner, d_conv)   (PyTorch: (d_inner, 1, d_conv))
  std::vector<T> conv_bias;        // (d_inner) or empty
  std::vector<T> x_proj_weight;    // (dt_rank + 2 n, d_inner)
  std::vector<T> dt_proj_weight;   // (d_inner, dt_rank)
  std::vector<T> dt_proj_bias;     // (d_inner)
  std::vector<T> A_log;            // (d_inner, n)
  std::vector<T> D;                // (d_inner)
  std::vector<T> out_proj_weight;  // (d_model, d_inner)
  std::vector<T> out_proj_bias;    // (d_model) or empty

  /// Calls f(name, vector, shape) for every parameter the config has, in a fixed order; names are
  /// the suffixes of the Hugging Face tensor names (e.g. "in_proj.weight").
  template <class F>
  void for_each(const MambaBlockConfig& cfg, F&& f) {
    const index_t di = cfg.inner(), dm = cfg.d_model, n = cfg.d_state, r = cfg.rank(), w = cfg.d_conv;
    f("in_proj.weight", in_proj_weight, Dims{2 * di, dm});
    if (cfg.bias) f("in_proj.bias", in_proj_bias, Dims{2 * di});
    f("conv1d.weight", conv_weight, Dims{di, 1, w});
    if (cfg.conv_bias) f("conv1d.bias", conv_bias, Dims{di});
    f("x_proj.weight", x_proj_weight, Dims{r + 2 * n, di});
    f("dt_proj.weight", dt_proj_weight, Dims{di, r});
    f("dt_proj.bias", dt_proj_bias, Dims{di});
    f("A_log", A_log, Dims{di, n});
    f("D", D, Dims{di});
    f("out_proj.weight", out_proj_weight, Dims{dm, di});
    if (cfg.bias) f("out_proj.bias", out_proj_bias, Dims{dm});
  }

  /// All parameters allocated with the config's shapes and filled with zeros.
  static MambaBlockParams zeros(const MambaBlockConfig& cfg) {
    MambaBlockParams p;
    p.for_each(cfg, [](const char*, std::vector<T>& v, const Dims& s) { v.assign(static_cast<std::size_t>(s.product()), T(0)); });
    return p;
  }
};

/// Per-layer decoding cache: the last d_conv − 1 conv inputs and the SSM state, for b sequences.
/// A plain value: copy it to fork a sequence. Its size does not depend on the context length.
template <class T>
struct MambaLayerCache {
  index_t b = 0;
  std::vector<T> conv_state;  // (b, d_conv - 1, d_inner), oldest input first
  std::vector<T> ssm_state;   // (b, d_inner, n)

  static MambaLayerCache zeros(const MambaBlockConfig& cfg, index_t b) {
    MambaLayerCache c;
    c.b = b;
    c.conv_state.assign(static_cast<std::size_t>(b * (cfg.d_conv - 1) * cfg.inner()), T(0));
    c.ssm_state.assign(static_cast<std::size_t>(b * cfg.inner() * cfg.d_state), T(0));
    return c;
  }
  std::size_t nbytes() const { return (conv_state.size() + ssm_state.size()) * sizeof(T); }
};

/// Input and parameter gradients of MambaBlock::backward.
template <class T>
struct MambaBlockGrads {
  std::vector<T> grad_u;        // (b, l, d_model)
  MambaBlockParams<T> params;  // grad of each parameter, same layout
};

namespace detail {

/// Selective scan over one sequence in time-major layout (MATH.md §5, one group, real A), with D, the
/// z gate, Δ bias and softplus. u, dt, z, out: (l, di) with row strides ld_u, ld_dt, ld_z, di; B, C: row
/// stride ld_bc, n entries each; A, h: (di, n). h holds the initial state on entry and the last state
/// on exit. When hs is not null it receives h_t for every t: (l, di, n). y_pre (when not null) receives
/// y before the gate: (l, di).
template <class T>
void mamba_scan_forward(index_t l, index_t di, index_t n, const T* u, index_t ld_u, const T* dt, index_t ld_dt,
                        const T* dt_bias, const T* A, const T* B, const T* C, index_t ld_bc, const T* D, const T* z,
                        index_t ld_z, T* h, T* out, T* hs, T* y_pre) {
  for (index_t t = 0; t < l; ++t) {
    const T* Bt = B + t * ld_bc;
    const T* Ct = C + t * ld_bc;
    for (index_t c = 0; c < di; ++c) {
      const T ut = u[t * ld_u + c];
      const T Delta = softplus(dt[t * ld_dt + c] + dt_bias[c]);
      T* hc = h + c * n;
      const T* Ac = A + c * n;
      T y = 0;
      for (index_t k = 0; k < n; ++k) {
        hc[k] = std::exp(Delta * Ac[k]) * hc[k] + Delta * Bt[k] * ut;
        y += Ct[k] * hc[k];
      }
      y += D[c] * ut;
      if (y_pre != nullptr) y_pre[t * di + c] = y;
      out[t * di + c] = z != nullptr ? y * silu(z[t * ld_z + c]) : y;
    }
    if (hs != nullptr) std::copy_n(h, di * n, hs + t * di * n);
  }
}

}  // namespace detail

/// One Mamba block with its parameters. forward / step / backward are const and may run concurrently
/// (each call owns its scratch); params() and refresh() are not.
template <class T>
class MambaBlock {
 public:
  MambaBlock() = default;
  MambaBlock(const MambaBlockConfig& cfg, MambaBlockParams<T> params) : cfg_(cfg), p_(std::move(params)) {
    cfg_.validate("MambaBlock");
    p_.for_each(cfg_, [](const char* name, std::vector<T>& v, const Dims& s) {
      SSM_CHECK(static_cast<index_t>(v.size()) == s.product(), "MambaBlock: parameter '", name, "' has ", v.size(),
                " elements, expected shape ", s.str());
    });
    refresh();
  }

  /// A block with the published initialization (MATH.md §6): PyTorch-default uniform weights for the
  /// projections and the conv; dt_proj weight uniform in ±dt_rank^{-1/2}; dt_proj bias the inverse
  /// softplus of Δ log-uniform in [dt_min, dt_max] (floored); A_log[c, k] = log(k + 1); D = 1.
  static MambaBlock init(const MambaBlockConfig& cfg, std::uint64_t seed) {
    cfg.validate("MambaBlock::init");
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    auto uniform = [&](std::vector<T>& v, double bound) {
      for (auto& x : v) x = static_cast<T>((2 * unit(rng) - 1) * bound);
    };
    const index_t di = cfg.inner(), dm = cfg.d_model, n = cfg.d_state, r = cfg.rank(), w = cfg.d_conv;
    auto p = MambaBlockParams<T>::zeros(cfg);
    uniform(p.in_proj_weight, 1.0 / std::sqrt(double(dm)));
    uniform(p.in_proj_bias, 1.0 / std::sqrt(double(dm)));
    uniform(p.conv_weight, 1.0 / std::sqrt(double(w)));
    uniform(p.conv_bias, 1.0 / std::sqrt(double(w)));
    uniform(p.x_proj_weight, 1.0 / std::sqrt(double(di)));
    uniform(p.dt_proj_weight, 1.0 / std::sqrt(double(r)));
    for (auto& b : p.dt_proj_bias) {
      double Delta = std::exp(unit(rng) * (std::log(cfg.dt_max) - std::log(cfg.dt_min)) + std::log(cfg.dt_min));
      Delta = std::max(Delta, cfg.dt_init_floor);
      b = static_cast<T>(Delta + std::log(-std::expm1(-Delta)));  // inverse softplus
    }
    for (index_t c = 0; c < di; ++c)
      for (index_t k = 0; k < n; ++k) p.A_log[static_cast<std::size_t>(c * n + k)] = static_cast<T>(std::log(double(k + 1)));
    std::fill(p.D.begin(), p.D.end(), T(1));
    uniform(p.out_proj_weight, 1.0 / std::sqrt(double(di)));
    uniform(p.out_proj_bias, 1.0 / std::sqrt(double(di)));
    return MambaBlock(cfg, std::move(p));
  }

  const MambaBlockConfig& config() const { return cfg_; }
  const MambaBlockParams<T>& params() const { return p_; }
  /// Mutable parameters; call refresh() after changing A_log.
  MambaBlockParams<T>& params() { return p_; }
  void refresh() {
    A_.resize(p_.A_log.size());
    for (std::size_t i = 0; i < A_.size(); ++i) A_[i] = -std::exp(p_.A_log[i]);
  }

  /// A zero cache for b sequences.
  MambaLayerCache<T> make_cache(index_t b) const { return MambaLayerCache<T>::zeros(cfg_, b); }

  /// Parallel forward. u: (b, l, d_model) contiguous T; returns (b, l, d_model). When `cache` is not
  /// null it receives the conv and SSM state after the last token (a prefill), so that step() can
  /// continue the sequences; with `resume` the sequences start from the cache's state instead of zeros
  /// (a prefill in chunks).
  Tensor forward(const TensorView& u, MambaLayerCache<T>* cache = nullptr, bool resume = false) const {
    Checker c("MambaBlock::forward");
    c.defined("u", u).rank("u", u, 3);
    c.shape("u", u, {kAny, kAny, cfg_.d_model});
    c.require(u.dtype() == dtype_of<T>(), "u", "expected dtype ", name(dtype_of<T>()), ", got ", name(u.dtype()));
    c.require(u.device().is_cpu(), "u", "expected a cpu tensor, got ", u.device().str());
    c.require(u.is_contiguous(), "u", "expected a contiguous tensor, got strides ", u.strides().str());
    const index_t b = u.size(0), l = u.size(1);
    Tensor out = Tensor::empty({b, l, cfg_.d_model}, dtype_of<T>());  // (b, l, d_model)
    if (resume) {
      c.require(cache != nullptr && cache->b == b, "cache", "resume needs a cache for ", b, " sequences");
      check_cache(*cache);
    }
    forward_raw(u.data_as<const T>(), b, l, out.data_as<T>(), cache, resume);
    return out;
  }

  /// Forward on raw contiguous arrays: u, out (b, l, d_model). See forward().
  void forward_raw(const T* u, index_t b, index_t l, T* out, MambaLayerCache<T>* cache = nullptr,
                   bool resume = false) const {
    const index_t di = cfg_.inner(), dm = cfg_.d_model, n = cfg_.d_state, r = cfg_.rank(), w = cfg_.d_conv;
    const index_t rows = b * l, nx = r + 2 * n;
    if (cache == nullptr) resume = false;
    if (cache != nullptr && (cache->b != b || !resume)) *cache = make_cache(b);
    std::vector<T> xz(static_cast<std::size_t>(rows * 2 * di));  // (b, l, 2 di)
    linear_forward(u, p_.in_proj_weight.data(), bias_or_null(p_.in_proj_bias), xz.data(), rows, dm, 2 * di);
    std::vector<T> x(static_cast<std::size_t>(l * di));       // (l, di)
    std::vector<T> xc(static_cast<std::size_t>(rows * di));   // (b, l, di) conv + SiLU output
    std::vector<T> dbc(static_cast<std::size_t>(rows * nx));  // (b, l, r + 2n)
    std::vector<T> dt(static_cast<std::size_t>(rows * di));   // (b, l, di)
    std::vector<T> y(static_cast<std::size_t>(rows * di));    // (b, l, di)
    std::vector<T> h(static_cast<std::size_t>(di * n));       // (di, n)
    const Conv1dArgs<T> conv{l, di, w, p_.conv_weight.data(), bias_or_null(p_.conv_bias), true};
    for (index_t bi = 0; bi < b; ++bi) {
      for (index_t t = 0; t < l; ++t)
        std::copy_n(xz.data() + (bi * l + t) * 2 * di, di, x.data() + t * di);
      T* conv_state = cache != nullptr ? cache->conv_state.data() + bi * (w - 1) * di : nullptr;
      conv1d_forward(conv, x.data(), resume ? static_cast<const T*>(conv_state) : nullptr, xc.data() + bi * l * di,
                     conv_state);
    }
    linear_forward(xc.data(), p_.x_proj_weight.data(), static_cast<const T*>(nullptr), dbc.data(), rows, di, nx);
    linear_forward(dbc.data(), p_.dt_proj_weight.data(), static_cast<const T*>(nullptr), dt.data(), rows, r, di, nx);
    for (index_t bi = 0; bi < b; ++bi) {
      if (resume)
        std::copy_n(cache->ssm_state.begin() + bi * di * n, di * n, h.begin());
      else
        std::fill(h.begin(), h.end(), T(0));
      const index_t o = bi * l;
      detail::mamba_scan_forward(l, di, n, xc.data() + o * di, di, dt.data() + o * di, di, p_.dt_proj_bias.data(),
                                 A_.data(), dbc.data() + o * nx + r, dbc.data() + o * nx + r + n, nx, p_.D.data(),
                                 xz.data() + o * 2 * di + di, 2 * di, h.data(), y.data() + o * di,
                                 static_cast<T*>(nullptr), static_cast<T*>(nullptr));
      if (cache != nullptr) std::copy(h.begin(), h.end(), cache->ssm_state.begin() + bi * di * n);
    }
    linear_forward(y.data(), p_.out_proj_weight.data(), bias_or_null(p_.out_proj_bias), out, rows, di, dm);
  }

  /// One token for b sequences: u (b, d_model) → returns (b, d_model); the cache (b sequences) is
  /// advanced by one token. Cost independent of how many tokens came before.
  Tensor step(const TensorView& u, MambaLayerCache<T>& cache) const {
    Checker c("MambaBlock::step");
    c.defined("u", u).rank("u", u, 2);
    c.shape("u", u, {cache.b, cfg_.d_model});
    c.require(u.dtype() == dtype_of<T>(), "u", "expected dtype ", name(dtype_of<T>()), ", got ", name(u.dtype()));
    c.require(u.device().is_cpu() && u.is_contiguous(), "u", "expected a contiguous cpu tensor");
    check_cache(cache);
    Tensor out = Tensor::empty({cache.b, cfg_.d_model}, dtype_of<T>());  // (b, d_model)
    std::vector<T> work(static_cast<std::size_t>(workspace_size(cache.b)));
    step_raw(u.data_as<const T>(), out.data_as<T>(), cache, work.data());
    return out;
  }

  /// Number of T elements step_raw needs as scratch for b sequences.
  index_t workspace_size(index_t b) const {
    const index_t di = cfg_.inner(), n = cfg_.d_state, r = cfg_.rank();
    return b * (2 * di + di + (r + 2 * n) + di + di);
  }

  /// step() on raw arrays: u, out (b, d_model) with b = cache.b; work: workspace_size(b) elements.
  /// Allocates nothing (mamba's selective_state_update semantics for the SSM part).
  void step_raw(const T* u, T* out, MambaLayerCache<T>& cache, T* work) const {
    const index_t di = cfg_.inner(), dm = cfg_.d_model, n = cfg_.d_state, r = cfg_.rank(), w = cfg_.d_conv;
    const index_t b = cache.b, nx = r + 2 * n;
    T* xz = work;                 // (b, 2 di)
    T* xc = xz + b * 2 * di;      // (b, di)
    T* dbc = xc + b * di;         // (b, r + 2n)
    T* dt = dbc + b * nx;         // (b, di)
    T* y = dt + b * di;           // (b, di)
    linear_forward(u, p_.in_proj_weight.data(), bias_or_null(p_.in_proj_bias), xz, b, dm, 2 * di);
    const Conv1dArgs<T> conv{1, di, w, p_.conv_weight.data(), bias_or_null(p_.conv_bias), true};
    for (index_t bi = 0; bi < b; ++bi)
      conv1d_update(conv, xz + bi * 2 * di, cache.conv_state.data() + bi * (w - 1) * di, xc + bi * di);
    linear_forward(xc, p_.x_proj_weight.data(), static_cast<const T*>(nullptr), dbc, b, di, nx);
    linear_forward(dbc, p_.dt_proj_weight.data(), static_cast<const T*>(nullptr), dt, b, r, di, nx);
    for (index_t bi = 0; bi < b; ++bi)
      detail::mamba_scan_forward(1, di, n, xc + bi * di, di, dt + bi * di, di, p_.dt_proj_bias.data(), A_.data(),
                                 dbc + bi * nx + r, dbc + bi * nx + r + n, nx, p_.D.data(), xz + bi * 2 * di + di,
                                 2 * di, cache.ssm_state.data() + bi * di * n, y + bi * di, static_cast<T*>(nullptr),
                                 static_cast<T*>(nullptr));
    linear_forward(y, p_.out_proj_weight.data(), bias_or_null(p_.out_proj_bias), out, b, di, dm);
  }

  /// Backward of forward() from a zero state: given u (b, l, d_model) and grad_out (b, l, d_model),
  /// returns grad_u and the gradient of every parameter. Recomputes the forward activations and keeps
  /// the SSM states of one sequence at a time ((l, d_inner, n)).
  MambaBlockGrads<T> backward(const TensorView& u, const TensorView& grad_out) const {
    Checker c("MambaBlock::backward");
    c.defined("u", u).rank("u", u, 3).shape("u", u, {kAny, kAny, cfg_.d_model});
    c.shape("grad_out", grad_out, {u.size(0), u.size(1), cfg_.d_model});
    for (const auto& [nm, t] : {std::pair<const char*, const TensorView*>{"u", &u}, {"grad_out", &grad_out}}) {
      c.require(t->dtype() == dtype_of<T>(), nm, "expected dtype ", name(dtype_of<T>()), ", got ", name(t->dtype()));
      c.require(t->device().is_cpu() && t->is_contiguous(), nm, "expected a contiguous cpu tensor");
    }
    return backward_raw(u.data_as<const T>(), grad_out.data_as<const T>(), u.size(0), u.size(1));
  }

  MambaBlockGrads<T> backward_raw(const T* u, const T* grad_out, index_t b, index_t l) const {
    const index_t di = cfg_.inner(), dm = cfg_.d_model, n = cfg_.d_state, r = cfg_.rank(), w = cfg_.d_conv;
    const index_t rows = b * l, nx = r + 2 * n;
    MambaBlockGrads<T> g;
    g.params = MambaBlockParams<T>::zeros(cfg_);
    auto& gp = g.params;
    g.grad_u.assign(static_cast<std::size_t>(rows * dm), T(0));
    // ---- recompute the forward ----
    std::vector<T> xz(static_cast<std::size_t>(rows * 2 * di));  // (b, l, 2 di)
    linear_forward(u, p_.in_proj_weight.data(), bias_or_null(p_.in_proj_bias), xz.data(), rows, dm, 2 * di);
    std::vector<T> x(static_cast<std::size_t>(rows * di));     // (b, l, di) conv input
    std::vector<T> xc(static_cast<std::size_t>(rows * di));    // (b, l, di)
    std::vector<T> dbc(static_cast<std::size_t>(rows * nx));   // (b, l, r + 2n)
    std::vector<T> dt(static_cast<std::size_t>(rows * di));    // (b, l, di)
    std::vector<T> y(static_cast<std::size_t>(rows * di));     // (b, l, di) gated scan output
    std::vector<T> y_pre(static_cast<std::size_t>(rows * di)); // (b, l, di) before the gate
    const Conv1dArgs<T> conv{l, di, w, p_.conv_weight.data(), bias_or_null(p_.conv_bias), true};
    for (index_t bi = 0; bi < b; ++bi) {
      for (index_t t = 0; t < l; ++t)
        std::copy_n(xz.data() + (bi * l + t) * 2 * di, di, x.data() + (bi * l + t) * di);
      conv1d_forward(conv, x.data() + bi * l * di, static_cast<const T*>(nullptr), xc.data() + bi * l * di,
                     static_cast<T*>(nullptr));
    }
    linear_forward(xc.data(), p_.x_proj_weight.data(), static_cast<const T*>(nullptr), dbc.data(), rows, di, nx);
    linear_forward(dbc.data(), p_.dt_proj_weight.data(), static_cast<const T*>(nullptr), dt.data(), rows, r, di, nx);
    // ---- out_proj ----
    std::vector<T> h(static_cast<std::size_t>(di * n));            // (di, n)
    std::vector<T> hs(static_cast<std::size_t>(l * di * n));       // (l, di, n)
    for (index_t bi = 0; bi < b; ++bi) {
      std::fill(h.begin(), h.end(), T(0));
      const index_t o = bi * l;
      detail::mamba_scan_forward(l, di, n, xc.data() + o * di, di, dt.data() + o * di, di, p_.dt_proj_bias.data(),
                                 A_.data(), dbc.data() + o * nx + r, dbc.data() + o * nx + r + n, nx, p_.D.data(),
                                 xz.data() + o * 2 * di + di, 2 * di, h.data(), y.data() + o * di,
                                 static_cast<T*>(nullptr), y_pre.data() + o * di);
    }
    std::vector<T> grad_y(static_cast<std::size_t>(rows * di));  // (b, l, di)
    linear_backward(y.data(), p_.out_proj_weight.data(), grad_out, grad_y.data(), gp.out_proj_weight.data(),
                    bias_or_null_mut(gp.out_proj_bias), rows, di, dm);
    // ---- selective scan backward (MATH.md §5), one sequence at a time ----
    std::vector<T> grad_xz(static_cast<std::size_t>(rows * 2 * di), T(0));  // (b, l, 2 di)
    std::vector<T> grad_xc(static_cast<std::size_t>(rows * di), T(0));      // (b, l, di)
    std::vector<T> grad_dbc(static_cast<std::size_t>(rows * nx), T(0));     // (b, l, r + 2n)
    std::vector<T> grad_dt(static_cast<std::size_t>(rows * di), T(0));      // (b, l, di) w.r.t. dt_proj output
    std::vector<T> grad_A(static_cast<std::size_t>(di * n), T(0));          // (di, n)
    std::vector<T> gh(static_cast<std::size_t>(di * n));                    // (di, n) ∂L/∂h_t carried
    for (index_t bi = 0; bi < b; ++bi) {
      const index_t o = bi * l;
      std::fill(h.begin(), h.end(), T(0));
      std::vector<T> tmp(static_cast<std::size_t>(l * di));  // (l, di)
      detail::mamba_scan_forward(l, di, n, xc.data() + o * di, di, dt.data() + o * di, di, p_.dt_proj_bias.data(),
                                 A_.data(), dbc.data() + o * nx + r, dbc.data() + o * nx + r + n, nx, p_.D.data(),
                                 static_cast<const T*>(nullptr), 0, h.data(), tmp.data(), hs.data(),
                                 static_cast<T*>(nullptr));
      std::fill(gh.begin(), gh.end(), T(0));
      for (index_t t = l - 1; t >= 0; --t) {
        const index_t row = o + t;
        const T* Bt = dbc.data() + row * nx + r;
        const T* Ct = Bt + n;
        T* gBt = grad_dbc.data() + row * nx + r;
        T* gCt = gBt + n;
        const T* ht = hs.data() + t * di * n;
        const T* hprev = t > 0 ? hs.data() + (t - 1) * di * n : nullptr;
        for (index_t c = 0; c < di; ++c) {
          const T zt = xz[static_cast<std::size_t>(row * 2 * di + di + c)];
          const T go = grad_y[static_cast<std::size_t>(row * di + c)];
          const T dy = go * silu(zt);  // ∂L/∂y_t before the gate
          grad_xz[static_cast<std::size_t>(row * 2 * di + di + c)] = go * y_pre[static_cast<std::size_t>(row * di + c)] * silu_grad(zt);
          const T ut = xc[static_cast<std::size_t>(row * di + c)];
          const T pre = dt[static_cast<std::size_t>(row * di + c)] + p_.dt_proj_bias[static_cast<std::size_t>(c)];
          const T Delta = softplus(pre);
          T grad_u_t = p_.D[static_cast<std::size_t>(c)] * dy;
          gp.D[static_cast<std::size_t>(c)] += dy * ut;
          T grad_Delta = 0;
          T* ghc = gh.data() + c * n;
          const T* Ac = A_.data() + c * n;
          for (index_t k = 0; k < n; ++k) {
            const T hck = ht[c * n + k];
            gCt[k] += dy * hck;
            ghc[k] += Ct[k] * dy;  // g_t = C_t dy_t + a_{t+1} g_{t+1}
            const T a = std::exp(Delta * Ac[k]);
            const T hp = hprev != nullptr ? hprev[c * n + k] : T(0);
            grad_u_t += ghc[k] * Delta * Bt[k];
            gBt[k] += ghc[k] * Delta * ut;
            grad_Delta += ghc[k] * (Ac[k] * a * hp + Bt[k] * ut);
            grad_A[static_cast<std::size_t>(c * n + k)] += ghc[k] * Delta * a * hp;
            ghc[k] *= a;  // carry a_t g_t to step t − 1
          }
          grad_xc[static_cast<std::size_t>(row * di + c)] = grad_u_t;
          const T gpre = grad_Delta * softplus_grad(pre);
          grad_dt[static_cast<std::size_t>(row * di + c)] = gpre;
          gp.dt_proj_bias[static_cast<std::size_t>(c)] += gpre;
        }
      }
    }
    for (std::size_t i = 0; i < grad_A.size(); ++i) gp.A_log[i] = grad_A[i] * A_[i];  // A = −exp(A_log)
    // ---- dt_proj and x_proj ----
    // grad of δ (the first r columns of dbc) from dt_proj; grad_dbc's B, C columns came from the scan.
    linear_backward(dbc.data(), p_.dt_proj_weight.data(), grad_dt.data(), grad_dbc.data(), gp.dt_proj_weight.data(),
                    static_cast<T*>(nullptr), rows, r, di, nx, di, nx);
    std::vector<T> grad_xc_proj(static_cast<std::size_t>(rows * di));  // (b, l, di)
    linear_backward(xc.data(), p_.x_proj_weight.data(), grad_dbc.data(), grad_xc_proj.data(),
                    gp.x_proj_weight.data(), static_cast<T*>(nullptr), rows, di, nx);
    for (std::size_t i = 0; i < grad_xc.size(); ++i) grad_xc[i] += grad_xc_proj[i];
    // ---- conv1d (+ SiLU) ----
    std::vector<T> grad_x(static_cast<std::size_t>(l * di));  // (l, di)
    for (index_t bi = 0; bi < b; ++bi) {
      conv1d_backward(conv, x.data() + bi * l * di, static_cast<const T*>(nullptr), grad_xc.data() + bi * l * di,
                      static_cast<const T*>(nullptr), grad_x.data(), static_cast<T*>(nullptr), gp.conv_weight.data(),
                      bias_or_null_mut(gp.conv_bias));
      for (index_t t = 0; t < l; ++t)
        std::copy_n(grad_x.data() + t * di, di, grad_xz.data() + (bi * l + t) * 2 * di);
    }
    // ---- in_proj ----
    linear_backward(u, p_.in_proj_weight.data(), grad_xz.data(), g.grad_u.data(), gp.in_proj_weight.data(),
                    bias_or_null_mut(gp.in_proj_bias), rows, dm, 2 * di);
    return g;
  }

  /// Throws when the cache does not fit this block.
  void check_cache(const MambaLayerCache<T>& cache) const {
    const index_t di = cfg_.inner();
    SSM_CHECK(cache.b >= 1 &&
                  static_cast<index_t>(cache.conv_state.size()) == cache.b * (cfg_.d_conv - 1) * di &&
                  static_cast<index_t>(cache.ssm_state.size()) == cache.b * di * cfg_.d_state,
              "MambaBlock: cache does not match the block (b = ", cache.b, ", conv_state ", cache.conv_state.size(),
              " elements, ssm_state ", cache.ssm_state.size(), " elements; expected (b, ", cfg_.d_conv - 1, ", ",
              di, ") and (b, ", di, ", ", cfg_.d_state, "))");
  }

 private:
  static const T* bias_or_null(const std::vector<T>& v) { return v.empty() ? nullptr : v.data(); }
  static T* bias_or_null_mut(std::vector<T>& v) { return v.empty() ? nullptr : v.data(); }

  MambaBlockConfig cfg_;
  MambaBlockParams<T> p_;
  std::vector<T> A_;  // (d_inner, n) = −exp(A_log)
};

}  // namespace ssm::layers
