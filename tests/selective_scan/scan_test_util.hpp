// Test helpers for the selective scan: the problems of the one generator (tests/conformance/scan_problem.hpp), the
// values of a tensor as doubles and a normalized error metric.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "../conformance/scan_problem.hpp"
#include "ssm/core.hpp"
#include "ssm/ops/selective_scan.hpp"

namespace scan_test {

using ssm::DType;
using ssm::index_t;
using ssm::Tensor;

// The cases and their data: the one scan problem generator (tests/conformance/scan_problem.hpp).
using scan_problem::complex_dtype;
using scan_problem::make_data;
using scan_problem::ScanCase;
using scan_problem::ScanData;
using scan_problem::set;
using scan_problem::weight_dtype;

/// All elements as doubles (complex: re, im interleaved), in row-major order of the shape.
inline std::vector<double> values(const ssm::TensorView& v) {
  Tensor t = Tensor::empty(v.shape(), v.dtype());
  ssm::copy(t, v);
  std::vector<double> r;
  const index_t m = t.numel();
  for (index_t i = 0; i < m; ++i) {
    switch (t.dtype()) {
      case DType::f32: r.push_back(t.view().data_as<float>()[i]); break;
      case DType::f64: r.push_back(t.view().data_as<double>()[i]); break;
      case DType::f16: r.push_back(static_cast<float>(t.view().data_as<ssm::half>()[i])); break;
      case DType::bf16: r.push_back(static_cast<float>(t.view().data_as<ssm::bfloat16>()[i])); break;
      case DType::c64: {
        auto z = t.view().data_as<std::complex<float>>()[i];
        r.push_back(z.real());
        r.push_back(z.imag());
        break;
      }
      case DType::c128: {
        auto z = t.view().data_as<std::complex<double>>()[i];
        r.push_back(z.real());
        r.push_back(z.imag());
        break;
      }
      default: ADD_FAILURE() << "unsupported dtype"; return r;
    }
  }
  return r;
}

/// max |x - ref| / max |ref|: the error relative to the tensor's scale (an elementwise ratio is
/// meaningless where ref crosses zero).
inline double rel_err(const ssm::TensorView& x, const ssm::TensorView& ref) {
  const std::vector<double> a = values(x), r = values(ref);
  EXPECT_EQ(a.size(), r.size());
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < std::min(a.size(), r.size()); ++i) {
    if (std::isnan(a[i]) != std::isnan(r[i])) return INFINITY;
    num = std::max(num, std::abs(a[i] - r[i]));
    den = std::max(den, std::abs(r[i]));
  }
  return den > 0 ? num / den : num;
}

/// Forward through the op with a given path; returns (out, last_state).
inline ssm::SelectiveScanOutputs run(const ScanData& s, ssm::ScanPath path, int threads = 0, index_t chunk_len = 0) {
  ssm::SelectiveScanOptions o;
  o.path = path;
  o.num_threads = threads;
  o.chunk_len = chunk_len;
  o.return_last_state = true;
  return ssm::selective_scan(s.inputs(), o);
}

inline std::string describe(const ScanCase& c) { return c.describe(); }

}  // namespace scan_test
