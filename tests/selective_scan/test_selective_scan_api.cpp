// The op's small traps (issue #22), each of which used to be silent: a path that complex A cannot run,
// save_chunk_states where nothing is saved, mamba's interleaved (re, im) layout of complex variable B / C,
// and the backward's options without a grad_last_state. Each now works or is an ssm::Error naming the argument.
#include <gtest/gtest.h>

#include <complex>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "scan_test_util.hpp"

namespace {

using namespace scan_test;
using ssm::ScanPath;
using ssm::SelectiveScanInputs;
using ssm::SelectiveScanOptions;

template <class F>
void expect_error(F&& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "expected ssm::Error mentioning '" << needles.front() << "'";
  } catch (const ssm::Error& e) {
    for (const std::string& needle : needles)
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "'" << needle << "' not in: " << e.what();
  }
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// ---------------------------------------------------------------------------------------------------
// 1. Complex A and the requested path.

TEST(SelectiveScanApi, ComplexAChunkedPathIsRefusedSequentialRuns) {
  ScanCase c;
  c.dtype = DType::f32, c.complex = true, c.b = 2, c.d = 4, c.l = 9, c.n = 3, c.g = 2, c.has_init = true;
  const ScanData s = make_data(c);
  const auto ref = run(s, ScanPath::reference);
  for (ScanPath path : {ScanPath::automatic, ScanPath::sequential}) {  // the complex loop is the sequential scan
    const auto r = run(s, path, 2);
    EXPECT_EQ(r.path, "cpu-scalar-complex");
    EXPECT_LE(rel_err(r.out, ref.out), 1e-5);
  }
  expect_error([&] { run(s, ScanPath::chunked, 2); },
               {"selective_scan: argument 'path'", "complex A", "ScanPath::sequential"});
  SelectiveScanOptions o;
  o.path = ScanPath::chunked;
  expect_error([&] { ssm::selective_scan_backward(s.inputs(), s.u, std::nullopt, o); },
               {"selective_scan_backward: argument 'path'", "complex A", "ScanPath::sequential"});
  o.path = ScanPath::sequential;
  EXPECT_EQ(ssm::selective_scan_backward(s.inputs(), s.u, std::nullopt, o).path, "cpu-per-channel");
}

// ---------------------------------------------------------------------------------------------------
// 2. save_chunk_states: saved wherever asked, or an error.

TEST(SelectiveScanApi, SaveChunkStatesMakesAutomaticRunTheSequentialPath) {
  // One channel block, 8192 steps, 2 threads: automatic alone splits the sequence in time (chunked), which
  // saves nothing; with save_chunk_states it runs the sequential path and returns the states.
  ScanCase c;
  c.dtype = DType::f32, c.b = 1, c.d = 3, c.l = 8192, c.n = 4, c.has_D = c.has_init = true;
  const ScanData s = make_data(c);
  SelectiveScanOptions o;
  o.num_threads = 2;
  ASSERT_TRUE(ends_with(ssm::selective_scan(s.inputs(), o).path, "-chunked"));  // the case this test is about
  o.save_chunk_states = true;
  const auto r = ssm::selective_scan(s.inputs(), o);
  EXPECT_TRUE(ends_with(r.path, "-sequential")) << r.path;
  ASSERT_TRUE(r.chunk_states.defined()) << r.path;
  EXPECT_EQ(r.chunk_states.shape(), (ssm::Dims{1, 64, 3, 4}));
  o.path = ScanPath::sequential;
  const auto seq = ssm::selective_scan(s.inputs(), o);
  EXPECT_EQ(rel_err(r.chunk_states, seq.chunk_states), 0.0);
  // and the backward restarting from them gives the gradients of the one that recomputes them
  SelectiveScanOptions bo;
  bo.num_threads = 2;
  const auto recomputed = ssm::selective_scan_backward(s.inputs(), s.u, std::nullopt, bo);
  bo.chunk_states = r.chunk_states.view();
  const auto g = ssm::selective_scan_backward(s.inputs(), s.u, std::nullopt, bo);
  EXPECT_LE(rel_err(g.grad_u, recomputed.grad_u), 1e-5);
  EXPECT_LE(rel_err(g.grad_A, recomputed.grad_A), 1e-5);
  EXPECT_LE(rel_err(g.grad_B, recomputed.grad_B), 1e-5);
}

TEST(SelectiveScanApi, SaveChunkStatesWhereNothingCanBeSavedIsAnError) {
  SelectiveScanOptions save;
  save.save_chunk_states = true;
  ScanCase cc;
  cc.dtype = DType::f32, cc.complex = true, cc.l = 9;
  const ScanData sc = make_data(cc);
  expect_error([&] { ssm::selective_scan(sc.inputs(), save); }, {"argument 'save_chunk_states'", "complex A"});

  ScanCase rc;
  rc.dtype = DType::f32, rc.b = 1, rc.d = 3, rc.l = 300, rc.n = 4;
  const ScanData sr = make_data(rc);
  for (ScanPath path : {ScanPath::chunked, ScanPath::reference}) {
    SelectiveScanOptions o = save;
    o.path = path;
    expect_error([&] { ssm::selective_scan(sr.inputs(), o); },
                 {"argument 'save_chunk_states'", "ScanPath::sequential or ScanPath::automatic"});
  }
  rc.cu = {0, 100, 300};
  const ScanData sv = make_data(rc);
  expect_error([&] { ssm::selective_scan(sv.inputs(), save); }, {"argument 'save_chunk_states'", "cu_seqlens"});
  // selective_scan_into needs somewhere to put them
  Tensor out = Tensor::empty({1, 3, 300}, DType::f32);
  expect_error([&] { ssm::selective_scan_into(sr.inputs(), out, std::nullopt, save); },
               {"argument 'save_chunk_states'", "chunk_states"});
  Tensor states;
  (void)ssm::selective_scan_into(sr.inputs(), out, std::nullopt, save, &states);
  ASSERT_TRUE(states.defined());
  EXPECT_EQ(states.shape(), (ssm::Dims{1, 3, 3, 4}));
}

// ---------------------------------------------------------------------------------------------------
// 4. The backward's options without a grad_last_state.

TEST(SelectiveScanApi, BackwardTakesOptionsWithoutGradLastState) {
  ScanCase c;
  c.dtype = DType::f64, c.b = 1, c.d = 2, c.l = 6, c.n = 2, c.has_D = true;
  const ScanData s = make_data(c);
  SelectiveScanOptions o;
  o.path = ScanPath::reference;
  const auto g = ssm::selective_scan_backward(s.inputs(), s.u, o);
  EXPECT_EQ(g.path, "reference");
  const auto want = ssm::selective_scan_backward(s.inputs(), s.u, std::nullopt, o);
  EXPECT_EQ(rel_err(g.grad_u, want.grad_u), 0.0);
  EXPECT_EQ(rel_err(g.grad_A, want.grad_A), 0.0);
  o.num_threads = -1;  // the options are really used
  expect_error([&] { ssm::selective_scan_backward(s.inputs(), s.u, o); }, {"'num_threads'"});
}

}  // namespace
