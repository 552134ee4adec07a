// The Mamba block (Gu & Dao 2023, "Mamba", §3.4 and Fig. 3; docs/math.md §6.1): in_proj → causal depthwise
// conv1d → SiLU → x_proj (δ, B, C) → dt_proj → selective scan (D, z gate, softplus Δ) → out_proj.
// Parallel forward over a sequence, step for one token with a per-layer cache (conv state, SSM state),
// and backward (gradients of the input and of every parameter). With bcdt_rms_eps set the block is
// FalconMamba's mixer (transformers' FalconMambaMixer): δ, B and C are RMS-normalized after x_proj.
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
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/layers/basic.hpp"
#include "ssm/layers/conv1d.hpp"
#include "ssm/layers/layer_cache.hpp"
#include "ssm/layers/weight.hpp"
#include "ssm/cpu/threads.hpp"
#include "ssm/cpu/transpose.hpp"
#include "ssm/ops/causal_conv1d.hpp"
#include "ssm/ops/linear.hpp"
#include "ssm/ops/rms_norm.hpp"
#include "ssm/ops/selective_scan.hpp"
#include "ssm/ops/selective_state_update.hpp"

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
  // FalconMamba (config key mixer_rms_eps): δ, B and C, split from x_proj's output, are each RMS-normalized
  // over their own features without a weight, with this epsilon, before δ goes through dt_proj. Unset: Mamba.
  std::optional<double> bcdt_rms_eps;
  // Jamba: those three RMSNorms have weights (dt_layernorm.weight (dt_rank), b_layernorm.weight and c_layernorm.weight
  // (n)); needs bcdt_rms_eps.
  bool bcdt_norm_weights = false;
  // Initialization of Δ (published values).
  double dt_min = 0.001, dt_max = 0.1, dt_init_floor = 1e-4;
  // The ablations of the Mamba paper's Table 1 (selective copying), both on by default (Mamba):
  //  - gated: the z branch. Off: in_proj makes only x (d_inner rows) and the scan's output is not multiplied by
  //    SiLU(z) (the "no gate" architecture).
  //  - selective: Δ, B and C computed from each token (S6). Off: a time-invariant SSM (S4D-Real): Δ = softplus(dt_bias)
  //    per channel, and B, C (d_inner, n) parameters of their own; no x_proj or dt_proj weight. The discretization is
  //    the scan's (ZOH for A, Euler for B: B_bar = Δ B).
  bool gated = true;
  bool selective = true;

  bool operator==(const MambaBlockConfig&) const = default;
  index_t inner() const { return d_inner > 0 ? d_inner : expand * d_model; }
  index_t rank() const { return dt_rank > 0 ? dt_rank : (d_model + 15) / 16; }
  /// Rows of in_proj: x and z (2 d_inner), or x alone without the gate.
  index_t in_rows() const { return gated ? 2 * inner() : inner(); }

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
    if (bcdt_rms_eps) check_positive(op, "bcdt_rms_eps", *bcdt_rms_eps);
    SSM_CHECK(!bcdt_norm_weights || bcdt_rms_eps, op, ": bcdt_norm_weights needs bcdt_rms_eps (their epsilon)");
    SSM_CHECK(selective || !bcdt_rms_eps, op, ": bcdt_rms_eps normalizes x_proj's δ, B and C, which a block with "
              "selective off does not have");
  }
};

/// Parameters of one block in PyTorch's layouts (the names of mamba_simple.py / transformers). Also used
/// for their gradients. Optional biases are empty vectors when the config has none.
template <class T>
struct MambaBlockParams {
  std::vector<T> in_proj_weight;   // (2 d_inner, d_model); without the gate (d_inner, d_model)
  std::vector<T> in_proj_bias;     // (2 d_inner) or (d_inner) or empty
  std::vector<T> conv_weight;      // (d_inner, d_conv)   (PyTorch: (d_inner, 1, d_conv))
  std::vector<T> conv_bias;        // (d_inner) or empty
  std::vector<T> x_proj_weight;    // (dt_rank + 2 n, d_inner); empty when not selective
  std::vector<T> dt_proj_weight;   // (d_inner, dt_rank); empty when not selective
  std::vector<T> dt_proj_bias;     // (d_inner); not selective: Δ = softplus(dt_proj_bias)
  std::vector<T> B;                // (d_inner, n) when not selective, else empty
  std::vector<T> C;                // (d_inner, n) when not selective, else empty
  std::vector<T> A_log;            // (d_inner, n)
  std::vector<T> D;                // (d_inner)
  std::vector<T> out_proj_weight;  // (d_model, d_inner)
  std::vector<T> out_proj_bias;    // (d_model) or empty
  std::vector<T> dt_norm_weight;   // (dt_rank) or empty: Jamba's weights of the δ, B, C RMSNorms
  std::vector<T> b_norm_weight;    // (n) or empty
  std::vector<T> c_norm_weight;    // (n) or empty

  /// Calls f(name, vector, shape) for every parameter the config has, in a fixed order; names are
  /// the suffixes of the Hugging Face tensor names (e.g. "in_proj.weight"). The const form passes const vectors.
  template <class F>
  void for_each(const MambaBlockConfig& cfg, F&& f) {
    walk(*this, cfg, f);
  }
  template <class F>
  void for_each(const MambaBlockConfig& cfg, F&& f) const {
    walk(*this, cfg, f);
  }

  /// f(name, vector) for every parameter present (a non-empty vector), in the order and under the names of the
  /// config's walk above: what the training code walks (models::HybridStack, train::ParamTree).
  template <class F>
  void for_each(F&& f) {
    walk_present(*this, f);
  }
  template <class F>
  void for_each(F&& f) const {
    walk_present(*this, f);
  }

  /// All parameters allocated with the config's shapes and filled with zeros.
  static MambaBlockParams zeros(const MambaBlockConfig& cfg) {
    MambaBlockParams p;
    p.for_each(cfg, [](const char*, std::vector<T>& v, const Dims& s) { v.assign(static_cast<std::size_t>(s.product()), T(0)); });
    return p;
  }

 private:
  template <class Self, class F>
  static void walk_present(Self& p, F& f) {
    using V = std::conditional_t<std::is_const_v<Self>, const std::vector<T>, std::vector<T>>;
    const std::pair<const char*, V*> all[] = {
        {"in_proj.weight", &p.in_proj_weight},   {"in_proj.bias", &p.in_proj_bias},
        {"conv1d.weight", &p.conv_weight},       {"conv1d.bias", &p.conv_bias},
        {"x_proj.weight", &p.x_proj_weight},     {"dt_proj.weight", &p.dt_proj_weight},
        {"dt_proj.bias", &p.dt_proj_bias},       {"B", &p.B},
        {"C", &p.C},                             {"A_log", &p.A_log},
        {"D", &p.D},                             {"out_proj.weight", &p.out_proj_weight},
        {"out_proj.bias", &p.out_proj_bias},     {"dt_layernorm.weight", &p.dt_norm_weight},
        {"b_layernorm.weight", &p.b_norm_weight}, {"c_layernorm.weight", &p.c_norm_weight}};
    for (const auto& [name, v] : all)
      if (!v->empty()) f(name, *v);
  }

  template <class Self, class F>
  static void walk(Self& p, const MambaBlockConfig& cfg, F& f) {
    const index_t di = cfg.inner(), dm = cfg.d_model, n = cfg.d_state, r = cfg.rank(), w = cfg.d_conv;
    f("in_proj.weight", p.in_proj_weight, Dims{cfg.in_rows(), dm});
    if (cfg.bias) f("in_proj.bias", p.in_proj_bias, Dims{cfg.in_rows()});
    f("conv1d.weight", p.conv_weight, Dims{di, 1, w});
    if (cfg.conv_bias) f("conv1d.bias", p.conv_bias, Dims{di});
    if (cfg.selective) {
      f("x_proj.weight", p.x_proj_weight, Dims{r + 2 * n, di});
      f("dt_proj.weight", p.dt_proj_weight, Dims{di, r});
    }
    f("dt_proj.bias", p.dt_proj_bias, Dims{di});
    if (!cfg.selective) {
      f("B", p.B, Dims{di, n});
      f("C", p.C, Dims{di, n});
    }
    f("A_log", p.A_log, Dims{di, n});
    f("D", p.D, Dims{di});
    f("out_proj.weight", p.out_proj_weight, Dims{dm, di});
    if (cfg.bias) f("out_proj.bias", p.out_proj_bias, Dims{dm});
    if (cfg.bcdt_norm_weights) {
      f("dt_layernorm.weight", p.dt_norm_weight, Dims{r});
      f("b_layernorm.weight", p.b_norm_weight, Dims{n});
      f("c_layernorm.weight", p.c_norm_weight, Dims{n});
    }
  }
};

/// The projection matrices of a block held as WeightMatrix (f16 or bf16, or f32), in place of the matching
/// MambaBlockParams vectors, which are then empty: how MambaLM keeps a checkpoint's 16-bit weights. Empty
/// members: the matrix is the f32 vector of the params.
struct MambaBlockMatrices {
  WeightMatrix in_proj, x_proj, dt_proj, out_proj;

  /// Calls f(name, matrix, params vector) for the four projections (the params' names, see MambaBlockParams).
  template <class T, class F>
  void for_each(MambaBlockParams<T>& p, F&& f) {
    f("in_proj.weight", in_proj, p.in_proj_weight);
    f("x_proj.weight", x_proj, p.x_proj_weight);
    f("dt_proj.weight", dt_proj, p.dt_proj_weight);
    f("out_proj.weight", out_proj, p.out_proj_weight);
  }
  /// The member for a params name ("in_proj.weight", ...), or null for a parameter that is not a projection.
  const WeightMatrix* find(const std::string& name) const {
    return name == "in_proj.weight"    ? &in_proj
           : name == "x_proj.weight"   ? &x_proj
           : name == "dt_proj.weight"  ? &dt_proj
           : name == "out_proj.weight" ? &out_proj
                                       : nullptr;
  }
  WeightMatrix* find(const std::string& name) {
    return const_cast<WeightMatrix*>(static_cast<const MambaBlockMatrices*>(this)->find(name));
  }
  bool any() const { return !in_proj.empty() || !x_proj.empty() || !dt_proj.empty() || !out_proj.empty(); }
  /// The held matrices and their dtypes, for messages: "in_proj.weight bf16, x_proj.weight bf16".
  std::string dtypes() const {
    std::string s;
    auto add = [&](const char* name, const WeightMatrix& m) {
      if (m.empty()) return;
      if (!s.empty()) s += ", ";
      s += std::string(name) + " " + std::string(ssm::name(m.dtype()));
    };
    add("in_proj.weight", in_proj);
    add("x_proj.weight", x_proj);
    add("dt_proj.weight", dt_proj);
    add("out_proj.weight", out_proj);
    return s;
  }
  /// Bytes of the matrices held here.
  std::size_t nbytes() const { return in_proj.nbytes() + x_proj.nbytes() + dt_proj.nbytes() + out_proj.nbytes(); }
};

/// Per-layer decoding cache of a MambaBlock: conv_state (b, d_conv - 1, d_inner) T and ssm_state (b, d_inner, n) T
/// on the block's device (the value semantics: ConvSsmCache).
template <class T>
struct MambaLayerCache : ConvSsmCache {
  static MambaLayerCache zeros(const MambaBlockConfig& cfg, index_t b, Device device = Device::cpu()) {
    MambaLayerCache c;
    c.set_zeros(b, {b, cfg.d_conv - 1, cfg.inner()}, {b, cfg.inner(), cfg.d_state}, dtype_of<T>(), device);
    return c;
  }
};

/// Input and parameter gradients of MambaBlock::backward.
template <class T>
struct MambaBlockGrads {
  std::vector<T> grad_u;        // (b, l, d_model)
  MambaBlockParams<T> params;  // grad of each parameter, same layout
};

namespace detail {

/// FalconMamba and Jamba: x_proj's output dbc (rows, r + 2n), unit stride along the features: δ (r), B (n) and C (n)
/// of every row RMS-normalized in place, each over its own features, without weight (FalconMamba) or with the weights
/// w[0..2] (Jamba) (three ssm::rms_norm calls on column slices; any device).
inline void normalize_dbc(const TensorView& dbc, index_t r, index_t n, double eps,
                          const std::optional<TensorView> (&w)[3] = {}) {
  const std::pair<index_t, index_t> parts[3] = {{0, r}, {r, n}, {r + n, n}};
  for (int i = 0; i < 3; ++i) {
    const TensorView part = dbc.narrow(1, parts[i].first, parts[i].second);  // (rows, width)
    rms_norm_into(RmsNormInputs{part, w[i], std::nullopt, eps}, part);
  }
}

/// The scan's operands in its channel-major layout, copied from the block's time-major buffers by `threads`
/// threads (tasks: batch x operand x group of cpu::kTransposeChannels channels); the backward's copies. xz is
/// (b, l, 2 di) with z in its second half, or null without the gate (z stays empty); dbc is (b, l, r + 2n), or null
/// when B and C are not per token (B and C stay empty).
template <class T>
struct ScanOperands {
  std::vector<T> u, delta, z;  // (b, di, l) each
  std::vector<T> B, C;         // (b, n, l) each (one group)

  ScanOperands(index_t b, index_t l, index_t di, index_t n, index_t r, const T* xc, const T* dt, const T* xz,
               const T* dbc, int threads = 1)
      : u(static_cast<std::size_t>(b * di * l)), delta(u.size()), z(xz ? u.size() : 0),
        B(static_cast<std::size_t>(dbc ? b * n * l : 0)), C(B.size()) {
    const index_t nx = r + 2 * n;
    struct Job {
      const T* src;  // batch 0's first element; null: no such operand
      index_t ld, k, src_batch;
      T* dst;
    };
    const Job jobs[5] = {{xc, di, di, l * di, u.data()},
                         {dt, di, di, l * di, delta.data()},
                         {xz ? xz + di : nullptr, 2 * di, di, l * 2 * di, z.data()},
                         {dbc ? dbc + r : nullptr, nx, n, l * nx, B.data()},
                         {dbc ? dbc + r + n : nullptr, nx, n, l * nx, C.data()}};
    const index_t groups = (di + cpu::kTransposeChannels - 1) / cpu::kTransposeChannels;
    ::ssm::cpu::parallel_for(b * 5 * groups, threads, [&](index_t task) {
      const index_t g = task % groups, j = (task / groups) % 5, bi = task / (groups * 5);
      const Job& job = jobs[j];
      const index_t c0 = g * cpu::kTransposeChannels, c1 = std::min(job.k, c0 + cpu::kTransposeChannels);
      if (job.src != nullptr && c0 < c1)
        cpu::to_channel_major(job.src + bi * job.src_batch, l, job.ld, job.dst + bi * job.k * l, c0, c1);
    });
  }
};

}  // namespace detail

/// One Mamba block with its parameters. forward / step / backward are const and may run concurrently
/// (each call owns its scratch); params() and refresh() are not.
template <class T>
class MambaBlock {
 public:
  using value_type = T;
  using Cache = MambaLayerCache<T>;

  MambaBlock() = default;
  MambaBlock(const MambaBlockConfig& cfg, MambaBlockParams<T> params) : MambaBlock(cfg, std::move(params), {}) {}

  /// A block whose projections given in `matrices` (f32, f16 or bf16; T = float only) are held there instead
  /// of in `params`, whose vectors for them must be empty. forward and step read them with f32 arithmetic
  /// (linear_forward on a WeightMatrix); backward throws ssm::Error for such a block.
  MambaBlock(const MambaBlockConfig& cfg, MambaBlockParams<T> params, MambaBlockMatrices matrices)
      : cfg_(cfg), p_(std::move(params)), m_(std::move(matrices)) {
    cfg_.validate("MambaBlock");
    SSM_CHECK((std::is_same_v<T, float>) || !m_.any(), "MambaBlock: weight matrices need T = float");
    std::map<std::string, Dims> shapes;
    p_.for_each(cfg_, [&](const char* name, std::vector<T>&, const Dims& s) { shapes[name] = s; });
    m_.for_each(p_, [&](const char* name, const WeightMatrix& m, std::vector<T>& v) {
      if (m.empty()) return;
      SSM_CHECK(v.empty(), "MambaBlock: parameter '", name, "' is given both as a vector and as a matrix");
      SSM_CHECK(shapes.count(name) == 1, "MambaBlock: matrix '", name, "' is given but the config has no such "
                "parameter (x_proj and dt_proj need selective)");
      const Dims& s = shapes[name];
      SSM_CHECK(m.rows() == s[0] && m.cols() == s[1], "MambaBlock: matrix '", name, "' has shape (", m.rows(), ", ",
                m.cols(), "), expected ", s.str());
    });
    SSM_CHECK(cfg_.bcdt_norm_weights ||
                  (p_.dt_norm_weight.empty() && p_.b_norm_weight.empty() && p_.c_norm_weight.empty()),
              "MambaBlock: dt / b / c norm weights are given but the config has none (bcdt_norm_weights is off)");
    check_sizes("MambaBlock", /*strict=*/true);
    refresh();
  }

  /// A block with the published initialization (docs/math.md §6.1): PyTorch-default uniform weights for the
  /// projections and the conv; dt_proj weight uniform in ±dt_rank^{-1/2}; dt_proj bias the inverse
  /// softplus of Δ log-uniform in [dt_min, dt_max] (floored); A_log[c, k] = log(k + 1); D = 1. Without selective,
  /// S4D's: B = 1 and C standard normal.
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
    std::fill(p.B.begin(), p.B.end(), T(1));
    std::normal_distribution<double> normal(0.0, 1.0);
    for (auto& x : p.C) x = static_cast<T>(normal(rng));
    for (auto* v : {&p.dt_norm_weight, &p.b_norm_weight, &p.c_norm_weight}) std::fill(v->begin(), v->end(), T(1));
    uniform(p.out_proj_weight, 1.0 / std::sqrt(double(di)));
    uniform(p.out_proj_bias, 1.0 / std::sqrt(double(di)));
    return MambaBlock(cfg, std::move(p));
  }

  const MambaBlockConfig& config() const { return cfg_; }
  /// The parameters; a projection held in matrices() has an empty vector here.
  const MambaBlockParams<T>& params() const { return p_; }
  /// The projections held as WeightMatrix (empty members: in params()).
  const MambaBlockMatrices& matrices() const { return m_; }
  /// Every parameter in T, the matrices' values converted (a copy).
  MambaBlockParams<T> full_params() const {
    MambaBlockParams<T> p = p_;
    MambaBlockMatrices m = m_;
    m.for_each(p, [](const char*, const WeightMatrix& w, std::vector<T>& v) {
      if (w.empty()) return;
      const std::vector<float> f = w.to_f32();
      v.assign(f.begin(), f.end());
    });
    return p;
  }
  /// Bytes of the parameters as held (vectors in T, matrices in their dtype).
  std::size_t nbytes() const {
    std::size_t n = 0;
    for (const auto* v :
         {&p_.in_proj_weight, &p_.in_proj_bias, &p_.conv_weight, &p_.conv_bias, &p_.x_proj_weight, &p_.dt_proj_weight,
          &p_.dt_proj_bias, &p_.B, &p_.C, &p_.A_log, &p_.D, &p_.out_proj_weight, &p_.out_proj_bias, &p_.dt_norm_weight,
          &p_.b_norm_weight, &p_.c_norm_weight})
      n += v->size();
    return m_.nbytes() + n * sizeof(T);
  }
  /// Mutable parameters (an optimizer's updates in place). The CPU paths read them at every call: A = −exp(A_log)
  /// comes from a cache made by refresh() while A_log is unchanged since, and is computed afresh per call once it has
  /// changed (so a trained block is never stale; refresh() after training makes decoding allocation-free again). A
  /// block moved to a device keeps its copy of the parameters until refresh().
  MambaBlockParams<T>& params() { return p_; }
  /// Caches A = −exp(A_log) from the current A_log, and uploads the parameters again to a moved block's device.
  void refresh() {
    A_.resize(p_.A_log.size());
    for (std::size_t i = 0; i < A_.size(); ++i) A_[i] = -std::exp(p_.A_log[i]);
    A_log_cached_ = p_.A_log;
    if (dev_) *this = to(dev_->device);  // the device copy follows the changed parameters
  }

  /// A zero cache for b sequences on the block's device.
  MambaLayerCache<T> make_cache(index_t b) const { return MambaLayerCache<T>::zeros(cfg_, b, device()); }

  /// The device the block computes on: where its parameters are (to()); the CPU unless moved.
  Device device() const { return dev_ ? dev_->device : Device::cpu(); }

  /// This block with its parameters copied to `device` (the same block for the CPU): forward and step then take
  /// tensors and caches on that device and run the same ops there. The CPU parameters stay (params(), backward);
  /// copies of the moved block share the device copy. The weight matrices keep their dtype.
  MambaBlock to(Device device) const {
    MambaBlock m = *this;
    m.dev_.reset();
    if (device.is_cpu()) return m;
    const Params P = m.views();  // the CPU parameters
    auto d = std::make_shared<DeviceParams>();
    d->device = device;
    auto up = [&](const auto& v) { return upload(v, device); };
    d->in_proj = up(P.in_proj), d->out_proj = up(P.out_proj);
    if (cfg_.selective) d->x_proj = up(P.x_proj), d->dt_proj = up(P.dt_proj);
    d->B = up(P.B), d->C = up(P.C);
    d->conv_weight = up(P.conv_weight), d->dt_bias = up(P.dt_bias), d->A = up(P.A), d->D = up(P.D);
    d->in_proj_bias = up(P.in_proj_bias), d->conv_bias = up(P.conv_bias), d->out_proj_bias = up(P.out_proj_bias);
    for (int i = 0; i < 3; ++i) d->dbc_norm[i] = up(P.dbc_norm[i]);
    m.dev_ = std::move(d);
    return m;
  }

  /// Parallel forward. u: (b, l, d_model) contiguous T; returns (b, l, d_model). When `cache` is not
  /// null it receives the conv and SSM state after the last token (a prefill), so that step() can
  /// continue the sequences; with `resume` the sequences start from the cache's state instead of zeros
  /// (a prefill in chunks).
  Tensor forward(const TensorView& u, MambaLayerCache<T>* cache = nullptr, bool resume = false) const {
    Checker c("MambaBlock::forward");
    c.defined("u", u).rank("u", u, 3);
    c.shape("u", u, {kAny, kAny, cfg_.d_model});
    c.require(u.dtype() == dtype_of<T>(), "u", "expected dtype ", name(dtype_of<T>()), ", got ", name(u.dtype()));
    c.device("u", u, device());
    c.require(u.is_contiguous(), "u", "expected a contiguous tensor, got strides ", u.strides().str());
    const index_t b = u.size(0), l = u.size(1);
    Tensor out = Tensor::empty({b, l, cfg_.d_model}, dtype_of<T>(), device());  // (b, l, d_model)
    if (resume) {
      c.require(cache != nullptr && cache->b == b, "cache", "resume needs a cache for ", b, " sequences");
      check_cache(*cache);
    }
    if (cache == nullptr) resume = false;
    if (cache != nullptr && (cache->b != b || !resume)) *cache = make_cache(b);
    forward_into(u, out, cache_view(cache, &ConvSsmCache::conv_state),
                 cache_view(cache, &ConvSsmCache::ssm_state), resume);
    return out;
  }

  /// Forward on raw contiguous arrays of the block's device: u, out (b, l, d_model). See forward().
  void forward_raw(const T* u, index_t b, index_t l, T* out, MambaLayerCache<T>* cache = nullptr,
                   bool resume = false) const {
    const index_t dm = cfg_.d_model;
    if (cache == nullptr) resume = false;
    if (cache != nullptr && (cache->b != b || !resume)) *cache = make_cache(b);
    forward_into(TensorView::of(u, {b, l, dm}, device()), TensorView::of(out, {b, l, dm}, device()),
                 cache_view(cache, &ConvSsmCache::conv_state), cache_view(cache, &ConvSsmCache::ssm_state),
                 resume);
  }

  /// The forward over views on the block's device (the one code path of every device): u, out (b, l, d_model)
  /// contiguous; conv_state (b, d_conv - 1, d_inner) and ssm_state (b, d_inner, n), contiguous, when given receive
  /// the state after the last token, and with `resume` hold the state the sequences start from.
  ///
  /// Activations stay time-major ((b, l, features), as the projections write them): in_proj → causal_conv1d in its
  /// channel-last layout → x_proj (→ rms_norm of δ, B, C: FalconMamba) → dt_proj → selective_scan over channel-last
  /// views of those buffers → out_proj, each an op dispatching by device. On the CPU, threads() threads: the GEMMs
  /// split their output features, the conv its time axis, the scan its operands' copies and (batch, channel block).
  /// Without selective, the scan takes the fixed B, C (d_inner, n) and a zero Δ plus dt_bias; without the gate, no z.
  void forward_into(const TensorView& u, const TensorView& out, const std::optional<TensorView>& conv_state,
                    const std::optional<TensorView>& ssm_state, bool resume) const {
    const index_t di = cfg_.inner(), dm = cfg_.d_model, n = cfg_.d_state, r = cfg_.rank(), w = cfg_.d_conv;
    const index_t b = u.size(0), l = u.size(1), rows = b * l, nx = r + 2 * n, wx = cfg_.in_rows();
    const Device dev = u.device();
    const DType dt = dtype_of<T>();
    const Params P = views();
    const int nt = cpu::cpu_threads(threads_, rows * di * n);
    if (!conv_state || !ssm_state) resume = false;
    Tensor xz = Tensor::empty({b, l, wx}, dt, dev);  // (b, l, 2 di): x, then z; (b, l, di) without the gate
    project(P.in_proj, u.reshape({rows, dm}), P.in_proj_bias, xz.view().reshape({rows, wx}), nt);
    Tensor xc = Tensor::empty({b, l, di}, dt, dev);  // (b, l, di) conv + SiLU output
    {
      CausalConv1dInputs ci;
      ci.x = part(xz, 0, {b, l, di}, {l * wx, wx, 1});  // the x half
      ci.weight = P.conv_weight;
      ci.bias = P.conv_bias;
      ci.silu = true;
      ci.channel_last = true;
      ci.num_threads = nt;
      if (resume) ci.initial_state = *conv_state;
      Tensor unused;  // (b, w - 1, di) the final state when no cache is filled
      if (!conv_state) unused = Tensor::empty({b, w - 1, di}, dt, dev);
      causal_conv1d_into(ci, xc, conv_state ? *conv_state : unused.view());
    }
    Tensor dbc, delta;  // (b, l, r + 2n): δ, B, C; (b, l, di) Δ before the bias and softplus
    if (cfg_.selective) {
      dbc = Tensor::empty({b, l, nx}, dt, dev);
      project(P.x_proj, xc.view().reshape({rows, di}), std::nullopt, dbc.view().reshape({rows, nx}), nt);
      if (cfg_.bcdt_rms_eps)
        detail::normalize_dbc(dbc.view().reshape({rows, nx}), r, n, *cfg_.bcdt_rms_eps, P.dbc_norm);
      delta = Tensor::empty({b, l, di}, dt, dev);
      project(P.dt_proj, part(dbc, 0, {rows, r}, {nx, 1}), std::nullopt, delta.view().reshape({rows, di}), nt);
    } else {
      delta = Tensor::zeros({b, l, di}, dt, dev);  // Δ = softplus(0 + dt_bias) at every step
    }
    Tensor y = Tensor::empty({b, l, di}, dt, dev);  // (b, l, di) gated scan output
    {
      // The scan reads its (b, d, l) operands as channel-last views of the time-major buffers.
      SelectiveScanInputs in;
      in.u = part(xc, 0, {b, di, l}, {l * di, 1, di});
      in.delta = part(delta, 0, {b, di, l}, {l * di, 1, di});
      if (cfg_.gated) in.z = part(xz, di, {b, di, l}, {l * 2 * di, 1, 2 * di});
      if (cfg_.selective) {
        in.B = part(dbc, r, {b, n, l}, {l * nx, 1, nx});
        in.C = part(dbc, r + n, {b, n, l}, {l * nx, 1, nx});
      } else {
        in.B = *P.B;
        in.C = *P.C;
      }
      in.A = P.A;
      in.D = P.D;
      in.delta_bias = P.dt_bias;
      in.delta_softplus = true;
      Tensor h;  // (b, di, n) the last state, when it replaces the initial one
      std::optional<TensorView> last = ssm_state;
      if (resume) {
        in.initial_state = *ssm_state;
        h = Tensor::empty({b, di, n}, dt, dev);
        last = h.view();
      }
      SelectiveScanOptions opt;
      opt.num_threads = nt;
      selective_scan_into(in, part(y, 0, {b, di, l}, {l * di, 1, di}), last, opt);
      if (h.defined()) copy(*ssm_state, h);
    }
    project(P.out_proj, y.view().reshape({rows, di}), P.out_proj_bias, out.reshape({rows, dm}), nt);
  }

  /// One token for b sequences: u (b, d_model) → returns (b, d_model); the cache (b sequences) is
  /// advanced by one token. Cost independent of how many tokens came before.
  Tensor step(const TensorView& u, MambaLayerCache<T>& cache) const {
    Checker c("MambaBlock::step");
    c.defined("u", u).rank("u", u, 2);
    c.shape("u", u, {cache.b, cfg_.d_model});
    c.require(u.dtype() == dtype_of<T>(), "u", "expected dtype ", name(dtype_of<T>()), ", got ", name(u.dtype()));
    c.device("u", u, device());
    c.require(u.is_contiguous(), "u", "expected a contiguous tensor, got strides ", u.strides().str());
    check_cache(cache);
    Tensor out = Tensor::empty({cache.b, cfg_.d_model}, dtype_of<T>(), device());  // (b, d_model)
    Tensor work = Tensor::empty({workspace_size(cache.b)}, dtype_of<T>(), device());
    step_into(u, out, cache.conv_state, cache.ssm_state, work);
    return out;
  }

  /// Number of T elements step_raw needs as scratch for b sequences.
  index_t workspace_size(index_t b) const {
    const index_t di = cfg_.inner(), n = cfg_.d_state, r = cfg_.rank();
    return b * (2 * di + di + (r + 2 * n) + di + di);
  }

  /// step() on raw arrays of the block's device: u, out (b, d_model) with b = cache.b; work: workspace_size(b)
  /// elements. Allocates no buffers (the ops run on views of `work` and the cache), except in a block with selective
  /// off, whose step is a one-token forward (step_into).
  void step_raw(const T* u, T* out, MambaLayerCache<T>& cache, T* work) const {
    const index_t b = cache.b;
    step_into(TensorView::of(u, {b, cfg_.d_model}, device()), TensorView::of(out, {b, cfg_.d_model}, device()),
              cache.conv_state, cache.ssm_state, TensorView::of(work, {workspace_size(b)}, device()));
  }

  /// The one-token step over views on the block's device: u, out (b, d_model); conv_state (b, d_conv - 1, d_inner)
  /// and ssm_state (b, d_inner, n), contiguous, advanced in place; work: workspace_size(b) contiguous elements.
  /// The same ops as forward_into with l = 1, the scan being ssm::selective_state_update (mamba's
  /// selective_state_update). A block with selective off (whose B and C are per channel, which the state update does
  /// not take) runs forward_into over the one token from the cache instead, allocating its buffers.
  void step_into(const TensorView& u, const TensorView& out, const TensorView& conv_state, const TensorView& ssm_state,
                 const TensorView& work) const {
    const index_t di = cfg_.inner(), dm = cfg_.d_model, n = cfg_.d_state, r = cfg_.rank();
    const index_t b = u.size(0), nx = r + 2 * n, wx = cfg_.in_rows();
    if (!cfg_.selective) {
      forward_into(u.reshape({b, 1, dm}), out.reshape({b, 1, dm}), conv_state, ssm_state, /*resume=*/true);
      return;
    }
    const Params P = views();
    // Decoding: the four products are split over the threads like any other (the pool's workers are parked
    // between calls, so a split costs a wake-up, not a thread start).
    const int nt = cpu::cpu_threads(threads_, b * dm * di * 3);
    const TensorView xz = part(work, 0, {b, wx}, {wx, 1});                          // (b, 2 di) or (b, di)
    const TensorView xc = part(work, b * 2 * di, {b, di}, {di, 1});                // (b, di)
    const TensorView dbc = part(work, b * 3 * di, {b, nx}, {nx, 1});               // (b, r + 2n)
    const TensorView delta = part(work, b * (3 * di + nx), {b, di}, {di, 1});      // (b, di)
    const TensorView y = part(work, b * (4 * di + nx), {b, di}, {di, 1});          // (b, di)
    project(P.in_proj, u, P.in_proj_bias, xz, nt);
    {
      // conv1d over one token, its state advanced in place.
      CausalConv1dInputs ci;
      ci.x = part(xz, 0, {b, 1, di}, {wx, wx, 1});
      ci.weight = P.conv_weight;
      ci.bias = P.conv_bias;
      ci.silu = true;
      ci.channel_last = true;
      ci.initial_state = conv_state;
      causal_conv1d_into(ci, xc.reshape({b, 1, di}), conv_state);
    }
    project(P.x_proj, xc, std::nullopt, dbc, nt);
    if (cfg_.bcdt_rms_eps) detail::normalize_dbc(dbc, r, n, *cfg_.bcdt_rms_eps, P.dbc_norm);
    project(P.dt_proj, part(dbc, 0, {b, r}, {nx, 1}), std::nullopt, delta, nt);
    SelectiveStateUpdateInputs su;
    su.state = ssm_state;
    su.x = xc;
    su.dt = delta;
    su.A = P.A;
    su.B = part(dbc, r, {b, n}, {nx, 1});
    su.C = part(dbc, r + n, {b, n}, {nx, 1});
    su.D = P.D;
    if (cfg_.gated) su.z = part(xz, di, {b, di}, {2 * di, 1});
    su.dt_bias = P.dt_bias;
    su.dt_softplus = true;
    selective_state_update(su, y);
    project(P.out_proj, y, P.out_proj_bias, out, nt);
  }

  /// Backward of forward() from a zero state: given u (b, l, d_model) and grad_out (b, l, d_model),
  /// returns grad_u and the gradient of every parameter. Recomputes the forward activations; the scan's
  /// gradients come from ssm::selective_scan_backward, restarting its chunks from the states the recomputed
  /// forward saved (save_chunk_states).
  MambaBlockGrads<T> backward(const TensorView& u, const TensorView& grad_out) const {
    Checker c("MambaBlock::backward");
    SSM_CHECK(device().is_cpu() && u.device().is_cpu(), "MambaBlock::backward: ", (device().is_cpu() ? u.device() : device()).str(),
              " tensors are not supported yet (the backward runs on the CPU: use a block on the CPU)");
    c.defined("u", u).rank("u", u, 3).shape("u", u, {kAny, kAny, cfg_.d_model});
    c.shape("grad_out", grad_out, {u.size(0), u.size(1), cfg_.d_model});
    for (const auto& [nm, t] : {std::pair<const char*, const TensorView*>{"u", &u}, {"grad_out", &grad_out}}) {
      c.require(t->dtype() == dtype_of<T>(), nm, "expected dtype ", name(dtype_of<T>()), ", got ", name(t->dtype()));
      c.require(t->device().is_cpu() && t->is_contiguous(), nm, "expected a contiguous cpu tensor");
    }
    return backward_raw(u.data_as<const T>(), grad_out.data_as<const T>(), u.size(0), u.size(1));
  }

  MambaBlockGrads<T> backward_raw(const T* u, const T* grad_out, index_t b, index_t l) const {
    SSM_CHECK(device().is_cpu(), "MambaBlock::backward: ", device().str(),
              " tensors are not supported yet (the backward runs on the CPU: use a block on the CPU)");
    SSM_CHECK(!m_.any(), "MambaBlock::backward: this block holds projections as weight matrices (", m_.dtypes(),
              "; MambaLM keeps a checkpoint's f16 / bf16 weights unless LoadOptions::weight_dtype says f32), and "
              "backward needs them as f32 parameters: load the model with weight_dtype = DType::f32, or build a "
              "block from full_params()");
    check_sizes("MambaBlock::backward", /*strict=*/true);
    const index_t di = cfg_.inner(), dm = cfg_.d_model, n = cfg_.d_state, r = cfg_.rank(), w = cfg_.d_conv;
    const index_t rows = b * l, nx = r + 2 * n, wx = cfg_.in_rows();
    const bool sel = cfg_.selective;
    MambaBlockGrads<T> g;
    g.params = MambaBlockParams<T>::zeros(cfg_);
    auto& gp = g.params;
    g.grad_u.assign(static_cast<std::size_t>(rows * dm), T(0));
    // ---- recompute the forward ----
    std::vector<T> xz(static_cast<std::size_t>(rows * wx));  // (b, l, 2 di), or (b, l, di) without the gate
    linear_forward(u, p_.in_proj_weight.data(), bias_or_null(p_.in_proj_bias), xz.data(), rows, dm, wx);
    std::vector<T> x(static_cast<std::size_t>(rows * di));     // (b, l, di) conv input
    std::vector<T> xc(static_cast<std::size_t>(rows * di));    // (b, l, di)
    std::vector<T> dbc(static_cast<std::size_t>(sel ? rows * nx : 0));  // (b, l, r + 2n); empty when not selective
    std::vector<T> dt(static_cast<std::size_t>(rows * di), T(0));       // (b, l, di); zero when not selective
    const Conv1dArgs<T> conv{l, di, w, p_.conv_weight.data(), bias_or_null(p_.conv_bias), true};
    for (index_t bi = 0; bi < b; ++bi) {
      for (index_t t = 0; t < l; ++t)
        std::copy_n(xz.data() + (bi * l + t) * wx, di, x.data() + (bi * l + t) * di);
      conv1d_forward(conv, x.data() + bi * l * di, static_cast<const T*>(nullptr), xc.data() + bi * l * di,
                     static_cast<T*>(nullptr));
    }
    std::vector<T> dbc_raw;  // (b, l, r + 2n) x_proj's output before FalconMamba's normalization
    if (sel) {
      linear_forward(xc.data(), p_.x_proj_weight.data(), static_cast<const T*>(nullptr), dbc.data(), rows, di, nx);
      if (cfg_.bcdt_rms_eps) {
        dbc_raw = dbc;
        const std::optional<TensorView> w[3] = {optional_view(p_.dt_norm_weight), optional_view(p_.b_norm_weight),
                                                optional_view(p_.c_norm_weight)};
        detail::normalize_dbc(strided_rows(dbc.data(), rows, nx, nx), r, n, *cfg_.bcdt_rms_eps, w);
      }
      linear_forward(dbc.data(), p_.dt_proj_weight.data(), static_cast<const T*>(nullptr), dt.data(), rows, r, di, nx);
    }
    // ---- selective scan (forward again, for out_proj's input) ----
    detail::ScanOperands<T> ops(b, l, di, n, r, xc.data(), dt.data(), cfg_.gated ? xz.data() : nullptr,
                                sel ? dbc.data() : nullptr);
    Tensor A_fresh;  // (di, n) when A_log changed since refresh()
    const TensorView A = host_A(A_fresh);
    const SelectiveScanInputs in = scan_inputs(ops, A, b, l);
    SelectiveScanOptions opt;
    opt.num_threads = threads_;
    std::vector<T> cm(ops.u.size());  // (b, di, l) channel-major scratch
    SelectiveScanOptions fwd_opt = opt;
    fwd_opt.save_chunk_states = true;  // the scan backward restarts from them instead of a first pass
    Tensor chunk_states;               // (b, di, ceil(l / 128), n)
    selective_scan_into(in, TensorView::of(cm.data(), {b, di, l}), std::nullopt, fwd_opt, &chunk_states);
    if (chunk_states.defined()) opt.chunk_states = chunk_states.view();
    std::vector<T> y(static_cast<std::size_t>(rows * di));  // (b, l, di) gated scan output
    for (index_t bi = 0; bi < b; ++bi) cpu::to_time_major(cm.data() + bi * di * l, l, di, y.data() + bi * l * di, 0, di);
    // ---- out_proj ----
    std::vector<T> grad_y(static_cast<std::size_t>(rows * di));  // (b, l, di)
    linear_backward(y.data(), p_.out_proj_weight.data(), grad_out, grad_y.data(), gp.out_proj_weight.data(),
                    bias_or_null_mut(gp.out_proj_bias), rows, di, dm);
    // ---- selective scan backward (ssm::selective_scan_backward, docs/math.md §5.3) ----
    for (index_t bi = 0; bi < b; ++bi) cpu::to_channel_major(grad_y.data() + bi * l * di, l, di, cm.data() + bi * di * l, 0, di);
    const SelectiveScanGrads sg = selective_scan_backward(in, TensorView::of(cm.data(), {b, di, l}), std::nullopt, opt);
    std::vector<T> grad_xz(static_cast<std::size_t>(rows * wx), T(0));              // like xz
    std::vector<T> grad_xc(static_cast<std::size_t>(rows * di));                    // (b, l, di)
    std::vector<T> grad_dbc(static_cast<std::size_t>(sel ? rows * nx : 0), T(0));   // (b, l, r + 2n)
    std::vector<T> grad_dt(static_cast<std::size_t>(sel ? rows * di : 0));          // (b, l, di) w.r.t. dt_proj output
    for (index_t bi = 0; bi < b; ++bi) {
      const index_t o = bi * l;
      cpu::to_time_major(sg.grad_u.data_as<T>() + bi * di * l, l, di, grad_xc.data() + o * di, 0, di);
      if (cfg_.gated)
        cpu::to_time_major(sg.grad_z.data_as<T>() + bi * di * l, l, 2 * di, grad_xz.data() + o * 2 * di + di, 0, di);
      if (!sel) continue;
      cpu::to_time_major(sg.grad_delta.data_as<T>() + bi * di * l, l, di, grad_dt.data() + o * di, 0, di);
      cpu::to_time_major(sg.grad_B.data_as<T>() + bi * n * l, l, nx, grad_dbc.data() + o * nx + r, 0, n);
      cpu::to_time_major(sg.grad_C.data_as<T>() + bi * n * l, l, nx, grad_dbc.data() + o * nx + r + n, 0, n);
    }
    const T* grad_A = sg.grad_A.data_as<T>();  // (di, n)
    const T* A_values = A.data_as<const T>();
    for (std::size_t i = 0; i < gp.A_log.size(); ++i) gp.A_log[i] = grad_A[i] * A_values[i];  // A = −exp(A_log)
    std::copy_n(sg.grad_D.data_as<T>(), di, gp.D.data());
    std::copy_n(sg.grad_delta_bias.data_as<T>(), di, gp.dt_proj_bias.data());
    if (!sel) {  // the fixed B and C: the scan's (d, n) gradients; Δ's only through dt_bias
      std::copy_n(sg.grad_B.data_as<T>(), di * n, gp.B.data());
      std::copy_n(sg.grad_C.data_as<T>(), di * n, gp.C.data());
    } else {
      // ---- dt_proj and x_proj ----
      // grad of δ (the first r columns of dbc) from dt_proj; grad_dbc's B, C columns came from the scan.
      linear_backward(dbc.data(), p_.dt_proj_weight.data(), grad_dt.data(), grad_dbc.data(), gp.dt_proj_weight.data(),
                      static_cast<T*>(nullptr), rows, r, di, nx, di, nx);
      if (cfg_.bcdt_rms_eps) {
        // Through FalconMamba's normalizations: grad_dbc so far is w.r.t. the normalized δ, B, C.
        std::vector<T> g(grad_dbc.size());  // (b, l, r + 2n)
        const double eps = *cfg_.bcdt_rms_eps;
        const std::vector<T>* w[3] = {&p_.dt_norm_weight, &p_.b_norm_weight, &p_.c_norm_weight};
        std::vector<T>* gw[3] = {&gp.dt_norm_weight, &gp.b_norm_weight, &gp.c_norm_weight};
        const std::pair<index_t, index_t> parts[3] = {{0, r}, {r, n}, {r + n, n}};
        for (int i = 0; i < 3; ++i)
          rmsnorm_backward(dbc_raw.data() + parts[i].first, bias_or_null(*w[i]), grad_dbc.data() + parts[i].first,
                           g.data() + parts[i].first, bias_or_null_mut(*gw[i]), rows, parts[i].second, eps, nx);
        grad_dbc.swap(g);
      }
      std::vector<T> grad_xc_proj(static_cast<std::size_t>(rows * di));  // (b, l, di)
      linear_backward(xc.data(), p_.x_proj_weight.data(), grad_dbc.data(), grad_xc_proj.data(),
                      gp.x_proj_weight.data(), static_cast<T*>(nullptr), rows, di, nx);
      for (std::size_t i = 0; i < grad_xc.size(); ++i) grad_xc[i] += grad_xc_proj[i];
    }
    // ---- conv1d (+ SiLU) ----
    std::vector<T> grad_x(static_cast<std::size_t>(l * di));  // (l, di)
    for (index_t bi = 0; bi < b; ++bi) {
      conv1d_backward(conv, x.data() + bi * l * di, static_cast<const T*>(nullptr), grad_xc.data() + bi * l * di,
                      static_cast<const T*>(nullptr), grad_x.data(), static_cast<T*>(nullptr), gp.conv_weight.data(),
                      bias_or_null_mut(gp.conv_bias));
      for (index_t t = 0; t < l; ++t)
        std::copy_n(grad_x.data() + t * di, di, grad_xz.data() + (bi * l + t) * wx);
    }
    // ---- in_proj ----
    linear_backward(u, p_.in_proj_weight.data(), grad_xz.data(), g.grad_u.data(), gp.in_proj_weight.data(),
                    bias_or_null_mut(gp.in_proj_bias), rows, dm, wx);
    return g;
  }

  /// The thread count set by set_threads (0: automatic).
  int threads() const { return threads_; }

  /// Threads forward() and backward()'s scan may use (0, the default: the hardware threads, fewer for a small
  /// problem; see ssm::cpu::cpu_threads).
  void set_threads(int threads) {
    SSM_CHECK(threads >= 0, "MambaBlock::set_threads: threads must be >= 0, got ", threads);
    threads_ = threads;
  }

  /// Throws when the cache does not fit this block (its shapes, dtype and device).
  void check_cache(const MambaLayerCache<T>& cache) const {
    const index_t di = cfg_.inner(), w = cfg_.d_conv, n = cfg_.d_state, b = cache.b;
    SSM_CHECK(cache.matches({b, w - 1, di}, {b, di, n}, dtype_of<T>(), device()),
              "MambaBlock: cache does not match the block (b = ", b, ", ", cache.describe(), "; expected contiguous ",
              name(dtype_of<T>()), " (b, ", w - 1, ", ", di, ") and (b, ", di, ", ", n, ") on ", device().str(), ")");
  }

 private:
  // Every parameter vector has its config's size (or is empty and held in m_). Checked at construction and by every
  // CPU call, since params() hands them out to be changed. With `strict` (construction, backward): also no non-empty
  // vector the config does not have (a bias with bias off), which the training walk (for_each(f)) would otherwise
  // name without a gradient to match.
  void check_sizes(const char* op, bool strict = false) const {
    std::size_t expected = 0;
    p_.for_each(cfg_, [&](const char* name, const std::vector<T>& v, const Dims& s) {
      if (!(v.empty() && held(name))) check_parameter_size(op, name, v, s);
      expected += !v.empty();
    });
    if (!strict) return;
    std::size_t present = 0;
    p_.for_each([&](const char*, const std::vector<T>&) { ++present; });
    SSM_CHECK(present == expected, op, ": ", present - expected, " parameter vector(s) are given that the config does "
              "not have (in_proj / out_proj biases need bias, conv1d.bias conv_bias, the δ / B / C norm weights "
              "bcdt_norm_weights, x_proj / dt_proj weights need selective, B and C selective off)");
  }

  // A = −exp(A_log) (di, n) on the CPU: refresh()'s cache while A_log is what it was made from, else computed into
  // `fresh` (an optimizer changed A_log in place through params()).
  TensorView host_A(Tensor& fresh) const {
    const index_t di = cfg_.inner(), n = cfg_.d_state;
    if (p_.A_log == A_log_cached_) return TensorView::of(A_.data(), {di, n});
    fresh = Tensor::empty({di, n}, dtype_of<T>());
    T* a = fresh.data_as<T>();
    for (std::size_t i = 0; i < p_.A_log.size(); ++i) a[i] = -std::exp(p_.A_log[i]);
    return fresh.view();
  }

  // The op's inputs over channel-major operands (A = −exp(A_log), D, Δ bias, softplus).
  SelectiveScanInputs scan_inputs(detail::ScanOperands<T>& ops, const TensorView& A, index_t b, index_t l) const {
    const index_t di = cfg_.inner(), n = cfg_.d_state;
    SelectiveScanInputs in;
    in.u = TensorView::of(ops.u.data(), {b, di, l});
    in.delta = TensorView::of(ops.delta.data(), {b, di, l});
    if (cfg_.gated) in.z = TensorView::of(ops.z.data(), {b, di, l});
    const bool fixed = !cfg_.selective;  // B and C (di, n) parameters
    in.B = fixed ? TensorView::of(p_.B.data(), {di, n}) : TensorView::of(ops.B.data(), {b, n, l});
    in.C = fixed ? TensorView::of(p_.C.data(), {di, n}) : TensorView::of(ops.C.data(), {b, n, l});
    in.A = A;
    in.D = TensorView::of(p_.D.data(), {di});
    in.delta_bias = TensorView::of(p_.dt_proj_bias.data(), {di});
    in.delta_softplus = true;
    return in;
  }

  // The parameters as the ops read them: views on the block's device (the projections: the WeightMatrix when held,
  // else the params' vector; A = −exp(A_log)).
  struct Params {
    TensorView in_proj, x_proj, dt_proj, out_proj;  // (out, in) each; x_proj, dt_proj unset when not selective
    TensorView conv_weight, dt_bias, A, D;           // (di, w), (di), (di, n), (di)
    std::optional<TensorView> in_proj_bias, conv_bias, out_proj_bias;
    std::optional<TensorView> B, C;         // (di, n) each when not selective
    std::optional<TensorView> dbc_norm[3];  // Jamba's δ, B, C norm weights (r), (n), (n)
    Tensor A_fresh;                         // what A views when A_log changed since refresh() (host_A)
  };
  // The parameters on a device other than the CPU (to()).
  struct DeviceParams {
    Device device;
    Tensor in_proj, x_proj, dt_proj, out_proj, conv_weight, dt_bias, A, D, in_proj_bias, conv_bias, out_proj_bias;
    Tensor B, C;
    Tensor dbc_norm[3];
  };
  Params views() const {
    if (dev_) {
      const DeviceParams& d = *dev_;
      Params P;
      P.in_proj = d.in_proj, P.out_proj = d.out_proj;
      if (cfg_.selective) P.x_proj = d.x_proj, P.dt_proj = d.dt_proj;
      P.B = optional_view(d.B), P.C = optional_view(d.C);
      P.conv_weight = d.conv_weight, P.dt_bias = d.dt_bias, P.A = d.A, P.D = d.D;
      P.in_proj_bias = optional_view(d.in_proj_bias), P.conv_bias = optional_view(d.conv_bias);
      P.out_proj_bias = optional_view(d.out_proj_bias);
      for (int i = 0; i < 3; ++i) P.dbc_norm[i] = optional_view(d.dbc_norm[i]);
      return P;
    }
    check_sizes("MambaBlock");
    const index_t di = cfg_.inner(), dm = cfg_.d_model, n = cfg_.d_state, r = cfg_.rank(), w = cfg_.d_conv;
    auto matrix = [](const WeightMatrix& m, const std::vector<T>& v, const Dims& s) {
      return m.empty() ? TensorView::of(v.data(), s) : TensorView(m.tensor());
    };
    Params P;
    P.in_proj = matrix(m_.in_proj, p_.in_proj_weight, {cfg_.in_rows(), dm});
    if (cfg_.selective) {
      P.x_proj = matrix(m_.x_proj, p_.x_proj_weight, {r + 2 * n, di});
      P.dt_proj = matrix(m_.dt_proj, p_.dt_proj_weight, {di, r});
    } else {
      P.B = TensorView::of(p_.B.data(), {di, n});
      P.C = TensorView::of(p_.C.data(), {di, n});
    }
    P.out_proj = matrix(m_.out_proj, p_.out_proj_weight, {dm, di});
    P.conv_weight = TensorView::of(p_.conv_weight.data(), {di, w});
    P.dt_bias = TensorView::of(p_.dt_proj_bias.data(), {di});
    P.A = host_A(P.A_fresh);
    P.D = TensorView::of(p_.D.data(), {di});
    P.in_proj_bias = optional_view(p_.in_proj_bias);
    P.conv_bias = optional_view(p_.conv_bias);
    P.out_proj_bias = optional_view(p_.out_proj_bias);
    P.dbc_norm[0] = optional_view(p_.dt_norm_weight);
    P.dbc_norm[1] = optional_view(p_.b_norm_weight);
    P.dbc_norm[2] = optional_view(p_.c_norm_weight);
    return P;
  }

  // The cache's tensor `member` as a view, or none without a cache.
  static std::optional<TensorView> cache_view(ConvSsmCache* cache, Tensor ConvSsmCache::*member) {
    if (cache == nullptr) return std::nullopt;
    return (cache->*member).view();
  }

  // Whether parameter `name` (a MambaBlockParams name) is held in m_.
  bool held(const std::string& name) const {
    const WeightMatrix* w = m_.find(name);
    return w != nullptr && !w->empty();
  }

  static const T* bias_or_null(const std::vector<T>& v) { return v.empty() ? nullptr : v.data(); }
  static T* bias_or_null_mut(std::vector<T>& v) { return v.empty() ? nullptr : v.data(); }

  MambaBlockConfig cfg_;
  MambaBlockParams<T> p_;
  MambaBlockMatrices m_;  // projections held as weight matrices (empty: in p_)
  std::vector<T> A_;             // (d_inner, n) = −exp(A_log), made by refresh()
  std::vector<T> A_log_cached_;  // (d_inner, n) the A_log A_ was made from
  int threads_ = 0;
  std::shared_ptr<const DeviceParams> dev_;  // the parameters on device() when not the CPU (to())
};

}  // namespace ssm::layers
