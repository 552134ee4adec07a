// glu (ops/glu.hpp): y[r, c] = z[r, c] σ(z[r, h + c]), the S4 layers' gelu_glu output. The CPU path (one pass in the
// compute type) and the CUDA kernel (one thread per output) against the reference in double: f64 and f32, one
// output, strided z and y, more outputs than one block holds (ragged), gates far in both tails of the sigmoid, no rows.
#include <string>
#include <vector>

#include "../registry.hpp"
#include "ssm/ops/glu.hpp"

namespace conformance {
namespace {

struct GluShape {
  index_t rows, h, pad;  // pad > 0: z and y with pad elements after every row
  double gate_range;     // gates uniform in ±gate_range
};

std::vector<Case> glu_cases() {
  const GluShape shapes[] = {
      {1, 1, 0, 2},     // one output
      {7, 10, 3, 4},    // strided
      {33, 64, 0, 40},  // 2112 outputs: 9 blocks of 256, the last ragged; σ saturated at both ends
      {0, 5, 0, 2},     // no rows
  };
  std::vector<Case> cases;
  std::mt19937_64 rng(47);
  for (const GluShape& s : shapes)
    for (DType dt : {DType::f64, DType::f32}) {
      Case c;
      c.name = "rows=" + std::to_string(s.rows) + " h=" + std::to_string(s.h) + (s.pad ? " strided" : "") +
               " gates=±" + std::to_string(static_cast<int>(s.gate_range)) + " " + std::string(ssm::name(dt));
      Tensor z = uniform(rng, {s.rows, 2 * s.h}, dt, -2, 2);  // (rows, 2h): values, then gates
      std::uniform_real_distribution<double> gate(-s.gate_range, s.gate_range);
      for (index_t r = 0; r < s.rows; ++r)
        for (index_t k = s.h; k < 2 * s.h; ++k) set_element(z, r * 2 * s.h + k, gate(rng));
      c.inputs.push_back(s.pad ? strided_arg("z", z, s.pad) : dense_arg("z", z));
      c.outputs.push_back({"y", {s.rows, s.h}, dt, s.pad ? Dims{s.h + s.pad, 1} : Dims{}});
      c.params = s;
      cases.push_back(std::move(c));
    }
  return cases;
}

void glu_forward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  const bool reference = cfg.path == "reference";
  const std::string path =
      ssm::glu_into(named(c, in, "z"), out.views[0], reference ? ssm::GluPath::reference : ssm::GluPath::automatic);
  EXPECT_EQ(path, cfg.device.is_cuda() ? "cuda" : (reference ? "reference" : "cpu"));
}

void glu_forward_reference(const Case& c, const Views& in, const Views& out) {
  ssm::glu_into(named(c, in, "z"), out[0], ssm::GluPath::reference);
}

std::string glu_unsupported(const Case&, const RunConfig&, Pass) { return {}; }

/// One exp, a division and a product in the compute type: a few units of its last place (f32 1e-6, f64 1e-15).
double glu_tolerance(DType dt, Pass) { return dt == DType::f64 ? 1e-15 : 1e-6; }

const Register reg{Op{"glu", {"reference", "fast"}, true, glu_cases, glu_unsupported, glu_forward, nullptr,
                      glu_forward_reference, nullptr, glu_tolerance}};

}  // namespace
}  // namespace conformance
