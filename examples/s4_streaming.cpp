// Streaming with an S4D layer (docs/math.md §4): a long signal arrives in pieces of irregular size; each piece is run
// in conv mode (kernel + FFT convolution) continuing from the carried state, and the result is compared with one
// conv-mode call over the whole signal and with step mode (one sample at a time, O(N) state per channel).
// The state is saved after the first half and restored into a fresh object, as a server would between requests.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 + AVX-512 false positive in Eigen (hippo.hpp)
#endif
#include <cmath>
#include <cstdio>
#include <sstream>
#include <vector>

#include "ssm/s4.hpp"

int main() {
  ssm::S4DLayer<float>::Config cfg;
  cfg.h = 4;   // channels
  cfg.N = 64;  // state size (32 complex modes per channel)
  cfg.init = ssm::S4DInit::lin;
  cfg.mix = ssm::OutputMix::gelu_glu;
  ssm::S4DLayer<float> layer(cfg);

  const long l = 20000, h = cfg.h;
  std::vector<float> x(l * h);  // (1, l, h): a chirp plus a slow square wave per channel
  for (long t = 0; t < l; ++t)
    for (long c = 0; c < h; ++c)
      x[t * h + c] = std::sin(1e-6f * t * t * (c + 1)) + (((t / 2500) + c) % 2 ? 0.5f : -0.5f);

  std::vector<float> y_once(l * h);  // (1, l, h)
  layer.forward(x.data(), y_once.data(), 1, l);

  std::vector<float> y_stream(l * h);  // (1, l, h)
  auto state = layer.initial_state(1);
  const long pieces[] = {1, 999, 3000, 17, 5983, 4000, 6000};
  long t0 = 0;
  for (long n : pieces) {
    layer.forward(x.data() + t0 * h, y_stream.data() + t0 * h, 1, n, state);
    t0 += n;
    if (t0 == 10000) {  // save, drop, restore
      std::stringstream blob;
      state.save(blob);
      state = ssm::S4State<float>::load(blob);
      std::printf("state saved and restored at t = %ld (%zu bytes)\n", t0, blob.str().size());
    }
  }

  std::vector<float> y_step(l * h);  // (1, l, h)
  auto step_state = layer.initial_state(1);
  for (long t = 0; t < l; ++t) layer.step(x.data() + t * h, y_step.data() + t * h, step_state);

  double err_stream = 0, err_step = 0, scale = 0;
  for (long i = 0; i < l * h; ++i) {
    err_stream = std::max(err_stream, double(std::abs(y_stream[i] - y_once[i])));
    err_step = std::max(err_step, double(std::abs(y_step[i] - y_once[i])));
    scale = std::max(scale, double(std::abs(y_once[i])));
  }
  std::printf("l = %ld, h = %ld, N = %ld, %ld pieces\n", l, h, cfg.N, t0 == l ? long(std::size(pieces)) : -1L);
  std::printf("max |pieces - one call| / max |y| = %.2e\n", err_stream / scale);
  std::printf("max |step - one call|   / max |y| = %.2e\n", err_step / scale);
  return err_stream / scale < 1e-3 && err_step / scale < 1e-3 ? 0 : 1;
}
