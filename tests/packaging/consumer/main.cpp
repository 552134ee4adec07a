// Consumer of the installed package (find_package; under g++ and clang++). It includes the public umbrella headers and
// calls into each part of the library (tensors and DLPack, discretization, HiPPO, S4D, the selective scan,
// attention), so that the library code a user instantiates is compiled here under the consumer's flags:
// CMakeLists.txt builds it with -Wall -Wextra -Werror -march=native under g++ and clang++. It also checks
// that linking only ssm::ssm leaves the CUDA backend off (cuda_main.cpp checks that ssm::cuda turns it on).
#include <cmath>
#include <cstdio>
#include <vector>

#include <ssm/math/discretize.hpp>
#include <ssm/ssm.hpp>

namespace {

int check_math() {
  const ssm::hippo::Transition legs = ssm::hippo::transition(ssm::hippo::Measure::legs, 8);
  const Eigen::MatrixXd B = legs.B;  // (8, 1)
  // Bilinear agrees with ZOH to O((Delta |A|)^3): about 1e-7 relative here.
  const ssm::DiscreteSystem<double> zoh = ssm::discretize_zoh<double>(legs.A, B, 1e-3);
  const ssm::DiscreteSystem<double> bil = ssm::discretize_gbt<double>(legs.A, B, 1e-3, 0.5);
  if ((zoh.A_bar - bil.A_bar).norm() > 1e-5 * zoh.A_bar.norm()) return 10;
  const ssm::hippo::DPLR dplr = ssm::hippo::dplr_legs(8);
  if (dplr.Lambda.size() != 4) return 11;
  return 0;
}

int check_s4d() {
  ssm::S4DLayer<float>::Config cfg;
  cfg.h = 2;
  cfg.N = 8;
  const ssm::S4DLayer<float> layer(cfg);
  const long l = 16;
  std::vector<float> x(static_cast<size_t>(l * cfg.h), 1.0f), y(x.size());  // (b = 1, l, h)
  layer.forward(x.data(), y.data(), 1, l);
  for (float v : y)
    if (!std::isfinite(v)) return 20;
  return 0;
}

int check_scan() {
  const ssm::index_t b = 1, d = 4, n = 3, l = 9;
  const ssm::Tensor u = ssm::Tensor::from_vector<float>({b, d, l}, std::vector<float>(b * d * l, 0.5f));
  const ssm::Tensor delta = ssm::Tensor::from_vector<float>({b, d, l}, std::vector<float>(b * d * l, 0.1f));
  const ssm::Tensor A = ssm::Tensor::from_vector<float>({d, n}, std::vector<float>(d * n, -1.0f));
  const ssm::Tensor BC = ssm::Tensor::from_vector<float>({b, 1, n, l}, std::vector<float>(b * n * l, 1.0f));
  ssm::SelectiveScanInputs in;
  in.u = u;
  in.delta = delta;
  in.A = A;
  in.B = BC;
  in.C = BC;
  const ssm::SelectiveScanOutputs r = ssm::selective_scan(in);
  const ssm::SelectiveScanOutputs ref = ssm::selective_scan(in, {.path = ssm::ScanPath::reference});
  const std::vector<float> a = r.out.to_vector<float>(), e = ref.out.to_vector<float>();
  for (size_t i = 0; i < a.size(); ++i)
    if (std::abs(a[i] - e[i]) > 1e-4f * (1.0f + std::abs(e[i]))) return 30;
  return 0;
}

int check_attention() {
  const ssm::index_t b = 1, l = 5, h = 2, p = 4;
  const ssm::Tensor q = ssm::Tensor::from_vector<float>({b, l, h, p}, std::vector<float>(b * l * h * p, 0.25f));
  const ssm::AttentionResult r = ssm::attention_forward(q, q, q);
  return r.out.to_vector<float>()[0] == 0.25f ? 0 : 40;
}

}  // namespace

int main() {
  ssm::Tensor x = ssm::Tensor::from_vector<float>({2, 2}, {1, 2, 3, 4});
  ssm::Tensor y = ssm::from_dlpack(ssm::to_dlpack(x));
  if (y.data() != x.data()) return 1;
  for (int (*check)() : {check_math, check_s4d, check_scan, check_attention})
    if (const int rc = check()) return rc;
  if (ssm::cuda_linked()) return 3;  // only ssm::cuda turns it on (cuda_main.cpp)
  std::printf("consumer ok (simd %s)\n", ssm::simd_level());
  return 0;
}
