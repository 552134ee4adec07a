// The conformance test: every op registered in tests/conformance/ops/ on every backend of backends(), forward and
// backward, every case of the op's generator, against the op's reference (registry.hpp). One GoogleTest test per
// (op, backend) the op has an implementation for, named op__backend; a device that is not there (no GPU) is a skip
// with its reason, and so is each case a backend cannot take (a dtype, a feature), counted in the test's output.
// A new op joins by adding a registration file to ops/, never a test here.
//
// This file makes two programs over one object library of the registrations (CMakeLists.txt): test_conformance runs
// the CPU backends and cuda_emulated (the kernel sources compiled for the host, so it cannot link ssm::cuda, whose
// nvcc-compiled kernels carry the same names); test_conformance_cuda (SSM_CONFORMANCE_CUDA) links ssm::cuda and runs
// the "cuda" backend, skipping with its reason where no GPU is usable.
#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <cstdio>
#include <ostream>
#include <string>
#include <vector>

#include "registry.hpp"
#ifndef SSM_CONFORMANCE_CUDA
#include "emu/backend.hpp"
#endif

namespace conformance {
namespace {

struct Pair {
  std::size_t op, backend;
};

RunConfig config_of(const Backend& backend) {
  RunConfig cfg;
  cfg.device = backend.device;
  backend.tweak(cfg);
  return cfg;
}

/// Whether this program runs the backend (see the top of the file).
bool in_this_program(const Backend& backend) {
#ifdef SSM_CONFORMANCE_CUDA
  return backend.name == "cuda";
#else
  return backend.name != "cuda";
#endif
}

/// Whether `op` has an implementation for what the backend asks: CUDA kernels, or the CPU path it names.
bool applicable(const Op& op, const RunConfig& cfg) {
  if (cfg.emulated || cfg.device.is_cuda()) return op.emulated;
  return std::find(op.paths.begin(), op.paths.end(), cfg.path) != op.paths.end();
}

/// Every (op, backend) the op has an implementation for: one test each.
std::vector<Pair> all_pairs() {
  std::vector<Pair> v;
  for (std::size_t o = 0; o < ops().size(); ++o)
    for (std::size_t b = 0; b < backends().size(); ++b)
      if (in_this_program(backends()[b]) && applicable(ops()[o], config_of(backends()[b]))) v.push_back({o, b});
  return v;
}

void PrintTo(const Pair& p, std::ostream* os) { *os << ops()[p.op].name << " on " << backends()[p.backend].name; }

class Conformance : public ::testing::TestWithParam<Pair> {};

TEST_P(Conformance, MatchesReference) {
  const Op& op = ops()[GetParam().op];
  const Backend& backend = backends()[GetParam().backend];
  const RunConfig cfg = config_of(backend);
#ifndef SSM_CONFORMANCE_CUDA
  std::optional<ssm::emu::ScopedEmulatedCuda> emulated;  // the emulated device for this test's runs
  if (cfg.emulated) emulated.emplace(ssm::emu::Order::random, 20261203);
#endif
  if (cfg.device.is_cuda()) {
    const ssm::BackendInfo info = ssm::backends();
    if (!info.cuda_usable) GTEST_SKIP() << "no usable CUDA device: " << info.cuda_status;
  }
  int ran = 0, skipped = 0;
  std::vector<std::string> reasons;
  for (const Case& c : op.cases()) {
    for (Pass pass : {Pass::forward, Pass::backward}) {
      if (pass == Pass::backward && (c.grads.empty() || !op.backward)) continue;
      const PassResult r = run_pass(op, c, cfg, pass);
      if (r.ran) {
        ++ran;
      } else {
        ++skipped;
        if (std::find(reasons.begin(), reasons.end(), r.skipped) == reasons.end()) reasons.push_back(r.skipped);
      }
    }
  }
  std::string why;
  for (const std::string& r : reasons) why += "\n  not run: " + r;
  std::printf("[ info     ] %s on %s: %d passes run, %d not run%s\n", op.name.c_str(), backend.name.c_str(), ran,
              skipped, why.c_str());
  EXPECT_GT(ran, 0) << "no case of " << op.name << " ran on " << backend.name;
}

INSTANTIATE_TEST_SUITE_P(Ops, Conformance, ::testing::ValuesIn(all_pairs()),
                         [](const ::testing::TestParamInfo<Pair>& info) {
                           return ops()[info.param.op].name + "__" + backends()[info.param.backend].name;
                         });

}  // namespace
}  // namespace conformance
