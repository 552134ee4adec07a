// Shadow state of global memory for the host emulation (emulation.hpp): what happens between the blocks of one
// launch, which the in-block detectors cannot see.
//
// Buffers are registered (GlobalBuffers::track): every allocation of the emulated CUDA backend and of the host
// executor, with guard bands before and after it, and any host buffer a test hands to a kernel (ScopedGlobal).
// A launch reaches the registered buffers whose address range holds a pointer-sized word of its arguments'
// bytes (kernels take their pointers by value, directly or inside a parameter struct). After each block, those
// buffers are compared with a snapshot:
//   - a changed byte in a guard band is a global_out_of_bounds finding (a write past either end);
//   - a byte changed by two blocks of the launch, unless both changed it only through atomicAdd, is a
//     global_race finding: on a GPU the blocks run at once and one write would be lost.
// A write that leaves a byte's value unchanged is invisible, and reads are not tracked (a read of what another
// block writes shows up only as an order-dependent result: run the launch in several block orders).
// The comparison costs the reachable bytes once per block; launches where that exceeds
// GlobalBuffers::max_compared_bytes check only the guard bands (GlobalBuffers::stats counts them).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

namespace ssm::emu {

/// The guard bytes on each side of a guarded allocation (keeps the user pointer 256-byte aligned, as cudaMalloc).
inline constexpr std::size_t kGuardBytes = 256;
inline constexpr unsigned char kGuardPattern = 0xA5;

/// How many launches compared their buffers after every block, and how many checked only the guard bands.
struct GlobalCheckStats {
  std::int64_t launches_compared = 0;
  std::int64_t launches_guards_only = 0;
};

/// The registry of global buffers (process-wide, like the emulation itself: not thread-safe).
class GlobalBuffers {
 public:
  struct Buffer {
    std::byte* begin = nullptr;  // the user range [begin, begin + bytes)
    std::size_t bytes = 0;
    std::size_t guard = 0;  // guard bytes on each side (0 for a ScopedGlobal)
    std::string name;
    std::byte* lo() const { return begin - guard; }
    std::byte* hi() const { return begin + bytes + guard; }
  };

  static GlobalBuffers& instance() {
    static GlobalBuffers g;
    return g;
  }

  /// Registers [p - guard, p + bytes + guard). Returns false (and registers nothing) when it overlaps a buffer
  /// already registered.
  bool track(const void* p, std::size_t bytes, std::size_t guard, std::string name) {
    auto* b = static_cast<std::byte*>(const_cast<void*>(p));
    Buffer buf{b, bytes, guard, std::move(name)};
    auto next = buffers_.lower_bound(buf.lo());
    if (next != buffers_.end() && next->second.lo() < buf.hi()) return false;
    if (next != buffers_.begin() && std::prev(next)->second.hi() > buf.lo()) return false;
    buffers_.emplace(buf.lo(), std::move(buf));
    return true;
  }
  void untrack(const void* p) {
    for (auto it = buffers_.begin(); it != buffers_.end(); ++it)
      if (it->second.begin == p) {
        buffers_.erase(it);
        return;
      }
  }

  /// The buffer whose registered range (guards included) holds address a, or null.
  const Buffer* find(std::uintptr_t a) const {
    auto it = buffers_.upper_bound(reinterpret_cast<std::byte*>(a));
    if (it == buffers_.begin()) return nullptr;
    --it;
    const Buffer& b = it->second;
    return a < reinterpret_cast<std::uintptr_t>(b.hi()) ? &b : nullptr;
  }

  /// Above this many bytes compared per launch (reachable bytes x blocks), only the guard bands are checked. (The
  /// comparison keeps 6 bytes of shadow per reachable byte.)
  std::size_t max_compared_bytes = std::size_t{1} << 28;
  GlobalCheckStats stats;

 private:
  std::map<std::byte*, Buffer> buffers_;  // by lo()
};

/// malloc'ed memory with guard bands filled with kGuardPattern, registered under `name`; the user pointer is
/// kGuardBytes past the start (null when the allocation fails). Release with free_guarded.
inline void* allocate_guarded(std::size_t bytes, const char* name) {
  auto* raw = static_cast<std::byte*>(std::aligned_alloc(kGuardBytes, (bytes + 2 * kGuardBytes + kGuardBytes - 1) /
                                                                           kGuardBytes * kGuardBytes));
  if (raw == nullptr) return nullptr;
  std::memset(raw, kGuardPattern, kGuardBytes);
  std::memset(raw + kGuardBytes + bytes, kGuardPattern, kGuardBytes);
  (void)GlobalBuffers::instance().track(raw + kGuardBytes, bytes, kGuardBytes, name);
  return raw + kGuardBytes;
}
inline void free_guarded(void* p) noexcept {
  if (p == nullptr) return;
  GlobalBuffers::instance().untrack(p);
  std::free(static_cast<std::byte*>(p) - kGuardBytes);
}
struct FreeGuarded {
  void operator()(void* p) const noexcept { free_guarded(p); }
};

/// Registers a host buffer a test passes to a kernel (no guard bands) for the lifetime of the guard.
class ScopedGlobal {
 public:
  ScopedGlobal(const void* p, std::size_t bytes, std::string name)
      : p_(p), tracked_(GlobalBuffers::instance().track(p, bytes, 0, std::move(name))) {}
  ~ScopedGlobal() {
    if (tracked_) GlobalBuffers::instance().untrack(p_);
  }
  ScopedGlobal(const ScopedGlobal&) = delete;
  ScopedGlobal& operator=(const ScopedGlobal&) = delete;

 private:
  const void* p_;
  bool tracked_;
};

enum class GlobalFault { none, out_of_bounds, race };

/// A launch's check after one block: fault none, or what it found.
struct GlobalCheck {
  GlobalFault fault = GlobalFault::none;
  std::string message;
};

namespace detail {

/// One launch's view of the registered buffers it reaches: snapshots, the block that last changed each byte,
/// and the bytes the running block changed through atomicAdd.
class LaunchShadow {
 public:
  /// `words` are the pointer-sized words of the launch's arguments; `blocks` the grid's block count; `describe`
  /// names a block by its linear number.
  LaunchShadow(const std::vector<std::uintptr_t>& words, std::int64_t blocks,
               std::function<std::string(std::int64_t)> describe)
      : describe_(std::move(describe)) {
    GlobalBuffers& g = GlobalBuffers::instance();
    for (std::uintptr_t w : words) {
      const GlobalBuffers::Buffer* b = g.find(w);
      if (b == nullptr) continue;
      if (std::any_of(views_.begin(), views_.end(), [&](const View& v) { return v.buf.begin == b->begin; })) continue;
      views_.push_back(View{*b, {}, {}, {}});
    }
    std::size_t reach = 0;
    for (const View& v : views_) reach += v.buf.bytes + 2 * v.buf.guard;
    compare_ = reach * static_cast<std::size_t>(std::max<std::int64_t>(blocks, 1)) <= g.max_compared_bytes;
    (compare_ ? g.stats.launches_compared : g.stats.launches_guards_only) += views_.empty() ? 0 : 1;
    for (View& v : views_) {
      if (compare_) {
        v.snapshot.assign(v.buf.lo(), v.buf.hi());
        v.writer.assign(v.snapshot.size(), -1);
        v.atomic.assign(v.snapshot.size(), 1);
      }
    }
  }

  /// Whether the launch reaches no registered buffer (nothing to check).
  bool empty() const { return views_.empty(); }

  /// atomicAdd on [p, p + bytes) by the running block.
  void note_atomic(const void* p, std::size_t bytes) {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    for (std::size_t i = 0; i < bytes; ++i) atomic_bytes_.insert(a + i);
  }

  /// After the block with linear number `block` ran (`who` describes it): the first fault it made, if any.
  GlobalCheck after_block(std::int64_t block, const std::string& who) {
    for (View& v : views_) {
      if (std::string guard = check_guards(v, who); !guard.empty()) return {GlobalFault::out_of_bounds, guard};
      if (!compare_) continue;
      const std::byte* now = v.buf.lo();
      const std::size_t n = v.snapshot.size();
      for (std::size_t i0 = 0; i0 < n; i0 += 64) {
        const std::size_t len = std::min<std::size_t>(64, n - i0);
        if (std::memcmp(now + i0, v.snapshot.data() + i0, len) == 0) continue;
        for (std::size_t i = i0; i < i0 + len; ++i) {
          if (now[i] == v.snapshot[i]) continue;
          const bool atomic = atomic_bytes_.count(reinterpret_cast<std::uintptr_t>(now + i)) != 0;
          if (v.writer[i] >= 0 && v.writer[i] != static_cast<std::int32_t>(block) && !(atomic && v.atomic[i])) {
            return {GlobalFault::race,
                    who + " changed byte " + std::to_string(i - v.buf.guard) + " of global buffer '" + v.buf.name +
                        "' (" + std::to_string(v.buf.bytes) + " bytes), which block " + describe_(v.writer[i]) +
                        " of this launch changed too" +
                        (atomic || v.atomic[i] ? " (only one of them through atomicAdd)" : "") +
                        ": on a GPU the blocks run at once and one write is lost"};
          }
          v.writer[i] = static_cast<std::int32_t>(block);
          v.atomic[i] = static_cast<unsigned char>(v.atomic[i] && atomic);
          v.snapshot[i] = now[i];
        }
      }
    }
    atomic_bytes_.clear();
    return {};
  }

 private:
  struct View {
    GlobalBuffers::Buffer buf;
    std::vector<std::byte> snapshot;    // guards included
    std::vector<std::int32_t> writer;   // block number that changed each byte, -1 none (< 2^28 blocks when compared)
    std::vector<unsigned char> atomic;  // every change of the byte so far was an atomicAdd
  };

  static std::string check_guards(const View& v, const std::string& who) {
    if (v.buf.guard == 0) return {};
    const auto bad = [&](const std::byte* p, std::size_t n) -> std::ptrdiff_t {
      for (std::size_t i = 0; i < n; ++i)
        if (static_cast<unsigned char>(p[i]) != kGuardPattern) return static_cast<std::ptrdiff_t>(i);
      return -1;
    };
    if (const auto i = bad(v.buf.lo(), v.buf.guard); i >= 0)
      return who + " wrote " + std::to_string(v.buf.guard - static_cast<std::size_t>(i)) +
             " bytes before the start of global buffer '" + v.buf.name + "' (" + std::to_string(v.buf.bytes) +
             " bytes)";
    if (const auto i = bad(v.buf.begin + v.buf.bytes, v.buf.guard); i >= 0)
      return who + " wrote at byte " + std::to_string(v.buf.bytes + static_cast<std::size_t>(i)) +
             " of global buffer '" + v.buf.name + "', which has " + std::to_string(v.buf.bytes) + " bytes";
    return {};
  }

  std::function<std::string(std::int64_t)> describe_;
  std::vector<View> views_;
  bool compare_ = false;
  std::unordered_set<std::uintptr_t> atomic_bytes_;
};

inline LaunchShadow*& current_launch_shadow() {
  static LaunchShadow* s = nullptr;
  return s;
}

/// The pointer-sized words of an argument's bytes (at every 8-byte offset; padding bytes included).
template <class T>
void argument_words(const T& arg, std::vector<std::uintptr_t>& out) {
  const auto* raw = reinterpret_cast<const unsigned char*>(&arg);
  for (std::size_t off = 0; off + sizeof(std::uintptr_t) <= sizeof(T); off += alignof(std::uintptr_t)) {
    std::uintptr_t w;
    std::memcpy(&w, raw + off, sizeof w);
    out.push_back(w);
  }
}

}  // namespace detail
}  // namespace ssm::emu
