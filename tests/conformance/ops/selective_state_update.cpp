// selective_state_update (ops/selective_state_update.hpp): one token of the selective scan, the state h (b, d, n)
// updated in place, out (b, d); and the Mamba-2 form, h (b, h, p, n) with dt, A, D, dt_bias per head, B, C per
// group (g = 1, 2, 3), a dt limit that clamps. The CPU path and the CUDA kernel against the op's reference loops in double: f64
// and f32, every size 1, channel counts off the kernel's 16 channels per block, n below, off and above its 8 lanes
// per channel, strided x / dt / z / B / C / out, D, z and dt_bias each present or absent, softplus on and off, no
// batch rows. The state is an output here: the harness copies the case's state into the guarded buffer and the op
// updates it in place.
#include <string>
#include <vector>

#include "../registry.hpp"
#include "ssm/ops/selective_state_update.hpp"

namespace conformance {
namespace {

struct UpdateShape {
  index_t b, d, n;
  bool D, z, dt_bias, softplus;
  index_t pad;  // > 0: the (b, ·) inputs and out with rows pad elements apart beyond their length
  index_t h = 0, g = 1;  // h > 0: the Mamba-2 form, state (b, h, d, n), B and C (b, g, n)
  bool limit = false;    // a dt limit (clamps some steps)
};

const UpdateShape& shape_of(const Case& c) { return *std::any_cast<UpdateShape>(&c.params); }

std::vector<Case> update_cases() {
  const UpdateShape shapes[] = {
      {1, 1, 1, true, true, true, true, 0},       // every size 1
      {2, 37, 16, true, true, true, true, 3},     // Mamba's n, a ragged channel block, strided
      {3, 5, 7, false, false, false, false, 0},   // n off the lanes, no D / z / dt_bias, no softplus
      {1, 20, 33, true, false, true, true, 2},    // n > 4 lanes' worth, no gate
      {2, 17, 4, false, true, false, true, 0},    // n below the lanes
      {0, 4, 3, true, true, true, true, 0},       // no batch rows
      {2, 150, 16, true, true, true, true, 5},    // past the CPU path's blocks of 64 channels, strided
      // Mamba-2: heads and groups
      {2, 8, 16, true, true, true, true, 0, 4, 1, false},   // one group
      {1, 5, 33, true, false, true, true, 0, 6, 2, true},   // two groups, a ragged channel block, a dt limit
      {3, 17, 7, false, true, false, false, 0, 3, 3, false},  // a group per head, no D / dt_bias / softplus
      {2, 1, 4, true, true, true, true, 0, 1, 1, true},     // one head of one channel
      {1, 70, 20, true, true, true, true, 0, 2, 1, true},   // heads of more channels than the CPU path's block
  };
  std::vector<Case> cases;
  std::mt19937_64 rng(41);
  for (const UpdateShape& s : shapes) {
    for (DType dt : {DType::f64, DType::f32}) {
      Case c;
 c.name = (s.h ? "h=" + std::to_string(s.h) + " g=" + std::to_string(s.g) + (s.limit ? " dt_limit " : " ") : "") + "b=" + std::to_string(s.b) + " d=" + std::to_string(s.d) + " n=" + std::to_string(s.n) +
               (s.D ? " D" : "") + (s.z ? " z" : "") + (s.dt_bias ? " dt_bias" : "") + (s.softplus ? " softplus" : "") +
               (s.pad ? " strided" : "") + " " + std::string(ssm::name(dt));
      auto rows = [&](const std::string& nm, index_t cols, double lo, double hi) {
        const Tensor t = uniform(rng, {s.b, cols}, dt, lo, hi);
        c.inputs.push_back(s.pad ? strided_arg(nm, t, s.pad) : dense_arg(nm, t));
      };
      if (s.h > 0) {
        // Mamba-2: state (b, h, d, n); x, z, out (b, h, d); dt (b, h); A, D, dt_bias (h); B, C (b, g, n).
        c.inputs.push_back(dense_arg("state", uniform(rng, {s.b, s.h, s.d, s.n}, dt, -1, 1)));
        c.inputs.push_back(dense_arg("x", uniform(rng, {s.b, s.h, s.d}, dt, -1, 1)));
        if (s.softplus) c.inputs.push_back(dense_arg("dt", uniform(rng, {s.b, s.h}, dt, -2, 1)));
        else c.inputs.push_back(dense_arg("dt", uniform(rng, {s.b, s.h}, dt, 0.01, 0.5)));
        c.inputs.push_back(dense_arg("A", uniform(rng, {s.h}, dt, -1.5, -0.05)));
        c.inputs.push_back(dense_arg("B", uniform(rng, {s.b, s.g, s.n}, dt, -1, 1)));
        c.inputs.push_back(dense_arg("C", uniform(rng, {s.b, s.g, s.n}, dt, -1, 1)));
        if (s.D) c.inputs.push_back(dense_arg("D", uniform(rng, {s.h}, dt, -1, 1)));
        if (s.z) c.inputs.push_back(dense_arg("z", uniform(rng, {s.b, s.h, s.d}, dt, -2, 2)));
        if (s.dt_bias) c.inputs.push_back(dense_arg("dt_bias", uniform(rng, {s.h}, dt, -1, 0.5)));
        c.outputs = {OutSpec{"out", {s.b, s.h, s.d}, dt}, {"state", {s.b, s.h, s.d, s.n}, dt}};
        c.params = s;
        cases.push_back(std::move(c));
        continue;
      }
      c.inputs.push_back(dense_arg("state", uniform(rng, {s.b, s.d, s.n}, dt, -1, 1)));  // (b, d, n)
      rows("x", s.d, -1, 1);                                                                // (b, d)
      if (s.softplus) rows("dt", s.d, -2, 1);  // softplus(dt + dt_bias) > 0
      else rows("dt", s.d, 0.01, 0.5);         // Δ itself
      c.inputs.push_back(dense_arg("A", uniform(rng, {s.d, s.n}, dt, -1.5, -0.05)));  // (d, n)
      rows("B", s.n, -1, 1);                                                           // (b, n)
      rows("C", s.n, -1, 1);                                                           // (b, n)
      if (s.D) c.inputs.push_back(dense_arg("D", uniform(rng, {s.d}, dt, -1, 1)));    // (d)
      if (s.z) rows("z", s.d, -2, 2);                                                  // (b, d)
      if (s.dt_bias) c.inputs.push_back(dense_arg("dt_bias", uniform(rng, {s.d}, dt, -1, 0.5)));  // (d)
      OutSpec out{"out", {s.b, s.d}, dt};  // (b, d)
      if (s.pad) out.strides = {s.d + s.pad, 1};
      c.outputs = {out, {"state", {s.b, s.d, s.n}, dt}};  // (b, d, n) updated in place
      c.params = s;
      cases.push_back(std::move(c));
    }
  }
  return cases;
}

/// The op's inputs, the state copied into out[1] (where the op updates it).
ssm::SelectiveStateUpdateInputs update_inputs(const Case& c, const Views& in, const Views& out) {
  ssm::copy(out[1], named(c, in, "state"));
  ssm::SelectiveStateUpdateInputs r;
  r.state = out[1];
  r.x = named(c, in, "x");
  r.dt = named(c, in, "dt");
  r.A = named(c, in, "A");
  r.B = named(c, in, "B");
  r.C = named(c, in, "C");
  r.D = optional_view(named(c, in, "D"));
  r.z = optional_view(named(c, in, "z"));
  r.dt_bias = optional_view(named(c, in, "dt_bias"));
  r.dt_softplus = shape_of(c).softplus;
  if (shape_of(c).limit) r.dt_limit = std::pair<double, double>{0.2, 0.6};  // clamps at both ends for dt in [-2, 1]
  return r;
}

void update_forward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  const bool reference = cfg.path == "reference";
  const std::string path = ssm::selective_state_update(
      update_inputs(c, in, out.views), out.views[0],
      reference ? ssm::StateUpdatePath::reference : ssm::StateUpdatePath::automatic);
  EXPECT_EQ(path, cfg.device.is_cuda() ? "cuda" : (reference ? "reference" : "cpu"));
}

void update_forward_reference(const Case& c, const Views& in, const Views& out) {
  ssm::selective_state_update(update_inputs(c, in, out), out[0], ssm::StateUpdatePath::reference);
}

std::string update_unsupported(const Case&, const RunConfig&, Pass) { return {}; }

/// Per element an exp, a few products and a sum of at most 33 terms, in the dtype: f32 1e-5 of the largest output
/// (the exp alone is within a few ulp, the sum within 33 · 2^-24 ≈ 2e-6), f64 1e-12.
double update_tolerance(DType dt, Pass) { return dt == DType::f64 ? 1e-12 : 1e-5; }

const Register reg{Op{"selective_state_update", {"reference", "fast"}, true, update_cases, update_unsupported,
                      update_forward, nullptr, update_forward_reference, nullptr, update_tolerance}};

}  // namespace
}  // namespace conformance
