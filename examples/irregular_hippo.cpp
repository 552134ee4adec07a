// An irregularly sampled signal with gaps run through a HiPPO-LegS LSSL (LSSL paper §2-3, HiPPO §3): the
// continuous view integrates each interval exactly with its own Δ_k, and the final state is decoded back into
// the signal's history with the Legendre basis, for several state sizes N.
//
// With h' = (A h + B x) / τ and the LegS (A, B), the state holds the Legendre coefficients of the input's
// history under exponentially warped time: lag r maps to w = exp(-r / τ) in (0, 1], and
//   x(t - r) ≈ Σ_n h_n sqrt(2n+1) P_n(2w - 1).
// Recent history is resolved finely, old history coarsely (the "long memory" of HiPPO).
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 with -march=native (AVX-512) reports a false -Wmaybe-uninitialized inside Eigen's vector kernels.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numbers>
#include <random>
#include <vector>

#include <ssm/layers.hpp>
#include <ssm/math.hpp>

namespace {

double signal(double t) { return std::sin(2 * std::numbers::pi * 0.3 * t) + 0.5 * std::sin(2 * std::numbers::pi * 0.11 * t + 1); }

// sqrt(2n+1) P_n(s), n = 0..N-1, s in [-1, 1]
Eigen::VectorXd legendre(int N, double s) {
  Eigen::VectorXd P(N);  // (n)
  double p_prev = 0, p = 1;
  for (int n = 0; n < N; ++n) {
    P(n) = std::sqrt(2.0 * n + 1) * p;
    const double p_next = ((2 * n + 1) * s * p - n * p_prev) / (n + 1);
    p_prev = p;
    p = p_next;
  }
  return P;
}

}  // namespace

int main() {
  const double tau = 2.0, t_end = 20.0;  // memory timescale (s), length of the recording (s)

  // Irregular sampling: jittered steps of 5-20 ms, 15 % of samples dropped at random, and a 1.5 s dropout.
  std::mt19937 rng(42);
  std::uniform_real_distribution<double> step(0.005, 0.02), coin(0, 1);
  std::vector<double> times, Delta;  // (l), (l)
  double t = 0, last = 0;
  while (true) {
    t += step(rng);
    if (t > t_end) break;
    const bool dropout = t > 17.0 && t < 18.5;
    if (dropout || coin(rng) < 0.15) continue;  // missing sample: the next interval is longer
    times.push_back(t);
    Delta.push_back(t - last);
    last = t;
  }
  const auto l = static_cast<Eigen::Index>(times.size());
  Eigen::MatrixXd x(l, 1);  // (l, m)
  for (Eigen::Index k = 0; k < l; ++k) x(k, 0) = signal(times[static_cast<size_t>(k)]);
  double longest = 0;
  for (double d : Delta) longest = std::max(longest, d);
  std::printf("%ld samples over %.1f s, steps %.3f .. %.3f s (the longest is the dropout)\n\n", static_cast<long>(l),
              t_end, *std::min_element(Delta.begin(), Delta.end()), longest);

  // What the model saw: x_k is held on (t_{k-1}, t_k].
  auto held = [&](double s) {
    const auto it = std::lower_bound(times.begin(), times.end(), s);
    return it == times.end() ? x(l - 1, 0) : x(it - times.begin(), 0);
  };

  std::printf("Relative RMS error of the decoded history, lags 0 .. %.0f s (uniform in warped time):\n"
              "  N   vs held input   vs true signal   vs true signal outside the dropout\n",
              3 * tau);
  for (int N : {8, 16, 32, 64}) {
    const ssm::hippo::Transition legs = ssm::hippo::transition(ssm::hippo::Measure::legs, N);
    const ssm::LSSL<double> lssl(legs.A / tau, legs.B / tau, Eigen::MatrixXd::Zero(1, N), Eigen::MatrixXd::Zero(1, 1));
    Eigen::VectorXd h = Eigen::VectorXd::Zero(N);  // (n)
    lssl.simulate(x, Delta, &h);                   // exact, one matrix exponential per distinct Δ_k
    const double t_last = times.back();
    double e_held = 0, e_true = 0, norm = 0, e_out = 0, norm_out = 0;
    const int points = 600;
    for (int j = 0; j < points; ++j) {
      const double w = std::exp(-3.0) + (1 - std::exp(-3.0)) * (j + 0.5) / points;  // warped time
      const double r = -tau * std::log(w);                                          // lag (s)
      const double rec = h.dot(legendre(N, 2 * w - 1));
      e_held += std::pow(rec - held(t_last - r), 2);
      e_true += std::pow(rec - signal(t_last - r), 2);
      norm += std::pow(signal(t_last - r), 2);
      if (t_last - r < 17.0 || t_last - r > 18.5) {
        e_out += std::pow(rec - signal(t_last - r), 2);
        norm_out += std::pow(signal(t_last - r), 2);
      }
    }
    std::printf("%3d   %13.3e   %14.3e   %34.3e\n", N, std::sqrt(e_held / norm), std::sqrt(e_true / norm),
                std::sqrt(e_out / norm_out));
    if (N == 64) {
      std::printf("\nN = 64, the history read back from the state at t = %.3f s:\n   lag (s)   true    held   decoded\n",
                  t_last);
      for (double r : {0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0}) {
        const double w = std::exp(-r / tau);
        std::printf("  %7.2f  %6.3f  %6.3f  %8.3f%s\n", r, signal(t_last - r), held(t_last - r),
                    h.dot(legendre(N, 2 * w - 1)), (t_last - r > 17.0 && t_last - r < 18.5) ? "   (in the dropout)" : "");
      }
    }
  }
  return 0;
}
