// The f32 -> f16 / bf16 cast kernel (cuda/kernels/cast.cuh) under the emulation: equal, bit for bit, to the host
// conversions (ssm::from_float: round to nearest even) on ordinary values, ties, subnormals, overflow, ±inf, NaN,
// with a grid smaller than the data (the grid-stride loop) and a ragged last block.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/cast.cuh"

namespace {

template <class Out>
void check_cast() {
  std::vector<float> src = {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 65520.0f, 1e9f, -1e9f, 6e-8f, 1e-40f,
                            std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(), 1.00048828125f /* a tie in f16 */,
                            1.00390625f /* a tie in bf16 */};
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-100.0f, 100.0f);
  while (src.size() < 1000) src.push_back(dist(rng));
  std::vector<Out> dst(src.size());
  const auto n = static_cast<std::int64_t>(src.size());
  for (unsigned blocks : {ssm::kernels::cast_blocks(n), 2u}) {  // one element per thread; and a striding grid
    std::fill(dst.begin(), dst.end(), ssm::from_float<Out>(-7.0f));
    ssm::emu::LaunchConfig cfg{ssm::emu::dim3(blocks), ssm::emu::dim3(ssm::kernels::kCastThreads), ssm::emu::Order::random, 5};
    auto report = ssm::emu::launch(cfg, ssm::kernels::cast_from_f32_kernel<Out>, static_cast<const float*>(src.data()),
                                   dst.data(), n);
    ASSERT_TRUE(report.ok()) << report.summary();
    for (std::size_t i = 0; i < src.size(); ++i) {
      const Out want = ssm::from_float<Out>(src[i]);
      EXPECT_EQ(std::memcmp(&dst[i], &want, sizeof(Out)), 0) << "element " << i << " = " << src[i];
    }
  }
}

TEST(CudaCastEmu, F32ToF16EqualsTheHostConversion) { check_cast<ssm::half>(); }
TEST(CudaCastEmu, F32ToBf16EqualsTheHostConversion) { check_cast<ssm::bfloat16>(); }

}  // namespace
