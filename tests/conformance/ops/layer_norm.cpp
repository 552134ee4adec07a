// layer_norm (ops/layer_norm.hpp): y = (x − mean) / sqrt(var + eps) ⊙ weight + bias, per row. The CPU path against
// the op's reference loops in double: f64 and f32, one element, odd and wide rows, strided x and y, weight and bias
// present or absent, rows of nearly equal values (the variance far below the mean's square), y written over x (in
// place), no rows; with a residual (residual += x, the sum normalized), which is an output here: the harness copies
// the case's residual into the guarded buffer and the op updates it in place.
#include <string>
#include <vector>

#include "../registry.hpp"
#include "ssm/ops/layer_norm.hpp"

namespace conformance {
namespace {

struct LnShape {
  index_t rows, dim;
  bool weight, bias, in_place;
  index_t pad;         // > 0: x and y with rows pad elements apart beyond their length
  double offset = 0;   // added to every x: a mean far above the spread
  bool residual = false;
};

const LnShape& shape_of(const Case& c) { return *std::any_cast<LnShape>(&c.params); }

std::vector<Case> ln_cases() {
  const LnShape shapes[] = {
      {1, 1, true, true, false, 0},         // every size 1 (the row is its mean: y = bias)
      {3, 37, true, true, false, 3},        // odd width, strided
      {5, 300, true, false, false, 0},      // no bias
      {2, 1000, false, true, false, 5},     // no weight, strided
      {4, 129, false, false, true, 2},      // neither, y over x (in place)
      {3, 64, true, true, false, 0, 50.0},  // values 50 ± 2: the two-pass variance
      {0, 7, true, true, false, 0},         // no rows
      {3, 37, true, true, false, 3, 0, true},   // a residual, strided
      {4, 129, true, false, true, 0, 0, true},  // a residual, y over x
  };
  std::vector<Case> cases;
  std::mt19937_64 rng(41);
  for (const LnShape& s : shapes)
    for (DType dt : {DType::f64, DType::f32}) {
      Case c;
      c.name = "rows=" + std::to_string(s.rows) + " dim=" + std::to_string(s.dim) + (s.weight ? " weight" : "") +
               (s.bias ? " bias" : "") + (s.in_place ? " in-place" : "") + (s.pad ? " strided" : "") +
               (s.offset != 0 ? " offset" : "") + (s.residual ? " residual" : "") + " " + std::string(ssm::name(dt));
      const Tensor x = uniform(rng, {s.rows, s.dim}, dt, s.offset - 2, s.offset + 2);  // (rows, dim)
      c.inputs.push_back(s.pad ? strided_arg("x", x, s.pad) : dense_arg("x", x));
      if (s.weight) c.inputs.push_back(dense_arg("weight", uniform(rng, {s.dim}, dt, 0.5, 1.5)));  // (dim)
      if (s.bias) c.inputs.push_back(dense_arg("bias", uniform(rng, {s.dim}, dt, -1, 1)));        // (dim)
      c.outputs.push_back({"y", {s.rows, s.dim}, dt, s.pad ? Dims{s.dim + s.pad, 1} : Dims{}});  // (rows, dim)
      if (s.residual) {
        c.inputs.push_back(dense_arg("residual", uniform(rng, {s.rows, s.dim}, dt, -2, 2)));  // (rows, dim)
        c.outputs.push_back({"residual", {s.rows, s.dim}, dt, s.pad ? Dims{s.dim + s.pad, 1} : Dims{}});  // updated
      }
      c.params = s;
      cases.push_back(std::move(c));
    }
  return cases;
}

/// The op's inputs with the residual (copied into out[1]); in place, x copied into y = out[0] first.
ssm::LayerNormInputs ln_inputs(const Case& c, const Views& in, const Views& out) {
  const LnShape& s = shape_of(c);
  ssm::LayerNormInputs r;
  r.x = named(c, in, "x");
  if (s.weight) r.weight = named(c, in, "weight");
  if (s.bias) r.bias = named(c, in, "bias");
  if (s.residual) {
    ssm::copy(out[1], named(c, in, "residual"));
    r.residual = out[1];
  }
  if (s.in_place) {
    ssm::copy(out[0], r.x);
    r.x = out[0];
  }
  r.eps = 1e-5;
  return r;
}

void ln_forward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  const bool reference = cfg.path == "reference";
  const std::string path = ssm::layer_norm_into(ln_inputs(c, in, out.views), out.views[0],
                                                reference ? ssm::LayerNormPath::reference : ssm::LayerNormPath::automatic);
  EXPECT_EQ(path, reference ? "reference" : "cpu");
}

void ln_forward_reference(const Case& c, const Views& in, const Views& out) {
  ssm::layer_norm_into(ln_inputs(c, in, out), out[0], ssm::LayerNormPath::reference);
}

std::string ln_unsupported(const Case&, const RunConfig&, Pass) { return {}; }

/// Sums of at most 1000 terms in f32 in order (relative error below 1e-6 for these random rows; the two-pass variance
/// keeps the offset rows' spread exact to f32's rounding of x): f32 1e-5 of the largest output, f64 1e-12.
double ln_tolerance(DType dt, Pass) { return dt == DType::f64 ? 1e-12 : 1e-5; }

const Register reg{Op{"layer_norm", {"reference", "fast"}, false, ln_cases, ln_unsupported, ln_forward, nullptr,
                      ln_forward_reference, nullptr, ln_tolerance}};

}  // namespace
}  // namespace conformance
