// moe (ops/moe.hpp): the sparse mixture of experts, top-k routing over E SwiGLU experts. The CPU path (tokens grouped by
// expert, two GEMMs per expert, threads across experts or inside their GEMMs) against the op's token loop in double:
// f64 and f32 activations, f32 activations with f16 / bf16 weights, the top-k weights renormalized or not, k from 1 to
// E, one token (decoding) and many, strided x and out, no tokens; the router logits as a second output. The backward
// (the grouped gradient GEMMs against the reference's loops; weights in x's dtype) with a gradient of the router logits
// as the load-balancing loss gives one. The CUDA kernels (cuda_emulated: cuda/kernels/moe.cuh under the host emulation;
// cuda on a GPU) run every forward case; the backward runs on CPU tensors only.
#include <string>
#include <vector>

#include "../registry.hpp"
#include "ssm/ops/moe.hpp"

namespace conformance {
namespace {

struct MoeShape {
  index_t t, H, I, E, k;
  bool normalize;
  index_t pad;  // > 0: x and out with rows pad elements apart beyond their length
};

const MoeShape& shape_of(const Case& c) { return *std::any_cast<MoeShape>(&c.params); }

std::vector<Case> moe_cases() {
  const MoeShape shapes[] = {
      {1, 1, 1, 1, 1, false, 0},    // every size 1 (one expert: its weight is 1)
      {1, 19, 13, 4, 2, false, 3},  // one token (decoding), strided
      {29, 24, 10, 6, 2, true, 0},  // many tokens, Mixtral's renormalized weights
      {40, 17, 9, 5, 5, false, 2},  // every expert chosen, strided
      {33, 16, 8, 8, 1, true, 0},   // top-1 renormalized: weight 1
      {0, 8, 4, 3, 2, false, 0},    // no tokens
  };
  struct Types {
    DType x, weight;
  };
  const Types types[] = {{DType::f64, DType::f64}, {DType::f32, DType::f32}, {DType::f32, DType::f16},
                         {DType::f32, DType::bf16}};
  std::vector<Case> cases;
  std::mt19937_64 rng(41);
  for (const MoeShape& s : shapes)
    for (const Types& ty : types) {
      Case c;
      c.name = "t=" + std::to_string(s.t) + " H=" + std::to_string(s.H) + " I=" + std::to_string(s.I) +
               " E=" + std::to_string(s.E) + " k=" + std::to_string(s.k) + (s.normalize ? " normalized" : "") +
               (s.pad ? " strided" : "") + " x " + std::string(ssm::name(ty.x)) + " W " +
               std::string(ssm::name(ty.weight));
      const Tensor x = uniform(rng, {s.t, s.H}, ty.x, -1, 1);  // (t, H)
      c.inputs.push_back(s.pad ? strided_arg("x", x, s.pad) : dense_arg("x", x));
      c.inputs.push_back(dense_arg("router", uniform(rng, {s.E, s.H}, ty.weight, -1, 1)));             // (E, H)
      c.inputs.push_back(dense_arg("w_gate_up", uniform(rng, {s.E, 2 * s.I, s.H}, ty.weight, -1, 1)));  // (E, 2I, H)
      c.inputs.push_back(dense_arg("w_down", uniform(rng, {s.E, s.H, s.I}, ty.weight, -1, 1)));         // (E, H, I)
      OutSpec out{"out", {s.t, s.H}, ty.x};  // (t, H)
      if (s.pad) out.strides = {s.H + s.pad, 1};
      c.outputs = {out, {"router_logits", {s.t, s.E}, ty.x}};  // (t, E)
      c.inputs.push_back(dense_arg("grad_out", uniform(rng, {s.t, s.H}, ty.x, -1, 1)));
      c.inputs.push_back(dense_arg("grad_router_logits", uniform(rng, {s.t, s.E}, ty.x, -1, 1)));
      add_input_grads(c, {"x", "router", "w_gate_up", "w_down"});
      c.params = s;
      cases.push_back(std::move(c));
    }
  return cases;
}

ssm::MoeInputs moe_inputs(const Views& in) { return {in[0], in[1], in[2], in[3]}; }

ssm::MoeOptions moe_options(const Case& c, ssm::MoePath path, int threads) {
  ssm::MoeOptions o;
  o.top_k = shape_of(c).k, o.normalize_topk = shape_of(c).normalize, o.path = path, o.threads = threads;
  return o;
}

void moe_forward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  const std::string path =
      ssm::moe_into(moe_inputs(in), out.views[0], out.views[1], moe_options(c, ssm::MoePath::grouped, cfg.threads));
  EXPECT_EQ(path, cfg.device.is_cuda() ? "cuda" : "cpu-grouped");
}

void moe_forward_reference(const Case& c, const Views& in, const Views& out) {
  ssm::moe_into(moe_inputs(in), out[0], out[1], moe_options(c, ssm::MoePath::reference, 1));
}

void moe_backward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  const bool ref = cfg.path == "reference";
  const ssm::MoeGrads r =
      ssm::moe_backward(moe_inputs(in), named(c, in, "grad_out"), named(c, in, "grad_router_logits"),
                        moe_options(c, ref ? ssm::MoePath::reference : ssm::MoePath::grouped, cfg.threads));
  EXPECT_EQ(r.path, ref ? "reference" : "cpu-grouped");
  out.adopt(0, r.grad_x), out.adopt(1, r.grad_router), out.adopt(2, r.grad_w_gate_up), out.adopt(3, r.grad_w_down);
}

void moe_backward_reference(const Case& c, const Views& in, const Views& out) {
  backward_on_reference_path(moe_backward, c, in, out);
}

std::string moe_unsupported(const Case& c, const RunConfig& cfg, Pass pass) {
  if (cfg.device.is_cuda() && pass == Pass::backward) return "the backward runs on CPU tensors only";
  if (pass == Pass::backward && c.inputs[1].view.dtype() != c.inputs[0].view.dtype())
    return "the backward needs the weights in x's dtype";
  return {};
}

/// Sums of at most 2I + H products in f32 against double (16-bit weights are exact on both sides), and the routing
/// weights from the logits (the cases keep every top-k gap far above the logits' rounding): 2e-5 of the largest output
/// in f32 (the gradients' sums over up to 40 tokens included; the CUDA kernels' softmax in f32 as well); f64 1e-12.
double moe_tolerance(DType dt, Pass) { return dt == DType::f64 ? 1e-12 : 2e-5; }

const Register reg{Op{"moe", {"fast"}, true, moe_cases, moe_unsupported, moe_forward, moe_backward,
                      moe_forward_reference, moe_backward_reference, moe_tolerance}};

}  // namespace
}  // namespace conformance
