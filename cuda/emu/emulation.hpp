// Host emulation of the CUDA execution model, so that the kernel sources in cuda/kernels/*.cuh run on
// the CPU in tests (ARCHITECTURE.md, "CUDA backend, and how it is verified without a GPU").
// Blocks run one at a time, in forward, reverse or seeded random order; the threads of a block run as fibers
// (context.hpp: a stack switch of its own on x86-64, ucontext elsewhere; annotated for AddressSanitizer) in forward,
// reverse or seeded random order, each until its next barrier / warp-synchronous call. Shared memory (declared
// through SSM_SHARED) is bounds- and race-checked; barriers and shuffles are checked for divergence and early
// exits; grid, block and static shared memory sizes against the device limits. Between blocks, the registered global
// buffers a launch reaches are checked for writes into their guard bands and for bytes two blocks both change
// (global_memory.hpp). The first finding stops the launch and is returned in a LaunchReport.
//
// What is emulated: threadIdx / blockIdx / blockDim / gridDim / warpSize, SSM_SHARED arrays (element reads
// and writes through a checked reference; no pointers into shared memory), __syncthreads, __syncwarp,
// __shfl_sync / __shfl_up_sync / __shfl_down_sync / __shfl_xor_sync (masks and widths), atomicAdd on
// global memory, and a stand-in for cub::BlockScan (ssm::emu::BlockScan, same interface).
// Memory ordering model for the race detector: two accesses to one shared element by different threads
// are ordered only by a __syncthreads between them, or (same warp) by a __syncwarp between them.
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <source_location>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "context.hpp"
#include "global_memory.hpp"

#if defined(__SANITIZE_ADDRESS__)
#define SSM_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SSM_EMU_ASAN 1
#endif
#endif
#if defined(SSM_EMU_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace ssm::emu {

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
  constexpr unsigned count() const { return x * y * z; }
};

inline constexpr int kWarpSize = 32;

/// The order in which the runnable threads of a block are resumed, round after round.
enum class Order { forward, reverse, random };
inline const char* name(Order o) {
  return o == Order::forward ? "forward" : o == Order::reverse ? "reverse" : "random";
}

struct LaunchConfig {
  dim3 grid;
  dim3 block;
  Order order = Order::forward;
  std::uint64_t seed = 1;     ///< for Order::random (threads and blocks)
  std::size_t stack_bytes = 0;  ///< per thread; 0 picks a default (larger under AddressSanitizer)
  /// The order in which the blocks of the grid run, one after another; unset: the thread order (so a sweep of
  /// thread orders also runs the blocks forward, reversed and shuffled).
  std::optional<Order> block_order = std::nullopt;
  Order blocks() const { return block_order.value_or(order); }
};

/// The device limits a launch is checked against (those of every GPU since compute capability 7.0).
inline constexpr unsigned kMaxGridX = 2147483647u, kMaxGridYZ = 65535u;
inline constexpr unsigned kMaxBlockXY = 1024u, kMaxBlockZ = 64u, kMaxBlockThreads = 1024u;
inline constexpr std::size_t kMaxStaticSharedBytes = 48 * 1024;

enum class FindingKind {
  shared_out_of_bounds,   ///< index outside an SSM_SHARED array
  shared_race,            ///< an element written by one thread, read/written by another, no barrier between
  shared_uninitialized,   ///< an element read before any thread of the block wrote it
  barrier_divergence,     ///< threads wait at different __syncthreads call sites
  warp_divergence,        ///< a shuffle / __syncwarp whose mask names lanes that are elsewhere or use another mask
  early_exit,             ///< a thread returned while others wait for it at a barrier or shuffle
  bad_argument,           ///< a shuffle mask or width CUDA leaves undefined
  kernel_exception,       ///< the kernel threw
  launch_limit,           ///< grid or block dimensions, or static shared memory, beyond the device's limits
  global_out_of_bounds,   ///< a write into the guard band before or after a registered global buffer
  global_race,            ///< one byte of global memory changed by two blocks, not both through atomicAdd
};
inline const char* name(FindingKind k) {
  switch (k) {
    case FindingKind::shared_out_of_bounds: return "shared_out_of_bounds";
    case FindingKind::shared_race: return "shared_race";
    case FindingKind::shared_uninitialized: return "shared_uninitialized";
    case FindingKind::barrier_divergence: return "barrier_divergence";
    case FindingKind::warp_divergence: return "warp_divergence";
    case FindingKind::early_exit: return "early_exit";
    case FindingKind::bad_argument: return "bad_argument";
    case FindingKind::kernel_exception: return "kernel_exception";
    case FindingKind::launch_limit: return "launch_limit";
    case FindingKind::global_out_of_bounds: return "global_out_of_bounds";
    case FindingKind::global_race: return "global_race";
  }
  return "?";
}

struct Finding {
  FindingKind kind;
  std::string message;
};

/// What a launch found: empty when the kernel ran clean in the chosen order.
struct LaunchReport {
  std::vector<Finding> findings;
  bool ok() const { return findings.empty(); }
  bool has(FindingKind k) const {
    return std::any_of(findings.begin(), findings.end(), [k](const Finding& f) { return f.kind == k; });
  }
  std::string summary() const {
    std::string s;
    for (const Finding& f : findings) s += std::string(name(f.kind)) + ": " + f.message + "\n";
    return s.empty() ? "clean" : s;
  }
};

namespace detail {

/// Thrown inside a fiber to unwind it after a finding; caught by the fiber's entry function.
struct AbortFiber {};

enum class ThreadState { not_started, runnable, at_barrier, at_warp_sync, exited };
enum class WarpOp { idx, up, down, bxor, syncwarp };

inline std::string where(const std::source_location& s) {
  return std::string(s.file_name()) + ":" + std::to_string(s.line()) + ":" + std::to_string(s.column());
}
inline bool same_site(const std::source_location& a, const std::source_location& b) {
  return a.line() == b.line() && a.column() == b.column() && std::strcmp(a.file_name(), b.file_name()) == 0;
}

struct Fiber {
  Context ctx;
  std::byte* stack = nullptr;  // usable stack (above the guard page)
  ThreadState state = ThreadState::not_started;
  bool abort = false;
  void* fake_stack = nullptr;  // ASan fake-stack handle while switched out
  // The sync point it waits at.
  std::source_location site;
  WarpOp op = WarpOp::idx;
  unsigned mask = 0;
  int width = kWarpSize;
  int arg = 0;
  std::array<std::byte, 8> value{};
  std::array<std::byte, 8> result{};
  dim3 thread_idx;
};

struct SharedAllocation {
  virtual ~SharedAllocation() = default;
  virtual std::size_t bytes() const = 0;  ///< what `__shared__` would reserve for it
};

class Block;
inline Block*& current_block() {
  static thread_local Block* b = nullptr;
  return b;
}

/// One block's run: its fibers, its shared memory and the synchronization state the detectors read.
class Block {
 public:
  Block(const LaunchConfig& cfg, std::function<void()> body)
      : cfg_(cfg), body_(std::move(body)), nthreads_(static_cast<int>(cfg.block.count())) {
    std::size_t stack = cfg.stack_bytes;
    if (stack == 0) {
#if defined(SSM_EMU_ASAN)
      stack = std::size_t{1} << 20;
#else
      stack = std::size_t{256} << 10;
#endif
    }
    page_ = 4096;
    stack_bytes_ = (stack + page_ - 1) / page_ * page_;
    const std::size_t per = stack_bytes_ + page_;
    mapping_bytes_ = per * static_cast<std::size_t>(nthreads_);
    void* m = mmap(nullptr, mapping_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::bad_alloc();
    mapping_ = static_cast<std::byte*>(m);
#if defined(SSM_EMU_ASAN)
    // The addresses may have held an earlier launch's fiber stacks, whose shadow AddressSanitizer may have left
    // poisoned. ucontext's swapcontext cleared a stack's shadow on every switch; the stack
    // switch here does not (context.hpp), so it is cleared once, here.
    ASAN_UNPOISON_MEMORY_REGION(mapping_, mapping_bytes_);
#endif
    fibers_.resize(static_cast<std::size_t>(nthreads_));
    for (int t = 0; t < nthreads_; ++t) {
      std::byte* base = mapping_ + per * static_cast<std::size_t>(t);
      mprotect(base, page_, PROT_NONE);  // guard page: a fiber stack overflow faults instead of corrupting
      fibers_[static_cast<std::size_t>(t)].stack = base + page_;
    }
    warp_gen_.assign(static_cast<std::size_t>((nthreads_ + kWarpSize - 1) / kWarpSize), 0);
  }
  ~Block() { munmap(mapping_, mapping_bytes_); }
  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;

  /// Runs block `block_idx` to completion or to its first finding.
  void run(dim3 block_idx, std::mt19937_64& rng) {
    block_idx_ = block_idx;
    epoch_ = 0;
    std::fill(warp_gen_.begin(), warp_gen_.end(), 0u);
    shared_.clear();
    shared_bytes_ = 0;
    for (int t = 0; t < nthreads_; ++t) {
      Fiber& f = fiber(t);
      std::byte* const stack = f.stack;
      f = Fiber{};
      f.stack = stack;
      f.thread_idx = dim3(static_cast<unsigned>(t) % cfg_.block.x, static_cast<unsigned>(t) / cfg_.block.x % cfg_.block.y,
                          static_cast<unsigned>(t) / (cfg_.block.x * cfg_.block.y));
      make_context(f.ctx, f.stack, stack_bytes_, &Block::entry);
      f.state = ThreadState::runnable;
    }
    std::vector<int> order(static_cast<std::size_t>(nthreads_));
    while (!finding_) {
      std::iota(order.begin(), order.end(), 0);
      if (cfg_.order == Order::reverse) std::reverse(order.begin(), order.end());
      if (cfg_.order == Order::random) std::shuffle(order.begin(), order.end(), rng);
      bool ran = false;
      for (int t : order) {
        if (fiber(t).state != ThreadState::runnable) continue;
        resume(t);
        ran = true;
        if (finding_) break;
      }
      if (finding_) break;
      if (ran) continue;
      if (resolve_warp_syncs()) continue;
      if (finding_) break;
      if (!resolve_barrier()) break;  // every thread exited (or a finding)
    }
    if (finding_) unwind_all();
    shared_.clear();
  }

  // ---- queried by the CUDA spellings ----
  const dim3& thread_idx() const { return fibers_[static_cast<std::size_t>(current_)].thread_idx; }
  const dim3& block_idx() const { return block_idx_; }
  const dim3& block_dim() const { return cfg_.block; }
  const dim3& grid_dim() const { return cfg_.grid; }
  int tid() const { return current_; }
  int nthreads() const { return nthreads_; }
  std::uint32_t epoch() const { return epoch_; }
  std::uint32_t warp_gen(int tid) const { return warp_gen_[static_cast<std::size_t>(tid / kWarpSize)]; }
  const std::optional<Finding>& finding() const { return finding_; }

  /// Records the first finding and unwinds the calling fiber.
  [[noreturn]] void report(FindingKind kind, std::string message) {
    if (!finding_) finding_ = Finding{kind, describe_block() + ": " + std::move(message)};
    throw AbortFiber{};
  }

  std::string describe_block() const {
    std::ostringstream s;
    s << "block (" << block_idx_.x << "," << block_idx_.y << "," << block_idx_.z << ")";
    if (current_ >= 0) s << " thread " << current_;
    s << " [" << name(cfg_.order) << " order, after " << epoch_ << " barriers]";
    return s.str();
  }

  template <class Storage>
  Storage& shared(const void* site) {
    auto it = shared_.find(site);
    if (it == shared_.end()) {
      it = shared_.emplace(site, std::make_unique<Storage>()).first;
      shared_bytes_ += it->second->bytes();
      if (shared_bytes_ > kMaxStaticSharedBytes)
        report(FindingKind::launch_limit, "declares " + std::to_string(shared_bytes_) +
                                              " bytes of static shared memory, more than the " +
                                              std::to_string(kMaxStaticSharedBytes) + " a block may have");
    }
    return *static_cast<Storage*>(it->second.get());
  }

  void syncthreads(const std::source_location& site) {
    Fiber& f = fiber(current_);
    f.state = ThreadState::at_barrier;
    f.site = site;
    yield_to_scheduler();
  }

  template <class T>
  T warp_sync(WarpOp op, unsigned mask, T value, int arg, int width, const std::source_location& site) {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "emulated shuffles move up to 8 bytes");
    Fiber& f = fiber(current_);
    f.state = ThreadState::at_warp_sync;
    f.site = site;
    f.op = op;
    f.mask = mask;
    f.arg = arg;
    f.width = width;
    f.value = {};
    std::memcpy(f.value.data(), &value, sizeof(T));
    yield_to_scheduler();
    T out;
    std::memcpy(&out, f.result.data(), sizeof(T));
    return out;
  }

 private:
  Fiber& fiber(int t) { return fibers_[static_cast<std::size_t>(t)]; }

  // A fiber's first frame: the thread's body, then back to the scheduler for good. Its own frame, which is never left,
  // holds no variable AddressSanitizer guards, so the next block's fiber on this stack finds its shadow clean; the
  // body's frame (run_body) returns, which clears its guards.
  static void entry() {
    run_body();
    leave();
  }

  static void run_body() {
    Block& b = *current_block();
#if defined(SSM_EMU_ASAN)
    __sanitizer_finish_switch_fiber(nullptr, &b.sched_stack_bottom_, &b.sched_stack_size_);
#endif
    try {
      b.body_();
    } catch (const AbortFiber&) {
    } catch (const std::exception& e) {
      if (!b.finding_) b.finding_ = Finding{FindingKind::kernel_exception, b.describe_block() + ": " + e.what()};
    } catch (...) {  // nothing may leave the body: entry() has nowhere to return to
      if (!b.finding_)
        b.finding_ = Finding{FindingKind::kernel_exception, b.describe_block() + ": threw a non-std::exception"};
    }
    b.fiber(b.current_).state = ThreadState::exited;
  }

  [[noreturn]] static void leave() {
    Block& b = *current_block();
#if defined(SSM_EMU_ASAN)
    __sanitizer_start_switch_fiber(nullptr, b.sched_stack_bottom_, b.sched_stack_size_);
#endif
    switch_context(b.fiber(b.current_).ctx, b.sched_);  // never resumed: run() makes a fresh context per block
    __builtin_unreachable();
  }

  void resume(int t) {
    current_ = t;
    Fiber& f = fiber(t);
    f.state = ThreadState::runnable;
#if defined(SSM_EMU_ASAN)
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, f.stack, stack_bytes_);
#endif
    switch_context(sched_, f.ctx);
#if defined(SSM_EMU_ASAN)
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
    current_ = -1;
  }

  // Called on the fiber's stack: back to the scheduler, then (when resumed) check for an abort.
  void yield_to_scheduler() {
    Fiber& f = fiber(current_);
#if defined(SSM_EMU_ASAN)
    __sanitizer_start_switch_fiber(&f.fake_stack, sched_stack_bottom_, sched_stack_size_);
#endif
    switch_context(f.ctx, sched_);
#if defined(SSM_EMU_ASAN)
    __sanitizer_finish_switch_fiber(f.fake_stack, &sched_stack_bottom_, &sched_stack_size_);
#endif
    if (f.abort) throw AbortFiber{};
  }

  // After a finding: unwind every suspended fiber so no frame is left behind.
  void unwind_all() {
    for (int t = 0; t < nthreads_; ++t) {
      Fiber& f = fiber(t);
      if (f.state == ThreadState::at_barrier || f.state == ThreadState::at_warp_sync) {
        f.abort = true;
        resume(t);
      }
    }
  }

  void set_finding(FindingKind kind, std::string message) {
    if (!finding_) finding_ = Finding{kind, describe_block() + ": " + std::move(message)};
  }

  static const char* op_name(WarpOp op) {
    switch (op) {
      case WarpOp::idx: return "__shfl_sync";
      case WarpOp::up: return "__shfl_up_sync";
      case WarpOp::down: return "__shfl_down_sync";
      case WarpOp::bxor: return "__shfl_xor_sync";
      case WarpOp::syncwarp: return "__syncwarp";
    }
    return "?";
  }

  std::string describe_wait(int t) {
    Fiber& f = fiber(t);
    std::ostringstream s;
    s << "thread " << t;
    switch (f.state) {
      case ThreadState::at_barrier: s << " waits at __syncthreads (" << where(f.site) << ")"; break;
      case ThreadState::at_warp_sync:
        s << " waits at " << op_name(f.op) << " (" << where(f.site) << ") with mask 0x" << std::hex << f.mask << std::dec;
        break;
      case ThreadState::exited: s << " has exited"; break;
      default: s << " is running"; break;
    }
    return s.str();
  }

  // Completes every warp-synchronous call whose mask members all arrived; reports inconsistent ones.
  bool resolve_warp_syncs() {
    bool progressed = false;
    const int nwarps = static_cast<int>(warp_gen_.size());
    for (int w = 0; w < nwarps && !finding_; ++w) {
      const int first = w * kWarpSize;
      const int lanes = std::min(kWarpSize, nthreads_ - first);
      for (int lane = 0; lane < lanes && !finding_; ++lane) {
        Fiber& f = fiber(first + lane);
        if (f.state != ThreadState::at_warp_sync) continue;
        const unsigned mask = f.mask;
        const unsigned existing = lanes == kWarpSize ? 0xffffffffu : ((1u << lanes) - 1u);
        if (!(mask & (1u << lane)) || (mask & ~existing) != 0) {
          set_finding(FindingKind::bad_argument, describe_wait(first + lane) + ": the mask must name the calling lane"
                                                     " and only lanes that exist");
          return false;
        }
        if (f.op != WarpOp::syncwarp && (f.width < 1 || f.width > kWarpSize || (f.width & (f.width - 1)) != 0)) {
          set_finding(FindingKind::bad_argument,
                      describe_wait(first + lane) + ": width " + std::to_string(f.width) + " is not a power of 2 <= 32");
          return false;
        }
        for (int j = 0; j < lanes; ++j) {
          if (!(mask & (1u << j))) continue;
          Fiber& g = fiber(first + j);
          if (g.state == ThreadState::exited) {
            set_finding(FindingKind::early_exit, describe_wait(first + lane) + " naming lane " + std::to_string(j) +
                                                     ", but thread " + std::to_string(first + j) + " has exited");
            return false;
          }
          if (g.state != ThreadState::at_warp_sync || g.op != f.op || g.mask != mask || g.width != f.width ||
              !same_site(g.site, f.site)) {
            set_finding(FindingKind::warp_divergence, describe_wait(first + lane) + ", but " + describe_wait(first + j));
            return false;
          }
        }
        // Every lane of the mask is here with the same call: exchange.
        for (int j = 0; j < lanes; ++j) {
          if (!(mask & (1u << j))) continue;
          Fiber& g = fiber(first + j);
          int src = j;
          const int seg = j / g.width * g.width;
          switch (g.op) {
            case WarpOp::idx: src = seg + ((g.arg % g.width) + g.width) % g.width; break;
            case WarpOp::up: src = (j - seg) >= g.arg ? j - g.arg : j; break;
            case WarpOp::down: src = (j - seg) + g.arg < g.width ? j + g.arg : j; break;
            case WarpOp::bxor: src = j ^ g.arg; if (src >= seg + g.width || src >= lanes) src = j; break;
            case WarpOp::syncwarp: break;
          }
          if (g.op != WarpOp::syncwarp && !(mask & (1u << src))) {
            set_finding(FindingKind::bad_argument, describe_wait(first + j) + " reads lane " + std::to_string(src) +
                                                       ", which its mask does not name (undefined value)");
            return false;
          }
          g.result = fiber(first + src).value;
        }
        for (int j = 0; j < lanes; ++j)
          if (mask & (1u << j)) fiber(first + j).state = ThreadState::runnable;
        if (f.op == WarpOp::syncwarp) ++warp_gen_[static_cast<std::size_t>(w)];
        progressed = true;
      }
    }
    return progressed;
  }

  // All threads are at barriers or exited: release the barrier or report. False when the block is done.
  bool resolve_barrier() {
    int waiting = -1, exited = -1;
    for (int t = 0; t < nthreads_; ++t) {
      const Fiber& f = fibers_[static_cast<std::size_t>(t)];
      if (f.state == ThreadState::at_barrier && waiting < 0) waiting = t;
      if (f.state == ThreadState::exited && exited < 0) exited = t;
    }
    if (waiting < 0) return false;
    if (exited >= 0) {
      set_finding(FindingKind::early_exit,
                  describe_wait(waiting) + ", but thread " + std::to_string(exited) + " exited before that barrier");
      return false;
    }
    for (int t = 0; t < nthreads_; ++t) {
      if (!same_site(fiber(t).site, fiber(waiting).site)) {
        set_finding(FindingKind::barrier_divergence, describe_wait(waiting) + ", but " + describe_wait(t));
        return false;
      }
    }
    ++epoch_;
    for (int t = 0; t < nthreads_; ++t) fiber(t).state = ThreadState::runnable;
    return true;
  }

  LaunchConfig cfg_;
  std::function<void()> body_;
  int nthreads_;
  std::size_t page_ = 4096, stack_bytes_ = 0, mapping_bytes_ = 0;
  std::byte* mapping_ = nullptr;
  std::vector<Fiber> fibers_;
  Context sched_;
  const void* sched_stack_bottom_ = nullptr;
  std::size_t sched_stack_size_ = 0;
  int current_ = -1;
  dim3 block_idx_;
  std::uint32_t epoch_ = 0;
  std::vector<std::uint32_t> warp_gen_;
  std::unordered_map<const void*, std::unique_ptr<SharedAllocation>> shared_;
  std::size_t shared_bytes_ = 0;
  std::optional<Finding> finding_;
};

inline Block& block() { return *current_block(); }

/// Per-element access history for the race detector.
struct Shadow {
  bool written = false;
  int writer = -1;
  std::uint32_t write_epoch = 0, write_warp_gen = 0;
  int reader = -1;  // first reader since the last ordering point, -1 none
  bool many_readers = false;
  std::uint32_t read_epoch = 0, read_warp_gen = 0;
};

// True when an access by `t` at recorded (epoch, warp_gen) is ordered before the current access by `u`.
inline bool ordered(int t, std::uint32_t ep, std::uint32_t wg, int u) {
  Block& b = block();
  if (t == u || b.epoch() > ep) return true;
  return t / kWarpSize == u / kWarpSize && b.warp_gen(u) > wg;
}

}  // namespace detail

/// Marks a type whose emulated instances check their own accesses (the BlockScan stand-in's TempStorage):
/// SSM_SHARED then hands out a plain reference to it.
template <class T>
concept SelfChecked = requires { T::emu_self_checked; };

template <class T, std::size_t N>
class SharedArray;

/// A checked reference to one element of an emulated shared array.
template <class T, std::size_t N>
class SharedRef {
 public:
  SharedRef(SharedArray<T, N>* a, std::size_t i) : a_(a), i_(i) {}
  operator T() const { return a_->read(i_); }
  SharedRef& operator=(const T& v) {
    a_->write(i_, v);
    return *this;
  }
  SharedRef& operator=(const SharedRef& o) { return *this = static_cast<T>(o); }
  SharedRef& operator+=(const T& v) { return *this = static_cast<T>(*this) + v; }
  SharedRef& operator-=(const T& v) { return *this = static_cast<T>(*this) - v; }
  SharedRef& operator*=(const T& v) { return *this = static_cast<T>(*this) * v; }
  operator T&() const
    requires SelfChecked<T>
  {
    return a_->data_[i_];
  }

 private:
  SharedArray<T, N>* a_;
  std::size_t i_;
};

/// The storage behind one SSM_SHARED declaration in one block: elements plus their access history.
template <class T, std::size_t N>
class SharedArray : public detail::SharedAllocation {
 public:
  SharedArray() {
    if constexpr (std::is_trivially_copyable_v<T>) std::memset(static_cast<void*>(data_.get()), 0xA5, sizeof(T) * N);
  }
  void set_name(const char* n) { name_ = n; }
  static constexpr std::size_t size() { return N; }
  std::size_t bytes() const override {
    if constexpr (SelfChecked<T>) return T::kDeviceBytes * N;
    else return sizeof(T) * N;
  }

  template <std::integral I>
  SharedRef<T, N> operator[](I i) {
    if constexpr (std::is_signed_v<I>) {
      if (i < 0) out_of_bounds(static_cast<long long>(i));
    }
    if (static_cast<unsigned long long>(i) >= N) out_of_bounds(static_cast<long long>(i));
    return SharedRef<T, N>(this, static_cast<std::size_t>(i));
  }

 private:
  friend class SharedRef<T, N>;
  [[noreturn]] void out_of_bounds(long long i) {
    detail::block().report(FindingKind::shared_out_of_bounds,
                           std::string("index ") + std::to_string(i) + " outside shared array '" + name_ + "[" +
                               std::to_string(N) + "]'");
  }
  std::string element(std::size_t i) const { return std::string("'") + name_ + "[" + std::to_string(i) + "]'"; }

  T read(std::size_t i) {
    detail::Block& b = detail::block();
    const int u = b.tid();
    detail::Shadow& s = shadow_[i];
    if (!s.written)
      b.report(FindingKind::shared_uninitialized, "reads " + element(i) + " before any thread of the block wrote it");
    if (!detail::ordered(s.writer, s.write_epoch, s.write_warp_gen, u))
      b.report(FindingKind::shared_race, "reads " + element(i) + " written by thread " + std::to_string(s.writer) +
                                             " with no barrier between (read after write)");
    if (s.reader < 0 || s.read_epoch < b.epoch()) {
      s.reader = u;
      s.many_readers = false;
      s.read_epoch = b.epoch();
      s.read_warp_gen = b.warp_gen(u);
    } else if (s.reader != u) {
      s.many_readers = true;
    }
    return data_[i];
  }

  void write(std::size_t i, const T& v) {
    detail::Block& b = detail::block();
    const int u = b.tid();
    detail::Shadow& s = shadow_[i];
    if (s.written && !detail::ordered(s.writer, s.write_epoch, s.write_warp_gen, u))
      b.report(FindingKind::shared_race, "writes " + element(i) + " also written by thread " + std::to_string(s.writer) +
                                             " with no barrier between (write after write)");
    if (s.reader >= 0 && s.read_epoch == b.epoch()) {
      // Reads in the current barrier interval: any by another thread races with this write, unless (one
      // reader, same warp) a __syncwarp came between.
      if (s.many_readers)
        b.report(FindingKind::shared_race,
                 "writes " + element(i) + " read by other threads with no barrier between (write after read)");
      if (!detail::ordered(s.reader, s.read_epoch, s.read_warp_gen, u))
        b.report(FindingKind::shared_race, "writes " + element(i) + " read by thread " + std::to_string(s.reader) +
                                               " with no barrier between (write after read)");
    }
    s.written = true;
    s.writer = u;
    s.write_epoch = b.epoch();
    s.write_warp_gen = b.warp_gen(u);
    s.reader = -1;
    s.many_readers = false;
    data_[i] = v;
  }

  const char* name_ = "?";
  std::unique_ptr<T[]> data_ = std::make_unique<T[]>(N);
  std::unique_ptr<detail::Shadow[]> shadow_ = std::make_unique<detail::Shadow[]>(N);
};

/// The block's instance of the SSM_SHARED array declared at `site` (one per declaration and block).
template <class T, std::size_t N>
SharedArray<T, N>& block_shared(const void* site, const char* name) {
  auto& a = detail::block().shared<SharedArray<T, N>>(site);
  a.set_name(name);
  return a;
}

// ---- the CUDA spellings ----
inline const dim3& thread_idx() { return detail::block().thread_idx(); }
inline const dim3& block_idx() { return detail::block().block_idx(); }
inline const dim3& block_dim() { return detail::block().block_dim(); }
inline const dim3& grid_dim() { return detail::block().grid_dim(); }

inline void syncthreads(std::source_location site = std::source_location::current()) {
  detail::block().syncthreads(site);
}
inline void syncwarp(unsigned mask = 0xffffffffu, std::source_location site = std::source_location::current()) {
  (void)detail::block().warp_sync(detail::WarpOp::syncwarp, mask, 0, 0, kWarpSize, site);
}
template <class T>
T shfl_sync(unsigned mask, T v, int src_lane, int width = kWarpSize,
            std::source_location site = std::source_location::current()) {
  return detail::block().warp_sync(detail::WarpOp::idx, mask, v, src_lane, width, site);
}
template <class T>
T shfl_up_sync(unsigned mask, T v, unsigned delta, int width = kWarpSize,
               std::source_location site = std::source_location::current()) {
  return detail::block().warp_sync(detail::WarpOp::up, mask, v, static_cast<int>(delta), width, site);
}
template <class T>
T shfl_down_sync(unsigned mask, T v, unsigned delta, int width = kWarpSize,
                 std::source_location site = std::source_location::current()) {
  return detail::block().warp_sync(detail::WarpOp::down, mask, v, static_cast<int>(delta), width, site);
}
template <class T>
T shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = kWarpSize,
                std::source_location site = std::source_location::current()) {
  return detail::block().warp_sync(detail::WarpOp::bxor, mask, v, lane_mask, width, site);
}
/// Global-memory atomics: blocks and threads never run at once here, so a plain update is atomic. The launch's
/// global shadow (global_memory.hpp) is told, so that two blocks adding to one address are not a race.
template <class T>
T atomic_add(T* p, T v) {
  if (detail::LaunchShadow* s = detail::current_launch_shadow()) s->note_atomic(p, sizeof(T));
  const T old = *p;
  *p = old + v;
  return old;
}

/// Stand-in for cub::BlockScan<T, kThreads> (blocked arrangement, InclusiveScan with a stateful block
/// prefix callback), built on checked shared memory and barriers so the detectors see its traffic. Like CUB,
/// it does not synchronize after the scan: reusing its TempStorage needs a __syncthreads first, and the
/// last step reads the aggregate slots as CUB's warp-scan variant reads its warp aggregates, so a missing
/// barrier before reuse is reported as a race.
template <class T, int kThreads>
class BlockScan {
 public:
  struct TempStorage {
    static constexpr bool emu_self_checked = true;
    static constexpr std::size_t kDeviceBytes = sizeof(T) * (2 * kThreads + 1);  // these arrays, as on a GPU
    TempStorage() {
      aggregates.set_name("BlockScan.aggregates");
      exclusive.set_name("BlockScan.exclusive");
      block_prefix.set_name("BlockScan.block_prefix");
    }
    SharedArray<T, kThreads> aggregates;
    SharedArray<T, kThreads> exclusive;
    SharedArray<T, 1> block_prefix;
  };

  explicit BlockScan(TempStorage& s) : s_(s) {
    if (detail::block().nthreads() != kThreads)
      detail::block().report(FindingKind::bad_argument, "BlockScan<" + std::to_string(kThreads) +
                                                            "> used in a block of " +
                                                            std::to_string(detail::block().nthreads()) + " threads");
  }

  template <int kItems, class ScanOp, class PrefixOp>
  void InclusiveScan(T (&input)[kItems], T (&output)[kItems], ScanOp op, PrefixOp& prefix_op) {
    const int t = detail::block().tid();
    T local = input[0];
    for (int i = 1; i < kItems; ++i) local = op(local, input[i]);
    s_.aggregates[t] = local;
    syncthreads();
    if (t < kWarpSize) {
      // Warp 0: lane 0 computes the block aggregate and the exclusive prefixes; every lane of warp 0 gets the
      // aggregate (by a shuffle) and calls the callback, as CUB does; lane 0's result is the block prefix.
      T total{};
      if (t == 0) {
        total = s_.aggregates[0];
        for (int j = 1; j < kThreads; ++j) total = op(total, static_cast<T>(s_.aggregates[j]));
      }
      const unsigned warp0 = kThreads >= kWarpSize ? 0xffffffffu : ((1u << kThreads) - 1u);
      total = shfl_sync(warp0, total, 0);
      const T prefix = prefix_op(total);
      if (t == 0) {
        s_.block_prefix[0] = prefix;
        T running = prefix;
        for (int j = 0; j < kThreads; ++j) {
          s_.exclusive[j] = running;
          running = op(running, static_cast<T>(s_.aggregates[j]));
        }
      }
    }
    syncthreads();
    T running = s_.exclusive[t];
    (void)static_cast<T>(s_.block_prefix[0]);
    (void)static_cast<T>(s_.aggregates[kThreads - 1]);
    for (int i = 0; i < kItems; ++i) {
      running = op(running, input[i]);
      output[i] = running;
    }
  }

 private:
  TempStorage& s_;
};

namespace detail {

/// The first way cfg exceeds the device's launch limits, or "".
inline std::string launch_limit_violation(const LaunchConfig& cfg) {
  const auto dims = [](const dim3& d) {  // (an ostringstream: GCC 12 warns falsely on the string concatenation)
    std::ostringstream s;
    s << "(" << d.x << ", " << d.y << ", " << d.z << ")";
    return s.str();
  };
  if (cfg.grid.x > kMaxGridX || cfg.grid.y > kMaxGridYZ || cfg.grid.z > kMaxGridYZ)
    return "grid " + dims(cfg.grid) + " exceeds the limits (2^31 - 1, 65535, 65535)";
  if (cfg.block.x > kMaxBlockXY || cfg.block.y > kMaxBlockXY || cfg.block.z > kMaxBlockZ)
    return "block " + dims(cfg.block) + " exceeds the limits (1024, 1024, 64)";
  if (static_cast<std::uint64_t>(cfg.block.x) * cfg.block.y * cfg.block.z > kMaxBlockThreads)
    return "block " + dims(cfg.block) + " has more than 1024 threads";
  return {};
}

}  // namespace detail

/// Runs `kernel(args...)` on every block of cfg.grid, one block at a time in cfg.block_order, threads as fibers
/// in cfg.order. Checks the launch limits first, and the registered global buffers the arguments reach after
/// each block (global_memory.hpp). Stops at the first finding. The kernel sees copies of args (as a CUDA launch
/// passes them by value).
template <class Kernel, class... Args>
LaunchReport launch(const LaunchConfig& cfg, Kernel&& kernel, Args... args) {
  LaunchReport report;
  if (std::string limit = detail::launch_limit_violation(cfg); !limit.empty()) {
    report.findings.push_back(Finding{FindingKind::launch_limit, limit});
    return report;
  }
  if (cfg.block.count() == 0 || cfg.grid.count() == 0) return report;
  std::mt19937_64 rng(cfg.seed);
  std::tuple<Args...> packed(args...);
  const auto block_of = [&](std::int64_t i) {
    const auto u = static_cast<std::uint64_t>(i);
    return dim3(static_cast<unsigned>(u % cfg.grid.x), static_cast<unsigned>(u / cfg.grid.x % cfg.grid.y),
                static_cast<unsigned>(u / (static_cast<std::uint64_t>(cfg.grid.x) * cfg.grid.y)));
  };
  const auto describe = [&](std::int64_t i) {
    const dim3 b = block_of(i);
    std::ostringstream s;
    s << "(" << b.x << "," << b.y << "," << b.z << ")";
    return s.str();
  };
  const auto nblocks = static_cast<std::int64_t>(static_cast<std::uint64_t>(cfg.grid.x) * cfg.grid.y * cfg.grid.z);
  std::vector<std::uintptr_t> words;
  (detail::argument_words(args, words), ...);
  detail::LaunchShadow shadow(words, nblocks, describe);
  std::vector<std::int64_t> blocks(static_cast<std::size_t>(nblocks));
  std::iota(blocks.begin(), blocks.end(), std::int64_t{0});
  if (cfg.blocks() == Order::reverse) std::reverse(blocks.begin(), blocks.end());
  if (cfg.blocks() == Order::random) {
    std::mt19937_64 block_rng(cfg.seed ^ 0x9e3779b97f4a7c15ull);
    std::shuffle(blocks.begin(), blocks.end(), block_rng);
  }
  detail::Block blk(cfg, [&] {
    std::tuple<Args...> copy = packed;
    std::apply(kernel, copy);
  });
  // The launch's block and shadow are current until it returns, however it returns.
  struct Current {
    detail::Block* block = detail::current_block();
    detail::LaunchShadow* shadow = detail::current_launch_shadow();
    ~Current() {
      detail::current_block() = block;
      detail::current_launch_shadow() = shadow;
    }
  } restore;
  detail::current_block() = &blk;
  detail::current_launch_shadow() = &shadow;
  for (std::int64_t i : blocks) {
    blk.run(block_of(i), rng);
    if (blk.finding()) {
      report.findings.push_back(*blk.finding());
      break;
    }
    if (shadow.empty()) continue;
    const GlobalCheck g = shadow.after_block(i, "block " + describe(i) + " [" + name(cfg.blocks()) + " block order]");
    if (g.fault != GlobalFault::none) {
      report.findings.push_back(Finding{g.fault == GlobalFault::race ? FindingKind::global_race
                                                                     : FindingKind::global_out_of_bounds,
                                        g.message});
      break;
    }
  }
  return report;
}

}  // namespace ssm::emu

// ---- CUDA names, for kernel sources compiled by a host compiler ----
#define __global__ inline  // header-defined kernels: one definition across translation units, as nvcc allows
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define threadIdx (::ssm::emu::thread_idx())
#define blockIdx (::ssm::emu::block_idx())
#define blockDim (::ssm::emu::block_dim())
#define gridDim (::ssm::emu::grid_dim())
#define warpSize (::ssm::emu::kWarpSize)
#define __syncthreads ::ssm::emu::syncthreads
#define __syncwarp ::ssm::emu::syncwarp
#define __shfl_sync ::ssm::emu::shfl_sync
#define __shfl_up_sync ::ssm::emu::shfl_up_sync
#define __shfl_down_sync ::ssm::emu::shfl_down_sync
#define __shfl_xor_sync ::ssm::emu::shfl_xor_sync
#define atomicAdd ::ssm::emu::atomic_add

/// One shared-memory array per block: `SSM_SHARED(T, name, N)` is `__shared__ T name[N]` on the device.
/// Here each block gets checked storage; elements are read and written through name[i].
#define SSM_SHARED(T, name, N)                    \
  static constexpr char name##_emu_site = 0;     \
  auto& name = ::ssm::emu::block_shared<T, (N)>(&name##_emu_site, #name)
