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
