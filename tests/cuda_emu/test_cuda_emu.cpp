// The host emulation of the CUDA execution model (cuda/emu/emulation.hpp): correct kernels run clean and
// give the right values in every thread order; each detector catches a kernel with the bug it is for
// (out-of-bounds shared memory, races, uninitialized shared reads, divergent barriers and shuffles, exits
// before a barrier, bad masks, reuse of BlockScan storage without a barrier); between blocks, the global shadow
// catches writes past a registered buffer and bytes two blocks both write (global_memory.hpp); blocks run in
// forward, reverse and shuffled order; launches beyond the device limits are refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "emu/emulation.hpp"

namespace {

using ssm::emu::FindingKind;
using ssm::emu::LaunchConfig;
using ssm::emu::LaunchReport;
using ssm::emu::Order;

// Forward, reverse and three random orders.
std::vector<LaunchConfig> all_orders(ssm::emu::dim3 grid, ssm::emu::dim3 block) {
  std::vector<LaunchConfig> v;
  v.push_back({grid, block, Order::forward, 1});
  v.push_back({grid, block, Order::reverse, 1});
  for (std::uint64_t seed : {1u, 2u, 3u}) v.push_back({grid, block, Order::random, seed});
  return v;
}

std::string label(const LaunchConfig& c) { return std::string(ssm::emu::name(c.order)) + " seed " + std::to_string(c.seed); }

// ---- correct kernels ----

// Block sum: shared tree reduction down to one warp, then a shuffle reduction; one result per block.
constexpr int kReduceThreads = 64;
__global__ void block_sum(const float* x, float* out, int n) {
  SSM_SHARED(float, partial, kReduceThreads);
  const int t = static_cast<int>(threadIdx.x);
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  partial[t] = i < n ? x[i] : 0.0f;
  __syncthreads();
  for (int stride = kReduceThreads / 2; stride >= warpSize; stride /= 2) {
    if (t < stride) partial[t] = partial[t] + partial[t + stride];
    __syncthreads();
  }
  if (t < warpSize) {
    float v = partial[t];
    for (int offset = warpSize / 2; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
    if (t == 0) out[blockIdx.x] = v;
  }
}

TEST(CudaEmu, CorrectReductionIsCleanInEveryOrder) {
  const int n = 300;
  std::vector<float> x(n);
  for (int i = 0; i < n; ++i) x[static_cast<std::size_t>(i)] = static_cast<float>(i % 7) - 2.5f;
  const int blocks = (n + kReduceThreads - 1) / kReduceThreads;
  for (const LaunchConfig& cfg : all_orders(blocks, kReduceThreads)) {
    std::vector<float> out(static_cast<std::size_t>(blocks), -1.0f);
    const LaunchReport r = ssm::emu::launch(cfg, block_sum, x.data(), out.data(), n);
    ASSERT_TRUE(r.ok()) << label(cfg) << "\n" << r.summary();
    for (int b = 0; b < blocks; ++b) {
      float expect = 0;  // small integers and halves: every partial sum is exact in float
      for (int i = b * kReduceThreads; i < std::min(n, (b + 1) * kReduceThreads); ++i) expect += x[static_cast<std::size_t>(i)];
      EXPECT_EQ(out[static_cast<std::size_t>(b)], expect) << label(cfg) << " block " << b;
    }
  }
}

// Shuffles with widths: every variant against CUDA's documented lane arithmetic, written out here.
__global__ void shuffles(int* out, int width) {
  const int lane = static_cast<int>(threadIdx.x) % warpSize;
  const int v = 100 + lane;
  int* o = out + 4 * lane;
  o[0] = __shfl_sync(0xffffffffu, v, 3, width);
  o[1] = __shfl_up_sync(0xffffffffu, v, 2, width);
  o[2] = __shfl_down_sync(0xffffffffu, v, 2, width);
  o[3] = __shfl_xor_sync(0xffffffffu, v, 5, width);
}

TEST(CudaEmu, ShufflesFollowCudaLaneArithmetic) {
  for (int width : {32, 8, 4}) {
    for (const LaunchConfig& cfg : all_orders(1, 32)) {
      std::vector<int> out(4 * 32, -1);
      const LaunchReport r = ssm::emu::launch(cfg, shuffles, out.data(), width);
      ASSERT_TRUE(r.ok()) << r.summary();
      for (int lane = 0; lane < 32; ++lane) {
        const int seg = lane / width * width, in_seg = lane - seg;
        const int idx = seg + 3 % width;
        const int up = in_seg >= 2 ? lane - 2 : lane;
        const int down = in_seg + 2 < width ? lane + 2 : lane;
        const int x = lane ^ 5;
        const int xr = x >= seg + width ? lane : x;
        const int* o = out.data() + 4 * lane;
        EXPECT_EQ(o[0], 100 + idx) << "width " << width << " lane " << lane;
        EXPECT_EQ(o[1], 100 + up) << "width " << width << " lane " << lane;
        EXPECT_EQ(o[2], 100 + down) << "width " << width << " lane " << lane;
        EXPECT_EQ(o[3], 100 + xr) << "width " << width << " lane " << lane;
      }
    }
  }
}

// Warp-private exchange through shared memory, ordered by __syncwarp (and broken without it).
__global__ void warp_exchange(int* out, bool with_syncwarp) {
  SSM_SHARED(int, slot, 64);
  const int t = static_cast<int>(threadIdx.x);
  slot[t] = t;
  if (with_syncwarp) __syncwarp();
  const int partner = (t / 32) * 32 + (t % 32 + 1) % 32;
  out[t] = slot[partner];
}

TEST(CudaEmu, SyncwarpOrdersSharedMemoryWithinAWarp) {
  for (const LaunchConfig& cfg : all_orders(1, 64)) {
    std::vector<int> out(64, -1);
    const LaunchReport r = ssm::emu::launch(cfg, warp_exchange, out.data(), true);
    ASSERT_TRUE(r.ok()) << r.summary();
    for (int t = 0; t < 64; ++t) EXPECT_EQ(out[static_cast<std::size_t>(t)], (t / 32) * 32 + (t % 32 + 1) % 32);
    const LaunchReport broken = ssm::emu::launch(cfg, warp_exchange, out.data(), false);
    // Forward order reads the partner's slot before it is written, the others after: both are bugs.
    EXPECT_TRUE(broken.has(FindingKind::shared_race) || broken.has(FindingKind::shared_uninitialized))
        << label(cfg) << "\n" << broken.summary();
  }
}

// BlockScan stand-in: an inclusive running sum over chunks with a stateful prefix callback.
struct RunningSum {
  int running;
  int operator()(int block_aggregate) {
    const int prefix = running;
    running += block_aggregate;
    return prefix;
  }
};
struct Plus {
  int operator()(int a, int b) const { return a + b; }
};
constexpr int kScanThreads = 8, kScanItems = 3;
__global__ void chunked_prefix_sum(const int* x, int* y, int n, bool barrier_between_chunks) {
  using Scan = ssm::emu::BlockScan<int, kScanThreads>;
  SSM_SHARED(Scan::TempStorage, storage, 1);
  const int t = static_cast<int>(threadIdx.x);
  RunningSum prefix{0};
  for (int base = 0; base < n; base += kScanThreads * kScanItems) {
    int items[kScanItems];
    for (int i = 0; i < kScanItems; ++i) {
      const int k = base + t * kScanItems + i;
      items[i] = k < n ? x[k] : 0;
    }
    Scan(storage[0]).InclusiveScan(items, items, Plus{}, prefix);
    for (int i = 0; i < kScanItems; ++i) {
      const int k = base + t * kScanItems + i;
      if (k < n) y[k] = items[i];
    }
    if (barrier_between_chunks) __syncthreads();
  }
}

TEST(CudaEmu, BlockScanStandInScansAcrossChunks) {
  const int n = 61;  // three chunks of 24, the last ragged
  std::vector<int> x(n);
  for (int i = 0; i < n; ++i) x[static_cast<std::size_t>(i)] = (i * 37) % 11 - 5;
  for (const LaunchConfig& cfg : all_orders(1, kScanThreads)) {
    std::vector<int> y(n, 0);
    const LaunchReport r = ssm::emu::launch(cfg, chunked_prefix_sum, x.data(), y.data(), n, true);
    ASSERT_TRUE(r.ok()) << r.summary();
    int s = 0;
    for (int i = 0; i < n; ++i) {
      s += x[static_cast<std::size_t>(i)];
      EXPECT_EQ(y[static_cast<std::size_t>(i)], s) << label(cfg) << " i " << i;
    }
    // CUB's contract: TempStorage reuse needs a barrier. Without it the stand-in reports a race.
    const LaunchReport broken = ssm::emu::launch(cfg, chunked_prefix_sum, x.data(), y.data(), n, false);
    EXPECT_TRUE(broken.has(FindingKind::shared_race)) << label(cfg) << "\n" << broken.summary();
  }
}

// ---- planted bugs, one per detector ----

__global__ void out_of_bounds(int* out) {
  SSM_SHARED(int, s, 32);
  const int t = static_cast<int>(threadIdx.x);
  s[t + 1] = t;  // off by one: thread 31 writes s[32]
  __syncthreads();
  out[t] = s[t];
}

__global__ void out_of_bounds_negative(int* out) {
  SSM_SHARED(int, s, 32);
  const int t = static_cast<int>(threadIdx.x);
  s[t] = t;
  __syncthreads();
  out[t] = s[t - 1];  // thread 0 reads s[-1]
}

__global__ void missing_barrier(int* out) {
  SSM_SHARED(int, s, 32);
  const int t = static_cast<int>(threadIdx.x);
  s[t] = 0;
  __syncthreads();
  s[t] = t;
  // the __syncthreads() that belongs here is missing
  out[t] = s[(t + 1) % 32];
}

__global__ void write_write(int* out) {
  SSM_SHARED(int, s, 1);
  s[0] = static_cast<int>(threadIdx.x);  // every thread writes one element
  __syncthreads();
  out[threadIdx.x] = s[0];
}

__global__ void uninitialized(int* out) {
  SSM_SHARED(int, s, 32);
  const int t = static_cast<int>(threadIdx.x);
  if (t != 5) s[t] = t;
  __syncthreads();
  out[t] = s[t];
}

__global__ void different_barriers(int* out) {
  const int t = static_cast<int>(threadIdx.x);
  if (t % 2 == 0) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[t] = t;
}

__global__ void barrier_in_branch(int* out) {
  const int t = static_cast<int>(threadIdx.x);
  if (t < 16) __syncthreads();
  out[t] = t;
}

__global__ void early_return(int* out, int n) {
  const int t = static_cast<int>(threadIdx.x);
  if (t >= n) return;  // a bounds check before a barrier
  __syncthreads();
  out[t] = t;
}

__global__ void shuffle_in_branch(int* out) {
  const int t = static_cast<int>(threadIdx.x);
  int v = t;
  if (t < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);  // names all 32 lanes, only 16 get here
  __syncthreads();
  out[t] = v;
}

__global__ void shuffle_mask_mismatch(int* out) {
  const int t = static_cast<int>(threadIdx.x);
  const unsigned mask = t < 16 ? 0x0000ffffu : 0xffffffffu;
  out[t] = __shfl_sync(mask, t, 0);
}

__global__ void shuffle_then_exit(int* out) {
  const int t = static_cast<int>(threadIdx.x);
  if (t == 31) return;
  out[t] = __shfl_down_sync(0xffffffffu, t, 1);
}

__global__ void shuffle_mask_without_self(int* out) {
  const int t = static_cast<int>(threadIdx.x);
  out[t] = __shfl_sync(0x1u, t, 0);  // lanes 1..31 are not in their own mask
}

__global__ void shuffle_bad_width(int* out) {
  const int t = static_cast<int>(threadIdx.x);
  out[t] = __shfl_sync(0xffffffffu, t, 0, 12);
}

__global__ void shuffle_reads_outside_mask(int* out) {
  const int t = static_cast<int>(threadIdx.x);
  if (t < 16) out[t] = __shfl_down_sync(0x0000ffffu, t, 1, 32);  // lane 15 reads lane 16, not in the mask
}

// Not a kernel a GPU could run (device code cannot throw), but host code a kernel calls under the emulation can: the
// exception must become a finding, whatever its type, and the threads waiting at the barrier must be unwound.
struct NotAStdException {
  int code;
};
__global__ void throws_between_barriers(int* out, bool std_exception) {
  const int t = static_cast<int>(threadIdx.x);
  out[t] = t;
  __syncthreads();
  if (t == 7) {
    if (std_exception) throw std::runtime_error("thread 7 gave up");
    throw NotAStdException{7};
  }
  __syncthreads();  // the other threads wait here for thread 7
  out[t] += 1;
}

template <class Kernel, class... Args>
void expect_finding(FindingKind kind, unsigned threads, Kernel&& k, Args... args) {
  for (const LaunchConfig& cfg : all_orders(2, threads)) {
    const LaunchReport r = ssm::emu::launch(cfg, k, args...);
    ASSERT_TRUE(r.has(kind)) << "expected " << ssm::emu::name(kind) << " in " << label(cfg) << ", got\n" << r.summary();
    EXPECT_EQ(r.findings.size(), 1u);
    // the first block to run (block 0 or 1 of the two, by the block order) names itself
    EXPECT_NE(r.findings[0].message.find("block ("), std::string::npos) << r.findings[0].message;
  }
}

TEST(CudaEmuDetects, SharedOutOfBounds) {
  std::vector<int> out(64);
  expect_finding(FindingKind::shared_out_of_bounds, 32, out_of_bounds, out.data());
  expect_finding(FindingKind::shared_out_of_bounds, 32, out_of_bounds_negative, out.data());
  const LaunchReport r = ssm::emu::launch(LaunchConfig{1, 32}, out_of_bounds, out.data());
  EXPECT_NE(r.summary().find("index 32 outside shared array 's[32]'"), std::string::npos) << r.summary();
}

TEST(CudaEmuDetects, MissingBarrierRace) {
  std::vector<int> out(64);
  expect_finding(FindingKind::shared_race, 32, missing_barrier, out.data());
}

TEST(CudaEmuDetects, WriteWriteRace) {
  std::vector<int> out(64);
  expect_finding(FindingKind::shared_race, 32, write_write, out.data());
}

TEST(CudaEmuDetects, UninitializedSharedRead) {
  std::vector<int> out(64);
  expect_finding(FindingKind::shared_uninitialized, 32, uninitialized, out.data());
}

TEST(CudaEmuDetects, ThreadsAtDifferentBarriers) {
  std::vector<int> out(64);
  expect_finding(FindingKind::barrier_divergence, 32, different_barriers, out.data());
}

TEST(CudaEmuDetects, BarrierNotReachedByAll) {
  std::vector<int> out(64);
  expect_finding(FindingKind::early_exit, 32, barrier_in_branch, out.data());
}

TEST(CudaEmuDetects, EarlyExitBeforeBarrier) {
  std::vector<int> out(64);
  expect_finding(FindingKind::early_exit, 32, early_return, out.data(), 20);
  // The same kernel with every thread in range is clean.
  for (const LaunchConfig& cfg : all_orders(2, 32))
    EXPECT_TRUE(ssm::emu::launch(cfg, early_return, out.data(), 32).ok());
}

TEST(CudaEmuDetects, ShuffleDivergence) {
  std::vector<int> out(64);
  expect_finding(FindingKind::warp_divergence, 32, shuffle_in_branch, out.data());
  expect_finding(FindingKind::warp_divergence, 32, shuffle_mask_mismatch, out.data());
}

TEST(CudaEmuDetects, ExitBeforeShuffle) {
  std::vector<int> out(64);
  expect_finding(FindingKind::early_exit, 32, shuffle_then_exit, out.data());
}

TEST(CudaEmuDetects, BadShuffleArguments) {
  std::vector<int> out(64);
  expect_finding(FindingKind::bad_argument, 32, shuffle_mask_without_self, out.data());
  expect_finding(FindingKind::bad_argument, 32, shuffle_bad_width, out.data());
  expect_finding(FindingKind::bad_argument, 32, shuffle_reads_outside_mask, out.data());
}

TEST(CudaEmuDetects, KernelExceptionsOfAnyType) {
  std::vector<int> out(64);
  expect_finding(FindingKind::kernel_exception, 32, throws_between_barriers, out.data(), true);
  expect_finding(FindingKind::kernel_exception, 32, throws_between_barriers, out.data(), false);
  const LaunchReport a = ssm::emu::launch(LaunchConfig{1, 32}, throws_between_barriers, out.data(), true);
  EXPECT_NE(a.summary().find("thread 7 gave up"), std::string::npos) << a.summary();
  const LaunchReport b = ssm::emu::launch(LaunchConfig{1, 32}, throws_between_barriers, out.data(), false);
  EXPECT_NE(b.summary().find("threw a non-std::exception"), std::string::npos) << b.summary();
  // The emulation is whole afterwards: a correct launch on the same thread is clean.
  EXPECT_TRUE(ssm::emu::launch(LaunchConfig{2, 32}, early_return, out.data(), 32).ok());
}

// ---- between blocks: the global shadow, block orders, launch limits ----

using ssm::emu::ScopedGlobal;

// Each block adds its index + 1 into one sum: with atomicAdd a correct reduction, with a plain += a lost update on a GPU.
__global__ void sum_atomic(float* sum) {
  if (threadIdx.x == 0) atomicAdd(sum, static_cast<float>(blockIdx.x + 1));
}
__global__ void sum_plain(float* sum) {
  if (threadIdx.x == 0) *sum += static_cast<float>(blockIdx.x + 1);
}

// Block i writes its row of `width` elements, and (the fault) one more: the first element of row i + 1.
__global__ void rows_one_too_many(float* out, int width, int extra) {
  const int t = static_cast<int>(threadIdx.x);
  if (t < width + extra) out[blockIdx.x * width + t] = static_cast<float>(blockIdx.x * 100 + t + 1);
}

// Block i writes out[i + shift] (shift -1 writes before the start, +1 past the end for the last block).
__global__ void shifted_store(float* out, int shift) {
  if (threadIdx.x == 0) out[static_cast<int>(blockIdx.x) + shift] = static_cast<float>(blockIdx.x + 1);
}

// Records the order in which the blocks ran: block i stores the value of a shared counter it increments.
__global__ void record_order(int* counter, int* rank) {
  if (threadIdx.x == 0) rank[blockIdx.x] = atomicAdd(counter, 1);
}

// Declares more static shared memory than a block may have.
__global__ void too_much_shared(float* out) {
  SSM_SHARED(float, big, 12 * 1024 + 1);  // 48 KiB + 4 bytes
  big[threadIdx.x] = 1.0f;
  out[threadIdx.x] = big[threadIdx.x];
}

TEST(CudaEmuGlobal, AtomicSumAcrossBlocksIsClean) {
  float sum = 0;
  ScopedGlobal g(&sum, sizeof sum, "sum");
  for (const LaunchConfig& cfg : all_orders(5, 32)) {
    sum = 0;
    const LaunchReport r = ssm::emu::launch(cfg, sum_atomic, &sum);
    EXPECT_TRUE(r.ok()) << label(cfg) << "\n" << r.summary();
    EXPECT_EQ(sum, 15.0f);
  }
}

TEST(CudaEmuGlobal, PlainReadModifyWriteByTwoBlocksIsARace) {
  float sum = 0;
  ScopedGlobal g(&sum, sizeof sum, "sum");
  for (const LaunchConfig& cfg : all_orders(3, 32)) {
    const LaunchReport r = ssm::emu::launch(cfg, sum_plain, &sum);
    ASSERT_TRUE(r.has(FindingKind::global_race)) << label(cfg) << "\n" << r.summary();
    EXPECT_NE(r.summary().find("global buffer 'sum'"), std::string::npos) << r.summary();
  }
  // Unregistered memory is not watched: the same launch is then clean (the shadow sees only registered buffers).
  float unwatched = 0;
  EXPECT_TRUE(ssm::emu::launch(LaunchConfig{3, 32}, sum_plain, &unwatched).ok());
}

TEST(CudaEmuGlobal, WriteIntoTheNeighboursRowIsARace) {
  constexpr int kRows = 4, kWidth = 8;
  std::vector<float> out(kRows * kWidth + 1, 0.0f);  // one spare element, so the last block stays in bounds
  ScopedGlobal g(out.data(), out.size() * sizeof(float), "out");
  for (const LaunchConfig& cfg : all_orders(kRows, 32)) {
    EXPECT_TRUE(ssm::emu::launch(cfg, rows_one_too_many, out.data(), kWidth, 0).ok()) << label(cfg);
    // Zeros again: a write that leaves a byte as it was is invisible to the shadow (here, the value block i + 1
    // wrote into its first element in the launch before, when block i + 1 runs first).
    std::fill(out.begin(), out.end(), 0.0f);
    const LaunchReport r = ssm::emu::launch(cfg, rows_one_too_many, out.data(), kWidth, 1);
    ASSERT_TRUE(r.has(FindingKind::global_race)) << label(cfg) << "\n" << r.summary();
  }
}

TEST(CudaEmuGlobal, WritesPastEitherEndOfAGuardedBuffer) {
  constexpr int kBlocks = 6;
  float* out = static_cast<float*>(ssm::emu::allocate_guarded(kBlocks * sizeof(float), "out"));
  ASSERT_NE(out, nullptr);
  for (const LaunchConfig& cfg : all_orders(kBlocks, 32)) {
    EXPECT_TRUE(ssm::emu::launch(cfg, shifted_store, out, 0).ok()) << label(cfg);
    for (int shift : {-1, 1}) {
      const LaunchReport r = ssm::emu::launch(cfg, shifted_store, out, shift);
      ASSERT_TRUE(r.has(FindingKind::global_out_of_bounds)) << label(cfg) << " shift " << shift << "\n" << r.summary();
      EXPECT_NE(r.summary().find(shift < 0 ? "before the start of global buffer 'out'" : "at byte 24 of global buffer 'out'"),
                std::string::npos)
          << r.summary();
      std::fill_n(reinterpret_cast<unsigned char*>(out) - ssm::emu::kGuardBytes, ssm::emu::kGuardBytes,
                  ssm::emu::kGuardPattern);  // mend the guard bands for the next launch
      std::fill_n(reinterpret_cast<unsigned char*>(out + kBlocks), ssm::emu::kGuardBytes, ssm::emu::kGuardPattern);
    }
  }
  ssm::emu::free_guarded(out);
}

TEST(CudaEmuGlobal, OverlappingRegistrationsAreRefused) {
  std::vector<float> a(16);
  ScopedGlobal whole(a.data(), a.size() * sizeof(float), "a");
  EXPECT_TRUE(ssm::emu::GlobalBuffers::instance().track(a.data() + 16, 4, 0, "after"));  // adjacent: no overlap
  ssm::emu::GlobalBuffers::instance().untrack(a.data() + 16);
  EXPECT_FALSE(ssm::emu::GlobalBuffers::instance().track(a.data() + 4, 8, 0, "inside"));
  const auto* b = ssm::emu::GlobalBuffers::instance().find(reinterpret_cast<std::uintptr_t>(a.data() + 3));
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->name, "a");
}

TEST(CudaEmuBlocks, OrdersRunEveryBlockOnceForwardReversedOrShuffled) {
  constexpr int kBlocks = 9;
  const auto ranks = [&](Order o, std::uint64_t seed) {
    int counter = 0;
    std::vector<int> rank(kBlocks, -1);
    LaunchConfig cfg{kBlocks, 32, Order::forward, seed};
    cfg.block_order = o;
    EXPECT_TRUE(ssm::emu::launch(cfg, record_order, &counter, rank.data()).ok());
    EXPECT_EQ(counter, kBlocks);
    return rank;
  };
  std::vector<int> forward(kBlocks);
  std::iota(forward.begin(), forward.end(), 0);
  std::vector<int> reverse(forward.rbegin(), forward.rend());
  EXPECT_EQ(ranks(Order::forward, 1), forward);
  EXPECT_EQ(ranks(Order::reverse, 1), reverse);
  const std::vector<int> r1 = ranks(Order::random, 1), r2 = ranks(Order::random, 2);
  for (const auto& r : {r1, r2}) {
    std::vector<int> sorted = r;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, forward);  // a permutation: every block ran once
  }
  EXPECT_NE(r1, forward);
  EXPECT_NE(r1, r2);
  EXPECT_EQ(ranks(Order::random, 1), r1);  // seeded: the same order again
  // Unset, the block order follows the thread order.
  int counter = 0;
  std::vector<int> rank(kBlocks, -1);
  EXPECT_TRUE(ssm::emu::launch(LaunchConfig{kBlocks, 32, Order::reverse, 1}, record_order, &counter, rank.data()).ok());
  EXPECT_EQ(rank, reverse);
}

TEST(CudaEmuLimits, GridBlockAndSharedMemoryBeyondTheDevice) {
  std::vector<float> out(2048);
  using ssm::emu::dim3;
  for (const auto& [grid, block] : {std::pair{dim3(1), dim3(1025)}, std::pair{dim3(1), dim3(32, 33)},
                                    std::pair{dim3(1), dim3(1, 1, 65)}, std::pair{dim3(1, 65536), dim3(32)}}) {
    const LaunchReport r = ssm::emu::launch(LaunchConfig{grid, block}, shifted_store, out.data(), 0);
    EXPECT_TRUE(r.has(FindingKind::launch_limit)) << r.summary();
  }
  EXPECT_TRUE(ssm::emu::launch(LaunchConfig{dim3(1), dim3(1024)}, shifted_store, out.data(), 0).ok());
  const LaunchReport r = ssm::emu::launch(LaunchConfig{1, 32}, too_much_shared, out.data());
  ASSERT_TRUE(r.has(FindingKind::launch_limit)) << r.summary();
  EXPECT_NE(r.summary().find("49156 bytes of static shared memory"), std::string::npos) << r.summary();
}

}  // namespace
