// fft_conv (ops/fft_conv.hpp): the causal convolution y_t = sum_{j<=t} K_j x_{t-j} of the S4 / S4D layers, one
// channel per call on host pointers. "fast" is ssm::causal_conv (direct up to kCausalConvDirectMaxLength, the
// zero-padded real FFT above, one RealFFT plan reused across the channels of a case), "reference" is
// ssm::causal_conv_direct, both against the direct sum in double: f64 and f32, one step, lengths either side of the
// crossover, a smooth and a prime FFT size. CPU only (no device entry): the CUDA backends skip it.
#include <string>
#include <vector>

#include "../registry.hpp"
#include "ssm/ops/fft_conv.hpp"

namespace conformance {
namespace {

struct ConvShape {
  index_t channels, l;
};

const ConvShape& shape_of(const Case& c) { return *std::any_cast<ConvShape>(&c.params); }

std::vector<Case> fft_conv_cases() {
  const ConvShape shapes[] = {
      {1, 1},     // one step
      {3, 37},    // direct
      {2, 128},   // the last direct length
      {2, 129},   // the first FFT length
      {3, 500},   // FFT size 999 -> 1000 (smooth)
      {1, 1031},  // FFT size 2061 -> 2160
  };
  std::vector<Case> cases;
  std::mt19937_64 rng(41);
  for (const ConvShape& s : shapes) {
    for (DType dt : {DType::f64, DType::f32}) {
      Case c;
      c.name = "channels=" + std::to_string(s.channels) + " l=" + std::to_string(s.l) + " " + std::string(ssm::name(dt));
      c.inputs.push_back(dense_arg("x", uniform(rng, {s.channels, s.l}, dt, -1, 1)));  // (channels, l)
      c.inputs.push_back(dense_arg("K", uniform(rng, {s.channels, s.l}, dt, -1, 1)));  // (channels, l)
      c.outputs.push_back({"y", {s.channels, s.l}, dt, {}});                            // (channels, l)
      c.params = s;
      cases.push_back(std::move(c));
    }
  }
  return cases;
}

template <class T>
void convolve(const ConvShape& s, const TensorView& x, const TensorView& K, const TensorView& y, bool reference) {
  ssm::fft::RealFFT<T> plan;
  for (index_t ch = 0; ch < s.channels; ++ch) {
    const T* xc = x.data_as<const T>() + ch * s.l;
    const T* Kc = K.data_as<const T>() + ch * s.l;
    T* yc = y.data_as<T>() + ch * s.l;
    if (reference)
      ssm::causal_conv_direct(xc, Kc, yc, s.l);
    else
      ssm::causal_conv(xc, Kc, yc, s.l, &plan);
  }
}

void fft_conv_forward(const Case& c, const Views& in, Outputs& out, const RunConfig& cfg) {
  const bool reference = cfg.path == "reference";
  if (in[0].dtype() == DType::f64)
    convolve<double>(shape_of(c), in[0], in[1], out.views[0], reference);
  else
    convolve<float>(shape_of(c), in[0], in[1], out.views[0], reference);
}

/// The direct sum in double, rounded once to the output dtype.
void fft_conv_forward_reference(const Case& c, const Views& in, const Views& out) {
  const ConvShape& s = shape_of(c);
  const std::vector<double> x = to_doubles(in[0]), K = to_doubles(in[1]);
  std::vector<double> y(x.size());
  for (index_t ch = 0; ch < s.channels; ++ch)
    ssm::causal_conv_direct(x.data() + ch * s.l, K.data() + ch * s.l, y.data() + ch * s.l, s.l);
  from_doubles(out[0], y);
}

std::string fft_conv_unsupported(const Case&, const RunConfig&, Pass) { return {}; }

/// Relative to the largest output (|y| grows like sqrt(l) for random signs): the direct f32 sum adds up to 1031
/// products in order, the FFT's error grows like log(n) eps over the signals' norms. Measured on uniform signals of
/// 1 to 4000 steps (ssm::causal_conv against the double direct sum): at most 3.2e-7 in f32, 3.8e-15 in f64.
double fft_conv_tolerance(DType dt, Pass) { return dt == DType::f64 ? 1e-13 : 2e-6; }

const Register reg{Op{"fft_conv", {"reference", "fast"}, false, fft_conv_cases, fft_conv_unsupported,
                      fft_conv_forward, nullptr, fft_conv_forward_reference, nullptr, fft_conv_tolerance}};

}  // namespace
}  // namespace conformance
