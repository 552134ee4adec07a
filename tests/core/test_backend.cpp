// Backend query and dispatch: the SIMD level against what the compiler targeted and what this CPU supports, CUDA
// availability, mixed devices and missing backends.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ssm/core/backend.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/cpu/simd.hpp"

namespace {

// ---- SIMD level -----------------------------------------------------------------------------------------------
// Three independent facts: the level the library reports (ssm::simd_level(); the CPU kernels' simd::kLevel), the
// features the compiler targeted (its predefined macros, one feature at a time), and the features of the CPU running
// the test (__builtin_cpu_supports). The library's report must be the widest level the compiler's features allow, it
// must run on this CPU, and a build for the machine it runs on (SSM_CPU_ARCH native) must use what the CPU has.

#if defined(__x86_64__) || defined(__i386__)
struct Features {
  bool avx512f = false, avx2 = false, fma = false, avx = false, sse42 = false, sse2 = false;
};

Features compiler_targets() {
  Features f;
#if defined(__AVX512F__)
  f.avx512f = true;
#endif
#if defined(__AVX2__)
  f.avx2 = true;
#endif
#if defined(__FMA__)
  f.fma = true;
#endif
#if defined(__AVX__)
  f.avx = true;
#endif
#if defined(__SSE4_2__)
  f.sse42 = true;
#endif
#if defined(__SSE2__) || defined(__x86_64__)
  f.sse2 = true;
#endif
  return f;
}

Features cpu_supports() {
  __builtin_cpu_init();
  Features f;
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.avx = __builtin_cpu_supports("avx");
  f.sse42 = __builtin_cpu_supports("sse4.2");
  f.sse2 = __builtin_cpu_supports("sse2");
  return f;
}

// The x86 levels ssm::simd_level() names, widest first, with the features each needs and the vector width (bytes)
// of the CPU kernels at that level (simd.hpp: 64 with AVX-512F, 32 with AVX2, 16 below).
struct Level {
  const char* name;
  bool (*needs)(const Features&);
  int kernel_bytes;
};
const Level kLevels[] = {
    {"avx512", [](const Features& f) { return f.avx512f; }, 64},
    {"avx2+fma", [](const Features& f) { return f.avx2 && f.fma; }, 32},
    {"avx2", [](const Features& f) { return f.avx2; }, 32},
    {"avx", [](const Features& f) { return f.avx; }, 16},
    {"sse4.2", [](const Features& f) { return f.sse42; }, 16},
    {"sse2", [](const Features& f) { return f.sse2; }, 16},
};
constexpr int kNumLevels = static_cast<int>(sizeof kLevels / sizeof kLevels[0]);

int reported_level() {
  for (int i = 0; i < kNumLevels; ++i)
    if (std::strcmp(kLevels[i].name, ssm::simd_level()) == 0) return i;
  return -1;
}

std::string widest(const Features& f) {
  for (const Level& lv : kLevels)
    if (lv.needs(f)) return lv.name;
  return "none";
}

TEST(BackendSimd, ReportsTheWidestLevelTheCompilerTargeted) {
  const int r = reported_level();
  ASSERT_GE(r, 0) << "unknown level '" << ssm::simd_level() << "' on x86";
  const Features compiled = compiler_targets();
  EXPECT_TRUE(kLevels[r].needs(compiled)) << "reports " << ssm::simd_level() << ", which the compiler did not target";
  EXPECT_EQ(ssm::simd_level(), widest(compiled)) << "the compiler targeted a wider level than the one reported";
  EXPECT_STREQ(ssm::backends().simd, ssm::simd_level());
}

TEST(BackendSimd, CpuKernelsUseTheReportedLevel) {
  // The kernels' own dispatch (simd.hpp) and the report (backend.hpp) are separate #if ladders: they must agree.
  const int r = reported_level();
  ASSERT_GE(r, 0);
  EXPECT_EQ(ssm::cpu::simd::kBytes, kLevels[r].kernel_bytes) << "report " << ssm::simd_level() << ", kernels "
                                                              << ssm::cpu::simd::kLevel;
  EXPECT_EQ(ssm::cpu::simd::lanes<float> * 4, ssm::cpu::simd::kBytes);
  const std::string family = kLevels[r].kernel_bytes == 64 ? "avx512" : kLevels[r].kernel_bytes == 32 ? "avx2" : "generic";
  EXPECT_EQ(ssm::cpu::simd::kLevel, family);
}

TEST(BackendSimd, ReportedLevelRunsOnThisCpu) {
  const int r = reported_level();
  ASSERT_GE(r, 0);
  EXPECT_TRUE(kLevels[r].needs(cpu_supports()))
      << "built for " << ssm::simd_level() << ", which this CPU lacks (" << widest(cpu_supports()) << ")";
}

TEST(BackendSimd, NativeBuildUsesWhatTheCpuHas) {
  // SSM_TEST_CPU_ARCH: the build's SSM_CPU_ARCH (tests/core/CMakeLists.txt). Only -march=native promises that the
  // compiler targets this CPU; x86-64-v3 on an AVX-512 machine is a deliberate narrower build.
  if (std::string(SSM_TEST_CPU_ARCH) != "native") GTEST_SKIP() << "SSM_CPU_ARCH is '" << SSM_TEST_CPU_ARCH << "'";
  EXPECT_EQ(ssm::simd_level(), widest(cpu_supports()))
      << "a native build, but the CPU kernels were compiled for less than this CPU has";
}
#else
TEST(BackendSimd, ReportsANonX86Level) {
#if defined(__ARM_NEON)
  EXPECT_STREQ(ssm::simd_level(), "neon");
#else
  EXPECT_STREQ(ssm::simd_level(), "scalar");
#endif
}
#endif

// ---- CUDA availability and dispatch ------------------------------------------------------------------------------

// Takes the registered CUDA backend (if this program links ssm::cuda) out of the table for one scope.
struct WithoutCudaBackend {
  const ssm::DeviceBackend* linked = ssm::register_backend(ssm::DeviceType::cuda, nullptr);
  ~WithoutCudaBackend() { ssm::register_backend(ssm::DeviceType::cuda, linked); }
};

TEST(Backend, WithoutTheCudaBackendTheStatusSaysWhatToLink) {
  WithoutCudaBackend none;
  const ssm::BackendInfo info = ssm::backends();
  EXPECT_FALSE(info.cuda_linked);
  EXPECT_FALSE(info.cuda_usable);
  EXPECT_FALSE(ssm::cuda_linked());
  EXPECT_NE(info.cuda_status.find("link the CMake target ssm::cuda"), std::string::npos) << info.cuda_status;
}

// The table is consulted at run time: a backend registered by the program (here a fake one over host memory that
// counts its calls) receives the allocations, copies and fills of tensors on its device type, and is named in the
// report; taking it out restores the previous state.
namespace fake {
int allocations = 0, frees = 0, copies = 0, zero_fills = 0;
void* allocate(std::size_t bytes, int) {
  ++allocations;
  return std::malloc(bytes == 0 ? 1 : bytes);
}
void deallocate(void* p, int) noexcept {
  ++frees;
  std::free(p);
}
void copy(void* dst, ssm::Device, const void* src, ssm::Device, std::size_t bytes) {
  ++copies;
  std::memcpy(dst, src, bytes);
}
void memset_zero(void* p, ssm::Device, std::size_t bytes) {
  ++zero_fills;
  std::memset(p, 0, bytes);
}
int device_count() { return 1; }
void ensure_device(int index) { SSM_CHECK(index == 0, "fake: no device ", index); }
std::string status() { return "1 fake device"; }
}  // namespace fake

TEST(Backend, TensorsAndDispatchGoThroughTheRegisteredBackend) {
  ssm::DeviceBackend b;
  b.name = "fake";
  b.device_count = &fake::device_count;
  b.ensure_device = &fake::ensure_device;
  b.status = &fake::status;
  b.allocate = &fake::allocate;
  b.deallocate = &fake::deallocate;
  b.copy = &fake::copy;
  b.memset_zero = &fake::memset_zero;
  const ssm::DeviceBackend* linked = ssm::register_backend(ssm::DeviceType::cuda, &b);
  {
    const ssm::BackendInfo info = ssm::backends();
    EXPECT_TRUE(info.cuda_linked);
    EXPECT_TRUE(info.cuda_usable);
    EXPECT_EQ(info.cuda_name, "fake");
    EXPECT_EQ(info.cuda_status, "1 fake device");
    const ssm::Tensor host = ssm::Tensor::from_vector<float>({3}, {1, 2, 3});
    const ssm::Tensor dev = host.to(ssm::Device::cuda(0));       // allocate + copy
    const ssm::Tensor zeros = ssm::Tensor::zeros({2}, ssm::DType::f32, ssm::Device::cuda(0));  // allocate + fill
    EXPECT_EQ(dev.to_vector<float>(), (std::vector<float>{1, 2, 3}));  // copy back
    EXPECT_EQ(fake::allocations, 2);
    EXPECT_EQ(fake::copies, 2);
    EXPECT_EQ(fake::zero_fills, 1);
    ssm::Checker c("my_op");
    EXPECT_EQ(ssm::dispatch_device(c, {{"x", dev.view()}}), ssm::Device::cuda(0));
    try {
      (void)ssm::dispatch_device(c, {{"x", ssm::TensorView(dev.data(), ssm::DType::f32, ssm::Device::cuda(1),
                                                           ssm::Dims{3})}});
      FAIL() << "expected ssm::Error";
    } catch (const ssm::Error& e) {
      EXPECT_NE(std::string(e.what()).find("my_op: the tensors are on cuda:1 but CUDA is unusable: fake: no device 1"),
                std::string::npos)
          << e.what();
    }
  }
  EXPECT_EQ(fake::frees, fake::allocations);  // every tensor freed by the backend that allocated it
  EXPECT_EQ(ssm::register_backend(ssm::DeviceType::cuda, linked), &b);
}

TEST(Backend, TheCpuBackendCannotBeReplaced) {
  ssm::DeviceBackend b;
  EXPECT_THROW(ssm::register_backend(ssm::DeviceType::cpu, &b), ssm::Error);
}

TEST(Backend, DispatchPicksTheArgumentsDevice) {
  float x = 0;
  ssm::TensorView a(&x, ssm::DType::f32, ssm::Device::cpu(), ssm::Dims{1});
  ssm::Checker c("op");
  EXPECT_EQ(ssm::dispatch_device(c, {{"a", a}, {"b", a}}), ssm::Device::cpu());
}

TEST(Backend, MixedDevicesAreAnError) {
  float x = 0;
  ssm::TensorView a(&x, ssm::DType::f32, ssm::Device::cpu(), ssm::Dims{1});
  ssm::TensorView g(&x, ssm::DType::f32, ssm::Device::cuda(0), ssm::Dims{1});
  ssm::Checker c("my_op");
  try {
    (void)ssm::dispatch_device(c, {{"a", a}, {"g", g}});
    FAIL();
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("my_op: argument 'g': is on cuda:0 but 'a' is on cpu"), std::string::npos)
        << e.what();
  }
}

// The consequence of the report: an op given CUDA tensors when CUDA is not usable fails naming the op and, without
// the backend, what to link (Tensor::empty's own error: tests/core/test_tensor.cpp).
TEST(Backend, CudaTensorsWithoutUsableCudaAreAnError) {
  float x = 0;
  ssm::TensorView g(&x, ssm::DType::f32, ssm::Device::cuda(0), ssm::Dims{1});
  ssm::Checker c("my_op");
  const ssm::BackendInfo info = ssm::backends();
  if (info.cuda_usable) GTEST_SKIP() << "a GPU is usable here";
  try {
    (void)ssm::dispatch_device(c, {{"g", g}});
    FAIL() << "expected ssm::Error";
  } catch (const ssm::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("my_op: the tensors are on cuda:0"), std::string::npos) << what;
    if (!info.cuda_linked) {
      EXPECT_NE(what.find("link the CMake target ssm::cuda"), std::string::npos) << what;
    }
  }
}

}  // namespace
