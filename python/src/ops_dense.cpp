// The smaller ops: causal_conv1d (+ backward), attention (+ backward), rms_norm, linear, long_conv and glu; arrays in
// as views, results out as capsules.
#include <nanobind/stl/string.h>

#include "arrays.hpp"
#include "bindings.hpp"
#include "options.hpp"
#include "ssm/attention.hpp"
#include "ssm/ops/causal_conv1d.hpp"
#include "ssm/ops/glu.hpp"
#include "ssm/ops/linear.hpp"
#include "ssm/ops/long_conv.hpp"
#include "ssm/ops/rms_norm.hpp"

namespace ssm::python {

namespace {

using namespace nb::literals;

CausalConv1dInputs conv_inputs(const char* op, const Array& x, const Array& weight, const OptArray& bias,
                               const OptArray& initial_state, bool silu) {
  CausalConv1dInputs in;
  in.x = view(op, "x", x);
  in.weight = view(op, "weight", weight);
  in.bias = view(op, "bias", bias);
  in.initial_state = view(op, "initial_state", initial_state);
  in.silu = silu;
  return in;
}

nb::tuple conv_forward(const Array& x, const Array& weight, const OptArray& bias, const OptArray& initial_state,
                       bool silu) {
  const CausalConv1dInputs in = conv_inputs("causal_conv1d", x, weight, bias, initial_state, silu);
  CausalConv1dOutputs r;
  {
    nb::gil_scoped_release unlocked;
    r = causal_conv1d(in);
  }
  return nb::make_tuple(capsule(r.out), capsule(r.final_state), r.path);
}

nb::tuple conv_backward(const Array& x, const Array& weight, const Array& grad_out, const OptArray& bias,
                        const OptArray& initial_state, const OptArray& grad_final_state, bool silu) {
  const char* op = "causal_conv1d_backward";
  const CausalConv1dInputs in = conv_inputs(op, x, weight, bias, initial_state, silu);
  const TensorView g = view(op, "grad_out", grad_out);
  const std::optional<TensorView> gf = view(op, "grad_final_state", grad_final_state);
  CausalConv1dGrads r;
  {
    nb::gil_scoped_release unlocked;
    r = causal_conv1d_backward(in, g, gf);
  }
  return nb::make_tuple(capsule(r.grad_x), capsule(r.grad_weight), capsule(r.grad_bias),
                        capsule(r.grad_initial_state));
}

AttentionOptions attention_options(const char* op, bool causal, double scale, const std::string& algorithm,
                                   int n_threads) {
  AttentionOptions opt;
  opt.causal = causal;
  opt.scale = scale;
  opt.algorithm = choice<AttentionAlgorithm>(
      op, "algorithm", algorithm,
      {{"tiled", AttentionAlgorithm::tiled}, {"materialized", AttentionAlgorithm::materialized}});
  opt.n_threads = n_threads;
  return opt;
}

nb::tuple attention(const Array& q, const Array& k, const Array& v, bool causal, double scale,
                    const std::string& algorithm, int n_threads) {
  const char* op = "attention_forward";
  const TensorView qv = view(op, "q", q), kv = view(op, "k", k), vv = view(op, "v", v);
  const AttentionOptions opt = attention_options(op, causal, scale, algorithm, n_threads);
  AttentionResult r;
  {
    nb::gil_scoped_release unlocked;
    r = attention_forward(qv, kv, vv, opt);
  }
  return nb::make_tuple(capsule(r.out), capsule(r.lse));
}

nb::tuple attention_grads(const Array& q, const Array& k, const Array& v, const Array& out, const Array& lse,
                          const Array& grad_out, bool causal, double scale, const std::string& algorithm,
                          int n_threads) {
  const char* op = "attention_backward";
  const TensorView qv = view(op, "q", q), kv = view(op, "k", k), vv = view(op, "v", v);
  const TensorView ov = view(op, "out", out), lv = view(op, "lse", lse), gv = view(op, "grad_out", grad_out);
  const AttentionOptions opt = attention_options(op, causal, scale, algorithm, n_threads);
  Checker(op).rank("q", qv, 4).rank("k", kv, 4).rank("v", vv, 4);  // before the gradients take their shapes
  Tensor gq = Tensor::empty(qv.shape(), qv.dtype(), qv.device());  // (b, l_q, h, p)
  Tensor gk = Tensor::empty(kv.shape(), kv.dtype(), kv.device());  // (b, l_k, h_kv, p)
  Tensor gvv = Tensor::empty(vv.shape(), vv.dtype(), vv.device());  // (b, l_k, h_kv, p)
  {
    nb::gil_scoped_release unlocked;
    attention_backward(qv, kv, vv, ov, lv, gv, gq, gk, gvv, opt);
  }
  return nb::make_tuple(capsule(gq), capsule(gk), capsule(gvv));
}

nb::object rms_norm_op(const Array& x, const OptArray& weight, double eps, const std::string& path) {
  const char* op = "rms_norm";
  RmsNormInputs in;
  in.x = view(op, "x", x);
  in.weight = view(op, "weight", weight);
  in.eps = eps;
  const RmsNormPath p =
      choice<RmsNormPath>(op, "path", path, {{"automatic", RmsNormPath::automatic}, {"reference", RmsNormPath::reference}});
  Tensor y;
  {
    nb::gil_scoped_release unlocked;
    y = rms_norm(in, p);
  }
  return capsule(y);
}

nb::object linear_op(const Array& x, const Array& weight, const OptArray& bias, const std::string& path,
                     int num_threads) {
  const char* op = "linear";
  LinearInputs in;
  in.x = view(op, "x", x);
  in.weight = view(op, "weight", weight);
  in.bias = view(op, "bias", bias);
  LinearOptions opt;
  opt.path = choice<LinearPath>(op, "path", path, {{"automatic", LinearPath::automatic}, {"reference", LinearPath::reference}});
  opt.num_threads = num_threads;
  Tensor y;
  {
    nb::gil_scoped_release unlocked;
    y = linear(in, opt);
  }
  return capsule(y);
}

nb::tuple long_conv_op(const Array& x, const Array& K, const OptArray& D, const OptArray& gate_in,
                       const OptArray& gate_out, const std::string& activation, const std::string& path, int threads) {
  const char* op = "long_conv";
  LongConvInputs in;
  in.x = view(op, "x", x);
  in.K = view(op, "K", K);
  in.D = view(op, "D", D);
  in.gate_in = view(op, "gate_in", gate_in);
  in.gate_out = view(op, "gate_out", gate_out);
  LongConvOptions opt;
  opt.activation = choice<LongConvActivation>(op, "activation", activation,
                                              {{"none", LongConvActivation::none}, {"gelu", LongConvActivation::gelu}});
  opt.path = choice<LongConvPath>(op, "path", path,
                                  {{"automatic", LongConvPath::automatic}, {"reference", LongConvPath::reference}});
  opt.threads = threads;
  const Tensor y = Tensor::empty(in.x.shape(), in.x.dtype(), in.x.device());  // (b, l, h) on x's device
  std::string ran;
  {
    nb::gil_scoped_release unlocked;
    ran = long_conv_into(in, y, opt);
  }
  return nb::make_tuple(capsule(y), ran);
}

nb::object glu_op(const Array& z, const std::string& path) {
  const char* op = "glu";
  const TensorView zv = view(op, "z", z);
  const GluPath p =
      choice<GluPath>(op, "path", path, {{"automatic", GluPath::automatic}, {"reference", GluPath::reference}});
  Tensor y;
  {
    nb::gil_scoped_release unlocked;
    y = glu(zv, p);
  }
  return capsule(y);
}

}  // namespace

void bind_dense(nb::module_& m) {
  m.def("causal_conv1d", &conv_forward, "x"_a, "weight"_a, nb::kw_only(), "bias"_a = nb::none(),
        "initial_state"_a = nb::none(), "silu"_a = true,
        "Causal depthwise conv1d. x (b, d, l); weight (d, w); bias (d); initial_state (b, d, w - 1). Returns (out, "
        "final_state, path).");
  m.def("causal_conv1d_backward", &conv_backward, "x"_a, "weight"_a, "grad_out"_a, nb::kw_only(),
        "bias"_a = nb::none(), "initial_state"_a = nb::none(), "grad_final_state"_a = nb::none(), "silu"_a = true,
        "Gradients of causal_conv1d. Returns (grad_x, grad_weight, grad_bias, grad_initial_state).");
  m.def("attention", &attention, "q"_a, "k"_a, "v"_a, nb::kw_only(), "causal"_a = true, "scale"_a = 0.0,
        "algorithm"_a = "tiled", "n_threads"_a = 0,
        "Scaled dot-product attention. q (b, l_q, h, p); k, v (b, l_k, h_kv, p). Returns (out, lse).");
  m.def("attention_backward", &attention_grads, "q"_a, "k"_a, "v"_a, "out"_a, "lse"_a, "grad_out"_a, nb::kw_only(),
        "causal"_a = true, "scale"_a = 0.0, "algorithm"_a = "tiled", "n_threads"_a = 0,
        "Gradients of attention. Returns (grad_q, grad_k, grad_v).");
  m.def("rms_norm", &rms_norm_op, "x"_a, "weight"_a = nb::none(), nb::kw_only(), "eps"_a = 1e-5,
        "path"_a = "automatic", "RMSNorm over the last dimension. x (rows, dim); weight (dim). Returns y.");
  m.def("linear", &linear_op, "x"_a, "weight"_a, "bias"_a = nb::none(), nb::kw_only(), "path"_a = "automatic",
        "num_threads"_a = 1, "y = x weight^T + bias. x (rows, in); weight (out, in); bias (out). Returns y.");
  m.def("long_conv", &long_conv_op, "x"_a, "K"_a, "D"_a = nb::none(), nb::kw_only(), "gate_in"_a = nb::none(),
        "gate_out"_a = nb::none(), "activation"_a = "none", "path"_a = "automatic", "threads"_a = 0,
        "y = gate_out * act(K * u + D u), u = gate_in * x, a causal convolution per channel. x, gates (b, l, h); K "
        "(h, L >= l); D (h). Returns (y, path).");
  m.def("glu", &glu_op, "z"_a, nb::kw_only(), "path"_a = "automatic",
        "y = z[:, :h] * sigmoid(z[:, h:]). z (rows, 2h). Returns y (rows, h).");
}

}  // namespace ssm::python
