// linear (ops/linear.hpp): y (rows, out) = x (rows, in) Wᵀ + bias. The CPU fast path (Eigen GEMM / GEMV, the f16 /
// bf16 weight kernels) and the CUDA entry (cuBLAS on a GPU, the emulation's host GEMM and the bias kernel under it)
// and its 16-bit weight kernel) against the op's reference loops in double: f64 and f32 activations, f32 activations
// with f16 / bf16 weights, one row (GEMV) and many, strided x and y, bias present or absent, no rows.
#include <string>
#include <vector>

#include "../registry.hpp"
#include "ssm/ops/linear.hpp"

namespace conformance {
namespace {

struct LinearShape {
  index_t rows, in, out;
  bool bias;
  index_t pad;  // > 0: x and y with rows pad elements apart beyond their length
};

const LinearShape& shape_of(const Case& c) { return *std::any_cast<LinearShape>(&c.params); }

std::vector<Case> linear_cases() {
  const LinearShape shapes[] = {
      {1, 1, 1, false, 0},    // every size 1
      {1, 37, 19, true, 3},   // one row (the GEMV), odd widths, strided x and y
      {7, 33, 17, true, 0},   // a few rows, widths off the SIMD width
      {33, 64, 40, false, 5}, // many rows (the GEMM / panel kernels), strided
      {1, 61, 13, false, 2},  // one row, widths with a whole vector and a scalar tail past 16 lanes
      {2, 61, 13, true, 2},   // two rows (the 2 x 4 tiles), strided x and y
      {0, 5, 3, true, 0},     // no rows
  };
  struct Types {
    DType x, weight;
  };
  const Types types[] = {{DType::f64, DType::f64}, {DType::f32, DType::f32}, {DType::f32, DType::f16},
                         {DType::f32, DType::bf16}};
  std::vector<Case> cases;
  std::mt19937_64 rng(23);
  for (const LinearShape& s : shapes) {
    for (const Types& t : types) {
      Case c;
      c.name = "rows=" + std::to_string(s.rows) + " in=" + std::to_string(s.in) + " out=" + std::to_string(s.out) +
               (s.bias ? " bias" : "") + (s.pad ? " strided" : "") + " x " + std::string(ssm::name(t.x)) + " W " +
               std::string(ssm::name(t.weight));
      const Tensor x = uniform(rng, {s.rows, s.in}, t.x, -1, 1);  // (rows, in)
      c.inputs.push_back(s.pad ? strided_arg("x", x, s.pad) : dense_arg("x", x));
      c.inputs.push_back(dense_arg("weight", uniform(rng, {s.out, s.in}, t.weight, -1, 1)));  // (out, in)
      if (s.bias) c.inputs.push_back(dense_arg("bias", uniform(rng, {s.out}, t.x, -1, 1)));  // (out)
      OutSpec y{"y", {s.rows, s.out}, t.x};  // (rows, out)
      if (s.pad) y.strides = {s.out + s.pad, 1};
      c.outputs.push_back(y);
      c.params = s;
      cases.push_back(std::move(c));
    }
  }
  return cases;
}

ssm::LinearInputs linear_inputs(const Case& c, const Views& in) {
  ssm::LinearInputs r;
  r.x = in[0];
  r.weight = in[1];
  if (shape_of(c).bias) r.bias = in[2];
  return r;
}

void linear_forward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  ssm::LinearOptions opt;
  opt.num_threads = cfg.threads;
  const std::string path = ssm::linear_into(linear_inputs(c, in), out.views[0], opt);
  EXPECT_NE(path, "reference") << "the fast path was asked for";
}

void linear_forward_reference(const Case& c, const Views& in, const Views& out) {
  ssm::LinearOptions opt;
  opt.path = ssm::LinearPath::reference;
  ssm::linear_into(linear_inputs(c, in), out[0], opt);
}

std::string linear_unsupported(const Case&, const RunConfig&, Pass) { return {}; }

/// Sums of at most 64 products accumulated in f32 by the fast path, in double by the reference: f32 1e-5 of the
/// largest output (16-bit weights are converted exactly on both sides); f64 1e-12.
double linear_tolerance(DType dt, Pass) { return dt == DType::f64 ? 1e-12 : 1e-5; }

const Register reg{Op{"linear", {"fast"}, true, linear_cases, linear_unsupported, linear_forward, nullptr,
                      linear_forward_reference, nullptr, linear_tolerance}};

}  // namespace
}  // namespace conformance
