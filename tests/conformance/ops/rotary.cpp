// rotary (ops/rotary.hpp): channel pair i of the token at position pos rotated by pos · base^(−2i / d). The CPU path
// (cos and sin tabulated in the compute type) and the CUDA kernel (one thread per token and pair, over the heads)
// against the op's reference in double: f64 and f32, the smallest pair, interleaved and split pairs, position
// offsets (far ones: angles of 10^5 radians), positions mod a period (TTT's mini-batch), strided x and y, y written
// over x (in place), no steps, the inverse rotation (the backward), more (token, pair) threads than one block holds.
#include <string>
#include <vector>

#include "../registry.hpp"
#include "ssm/ops/rotary.hpp"

namespace conformance {
namespace {

struct RotShape {
  index_t b, l, h, d;
  bool interleaved, in_place;
  index_t offset, period, pad;  // pad > 0: x and y with pad elements after every head's row
  bool inverse = false;         // the rotation's backward (by −angle)
};

const RotShape& shape_of(const Case& c) { return *std::any_cast<RotShape>(&c.params); }

std::vector<Case> rot_cases() {
  const RotShape shapes[] = {
      {1, 1, 1, 2, true, false, 0, 0, 0},        // one pair at position 0: y = x
      {2, 9, 3, 8, true, false, 0, 4, 0},        // positions mod 4 (TTT)
      {1, 17, 2, 16, false, false, 5, 0, 3},     // split pairs, an offset, strided
      {2, 6, 2, 64, true, true, 100000, 0, 0},   // in place, far positions
      {1, 12, 1, 6, false, true, 3, 5, 2},       // in place, strided, offset and period
      {1, 0, 2, 4, true, false, 0, 0, 0},        // no steps
      {2, 9, 3, 8, true, false, 0, 4, 0, true},  // the inverse, positions mod 4 (TTT's backward)
      {1, 17, 2, 16, false, true, 5, 0, 3, true},  // the inverse, split pairs, in place, strided
      {3, 40, 2, 24, false, false, 7, 0, 1},       // 1440 (token, pair) threads: 6 blocks, the last one ragged
  };
  std::vector<Case> cases;
  std::mt19937_64 rng(43);
  for (const RotShape& s : shapes)
    for (DType dt : {DType::f64, DType::f32}) {
      Case c;
      c.name = "b=" + std::to_string(s.b) + " l=" + std::to_string(s.l) + " h=" + std::to_string(s.h) +
               " d=" + std::to_string(s.d) + (s.interleaved ? " interleaved" : " split") +
               (s.offset ? " offset=" + std::to_string(s.offset) : "") +
               (s.period ? " period=" + std::to_string(s.period) : "") + (s.in_place ? " in-place" : "") +
               (s.pad ? " strided" : "") + (s.inverse ? " inverse" : "") + " " + std::string(ssm::name(dt));
      const Tensor x = uniform(rng, {s.b, s.l, s.h, s.d}, dt, -2, 2);  // (b, l, h, d)
      c.inputs.push_back(s.pad ? strided_arg("x", x, s.pad) : dense_arg("x", x));
      const index_t row = s.d + s.pad;
      c.outputs.push_back({"y", {s.b, s.l, s.h, s.d}, dt, s.pad ? Dims{s.l * s.h * row, s.h * row, row, 1} : Dims{}});
      c.params = s;
      cases.push_back(std::move(c));
    }
  return cases;
}

ssm::RotaryOptions rot_options(const RotShape& s) {
  ssm::RotaryOptions o;
  o.interleaved = s.interleaved, o.position_offset = s.offset, o.period = s.period, o.inverse = s.inverse;
  return o;
}

/// x, or in place: x copied into y = out[0] first.
TensorView rot_input(const Case& c, const Views& in, const Views& out) {
  if (!shape_of(c).in_place) return named(c, in, "x");
  ssm::copy(out[0], named(c, in, "x"));
  return out[0];
}

void rot_forward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  const bool reference = cfg.path == "reference";
  const std::string path = ssm::rotary_into(rot_input(c, in, out.views), out.views[0], rot_options(shape_of(c)),
                                            reference ? ssm::RotaryPath::reference : ssm::RotaryPath::automatic);
  EXPECT_EQ(path, cfg.device.is_cuda() ? "cuda" : (reference ? "reference" : "cpu"));
}

void rot_forward_reference(const Case& c, const Views& in, const Views& out) {
  ssm::rotary_into(rot_input(c, in, out), out[0], rot_options(shape_of(c)), ssm::RotaryPath::reference);
}

std::string rot_unsupported(const Case&, const RunConfig&, Pass) { return {}; }

/// The CPU path rounds cos and sin to the compute type once and adds two products: a few units of the last place of
/// the largest output (f32 2e-6, f64 1e-14).
double rot_tolerance(DType dt, Pass) { return dt == DType::f64 ? 1e-14 : 2e-6; }

/// The kernel's f64 angle differs from the reference's: it is reduced in turns (about pos · 2^-52 radians of
/// rounding, 2e-11 at the case's position 10^5), and a GPU's pow may round θ_i an ulp or two away from the host's, as
/// much again: 1e-10 (a wrong position or pair moves the output by O(1)). f32 as on the CPU.
double rot_device_tolerance(DType dt, Pass pass) { return dt == DType::f64 ? 1e-10 : rot_tolerance(dt, pass); }

const Register reg{Op{"rotary", {"reference", "fast"}, true, rot_cases, rot_unsupported, rot_forward, nullptr,
                      rot_forward_reference, nullptr, rot_tolerance, rot_device_tolerance}};

}  // namespace
}  // namespace conformance
