// The SSD op (ops/ssd.hpp) beyond what the conformance registry says: the chunked path equals the token loop to
// 1e-12 in f64 and 1e-5 in f32 at every chunk size (1, sizes that do not divide l, l itself, larger than l), the same
// result on 1 and 2 threads, the CPU token loop (SsdPath::recurrent) within the same bounds, pieces with a carried
// state equal one call, the reference backward equals central differences, the chunked backward equals the reference
// backward (same chunk sizes; 1 and 2 threads bit for bit), the backward from the forward's kept chunk states and y
// equals the one that recomputes them bit for bit, and every error names its argument.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <random>
#include <cmath>
#include <string>
#include <vector>

#include "../conformance/ssd_problem.hpp"
#include "../conformance/registry.hpp"
#include "ssm/ops/ssd.hpp"
#include "support/device_views.hpp"

namespace {

using ssd_problem::SsdCase;
using ssd_problem::SsdData;
using ssm::DType;
using ssm::index_t;
using ssm::Tensor;
using conformance::rel_error;

struct SsdRun {
  Tensor out, final_state;
  std::string path;
};

SsdRun run(const SsdData& d, ssm::SsdPath path, index_t chunk, int threads) {
  ssm::SsdOptions opt;
  opt.path = path, opt.chunk_size = chunk, opt.threads = threads, opt.return_final_state = true;
  ssm::SsdOutputs o = ssm::ssd(d.inputs(), opt);
  return {o.out, o.final_state, o.path};
}

/// Shapes of every kind: l = 1, l < chunk, l not a multiple of the chunk, groups, heads not a multiple of anything,
/// every optional input, packed sequences of ragged lengths.
std::vector<SsdCase> shapes(DType dt) {
  std::vector<SsdCase> v;
  SsdCase c;
  c.dtype = dt;
  c.b = 1, c.l = 1, c.h = 1, c.p = 1, c.n = 1;
  v.push_back(c);
  c.b = 2, c.l = 37, c.h = 3, c.p = 5, c.n = 7, c.has_D = true, c.has_z = true, c.has_bias = true, c.softplus = true,
  c.has_init = true, c.seed = 2;
  v.push_back(c);
  c.h = 6, c.g = 3, c.l = 130, c.D_per_channel = true, c.limit = true, c.pad = 3, c.seed = 3;
  v.push_back(c);
  SsdCase packed;
  packed.dtype = dt, packed.l = 90, packed.h = 5, packed.p = 4, packed.n = 6, packed.has_init = true, packed.has_D = true;
  packed.cu = {0, 1, 34, 35, 90};
  packed.seed = 4;
  v.push_back(packed);
  return v;
}

void expect_chunked_equals_loop(DType dt, double tol) {
  for (const SsdCase& cs : shapes(dt)) {
    const SsdData d = ssd_problem::make_data(cs);
    const SsdRun ref = run(d, ssm::SsdPath::reference, 1, 1);
    for (index_t chunk : {index_t{1}, index_t{3}, index_t{16}, index_t{33}, index_t{64}, index_t{128}, index_t{256}}) {
      SCOPED_TRACE(cs.describe() + " chunk=" + std::to_string(chunk));
      const SsdRun got = run(d, ssm::SsdPath::chunked, chunk, 1);
      EXPECT_EQ(got.path, "cpu-chunked");
      EXPECT_LE(rel_error(got.out, ref.out), tol);
      EXPECT_LE(rel_error(got.final_state, ref.final_state), tol);
    }
    SCOPED_TRACE(cs.describe() + " recurrent");
    const SsdRun rec = run(d, ssm::SsdPath::recurrent, 1, 2);
    EXPECT_EQ(rec.path, "cpu-recurrent");
    EXPECT_LE(rel_error(rec.out, ref.out), tol);
    EXPECT_LE(rel_error(rec.final_state, ref.final_state), tol);
  }
}

// Both compute in f64; the chunked sums reassociate over at most l terms of magnitude <= 1: a few hundred ulp.
TEST(Ssd, ChunkedEqualsTokenLoopF64) { expect_chunked_equals_loop(DType::f64, 1e-12); }
// f32 sums of up to 256 products (the chunk) and n terms, against a double loop: the 1e-5.
TEST(Ssd, ChunkedEqualsTokenLoopF32) { expect_chunked_equals_loop(DType::f32, 1e-5); }

// A chunk_size far beyond the sequence is one chunk per sequence: the result of chunk = l to the bit, forward and
// backward, without a workspace sized by the requested chunk (2^40 steps would be terabytes).
TEST(Ssd, AChunkLongerThanTheSequenceIsTheSequence) {
  for (const SsdCase& cs : shapes(DType::f32)) {
    const SsdData d = ssd_problem::make_data(cs);
    const SsdRun huge = run(d, ssm::SsdPath::chunked, index_t{1} << 40, 1), whole = run(d, ssm::SsdPath::chunked, cs.l, 1);
    EXPECT_EQ(rel_error(huge.out, whole.out), 0.0) << cs.describe();
    EXPECT_EQ(rel_error(huge.final_state, whole.final_state), 0.0) << cs.describe();
    ssm::SsdOptions opt;
    opt.chunk_size = index_t{1} << 40;
    const ssm::SsdGrads g = ssm::ssd_backward(d.inputs(), huge.out, std::nullopt, opt);
    opt.chunk_size = cs.l;
    const ssm::SsdGrads w = ssm::ssd_backward(d.inputs(), huge.out, std::nullopt, opt);
    EXPECT_EQ(rel_error(g.grad_x, w.grad_x), 0.0) << cs.describe();
  }
}

TEST(Ssd, ThreadsGiveTheSameResult) {
  for (const SsdCase& cs : shapes(DType::f32)) {
    const SsdData d = ssd_problem::make_data(cs);
    const SsdRun one = run(d, ssm::SsdPath::chunked, 16, 1), two = run(d, ssm::SsdPath::chunked, 16, 2);
    EXPECT_EQ(rel_error(two.out, one.out), 0.0) << cs.describe();
    EXPECT_EQ(rel_error(two.final_state, one.final_state), 0.0) << cs.describe();
  }
}

// A sequence in two pieces, the first's final state the second's initial state, equals one call (f64, so the only
// difference is the chunking's reassociation).
TEST(Ssd, PiecesWithCarriedStateEqualOneCall) {
  SsdCase cs;
  cs.l = 70, cs.h = 3, cs.p = 4, cs.n = 5, cs.has_D = true, cs.has_z = true, cs.has_init = true, cs.softplus = true;
  const SsdData d = ssd_problem::make_data(cs);
  const SsdRun whole = run(d, ssm::SsdPath::chunked, 16, 1);
  const index_t cut = 29;
  auto piece = [&](index_t t0, index_t t1, const Tensor& h0) {
    auto slice = [&](const Tensor& t) { return ssm::TensorView(static_cast<char*>(t.data()) + t0 * t.strides()[1] * ssm::size_of(t.dtype()), t.dtype(), t.device(), [&] { ssm::Dims s = t.shape(); s[1] = t1 - t0; return s; }(), t.strides()); };
    ssm::SsdInputs in = d.inputs();
    in.x = slice(d.x), in.dt = slice(d.dt), in.B = slice(d.B), in.C = slice(d.C), in.z = slice(d.z);
    in.initial_state = h0.view();
    ssm::SsdOptions opt;
    opt.chunk_size = 16, opt.return_final_state = true;
    return ssm::ssd(in, opt);
  };
  const ssm::SsdOutputs a = piece(0, cut, d.initial_state), b = piece(cut, cs.l, a.final_state);
  const std::vector<double> w = conformance::to_doubles(whole.out), va = conformance::to_doubles(a.out),
                            vb = conformance::to_doubles(b.out);
  std::vector<double> joined(va);
  joined.insert(joined.end(), vb.begin(), vb.end());
  EXPECT_LE(conformance::normalized_error(joined, w), 1e-13);
  EXPECT_LE(rel_error(b.final_state, whole.final_state), 1e-13);
}

// ---- the reference backward against central differences ------------------------------------------------------

/// L = <grad_out, out> + <grad_final, final_state> by the reference forward (f64).
double loss(const SsdData& d, const Tensor& grad_out, const Tensor& grad_final) {
  const SsdRun r = run(d, ssm::SsdPath::reference, 1, 1);
  double L = 0;
  const std::vector<double> o = conformance::to_doubles(r.out), go = conformance::to_doubles(grad_out),
                            f = conformance::to_doubles(r.final_state), gf = conformance::to_doubles(grad_final);
  for (std::size_t i = 0; i < o.size(); ++i) L += o[i] * go[i];
  for (std::size_t i = 0; i < f.size(); ++i) L += f[i] * gf[i];
  return L;
}

void expect_backward_matches_differences(const SsdCase& cs) {
  SsdData d = ssd_problem::make_data(cs);
  std::mt19937_64 rng(99);
  const Tensor grad_out = ssd_problem::uniform(rng, {cs.b, cs.l, cs.h, cs.p}, DType::f64, -1, 1);
  const Tensor grad_final = ssd_problem::uniform(rng, {cs.rows(), cs.h, cs.p, cs.n}, DType::f64, -1, 1);
  // the analytic gradients
  ssm::Checker chk("ssd");
  std::vector<std::int64_t> cu;
  ssm::Device device;
  ssm::SsdOptions opt;
  const Tensor out = Tensor::empty(d.x.shape(), DType::f64);
  const ssm::SsdParams p = ssm::detail::check_ssd(chk, d.inputs(), out, std::nullopt, opt, cu, device);
  struct Grad {
    const char* name;
    Tensor* input;
    Tensor grad;
  };
  std::vector<Grad> grads = {{"x", &d.x, {}}, {"dt", &d.dt, {}}, {"A", &d.A, {}}, {"B", &d.B, {}}, {"C", &d.C, {}}};
  if (cs.has_D) grads.push_back({"D", &d.D, {}});
  if (cs.has_z) grads.push_back({"z", &d.z, {}});
  if (cs.has_bias) grads.push_back({"dt_bias", &d.dt_bias, {}});
  if (cs.has_init) grads.push_back({"initial_state", &d.initial_state, {}});
  for (Grad& g : grads) g.grad = Tensor::zeros(g.input->shape(), DType::f64);
  auto grad_of = [&](const std::string& nm) -> void* {
    for (Grad& g : grads)
      if (nm == g.name) return g.grad.data();
    return nullptr;
  };
  ssm::SsdGradParams gp;
  gp.grad_out = grad_out.data(), gp.grad_final_state = grad_final.data();
  gp.grad_x = grad_of("x"), gp.grad_dt = grad_of("dt"), gp.grad_A = grad_of("A"), gp.grad_B = grad_of("B");
  gp.grad_C = grad_of("C"), gp.grad_D = grad_of("D"), gp.grad_z = grad_of("z"), gp.grad_dt_bias = grad_of("dt_bias");
  gp.grad_initial_state = grad_of("initial_state");
  ssm::reference::ssd_backward(p, gp);
  // central differences, element by element (f64; the step balances truncation, O(eps^2), and rounding, O(1e-16 / eps))
  const double eps = 1e-6;
  for (Grad& g : grads) {
    double* v = g.input->data_as<double>();
    const double* an = g.grad.data_as<double>();
    double err = 0, scale = 0;
    for (index_t i = 0; i < g.input->numel(); ++i) {
      const double keep = v[i];
      v[i] = keep + eps;
      const double up = loss(d, grad_out, grad_final);
      v[i] = keep - eps;
      const double down = loss(d, grad_out, grad_final);
      v[i] = keep;
      const double num = (up - down) / (2 * eps);
      err = std::max(err, std::abs(num - an[i]));
      scale = std::max(scale, std::abs(num));
    }
    EXPECT_LE(err, 1e-6 * std::max(scale, 1.0)) << cs.describe() << ": grad_" << g.name << " (max |grad| " << scale << ")";
  }
}

TEST(Ssd, ReferenceBackwardMatchesCentralDifferences) {
  SsdCase cs;  // every optional input, groups, two rows
  cs.b = 2, cs.l = 6, cs.h = 4, cs.p = 2, cs.g = 2, cs.n = 3, cs.has_D = cs.D_per_channel = true, cs.has_z = true;
  cs.has_bias = cs.softplus = cs.has_init = true, cs.seed = 7;
  expect_backward_matches_differences(cs);
  SsdCase packed;  // packed sequences (the state reset), D per head, a dt limit that clamps some steps
  packed.l = 7, packed.h = 3, packed.p = 2, packed.n = 2, packed.cu = {0, 3, 7}, packed.has_D = true;
  packed.has_init = true, packed.limit = true, packed.seed = 8;
  expect_backward_matches_differences(packed);
}

// ---- the chunked backward against the reference backward ------------------------------------------------------

struct BackwardRun {
  ssm::SsdGrads grads;
  std::vector<std::pair<std::string, const Tensor*>> list() const {
    const ssm::SsdGrads& r = grads;
    return {{"x", &r.grad_x}, {"dt", &r.grad_dt}, {"A", &r.grad_A}, {"B", &r.grad_B}, {"C", &r.grad_C},
            {"D", &r.grad_D}, {"z", &r.grad_z}, {"dt_bias", &r.grad_dt_bias}, {"initial_state", &r.grad_initial_state}};
  }
};

/// grad_out (x's shape and dtype) and grad_final_state ((rows, h, p, n), param dtype), random in [-1, 1).
std::pair<Tensor, Tensor> incoming_grads(const SsdCase& cs) {
  std::mt19937_64 rng(cs.seed + 100);
  return {ssd_problem::uniform(rng, {cs.b, cs.l, cs.h, cs.p}, cs.dtype, -1, 1),
          ssd_problem::uniform(rng, {cs.rows(), cs.h, cs.p, cs.n}, ssm::compute_dtype(cs.dtype), -1, 1)};
}

BackwardRun run_backward(const SsdData& d, const std::pair<Tensor, Tensor>& in_grads, ssm::SsdPath path, index_t chunk,
                         int threads) {
  ssm::SsdOptions opt;
  opt.path = path, opt.chunk_size = chunk, opt.threads = threads;
  return {ssm::ssd_backward(d.inputs(), in_grads.first, in_grads.second.view(), opt)};
}

void expect_backward_equals_reference(DType dt, double tol) {
  for (const SsdCase& cs : shapes(dt)) {
    const SsdData d = ssd_problem::make_data(cs);
    const auto in_grads = incoming_grads(cs);
    const BackwardRun ref = run_backward(d, in_grads, ssm::SsdPath::reference, 1, 1);
    EXPECT_EQ(ref.grads.path, "reference");
    for (index_t chunk : {index_t{1}, index_t{3}, index_t{16}, index_t{33}, index_t{64}, index_t{128}, index_t{256}}) {
      SCOPED_TRACE(cs.describe() + " chunk=" + std::to_string(chunk));
      const BackwardRun got = run_backward(d, in_grads, ssm::SsdPath::chunked, chunk, 1);
      EXPECT_EQ(got.grads.path, "cpu-chunked");
      const auto r = ref.list(), gl = got.list();
      for (std::size_t i = 0; i < r.size(); ++i) {
        ASSERT_EQ(r[i].second->defined(), gl[i].second->defined()) << "grad_" << r[i].first;
        if (r[i].second->defined()) {
          EXPECT_LE(rel_error(*gl[i].second, *r[i].second), tol) << "grad_" << r[i].first;
        }
      }
    }
  }
}

// f64: the chunked sums reassociate the token loop's over up to l steps, and ḡcs is a difference of row and column
// sums of the mask's gradient: a few thousand ulp of the largest gradient at most, 1e-10.
TEST(Ssd, ChunkedBackwardEqualsReferenceF64) { expect_backward_equals_reference(DType::f64, 1e-10); }
// f32 sums of up to a chunk of products (and p n terms for ḡA, ḡΔ) against a double loop: 1e-4.
TEST(Ssd, ChunkedBackwardEqualsReferenceF32) { expect_backward_equals_reference(DType::f32, 1e-4); }

TEST(Ssd, BackwardThreadsGiveTheSameResult) {
  for (const SsdCase& cs : shapes(DType::f32)) {
    const SsdData d = ssd_problem::make_data(cs);
    const auto in_grads = incoming_grads(cs);
    const BackwardRun one = run_backward(d, in_grads, ssm::SsdPath::chunked, 16, 1),
                      two = run_backward(d, in_grads, ssm::SsdPath::chunked, 16, 2);
    const auto a = one.list(), b = two.list();
    for (std::size_t i = 0; i < a.size(); ++i)
      if (a[i].second->defined()) {
        EXPECT_EQ(conformance::to_doubles(*b[i].second), conformance::to_doubles(*a[i].second))
            << cs.describe() << ": grad_" << a[i].first;
      }
  }
}

// Without grad_final_state the chunked backward equals the reference too, and the (b, l, h p) form of x gives the
// same gradients as the 4-d one.
TEST(Ssd, BackwardWithoutFinalGradAndWithHeadDim) {
  SsdCase cs;
  cs.b = 2, cs.l = 21, cs.h = 4, cs.p = 3, cs.g = 2, cs.n = 5, cs.has_D = cs.has_z = cs.has_init = true, cs.seed = 11;
  const SsdData d = ssd_problem::make_data(cs);
  const Tensor grad_out = incoming_grads(cs).first;
  ssm::SsdOptions opt;
  opt.chunk_size = 8;
  const ssm::SsdGrads got = ssm::ssd_backward(d.inputs(), grad_out, opt);
  opt.path = ssm::SsdPath::reference;
  const ssm::SsdGrads ref = ssm::ssd_backward(d.inputs(), grad_out, opt);
  EXPECT_LE(rel_error(got.grad_initial_state, ref.grad_initial_state), 1e-10);
  EXPECT_LE(rel_error(got.grad_dt, ref.grad_dt), 1e-10);
  ssm::SsdInputs in = d.inputs();
  in.x = d.x.view().reshape({2, 21, 12}), in.z = d.z.view().reshape({2, 21, 12});
  ssm::SsdOptions o3;
  o3.chunk_size = 8, o3.head_dim = 3;
  const ssm::SsdGrads r3 = ssm::ssd_backward(in, grad_out.view().reshape({2, 21, 12}), o3);
  EXPECT_EQ(r3.grad_x.shape().str(), "(2, 21, 12)");
  EXPECT_EQ(conformance::to_doubles(r3.grad_x), conformance::to_doubles(got.grad_x));
  EXPECT_EQ(conformance::to_doubles(r3.grad_z), conformance::to_doubles(got.grad_z));
  EXPECT_EQ(conformance::to_doubles(r3.grad_B), conformance::to_doubles(got.grad_B));
}

// ---- the backward from what the forward kept (SsdSaved) -------------------------------------------------------

/// The chunked forward with save_for_backward (chunk size `chunk`, `threads` threads).
ssm::SsdOutputs forward_saving(const SsdData& d, index_t chunk, int threads = 1) {
  ssm::SsdOptions opt;
  opt.chunk_size = chunk, opt.threads = threads, opt.save_for_backward = true, opt.return_final_state = true;
  return ssm::ssd(d.inputs(), opt);
}

// The backward from the forward's chunk states and y equals the one that recomputes them bit for bit: the kept
// states are the ones pass 1 and 2 recompute (one definition, passes.hpp) and y is formed by the same operations.
// Every shape, f64, f32 and bf16, chunk sizes that do and do not divide l (256: longer than most), 1 and 2 threads
// (the combinations trimmed: under the sanitizers each costs about a fifth of a second).
TEST(Ssd, BackwardFromSavedEqualsRecomputed) {
  for (DType dt : {DType::f64, DType::f32, DType::bf16})
    for (const SsdCase& cs : shapes(dt)) {
      const SsdData d = ssd_problem::make_data(cs);
      const auto in_grads = incoming_grads(cs);
      for (index_t chunk : {index_t{3}, index_t{16}, index_t{256}}) {
        const int threads = chunk == 16 ? 2 : 1;
        SCOPED_TRACE(cs.describe() + " chunk=" + std::to_string(chunk) + " threads=" + std::to_string(threads));
        const ssm::SsdOutputs f = forward_saving(d, chunk, threads);
        EXPECT_EQ(f.saved.chunk_size, std::min(chunk, cs.l));
        EXPECT_EQ(f.saved.y.defined(), cs.has_z);
        // keeping them changes nothing the forward returns
        const SsdRun plain = run(d, ssm::SsdPath::chunked, chunk, threads);
        EXPECT_EQ(conformance::to_doubles(f.out), conformance::to_doubles(plain.out));
        EXPECT_EQ(conformance::to_doubles(f.final_state), conformance::to_doubles(plain.final_state));
        ssm::SsdOptions opt;
        opt.chunk_size = chunk, opt.threads = threads;
        const BackwardRun kept{ssm::ssd_backward(d.inputs(), in_grads.first, in_grads.second.view(), opt, &f.saved)};
        const BackwardRun again = run_backward(d, in_grads, ssm::SsdPath::chunked, chunk, threads);
        const auto a = again.list(), k = kept.list();
        for (std::size_t i = 0; i < a.size(); ++i) {
          ASSERT_EQ(a[i].second->defined(), k[i].second->defined()) << "grad_" << a[i].first;
          if (a[i].second->defined()) {
            EXPECT_EQ(conformance::to_doubles(*k[i].second), conformance::to_doubles(*a[i].second))
                << "grad_" << a[i].first;
          }
        }
      }
    }
}

// What the forward keeps is what it says: chunk c's state is the state after the steps before it (the reference
// token loop's final state over that prefix, from the same initial state), and y silu(z) is out.
TEST(Ssd, SavedStatesAreTheStatesEnteringEachChunk) {
  SsdCase cs;
  cs.dtype = DType::f64, cs.b = 2, cs.l = 23, cs.h = 4, cs.p = 3, cs.g = 2, cs.n = 5, cs.has_D = cs.has_z = true;
  cs.has_bias = cs.softplus = cs.has_init = true, cs.seed = 21;
  const SsdData d = ssd_problem::make_data(cs);
  const index_t chunk = 7, chunks = 4;  // per row: 7 + 7 + 7 + 2
  const ssm::SsdOutputs f = forward_saving(d, chunk);
  ASSERT_EQ(f.saved.chunk_states.shape().str(), "(8, 4, 3, 5)");
  const std::vector<double> kept = conformance::to_doubles(f.saved.chunk_states);
  const index_t state = cs.h * cs.p * cs.n;  // one row's (h, p, n)
  for (index_t c = 0; c < chunks; ++c) {
    const index_t t0 = c * chunk;  // the prefix [0, t0) of both rows
    std::vector<double> want;
    if (t0 == 0) {
      want = conformance::to_doubles(d.initial_state);
    } else {
      auto prefix = [&](const ssm::TensorView& t) {
        ssm::Dims shape = t.shape();
        shape[1] = t0;
        return ssm::TensorView(t.data(), t.dtype(), t.device(), shape, t.strides());
      };
      ssm::SsdInputs in = d.inputs();
      in.x = prefix(in.x), in.dt = prefix(in.dt), in.B = prefix(in.B), in.C = prefix(in.C), in.z = prefix(*in.z);
      ssm::SsdOptions opt;
      opt.path = ssm::SsdPath::reference, opt.return_final_state = true;
      want = conformance::to_doubles(ssm::ssd(in, opt).final_state);
    }
    for (index_t row = 0; row < cs.b; ++row)
      for (index_t i = 0; i < state; ++i) {
        const double got = kept[static_cast<std::size_t>((row * chunks + c) * state + i)];
        const double w = want[static_cast<std::size_t>(row * state + i)];
        EXPECT_NEAR(got, w, 1e-12 * std::max(1.0, std::abs(w))) << "row " << row << " chunk " << c << " element " << i;
      }
  }
  const std::vector<double> y = conformance::to_doubles(f.saved.y), z = conformance::to_doubles(d.z),
                            out = conformance::to_doubles(f.out);
  for (std::size_t i = 0; i < y.size(); ++i)
    EXPECT_NEAR(y[i] * z[i] / (1 + std::exp(-z[i])), out[i], 1e-13 * std::max(1.0, std::abs(out[i]))) << i;
}

// The backward reads what it is given: other chunk states or another y change the gradients they enter (so a
// backward that silently recomputed would fail this).
TEST(Ssd, BackwardReadsTheSavedStatesAndY) {
  SsdCase cs;
  cs.dtype = DType::f64, cs.b = 1, cs.l = 40, cs.h = 2, cs.p = 3, cs.n = 4, cs.has_z = cs.has_D = true, cs.seed = 22;
  const SsdData d = ssd_problem::make_data(cs);
  const auto in_grads = incoming_grads(cs);
  ssm::SsdOptions opt;
  opt.chunk_size = 8;
  const ssm::SsdOutputs f = forward_saving(d, 8);
  const ssm::SsdGrads base = ssm::ssd_backward(d.inputs(), in_grads.first, in_grads.second.view(), opt, &f.saved);
  ssm::SsdSaved zero_states = f.saved;
  zero_states.chunk_states = Tensor::zeros(f.saved.chunk_states.shape(), DType::f64);
  const ssm::SsdGrads g1 = ssm::ssd_backward(d.inputs(), in_grads.first, in_grads.second.view(), opt, &zero_states);
  EXPECT_GT(rel_error(g1.grad_C, base.grad_C), 1e-3);   // ḡC = diag(e) ḡy H_in + ...
  EXPECT_GT(rel_error(g1.grad_A, base.grad_A), 1e-3);   // ḡa_c = ⟨ḡH, H_in⟩
  EXPECT_EQ(conformance::to_doubles(g1.grad_z), conformance::to_doubles(base.grad_z));  // y was kept, not recomputed
  ssm::SsdSaved zero_y = f.saved;
  zero_y.y = Tensor::zeros(f.saved.y.shape(), DType::f64);
  const ssm::SsdGrads g2 = ssm::ssd_backward(d.inputs(), in_grads.first, in_grads.second.view(), opt, &zero_y);
  EXPECT_GT(rel_error(g2.grad_z, base.grad_z), 0.5);
  EXPECT_EQ(conformance::to_doubles(g2.grad_x), conformance::to_doubles(base.grad_x));
}

// ---- errors ------------------------------------------------------------------------------------------------------

void expect_error(const std::function<void()>& f, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << "no ssm::Error, expected one containing: " << fragment;
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

SsdCase error_case() {
  SsdCase cs;
  cs.b = 2, cs.l = 9, cs.h = 4, cs.p = 3, cs.g = 2, cs.n = 5, cs.dtype = DType::f32;
  return cs;
}

TEST(Ssd, Errors) {
  const SsdData d = ssd_problem::make_data(error_case());
  ssm::SsdOptions opt;
  expect_error([&] { opt.chunk_size = 0; ssm::ssd(d.inputs(), opt); }, "ssd: argument 'chunk_size': must be > 0, got 0");
  opt.chunk_size = 4;
  {  // n_groups not dividing the heads
    const Tensor B3 = Tensor::zeros({2, 9, 3, 5}, DType::f32);
    ssm::SsdInputs in = d.inputs();
    in.B = B3;
    expect_error([&] { ssm::ssd(in, opt); }, "argument 'B': n_groups = 3 (its dimension 2) does not divide the number of heads h = 4");
  }
  {  // C's shape differs from B's
    const Tensor C = Tensor::zeros({2, 9, 2, 6}, DType::f32);
    ssm::SsdInputs in = d.inputs();
    in.C = C;
    expect_error([&] { ssm::ssd(in, opt); }, "argument 'C': expected shape (2, 9, 2, 5), got (2, 9, 2, 6)");
  }
  {  // head_dim not dividing a (b, l, h p) x
    const Tensor x = Tensor::zeros({2, 9, 12}, DType::f32);
    ssm::SsdInputs in = d.inputs();
    in.x = x;
    ssm::SsdOptions o = opt;
    o.head_dim = 5;
    expect_error([&] { ssm::ssd(in, o); }, "argument 'x': head_dim = 5 does not divide its last extent 12");
  }
  {  // a (b, l, h p) x with a dividing head_dim runs and equals the 4-d form
    const ssm::TensorView x3 = d.x.view().reshape({2, 9, 12});
    ssm::SsdInputs in = d.inputs();
    in.x = x3;
    ssm::SsdOptions o = opt;
    o.head_dim = 3;
    const ssm::SsdOutputs r3 = ssm::ssd(in, o), r4 = ssm::ssd(d.inputs(), opt);
    EXPECT_EQ(r3.out.shape().str(), "(2, 9, 12)");
    EXPECT_EQ(conformance::to_doubles(r3.out), conformance::to_doubles(r4.out));
  }
  {  // dtypes: B in f64 with f32 x; dt in f16
    const Tensor B = Tensor::zeros({2, 9, 2, 5}, DType::f64);
    ssm::SsdInputs in = d.inputs();
    in.B = B;
    expect_error([&] { ssm::ssd(in, opt); }, "argument 'B': expected dtype f32 (the dtype of 'x'), got f64");
    const Tensor dt = Tensor::zeros({2, 9, 4}, DType::f16);
    in = d.inputs();
    in.dt = dt;
    expect_error([&] { ssm::ssd(in, opt); }, "argument 'dt': expected dtype f32 (the param dtype for f32 / f16 / bf16 x), got f16");
  }
  {  // D of a wrong shape, dt_limit with NaN, an initial state of the wrong rows
    const Tensor D = Tensor::zeros({4, 2}, DType::f32);
    ssm::SsdInputs in = d.inputs();
    in.D = D.view();
    expect_error([&] { ssm::ssd(in, opt); }, "argument 'D': expected shape (4, 3), got (4, 2)");
    in = d.inputs();
    in.dt_limit = std::pair<double, double>(0.0, NAN);
    expect_error([&] { ssm::ssd(in, opt); }, "argument 'dt_limit': expected (min, max) with min <= max and neither NaN");
    const Tensor h0 = Tensor::zeros({1, 4, 3, 5}, DType::f32);
    in = d.inputs();
    in.initial_state = h0.view();
    expect_error([&] { ssm::ssd(in, opt); }, "argument 'initial_state': expected shape (2, 4, 3, 5), got (1, 4, 3, 5)");
  }
  {  // cu_seqlens with b = 2
    const Tensor cu = Tensor::from_vector<std::int64_t>({3}, {0, 4, 9});
    ssm::SsdInputs in = d.inputs();
    in.cu_seqlens = cu.view();
    expect_error([&] { ssm::ssd(in, opt); }, "argument 'cu_seqlens': packed variable-length batches need b == 1");
  }
}

TEST(Ssd, BackwardErrors) {
  const SsdCase cs = error_case();
  const SsdData d = ssd_problem::make_data(cs);
  const auto in_grads = incoming_grads(cs);
  ssm::SsdOptions opt;
  opt.chunk_size = 4;
  const Tensor go_bad = Tensor::zeros({2, 9, 4, 2}, DType::f32);
  expect_error([&] { ssm::ssd_backward(d.inputs(), go_bad, opt); },
               "ssd_backward: argument 'grad_out': expected shape (2, 9, 4, 3), got (2, 9, 4, 2)");
  const Tensor go_f64 = Tensor::zeros({2, 9, 4, 3}, DType::f64);
  expect_error([&] { ssm::ssd_backward(d.inputs(), go_f64, opt); },
               "ssd_backward: argument 'grad_out': expected dtype f32 (the dtype of 'x'), got f64");
  const Tensor wide = Tensor::zeros({2, 9, 4, 6}, DType::f32);
  const ssm::TensorView strided(wide.data(), DType::f32, ssm::Device::cpu(), {2, 9, 4, 3}, {216, 24, 6, 1});
  expect_error([&] { ssm::ssd_backward(d.inputs(), strided, opt); }, "ssd_backward: argument 'grad_out': ");
  const Tensor gf_bad = Tensor::zeros({2, 4, 3, 4}, DType::f32);
  expect_error([&] { ssm::ssd_backward(d.inputs(), in_grads.first, gf_bad.view(), opt); },
               "ssd_backward: argument 'grad_final_state': expected shape (2, 4, 3, 5), got (2, 4, 3, 4)");
  opt.path = ssm::SsdPath::recurrent;
  expect_error([&] { ssm::ssd_backward(d.inputs(), in_grads.first, opt); },
               "ssd_backward: argument 'path': SsdPath::recurrent (the token loop in the compute type) has no backward");
  opt.path = ssm::SsdPath::chunked, opt.chunk_size = -1;
  expect_error([&] { ssm::ssd_backward(d.inputs(), in_grads.first, opt); },
               "ssd_backward: argument 'chunk_size': must be > 0, got -1");
}

// A SsdSaved passed again is written in place where its tensors fit and nothing else owns them; one whose tensors
// are shared (a copy kept elsewhere) or of another shape gets new ones, and the other owner's values stay.
TEST(Ssd, SavedTensorsAreReusedOnlyWhenTheyFitAndAreNotShared) {
  SsdCase cs;
  cs.dtype = DType::f32, cs.l = 20, cs.h = 2, cs.p = 3, cs.n = 4, cs.has_z = true, cs.seed = 23;
  const SsdData d = ssd_problem::make_data(cs);
  ssm::SsdOptions opt;
  opt.chunk_size = 8;
  const Tensor out = Tensor::empty(d.x.shape(), DType::f32);
  ssm::SsdSaved s;
  ssm::ssd_into(d.inputs(), out, std::nullopt, opt, &s);
  const void* states = s.chunk_states.data();
  const void* y = s.y.data();
  ssm::ssd_into(d.inputs(), out, std::nullopt, opt, &s);
  EXPECT_EQ(s.chunk_states.data(), states);
  EXPECT_EQ(s.y.data(), y);
  const ssm::SsdSaved copy = s;  // now shared
  const std::vector<double> before = conformance::to_doubles(copy.chunk_states);
  SsdCase other = cs;
  other.seed = 24;
  const SsdData d2 = ssd_problem::make_data(other);
  ssm::ssd_into(d2.inputs(), out, std::nullopt, opt, &s);
  EXPECT_NE(s.chunk_states.data(), copy.chunk_states.data());
  EXPECT_NE(s.y.data(), copy.y.data());
  EXPECT_EQ(conformance::to_doubles(copy.chunk_states), before);
  EXPECT_NE(conformance::to_doubles(s.chunk_states), before);
  opt.chunk_size = 5;  // 4 chunks, not 3: another shape
  ssm::ssd_into(d2.inputs(), out, std::nullopt, opt, &s);
  EXPECT_EQ(s.chunk_states.shape().str(), "(4, 2, 3, 4)");
  EXPECT_EQ(s.chunk_size, 5);
}

TEST(Ssd, SavedErrors) {
  const SsdCase cs = error_case();
  const SsdData d = ssd_problem::make_data(cs);
  const auto in_grads = incoming_grads(cs);
  ssm::SsdOptions opt;
  opt.chunk_size = 4;
  ssm::SsdSaved saved;
  const Tensor out = Tensor::empty(d.x.shape(), DType::f32);
  opt.path = ssm::SsdPath::reference;
  expect_error([&] { ssm::ssd_into(d.inputs(), out, std::nullopt, opt, &saved); },
               "ssd: argument 'save': only the chunked path keeps chunk states; opt.path asks for the reference path");
  opt.path = ssm::SsdPath::recurrent;
  expect_error([&] { ssm::ssd_into(d.inputs(), out, std::nullopt, opt, &saved); },
               "opt.path asks for the recurrent path");
  opt.save_for_backward = true;  // the allocating form names its option
  expect_error([&] { ssm::ssd(d.inputs(), opt); }, "ssd: argument 'save_for_backward': only the chunked path");
  opt.save_for_backward = false;
  opt.path = ssm::SsdPath::automatic;
  ssm::ssd_into(d.inputs(), out, std::nullopt, opt, &saved);
  EXPECT_EQ(saved.chunk_states.shape().str(), "(6, 4, 3, 5)");  // 2 rows of 4 + 4 + 1 steps
  EXPECT_FALSE(saved.y.defined());                               // no z
  opt.chunk_size = 3;
  expect_error([&] { ssm::ssd_backward(d.inputs(), in_grads.first, opt, &saved); },
               "ssd_backward: argument 'saved': was kept by a forward in chunks of 4 steps, but this backward uses "
               "chunks of 3");
  opt.chunk_size = 4;
  ssm::SsdSaved bad = saved;
  bad.chunk_states = Tensor::zeros({6, 4, 3, 4}, DType::f32);
  expect_error([&] { ssm::ssd_backward(d.inputs(), in_grads.first, opt, &bad); },
               "ssd_backward: argument 'saved.chunk_states': expected shape (6, 4, 3, 5), got (6, 4, 3, 4)");
  bad.chunk_states = Tensor::zeros({6, 4, 3, 5}, DType::f64);
  expect_error([&] { ssm::ssd_backward(d.inputs(), in_grads.first, opt, &bad); },
               "ssd_backward: argument 'saved.chunk_states': expected dtype f32");
  bad.chunk_states = Tensor();
  expect_error([&] { ssm::ssd_backward(d.inputs(), in_grads.first, opt, &bad); },
               "ssd_backward: argument 'saved.chunk_states': ");
  // kept without z, used with z: y is missing
  const Tensor z = Tensor::zeros(d.x.shape(), DType::f32);
  ssm::SsdInputs with_z = d.inputs();
  with_z.z = z.view();
  expect_error([&] { ssm::ssd_backward(with_z, in_grads.first, opt, &saved); },
               "ssd_backward: argument 'saved.y': is empty, but the backward with z needs y before the gate");
  bad = saved;
  bad.y = Tensor::zeros({2, 9, 4, 2}, DType::f32);
  expect_error([&] { ssm::ssd_backward(with_z, in_grads.first, opt, &bad); },
               "ssd_backward: argument 'saved.y': expected shape (2, 9, 4, 3), got (2, 9, 4, 2)");
}

// A CUDA backend without an ssd entry: the op says so by name (a stand-in backend, as no GPU is needed to see it).
TEST(Ssd, CudaNotImplementedYet) {
  static ssm::DeviceBackend fake;
  fake.name = "fake cuda";
  fake.ensure_device = [](int) {};
  const ssm::DeviceBackend* previous = ssm::register_backend(ssm::DeviceType::cuda, &fake);
  const SsdData d = ssd_problem::make_data(error_case());
  using ssm_test::on_cuda;
  ssm::SsdInputs in;
  in.x = on_cuda(d.x), in.dt = on_cuda(d.dt), in.A = on_cuda(d.A), in.B = on_cuda(d.B), in.C = on_cuda(d.C);
  const Tensor out = Tensor::zeros(d.x.shape(), DType::f32);
  expect_error([&] { ssm::ssd_into(in, on_cuda(out)); }, "ssd: not implemented on cuda yet");
  expect_error([&] { ssm::ssd_into(in, out); }, "argument 'out': is on cpu but 'x' is on cuda:0");
  ssm::SsdSaved saved;  // a forward that would keep its work: the same error, before anything is allocated
  expect_error([&] { ssm::ssd_into(in, on_cuda(out), std::nullopt, {}, &saved); }, "ssd: not implemented on cuda yet");
  EXPECT_FALSE(saved.chunk_states.defined());
  ssm::register_backend(ssm::DeviceType::cuda, previous);
}

}  // namespace
