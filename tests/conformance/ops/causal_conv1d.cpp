// Conformance registration of the causal conv1d (ops/causal_conv1d.hpp): its CPU loops and CUDA kernels against the
// plain double reference of include/ssm/reference/causal_conv1d.hpp (before: only against the layers' own conv).
#include <string>
#include <vector>

#include "../registry.hpp"
#include "ssm/ops/causal_conv1d.hpp"
#include "ssm/reference/causal_conv1d.hpp"

namespace conformance {
namespace {

struct ConvShape {
  index_t b, d, l, w;
  bool bias, init, silu;
  index_t pad;  // > 0: x and out with rows pad elements apart beyond l (channel-last: beyond d)
  bool cl = false;  // the channel-last layout: x, out (b, l, d) over time-major memory, the states (b, w - 1, d)
};

const ConvShape& shape_of(const Case& c) { return *std::any_cast<ConvShape>(&c.params); }

std::vector<Case> conv_cases() {
  const ConvShape shapes[] = {
      {1, 1, 1, 2, true, true, true, 0},      // every size 1
      {2, 5, 37, 4, true, true, true, 3},     // odd sizes, strided x and out
      {1, 3, 2, 4, false, true, false, 0},    // l < w - 1: the final state partly from the initial state
      {2, 3, 0, 3, true, false, true, 0},     // an empty sequence: the final state is the initial (zero) one
      {1, 2, 1100, 3, true, true, true, 0},   // several kernel tiles, a ragged last one
      {2, 4, 50, 7, false, false, true, 0},   // a width the kernels do not take (CPU only)
      // channel-last (forward only): x a column slice of wider rows, several blocks of channels and of steps with
      // ragged ends, l < w - 1 (the final state from the initial state), an empty sequence, one step
      {2, 5, 37, 4, true, true, true, 3, true},
      {1, 130, 150, 3, true, true, true, 1, true},
      {2, 3, 2, 4, false, true, false, 0, true},
      {2, 3, 0, 3, true, true, true, 0, true},
      {3, 7, 1, 4, true, true, true, 5, true},
  };
  std::vector<Case> cases;
  std::mt19937_64 rng(11);
  for (const ConvShape& s : shapes) {
    for (DType dt : {DType::f64, DType::f32, DType::f16, DType::bf16}) {
      const DType w = ssm::compute_dtype(dt);
      Case c;
      c.name = "b=" + std::to_string(s.b) + " d=" + std::to_string(s.d) + " l=" + std::to_string(s.l) +
               " w=" + std::to_string(s.w) + (s.bias ? " bias" : "") + (s.init ? " init" : "") +
               (s.silu ? " silu" : "") + (s.pad ? " strided" : "") + (s.cl ? " channel-last" : "") + " " +
               std::string(ssm::name(dt));
      const Tensor x = uniform(rng, {s.b, s.d, s.l}, dt, -1, 1);  // (b, d, l)
      if (s.cl) {  // the op sees (b, l, d) with unit stride along d, rows d + pad apart
        Arg a{"x", Tensor(), TensorView()};
        a.view = swap12(time_major_copy(x, s.pad, a.owner));
        c.inputs.push_back(a);
      } else {
        c.inputs.push_back(s.pad ? strided_arg("x", x, s.pad) : dense_arg("x", x));
      }
      c.inputs.push_back(dense_arg("weight", uniform(rng, {s.d, s.w}, w, -1, 1)));  // (d, w)
      if (s.bias) c.inputs.push_back(dense_arg("bias", uniform(rng, {s.d}, w, -1, 1)));  // (d)
      const Dims state = s.cl ? Dims{s.b, s.w - 1, s.d} : Dims{s.b, s.d, s.w - 1};
      if (s.init) c.inputs.push_back(dense_arg("initial_state", uniform(rng, state, w, -1, 1)));
      if (s.cl) {
        OutSpec out{"out", {s.b, s.l, s.d}, dt, {s.l * (s.d + s.pad), s.d + s.pad, 1}};  // (b, l, d)
        c.outputs = {out, {"final_state", state, w}};                                    // (b, w - 1, d)
        c.params = s;
        cases.push_back(std::move(c));
        continue;
      }
      c.inputs.push_back(dense_arg("grad_out", uniform(rng, {s.b, s.d, s.l}, dt, -1, 1)));  // (b, d, l)
      if (s.init)  // the gradient of the final state with the initial state present, zero without
        c.inputs.push_back(dense_arg("grad_final_state", uniform(rng, {s.b, s.d, s.w - 1}, w, -1, 1)));
      OutSpec out{"out", {s.b, s.d, s.l}, dt};  // (b, d, l)
      if (s.pad) out.strides = {s.d * (s.l + s.pad + 2), s.l + s.pad + 2, 1};
      c.outputs = {out, {"final_state", {s.b, s.d, s.w - 1}, w}};  // (b, d, w - 1)
      c.grads = {{"grad_x", {s.b, s.d, s.l}, dt}, {"grad_weight", {s.d, s.w}, w, {}, true}};
      if (s.bias) c.grads.push_back({"grad_bias", {s.d}, w, {}, true});
      if (s.init) c.grads.push_back({"grad_initial_state", {s.b, s.d, s.w - 1}, w});
      c.params = s;
      cases.push_back(std::move(c));
    }
  }
  return cases;
}

ssm::CausalConv1dInputs conv_inputs(const Case& c, const Views& in) {
  ssm::CausalConv1dInputs r;
  r.x = named(c, in, "x");
  r.weight = named(c, in, "weight");
  r.bias = optional_view(named(c, in, "bias"));
  r.initial_state = optional_view(named(c, in, "initial_state"));
  r.silu = shape_of(c).silu;
  r.channel_last = shape_of(c).cl;
  return r;
}

void conv_forward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  EXPECT_EQ(ssm::causal_conv1d_into(conv_inputs(c, in), out.views[0], out.views[1]),
            cfg.device.is_cpu() ? (shape_of(c).cl ? "cpu-channel-last" : "cpu-loops") : "cuda");
}

/// The op's backward: its allocating form (the only one), the outputs adopted (compared, not guarded).
void conv_backward(const Case& c, const Views& in, Outputs& out, const RunConfig&) {
  const ssm::CausalConv1dInputs ci = conv_inputs(c, in);
  const TensorView grad_out = named(c, in, "grad_out");
  const std::optional<TensorView> grad_final = optional_view(named(c, in, "grad_final_state"));
  ssm::CausalConv1dGrads r = ssm::causal_conv1d_backward(ci, grad_out, grad_final);
  out.adopt(0, r.grad_x);
  out.adopt(1, r.grad_weight);
  if (ci.bias) out.adopt(2, r.grad_bias);
  if (ci.initial_state) out.adopt(out.views.size() - 1, r.grad_initial_state);
}

ssm::reference::Conv1dDims dims_of(const Case& c) {
  const ConvShape& s = shape_of(c);
  return {s.b, s.d, s.l, s.w, s.silu};
}

/// The named input's values as doubles, or null when absent (`store` keeps them).
const std::vector<double>* values_or_null(const Case& c, const Views& in, const std::string& n,
                                          std::vector<double>& store) {
  const TensorView v = named(c, in, n);
  if (!v.defined()) return nullptr;
  store = to_doubles(v);
  return &store;
}

/// The reference's values (b, d, ·) of a channel-last view (b, ·, d): the view with its last two dimensions swapped.
TensorView channel_major(const Case& c, const TensorView& v) { return shape_of(c).cl && v.defined() ? swap12(v) : v; }

/// values (b, d, k) into a contiguous host tensor `dst` of shape (b, d, k), or (b, k, d) in the channel-last layout.
void write_channel_major(const Case& c, const TensorView& dst, const std::vector<double>& values) {
  if (!shape_of(c).cl) return from_doubles(dst, values);
  const TensorView t = swap12(dst);  // (b, d, k) over dst
  Tensor tmp = Tensor::empty(t.shape(), t.dtype());
  from_doubles(tmp, values);
  ssm::copy(t, tmp);
}

void conv_forward_reference(const Case& c, const Views& in, const Views& out) {
  std::vector<double> bias, init, o, fs;
  const TensorView h0 = channel_major(c, named(c, in, "initial_state"));
  if (h0.defined()) init = to_doubles(h0);
  ssm::reference::causal_conv1d_forward(dims_of(c), to_doubles(channel_major(c, named(c, in, "x"))),
                                        to_doubles(named(c, in, "weight")), values_or_null(c, in, "bias", bias),
                                        h0.defined() ? &init : nullptr, o, fs);
  write_channel_major(c, out[0], o);
  write_channel_major(c, out[1], fs);
}

void conv_backward_reference(const Case& c, const Views& in, const Views& out) {
  std::vector<double> bias, init, gfs, gx, gw, gb, gh0;
  ssm::reference::causal_conv1d_backward(
      dims_of(c), to_doubles(named(c, in, "x")), to_doubles(named(c, in, "weight")), values_or_null(c, in, "bias", bias),
      values_or_null(c, in, "initial_state", init), to_doubles(named(c, in, "grad_out")),
      values_or_null(c, in, "grad_final_state", gfs), gx, gw, gb, gh0);
  from_doubles(out[0], gx);
  from_doubles(out[1], gw);
  if (shape_of(c).bias) from_doubles(out[2], gb);
  if (shape_of(c).init) from_doubles(out.back(), gh0);
}

std::string conv_unsupported(const Case& c, const RunConfig& cfg, Pass) {
  const DType dt = c.inputs[0].view.dtype();
  if (cfg.emulated || cfg.device.is_cuda()) {
    if (dt == DType::f64) return "f64 has no CUDA kernel";
    if (shape_of(c).w > 4) return "the CUDA kernels take widths 2..4";
  } else if (dt == DType::f16 || dt == DType::bf16) {
    return "the CPU loops take f32 / f64";
  }
  return {};
}

/// Forward: a sum of at most w + 1 products per output, a few ulp (f64 1e-12, f32 2e-6); f16 / bf16 outputs one ulp
/// of their type (2^-11, 2^-8). Backward: grad_weight / grad_bias sum over b * l terms (f32: 1e-5).
double conv_tolerance(DType dt, Pass pass) {
  switch (dt) {
    case DType::f64: return 1e-12;
    case DType::f16: return 1e-3;
    case DType::bf16: return 8e-3;
    default: return pass == Pass::forward ? 2e-6 : 1e-5;
  }
}

const Register reg{Op{"causal_conv1d", {"loops"}, true, conv_cases, conv_unsupported, conv_forward, conv_backward,
                      conv_forward_reference, conv_backward_reference, conv_tolerance}};

}  // namespace
}  // namespace conformance
