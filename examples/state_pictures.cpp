// Pictures of a state-space layer's hidden state, as the seed documents show them:
//   1. hippo_legs_state.ppm: HiPPO-LegS (docs/math.md §3, ssm::hippo::transition, N = 16, bilinear §2) state evolving
//      token by token on a smooth signal with one spike; rows = state coefficient n, columns = tokens;
//   2. s4d_lin_state.ppm: a diagonal S4D-Lin state (ssm::hippo::s4d_lin: A_n = −1/2 + iπn, ZOH A_bar = exp(ΔA),
//      B_bar = (exp(ΔA) − 1)/A · B, §2) on the same input, real parts;
//   3. selective_delta.ppm: a hand-set selective layer (S6, §5): Δ_t = softplus(w x_t + b) is large on
//      marker tokens (reset: the state forgets and takes the new input) and small on the others (keep);
//      rows: input, Δ_t, then the 16 states h_t[n] with A_n = −(n + 1).
// The state never grows: each picture has the same height whatever the number of tokens.
// Usage: example_state_pictures [out_dir]  (default out/pictures; also writes .dat matrices and a gnuplot
// script state_pictures.gp that renders them as PNG: cd out_dir && gnuplot state_pictures.gp)
// GCC 12 false "may be used uninitialized" warnings inside Eigen 3.4's AVX-512 code: see ssm/cpu/attention.hpp.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <Eigen/Dense>

#include "ssm/math/hippo.hpp"
#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

using Grid = std::vector<std::vector<double>>;  // (rows, tokens)

/// Blue (negative) – white (0) – red (positive), scaled by the largest magnitude in each row block.
void write_ppm(const std::string& path, const Grid& g, int cell) {
  const int rows = static_cast<int>(g.size()), cols = static_cast<int>(g[0].size());
  double m = 1e-12;
  for (const auto& r : g)
    for (double v : r) m = std::max(m, std::abs(v));
  std::ofstream f(path, std::ios::binary);
  f << "P6\n" << cols * cell << " " << rows * cell << "\n255\n";
  for (int r = 0; r < rows; ++r)
    for (int y = 0; y < cell; ++y)
      for (int c = 0; c < cols; ++c) {
        const double v = std::clamp(g[static_cast<std::size_t>(r)][static_cast<std::size_t>(c)] / m, -1.0, 1.0);
        const auto fade = [](double a) { return static_cast<unsigned char>(255.0 * (1.0 - a)); };
        const unsigned char px[3] = {v < 0 ? fade(-v) : static_cast<unsigned char>(255), v > 0 ? fade(v) : fade(-v),
                                     v > 0 ? fade(v) : static_cast<unsigned char>(255)};
        for (int x = 0; x < cell; ++x) f.write(reinterpret_cast<const char*>(px), 3);
      }
}

void write_dat(const std::string& path, const Grid& g) {
  std::ofstream f(path);
  for (const auto& r : g) {
    for (std::size_t c = 0; c < r.size(); ++c) f << (c ? " " : "") << r[c];
    f << "\n";
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "out/pictures";
  std::filesystem::create_directories(dir);
  constexpr int N = 16, L = 96;
  const double Delta = 1.0 / 16;  // step: the LegS memory spans roughly 1/Δ tokens
  std::vector<double> u(L);       // (L) a slow sine with a spike at token 20
  for (int t = 0; t < L; ++t) u[static_cast<std::size_t>(t)] = std::sin(2 * M_PI * t / 48.0) + (t == 20 ? 3.0 : 0.0);

  // 1. HiPPO-LegS, bilinear: A_bar = (I − Δ/2 A)^{-1}(I + Δ/2 A), B_bar = (I − Δ/2 A)^{-1} Δ B.
  const ssm::hippo::Transition legs_AB = ssm::hippo::transition(ssm::hippo::Measure::legs, N);
  const Eigen::MatrixXd& A = legs_AB.A;  // (N, N)
  const Eigen::VectorXd& B = legs_AB.B;  // (N)
  const Eigen::MatrixXd I = Eigen::MatrixXd::Identity(N, N);
  const Eigen::PartialPivLU<Eigen::MatrixXd> lu(I - Delta / 2 * A);
  const Eigen::MatrixXd A_bar = lu.solve(I + Delta / 2 * A);  // (N, N)
  const Eigen::VectorXd B_bar = lu.solve(Delta * B);           // (N)
  Grid legs(N, std::vector<double>(L));
  Eigen::VectorXd h = Eigen::VectorXd::Zero(N);  // (N)
  for (int t = 0; t < L; ++t) {
    h = A_bar * h + B_bar * u[static_cast<std::size_t>(t)];
    for (int n = 0; n < N; ++n) legs[static_cast<std::size_t>(n)][static_cast<std::size_t>(t)] = h(n);
  }

  // 2. S4D-Lin, ZOH on the diagonal: A_bar_n = exp(Δ A_n), B_bar_n = (exp(Δ A_n) − 1) / A_n (B_n = 1).
  Grid s4d(N, std::vector<double>(L));
  std::vector<std::complex<double>> hs(N);                   // (N)
  const Eigen::VectorXcd Lambda = ssm::hippo::s4d_lin(2 * N);  // (N) one of each conjugate pair
  for (int t = 0; t < L; ++t)
    for (int n = 0; n < N; ++n) {
      const std::complex<double> An = Lambda(n);
      const std::complex<double> Ab = std::exp(Delta * An), Bb = (Ab - 1.0) / An;
      hs[static_cast<std::size_t>(n)] = Ab * hs[static_cast<std::size_t>(n)] + Bb * u[static_cast<std::size_t>(t)];
      s4d[static_cast<std::size_t>(n)][static_cast<std::size_t>(t)] = hs[static_cast<std::size_t>(n)].real();
    }

  // 3. Hand-set selective layer: tokens are noise (|x| < 0.3) except markers (x = ±2) at a few positions.
  //    Δ_t = softplus(w |x_t| + b) with w = 6, b = −6: markers give Δ ≈ 6 (reset), noise Δ ≈ 0.01 (keep).
  std::vector<double> x(L);
  for (int t = 0; t < L; ++t) x[static_cast<std::size_t>(t)] = 0.3 * std::sin(1.7 * t) * std::cos(0.45 * t);
  for (int t : {8, 30, 55, 80}) x[static_cast<std::size_t>(t)] = (t % 2 ? -2.0 : 2.0);
  Grid sel(N + 2, std::vector<double>(L));
  std::vector<double> hsel(N, 0.0);
  std::printf("token  x_t      Delta_t  (large = reset, small = keep)\n");
  for (int t = 0; t < L; ++t) {
    const double xt = x[static_cast<std::size_t>(t)];
    const double pre = 6.0 * std::abs(xt) - 6.0;
    const double Dt = pre > 20 ? pre : std::log1p(std::exp(pre));
    sel[0][static_cast<std::size_t>(t)] = xt;
    sel[1][static_cast<std::size_t>(t)] = Dt;
    for (int n = 0; n < N; ++n) {  // h = exp(Δ A_n) h + Δ B x, A_n = −(n + 1), B = 1
      double& hn = hsel[static_cast<std::size_t>(n)];
      hn = std::exp(-Dt * (n + 1)) * hn + Dt * xt;
      sel[static_cast<std::size_t>(n + 2)][static_cast<std::size_t>(t)] = hn;
    }
    if (Dt > 1 || t < 3) std::printf("%5d  %+6.3f   %7.4f  %s\n", t, xt, Dt, Dt > 1 ? "reset" : "keep");
  }

  write_ppm(dir + "/hippo_legs_state.ppm", legs, 8);
  write_ppm(dir + "/s4d_lin_state.ppm", s4d, 8);
  write_ppm(dir + "/selective_delta.ppm", sel, 8);
  write_dat(dir + "/hippo_legs_state.dat", legs);
  write_dat(dir + "/s4d_lin_state.dat", s4d);
  write_dat(dir + "/selective_delta.dat", sel);
  std::ofstream gp(dir + "/state_pictures.gp");
  gp << "set terminal pngcairo size 1000,360 font 'Sans,10'\nset palette defined (-1 'blue', 0 'white', 1 'red')\n"
        "set xlabel 'token t'\nset ylabel 'state n'\nset yrange [-0.5:15.5] reverse\nset xrange [-0.5:95.5]\n"
        "stats 'hippo_legs_state.dat' matrix nooutput\nM = abs(STATS_max) > abs(STATS_min) ? abs(STATS_max) : abs(STATS_min)\nset cbrange [-M:M] \n"
        "set output 'hippo_legs_state.png'\nset title 'HiPPO-LegS state (N = 16) token by token: input sin + spike at t = 20'\n"
        "plot 'hippo_legs_state.dat' matrix with image notitle\n"
        "stats 's4d_lin_state.dat' matrix nooutput\nM = abs(STATS_max) > abs(STATS_min) ? abs(STATS_max) : abs(STATS_min)\nset cbrange [-M:M]\n"
        "set output 's4d_lin_state.png'\nset title 'S4D-Lin state (Re h_n, N = 16), same input'\n"
        "plot 's4d_lin_state.dat' matrix with image notitle\n"
        "set terminal pngcairo size 1000,520 font 'Sans,10'\nset output 'selective_delta.png'\nunset title\nset multiplot layout 2,1 title 'Hand-set selective layer: large {/Symbol D} = reset, small = keep'\n"
        "unset yrange\nunset xlabel\nset ylabel 'input x_t'\nset y2label '{/Symbol D}_t'\nset yrange [*:*] noreverse\nset logscale y2\nset y2tics\nset key top center horizontal opaque\n"
        "plot 'selective_delta.dat' matrix every :::0::0 using 1:3 with impulses lw 2 title 'input x_t', "
        "'' matrix every :::1::1 using 1:3 axes x1y2 with linespoints pt 7 ps 0.5 title '{/Symbol D}_t (right, log)'\n"
        "unset logscale y2\nunset y2tics\nunset y2label\nset xlabel 'token t'\nset ylabel 'state h_t[n], n = 0..15'\nset yrange [1.5:17.5] reverse\nset ytics ('0' 2, '5' 7, '10' 12, '15' 17)\n"
        "stats 'selective_delta.dat' matrix every :::2 nooutput\nM = abs(STATS_max) > abs(STATS_min) ? abs(STATS_max) : abs(STATS_min)\nset cbrange [-M:M]\n"
        "plot 'selective_delta.dat' matrix every :::2 with image notitle\nunset multiplot\n";
  std::printf("wrote %s/{hippo_legs_state,s4d_lin_state,selective_delta}.{ppm,dat} and state_pictures.gp\n", dir.c_str());
  return 0;
}
