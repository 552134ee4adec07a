// Module header: S4 / S4D (docs/math.md §4): FFT helpers, Vandermonde and Cauchy + Woodbury kernels with their powers
// references, causal FFT / direct convolution, the S4 and S4D layers with step mode and a saveable state.
#pragma once

#include "ssm/layers/s4.hpp"
#include "ssm/math/fft.hpp"
#include "ssm/math/s4_kernel.hpp"
#include "ssm/math/causal_conv.hpp"
