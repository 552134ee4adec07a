// rms_norm (ops/rms_norm.hpp): r = x + residual (stored back into residual) or r = x, y = r / sqrt(mean(r²) + eps) ⊙
// weight, per row. The CPU path and the CUDA kernel against the op's reference loops in double: f64 and f32, one
// element, widths below, across and far beyond the kernel's 128 threads, strided x, y and residual, weight and
// residual present or absent, y written over x (in place), no rows. The residual is an output here: the harness
// copies the case's residual into the guarded buffer and the op updates it in place.
#include <string>
#include <vector>

#include "../registry.hpp"
#include "ssm/ops/rms_norm.hpp"

namespace conformance {
namespace {

struct NormShape {
  index_t rows, dim;
  bool weight, residual, in_place;
  index_t pad;  // > 0: x, y and the residual with rows pad elements apart beyond their length
};

const NormShape& shape_of(const Case& c) { return *std::any_cast<NormShape>(&c.params); }

std::vector<Case> norm_cases() {
  const NormShape shapes[] = {
      {1, 1, true, true, false, 0},      // every size 1
      {3, 37, true, true, false, 3},     // odd width, strided
      {5, 300, true, false, false, 0},   // wider than the block, ragged, no residual
      {2, 1000, false, true, false, 5},  // no weight, many elements per thread, strided
      {4, 129, true, true, true, 2},     // y over x (in place), one past the block
      {0, 7, true, true, false, 0},      // no rows
  };
  std::vector<Case> cases;
  std::mt19937_64 rng(31);
  for (const NormShape& s : shapes) {
    for (DType dt : {DType::f64, DType::f32}) {
      Case c;
      c.name = "rows=" + std::to_string(s.rows) + " dim=" + std::to_string(s.dim) + (s.weight ? " weight" : "") +
               (s.residual ? " residual" : "") + (s.in_place ? " in-place" : "") + (s.pad ? " strided" : "") + " " +
               std::string(ssm::name(dt));
      const Tensor x = uniform(rng, {s.rows, s.dim}, dt, -2, 2);  // (rows, dim)
      c.inputs.push_back(s.pad ? strided_arg("x", x, s.pad) : dense_arg("x", x));
      if (s.weight) c.inputs.push_back(dense_arg("weight", uniform(rng, {s.dim}, dt, 0.5, 1.5)));  // (dim)
      if (s.residual) c.inputs.push_back(dense_arg("residual", uniform(rng, {s.rows, s.dim}, dt, -2, 2)));
      const Dims strides = s.pad ? Dims{s.dim + s.pad, 1} : Dims{};
      c.outputs.push_back({"y", {s.rows, s.dim}, dt, strides});  // (rows, dim)
      if (s.residual) c.outputs.push_back({"residual", {s.rows, s.dim}, dt, strides});  // (rows, dim) updated
      c.params = s;
      cases.push_back(std::move(c));
    }
  }
  return cases;
}

/// The op's inputs with the residual (copied into out[1]) and, in place, x (copied into y = out[0]).
ssm::RmsNormInputs norm_inputs(const Case& c, const Views& in, const Views& out) {
  const NormShape& s = shape_of(c);
  ssm::RmsNormInputs r;
  r.x = named(c, in, "x");
  if (s.weight) r.weight = named(c, in, "weight");
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

void norm_forward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  const bool reference = cfg.path == "reference";
  const std::string path = ssm::rms_norm_into(norm_inputs(c, in, out.views), out.views[0],
                                              reference ? ssm::RmsNormPath::reference : ssm::RmsNormPath::automatic);
  EXPECT_EQ(path, cfg.device.is_cuda() ? "cuda" : (reference ? "reference" : "cpu"));
}

void norm_forward_reference(const Case& c, const Views& in, const Views& out) {
  ssm::rms_norm_into(norm_inputs(c, in, out), out[0], ssm::RmsNormPath::reference);
}

std::string norm_unsupported(const Case&, const RunConfig&, Pass) { return {}; }

/// The residual add is one rounding of the output dtype; y adds a sum of at most 1000 squares (sequential or
/// tree-ordered in f32: its relative error stays below 1000 · 2^-24 ≈ 6e-5 in the worst case, 1e-6 for random
/// signs), halved by the square root: f32 2e-5 of the largest output, f64 1e-12.
double norm_tolerance(DType dt, Pass) { return dt == DType::f64 ? 1e-12 : 2e-5; }

const Register reg{Op{"rms_norm", {"reference", "fast"}, true, norm_cases, norm_unsupported, norm_forward, nullptr,
                      norm_forward_reference, nullptr, norm_tolerance}};

}  // namespace
}  // namespace conformance
